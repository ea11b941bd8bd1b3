"""``monai-cxr probe``: the paper's batch-size trade-off, measured.

For each architecture and resolution, one training step (forward, BCE loss, backward, fused
AdamW step, with the optimizer state already held) is run at two small batch sizes. Memory
grows linearly in the batch at every moment of the step, but the moment of the peak moves:
at small batches it is the end of backward (all gradients alive), at large batches the start
of backward (all activations alive). So each step is traced op by op (the bytes of tensor
storage alive after every aten op, counted once per storage); the two traces give a line per
moment, and the reported line goes through the measured peak at the smaller batch with the
steepest per-image growth of any moment. The peak is convex in the batch, so the line bounds it
from above at every batch, and by no more than the batch-independent bytes that come and go
within the step (mostly the gradients). The slope of the two peaks alone would not: it is the
small-batch slope and underestimates large batches.

The peak itself: on CUDA, ``torch.cuda.max_memory_allocated`` (exact for the caching
allocator, cuDNN workspaces included; the CUDA context and the allocator's cached slack come on
top, so leave the budget some headroom). On a CPU, the traced tensor bytes: deterministic, but an
estimate, a lower bound of the process's real peak, since kernels' private scratch space
(oneDNN), the allocator's slack and Python itself are not tensors. (The peak RSS of a process,
used before, moved with the allocator's caching and the machine's load.)
"""

from __future__ import annotations

import gc
import logging
import math
import re
import weakref
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import pandas as pd
import torch
from monai.bundle import ConfigParser
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from monai_cxr.errors import CxrError
from monai_cxr.fileio import write_csv
from monai_cxr.grid.networks import ARCHS, accepts, arch_defs, check_input_size, network_def, smallest_input
from monai_cxr.grid.settings import GridSettings

__all__ = [
    "MIN_BATCH",
    "ProbeResult",
    "auto_batch_sizes",
    "batch_for_budget",
    "measure",
    "parse_size",
    "probe_table",
    "read_probe_csv",
]

log = logging.getLogger(__name__)

MIB = 2**20
MIN_BATCH = 2  # BatchNorm needs two samples per channel in training

_UNITS = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
    "k": 2**10,
    "m": 2**20,
    "g": 2**30,
}


