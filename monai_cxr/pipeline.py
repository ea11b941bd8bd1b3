"""``monai-cxr study``: synth (phantom presets) + prepare + generate + run + report, resumable.

A study is a preset whose settings any option overrides: :func:`plan_study` merges them into
one :class:`StudyPlan` (what every stage will be asked for, and where each value came from),
which ``--dry-run`` prints and :func:`run_study` carries out.
"""

from __future__ import annotations

import csv
import inspect
import json
import logging
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from monai_cxr.data.phantom import synthesize
from monai_cxr.data.prepare import TableOptions, prepare
from monai_cxr.errors import CxrError
from monai_cxr.grid.cells import cells
from monai_cxr.grid.docs import ARCH_NAMES
from monai_cxr.grid.generate import cell_dirs, check_networks, generate
from monai_cxr.grid.presets import PRESETS, Preset
from monai_cxr.grid.probe import resolve_batch_sizes
from monai_cxr.grid.settings import DERIVED, GridSettings
from monai_cxr.progress import format_duration
from monai_cxr.report import make_report
from monai_cxr.run import executor
from monai_cxr.studydir import update_study

log = logging.getLogger(__name__)

__all__ = ["DATA_KEYS", "GRID_KEYS", "RUN_KEYS", "StudyPlan", "auc_table", "describe", "plan_study", "run_study"]

GRID_KEYS = tuple(f.name for f in fields(GridSettings))
RUN_KEYS = ("jobs", "executor", "address", "gpus_per_cell", "cpus_per_cell", "nproc_per_node")
TABLE_KEYS = tuple(f.name for f in fields(TableOptions))
# prepare's own settings, read from its signature so a new prepare option reaches `study` as it is
# (the study decides the paths and the resolutions, and always builds the cache)
DATA_KEYS = (
    tuple(
        name
        for name in inspect.signature(prepare).parameters
        if name not in ("data_dir", "study_dir", "resolutions", "cache", "progress", "table", "labels", "force")
    )
    + TABLE_KEYS
)


@dataclass
class StudyPlan:
    """What each stage of a study will be asked for.

    Attributes:
        synthesise: the phantom is synthesised into ``STUDY/phantom`` (no ``--data-dir`` given).
        data: ``prepare``'s keyword arguments other than the paths and the resolutions.
        grid: ``generate``'s settings (its resolutions are the cache's too).
        run: ``run_cells``' keyword arguments.
        given: the names of the settings given as options (the rest are the preset's or defaults).
        preset_keys: the names of the settings the preset fixes.
        missing: why the plan cannot run yet (no data), for a dry run to say.
    """

    preset: Preset
    study_dir: Path
    data_dir: Path | None
    synthesise: bool
    data: dict
    grid: GridSettings
    run: dict
    given: list[str] = field(default_factory=list)
    preset_keys: list[str] = field(default_factory=list)
    missing: str | None = None

    def source(self, name: str) -> str:
        """Where a setting's value came from: ``option``, ``preset`` or ``default``."""
        return "option" if name in self.given else "preset" if name in self.preset_keys else "default"


def _check_grid(grid: GridSettings) -> None:
    """The checks of the grid that need no data (the rest are generate's), so a dry run makes them too."""
    check_networks(grid)
    for arch, path in grid.pretrained.items():  # before a long prepare; generate loads each file
        if not Path(path).expanduser().is_file():
            raise CxrError(
                f"pretrained weights file {path} for {arch} not found; give a local file (nothing is downloaded)"
            )
    grid.check()
    cells(grid.labels, grid.resolutions, grid.archs, grid.seeds, grid.task)  # refuses colliding label folders


