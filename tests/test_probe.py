"""`monai-cxr probe`: peak memory of a training step grows with batch and resolution; the budget decides the batch."""

import pytest

from monai_cxr.errors import CxrError
from monai_cxr.grid.probe import measure, parse_size

pytestmark = pytest.mark.slow  # trains networks: left out of `make test-fast`


@pytest.mark.parametrize("text,expected", [("16GiB", 16 * 2**30), ("80GB", 80 * 10**9), ("512MiB", 512 * 2**20),
                                           ("1.5g", int(1.5 * 2**30)), ("1000", 1000)])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "16 parsecs", "-1GiB", "GiB"])
def test_parse_size_refuses_nonsense(text):
    with pytest.raises(CxrError, match="memory size"):
        parse_size(text)


def test_memory_grows_with_resolution_and_the_budget_sets_the_batch():
    small = measure("resnet34", 16, 2**30, device="cpu", batch_sizes=(2, 16))
    large = measure("resnet34", 64, 2**30, device="cpu", batch_sizes=(2, 16))
    assert small.peak_mb[1] > 0 and large.per_image_mb > small.per_image_mb
    assert 0 < large.max_batch < small.max_batch
    # the fitted line: fixed part plus per-image part at the largest batch stays within the budget
    assert large.fixed_mb + large.per_image_mb * large.max_batch <= 1024 + 1e-6


def test_probe_refuses_what_the_network_cannot_take():
    with pytest.raises(CxrError, match="below the 32 px"):
        measure("densenet121", 16, 2**30, device="cpu")
