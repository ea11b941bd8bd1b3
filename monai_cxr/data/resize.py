"""Exact area averages of a square uint8 image at many sizes at once.

PIL's BOX filter is an exact block mean only at integer factors: elsewhere it counts a source
pixel fully or not at all and rounds to uint8 between its two passes (at 1024 -> 600 px that is
off by more than 10 grey levels on textured images). The study compares resolutions, so every
resolution here is the same well-defined quantity:

    out[i, j] = mean of the source over [i S/R, (i+1) S/R) x [j S/R, (j+1) S/R)

for an S x S source at size R, a partly covered source pixel weighted by the covered fraction,
rounded half to even to uint8 (what ``np.rint`` does).

Why it is exact, and the same on every machine: with g = gcd(S, R), S' = S/g and R' = R/g, the
footprint ends i S/R are multiples of 1/R' pixel, so the weights w = R' x (covered length) form an
integer banded matrix M (R x S) whose rows sum to S', and out = rint(M X M^T / S'^2). Every product
and partial sum of M X M^T is a non-negative integer of at most 255 S'^2, which float32 holds
exactly for S' <= 255 (255 S'^2 < 2^24) and float64 beyond: any summation order (BLAS blocking,
FMA, threads) gives the same integers. The one division is correctly rounded, and a quotient that is
not exactly k + 1/2 lies at least 1/(2 S'^2) from it, more than the rounding error, so ``rint``
rounds as the exact fraction would.

Shared work: the rows pass is one sparse product for all sizes (each size's band stacked), the
columns pass uses that M is block diagonal, I_g (x) W' with W' the R' x S' period, so it is a few small
dense products per size (a chunk of W' each) on a free reshape. At 1024 px the nine sizes of the study cost less than
PIL's BOX does for them.
"""

from __future__ import annotations

import functools
from math import gcd

import numpy as np

from monai_cxr.errors import CxrError

FLOAT32_MAX_PERIOD = 255  # 255 S'^2 < 2**24, and 1/(2 S'^2) > 2**-17 (half a float32 ulp below 256)
MAX_SIDE = 1 << 20  # float64: 255 * S'^2 < 2**53 and ties resolvable; far beyond any radiograph


def area_weights(side: int, size: int):
    """The integer band ``M`` (size x side, CSR): R' times the length of source pixel k in output i.

    Each row sums to S' = side / gcd(side, size); ``M X M^T / S'^2`` is the exact area mean.
    """
    from scipy import sparse

    g = gcd(side, size)
    i = np.arange(size, dtype=np.int64)
    lo, hi = i * side, (i + 1) * side  # footprint ends in units of 1/size pixel
    first, stop = lo // size, -(-hi // size)  # source pixels first .. stop-1 are touched
    counts = stop - first
    indptr = np.concatenate([[0], np.cumsum(counts)])
    rows = np.repeat(i, counts)
    k = first[rows] + np.arange(indptr[-1]) - indptr[:-1][rows]
    covered = np.minimum(hi[rows], (k + 1) * size) - np.maximum(lo[rows], k * size)  # > 0, a multiple of g
    return sparse.csr_matrix((covered // g, k, indptr), shape=(size, side))


COLUMN_CHUNK = 8  # output columns per product in the columns pass: a narrow band, not the whole period


@functools.lru_cache(maxsize=256)
def _plan(side: int, sizes: tuple[int, ...]):
    """Per arithmetic dtype: the stacked rows bands and, per size, its period cut into column chunks.

    A chunk multiplies only the source columns its outputs touch (j0:j1 from k0:k1), so the
    columns pass costs about COLUMN_CHUNK times the band's nonzeros, not R' times.
    """
    from scipy import sparse

    groups = {}
    for size in sizes:
        g = gcd(side, size)
        period, out_period = side // g, size // g
        dtype = np.float32 if period <= FLOAT32_MAX_PERIOD else np.float64
        band = area_weights(side, size)
        columns = band[:out_period, :period].toarray().T  # W'^T (S' x R')
        chunks = []
        for j0 in range(0, out_period, COLUMN_CHUNK):
            j1 = min(out_period, j0 + COLUMN_CHUNK)
            touched = np.flatnonzero(columns[:, j0:j1].any(axis=1))
            k0, k1 = int(touched[0]), int(touched[-1]) + 1
            chunks.append((j0, j1, k0, k1, np.ascontiguousarray(columns[k0:k1, j0:j1], dtype=dtype)))
        groups.setdefault(dtype, []).append((size, g, period, out_period, chunks, band))
    plan = []
    for dtype, parts in groups.items():
        rows = sparse.vstack([part[-1] for part in parts], format="csr").astype(dtype)
        starts = np.cumsum([0] + [part[0] for part in parts])
        plan.append((dtype, rows, [(int(start), *part[:-1]) for start, part in zip(starts, parts)]))
    return plan


@functools.lru_cache(maxsize=1)
def _blas():
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def area_resize(square: np.ndarray, sizes) -> dict[int, np.ndarray]:
    """Exact area means of one uint8 (S, S) image at each size: ``{R: uint8 (R, R)}``.

    A size equal to S gives ``square`` itself; a size above S is a CxrError. BLAS runs on one
    thread here: the products are small and callers (the cache builder) parallelise over images.
    """
    square = np.asarray(square)
    if square.dtype != np.uint8 or square.ndim != 2 or square.shape[0] != square.shape[1]:
        raise CxrError(f"area_resize needs a square uint8 image, not {square.dtype} of shape {square.shape}")
    side = square.shape[0]
    if side > MAX_SIDE:
        raise CxrError(f"image side {side} px exceeds the {MAX_SIDE} px that exact area averaging supports")
    wanted = list(dict.fromkeys(int(r) for r in sizes))
    for size in wanted:
        if size < 1:
            raise CxrError(f"size {size} is not a positive integer")
        if size > side:
            raise CxrError(f"size {size} exceeds the source size {side} px; sizes must be <= {side}")
    out = {side: square} if side in wanted else {}
    todo = tuple(sorted(set(wanted) - {side}))
    if todo:
        with _blas().limit(limits=1, user_api="blas"):
            for dtype, rows, parts in _plan(side, todo):
                stacked = rows @ square.astype(dtype)  # (sum of sizes, S): each size's rows pass
                for start, size, g, period, out_period, chunks in parts:
                    block = stacked[start : start + size].reshape(size * g, period)  # a view: period by period
                    total = np.empty((size * g, out_period), dtype)
                    for j0, j1, k0, k1, weights in chunks:
                        np.matmul(block[:, k0:k1], weights, out=total[:, j0:j1])
                    total = total.reshape(size, size)  # R'^2 x the area integral: exact integers
                    total /= dtype(period * period)
                    out[size] = np.rint(total, out=total).astype(np.uint8)
    return {size: out[size] for size in wanted}
