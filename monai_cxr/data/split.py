"""The patient-level split into train, val and test: no patient's images in two folds.

Splitting by image leaks a patient's follow-ups between folds and inflates the AUC;
published repositories have done it. Here whole patients are assigned, by a seeded
permutation of the sorted patient ids, so the same seed gives the same split on any machine.

``val`` picks the checkpoint, ``test`` is held out for the final AUCs. The val patients
are drawn first from the permutation, so a split with ``test_fraction=0`` (the paper's own
80/20 protocol: ``val_fraction=0.2``) has the same val patients as one with a test fold.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from monai_cxr.errors import CxrError

__all__ = ["FOLDS", "TEST_FRACTION", "VAL_FRACTION", "check_fractions", "patient_split"]

FOLDS = ("train", "val", "test")
VAL_FRACTION = 0.1
TEST_FRACTION = 0.2


def check_fractions(val_fraction: float, test_fraction: float = 0.0) -> None:
    """One line unless 0 < val < 1, 0 <= test < 1 and val + test < 1 (train needs patients too)."""
    if not (isinstance(val_fraction, (int, float)) and 0.0 < val_fraction < 1.0):
        raise CxrError(
            f"val fraction {val_fraction!r} is not between 0 and 1 (exclusive); "
            f"the val fold selects the checkpoint, so it cannot be empty"
        )
    if not (isinstance(test_fraction, (int, float)) and 0.0 <= test_fraction < 1.0):
        raise CxrError(f"test fraction {test_fraction!r} is not in [0, 1); 0 means no test fold")
    if val_fraction + test_fraction >= 1.0 - 1e-12:
        raise CxrError(
            f"val fraction {val_fraction:g} + test fraction {test_fraction:g} = "
            f"{val_fraction + test_fraction:g} leaves no patients to train on; their sum must be below 1"
        )


def _fold_sizes(n: int, val_fraction: float, test_fraction: float, where: str) -> tuple[int, int]:
    """Patients to val and to test out of ``n``; one line if a fold that should exist is empty."""
    n_val, n_test = round(val_fraction * n), round(test_fraction * n)
    wanted = {"val": (n_val, val_fraction), "test": (n_test, test_fraction)}
    for fold, (count, fraction) in wanted.items():
        if fraction > 0 and count == 0:
            raise CxrError(
                f"cannot split {n} {where}patient(s) with {fold} fraction {fraction:g}: "
                f"the {fold} fold would be empty; use more patients or a larger fraction"
            )
    if n - n_val - n_test <= 0:
        raise CxrError(
            f"cannot split {n} {where}patient(s) with val fraction {val_fraction:g} and test fraction "
            f"{test_fraction:g}: the train fold would be empty"
        )
    return n_val, n_test


def patient_split(
    index: pd.DataFrame,
    val_fraction: float = VAL_FRACTION,
    seed: int = 0,
    test_fraction: float = TEST_FRACTION,
    test_ids: set[str] | None = None,
    train_val_ids: set[str] | None = None,
) -> pd.DataFrame:
    """Assign each image of ``index`` to train, val or test by patient.

    Parameters
    ----------
    index : table with ``image_id`` and ``patient_id`` columns.
    val_fraction : share of the patients that go to ``val`` (of the train_val patients when
        official lists are given).
    seed : seed of the patient permutation.
    test_fraction : share of the patients that go to ``test``; 0 for no test fold. Not used
        with official lists, whose test list is the test fold.
    test_ids, train_val_ids : an official split (NIH's lists): listed test images form the
        test fold and ``val`` is carved out of the train_val patients.

    Returns
    -------
    DataFrame with ``image_id, patient_id, fold`` in ``index`` order.
    """
    if test_ids is not None:
        test_fraction = 0.0
    check_fractions(val_fraction, test_fraction)
    patients = index["patient_id"].astype(str)
    fold = np.full(len(index), "train", dtype=object)
    pool = np.ones(len(index), dtype=bool)
    if test_ids is not None:
        is_test = index["image_id"].isin(test_ids).to_numpy()
        unlisted = ~is_test & ~index["image_id"].isin(train_val_ids or set()).to_numpy()
        if unlisted.any():
            raise CxrError(
                f"{int(unlisted.sum())} image(s) are in neither train_val_list.txt nor "
                f"test_list.txt, e.g. {index['image_id'][unlisted].iloc[0]}"
            )
        straddle = set(patients[is_test]) & set(patients[~is_test])
        if straddle:
            raise CxrError(
                f"{len(straddle)} patient(s) have images in both official lists, e.g. patient {min(straddle)}"
            )
        fold[is_test] = "test"
        pool = ~is_test
    pool_patients = np.unique(patients[pool].to_numpy())
    where = "train_val " if test_ids is not None else ""
    n_val, n_test = _fold_sizes(len(pool_patients), val_fraction, test_fraction, where)
    order = np.random.default_rng(seed).permutation(len(pool_patients))
    chosen = patients.to_numpy()
    fold[pool & np.isin(chosen, pool_patients[order[:n_val]])] = "val"
    fold[pool & np.isin(chosen, pool_patients[order[n_val : n_val + n_test]])] = "test"
    return pd.DataFrame(
        {"image_id": index["image_id"].to_numpy(), "patient_id": index["patient_id"].to_numpy(), "fold": fold}
    )