def plan_study(
    preset: str = "quick",
    study_dir=None,
    data_dir=None,
    settings: dict | None = None,
    defaults: dict | None = None,
    need_data: bool = True,
) -> StudyPlan:
    """Merge a preset with the options given: ``{**defaults, **preset, **settings}``, checked.

    Args:
        settings: the settings given as options, by name (``labels``, ``learning_rate``, ``seed``,
            ``jobs``, ...); each wins over the preset's value.
        defaults: the values of the options not given (the command line's defaults); used only
            where the preset fixes nothing. Without them each stage's own default applies.
        need_data: refuse a plan without data (a dry run only notes it in ``missing``).
    """
    if preset not in PRESETS:
        raise CxrError(f"preset {preset!r} is not one of {', '.join(PRESETS)}")
    p = PRESETS[preset]
    settings, defaults = dict(settings or {}), dict(defaults or {})
    unknown = sorted(set(settings) - set(GRID_KEYS) - set(RUN_KEYS) - set(DATA_KEYS))
    if unknown:
        raise CxrError(f"study has no setting {unknown[0]!r}")
    fixed = p.settings()
    merged = {**{k: v for k, v in defaults.items() if k in (*GRID_KEYS, *RUN_KEYS, *DATA_KEYS)}, **fixed, **settings}
    grid = GridSettings(**{k: merged[k] for k in GRID_KEYS if k in merged})
    _check_grid(grid)

    run = {k: merged[k] for k in RUN_KEYS if k in merged and merged[k] is not None}
    if run.get("executor", "local") != "local" and "jobs" not in settings:
        run.pop("jobs", None)  # the preset's jobs are for this machine; Ray fills the cluster by default
    executor.check_run_options(
        run.get("executor", "local"), run.get("address"), run.get("gpus_per_cell"), run.get("nproc_per_node", 1)
    )

    data = {k: merged[k] for k in DATA_KEYS if k in merged and k not in TABLE_KEYS}
    table = {k: merged[k] for k in TABLE_KEYS if k in merged}
    if table:
        data["table"] = TableOptions(**{**table, "label_cols": table.get("label_cols") or []})
    dataset = data.get("dataset", "nih")
    synthesise = p.synthetic and data_dir is None and dataset == "nih" and not table.get("table")
    missing = None
    if data_dir is None and not synthesise and dataset != "csv":
        missing = (
            f"preset {p.name!r} needs --data-dir"
            if dataset == "nih" and not p.synthetic
            else f"--dataset {dataset} needs --data-dir"
        )
        if need_data:
            raise CxrError(missing)
    if synthesise and max(grid.resolutions) > p.phantom.get("size", 512):
        raise CxrError(
            f"resolution {max(grid.resolutions)} exceeds the {p.phantom.get('size', 512)} px phantom "
            f"of preset {p.name!r}; use smaller --resolutions or give --data-dir"
        )
    study_dir = Path(study_dir or Path("studies") / p.name).resolve()
    return StudyPlan(
        preset=p,
        study_dir=study_dir,
        data_dir=None if data_dir is None else Path(data_dir),
        synthesise=synthesise,
        data=data,
        grid=grid,
        run=run,
        given=sorted(settings),
        preset_keys=sorted(fixed),
        missing=missing,
    )


# What None means for the settings that may be None (the stage decides).
NONE_MEANS = {
    "split": "the source's default",
    "view": "the source's default",
    "uncertain": "ones",
    "jobs": "as many as the cluster fits",
    "arch_file": "none (built-in architectures only)",
    "pretrained": "none (from scratch)",
    "address": "a local Ray",
    "gpus_per_cell": "--nproc-per-node if the cluster has GPUs, else 0",
    "table": "none",
    "view_col": "none",
    "id_col": "the path",
}
RAY_ONLY = ("address", "gpus_per_cell", "cpus_per_cell")


def _show(value, name: str = "") -> str:
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items()) or NONE_MEANS.get(name, "none")
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value)) or "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    return NONE_MEANS.get(name, "none") if value is None else str(value)


def _train_fold_size(study_dir: Path) -> int | None:
    """Images in the train fold of an already prepared study; None if it is not prepared."""
    path = study_dir / "data" / "split.csv"
    if not path.is_file():
        return None
    with open(path, newline="") as handle:
        return sum(row.get("fold") == "train" for row in csv.DictReader(handle))


def _and(items) -> str:
    items = [str(i) for i in items]
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def headline(plan: StudyPlan) -> str:
    """What the study is: the preset's description, or, where options change it, what they make of it."""
    p, grid = plan.preset, plan.grid
    if not set(plan.given) & {"dataset", "data_dir", "table", "labels", "resolutions", "archs", "task"}:
        return p.describe(grid)
    if plan.synthesise:
        data = "the phantom"
    elif plan.data.get("dataset") == "csv":
        data = f"the table {getattr(plan.data.get('table'), 'table', None)}"
    else:
        data = f"{plan.data.get('dataset', 'nih')} data in {plan.data_dir}"
    names = [ARCH_NAMES.get(a, a) for a in grid.archs]
    what = f"{data}, {_and(grid.labels)} at {_and(grid.resolutions)} px, {_and(names)}"
    return p.describe(grid, description=f"{what} (preset {p.name}, changed by options)")


