"""DeLong statistics for AUCs: variance, covariance, confidence intervals, paired and
unpaired tests, AUC ratios, multiple-comparison adjustment, and AUCs pooled over training
seeds with the non-inferiority verdict on resolution.

Pure NumPy/SciPy: importing this package does not import torch, so the ``delong``
command and report scripts start fast.
"""

from monai_cxr.stats.delong import (
    DeLongResult,
    PairedComparison,
    delong,
    delong_unpaired,
)
from monai_cxr.stats.multitest import holm
from monai_cxr.stats.pooled import (
    NonInferiority,
    PooledAUC,
    PooledDifference,
    SufficientResolution,
    non_inferiority,
    pool_seeds,
    pooled_difference,
    sufficient_resolution,
)

__all__ = [
    "DeLongResult",
    "NonInferiority",
    "PairedComparison",
    "PooledAUC",
    "PooledDifference",
    "SufficientResolution",
    "delong",
    "delong_unpaired",
    "holm",
    "non_inferiority",
    "pool_seeds",
    "pooled_difference",
    "sufficient_resolution",
]
