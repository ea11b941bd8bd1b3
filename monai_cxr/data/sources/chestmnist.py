"""The ChestMNIST source (MedMNIST v3 / MedMNIST+): ``chestmnist*.npz`` -> index table + images.

A MedMNIST file holds ``{train,val,test}_{images,labels}``: images N x H x W uint8, labels
N x 14 in MedMNIST's order (:data:`FILE_ORDER`). The sizes ship as separate files with the
same rows in the same order: ``chestmnist.npz`` (28 px), ``chestmnist_64.npz``,
``chestmnist_128.npz``, ``chestmnist_224.npz``.

The files carry no file names and no patient ids, so ``image_id`` is ``{split}_{row:05d}``,
``patient_id`` equals it, and the official train/val/test split is the only one allowed
(a random split by image would put one patient's images in two folds). ``index.csv``'s
``path`` is a reference ``/abs/chestmnist_224.npz#train/17`` into the largest file given.

:class:`NpzImages` is the cache's image source for these rows: a resolution that one of the
files has is copied from that file; any other is the exact area average of the largest file
(:func:`~monai_cxr.data.resize.area_resize`, as for image files). Arrays are streamed from the
``.npz`` in row order, so a 224 px file (about 5 GB unpacked) is never loaded whole.
"""

from __future__ import annotations

import os
import re
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from monai_cxr.data.resize import area_resize
from monai_cxr.data.sources.base import Options, SourceData, given_split
from monai_cxr.errors import CxrError

# MedMNIST's label order, with the NIH ChestX-ray14 names of the labels.
FILE_ORDER = (
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural_Thickening",
    "Hernia",
)
SPLITS = ("train", "val", "test")
KEYS = tuple(f"{split}_{kind}" for split in SPLITS for kind in ("images", "labels"))
NOTE = (
    "ChestMNIST files hold no patient ids: patient_id is the image_id, and the official "
    "MedMNIST train/val/test split is kept as the folds"
)
_REFERENCE = re.compile(r"(?P<file>.+\.npz)#(?P<split>train|val|test)/(?P<row>\d+)")


def is_reference(path: str) -> bool:
    """Whether an index ``path`` is a ``FILE.npz#split/row`` reference."""
    return _REFERENCE.fullmatch(str(path)) is not None


def parse_reference(path: str) -> tuple[str, str, int]:
    match = _REFERENCE.fullmatch(str(path))
    if match is None:
        raise CxrError(f"{path!r} is not a ChestMNIST reference FILE.npz#split/row")
    return match["file"], match["split"], int(match["row"])


def _member_header(archive: zipfile.ZipFile, key: str):
    """``(shape, dtype, data offset)`` of the ``.npy`` member ``key`` without reading its data."""
    try:
        with archive.open(f"{key}.npy") as handle:
            version = np.lib.format.read_magic(handle)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read(handle)
            return shape, dtype, fortran, handle.tell()
    except (ValueError, OSError, zipfile.BadZipFile, zlib.error) as exc:
        raise CxrError(f"cannot read {key} of {archive.filename}: {exc}") from None


def inspect_npz(path: Path) -> dict:
    """Check a MedMNIST ChestMNIST file's keys and shapes; return ``{"side", "sizes"}``."""
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise CxrError(f"cannot read {path} as an .npz file ({exc})") from None
    with archive:
        names = {n[:-4] for n in archive.namelist() if n.endswith(".npy")}
        missing = [k for k in KEYS if k not in names]
        if missing:
            raise CxrError(
                f"{path.name} lacks key(s) {', '.join(missing)}; a MedMNIST file holds "
                f"{', '.join(KEYS)} (found: {', '.join(sorted(names)) or 'none'})"
            )
        sides, sizes = set(), {}
        for split in SPLITS:
            shape, dtype, fortran, _ = _member_header(archive, f"{split}_images")
            if len(shape) != 3 or shape[1] != shape[2] or dtype != np.uint8 or fortran:
                raise CxrError(
                    f"{path.name}: {split}_images is {dtype} {shape}; ChestMNIST images are "
                    f"uint8 N x H x W with H = W (a colour MedMNIST file is not ChestMNIST)"
                )
            labels, _, _, _ = _member_header(archive, f"{split}_labels")
            if labels != (shape[0], len(FILE_ORDER)):
                raise CxrError(
                    f"{path.name}: {split}_labels has shape {labels}; expected "
                    f"({shape[0]}, {len(FILE_ORDER)}), one 0/1 column per ChestMNIST label"
                )
            sides.add(shape[1])
            sizes[split] = shape[0]
    if len(sides) != 1:
        raise CxrError(f"{path.name} mixes image sizes across its splits ({', '.join(map(str, sorted(sides)))} px)")
    side = sides.pop()
    named = re.fullmatch(r"chestmnist(?:_(\d+))?\.npz", path.name)
    if named and int(named[1] or 28) != side:
        raise CxrError(f"{path.name} holds {side} px images, not the {int(named[1] or 28)} px its name says")
    return {"side": side, "sizes": sizes}


