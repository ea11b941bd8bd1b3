"""Coverage of the pooled-seed intervals (``monai_cxr.stats.pooled``) against a known truth.

Each run draws a test set (negatives N(0, 1), positives N(mu, 1) on a latent case score z) and,
for two "resolutions" with extra noise sigma_a < sigma_b, S "trained models" per resolution:
score = z + delta_s * y + sigma * noise, delta_s ~ N(0, tau^2) a per-seed shift of the separation.
A seed's population AUC is Phi((mu + delta) / k), k = sqrt(2 (1 + sigma^2)), so the cell's expected
AUC is exactly Phi(mu / sqrt(k^2 + tau^2)). Printed: the share of 95% intervals that cover it, for
the mean of one cell, the difference and the ratio of the two cells, with the t and the normal
reference, and for "mean DeLong variance + s^2 / S" (the rule of thumb this module replaces).

    .venv/bin/python benchmarks/pooled_coverage.py [--reps 2000] [--seeds 1 2 3 5 10] [--tau 0 0.05 0.1 0.3]
"""

from __future__ import annotations

import argparse
import math

import numpy as np
from scipy.stats import norm

from monai_cxr.stats import delong, pool_seeds, pooled_difference

SIGMA = (0.5, 1.0)
MU = 1.6


def true_auc(sigma: float, tau: float) -> float:
    return float(norm.cdf(MU / math.sqrt(2.0 * (1.0 + sigma**2) + tau**2)))


def coverage(n_seeds: int, tau: float, n_pos: int, n_neg: int, reps: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    y = np.r_[np.ones(n_pos, bool), np.zeros(n_neg, bool)]
    th_a, th_b = (true_auc(s, tau) for s in SIGMA)
    hits: dict = {}

    def count(key, ok):
        hits[key] = hits.get(key, 0) + bool(ok)

    for _ in range(reps):
        z = rng.normal(size=len(y)) + MU * y
        a, b = (z + rng.normal(0.0, tau, size=(n_seeds, 1)) * y + s * rng.normal(size=(n_seeds, len(y))) for s in SIGMA)
        for ref in ("t", "normal"):
            p = pool_seeds(y, a, reference=ref)
            d = pooled_difference(y, a, b, reference=ref)
            count(f"mean_{ref}", p.ci_low <= th_a <= p.ci_high)
            count(f"diff_{ref}", d.ci_low <= th_a - th_b <= d.ci_high)
            count(f"ratio_{ref}", d.ratio_ci_low <= th_a / th_b <= d.ratio_ci_high)
        if n_seeds > 1:  # the rule of thumb: mean DeLong variance + s^2 / S
            res = delong(y, np.concatenate([a, b]))
            auc_a, auc_b = res.auc[:n_seeds], res.auc[n_seeds:]
            c = res.cov
            var_mean = np.diag(c)[:n_seeds].mean() + auc_a.var(ddof=1) / n_seeds
            var_diff = (
                np.mean([c[i, i] + c[n_seeds + i, n_seeds + i] - 2 * c[i, n_seeds + i] for i in range(n_seeds)])
                + auc_a.var(ddof=1) / n_seeds
                + auc_b.var(ddof=1) / n_seeds
            )
            count("mean_thumb", abs(auc_a.mean() - th_a) <= 1.959964 * math.sqrt(var_mean))
            count("diff_thumb", abs(auc_a.mean() - auc_b.mean() - th_a + th_b) <= 1.959964 * math.sqrt(var_diff))
    return {k: v / reps for k, v in sorted(hits.items())}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=2000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 5, 10])
    parser.add_argument("--tau", type=float, nargs="+", default=[0.0, 0.05, 0.1, 0.3])
    parser.add_argument("--n-pos", type=int, default=150)
    parser.add_argument("--n-neg", type=int, default=350)
    parser.add_argument("--rng", type=int, default=0)
    args = parser.parse_args()
    k = math.sqrt(2.0 * (1.0 + SIGMA[0] ** 2))
    print(
        f"true AUC a/b at tau=0: {true_auc(SIGMA[0], 0):.4f}/{true_auc(SIGMA[1], 0):.4f}; "
        f"between-seed SD of a's AUC ~ {norm.pdf(MU / k) / k:.3f} * tau"
    )
    for n_seeds in args.seeds:
        for tau in args.tau:
            if n_seeds == 1 and tau > 0:
                continue  # one seed cannot see training noise
            cov = coverage(n_seeds, tau, args.n_pos, args.n_neg, args.reps, args.rng)
            print(f"S={n_seeds:<3d} tau={tau:<5g} " + " ".join(f"{k}={v:.3f}" for k, v in cov.items()), flush=True)


if __name__ == "__main__":
    main()