def parse_size(text: str) -> int:
    """``16GiB``, ``80GB``, ``512MiB`` or a number of bytes -> bytes."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
    if not match or match.group(2).lower() not in _UNITS or float(match.group(1)) <= 0:
        raise CxrError(f"memory size {text!r} is not understood; use e.g. 16GiB, 80GB or 512MiB")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def _max_batch(fixed_mb: float, per_image_mb: float, budget_mb: float) -> int:
    """Largest batch whose fitted memory fits the budget (0 when the fixed part alone does not)."""
    return max(0, math.floor((budget_mb - fixed_mb) / per_image_mb))


@dataclass(frozen=True)
class ProbeResult:
    """One row of the table; memory in MiB (2**20 bytes), fitted as ``fixed_mb + per_image_mb * batch``."""

    arch: str
    resolution: int
    device: str
    budget_mb: float
    fixed_mb: float
    per_image_mb: float
    max_batch: int

    @property
    def note(self) -> str:
        if self.max_batch == 0:
            return f"the budget is below the fixed part ({self.fixed_mb:.0f} MiB: weights, gradients, AdamW state)"
        if self.max_batch < MIN_BATCH:
            return f"fewer than {MIN_BATCH} images fit (BatchNorm needs {MIN_BATCH})"
        return ""

    def row(self) -> dict:
        return asdict(self)


CSV_COLUMNS = tuple(f.name for f in fields(ProbeResult))


class _LiveBytes(TorchDispatchMode):
    """Bytes of tensor storage alive on one kind of device, once per storage; ``trace`` gets them after every op.

    A storage is counted when an op first returns it and uncounted when it is freed (a weak
    reference's callback), so views, in-place ops and tensors saved for backward are not counted twice.
    """

    def __init__(self, device_type: str = "cpu"):
        super().__init__()
        self.device_type = device_type
        self.live = 0
        self.trace: list[int] | None = None
        self._sizes: dict[int, int] = {}
        self._refs: dict[int, weakref.ref] = {}

    def _freed(self, key: int) -> None:
        self.live -= self._sizes.pop(key)
        del self._refs[key]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.device.type == self.device_type:
                st = t.untyped_storage()
                key, size = id(st), st.nbytes()
                if key in self._sizes:  # a resize (out= ops)
                    self.live += size - self._sizes[key]
                    self._sizes[key] = size
                elif size:
                    self._sizes[key] = size
                    self.live += size
                    self._refs[key] = weakref.ref(st, lambda _, k=key: self._freed(k))
        if self.trace is not None:
            self.trace.append(self.live)
        return out


def _step_trace(
    arch: str, resolution: int, batch: int, device: torch.device, defs: dict | None = None
) -> tuple[list[int], float]:
    """Tensor bytes alive after each op of a training step at ``batch``, and the step's peak in bytes.

    A first step at a small resolution (16 px, or the smallest the network takes) creates the AdamW
    state, so the traced step holds it as training does. The peak counts from before the network was
    built: the CUDA allocator's on CUDA, the traced maximum on a CPU.
    """
    cuda = device.type == "cuda"
    warm = max(16, smallest_input(network_def(arch, defs)))  # a cheap first step (optimiser state, allocator)
    gc.collect()
    gc.disable()  # collections at arbitrary moments would make the trace depend on the heap's history
    try:
        if cuda:
            torch.cuda.synchronize(device)
            torch.cuda.empty_cache()
            base = torch.cuda.memory_allocated(device)
        with _LiveBytes(device.type) as live:
            net = ConfigParser({"net": network_def(arch, defs)}).get_parsed_content("net").to(device).train()
            opt = torch.optim.AdamW(net.parameters(), lr=1e-3, fused=True)  # as in the template
            loss_fn = torch.nn.BCEWithLogitsLoss()
            for b, r in ((MIN_BATCH, warm), (batch, resolution)):
                x = torch.randn(b, 1, r, r, device=device)
                y = (torch.rand(b, 1, device=device) > 0.5).float()
                opt.zero_grad(set_to_none=True)
                if (b, r) == (batch, resolution):
                    live.trace = [live.live]
                    if cuda:
                        torch.cuda.reset_peak_memory_stats(device)
                loss_fn(net(x), y).backward()
                opt.step()
                del x, y
            trace = live.trace
            if cuda:
                torch.cuda.synchronize(device)
                peak = float(torch.cuda.max_memory_allocated(device) - base)
            else:
                peak = float(max(trace))
            del net, opt
    finally:
        gc.enable()
    return trace, peak


def _resolve_device(device) -> torch.device:
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def measure(
    arch: str, resolution: int, budget_bytes: int, device=None, batch_sizes=None, defs: dict | None = None
) -> ProbeResult:
    """Fit a training step's memory as fixed + per-image x batch, and the largest batch that fits the budget.

    ``defs`` maps names to ``network_def`` s (``grid.networks.arch_defs``, an ``--arch-file``'s networks
    included); by default the built-in ones.

    ``batch_sizes`` defaults to 2 and 8 on CUDA (a wider base against the allocator's rounding)
    and 2 and 4 on a CPU (traced bytes are exactly linear; at 600 px a DenseNet121 image takes ~0.9 GiB).
    """
    device = _resolve_device(device)
    batch_sizes = batch_sizes or ((2, 8) if device.type == "cuda" else (2, 4))
    defs = ARCHS if defs is None else defs
    if arch not in defs:
        raise CxrError(f"architecture {arch!r} is not one of {', '.join(defs)}")
    check_input_size(arch, network_def(arch, defs), [resolution])
    b1, b2 = batch_sizes
    if not MIN_BATCH <= b1 < b2:
        raise CxrError(f"probe batch sizes {b1}, {b2} must rise from at least {MIN_BATCH}")
    (t1, p1), (t2, p2) = (_step_trace(arch, resolution, b, device, defs) for b in (b1, b2))
    per_image = (p2 - p1) / (b2 - b1)
    if len(t1) == len(t2):  # the same ops at both batch sizes: the steepest moment
        per_image = max(per_image, max((v2 - v1) / (b2 - b1) for v1, v2 in zip(t1, t2)))
    else:
        log.warning(f"{arch} at {resolution} px ran different ops at batch {b1} and {b2}; using the peaks' slope")
    if per_image <= 0:
        raise CxrError(f"{arch} at {resolution} px: memory did not grow with the batch ({p1:.0f} -> {p2:.0f} bytes)")
    fixed_mb = round(max(p1 - per_image * b1, 0.0) / MIB, 6)
    per_image_mb = round(per_image / MIB, 6) or 1e-6
    budget_mb = budget_bytes / MIB
    return ProbeResult(
        arch, resolution, str(device), budget_mb, fixed_mb, per_image_mb, _max_batch(fixed_mb, per_image_mb, budget_mb)
    )


def batch_for_budget(result: ProbeResult, budget_bytes: int | None = None, cap: int = 512, multiple: int = 8) -> int:
    """The batch to train with: the largest that fits, capped, rounded down to ``multiple`` when at least that.

    ``budget_bytes`` defaults to the budget the result was probed with. Fewer than two images is
    an error (BatchNorm), naming the network and the resolution.
    """
    budget_mb = result.budget_mb if budget_bytes is None else budget_bytes / MIB
    fits = _max_batch(result.fixed_mb, result.per_image_mb, budget_mb)
    if fits < MIN_BATCH:
        need = result.fixed_mb + MIN_BATCH * result.per_image_mb
        raise CxrError(
            f"{result.arch} at {result.resolution} px does not fit {budget_mb:.0f} MiB: a batch of "
            f"{MIN_BATCH} needs {need:.0f} MiB on {result.device}"
        )
    batch = min(fits, cap)
    return batch - batch % multiple if batch >= multiple else batch


def auto_batch_sizes(
    archs, resolutions, budget_bytes: int, device=None, cap: int = 512, multiple: int = 8, results=None, defs=None
) -> dict[tuple[str, int], int]:
    """``{(arch, resolution): batch}`` for ``generate --batch-size auto``: higher resolution, smaller batch.

    Measures each pair, or looks it up in ``results`` (e.g. ``read_probe_csv`` of an earlier probe).
    """
    if results is None:
        results = [measure(a, int(r), budget_bytes, device=device, defs=defs) for a in archs for r in resolutions]
    by_key = {}
    for res in results:
        if (res.arch, res.resolution) in by_key:
            raise CxrError(f"the probe table has two rows for {res.arch} at {res.resolution} px")
        by_key[(res.arch, res.resolution)] = res
    sizes = {}
    for a in archs:
        for r in resolutions:
            if (a, int(r)) not in by_key:
                raise CxrError(f"the probe table has no row for {a} at {r} px; run `monai-cxr probe` for it")
            sizes[(a, int(r))] = batch_for_budget(by_key[(a, int(r))], budget_bytes, cap=cap, multiple=multiple)
    return sizes


def resolve_batch_sizes(settings: GridSettings, device=None) -> GridSettings:
    """``settings`` with ``batch_sizes`` filled in for ``--batch-size auto`` (unchanged otherwise).

    From ``settings.probe_table`` (a ``probe --out`` table made on the training device) when
    given, else measured here; the budget is ``settings.memory_budget``, or the table's own.
    """
    if settings.batch_size != "auto":
        return settings
    settings.check()
    defs = arch_defs(settings.archs, settings.arch_file)
    results = read_probe_csv(settings.probe_table, defs) if settings.probe_table else None
    budget = parse_size(settings.memory_budget) if settings.memory_budget else None
    if results is None and budget is None:
        raise CxrError("--batch-size auto without --probe-table needs --memory-budget")
    sizes = auto_batch_sizes(settings.archs, settings.resolutions, budget, device=device, results=results, defs=defs)
    chosen = {f"{arch}@{resolution}": batch for (arch, resolution), batch in sorted(sizes.items())}
    log.info(
        "batch sizes for the memory budget: " + ", ".join(f"{k.replace('@', ' ')} px: {v}" for k, v in chosen.items())
    )
    return replace(settings, batch_sizes=chosen)


def read_probe_csv(path, defs: dict | None = None) -> list[ProbeResult]:
    """The rows ``probe --out`` wrote, checked: known networks (built in, or in ``defs``) and resolutions,
    positive sizes, consistent batches."""
    defs = ARCHS if defs is None else defs
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise CxrError(f"probe table {path} cannot be read: {exc}") from exc
    missing = [c for c in CSV_COLUMNS if c not in frame.columns]
    if missing:
        raise CxrError(f"probe table {path} lacks column(s) {', '.join(missing)}")
    if frame.empty:
        raise CxrError(f"probe table {path} has no rows")
    results, seen = [], set()
    for i, row in enumerate(frame.to_dict("records"), start=2):  # line 1 is the header
        where = f"probe table {path} line {i}"
        try:
            res = ProbeResult(
                row["arch"],
                int(row["resolution"]),
                row["device"],
                float(row["budget_mb"]),
                float(row["fixed_mb"]),
                float(row["per_image_mb"]),
                int(row["max_batch"]),
            )
        except ValueError as exc:
            raise CxrError(f"{where}: {exc}") from exc
        if res.arch not in defs:
            raise CxrError(f"{where}: architecture {res.arch!r} is not one of {', '.join(defs)}")
        if not accepts(network_def(res.arch, defs), res.resolution):
            raise CxrError(f"{where}: {res.arch} does not take {res.resolution} px")
        if not (res.per_image_mb > 0 and res.fixed_mb >= 0 and res.budget_mb > 0) or not all(
            map(math.isfinite, (res.budget_mb, res.fixed_mb, res.per_image_mb))
        ):
            raise CxrError(f"{where}: budget_mb and per_image_mb must be positive, fixed_mb not negative")
        if res.max_batch != _max_batch(res.fixed_mb, res.per_image_mb, res.budget_mb):
            raise CxrError(f"{where}: max_batch {res.max_batch} does not follow from the budget and the fit")
        if (res.arch, res.resolution, res.device) in seen:
            raise CxrError(f"{where}: a second row for {res.arch} at {res.resolution} px on {res.device}")
        seen.add((res.arch, res.resolution, res.device))
        results.append(res)
    return results


def probe_table(
    archs, resolutions, budget_bytes: int, device=None, out_csv=None, batch_sizes=None, arch_file=None
) -> list[ProbeResult]:
    """Measure every (arch, resolution), print a table, optionally write it as CSV for ``generate``."""
    device = _resolve_device(device)
    defs = arch_defs(archs, arch_file)
    method = (
        "CUDA allocator peak (max_memory_allocated)"
        if device.type == "cuda"
        else "CPU estimate: tensor bytes a step holds, a lower bound of the process's real peak"
    )
    log.info(f"budget {budget_bytes / 2**30:.2f} GiB; one training step (forward, backward, AdamW); {method}")
    log.info(f"{'arch':<12} {'px':>5} {'device':>7} {'fixed MiB':>10} {'MiB/image':>10} {'max batch':>10}")
    results = []
    for arch in archs:
        for r in resolutions:
            res = measure(arch, int(r), budget_bytes, device=device, batch_sizes=batch_sizes, defs=defs)
            results.append(res)
            log.info(
                f"{arch:<12} {r:>5} {res.device:>7} {res.fixed_mb:>10.0f} {res.per_image_mb:>10.3f} "
                f"{res.max_batch:>10}" + (f"  {res.note}" if res.note else "")
            )
    if out_csv:
        write_csv(out_csv, pd.DataFrame([r.row() for r in results], columns=list(CSV_COLUMNS)))
        log.info(f"wrote {Path(out_csv)}")
    return results
