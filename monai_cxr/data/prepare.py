"""``monai-cxr prepare``: a dataset source -> ``index.csv``, ``split.csv`` and the resize cache."""

from __future__ import annotations

from pathlib import Path

from monai_cxr.errors import CxrError
from monai_cxr.fileio import write_csv
from monai_cxr.studyfile import update_study

SOURCES = ("nih",)


def read_source(dataset: str, data_dir, view: str, drop_missing: bool, echo):
    """The index table of a source; every source yields the same columns."""
    if dataset == "nih":
        from monai_cxr.data.nih import read_nih
        return read_nih(data_dir, view=view, drop_missing=drop_missing, echo=echo)
    raise CxrError(f"unknown dataset {dataset!r}; choose one of {', '.join(SOURCES)}")


def official_split_ids(dataset: str, data_dir):
    if dataset == "nih":
        from monai_cxr.data.nih import official_lists
        return official_lists(data_dir)
    raise CxrError(f"--split official is not defined for dataset {dataset!r}")


def prepare(dataset: str, data_dir, study_dir, resolutions, split: str = "random",
            val_fraction: float = 0.2, seed: int = 0, view: str = "all", drop_missing: bool = False,
            cache: bool = True, square: str = "pad", workers: int = 0, echo=print,
            progress: bool = True) -> Path:
    """Index ``data_dir``, split it by patient and build the cache under ``study_dir/data``."""
    from monai_cxr.data.split import patient_split

    data_dir, study_dir = Path(data_dir).resolve(), Path(study_dir)
    index = read_source(dataset, data_dir, view, drop_missing, echo)
    if split == "official":
        train_val, test = official_split_ids(dataset, data_dir)
        folds = patient_split(index, val_fraction, seed, test_ids=test, train_val_ids=train_val)
    elif split == "random":
        folds = patient_split(index, val_fraction, seed)
    else:
        raise CxrError(f"split policy {split!r} is not one of random, official")

    data = study_dir / "data"
    write_csv(data / "index.csv", index)
    write_csv(data / "split.csv", folds)
    settings = {"dataset": dataset, "data_dir": str(data_dir), "view": view, "split": split,
                "val_fraction": val_fraction, "seed": seed, "square": square,
                "resolutions": list(resolutions) if cache else [], "n_images": len(index),
                "n_patients": int(index["patient_id"].nunique())}
    update_study(study_dir, data=settings, synthetic=(data_dir / "PHANTOM.md").is_file())
    counts = folds.groupby("fold")["patient_id"].agg(["size", "nunique"])
    echo(f"indexed {len(index)} images of {settings['n_patients']} patients -> {data / 'index.csv'}")
    echo("split: " + "; ".join(f"{f} {int(counts.loc[f, 'size'])} images / "
                               f"{int(counts.loc[f, 'nunique'])} patients"
                               for f in ("train", "val", "test") if f in counts.index))
    if cache:
        from monai_cxr.data.cache import build_cache
        build_cache(index, data / "cache", resolutions, square=square, workers=workers, echo=echo,
                    progress=progress)
    return study_dir