def find_files(data_dir) -> dict[int, Path]:
    """``{side: file}`` of a ``.npz`` file or of the ``chestmnist*.npz`` files in a folder.

    All files must hold the same splits with the same numbers of rows (one release).
    """
    data_dir = Path(data_dir)
    if data_dir.is_file():
        candidates = [data_dir]
    elif data_dir.is_dir():
        candidates = sorted(data_dir.glob("chestmnist*.npz"))
        if not candidates:
            raise CxrError(f"no chestmnist*.npz file in {str(data_dir)!r}")
    else:
        raise CxrError(f"ChestMNIST file or folder {str(data_dir)!r} does not exist")
    files, sizes = {}, {}
    for path in candidates:
        info = inspect_npz(path)
        if info["side"] in files:
            raise CxrError(f"{files[info['side']].name} and {path.name} both hold {info['side']} px images; keep one")
        files[info["side"]], sizes[path] = path.resolve(), info["sizes"]
    first = candidates[0]
    for path, size in sizes.items():
        if size != sizes[first]:
            raise CxrError(
                f"{path.name} has splits {size} but {first.name} has {sizes[first]}; the files are not from one release"
            )
    return dict(sorted(files.items()))


def _read_labels(path: Path, split: str) -> np.ndarray:
    try:
        with np.load(path) as npz:
            labels = npz[f"{split}_labels"]
    except (ValueError, OSError, zipfile.BadZipFile, zlib.error) as exc:
        raise CxrError(f"cannot read {split}_labels of {path}: {exc}") from None
    bad = ~np.isin(labels, (0, 1))
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise CxrError(
            f"{path.name}: {split}_labels row {row} column {FILE_ORDER[col]!r} holds "
            f"{labels[row, col].item()}; allowed: 0 or 1"
        )
    return labels.astype(np.int8)


def read_chestmnist(data_dir) -> tuple[pd.DataFrame, dict[int, Path]]:
    """Index a ChestMNIST file or folder: the index table and the ``{side: file}`` it reads.

    Rows are train, then val, then test, each in file order; the labels are the largest
    file's (all files must agree).
    """
    files = find_files(data_dir)
    largest = files[max(files)]
    frames = []
    for split in SPLITS:
        labels = _read_labels(largest, split)
        for path in files.values():
            if path != largest and not np.array_equal(_read_labels(path, split), labels):
                raise CxrError(
                    f"{path.name} and {largest.name} disagree on {split}_labels; the files are not from one release"
                )
        ids = [f"{split}_{row:05d}" for row in range(len(labels))]
        frame = pd.DataFrame(
            {
                "image_id": ids,
                "patient_id": ids,
                "view": "FRONTAL",
                "path": [f"{largest}#{split}/{row}" for row in range(len(labels))],
            }
        )
        frames.append(pd.concat([frame, pd.DataFrame(labels, columns=list(FILE_ORDER))], axis=1))
    index = pd.concat(frames, ignore_index=True)
    return index, files


def official_folds(index: pd.DataFrame) -> pd.Series:
    """The MedMNIST split of each row, read from its reference."""
    return index["path"].map(lambda ref: parse_reference(ref)[1])


class _Stream:
    """Sequential reader of one ``{split}_images`` member: rows come out without loading it all."""

    def __init__(self, path: str, split: str):
        self.archive = zipfile.ZipFile(path)
        shape, _, _, self.offset = _member_header(self.archive, f"{split}_images")
        self.n, self.side = shape[0], shape[1]
        self.handle = self.archive.open(f"{split}_images.npy")

    def rows(self, start: int, stop: int) -> np.ndarray:
        if not 0 <= start <= stop <= self.n:
            raise CxrError(f"rows {start}-{stop} are outside the {self.n} images of {self.archive.filename}")
        nbytes = self.side * self.side
        try:
            self.handle.seek(self.offset + start * nbytes)  # forward seeks in row order stay cheap
            data = self.handle.read((stop - start) * nbytes)
        except (OSError, zipfile.BadZipFile, zlib.error) as exc:
            raise CxrError(f"cannot read images of {self.archive.filename}: {exc}") from None
        if len(data) != (stop - start) * nbytes:
            raise CxrError(f"{self.archive.filename} is truncated: rows {start}-{stop} are incomplete")
        return np.frombuffer(data, dtype=np.uint8).reshape(stop - start, self.side, self.side)

    def close(self):
        self.handle.close()
        self.archive.close()


_STREAMS: dict[tuple[str, str], _Stream] = {}


