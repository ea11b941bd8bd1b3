"""Wall time of DeLong on n = 10^6 cases and k = 2 models, against one argsort.

Target: AUCs + covariance + paired test within 3x of ``np.argsort(scores, axis=-1)`` on
the same (2, n) array, the sort every exact AUC needs. sklearn's ``roc_auc_score`` (AUC
only, one model) is printed for reference.

    .venv/bin/python benchmarks/bench_delong.py [--n 1000000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from monai_cxr.stats import delong


def best_of(repeat, fn):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


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
    rounded = np.round(1 / (1 + np.exp(-scores)), 3)  # probabilities to 3 decimals: heavy ties

    def run(s):
        res = delong(y, s)
        return res.auc, res.cov, res.compare(0, 1)

    print(f"n = {args.n:,} cases, k = 2 models, {int(y.sum()):,} positive; best of {args.repeat}")
    argsort_s = best_of(args.repeat, lambda: np.argsort(scores, axis=-1))
    print(f"np.argsort(scores, axis=-1)       {argsort_s * 1e3:8.1f} ms")
    for name, s in (("continuous", scores), ("rounded (ties)", rounded)):
        t = best_of(args.repeat, lambda: run(s))
        print(f"delong + compare, {name:15s} {t * 1e3:8.1f} ms  = {t / argsort_s:4.2f}x argsort (target <= 3x)")
    try:
        from sklearn.metrics import roc_auc_score
    except ImportError:
        return
    t = best_of(args.repeat, lambda: [roc_auc_score(y, s) for s in scores])
    print(f"sklearn roc_auc_score, 2 models   {t * 1e3:8.1f} ms  (AUC only, no variance)")
    res = run(scores)
    print(f"check: AUCs {res[0].round(4).tolist()}, paired z {res[2].z:.2f}")


if __name__ == "__main__":
    main()
