"""Scoring image files with a trained cell: what ``configs/inference.json`` and ``monai-cxr predict`` run.

A cell was trained on rows of the study's resize cache, never on files. To score a file the same way, the
transforms below redo what made the cache row, with the same functions: decode to 8-bit grey
(:func:`~monai_cxr.data.images.read_image`; DICOM through :func:`~monai_cxr.data.dicom.read_dicom`), make it
square with the study's policy (:func:`~monai_cxr.data.images.make_square`), exact area means down to the
cell's resolution (:func:`~monai_cxr.data.resize.area_resize`). The bundle then casts to float32 and applies
``NormalizeIntensityd`` as training does, so a file that is in the study scores as its cache row did.

Arrays are channel-first NumPy throughout: ``(1, H, W)`` uint8 until the cast.

    LoadRadiographd -> MakeSquared -> AreaResized -> CastToTyped(float32) -> NormalizeIntensityd -> EnsureTyped

Over 400 lines: the transforms, the file finder, the dataset and the saver are what
``inference.json`` names, kept beside ``predict``, which runs that config.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from ignite.engine import Engine, Events
from ignite.handlers import ProgressBar
from monai.bundle import ConfigParser
from monai.config import KeysCollection
from monai.data import Dataset
from monai.transforms import MapTransform, NormalizeIntensity, Transform, apply_transform
from PIL import Image

from monai_cxr.cell.batches import fixed_stats
from monai_cxr.cell.handlers import findings_of
from monai_cxr.data.cache import SQUARE_POLICIES
from monai_cxr.data.dicom import DICOM_SUFFIXES, is_dicom, read_dicom
from monai_cxr.data.images import IMAGE_SUFFIXES, make_square, read_image
from monai_cxr.data.resize import area_resize
from monai_cxr.errors import CxrError
from monai_cxr.fileio import write_csv

log = logging.getLogger(__name__)

__all__ = [
    "SUFFIXES",
    "AreaResize",
    "AreaResized",
    "ImageDataset",
    "LoadRadiograph",
    "LoadRadiographd",
    "MakeSquare",
    "MakeSquared",
    "NormalizeRadiographd",
    "ProgressOnTerminal",
    "ScoreSaver",
    "find_images",
    "predict",
    "read_radiograph",
    "require_images",
    "user_error",
]

# What a folder is searched for (files without one of these are still taken when they are DICOM)
SUFFIXES = (*IMAGE_SUFFIXES, *DICOM_SUFFIXES)


def read_radiograph(path: str | os.PathLike) -> np.ndarray:
    """One image file (PNG, JPEG, TIFF, BMP, NIfTI or DICOM) as uint8 ``(rows, columns)``."""
    path = os.fspath(path)
    if not path.lower().endswith(IMAGE_SUFFIXES) and is_dicom(path):
        return read_dicom(path)
    return np.asarray(read_image(path))


def _channel(img: np.ndarray, what: str) -> np.ndarray:
    """The one grey channel of a ``(1, H, W)`` uint8 array."""
    img = np.asarray(img)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[0] != 1:
        raise CxrError(f"{what} needs a uint8 (1, H, W) image, not {img.dtype} of shape {img.shape}")
    return img[0]


class LoadRadiograph(Transform):
    """A file path to its pixels as uint8 ``(1, H, W)``, decoded exactly as the resize cache decodes its sources."""

    def __call__(self, path: str | os.PathLike) -> np.ndarray:
        return read_radiograph(path)[None]


class MakeSquare(Transform):
    """Pad (black, centred) or centre-crop to a square, as the study's ``square`` policy made the cache.

    Args:
        policy: ``pad`` or ``crop`` (``study.json["data"]["square"]``).
    """

    def __init__(self, policy: str = "pad") -> None:
        if policy not in SQUARE_POLICIES:
            raise CxrError(f"square policy {policy!r} is not one of {', '.join(SQUARE_POLICIES)}")
        self.policy = policy

    def __call__(self, img: np.ndarray) -> np.ndarray:
        return np.asarray(make_square(Image.fromarray(_channel(img, "MakeSquare"), mode="L"), self.policy))[None]


class AreaResize(Transform):
    """Exact area means of a square image at ``size`` x ``size``, as the cache's ``r{size}.npy`` holds it.

    An image smaller than ``size`` is refused, as the cache refuses it: the cell never saw upsampled images.

    Args:
        size: the cell's resolution.
    """

    def __init__(self, size: int) -> None:
        self.size = int(size)
        if self.size < 1:
            raise CxrError(f"size {size} is not a positive integer")

    def __call__(self, img: np.ndarray) -> np.ndarray:
        square = _channel(img, "AreaResize")
        if square.shape[0] < self.size:
            raise CxrError(
                f"the image is {square.shape[0]} px after making it square, smaller than the "
                f"{self.size} px this cell was trained at"
            )
        return area_resize(square, [self.size])[self.size][None]


class _Dictionary(MapTransform):
    """Apply an array transform to each key's value."""

    transform: Transform

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.transform(d[key])
        return d


