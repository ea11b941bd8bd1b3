"""The ``monai-cxr`` command line: parse, validate, call. No study logic lives here.

The one deliberate exception to "imports at the top of a module": each command imports the
module that does its work inside its own body, so ``monai-cxr --help`` and ``monai-cxr
delong`` start without torch, monai or pandas. Everything below the CLI imports at the top.

Every option is defined once, in :data:`OPTIONS`, under the name of the setting it sets
(``--learning-rate`` sets ``learning_rate``, as ``study.json`` records it); ``prepare``,
``generate``, ``run`` and ``study`` pick their options from there, so one thing has one name,
one type and one help text everywhere (docs/cli.md lists them).

Progress and messages of the stages go through :mod:`logging` (logger ``monai_cxr``); the
CLI shows INFO and above as plain lines on standard output, warnings and errors on
standard error.

Over 400 lines on purpose: the option table and every command live together so that each
option is defined once and ``docs/cli.md`` is generated from one place.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys

import click
from click.core import ParameterSource

from monai_cxr import __version__
from monai_cxr.data.sources import SOURCES
from monai_cxr.errors import CxrError
from monai_cxr.fileio import WriteError
from monai_cxr.grid.networks import ARCHS
from monai_cxr.grid.presets import PRESETS
from monai_cxr.grid.settings import AMP_MODES, TASKS, grid_defaults, tasks

PAPER_RESOLUTIONS = "32,64,128,224,256,320,448,512,600"


def _int_list(ctx, param, value):
    """Parse '32,64,128' into sorted unique positive ints, or fail naming the bad item."""
    if value is None:
        return None
    out = []
    for item in str(value).split(","):
        item = item.strip()
        if not item:
            continue
        try:
            number = int(item)
        except ValueError:
            raise click.BadParameter(f"{item!r} is not an integer (expected e.g. 32,64,128)") from None
        if number <= 0:
            raise click.BadParameter(f"{number} is not a positive integer")
        out.append(number)
    if not out:
        raise click.BadParameter("empty list")
    return sorted(set(out))


def _batch_size(ctx, param, value):
    """A whole number >= 2, or ``auto``."""
    if value is None or str(value).strip().lower() == "auto":
        return None if value is None else "auto"
    try:
        number = int(str(value).strip())
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a whole number or auto") from None
    if number < 2:
        raise click.BadParameter(f"{number} is too small; batch normalisation needs at least 2")
    return number


def _str_list(ctx, param, value):
    """Parse 'a,b' (or, for a repeatable option, each of its values) into a list of names in order."""
    if value is None:
        return None
    items = value if isinstance(value, (list, tuple)) else [value]
    out = [v.strip() for item in items for v in str(item).split(",") if v.strip()]
    if not out:
        raise click.BadParameter("empty list")
    return out


def _task_list(ctx, param, value):
    """Parse 'binary', 'multilabel' or 'binary,multilabel'."""
    if value is None:
        return None
    try:
        return tasks(value)
    except CxrError as err:
        raise click.BadParameter(str(err)) from None


def _seed_list(ctx, param, value):
    """Parse '0,1,2' into sorted unique non-negative ints."""
    if value is None:
        return None
    try:
        out = sorted({int(v) for v in str(value).split(",") if v.strip()})
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of integers (e.g. 0,1,2)") from None
    if not out or out[0] < 0:
        raise click.BadParameter(f"{value!r}: seeds are integers >= 0")
    return out


def _shown(value) -> str:
    """A default as a user would type it (lists comma-separated, switches on/off)."""
    if isinstance(value, dict):  # --pretrained's ARCH=PATH pairs; none given reads as no default
        return ",".join(f"{k}={v}" for k, v in value.items()) if value else _shown(None)
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


GRID = grid_defaults()


def _opt(*decls, **attrs):
    return decls, attrs


# Every option of the stage commands, by the name of the setting it sets. Defaults are shown
# (show_default) unless a command overrides them; text defaults name what None means.
OPTIONS: dict[str, tuple] = {
    # ------------------------------------------------------------ the study folder
    "study_dir": _opt(
        "--study-dir",
        type=click.Path(file_okay=False),
        required=True,
        help="The study directory (docs/study-layout.md).",
    ),
    # ------------------------------------------------------------- data: prepare, study
    "dataset": _opt(
        "--dataset", type=click.Choice(list(SOURCES)), default="nih", help="Source layout; see docs/datasets.md."
    ),
    "data_dir": _opt(
        "--data-dir",
        type=click.Path(),
        default=None,
        show_default="none",
        help="The release: NIH folder (or `monai-cxr synth` output), CheXpert folder, "
        "ChestMNIST .npz file or folder. Not used with --dataset csv.",
    ),
    "split": _opt(
        "--split",
        type=click.Choice(["random", "official"]),
        default=None,
        show_default="official for chestmnist, else random",
        help="random: patients drawn to val and test by the fractions; official: the release's split "
        "(NIH: its test list as test, val drawn from its train_val list; CheXpert: valid.csv as "
        "val, no test; ChestMNIST: its three folds).",
    ),
    "val_fraction": _opt(
        "--val-fraction",
        type=click.FloatRange(0, 1, min_open=True, max_open=True),
        default=0.1,
        help="Share of the patients (of NIH's train_val list with --split official) "
        "that go to val, which picks the checkpoint.",
    ),
    "test_fraction": _opt(
        "--test-fraction",
        type=click.FloatRange(0, 1, max_open=True),
        default=None,
        show_default="0.2",
        help="--split random: share of the patients held out as test; 0 for no test fold "
        "(with --val-fraction 0.2: the paper's 80/20).",
    ),
    "seed": _opt(
        "--seed",
        type=click.IntRange(min=0),
        default=0,
        help="Seed of the patient split (the training seeds are --seeds).",
    ),
    "view": _opt(
        "--view",
        type=click.Choice(["all", "frontal", "lateral", "PA", "AP"]),
        default=None,
        show_default="frontal for chexpert, else all",
        help="Images to keep.",
    ),
    "uncertain": _opt(
        "--uncertain",
        type=click.Choice(["ones", "zeros", "ignore"]),
        default=None,
        show_default="ones",
        help="CheXpert's uncertain (-1) labels: 1 (U-Ones), 0 (U-Zeros) or left out of that label (U-Ignore).",
    ),
    "table": _opt(
        "--table",
        type=click.Path(dir_okay=False),
        default=None,
        show_default="none",
        help="--dataset csv: the table, one row per image (paths relative to it).",
    ),
    "path_col": _opt("--path-col", default="path", help="--dataset csv: column of image paths."),
    "patient_col": _opt("--patient-col", default="patient_id", help="--dataset csv: column of patient ids."),
    "label_cols": _opt(
        "--label-cols",
        callback=_str_list,
        default=None,
        show_default="none",
        help="--dataset csv: comma-separated 0/1 label columns.",
    ),
    "view_col": _opt(
        "--view-col", default=None, show_default="none", help="--dataset csv: column of views (optional)."
    ),
    "id_col": _opt("--id-col", default=None, show_default="the path", help="--dataset csv: column of image ids."),
    "drop_missing": _opt(
        "--drop-missing/--keep-missing",
        default=False,
        help="Drop listed images whose file is absent (else: an error naming the first).",
    ),
    "square": _opt(
        "--square",
        type=click.Choice(["pad", "crop"]),
        default="pad",
        help="How non-square images become square before resizing.",
    ),
    "workers": _opt(
        "--workers",
        type=click.IntRange(min=0),
        default=0,
        help="Processes that decode and resize images (0: one per CPU core).",
    ),
    # ------------------------------------------------------------ grid: generate, study
    "labels": _opt(
        "--labels", callback=_str_list, default=None, help="Comma-separated findings, one cell each, e.g. Mass,Nodule."
    ),
    "resolutions": _opt(
        "--resolutions", callback=_int_list, default=None, help="Comma-separated square input sizes in pixels."
    ),
    "archs": _opt(
        "--archs",
        callback=_str_list,
        default=_shown(GRID["archs"]),
        help=f"Comma-separated architectures: {', '.join(ARCHS)}, or names defined in --arch-file.",
    ),
    "arch_file": _opt(
        "--arch-file",
        type=click.Path(dir_okay=False),
        default=None,
        show_default="none",
        help="JSON object of your own networks for --archs: name -> MONAI network_def, data only "
        '(e.g. {"effnet": {"_target_": "EfficientNetBN", "model_name": '
        '"efficientnet-b0", "spatial_dims": 2, "in_channels": 1, "num_classes": 1}}); '
        "the smallest input each takes is measured on the network.",
    ),
    "task": _opt(
        "--task",
        callback=_task_list,
        default=_shown(GRID["task"]),
        help=f"Comma-separated: {', '.join(TASKS)}. binary: one network per label; multilabel: one network "
        "per (arch, resolution, seed) for all --labels (a cell multilabel__ARCH__rR__sSEED); both: "
        "side by side in one report.",
    ),
    "seeds": _opt(
        "--seeds",
        callback=_seed_list,
        default=_shown(GRID["seeds"]),
        help="Comma-separated training seeds, one cell each (the report pools them).",
    ),
    "epochs": _opt(
        "--epochs",
        type=click.IntRange(min=1),
        default=GRID["epochs"],
        help="Training epochs per cell (subsample epochs when --subsample > 0).",
    ),
    "batch_size": _opt(
        "--batch-size",
        callback=_batch_size,
        default=str(GRID["batch_size"]),
        help="Training batch size of every cell, or auto: per architecture and resolution, the "
        "largest that fits --memory-budget (higher resolution, smaller batch).",
    ),
    "memory_budget": _opt(
        "--memory-budget",
        default=None,
        show_default="none",
        help="--batch-size auto: memory a training step may use, e.g. 16GiB, 80GB.",
    ),
    "probe_table": _opt(
        "--probe-table",
        type=click.Path(dir_okay=False, exists=True),
        default=None,
        show_default="none",
        help="--batch-size auto: a `monai-cxr probe --out` table made on the "
        "training device (else generate measures here).",
    ),
    "subsample": _opt(
        "--subsample",
        type=click.IntRange(min=0),
        default=GRID["subsample"],
        help="Training images per (subsample) epoch; 0 for full epochs.",
    ),
    "balanced": _opt(
        "--balanced/--unbalanced", default=GRID["balanced"], help="Draw subsample epochs half positive, half negative."
    ),
    "learning_rate": _opt(
        "--learning-rate",
        type=click.FloatRange(min=0, min_open=True),
        default=GRID["learning_rate"],
        help="AdamW learning rate.",
    ),
    "weight_decay": _opt(
        "--weight-decay", type=click.FloatRange(min=0), default=GRID["weight_decay"], help="AdamW weight decay."
    ),
    "augment_prob": _opt(
        "--augment-prob",
        type=click.FloatRange(0, 1),
        default=GRID["augment_prob"],
        help="Probability of a light random affine per training image.",
    ),
    "val_interval": _opt(
        "--val-interval",
        type=click.IntRange(min=1),
        default=GRID["val_interval"],
        help="Validate (and keep the best checkpoint) every this many epochs.",
    ),
    "loader_workers": _opt(
        "--loader-workers",
        type=click.IntRange(min=0),
        default=GRID["loader_workers"],
        help="DataLoader worker processes per cell (per rank); 0 loads in the training process.",
    ),
    "amp": _opt(
        "--amp",
        type=click.Choice(list(AMP_MODES)),
        default=GRID["amp"],
        help="Mixed precision on a GPU (bf16 falls back to fp16 where unsupported); off on a CPU.",
    ),
    "channels_last": _opt(
        "--channels-last/--no-channels-last",
        default=GRID["channels_last"],
        help="Channels-last (NHWC) convolutions on a GPU.",
    ),
    "cudnn_benchmark": _opt(
        "--cudnn-benchmark/--no-cudnn-benchmark",
        default=GRID["cudnn_benchmark"],
        help="cuDNN autotuning on a GPU (input shapes are fixed per cell).",
    ),
    "pin_memory": _opt(
        "--pin-memory/--no-pin-memory",
        default=GRID["pin_memory"],
        help="Pinned loader memory and non-blocking copies on a GPU.",
    ),
    "pretrained": _opt(
        "--pretrained",
        metavar="ARCH=PATH[,ARCH=PATH]",
        default=None,
        show_default="none (from scratch)",
        help="Local weights to start each architecture from (nothing is downloaded): torchvision's "
        "ImageNet files (resnet34-b627a593.pth, densenet121-a639ec97.pth; inputs then get "
        "ImageNet's fixed normalisation) or an earlier cell's STUDY/bundles/CELL/models/model.pt. "
        "Refused when fewer than 90% of the network's tensors match.",
    ),
    "force": _opt(
        "--force",
        is_flag=True,
        default=False,
        help="Go ahead where finished cells stand in the way: regenerate those whose settings changed (discards "
        "their results), replace the data they were trained on (their results become stale).",
    ),
    # old names, accepted but not listed
    "lr": _opt(
        "--lr",
        type=click.FloatRange(min=0, min_open=True),
        default=None,
        hidden=True,
        help="Old name of --learning-rate.",
    ),
    "num_workers": _opt(
        "--num-workers", type=click.IntRange(min=0), default=None, hidden=True, help="Old name of --loader-workers."
    ),
    "initial_weights": _opt(
        "--initial-weights",
        type=click.Path(dir_okay=False),
        default=None,
        hidden=True,
        help="Old form of --pretrained, for a grid of one architecture.",
    ),
    # ------------------------------------------------------------------ run: run, study
    "jobs": _opt(
        "--jobs",
        type=click.IntRange(min=1),
        default=None,
        show_default="local: 1; ray: as many as the cluster fits",
        help="Cells run at a time.",
    ),
    "executor": _opt(
        "--executor",
        type=click.Choice(["local", "ray"]),
        default="local",
        help="local: subprocesses here; ray: one Ray task per cell (pip install monai-cxr[ray]).",
    ),
    "address": _opt(
        "--address",
        default=None,
        show_default="a local Ray on loopback",
        help="--executor ray: the cluster's address, e.g. auto.",
    ),
    "gpus_per_cell": _opt(
        "--gpus-per-cell",
        type=click.FloatRange(min=0),
        default=None,
        show_default="--nproc-per-node if the cluster has GPUs, else 0",
        help="--executor ray: GPUs a cell's task reserves.",
    ),
    "cpus_per_cell": _opt(
        "--cpus-per-cell",
        type=click.FloatRange(min=0),
        default=1,
        help="--executor ray: CPUs a cell's task reserves (give it --loader-workers + 1).",
    ),
    "nproc_per_node": _opt(
        "--nproc-per-node",
        type=click.IntRange(min=1),
        default=1,
        help="Processes per cell: >1 runs it under torchrun with configs/multi_gpu_train.json "
        "(DistributedDataParallel).",
    ),
}
# Hidden old names and the settings they set.
ALIASES = {"lr": "learning_rate", "num_workers": "loader_workers", "initial_weights": "pretrained"}

DATA_OPTIONS = (
    "dataset",
    "data_dir",
    "split",
    "val_fraction",
    "test_fraction",
    "seed",
    "view",
    "uncertain",
    "table",
    "path_col",
    "patient_col",
    "label_cols",
    "view_col",
    "id_col",
    "drop_missing",
    "square",
    "workers",
)
GRID_OPTIONS = (
    "labels",
    "resolutions",
    "archs",
    "arch_file",
    "task",
    "seeds",
    "pretrained",
    "initial_weights",
    "epochs",
    "batch_size",
    "memory_budget",
    "probe_table",
    "subsample",
    "balanced",
    "learning_rate",
    "lr",
    "weight_decay",
    "augment_prob",
    "val_interval",
    "loader_workers",
    "num_workers",
    "amp",
    "channels_last",
    "cudnn_benchmark",
    "pin_memory",
)
RUN_OPTIONS = ("jobs", "executor", "address", "gpus_per_cell", "cpus_per_cell", "nproc_per_node")


def options(*names: str, **overrides: dict):
    """Decorate a command with the options ``names`` of :data:`OPTIONS`, in that order.

    ``overrides`` change attributes for this command only, e.g. ``resolutions={"required": True}``.
    """

    def decorate(function):
        for name in reversed(names):
            decls, attrs = OPTIONS[name]
            attrs = {"show_default": True, **attrs, **overrides.get(name, {})}
            function = click.option(*decls, name, **attrs)(function)
        return function

    return decorate


def _given(ctx: click.Context, values: dict) -> tuple[dict, dict]:
    """Split a command's option values into those given (command line, environment) and defaults.

    An old name (``--lr``) counts as its setting (``learning_rate``); giving both is an error.
    """
    given, defaults = {}, {}
    for name, value in values.items():
        source = ctx.get_parameter_source(name)
        (defaults if source in (None, ParameterSource.DEFAULT) else given)[name] = value
    for alias, name in ALIASES.items():
        defaults.pop(alias, None)
        if alias in given:
            if name in given:
                raise CxrError(f"--{alias.replace('_', '-')} is the old name of --{name.replace('_', '-')}; give one")
            given[name] = given.pop(alias)
    return given, defaults


def _preset_default(name: str) -> str | None:
    """What ``study`` uses for a setting not given, where the presets' values differ from the option's default."""
    shown = {preset: _shown(p.settings()[name]) for preset, p in PRESETS.items() if name in p.settings()}
    generic = OPTIONS[name][1].get("default")
    if not shown or set(shown.values()) == {_shown(generic)}:
        return None
    if len(set(shown.values())) == 1:
        return next(iter(shown.values()))
    return "; ".join(f"{preset}: {v}" for preset, v in shown.items())


def _study_overrides() -> dict:
    """``study`` takes every stage option; where the presets fix a value, that is its default."""
    out = {
        "data_dir": {"show_default": "quick: the phantom, synthesised; paper: required"},
        "labels": {"required": False},
    }
    for name in (*DATA_OPTIONS, *GRID_OPTIONS, *RUN_OPTIONS):
        shown = _preset_default(name)
        if shown is not None:
            out.setdefault(name, {})["show_default"] = shown
    if "jobs" in out:  # a preset's jobs are for the local executor
        out["jobs"]["show_default"] += "; --executor ray: as many as the cluster fits"
    return out


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="monai-cxr", message="%(prog)s %(version)s")
def cli():
    """Benchmark how input resolution changes chest-radiograph CNN performance.

    Typical flow: synth (or your own data) -> prepare -> generate -> run -> report,
    or all of it at once with `monai-cxr study`.
    """


# --------------------------------------------------------------------------- data
@cli.command()
@click.argument("out", type=click.Path(file_okay=False))
@click.option(
    "--patients",
    type=click.IntRange(min=1),
    default=200,
    show_default=True,
    help="Number of synthetic patients (each has 1-4 images).",
)
@click.option(
    "--size", type=click.IntRange(min=32), default=512, show_default=True, help="Image width and height in pixels."
)
@click.option(
    "--seed",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Seed of the phantom (its patients, findings and official test list).",
)
@click.option(
    "--prevalence",
    default=None,
    metavar="P|LABEL=P,...",
    show_default="0.25",
    help="Fraction of images positive: one number for every finding, or e.g. "
    "Nodule=0.3,Mass=0.2 (others keep the default).",
)
@options("workers")
@click.option(
    "--force",
    is_flag=True,
    default=False,
    show_default=True,
    help="Write into a folder that is not empty (overwrites a phantom there).",
)
def synth(out, patients, size, seed, prevalence, workers, force):
    """Write the synthetic phantom dataset to OUT (a new or empty folder) in the NIH ChestX-ray14 layout."""
    from monai_cxr.data.phantom import parse_prevalence, synthesize

    summary = synthesize(
        out,
        patients=patients,
        size=size,
        seed=seed,
        prevalence=parse_prevalence(prevalence),
        workers=workers,
        force=force,
    )
    click.echo(summary)


@cli.command()
@options(
    "study_dir",
    *DATA_OPTIONS,
    "resolutions",
    "force",
    study_dir={"help": "The study directory to create or update."},
    resolutions={"default": PAPER_RESOLUTIONS, "help": "Comma-separated square sizes to cache, in pixels."},
)
@click.option(
    "--no-cache",
    is_flag=True,
    default=False,
    show_default=True,
    help="Write index and split only; skip the resize cache.",
)
def prepare(study_dir, resolutions, force, no_cache, **data):
    """Index a dataset, split it by patient and build the resize cache in STUDY/data/."""
    from monai_cxr.data.prepare import TableOptions
    from monai_cxr.data.prepare import prepare as run_prepare

    columns = TableOptions(
        table=data.pop("table"),
        path_col=data.pop("path_col"),
        patient_col=data.pop("patient_col"),
        label_cols=data.pop("label_cols") or [],
        view_col=data.pop("view_col"),
        id_col=data.pop("id_col"),
    )
    run_prepare(study_dir=study_dir, resolutions=resolutions, cache=not no_cache, table=columns, force=force, **data)


# ---------------------------------------------------------------------- statistics
def _delong_table(summary, path, level):
    pct = f"{level:.0%}" if round(level * 100, 6) == round(level * 100) else f"{level * 100:g}%"
    num = lambda v, fmt: "n/a" if v is None else format(v, fmt)
    width = max(5, *(len(s["name"]) for s in summary["scores"]))
    lines = [
        (
            f"{path}: {summary['n_pos'] + summary['n_neg']} cases "
            f"({summary['n_pos']} positive, {summary['n_neg']} negative); DeLong {pct} CIs"
        ),
        "",
        f"{'model':<{width}}  {'AUC':>6}  {'SE':>6}  {pct + ' CI':>16}",
    ]
    for s in summary["scores"]:
        lines.append(
            f"{s['name']:<{width}}  {s['auc']:6.4f}  {s['se']:6.4f}  [{s['ci_low']:6.4f}, {s['ci_high']:6.4f}]"
        )
    if summary["pairs"]:
        lines += [
            "",
            "paired DeLong tests (diff = a - b, ratio = a / b; p_holm over all pairs)",
            (
                f"{'a':<{width}}  {'b':<{width}}  {'diff':>7}  {pct + ' CI':>18}  {'z':>7}  "
                f"{'p':>9}  {'p_holm':>9}  {'ratio':>7}  {'its SE':>6}"
            ),
        ]
        for p in summary["pairs"]:
            lines.append(
                f"{p['a']:<{width}}  {p['b']:<{width}}  {p['diff']:+7.4f}  "
                f"[{p['ci_low']:+7.4f}, {p['ci_high']:+7.4f}]  {num(p['z'], '7.3f')}  "
                f"{p['p_value']:9.3g}  {p['p_holm']:9.3g}  {num(p['ratio'], '7.4f')}  {num(p['ratio_se'], '6.4f')}"
            )
    return "\n".join(lines)


@cli.command("delong")
@click.argument("csv_file", metavar="FILE.csv", type=click.Path(dir_okay=False))
@click.option("--truth-col", required=True, help="Column holding the 0/1 truth.")
@click.option(
    "--score-col",
    "score_cols",
    required=True,
    multiple=True,
    callback=_str_list,
    help="Comma-separated columns of models' scores (higher = positive); may also be repeated.",
)
@click.option(
    "--level",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=0.95,
    show_default=True,
    help="Confidence level of the intervals.",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    default=False,
    show_default=True,
    help='Print JSON: {"scores": [...], "pairs": [...]}.',
)
def delong_command(csv_file, truth_col, score_cols, level, as_json):
    """AUCs with DeLong SEs and CIs for score columns of FILE.csv, and paired tests between them.

    Uses pROC's conventions; the direction is never flipped (higher score = positive).
    """
    from monai_cxr.stats import delong
    from monai_cxr.stats.scoretable import read_score_table

    columns = read_score_table(csv_file, truth_col, score_cols)
    try:
        result = delong(columns[truth_col], [columns[c] for c in score_cols], level=level)
    except CxrError as exc:
        raise CxrError(f"{csv_file}, truth column {truth_col!r}: {exc}") from None
    summary = result.to_dict(names=score_cols)
    if as_json:
        click.echo(json.dumps({"file": str(csv_file), "truth_col": truth_col, **summary}, indent=2))
    else:
        click.echo(_delong_table(summary, csv_file, level))


# -------------------------------------------------------------------------- bundles
@cli.command()
@options(
    "study_dir",
    *GRID_OPTIONS,
    "force",
    study_dir={"help": "Study directory made by `monai-cxr prepare`."},
    labels={"required": True},
    resolutions={"required": True, "help": "Comma-separated square input sizes in pixels (cached by prepare)."},
)
@click.pass_context
def generate(ctx, study_dir, force, **values):
    """Write one MONAI bundle per (label x resolution x arch x seed) cell under STUDY/bundles/.

    With --task multilabel: one bundle per (resolution x arch x seed), one network for all labels.
    """
    from monai_cxr.grid.generate import GridSettings
    from monai_cxr.grid.generate import generate as run_generate

    given, defaults = _given(ctx, values)
    settings = GridSettings(**{**defaults, **given})
    if settings.batch_size == "auto":
        from monai_cxr.grid.probe import resolve_batch_sizes

        settings = resolve_batch_sizes(settings)
    run_generate(study_dir, settings, force=force)


@cli.command("run")
@options(
    "study_dir",
    *RUN_OPTIONS,
    study_dir={
        "type": click.Path(file_okay=False, exists=True),
        "help": "Study directory made by `monai-cxr generate`.",
    },
)
def run_command(study_dir, **run):
    """Run the study's unfinished cells with `python -m monai.bundle run`; finished cells are kept."""
    from monai_cxr.run.executor import run_cells

    if not run_cells(study_dir, **run).ok:
        sys.exit(1)


