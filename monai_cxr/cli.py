"""The ``monai-cxr`` command line: parse, validate, call. No study logic lives here.

The one deliberate exception to "imports at the top of a module": each command imports the
module that does its work inside its own body, so ``monai-cxr --help`` and ``monai-cxr
delong`` start without torch, monai or pandas. Everything below the CLI imports at the top.

Progress and messages of the stages go through :mod:`logging` (logger ``monai_cxr``); the
CLI shows INFO and above as plain lines on standard output, warnings and errors on
standard error.
"""

from __future__ import annotations

import json
import logging
import sys

import click

from monai_cxr import __version__
from monai_cxr.data.sources import SOURCES
from monai_cxr.errors import CxrError
from monai_cxr.fileio import WriteError


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
            raise click.BadParameter(f"{item!r} is not an integer (expected e.g. 32,64,128)")
        if number <= 0:
            raise click.BadParameter(f"{number} is not a positive integer")
        out.append(number)
    if not out:
        raise click.BadParameter("empty list")
    return sorted(set(out))


def _str_list(ctx, param, value):
    if value is None:
        return None
    out = [v.strip() for v in str(value).split(",") if v.strip()]
    if not out:
        raise click.BadParameter("empty list")
    return out


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="monai-cxr")
def cli():
    """Benchmark how input resolution changes chest-radiograph CNN performance.

    Typical flow: synth (or your own data) -> prepare -> generate -> run -> report,
    or all of it at once with `monai-cxr study`.
    """


# --------------------------------------------------------------------------- data
@cli.command()
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--patients", type=click.IntRange(min=1), default=200, show_default=True,
              help="Number of synthetic patients (each has 1-4 images).")
@click.option("--size", type=click.IntRange(min=32), default=512, show_default=True,
              help="Image width and height in pixels.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--prevalence", default=None, metavar="P|LABEL=P,...",
              help="Fraction of images positive: one number for every finding, or e.g. "
                   "Nodule=0.3,Mass=0.2 (others keep the default 0.25).")
@click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True,
              help="Worker processes (0: one per CPU core).")
@click.option("--force", is_flag=True, help="Write into a folder that is not empty (overwrites a phantom there).")
def synth(out, patients, size, seed, prevalence, workers, force):
    """Write the synthetic phantom dataset to OUT (a new or empty folder) in the NIH ChestX-ray14 layout."""
    from monai_cxr.data.phantom import parse_prevalence, synthesize

    summary = synthesize(out, patients=patients, size=size, seed=seed,
                         prevalence=parse_prevalence(prevalence), workers=workers, force=force)
    click.echo(summary)


@cli.command()
@click.option("--dataset", type=click.Choice(list(SOURCES)), default="nih",
              show_default=True, help="Source layout; see docs/datasets.md.")
@click.option("--data-dir", type=click.Path(),
              help="The release: NIH folder (or `monai-cxr synth` output), CheXpert folder, "
                   "ChestMNIST .npz file or folder. Not used with --dataset csv.")
@click.option("--study-dir", required=True, type=click.Path(file_okay=False))
@click.option("--resolutions", callback=_int_list, default="32,64,128,224,256,320,448,512,600",
              show_default=True, help="Comma-separated square sizes to cache.")
@click.option("--split", "split_policy", type=click.Choice(["random", "official"]), default=None,
              help="random: patients drawn to val and test by the fractions; official: the release's split "
                   "(NIH: its test list as test, val drawn from its train_val list; CheXpert: valid.csv as val, "
                   "no test; ChestMNIST: its three folds) [default: official for chestmnist, else random].")
@click.option("--val-fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.1,
              show_default=True, help="Share of the patients (of NIH's train_val list with --split official) "
                                      "that go to val, which picks the checkpoint.")
@click.option("--test-fraction", type=click.FloatRange(0, 1, max_open=True), default=None,
              help="--split random: share of the patients held out as test; 0 for no test fold "
                   "(with --val-fraction 0.2: the paper's 80/20) [default: 0.2].")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--view", type=click.Choice(["all", "frontal", "lateral", "PA", "AP"]), default=None,
              help="Images to keep [default: frontal for chexpert, else all].")
@click.option("--uncertain", type=click.Choice(["ones", "zeros", "ignore"]), default=None,
              help="CheXpert's uncertain (-1) labels: 1 (U-Ones), 0 (U-Zeros) or left out of that "
                   "label (U-Ignore) [default: ones].")
@click.option("--table", type=click.Path(dir_okay=False),
              help="--dataset csv: the table, one row per image (paths relative to it).")
@click.option("--path-col", default="path", show_default=True, help="--dataset csv: column of image paths.")
@click.option("--patient-col", default="patient_id", show_default=True,
              help="--dataset csv: column of patient ids.")
