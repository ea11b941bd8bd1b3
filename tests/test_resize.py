"""Exact area resizing: equal to independent exact references, including .5 ties and the float64 path."""

from fractions import Fraction

import numpy as np
import pytest

from monai_cxr.data import resize as resize_mod
from monai_cxr.data.resize import area_resize, area_weights
from monai_cxr.errors import CxrError

PAPER = [32, 64, 128, 224, 256, 320, 448, 512, 600]


def _round_half_even(num: int, den: int) -> int:
    q, r = divmod(num, den)
    return q + (2 * r > den or (2 * r == den and q % 2 == 1))


def _exact_2d(img: np.ndarray, size: int) -> tuple[np.ndarray, int]:
    """Slow reference: each output pixel's 2-D footprint intersected with every source pixel, in Fractions.

    Returns the rounded image and how many outputs were exact .5 ties.
    """
    side = img.shape[0]
    step = Fraction(side, size)
    out, ties = np.zeros((size, size), np.uint8), 0
    for i in range(size):
        for j in range(size):
            y0, y1, x0, x1 = i * step, (i + 1) * step, j * step, (j + 1) * step
            total = Fraction(0)
            for k in range(side):
                for m in range(side):
                    area = max(Fraction(0), min(y1, k + 1) - max(y0, k)) * max(Fraction(0), min(x1, m + 1) - max(x0, m))
                    total += area * int(img[k, m])
            mean = total / (step * step)
            ties += mean.denominator == 2
            out[i, j] = _round_half_even(mean.numerator, mean.denominator)
    return out, ties


def _exact_separable(img: np.ndarray, size: int) -> np.ndarray:
    """Faster reference: 1-D overlaps (Fractions) scaled to integers, an int64 product, integer rounding."""
    side = img.shape[0]
    w = np.zeros((size, side), dtype=np.int64)
    for i in range(size):
        lo, hi = Fraction(i * side, size), Fraction((i + 1) * side, size)
        for k in range(side):
            w[i, k] = max(Fraction(0), min(hi, k + 1) - max(lo, k)) * size  # an integer
    total = w @ img.astype(np.int64) @ w.T  # size^2 x area integral; the mean is total / side^2
    return np.vectorize(lambda t: _round_half_even(int(t), side * side), otypes=[np.uint8])(total)


@pytest.mark.parametrize("side, sizes", [(7, [3, 2, 5, 6]), (10, [4, 3, 7]), (13, [5, 12, 1]), (12, [5, 8, 9])])
def test_equals_the_2d_fraction_reference_at_non_integer_factors(side, sizes):
    rng = np.random.default_rng(side)
    img = rng.integers(0, 256, (side, side), dtype=np.uint8)
    got = area_resize(img, sizes)
    for size in sizes:
        np.testing.assert_array_equal(got[size], _exact_2d(img, size)[0])


def test_half_ties_round_to_even_as_the_exact_fraction_does():
    rng = np.random.default_rng(1)
    ties = 0
    for side, size in [(4, 3), (6, 4), (9, 6), (8, 6)] * 4:
        img = rng.integers(0, 2, (side, side), dtype=np.uint8)  # two grey levels: many exact .5 means
        expected, n = _exact_2d(img, size)
        ties += n
        np.testing.assert_array_equal(area_resize(img, [size])[size], expected)
    assert ties > 10  # the cases do exercise ties
    # 2x2 blocks with means 0.5, 1.5, 2.5, 3.5 -> 0, 2, 2, 4
    img = np.array([[0, 1, 1, 2], [0, 1, 1, 2], [2, 3, 3, 4], [2, 3, 3, 4]], dtype=np.uint8)
    np.testing.assert_array_equal(area_resize(img, [2])[2], [[0, 2], [2, 4]])


@pytest.mark.parametrize("side, size", [(12, 4), (12, 6), (64, 8), (40, 20)])
def test_integer_factors_are_rounded_block_means(side, size):
    img = np.random.default_rng(size).integers(0, 256, (side, side), dtype=np.uint8)
    f = side // size
    sums = img.astype(np.int64).reshape(size, f, size, f).sum(axis=(1, 3))
    expected = np.vectorize(lambda s: _round_half_even(int(s), f * f), otypes=[np.uint8])(sums)
    np.testing.assert_array_equal(area_resize(img, [size])[size], expected)