@cli.command()
@options(
    "archs",
    "arch_file",
    "resolutions",
    archs={"default": "resnet34,densenet121"},
    resolutions={"default": PAPER_RESOLUTIONS, "help": "Comma-separated square input sizes to probe."},
)
@click.option(
    "--memory-budget",
    default="16GiB",
    show_default=True,
    help="Memory a training step may use, e.g. 16GiB, 80GB, 512MiB.",
)
@click.option("--device", default=None, show_default="cuda when available, else cpu", help="cpu or cuda[:N].")
@click.option(
    "--out",
    "out_csv",
    type=click.Path(dir_okay=False),
    default=None,
    show_default="none",
    help="Also write the table as CSV (what generate --batch-size auto reads).",
)
def probe(archs, arch_file, resolutions, memory_budget, device, out_csv):
    """Peak memory of a training step per architecture and resolution, and the largest batch that fits.

    On CUDA the allocator's peak; on a CPU an estimate (the tensor bytes a step holds, a lower bound).
    """
    from monai_cxr.grid.probe import parse_size, probe_table

    probe_table(archs, resolutions, parse_size(memory_budget), device=device, out_csv=out_csv, arch_file=arch_file)


@cli.command()
@click.option(
    "--preset",
    type=click.Choice(list(PRESETS)),
    default="quick",
    show_default=True,
    help="The defaults: quick: the phantom on a CPU in minutes; phantom-grid: the paper's analysis at CPU "
    "scale on the phantom (results/phantom-grid); paper: the published grid (GPU, NIH data). Every option "
    "below overrides its value.",
)
@options("study_dir", study_dir={"required": False, "default": None, "show_default": "studies/PRESET"})
@click.option(
    "--dry-run",
    is_flag=True,
    default=False,
    show_default=True,
    help="Print the merged settings, the cells and the work they amount to; write nothing.",
)
@options("force", *DATA_OPTIONS, *GRID_OPTIONS, *RUN_OPTIONS, **_study_overrides())
@click.pass_context
def study(ctx, preset, study_dir, dry_run, force, **values):
    """A whole study: (synth) + prepare + generate + run + report. Rerun to resume.

    A preset gives every setting a value; an option given here wins over it (the merged
    settings are recorded in study.json). Without --data-dir the quick preset synthesises its
    phantom; --data-dir without --dataset means NIH ChestX-ray14.
    """
    from monai_cxr.pipeline import run_study

    given, defaults = _given(ctx, values)
    data_dir = given.pop("data_dir", None)
    defaults.pop("data_dir", None)
    if run_study(
        preset, study_dir=study_dir, data_dir=data_dir, settings=given, defaults=defaults, force=force, dry_run=dry_run
    ):
        sys.exit(1)


