"""Wall time of DeLong and of reading its score table, each as a ratio to the operation it cannot beat.

1. ``delong(y, scores)`` + one paired comparison on n = 10^6 cases and k = 2 models, against one
   ``np.argsort(scores, axis=-1)`` of the same (2, n) array (the sort every exact AUC needs), for
   continuous scores and for scores rounded to 2 decimals (heavy ties). Target: <= 2x.
2. ``read_score_table`` on a CSV of n rows and 3 columns (truth + 2 scores), against
   ``pandas.read_csv`` alone on the same file. Target: <= 2x.

Repeats are interleaved (a, b, a, b, ...) and the best of each is kept, so load from other
processes on a shared machine hits both sides alike.

    .venv/bin/python benchmarks/bench_delong.py [--n 1000000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from monai_cxr.stats import delong
from monai_cxr.stats.scoretable import read_score_table


def best_pair(repeat, fn_a, fn_b):
    """Best wall times of ``fn_a`` and ``fn_b``, run alternately ``repeat`` times each."""
    times_a, times_b = [], []
    for _ in range(repeat):
        for fn, times in ((fn_a, times_a), (fn_b, times_b)):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return min(times_a), min(times_b)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    y = rng.random(args.n) < 0.2
    base = rng.normal(size=args.n) + y
    scores = np.stack([base + rng.normal(size=args.n), base + 1.5 * rng.normal(size=args.n)])
    print(f"n = {args.n:,} cases, k = 2 models, {int(y.sum()):,} positive; best of {args.repeat}, interleaved")

    for name, s in (("continuous", scores), ("rounded to 2 decimals", np.round(scores, 2))):

        def run(s=s):
            res = delong(y, s)
            return res.auc, res.cov, res.compare(0, 1)

        argsort_s, delong_s = best_pair(args.repeat, lambda s=s: np.argsort(s, axis=-1), run)
        print(
            f"{name:22s} np.argsort {argsort_s * 1e3:7.1f} ms  delong + compare {delong_s * 1e3:7.1f} ms  "
            f"ratio {delong_s / argsort_s:4.2f} (target <= 2)"
        )
    res = delong(y, scores)
    print(f"  check: AUCs {res.auc.round(4).tolist()}, paired z {res.compare(0, 1).z:.2f}")

    import pandas as pd

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "scores.csv"
        pd.DataFrame(
            {"label": y.astype(int), "s1": 1 / (1 + np.exp(-scores[0])), "s2": 1 / (1 + np.exp(-scores[1]))}
        ).to_csv(path, index=False)
        size = path.stat().st_size / 1e6
        pandas_s, reader_s = best_pair(
            args.repeat, lambda: pd.read_csv(path), lambda: read_score_table(path, "label", ["s1", "s2"])
        )
        print(
            f"CSV {args.n:,} rows x 3 columns ({size:.0f} MB): pandas.read_csv {pandas_s * 1e3:7.1f} ms  "
            f"read_score_table {reader_s * 1e3:7.1f} ms  ratio {reader_s / pandas_s:4.2f} (target <= 2)"
        )


if __name__ == "__main__":
    main()