@click.option("--label-cols", callback=_str_list, default=None,
              help="--dataset csv: comma-separated 0/1 label columns.")
@click.option("--view-col", default=None, help="--dataset csv: column of views (optional).")
@click.option("--id-col", default=None, help="--dataset csv: column of image ids [default: the path].")
@click.option("--drop-missing", is_flag=True, help="Drop listed images whose file is absent.")
@click.option("--no-cache", is_flag=True, help="Write index and split only; skip the resize cache.")
@click.option("--square", type=click.Choice(["pad", "crop"]), default="pad", show_default=True,
              help="How non-square images become square before resizing.")
@click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True,
              help="Cache worker processes (0: one per CPU core).")
def prepare(dataset, data_dir, study_dir, resolutions, split_policy, val_fraction, test_fraction, seed, view,
            uncertain, table, path_col, patient_col, label_cols, view_col, id_col, drop_missing, no_cache, square,
            workers):
    """Index a dataset, split it by patient and build the resize cache in STUDY/data/."""
    from monai_cxr.data.prepare import TableOptions
    from monai_cxr.data.prepare import prepare as run_prepare

    columns = TableOptions(table=table, path_col=path_col, patient_col=patient_col,
                           label_cols=label_cols or [], view_col=view_col, id_col=id_col)
    run_prepare(dataset=dataset, data_dir=data_dir, study_dir=study_dir, resolutions=resolutions,
                split=split_policy, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed, view=view,
                drop_missing=drop_missing, cache=not no_cache, square=square, workers=workers, uncertain=uncertain,
                table=columns)


# ---------------------------------------------------------------------- statistics
def _delong_table(summary, path, level):
    pct = f"{level:.0%}" if round(level * 100, 6) == round(level * 100) else f"{level * 100:g}%"
    num = lambda v, fmt: "n/a" if v is None else format(v, fmt)  # noqa: E731
    width = max(5, *(len(s["name"]) for s in summary["scores"]))
    lines = [f"{path}: {summary['n_pos'] + summary['n_neg']} cases "
             f"({summary['n_pos']} positive, {summary['n_neg']} negative); DeLong {pct} CIs",
             "",
             f"{'model':<{width}}  {'AUC':>6}  {'SE':>6}  {pct + ' CI':>16}"]
    for s in summary["scores"]:
        lines.append(f"{s['name']:<{width}}  {s['auc']:6.4f}  {s['se']:6.4f}  "
                     f"[{s['ci_low']:6.4f}, {s['ci_high']:6.4f}]")
    if summary["pairs"]:
        lines += ["", "paired DeLong tests (diff = a - b, ratio = a / b; p_holm over all pairs)",
                  f"{'a':<{width}}  {'b':<{width}}  {'diff':>7}  {pct + ' CI':>18}  {'z':>7}  "
                  f"{'p':>9}  {'p_holm':>9}  {'ratio':>7}  {'its SE':>6}"]
        for p in summary["pairs"]:
            lines.append(
                f"{p['a']:<{width}}  {p['b']:<{width}}  {p['diff']:+7.4f}  "
                f"[{p['ci_low']:+7.4f}, {p['ci_high']:+7.4f}]  {num(p['z'], '7.3f')}  "
                f"{p['p_value']:9.3g}  {p['p_holm']:9.3g}  {num(p['ratio'], '7.4f')}  {num(p['ratio_se'], '6.4f')}")
    return "\n".join(lines)


@cli.command("delong")
@click.argument("csv_file", metavar="FILE.csv", type=click.Path(dir_okay=False))
@click.option("--truth-col", required=True, help="Column holding the 0/1 truth.")
@click.option("--score-col", "score_cols", required=True, multiple=True,
              help="Column of a model's scores (higher = positive); repeat for several models.")
@click.option("--level", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.95,
              show_default=True, help="Confidence level of the intervals.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON: {\"scores\": [...], \"pairs\": [...]}.")
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
# (the `generate`, `run`, `probe` and `study` commands go here)
def _seed_list(ctx, param, value):
    """Parse '0,1,2' into sorted unique non-negative ints."""
    try:
        out = sorted({int(v) for v in str(value).split(",") if v.strip()})
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of integers (e.g. 0,1,2)")
    if not out or out[0] < 0:
        raise click.BadParameter(f"{value!r}: seeds are integers >= 0")
    return out


@cli.command()
@click.option("--study-dir", required=True, type=click.Path(file_okay=False),
              help="Study directory made by `monai-cxr prepare`.")