@cli.command()
@click.option(
    "--cell",
    required=True,
    type=click.Path(file_okay=False, exists=True),
    help="A trained cell: STUDY/bundles/<cell>/ (with models/model.pt).",
)
@click.argument("inputs", nargs=-1, required=True, type=click.Path(), metavar="FILES_OR_DIRS...")
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False),
    help="CSV to write: image, score (a multi-label cell: image, finding, score).",
)
@click.option(
    "--batch-size", type=click.IntRange(min=1), default=None, show_default="the cell's", help="Images scored at a time."
)
@click.option("--device", default=None, show_default="cuda when available, else cpu", help="cpu or cuda[:N].")
@click.option(
    "--skip-bad",
    is_flag=True,
    default=False,
    show_default=True,
    help="Leave out unreadable or too-small files and list them at the end, instead of stopping.",
)
def predict(cell, inputs, out, batch_size, device, skip_bad):
    """Score image files (PNG, JPEG, NIfTI, DICOM; folders recursively) with a trained cell.

    Files are preprocessed as the study's cache was (square, exact area resize, z-score), so an image of the
    study scores as it did in validation. `image` in the CSV is the path as given (a folder's files under it).
    DICOM needs pydicom (pip install 'monai-cxr[dicom]').
    """
    from monai_cxr.cell.inference import predict as run_predict

    run_predict(cell, inputs, out, batch_size=batch_size, device=device, skip_bad=skip_bad)


