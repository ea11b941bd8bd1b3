"""Index and split a full-size NIH ChestX-ray14 release (112,120 rows, 30,805 patients).

The images are empty files (indexing never decodes them); the CSV has the real header and
the real label vocabulary. Prints the wall time of read_nih + patient_split.

    python benchmarks/bench_index.py [--rows 112120] [--patients 30805]
"""

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from monai_cxr.data.sources.nih import LABELS, read_nih
from monai_cxr.data.split import patient_split


def write_fake_release(root: Path, rows: int, patients: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    patient = np.sort(rng.integers(1, patients + 1, rows))
    patient[:patients] = np.arange(1, patients + 1)  # every patient present
    patient.sort()
    lines = [
        "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,"
        "View Position,OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]"
    ]
    follow = {}
    for i in range(1, 13):
        (root / f"images_{i:03d}" / "images").mkdir(parents=True)
    for i, p in enumerate(patient):
        k = follow[p] = follow.get(p, -1) + 1
        name = f"{p:08d}_{k:03d}.png"
        n = rng.integers(0, 3)
        findings = "|".join(rng.choice(LABELS, n, replace=False)) if n else "No Finding"
        lines.append(f"{name},{findings},{k},{p},50,M,{'PA' if i % 5 else 'AP'},2500,2048,0.143,0.143")
        (root / f"images_{1 + i * 12 // rows:03d}" / "images" / name).touch()
    (root / "Data_Entry_2017_v2020.csv").write_text("\n".join(lines) + "\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=112_120)
    parser.add_argument("--patients", type=int, default=30_805)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        write_fake_release(root, args.rows, args.patients)
        print(f"wrote fake release in {time.perf_counter() - t0:.1f} s")
        t0 = time.perf_counter()
        index = read_nih(root)
        t1 = time.perf_counter()
        split = patient_split(index, 0.2, 0)
        t2 = time.perf_counter()
    print(
        f"indexed {len(index)} images of {index['patient_id'].nunique()} patients in {t1 - t0:.2f} s; "
        f"split in {t2 - t1:.2f} s; val patients {split.loc[split.fold == 'val', 'patient_id'].nunique()}"
    )


if __name__ == "__main__":
    main()
