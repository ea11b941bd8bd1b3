"""``monai-cxr probe``: the paper's batch-size trade-off, measured.

For each architecture and resolution, one training step (forward, BCE loss, backward, AdamW
step) is run at two small batch sizes. Peak memory grows linearly in the batch, so the two
peaks give a fixed part (weights, gradients, optimizer state, workspace) and a per-image
part (activations); the largest batch that fits a budget follows. On a GPU the peaks are
CUDA's allocator statistics; on a CPU the peak resident set size of a forked process that
runs only that step (its peak reset through ``/proc/self/clear_refs``, Linux), so that the
heap left by one measurement does not hide the next one.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import math
import multiprocessing
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
import torch
from monai.bundle import ConfigParser

from monai_cxr.errors import CxrError
from monai_cxr.fileio import write_csv
from monai_cxr.grid.networks import ARCHS, MIN_RESOLUTION, network_def

__all__ = ["parse_size", "measure", "probe_table", "ProbeResult"]

log = logging.getLogger(__name__)

_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40, "k": 2**10, "m": 2**20, "g": 2**30}


def parse_size(text: str) -> int:
    """``16GiB``, ``80GB``, ``512MiB`` or a number of bytes -> bytes."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
    if not match or match.group(2).lower() not in _UNITS or float(match.group(1)) <= 0:
        raise CxrError(f"memory size {text!r} is not understood; use e.g. 16GiB, 80GB or 512MiB")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


@dataclass
class ProbeResult:
    arch: str
    resolution: int
    device: str
    batch_sizes: tuple[int, int]
    peak_mb: tuple[float, float]
    fixed_mb: float
    per_image_mb: float
    max_batch: int

    def row(self) -> dict:
        d = asdict(self)
        d["batch_sizes"] = "/".join(map(str, self.batch_sizes))
        d["peak_mb"] = "/".join(f"{v:.0f}" for v in self.peak_mb)
        return d


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise OSError(f"{field} not in /proc/self/status")


def _cpu_reset() -> int:
    """Return the current RSS in bytes after trimming the heap and resetting the peak."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError as exc:
        raise CxrError("measuring CPU memory needs Linux /proc/self/clear_refs; run the probe on Linux") from exc
    return _status_kib("VmRSS") * 1024


def _peak_bytes(arch: str, resolution: int, batch: int, device) -> float:
    """Peak memory of one training step from a fresh network, above what was in use before it."""
    if device.type == "cuda":
        return _step_peak(arch, resolution, batch, device)
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(1) as pool:
        return pool.apply(_step_peak, (arch, resolution, batch, device))


def _step_peak(arch: str, resolution: int, batch: int, device) -> float:
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    else:
        base = _cpu_reset()
    net = ConfigParser({"net": network_def(arch)}).get_parsed_content("net").to(device).train()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, fused=True)  # as in the template
    loss_fn = torch.nn.BCEWithLogitsLoss()
    x = torch.randn(batch, 1, resolution, resolution, device=device)
    y = torch.randint(0, 2, (batch, 1), device=device).float()
    for _ in range(2):  # the second step holds the optimizer state as in training
        opt.zero_grad(set_to_none=True)
        loss_fn(net(x), y).backward()
        opt.step()
    if cuda:
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
    else:
        peak = _status_kib("VmHWM") * 1024
    del net, opt, x, y
    return float(peak - base)


def measure(arch: str, resolution: int, budget_bytes: int, device=None, batch_sizes=(2, 8)) -> ProbeResult:
    """Peak memory of a training step at two batch sizes, and the largest batch that fits the budget."""
    if arch not in ARCHS:
        raise CxrError(f"architecture {arch!r} is not one of {', '.join(ARCHS)}")
    if resolution < MIN_RESOLUTION[arch]:
        raise CxrError(f"resolution {resolution} is below the {MIN_RESOLUTION[arch]} px that {arch} accepts")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    b1, b2 = batch_sizes
    p1, p2 = (_peak_bytes(arch, resolution, b, device) for b in (b1, b2))
    per_image = max((p2 - p1) / (b2 - b1), 1.0)
    fixed = max(p1 - per_image * b1, 0.0)
    max_batch = max(0, math.floor((budget_bytes - fixed) / per_image))
    return ProbeResult(arch, resolution, str(device), (b1, b2), (p1 / 2**20, p2 / 2**20),
                       fixed / 2**20, per_image / 2**20, max_batch)


def probe_table(archs, resolutions, budget_bytes: int, device=None, out_csv=None,
                batch_sizes=(2, 8)) -> list[ProbeResult]:
    """Measure every (arch, resolution), print a table, optionally write it as CSV."""
    results = []
    log.info(f"budget {budget_bytes / 2**30:.2f} GiB; peak memory of one training step (forward, backward, AdamW)")
    log.info(f"{'arch':<12} {'px':>5} {'device':>7} {'fixed MiB':>10} {'MiB/image':>10} {'max batch':>10}")
    for arch in archs:
        for r in resolutions:
            res = measure(arch, int(r), budget_bytes, device=device, batch_sizes=batch_sizes)
            results.append(res)
            log.info(f"{arch:<12} {r:>5} {res.device:>7} {res.fixed_mb:>10.0f} {res.per_image_mb:>10.2f} {res.max_batch:>10}")
    if out_csv:
        write_csv(out_csv, pd.DataFrame([r.row() for r in results]))
    return results