def _rows(path: str, split: str, rows: list[int]) -> np.ndarray:
    """Images of ``rows`` (ascending runs are read in one go) of ``split`` in ``path``."""
    stream = _STREAMS.get((path, split))
    if stream is None:
        stream = _STREAMS[(path, split)] = _Stream(path, split)
    out, run = [], rows[:1]
    for row in rows[1:] + [None]:
        if row is not None and row == run[-1] + 1:
            run.append(row)
            continue
        out.append(stream.rows(run[0], run[-1] + 1))
        run = [row]
    return np.concatenate(out)


def close_streams() -> None:
    while _STREAMS:
        _STREAMS.popitem()[1].close()


class NpzImages:
    """The cache's image source for ChestMNIST rows (see :mod:`monai_cxr.data.cache`).

    ``files`` maps an image side to its file; ``rows`` holds each index row's
    ``(split, row)``. Reads stream each member in row order, so the build is sequential.
    """

    parallel = False

    def __init__(self, files: dict[int, Path], rows: list[tuple[str, int]]):
        self.files = {int(side): str(path) for side, path in sorted(files.items())}
        self.rows = list(rows)
        self.largest = max(self.files)

    @classmethod
    def from_references(cls, paths, files: dict[int, Path] | None = None) -> NpzImages:
        """The source of index paths ``FILE.npz#split/row``; ``files`` default to the referenced file."""
        refs = [parse_reference(p) for p in paths]
        named = {ref[0] for ref in refs}
        if len(named) != 1:
            raise CxrError(f"ChestMNIST rows reference {len(named)} files; expected one")
        if files is None:
            file = Path(named.pop())
            files = {inspect_npz(file)["side"]: file}
        return cls(files, [(split, row) for _, split, row in refs])

    def __len__(self) -> int:
        return len(self.rows)

    def take(self, start: int, stop: int) -> NpzImages:
        return NpzImages(self.files, self.rows[start:stop])

    def origin(self, resolution: int) -> str:
        if resolution in self.files:
            return f"copied from {Path(self.files[resolution]).name}"
        return f"area-resized from {Path(self.files[self.largest]).name} ({self.largest} px)"

    def stamps(self):
        signature = ";".join(
            f"{path}:{os.stat(path).st_size}:{os.stat(path).st_mtime_ns}" for path in self.files.values()
        )
        for split, row in self.rows:
            yield f"{split}/{row}|{signature}"

    def check(self, resolutions) -> None:
        too_big = [r for r in resolutions if r > self.largest]
        if too_big:
            raise CxrError(
                f"resolution {max(too_big)} exceeds the largest ChestMNIST file "
                f"({Path(self.files[self.largest]).name}, {self.largest} px); available sizes: "
                f"{', '.join(map(str, self.files))}"
            )

    def read(self, resolutions) -> dict[int, np.ndarray]:
        self.check(resolutions)
        out = {r: np.empty((len(self.rows), r, r), dtype=np.uint8) for r in resolutions}
        for split in SPLITS:
            at = [i for i, (s, _) in enumerate(self.rows) if s == split]
            if not at:
                continue
            rows = [self.rows[i][1] for i in at]
            read = {}  # each file's rows once: a second read of a stream would rewind it
            for r in resolutions:
                side = r if r in self.files else self.largest
                if side not in read:
                    read[side] = _rows(self.files[side], split, rows)
                if side == r:
                    out[r][at] = read[side]
            derived = [r for r in resolutions if r not in self.files]
            if derived:
                for i, img in zip(at, read[self.largest]):
                    for r, small in area_resize(img, derived).items():  # all sizes of one image at once
                        out[r][i] = small
        return out

    def close(self) -> None:
        close_streams()


class ChestMnistSource:
    """``--dataset chestmnist``: MedMNIST's ChestMNIST files; only the official split keeps patients apart."""

    name = "chestmnist"
    default_view = "all"
    default_split = "official"
    options = ()
    needs_data_dir = True

    def read(self, opts: Options) -> SourceData:
        if opts.view not in ("all", "frontal"):
            raise CxrError(f"ChestMNIST has no view information; --view {opts.view} cannot be applied (use all)")
        index, files = read_chestmnist(opts.data_dir)
        return SourceData(
            index,
            images=NpzImages.from_references(index["path"], files),
            settings={"files": {str(side): str(path) for side, path in files.items()}},
            notes=[NOTE],
        )

    def official_split(self, opts: Options, index: pd.DataFrame, val_fraction: float, seed: int) -> pd.DataFrame:
        return given_split(index, official_folds(index))

    def random_split_error(self) -> str:
        return (
            "ChestMNIST files hold no patient ids, so only --split official keeps a patient's images in one "
            "fold; use --split official"
        )