class LoadRadiographd(_Dictionary):
    """Dictionary version of :class:`LoadRadiograph`: each key's path becomes its ``(1, H, W)`` uint8 pixels."""

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = LoadRadiograph()


class MakeSquared(_Dictionary):
    """Dictionary version of :class:`MakeSquare`."""

    def __init__(self, keys: KeysCollection, policy: str = "pad", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = MakeSquare(policy)


class AreaResized(_Dictionary):
    """Dictionary version of :class:`AreaResize`."""

    def __init__(self, keys: KeysCollection, size: int, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = AreaResize(size)


def _wanted(path: Path) -> bool:
    return path.name.lower().endswith(SUFFIXES) or is_dicom(path)


def _folder(folder: Path) -> list[Path]:
    """Image files under ``folder``, recursively, sorted; hidden files and folders (``.name``) left out."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found.extend(Path(root, f) for f in files if not f.startswith(".") and _wanted(Path(root, f)))
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def _inputs(inputs) -> tuple[bool, list]:
    single = isinstance(inputs, (str, os.PathLike))
    return single, [inputs] if single else list(inputs)


def _nothing_found(inputs) -> CxrError:
    single, items = _inputs(inputs)
    if single and not Path(inputs).exists():
        return CxrError(f"{os.fspath(inputs)} does not exist")
    shown = ", ".join(os.fspath(i) for i in items) or "(nothing given)"
    return CxrError(f"no image files in {shown} (looked for {', '.join(SUFFIXES)} and DICOM files, recursively)")


def find_images(inputs: str | os.PathLike | Sequence[str | os.PathLike], allow_empty: bool = False) -> list[dict]:
    """The datalist of the files to score: ``[{"image": path, "name": name}, ...]``.

    ``inputs`` is one folder (the bundle's ``dataset_dir``; ``name`` is then the path relative to it), or a
    sequence of files and folders (``monai-cxr predict``; ``name`` is then the path as given, a folder's
    files as the folder as given joined with their relative path). Folders are searched recursively for
    ``SUFFIXES`` and for DICOM files of any name, in sorted order; a file named directly is taken whatever
    its suffix. A file reached twice is scored once.

    Finding nothing is a CxrError, unless ``allow_empty``: then a single folder that is missing or holds no
    image gives ``[]``. The bundle uses that so that MONAI's ``check_properties`` can instantiate the
    dataset of a cell whose ``inference/images`` is not there yet; its ``run`` calls :func:`require_images`.
    """
    single, items = _inputs(inputs)
    if single and allow_empty and not Path(inputs).is_dir():
        return []
    out, seen = [], set()
    for item in items:
        path = Path(item)
        if path.is_dir():
            files = _folder(path)
            named = [
                (f, f.relative_to(path).as_posix() if single else os.path.join(os.fspath(item), f.relative_to(path)))
                for f in files
            ]
        elif path.is_file():
            named = [(path, os.fspath(item))]
        else:
            raise CxrError(f"{os.fspath(item)} does not exist")
        for file, name in named:
            key = os.path.realpath(file)
            if key not in seen:
                seen.add(key)
                out.append({"image": os.fspath(file), "name": name})
    if not out and not (single and allow_empty):
        raise _nothing_found(inputs)
    return out


def require_images(datalist: Sequence, inputs) -> None:
    """Refuse to run on nothing, naming ``inputs`` (MONAI's evaluator would skip an empty run silently)."""
    if not len(datalist):
        raise _nothing_found(inputs)


def user_error(exc: BaseException | None) -> CxrError | None:
    """The CxrError behind an exception, if any: MONAI wraps errors of transforms and of instantiation."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, CxrError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


class ImageDataset(Dataset):
    """MONAI's ``Dataset`` of :func:`find_images` entries, with one-line errors that name the file.

    A file the transforms cannot take (unreadable, corrupt, smaller than the resolution) raises a CxrError
    naming it; with ``skip_bad`` its item is a zero image with the reason in ``error`` instead (every item
    has ``error``, empty when fine), so one bad file among thousands does not stop the run:
    :class:`ScoreSaver` leaves it out of the scores and lists it.

    Args:
        data: entries ``{"image": path, "name": ...}``.
        transform: the preprocessing.
        skip_bad: mark bad files instead of stopping.
        resolution: the side of the zero image of a bad file.
    """

    def __init__(self, data: Sequence[Mapping], transform, skip_bad: bool = False, resolution: int = 1) -> None:
        super().__init__(data=data, transform=transform)
        if isinstance(skip_bad, str) and skip_bad.lower() in ("true", "false"):  # as a command line may give it
            skip_bad = skip_bad.lower() == "true"
        if not isinstance(skip_bad, bool):
            raise CxrError(f"skip_bad must be true or false, not {skip_bad!r}")
        self.skip_bad = skip_bad
        self.resolution = int(resolution)

    def _transform(self, index: int):
        item = self.data[index]
        try:
            out = apply_transform(self.transform, item) if self.transform is not None else dict(item)
        except Exception as exc:
            error = user_error(exc)
            if error is None:
                raise
            path = os.fspath(item["image"])
            message = str(error) if path in str(error) else f"image {path}: {error}"
            if not self.skip_bad:
                raise CxrError(message) from None
            zeros = torch.zeros((1, self.resolution, self.resolution), dtype=torch.float32)
            return {**item, "image": zeros, "error": message}
        return {**out, "error": ""}


def _column(items, key: str) -> list:
    """A key's values from a batch (dict of sequences) or a decollated batch (list of dicts)."""
    if isinstance(items, Mapping):
        values = items.get(key)
        return [] if values is None else list(values)
    return [item.get(key) for item in items]


class ScoreSaver:
    """Write ``image, score`` of every scored file as CSV (atomically) when the evaluator's run ends.

    ``image`` is the entry's ``name``; ``score`` the predicted probability. Files marked bad by
    :class:`ImageDataset` (``skip_bad``) are left out and listed, one warning each, in ``skipped``.
    A network with k outputs (a multi-label cell) gets one row per file and finding, ``image, finding,
    score``; the findings are named by the cell's datalist (``label_names``), else ``output0``, ``output1``, ...

    Args:
        filename: the CSV to write.
        name_key: batch key of the file's name.
        score_key: output key of the probability.
        datalist_file: the cell's ``datalist.json`` (read with ``json``), for the names of k findings.
    """

    def __init__(
        self,
        filename: str | os.PathLike,
        name_key: str = "name",
        score_key: str = "pred",
        datalist_file: str | None = None,
    ) -> None:
        self.filename = filename
        self.name_key = name_key
        self.score_key = score_key
        self.datalist_file = datalist_file
        self.reset()

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.write)

    def reset(self, engine: Engine | None = None) -> None:
        self.names: list[str] = []
        self.scores: list[list[float]] = []
        self.skipped: list[tuple[str, str]] = []

    def collect(self, engine: Engine) -> None:
        batch, output = engine.state.batch, engine.state.output
        names, errors = _column(batch, self.name_key), _column(batch, "error")
        scores = _column(output, self.score_key)
        errors = errors or [""] * len(names)
        for name, error, score in zip(names, errors, scores):
            if error:
                self.skipped.append((name, error))
            else:
                self.names.append(name)
                self.scores.append(torch.as_tensor(score).detach().float().reshape(-1).cpu().tolist())

    def write(self, engine: Engine | None = None) -> None:
        k = max((len(s) for s in self.scores), default=1)
        if k == 1:
            frame = pd.DataFrame({"image": self.names, "score": [s[0] for s in self.scores]})
        else:
            findings = findings_of(self.datalist_file)
            findings = findings if findings and len(findings) == k else [f"output{j}" for j in range(k)]
            frame = pd.DataFrame(
                {
                    "image": [n for n in self.names for _ in range(k)],
                    "finding": findings * len(self.names),
                    "score": [v for s in self.scores for v in s],
                }
            )
        write_csv(self.filename, frame)
        for _, error in self.skipped:
            log.warning(f"skipped: {error}")
        skipped = f"; skipped {len(self.skipped)} files (listed above)" if self.skipped else ""
        log.info(f"scored {len(self.names)} images into {os.fspath(self.filename)}{skipped}")


class ProgressOnTerminal:
    """Ignite's progress bar over the batches, only on an interactive terminal: logs of batch runs stay clean."""

    def attach(self, engine: Engine) -> None:
        if sys.stderr.isatty():
            ProgressBar(persist=False).attach(engine)


@contextlib.contextmanager
def _engine_logs_muted():
    """Silence the evaluator's own log lines (StatsHandler's, Ignite's): the CLI reports errors in one line."""
    ignite, stats = logging.getLogger("ignite"), logging.getLogger("monai.handlers.StatsHandler")
    level, disabled = ignite.level, stats.disabled
    ignite.setLevel(logging.CRITICAL + 1)  # the engines' loggers are its children
    stats.disabled = True  # MONAI's get_logger gives it its own level and handler
    try:
        yield
    finally:
        ignite.setLevel(level)
        stats.disabled = disabled


def _device(device: str | torch.device | None) -> torch.device | None:
    if device is None:
        return None
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise CxrError(f"device {device!r} is not a torch device (e.g. cpu, cuda, cuda:1)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CxrError(f"device {device} is not available: this machine has no CUDA GPU")
    return device


def _check_out(out: str | os.PathLike, inputs) -> None:
    """One line unless ``out`` is a fit place for the scores: not an image's name, not one of the inputs."""
    name = os.fspath(out)
    if name.lower().endswith(SUFFIXES):
        raise CxrError(f"--out {name} names an image file; the scores are a CSV table (e.g. scores.csv)")
    if os.path.exists(name):
        for given in inputs:
            if os.path.exists(given) and os.path.samefile(name, given):
                raise CxrError(f"--out {name} is one of the inputs; write the scores elsewhere")


def predict(
    cell_dir: str | os.PathLike,
    inputs: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    skip_bad: bool = False,
) -> ScoreSaver:
    """Score image files and folders with the cell's ``configs/inference.json``; write ``image, score`` to ``out``.

    It runs the bundle's own config (what the stock runner runs), so both give the same scores. The user's
    paths reach the config as ``Path`` objects in a tuple: MONAI's parser evaluates and rewrites only strings,
    dicts and lists, so a name with ``$``, ``@`` or ``#`` stays as it is. Returns the saver (``names``,
    ``scores``, ``skipped``).
    """
    _check_out(out, inputs)
    cell_dir = Path(cell_dir)
    config = cell_dir / "configs" / "inference.json"
    if not config.is_file():
        raise CxrError(f"{cell_dir} is not a monai-cxr cell: {config} not found")
    if not (cell_dir / "models" / "model.pt").is_file():
        raise CxrError(f"cell {cell_dir} has no trained model (models/model.pt); run it first with `monai-cxr run`")
    root = os.fspath(cell_dir.resolve())
    if "#" in root:  # a string that the parser reads, and it rewrites '#'
        raise CxrError(f"cell path {root!r} contains '#', which MONAI configs rewrite to '::'; move the study")
    overrides = {
        "bundle_root": root,
        "dataset_dir": tuple(Path(p) for p in inputs),
        "scores_file": Path(out),
        "skip_bad": bool(skip_bad),
    }
    if batch_size is not None:
        overrides["batch_size"] = int(batch_size)
    device = _device(device)
    if device is not None:
        overrides["device"] = device
    parser = ConfigParser()
    parser.read_config(os.fspath(config))
    if "score_saver" not in parser:
        raise CxrError(f"{config} cannot score image files (written by an older monai-cxr); generate the cell again")
    parser.update(overrides)
    try:
        with _engine_logs_muted():
            for key in ("initialize", "run", "finalize"):
                if key in parser:
                    parser.get_parsed_content(key)
    except Exception as exc:
        error = user_error(exc)
        if error is None:
            raise
        raise CxrError(str(error)) from None
    saver = parser.get_parsed_content("score_saver")
    if not saver.names:
        raise CxrError(f"none of the {len(saver.skipped)} files could be scored (see the lines above)")
    return saver


class NormalizeRadiographd(MapTransform):
    """Normalise images as the cell's network expects (the bundle's ``normalize`` key).

    ``image``: each image z-scored, exactly ``NormalizeIntensityd`` (scratch and chest-X-ray starts);
    ``imagenet``: the fixed ``(x - shift) / scale`` of an ImageNet start on 0-255 pixel values
    (``monai_cxr.cell.batches.fixed_stats``), the same numbers ``DevicePreprocess(normalize="imagenet")`` gives.
    """

    def __init__(self, keys: KeysCollection, normalize: str = "image", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.stats = fixed_stats(normalize)
        self.zscore = NormalizeIntensity()

    def __call__(self, data):
        d = dict(data)
        for key in self.key_iterator(d):
            if self.stats is None:
                d[key] = self.zscore(d[key])
            else:
                shift, scale = self.stats
                d[key] = (np.asarray(d[key], dtype=np.float32) - np.float32(shift)) / np.float32(scale)
        return d