@click.option("--labels", required=True, callback=_str_list, help="Comma-separated labels, e.g. Mass,Nodule.")
@click.option("--resolutions", required=True, callback=_int_list, help="Comma-separated cached resolutions.")
@click.option("--archs", callback=_str_list, default="resnet34", show_default=True,
              help="Comma-separated architectures: resnet34, densenet121.")
@click.option("--seeds", callback=_seed_list, default="0", show_default=True)
@click.option("--epochs", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=2), default=32, show_default=True)
@click.option("--subsample", type=click.IntRange(min=0), default=2048, show_default=True,
              help="Training images per (subsample) epoch; 0 for full epochs.")
@click.option("--no-balance", is_flag=True, help="Draw subsample epochs without class balance.")
@click.option("--lr", "learning_rate", type=click.FloatRange(min=0, min_open=True), default=1e-3, show_default=True)
@click.option("--weight-decay", type=click.FloatRange(min=0), default=1e-4, show_default=True)
@click.option("--augment-prob", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Probability of a light random affine per training image.")
@click.option("--val-interval", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--num-workers", type=click.IntRange(min=0), default=0, show_default=True,
              help="DataLoader workers per cell.")
@click.option("--amp", type=click.Choice(["bf16", "fp16", "off"]), is_flag=False, flag_value="fp16", default="off",
              show_default=True, help="Mixed precision on a GPU (bare --amp: fp16); off on a CPU.")
@click.option("--channels-last", is_flag=True, help="Channels-last (NHWC) convolutions on a GPU.")
@click.option("--cudnn-benchmark", is_flag=True, help="cuDNN autotuning on a GPU (fixed input shapes).")
@click.option("--pin-memory", is_flag=True, help="Pinned loader memory and non-blocking copies on a GPU.")
@click.option("--initial-weights", type=click.Path(dir_okay=False), default=None,
              help="Local state-dict file to start from (nothing is downloaded).")
@click.option("--force", is_flag=True, help="Regenerate finished cells whose settings changed (discards their results).")
def generate(study_dir, labels, resolutions, archs, seeds, epochs, batch_size, subsample, no_balance,
             learning_rate, weight_decay, augment_prob, val_interval, num_workers, amp, channels_last,
             cudnn_benchmark, pin_memory, initial_weights, force):
    """Write one MONAI bundle per (label x resolution x arch x seed) cell under STUDY/bundles/."""
    from monai_cxr.grid.generate import GridSettings
    from monai_cxr.grid.generate import generate as run_generate

    settings = GridSettings(labels=labels, resolutions=resolutions, archs=archs, seeds=seeds, epochs=epochs,
                            batch_size=batch_size, subsample=subsample, balanced=not no_balance,
                            learning_rate=learning_rate, weight_decay=weight_decay, augment_prob=augment_prob,
                            val_interval=val_interval, num_workers=num_workers, amp=amp,
                            channels_last=channels_last, cudnn_benchmark=cudnn_benchmark, pin_memory=pin_memory,
                            initial_weights=initial_weights)
    run_generate(study_dir, settings, force=force)


@cli.command("run")
@click.option("--study-dir", required=True, type=click.Path(file_okay=False, exists=True))
@click.option("--jobs", type=click.IntRange(min=1), default=None,
              help="Cells run at a time [default: local 1; ray: as many as the cluster fits].")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local: subprocesses here; ray: one Ray task per cell (pip install monai-cxr[ray]).")
@click.option("--address", default=None,
              help="Ray cluster address, e.g. auto [default: start a local Ray on loopback].")
@click.option("--gpus-per-cell", type=click.FloatRange(min=0), default=None,
              help="GPUs a Ray task reserves [default: --nproc-per-node if the cluster has GPUs, else 0].")
@click.option("--cpus-per-cell", type=click.FloatRange(min=0), default=1, show_default=True,
              help="CPUs a Ray task reserves.")
@click.option("--nproc-per-node", type=click.IntRange(min=1), default=1, show_default=True,
              help="Processes per cell: >1 runs it under torchrun with configs/multi_gpu_train.json (DDP).")
def run_command(study_dir, jobs, executor, address, gpus_per_cell, cpus_per_cell, nproc_per_node):
    """Run the study's unfinished cells with `python -m monai.bundle run`; finished cells are kept."""
    from monai_cxr.run.executor import run_cells

    if executor == "local" and (address or gpus_per_cell is not None):
        raise CxrError("--address and --gpus-per-cell apply to --executor ray")
    if not run_cells(study_dir, jobs=jobs, executor=executor, address=address,
                     gpus_per_cell=gpus_per_cell, cpus_per_cell=cpus_per_cell, nproc_per_node=nproc_per_node).ok:
        sys.exit(1)


@cli.command()
@click.option("--archs", callback=_str_list, default="resnet34,densenet121", show_default=True)
@click.option("--resolutions", callback=_int_list, default="32,64,128,224,256,320,448,512,600", show_default=True)
@click.option("--memory-budget", default="16GiB", show_default=True, help="e.g. 16GiB, 80GB, 512MiB.")
@click.option("--device", default=None, help="cpu or cuda[:N] [default: cuda when available].")
@click.option("--out", "out_csv", type=click.Path(dir_okay=False), default=None,
              help="Also write the table as CSV (what generate --batch-size auto reads).")
def probe(archs, resolutions, memory_budget, device, out_csv):
    """Peak memory of a training step per architecture and resolution, and the largest batch that fits.

    On CUDA the allocator's peak; on a CPU an estimate (the tensor bytes a step holds, a lower bound).
    """
    from monai_cxr.grid.probe import parse_size, probe_table

    probe_table(archs, resolutions, parse_size(memory_budget), device=device, out_csv=out_csv)


@cli.command()
@click.option("--preset", type=click.Choice(["quick", "paper"]), default="quick", show_default=True,
              help="quick: the phantom on a CPU in minutes; paper: the published grid (GPU, NIH data).")
@click.option("--study-dir", type=click.Path(file_okay=False), default=None,
              help="[default: studies/PRESET]")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="NIH ChestX-ray14 release (required by paper; quick synthesises the phantom).")
