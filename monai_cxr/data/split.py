"""The patient-level split: no patient's images in two folds.

Splitting by image leaks a patient's follow-ups between training and validation and
inflates validation AUC; published repositories have done it. Here whole patients are
assigned, by a seeded permutation of the sorted patient ids, so the same seed gives the
same split on any machine.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from monai_cxr.errors import CxrError

FOLDS = ("train", "val", "test")


def patient_split(index: pd.DataFrame, val_fraction: float = 0.2, seed: int = 0,
                  test_ids: set[str] | None = None,
                  train_val_ids: set[str] | None = None) -> pd.DataFrame:
    """Assign each image of ``index`` to train, val or test by patient.

    Parameters
    ----------
    index : table with ``image_id`` and ``patient_id`` columns.
    val_fraction : share of the (non-test) patients that go to ``val``; the paper's 80/20.
    seed : seed of the patient permutation.
    test_ids, train_val_ids : an official split (NIH's lists): listed test images form the
        test fold and ``val`` is carved out of the train_val patients.

    Returns
    -------
    DataFrame with ``image_id, patient_id, fold`` in ``index`` order.
    """
    if not 0.0 < val_fraction < 1.0:
        raise CxrError(f"val fraction {val_fraction} is not between 0 and 1")
    patients = index["patient_id"].astype(str)
    fold = np.full(len(index), "train", dtype=object)
    pool = np.ones(len(index), dtype=bool)
    if test_ids is not None:
        is_test = index["image_id"].isin(test_ids).to_numpy()
        unlisted = ~is_test & ~index["image_id"].isin(train_val_ids or set()).to_numpy()
        if unlisted.any():
            raise CxrError(f"{int(unlisted.sum())} image(s) are in neither train_val_list.txt nor "
                           f"test_list.txt, e.g. {index['image_id'][unlisted].iloc[0]}")
        straddle = set(patients[is_test]) & set(patients[~is_test])
        if straddle:
            raise CxrError(f"{len(straddle)} patient(s) have images in both official lists, "
                           f"e.g. patient {sorted(straddle)[0]}")
        fold[is_test] = "test"
        pool = ~is_test
    pool_patients = np.unique(patients[pool].to_numpy())
    n_val = int(round(val_fraction * len(pool_patients)))
    if n_val == 0 or n_val == len(pool_patients):
        raise CxrError(f"cannot split {len(pool_patients)} patient(s) with val fraction "
                       f"{val_fraction}: a fold would be empty")
    order = np.random.default_rng(seed).permutation(len(pool_patients))
    val_patients = pool_patients[order[:n_val]]
    fold[pool & patients.isin(val_patients).to_numpy()] = "val"
    return pd.DataFrame({"image_id": index["image_id"].to_numpy(),
                         "patient_id": index["patient_id"].to_numpy(), "fold": fold})