# --------------------------------------------------------------------------- report
# (the `report` command goes here)
@cli.command()
@click.option(
    "--study-dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Study directory (its bundles/<cell>/ folders are read).",
)
@click.option(
    "--reference-resolution",
    type=click.IntRange(min=1),
    default=None,
    show_default="320 where run, else the highest",
    help="Resolution every other one is compared with.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    default=None,
    show_default="STUDY/report",
    help="Report folder.",
)
@click.option(
    "--figure-labels",
    callback=_str_list,
    default=None,
    show_default="Mass,Nodule where run",
    help="Comma-separated labels of the architecture figure.",
)
@click.option(
    "--margin",
    type=float,
    default=0.02,
    show_default=True,
    help="Non-inferiority margin in AUC for the verdict (the smallest size within it of the best).",
)
@click.option(
    "--no-tensorboard", is_flag=True, default=False, show_default=True, help="Skip the study-level TensorBoard log."
)
def report(study_dir, reference_resolution, out_dir, figure_labels, margin, no_tensorboard):
    """The verdict per finding, pooled tables, comparisons, report.md, figures, TensorBoard."""
    from monai_cxr.report import make_report

    make_report(
        study_dir,
        out_dir=out_dir,
        reference_resolution=reference_resolution,
        figure_labels=figure_labels,
        tensorboard=not no_tensorboard,
        margin=margin,
    )


