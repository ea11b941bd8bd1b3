"""Holm's adjustment, against R's p.adjust(method = "holm")."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monai_cxr.errors import CxrError
from monai_cxr.stats import holm


@pytest.mark.parametrize(
    "p, expected",
    [  # R 4.2: p.adjust(p, "holm")
        ([0.01, 0.02, 0.03, 0.04, 0.05], [0.05, 0.08, 0.09, 0.09, 0.09]),
        ([0.04, 0.001, 0.3, 0.04, 0.2, 0.9], [0.2, 0.006, 0.6, 0.2, 0.6, 0.9]),
        ([0.5, np.nan, 0.01, 0.02], [0.5, np.nan, 0.03, 0.04]),
        ([0.3], [0.3]),
        ([], []),
    ],
)
def test_matches_r_p_adjust(p, expected):
    np.testing.assert_allclose(holm(p), expected, rtol=1e-12, atol=0)


def test_caps_at_one():
    np.testing.assert_array_equal(holm([0.4, 0.6, 0.9]), [1.0, 1.0, 1.0])


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=1, max_size=30))
def test_monotone_bounded_and_never_smaller(p):
    p = np.array(p)
    adj = holm(p)
    order = np.argsort(p, kind="stable")
    assert (np.diff(adj[order]) >= 0).all()
    assert ((adj >= p) & (adj <= 1)).all()
    assert (adj <= np.minimum(len(p) * p, 1.0) + 1e-15).all()  # never above Bonferroni


@pytest.mark.parametrize("p", [[0.1, 1.2], [-0.01, 0.5], [[0.1, 0.2]]])
def test_rejects_invalid(p):
    with pytest.raises(CxrError, match="p-values must be in|shape"):
        holm(p)
