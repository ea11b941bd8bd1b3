"""Index a CheXpert-sized train.csv (224,316 rows; a frontal and a lateral per study).

The images are empty files (indexing never decodes them); the CSV has the released header
and label cells cycling through 1.0, blank, 0.0 and -1.0. Prints the wall time of
read_chexpert (parse, policy, view filter, file check) under U-Ignore. Writing and removing
the 224,316 empty files takes far longer than the indexing (13 min on the 2-core dev box);
pass a smaller --rows for a quick look.

    python benchmarks/bench_chexpert_index.py [--rows 224316]
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from chexpert_layout import HEADER, LABELS

from monai_cxr.data.sources.chexpert import read_chexpert

CELLS = ("1.0", "", "0.0", "-1.0")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=224316)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        release = Path(tmp) / "CheXpert-v1.0-small"
        lines = [",".join(HEADER)]
        for i in range(args.rows):
            patient, view = divmod(i, 2)
            rel = f"train/patient{patient:05d}/study1/view{view + 1}_{('frontal', 'lateral')[view]}.jpg"
            file = release / rel
            file.parent.mkdir(parents=True, exist_ok=True)
            file.touch()
            cells = [CELLS[(i + 3 * j) % 4] for j in range(len(LABELS))]
            lines.append(
                ",".join(
                    [
                        f"CheXpert-v1.0-small/{rel}",
                        "Female",
                        "60",
                        ("Frontal", "Lateral")[view],
                        ("AP", "")[view],
                        *cells,
                    ]
                )
            )
        (release / "train.csv").write_text("\n".join(lines) + "\n")
        t0 = time.perf_counter()
        index = read_chexpert(release, uncertain="ignore")
        seconds = time.perf_counter() - t0
        print(
            f"read_chexpert: {args.rows} rows -> {len(index)} frontal images of "
            f"{index['patient_id'].nunique()} patients in {seconds:.2f} s"
        )


if __name__ == "__main__":
    main()