class _ClickHandler(logging.Handler):
    """Log records as plain lines through ``click.echo`` (resolved per call, so CliRunner sees them)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = self.format(record)
            err = record.levelno >= logging.WARNING
            if err:
                message = f"{record.levelname.lower()}: {message}"
            tqdm = sys.modules.get("tqdm")  # a live bar on the terminal steps aside for the line
            with (
                tqdm.tqdm.external_write_mode(file=sys.stderr if err else sys.stdout)
                if tqdm
                else contextlib.nullcontext()
            ):
                click.echo(message, err=err)
        except Exception:
            self.handleError(record)


def configure_logging(level: int = logging.INFO) -> None:
    """Send the package's log records to the terminal once, however often ``main`` is called."""
    logger = logging.getLogger("monai_cxr")
    logger.setLevel(level)
    if not any(isinstance(h, _ClickHandler) for h in logger.handlers):
        logger.addHandler(_ClickHandler())


def _os_error_line(exc: OSError) -> str:
    """One line for a fault of the system: what could not be done to which path, and why."""
    cause = exc.strerror or str(exc)
    if exc.filename is None:
        return cause
    return f"{'cannot write ' if isinstance(exc, WriteError) else ''}{exc.filename}: {cause}"


_NO_ARGS = getattr(click.exceptions, "NoArgsIsHelpError", ())  # click >= 8.2


def main(argv=None):
    """Entry point: no traceback for what a user can fix.

    A user's mistake (:class:`CxrError`, or an option click refuses) is one line on stderr and exit status 2;
    a refusal of the
    system (a full disk, a read-only or unreadable path: ``OSError``) is one line naming the
    path and the cause, and exit status 1.
    """
    configure_logging()
    try:
        code = cli.main(args=argv, prog_name="monai-cxr", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except _NO_ARGS as exc:  # `monai-cxr` alone: the help, as click shows it
        exc.show()
        sys.exit(exc.exit_code)
    except click.UsageError as exc:  # a bad option value, an unknown option: one line too, and where to look
        where = exc.ctx.command_path if exc.ctx is not None else "monai-cxr"
        click.echo(f"monai-cxr: error: {exc.format_message().rstrip('.')} (see {where} --help)", err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except CxrError as exc:
        click.echo(f"monai-cxr: error: {exc}", err=True)
        sys.exit(2)
    except OSError as exc:
        click.echo(f"monai-cxr: error: {_os_error_line(exc)}", err=True)
        sys.exit(1)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    # without standalone mode click returns (not raises) the code of ctx.exit(code)
    if isinstance(code, int) and code:
        sys.exit(code)


if __name__ == "__main__":
    main()