def describe(plan: StudyPlan) -> list[str]:
    """The plan as lines: every setting with its source, the cells, and the work they amount to."""
    p, grid = plan.preset, plan.grid
    state = "exists" if plan.study_dir.exists() else "does not exist yet"
    lines = [f"study {p.name}: {headline(plan)}", f"  study_dir        {plan.study_dir} ({state})"]
    if plan.synthesise:
        lines.append(
            f"  data_dir         the phantom, synthesised into STUDY/phantom "
            f"({', '.join(f'{k} {v}' for k, v in p.phantom.items())})"
        )
    elif plan.missing:
        lines.append(f"  data_dir         MISSING: {plan.missing}")
    else:
        lines.append(f"  data_dir         {plan.data_dir if plan.data_dir is not None else 'not used'}")
    shown = {k: v for k, v in plan.data.items() if k != "table"}
    if plan.data.get("dataset") == "csv" and "table" in plan.data:  # the table's columns matter only there
        shown.update(asdict(plan.data["table"]))
    if plan.data.get("dataset") != "chexpert":
        shown.pop("uncertain", None)
    shown.update({k: v for k, v in asdict(grid).items() if k not in DERIVED})
    shown.update({"executor": "local", **plan.run})
    if shown["executor"] == "local":
        shown = {k: v for k, v in shown.items() if k not in RAY_ONLY}
    for name, value in shown.items():
        source = plan.source(name)
        lines.append(f"  {name:<16} {_show(value, name)}" + ("" if source == "default" else f"  ({source})"))

    grid_cells = cells(grid.labels, grid.resolutions, grid.archs, grid.seeds, grid.task)
    finished = sum((cell_dirs(plan.study_dir) / c.name / "run.json").is_file() for c in grid_cells)
    per_arch = f"{len(grid.resolutions)} resolutions x {len(grid.archs)} archs x {len(grid.seeds)} seeds"
    kinds = ([f"{len(grid.labels)} labels x {per_arch}"] if "binary" in grid.task else []) + (
        [f"{per_arch} (multilabel)"] if "multilabel" in grid.task else []
    )
    lines.append(
        f"cells: {len(grid_cells)} = {' + '.join(kinds)}" + (f"; {finished} already finished" if finished else "")
    )
    train = _train_fold_size(plan.study_dir)
    per_epoch = grid.subsample or train
    if per_epoch is None:
        lines.append(f"work: {grid.epochs} full epochs per cell; the train fold's size is known after prepare")
        return lines
    how = "subsample" if grid.subsample else "the train fold"
    per_cell = grid.epochs * per_epoch
    lines.append(
        f"work: {grid.epochs} epochs x {per_epoch:,} images ({how}) = {per_cell:,} training images "
        f"per cell; {per_cell * len(grid_cells):,} in all"
    )
    pixels = {r: r * r * per_cell * sum(c.resolution == r for c in grid_cells) for r in grid.resolutions}
    total = sum(pixels.values())
    share = {r: 100 * v / total for r, v in pixels.items()}
    lines.append(
        "compute (~ resolution² x images): "
        + ", ".join(f"{r} px {'<1' if 0 < v < 0.5 else f'{v:.0f}'} %" for r, v in share.items())
    )
    return lines


def auc_table(study_dir, cell_names) -> str:
    """A plain table of the finished cells' best validation AUCs (with DeLong SE when recorded)."""
    lines = [f"{'label':<16} {'arch':<12} {'px':>5} {'seed':>4} {'AUC':>7} {'SE':>7}"]
    for name in cell_names:
        path = cell_dirs(study_dir) / name / "run.json"
        if path.is_file():
            run = json.loads(path.read_text())
            se = run.get("best_val_auc_se")
            label = run.get("label", "multilabel")
            lines.append(
                f"{label:<16} {run['arch']:<12} {run['resolution']:>5} {run['seed']:>4} "
                f"{run['best_val_auc']:>7.3f} {'' if se is None else f'{se:.3f}':>7}"
            )
    return "\n".join(lines)


def run_study(
    preset: str = "quick",
    study_dir=None,
    data_dir=None,
    settings: dict | None = None,
    defaults: dict | None = None,
    report: bool = True,
    force: bool = False,
    progress: bool = True,
    dry_run: bool = False,
) -> int:
    """Run a whole study; return the number of failed cells. Every stage skips finished work.

    ``settings`` override the preset's (see :func:`plan_study`); ``dry_run`` logs the plan and
    writes nothing, not even the study folder.
    """
    plan = plan_study(
        preset, study_dir=study_dir, data_dir=data_dir, settings=settings, defaults=defaults, need_data=not dry_run
    )
    if dry_run:
        for line in describe(plan):
            log.info(line)
        log.info("dry run: nothing was written")
        return 0
    p, study_dir, data_dir = plan.preset, plan.study_dir, plan.data_dir
    start = time.perf_counter()
    log.info(f"study {p.name}: {headline(plan)} -> {study_dir}")
    if plan.given:
        given = {k: v for k, v in {**plan.data, **asdict(plan.grid), **plan.run}.items() if k in plan.given}
        table = given.pop("table", None)  # its columns, by their option names, where set
        if table is not None:
            given.update({k: v for k, v in asdict(table).items() if v != getattr(TableOptions(), k)})
        log.info("options over the preset: " + ", ".join(f"{k}={_show(v, k)}" for k, v in sorted(given.items())))
    if plan.synthesise:  # the phantom lives inside the study; a user's folder is only read
        data_dir = study_dir / "phantom"
        if not (data_dir / "Data_Entry_2017.csv").is_file():
            workers = plan.data.get("workers")
            log.info(synthesize(data_dir, **{**p.phantom, **({"workers": workers} if workers else {})}, force=True))
    prepare(
        data_dir=data_dir,
        study_dir=study_dir,
        resolutions=plan.grid.resolutions,
        progress=progress,
        labels=plan.grid.labels,
        force=force,
        **plan.data,
    )
    generate(study_dir, resolve_batch_sizes(plan.grid), force=force)
    update_study(study_dir, study={"preset": p.name, "given": plan.given, "run": plan.run})
    summary = executor.run_cells(study_dir, progress=progress, **plan.run)
    names = summary.finished + summary.skipped
    if names and not report:
        log.info(auc_table(study_dir, names))
    log.info(f"study {p.name} took {format_duration(time.perf_counter() - start)}")
    if report and names:
        make_report(study_dir)  # its verdict table is the last thing printed
    return len(summary.failed) + len(summary.busy)
