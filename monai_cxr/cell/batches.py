"""Whole uint8 batches from the resize cache, preprocessed on the training device.

The per-sample MONAI path (``LoadCacheRowd`` + ``NormalizeIntensityd`` + ``RandAffined``) runs Python and
float32 arithmetic per image on the loader's CPU cores: about 1,000 images/s per core at 224 px, where a
large GPU trains several thousand. Here the loader only gathers a batch's rows from the memory map with one
fancy index and ships uint8 (4x fewer bytes than float32); conversion, per-image z-scoring and augmentation run
in batch on the device (``DevicePreprocess``, a MONAI ``prepare_batch``).

    dataset = CacheBatchDataset(cache_file, datalist)
    loader = DataLoader(dataset, sampler=sampler, batch_size=64, drop_last=True,
                        collate_fn=collate_batch, pin_memory=True)
    trainer = SupervisedTrainer(..., prepare_batch=DevicePreprocess(augment_prob=0.5, seed=0),
                                optim_set_to_none=True)

The DataLoader keeps its ordinary ``sampler``/``batch_size`` arguments: PyTorch hands a batch's indices to
``CacheBatchDataset.__getitems__`` in one call, and ``collate_batch`` passes the finished batch through. So
``SubsampleSampler``, ``DistributedSampler`` and MONAI's ``set_epoch`` wiring work unchanged.

Over 400 lines: the dataset, the collate, the device-side normalisation and augmentation and
the loss average are one data path and are tested together.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from monai_cxr.cell.pretrained import GREY_MEAN, GREY_STD, NORMALIZATIONS
from monai_cxr.errors import CxrError

__all__ = [
    "NORMALIZATIONS",
    "CacheBatchDataset",
    "DevicePreprocess",
    "LossAverage",
    "affine_theta",
    "affine_warp",
    "collate_batch",
    "fixed_stats",
    "normalize_fixed",
    "normalize_images",
]

_ID_KEYS = ("image_id", "patient_id", "fold")  # carried as lists, when every entry has it


class CacheBatchDataset(torch.utils.data.Dataset):
    """The datalist's images as rows of a uint8 resize cache, read a whole batch at a time.

    ``dataset[[i, j, ...]]`` (and ``__getitems__``, which the DataLoader calls with a batch's indices)
    returns ``{"image": uint8 (B, 1, R, R), "label": float32 (B, C), "image_id": [...], "patient_id": [...]}``
    in the order of the indices, read by one fancy index of the memory map (and ``"fold"`` where the entries have
    one: ``datalist.load`` adds it, ``PredictionSaver`` writes it). ``dataset[i]`` returns one item
    (``image`` 1 x R x R, ``label`` C), so the default collate also works, only slower.

    The memory map is opened, and checked against the datalist, on first read in each process and never pickled,
    so DataLoader workers (fork or spawn) share the page cache, and a config can be instantiated (MONAI's
    ``check_properties``) without the cache. In a worker the batch is read straight into shared memory, as PyTorch's
    default collate does, so it crosses to the main process without another copy.

    Args:
        cache_file: the ``r{R}.npy`` cache, uint8 ``(N, R, R)``.
        data: datalist entries ``{"image": row, "label": [y, ...], "image_id": ..., "patient_id": ...}``.
        sort_reads: read each batch in ascending row order and restore the order afterwards. That costs one
            more copy of the batch (0.35-1x the loader's rate measured with a warm page cache, where the order
            does not matter); it may pay off for a cache on a spinning disk or a network file system.
        with_ids: carry the entries' ids in each batch; training needs none (at 32 px they cost a fifth of a
            64-image batch's time).
    """

    def __init__(
        self, cache_file: str | os.PathLike, data: Sequence[Mapping], sort_reads: bool = False, with_ids: bool = True
    ) -> None:
        self.cache_file = os.fspath(cache_file)
        self.sort_reads = bool(sort_reads)
        try:
            self.rows = np.asarray([int(item["image"]) for item in data], dtype=np.int64)
            labels = [np.asarray(item["label"], dtype=np.float32).reshape(-1) for item in data]
        except (KeyError, TypeError, ValueError) as err:
            raise CxrError(f"datalist entries need an integer 'image' row and a numeric 'label' list ({err})") from None
        if len({len(v) for v in labels}) > 1:
            raise CxrError("datalist labels must all have the same length")
        self.labels = np.stack(labels) if labels else np.zeros((0, 1), np.float32)
        # numpy object arrays of str: indexed at C speed, .tolist() hands out the same str objects (3x faster than
        # a numpy str array, which makes new ones), and nothing for MONAI's set_rnd to walk item by item
        self.ids = {
            key: np.array([str(item[key]) for item in data], dtype=object)
            for key in _ID_KEYS
            if with_ids and data and all(key in item for item in data)
        }
        self._cache: np.ndarray | None = None
        self._pid: int | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def __getstate__(self):  # a memory map is reopened in the receiving process, never pickled
        state = self.__dict__.copy()
        state["_cache"] = None
        return state

    def _open(self) -> np.ndarray:
        if self._cache is None or self._pid != os.getpid():
            if not os.path.isfile(self.cache_file):
                raise CxrError(f"resize cache not found: {self.cache_file}")
            cache = np.load(self.cache_file, mmap_mode="r")
            if cache.ndim != 3 or cache.dtype != np.uint8:
                raise CxrError(
                    f"resize cache {self.cache_file} must be uint8 (N, R, R), got {cache.dtype} {cache.shape}"
                )
            bad = (self.rows < 0) | (self.rows >= len(cache))
            if bad.any():  # checked here once: reads below do not bounds-check
                raise CxrError(
                    f"datalist row {int(self.rows[bad][0])} is outside the cache's {len(cache)} rows "
                    f"({self.cache_file})"
                )
            self._cache, self._pid = np.asarray(cache), os.getpid()  # a plain view: np.memmap indexing costs more
        return self._cache

    def _read(self, rows: np.ndarray) -> torch.Tensor:
        """Rows of the cache as a uint8 ``(B, 1, R, R)`` tensor, in the given order."""
        cache = self._open()
        order = None
        if self.sort_reads and len(rows) > 1 and (np.diff(rows) < 0).any():
            order = np.argsort(rows, kind="stable")
        if torch.utils.data.get_worker_info() is None:
            if order is None:  # np.take: 20 % faster than cache[rows] (rows were bounds-checked in _open)
                return torch.from_numpy(np.take(cache, rows, axis=0, mode="clip")).unsqueeze(1)
            out = np.empty((len(rows), *cache.shape[1:]), dtype=np.uint8)
            out[order] = cache[rows[order]]
            return torch.from_numpy(out).unsqueeze(1)
        # in a worker, as default_collate does: straight into shared memory, which the main process maps
        shape = (len(rows), 1, *cache.shape[1:])
        storage = torch.empty(0, dtype=torch.uint8)._typed_storage()._new_shared(int(np.prod(shape)))
        out = torch.empty(0, dtype=torch.uint8).new(storage).resize_(shape)
        dest = out.numpy()[:, 0]
        if order is None:  # mode="clip": no bounds-check buffer (rows were checked in _open)
            np.take(cache, rows, axis=0, out=dest, mode="clip")
        else:
            dest[order] = cache[rows[order]]
        return out

    def __getitems__(self, indices: Sequence[int]) -> dict[str, Any]:
        """One batch: the items at ``indices``, in that order."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        batch = {"image": self._read(self.rows[idx]), "label": torch.from_numpy(self.labels[idx])}
        for key, values in self.ids.items():
            batch[key] = values[idx].tolist()
        return batch

    def __getitem__(self, index):
        if isinstance(index, (int, np.integer)):
            batch = self.__getitems__([index])
            return {key: value[0] for key, value in batch.items()}
        return self.__getitems__(index)


def collate_batch(data):
    """The DataLoader's ``collate_fn``: a batch from ``CacheBatchDataset.__getitems__`` passes through as is;
    a list of single items (a dataset without ``__getitems__``) gets PyTorch's default collate."""
    if isinstance(data, Mapping):
        return data
    return torch.utils.data.default_collate(data)


def normalize_images(images: torch.Tensor) -> torch.Tensor:
    """Each image of a ``(B, C, H, W)`` batch z-scored over all its pixels, as float32.

    Matches ``NormalizeIntensity()`` (``nonzero=False, channel_wise=False``) applied per image: the image's
    mean and population standard deviation (``unbiased=False``), ``(x - mean) / std``; an image with standard
    deviation 0 is only shifted (MONAI divides by 1 there). Sums run per image row in float32 and across rows
    in float64: the mean is exact for integer pixels such as the cache's uint8 (every partial sum is an integer
    below 2**24), so a flat image becomes exactly 0; the SD comes from the centred pixels' row norms (fused,
    no temporary, relative error ~1e-7 where one float32 norm over a 512 px image is off by ~3e-5). No host sync.
    """
    x = images.to(dtype=torch.float32, memory_format=torch.contiguous_format, copy=True)
    b, shape = x.shape[0], (-1,) + (1,) * (x.ndim - 1)
    n = x[0].numel()
    rows = x.view(b, -1, x.shape[-1])
    mean = rows.sum(-1).sum(-1, dtype=torch.float64) / n
    x.sub_(mean.float().reshape(shape))
    var = torch.linalg.vector_norm(rows, 2, dim=-1).double().square().sum(-1) / n
    std = var.sqrt().float()
    return x.div_(torch.where(std > 0, std, torch.ones_like(std)).reshape(shape))


def fixed_stats(normalize: str) -> tuple[float, float] | None:
    """``(shift, scale)`` on uint8 values of a fixed normalisation (:data:`NORMALIZATIONS`): ``imagenet`` is the
    ``(x / 255 - GREY_MEAN) / GREY_STD`` a folded ImageNet stem expects; None for ``image``; else a one-line error."""
    if normalize not in NORMALIZATIONS:
        raise CxrError(f"normalize {normalize!r} is not one of {', '.join(NORMALIZATIONS)}")
    if normalize == "image":
        return None
    return 255.0 * GREY_MEAN, 255.0 * GREY_STD


def normalize_fixed(images: torch.Tensor, normalize: str = "imagenet") -> torch.Tensor:
    """A batch of uint8 (or float) pixel values as float32 ``(x - shift) / scale`` (see :data:`NORMALIZATIONS`)."""
    shift, scale = fixed_stats(normalize)
    return images.to(dtype=torch.float32, memory_format=torch.contiguous_format, copy=True).sub_(shift).div_(scale)


def affine_theta(angles: torch.Tensor, scales: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Affine matrices ``(B, 3, 3)`` that ``affine_warp`` applies, in normalised ``(row, col)`` coordinates.

    The same geometry as MONAI's ``Affine(rotate_params=angle, scale_params=scales)``: output pixel
    ``p`` (centred pixel coordinates, row first) samples the input at ``R(angle) @ diag(scales) @ p``,
    with ``R = [[cos, -sin], [sin, cos]]``; so a scale above 1 shrinks the picture, as in MONAI.

    Args:
        angles: ``(B,)`` rotations in radians.
        scales: ``(B, 2)`` scale factors of the row and column axes.
        size: the image's ``(H, W)``.
    """
    angles = torch.as_tensor(angles, dtype=torch.float64).reshape(-1)
    scales = torch.as_tensor(scales, dtype=torch.float64).reshape(-1, 2)
    cos, sin = torch.cos(angles), torch.sin(angles)
    theta = torch.zeros((len(angles), 3, 3), dtype=torch.float64)
    theta[:, 0, 0], theta[:, 0, 1] = cos * scales[:, 0], -sin * scales[:, 1]
    theta[:, 1, 0], theta[:, 1, 1] = sin * scales[:, 0], cos * scales[:, 1]
    theta[:, 2, 2] = 1.0
    # MONAI's Resample normalises centred pixel coordinates by 2 / size per axis (align_corners=False)
    h, w = (float(s) for s in size)
    theta[:, 0, 1] *= w / h
    theta[:, 1, 0] *= h / w
    return theta.float()


@functools.lru_cache(maxsize=1)
def _warp():
    from monai.networks.layers import AffineTransform

    return AffineTransform(
        normalized=True, mode="bilinear", padding_mode="zeros", align_corners=False, reverse_indexing=False
    )


def affine_warp(images: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Resample a ``(B, C, H, W)`` batch with ``affine_theta`` matrices: bilinear, zeros outside.

    The warp is MONAI's batched ``monai.networks.layers.AffineTransform`` (``affine_grid`` + ``grid_sample``)
    on normalised coordinates. The matrices are put into PyTorch's ``(x, y)`` order here, on the CPU, and moved
    without blocking: ``AffineTransform``'s own ``reverse_indexing`` builds its index tensor on the device from a
    Python range, a blocking copy that would synchronise the host with the device on every batch.
    """
    xy = torch.as_tensor(theta)[:, [1, 0, 2]][:, :, [1, 0, 2]].contiguous()
    return _warp()(images, _to_device(xy.to(images.dtype), images.device))


def _to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A small CPU tensor on ``device`` without a stream sync (a blocking host-to-GPU copy synchronises)."""
    if device.type == "cpu":
        return t
    return t.pin_memory().to(device, non_blocking=True)


def _range(value, name: str) -> tuple[float, float]:
    """MONAI's range convention: ``x`` means ``[-x, x]``, a pair ``(lo, hi)`` means ``[lo, hi]``."""
    try:
        lo, hi = (float(v) for v in value) if isinstance(value, (list, tuple)) else (-float(value), float(value))
    except (TypeError, ValueError):
        raise CxrError(f"{name} must be a number or a (low, high) pair, got {value!r}") from None
    if not lo <= hi:
        raise CxrError(f"{name} must have low <= high, got {value!r}")
    return lo, hi


def _nonnegative(value, name: str) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        x = float("nan")
    if not x >= 0.0:
        raise CxrError(f"{name} must be a number >= 0, got {value!r}")
    return x


def _prob(value, name: str) -> float:
    try:
        p = float(value)
    except (TypeError, ValueError):
        p = float("nan")
    if not 0.0 <= p <= 1.0:
        raise CxrError(f"{name} must be a probability in [0, 1], got {value!r}")
    return p


class DevicePreprocess:
    """``prepare_batch`` for MONAI's ``SupervisedTrainer``/``SupervisedEvaluator``: uint8 batch in, on device.

    Moves the batch to the device (without blocking when asked to or when it is pinned), converts it to
    float32 and z-scores each image as ``NormalizeIntensityd`` did (``normalize_images``), or with
    ``normalize="imagenet"`` applies the fixed statistics an ImageNet start expects (``normalize_fixed``). With any
    augmentation option set (training only), it then augments in batch, on the device:

    - with probability ``augment_prob`` per image, a random affine as ``RandAffined(rotate_range,
      scale_range, padding_mode="zeros")``: rotation uniform in ``rotate_range`` radians; scale ``1 + u``,
      ``u`` uniform in ``scale_range``. As in MONAI, a single number scales only the first (row) axis, a pair
      of numbers the two axes independently; ``isotropic_scale`` draws one factor for both. Bilinear, zero
      padding (0 is the image mean after z-scoring), via MONAI's ``AffineTransform``; the random matrices are
      own code (MONAI's ``RandAffineGrid`` draws one image at a time, in NumPy);
    - with probability ``flip_prob``, a left-right flip (off by default: it moves the heart);
    - intensity jitter on every image, in units of the image's SD: ``x * (1 + c) + b``, ``c`` uniform in
      ``[-contrast, contrast]``, ``b`` in ``[-brightness, brightness]`` (off by default).

    The random numbers come from a CPU ``torch.Generator`` seeded by ``(seed, rank)`` (the rank under
    ``torch.distributed``, else 0): the same seed gives the same augmentation, and ranks differ. Each batch
    draws a fixed 7 numbers per image whatever the options, and only the few per-image parameters travel to
    the device. Nothing here waits for the device (no ``.item()``, no blocking copy), so the host can queue
    the next step while the device works.

    Args:
        augment_prob: probability of the random affine per image; 0 turns it off.
        rotate_range: rotation range in radians: ``x`` for ``[-x, x]``, or ``(low, high)``.
        scale_range: as MONAI's: one entry per axis (a missing axis keeps scale 1), each ``x`` for
            ``[-x, x]`` or ``(low, high)``; a bare number is the first (row) axis only.
        isotropic_scale: one scale factor for both axes, drawn from the first axis's range.
        flip_prob: probability of a left-right flip per image.
        brightness: half-width of the brightness shift (image SDs).
        contrast: half-width of the relative contrast change.
        seed: seed of the augmentation's random stream.
        normalize: ``image`` (per-image z-score) or ``imagenet`` (fixed statistics), see :data:`NORMALIZATIONS`.
    """

    def __init__(
        self,
        augment_prob: float = 0.0,
        rotate_range=0.09,
        scale_range=0.05,
        isotropic_scale: bool = False,
        flip_prob: float = 0.0,
        brightness: float = 0.0,
        contrast: float = 0.0,
        seed: int = 0,
        normalize: str = "image",
    ) -> None:
        fixed_stats(normalize)  # a one-line error for anything else
        self.normalize = normalize
        self.augment_prob = _prob(augment_prob, "augment_prob")
        self.flip_prob = _prob(flip_prob, "flip_prob")
        self.rotate = _range(rotate_range, "rotate_range")
        specs = list(scale_range) if isinstance(scale_range, (list, tuple)) else [scale_range]
        if not 1 <= len(specs) <= 2:
            raise CxrError(f"scale_range must be a number or one entry per axis (at most 2), got {scale_range!r}")
        self.scale = [_range(v, "scale_range") for v in specs] + [(0.0, 0.0)] * (2 - len(specs))
        self.isotropic_scale = bool(isotropic_scale)
        self.brightness = _nonnegative(brightness, "brightness")
        self.contrast = _nonnegative(contrast, "contrast")
        self.seed = int(seed)
        self._generator: torch.Generator | None = None

    @property
    def augments(self) -> bool:
        """Whether this instance changes images beyond normalisation (a training one)."""
        return bool(self.augment_prob or self.flip_prob or self.brightness or self.contrast)

    @property
    def generator(self) -> torch.Generator:
        if self._generator is None:  # first use: torch.distributed is initialised by then
            import torch.distributed as dist

            rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
            seed = int(np.random.SeedSequence([self.seed, rank]).generate_state(1, dtype=np.uint64)[0] >> 1)
            self._generator = torch.Generator().manual_seed(seed)
        return self._generator

    def __call__(
        self, batchdata: Mapping, device: str | torch.device | None = None, non_blocking: bool = False, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(images, labels)`` on ``device``; ``kwargs`` (the engines' ``to_kwargs``) apply to the images last."""
        device = torch.device(device) if device is not None else batchdata["image"].device
        image = batchdata["image"]
        non_blocking = non_blocking or (device.type == "cuda" and image.is_pinned())
        x = image.to(device, non_blocking=non_blocking)
        x = normalize_images(x) if self.normalize == "image" else normalize_fixed(x, self.normalize)
        label = batchdata.get("label")
        if isinstance(label, torch.Tensor):
            label = label.to(device, dtype=torch.float32, non_blocking=non_blocking)
        if self.augments:
            x = self.augment(x)
        if kwargs:
            x = x.to(**kwargs)
        return x, label

    def draw(self, n: int) -> dict[str, torch.Tensor]:
        """The random parameters of the next batch of ``n`` images (CPU; advances the stream).

        ``angle`` (n,) and ``scale`` (n, 2) of the affine, ``warp`` and ``flip`` (indices of the images
        that get them), ``gain`` and ``shift`` (n,) of the intensity jitter.
        """
        u = torch.rand((n, 7), generator=self.generator, dtype=torch.float64)
        lo, hi = self.rotate
        scale = torch.stack([1 + a + (b - a) * u[:, 2 + i] for i, (a, b) in enumerate(self.scale)], dim=1)
        if self.isotropic_scale:
            scale[:, 1] = scale[:, 0]
        return {
            "angle": lo + (hi - lo) * u[:, 1],
            "scale": scale,
            "warp": (u[:, 0] < self.augment_prob).nonzero().reshape(-1),
            "flip": (u[:, 4] < self.flip_prob).nonzero().reshape(-1),
            "shift": self.brightness * (2 * u[:, 5] - 1),
            "gain": 1 + self.contrast * (2 * u[:, 6] - 1),
        }

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        """The random augmentation of a normalised ``(B, C, H, W)`` float batch (see the class docstring)."""
        n, p = x.shape[0], self.draw(x.shape[0])
        warp, flip = p["warp"], p["flip"]  # indices known on the host: no device sync to select images
        if len(warp) == n:
            x = affine_warp(x, affine_theta(p["angle"], p["scale"], x.shape[2:]))
        elif len(warp):
            index = _to_device(warp, x.device)
            theta = affine_theta(p["angle"][warp], p["scale"][warp], x.shape[2:])
            x.index_copy_(0, index, affine_warp(x.index_select(0, index), theta))
        if len(flip):
            index = _to_device(flip, x.device)
            x.index_copy_(0, index, x.index_select(0, index).flip(-1))
        if self.brightness or self.contrast:
            params = torch.stack([p["gain"], p["shift"]]).float()
            params = _to_device(params, x.device).reshape(2, n, *[1] * (x.ndim - 1))
            x = torch.addcmul(params[1], x, params[0])
        return x


def _loss(output):
    """The loss of a trainer's output: a dict (``decollate=False``) or a decollated list of dicts."""
    return output[0]["loss"] if isinstance(output, (list, tuple)) else output["loss"]


class LossAverage:
    """The epoch's mean training loss in ``engine.state.metrics[name]``, read from the device once per epoch.

    Logging the loss with ``.item()`` every iteration (``TensorBoardStatsHandler``'s default
    ``iteration_log=True``, a progress bar's ``output_transform``) makes the host wait for the device at every
    step, so it cannot queue the next one. This attaches Ignite's ``Average`` metric with its accumulator on
    the engine's device: each iteration adds the loss there without a sync; at ``EPOCH_COMPLETED`` it
    synchronises once (and averages over ranks under ``torch.distributed``, so every rank must attach it).
    Attach it before ``StatsHandler`` / ``TensorBoardStatsHandler`` (``iteration_log=False``), which then log
    the value with the epoch's other metrics.

    Args:
        name: the metric's name.
        device: where to accumulate [default: the engine's ``state.device``, which MONAI's engines set].
    """

    def __init__(self, name: str = "train_loss", device: str | torch.device | None = None) -> None:
        self.name = name
        self.device = device

    def attach(self, engine) -> None:
        from ignite.metrics import Average

        device = self.device if self.device is not None else getattr(engine.state, "device", None) or "cpu"
        Average(output_transform=_loss, device=device).attach(engine, self.name)