@click.option("--jobs", type=click.IntRange(min=1), default=None, help="Cells run at a time [default: preset's].")
@click.option("--force", is_flag=True, help="Rerun finished cells whose bundle changed (e.g. a newer template).")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="Where the cells run (see `monai-cxr run --help` for Ray's own options).")
@click.option("--address", default=None, help="Ray cluster address, e.g. auto [default: a local Ray].")
def study(preset, study_dir, data_dir, jobs, force, executor, address):
    """A whole study: (synth) + prepare + generate + run + report. Rerun to resume."""
    from monai_cxr.pipeline import run_study

    options = {"executor": executor, "address": address} if executor != "local" else {}
    if run_study(preset, study_dir=study_dir, data_dir=data_dir, jobs=jobs, force=force,
                 run_options=options):
        sys.exit(1)


@cli.command()
@click.option("--cell", required=True, type=click.Path(file_okay=False, exists=True),
              help="A trained cell: STUDY/bundles/<cell>/ (with models/model.pt).")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(), metavar="FILES_OR_DIRS...")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="CSV to write: image, score.")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="[default: the cell's]")
@click.option("--device", default=None, help="cpu or cuda[:N] [default: cuda when available].")
@click.option("--skip-bad", is_flag=True,
              help="Leave out unreadable or too-small files and list them at the end, instead of stopping.")
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
@click.option("--study-dir", required=True, type=click.Path(file_okay=False),
              help="Study directory (its bundles/<cell>/ folders are read).")
@click.option("--reference-resolution", type=click.IntRange(min=1), default=None,
              help="Resolution every other one is compared with [default: 320 where run, "
                   "else the highest].")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Report folder [default: STUDY/report].")
@click.option("--figure-labels", callback=_str_list, default=None,
              help="Comma-separated labels of the architecture figure [default: Mass,Nodule "
                   "where run].")
@click.option("--margin", type=float, default=0.02, show_default=True,
              help="Non-inferiority margin in AUC for the verdict (the smallest size within it of the best).")
@click.option("--no-tensorboard", is_flag=True, help="Skip the study-level TensorBoard log.")
def report(study_dir, reference_resolution, out_dir, figure_labels, margin, no_tensorboard):
    """The verdict per finding, pooled tables, comparisons, report.md, figures, TensorBoard."""
    from monai_cxr.report import make_report

    make_report(study_dir, out_dir=out_dir, reference_resolution=reference_resolution, figure_labels=figure_labels,
                tensorboard=not no_tensorboard, margin=margin)


class _ClickHandler(logging.Handler):
    """Log records as plain lines through ``click.echo`` (resolved per call, so CliRunner sees them)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = self.format(record)
            if record.levelno >= logging.WARNING:
                message = f"{record.levelname.lower()}: {message}"
            click.echo(message, err=record.levelno >= logging.WARNING)
        except Exception:  # noqa: BLE001 - logging must never crash the command
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


def main(argv=None):
    """Entry point: no traceback for what a user can fix.

    A user's mistake (:class:`CxrError`) is one line on stderr and exit status 2; a refusal of the
    system (a full disk, a read-only or unreadable path: ``OSError``) is one line naming the
    path and the cause, and exit status 1.
    """
    configure_logging()
    try:
        code = cli.main(args=argv, prog_name="monai-cxr", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
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
