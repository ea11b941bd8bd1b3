"""The per-sample transforms of a cell: read an image from the resize cache, normalise it as the network expects."""

from __future__ import annotations

import os

import numpy as np
from monai.config import KeysCollection
from monai.transforms import MapTransform, NormalizeIntensity

from monai_cxr.cell.batches import fixed_stats

__all__ = ["LoadCacheRowd", "NormalizeRadiographd"]


class LoadCacheRowd(MapTransform):
    """Replace the row number under each key by that row of a resize cache, as 1 x R x R float32.

    The cache (``r{R}.npy``, uint8 ``(N, R, R)``) is opened read-only as a memory map on first
    use in each process, so DataLoader workers share the operating system's page cache and
    nothing is decoded per step.

    Args:
        keys: keys whose values are cache row numbers.
        cache_file: path of the ``.npy`` cache.
        allow_missing_keys: do not raise if a key is absent.
    """

    def __init__(self, keys: KeysCollection, cache_file: str, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.cache_file = os.fspath(cache_file)
        self._cache: np.ndarray | None = None
        self._pid: int | None = None

    def _open(self) -> np.ndarray:
        if self._cache is None or self._pid != os.getpid():
            self._cache = np.load(self.cache_file, mmap_mode="r")
            self._pid = os.getpid()
        return self._cache

    def __getstate__(self):  # a memory map is reopened in the receiving process, never pickled
        state = self.__dict__.copy()
        state["_cache"] = None
        return state

    def __call__(self, data):
        d = dict(data)
        cache = self._open()
        for key in self.key_iterator(d):
            d[key] = cache[int(d[key])][None].astype(np.float32)
        return d


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