def test_the_float64_path_for_long_periods_is_exact():
    # 257 is prime: the weight period is 257 source pixels, past what float32 holds exactly
    img = np.random.default_rng(7).integers(0, 256, (257, 257), dtype=np.uint8)
    got = area_resize(img, [100, 7, 256])
    for size in (100, 7, 256):
        np.testing.assert_array_equal(got[size], _exact_separable(img, size))


def test_the_separable_reference_agrees_with_the_2d_one():
    img = np.random.default_rng(3).integers(0, 256, (11, 11), dtype=np.uint8)
    for size in (4, 7):
        np.testing.assert_array_equal(_exact_separable(img, size), _exact_2d(img, size)[0])


def test_float32_equals_float64_after_rounding_at_the_study_sizes(monkeypatch):
    rng = np.random.default_rng(5)
    img = rng.integers(0, 256, (1024, 1024), dtype=np.uint8)
    img[::7] = 255  # hard edges as well as noise
    fast = area_resize(img, PAPER)
    monkeypatch.setattr(resize_mod, "FLOAT32_MAX_PERIOD", 0)
    resize_mod._plan.cache_clear()
    try:
        slow = area_resize(img, PAPER)
        assert all(dtype == np.float64 for dtype, *_ in resize_mod._plan(1024, tuple(PAPER)))
    finally:
        resize_mod._plan.cache_clear()
    for size in PAPER:
        np.testing.assert_array_equal(fast[size], slow[size])
    # and the float32 result equals the integer reference at the odd factors
    small = img[:100, :100].copy()
    for size in (37, 60, 99):
        np.testing.assert_array_equal(area_resize(small, [size])[size], _exact_separable(small, size))


def test_each_size_is_the_same_alone_or_with_others():
    img = np.random.default_rng(9).integers(0, 256, (300, 300), dtype=np.uint8)
    together = area_resize(img, [224, 100, 7, 150, 299])
    for size, image in together.items():
        np.testing.assert_array_equal(area_resize(img, [size])[size], image)
    assert list(together) == [224, 100, 7, 150, 299]


@pytest.mark.parametrize("value", [0, 1, 128, 255])
def test_a_constant_image_stays_constant(value):
    img = np.full((1024, 1024), value, dtype=np.uint8)
    for size, image in area_resize(img, PAPER).items():
        assert image.shape == (size, size) and image.dtype == np.uint8 and (image == value).all()


def test_the_mean_is_preserved():
    img = np.random.default_rng(11).integers(0, 256, (1024, 1024), dtype=np.uint8)
    for size, image in area_resize(img, [224, 320, 448, 600]).items():
        # the exact means average to the source mean; rounding each (|error| <= 1/2) moves it by ~0.3/size
        assert abs(image.mean() - img.mean()) < 0.01, size


def test_flips_and_transpose_commute_with_resizing():
    img = np.random.default_rng(13).integers(0, 256, (97, 97), dtype=np.uint8)
    sizes = [13, 40, 64]
    base = area_resize(img, sizes)
    for op in (np.flipud, np.fliplr, np.transpose):
        moved = area_resize(np.ascontiguousarray(op(img)), sizes)
        for size in sizes:
            np.testing.assert_array_equal(moved[size], op(base[size]))


def test_weights_rows_sum_to_the_period():
    for side, size in [(1024, 600), (1024, 224), (997, 600), (12, 4)]:
        band = area_weights(side, size)
        period = side // np.gcd(side, size)
        assert (np.asarray(band.sum(axis=1)).ravel() == period).all()
        assert band.data.min() > 0


def test_the_source_size_returns_the_image_and_bad_sizes_fail():
    img = np.random.default_rng(0).integers(0, 256, (40, 40), dtype=np.uint8)
    assert area_resize(img, [40])[40] is img
    with pytest.raises(CxrError, match=r"^size 41 exceeds the source size 40 px"):
        area_resize(img, [20, 41])
    with pytest.raises(CxrError, match=r"^size 0 is not a positive integer"):
        area_resize(img, [0])
    with pytest.raises(CxrError, match=r"square uint8 image, not uint8 of shape \(40, 30\)"):
        area_resize(img[:, :30], [8])
    with pytest.raises(CxrError, match=r"not float64"):
        area_resize(img.astype(float), [8])
