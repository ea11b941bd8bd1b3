"""DeLong statistics for AUCs: variance, covariance, confidence intervals, paired and
unpaired tests, AUC ratios, and multiple-comparison adjustment.

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

__all__ = ["DeLongResult", "PairedComparison", "delong", "delong_unpaired", "holm"]
