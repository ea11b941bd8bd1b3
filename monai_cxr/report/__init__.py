"""The study report: the verdict per finding, pooled tables, paired comparisons, figures, TensorBoard.

``make_report(study_dir)`` reads only the files of the study-directory contract
(``study.json``, ``data/index.csv``, ``data/split.csv`` and each grid cell's ``cell.json``,
``predictions.csv`` and ``run.json``) and writes into ``STUDY/report/`` (or ``out_dir``)::

    verdict.csv       per label x task x arch: the best size and the smallest sufficient one
    pooled.csv        per label x task x arch x size: the seeds' AUCs pooled
    comparisons.csv   pooled paired tests between sizes, Holm-adjusted within a label
    summary.csv       one row per finished cell
    paper.csv         the paper's 64 vs 320 px values beside ours (only where the study has them)
    report.md         the verdict first, then what was run, figures and tables (relative links)
    figures/          PNG and SVG
    tensorboard/      the study-level TensorBoard log (one run per cell: HParams + curves)

The verdict table is logged last, so ``monai-cxr report`` and ``monai-cxr study`` end with it.
"""

from __future__ import annotations

import logging
from pathlib import Path

from monai_cxr.errors import CxrError
from monai_cxr.fileio import write_csv, write_text
from monai_cxr.report.figures import make_figures
from monai_cxr.report.load import load_study
from monai_cxr.report.markdown import (
    pooled_markdown,
    report_markdown,
    summary_markdown,
    verdict_markdown,
    verdict_text,
)
from monai_cxr.report.paper import paper_table
from monai_cxr.report.tables import (
    DEFAULT_MARGIN,
    check_margin,
    check_reference,
    comparison_table,
    groups,
    pooled_table,
    shown_archs,
    summary_table,
    verdict_table,
)
from monai_cxr.report.tensorboard import write_tensorboard

log = logging.getLogger(__name__)

__all__ = ["make_report"]


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when inside it: reports get copied."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def make_report(
    study_dir,
    out_dir=None,
    reference_resolution: int | None = None,
    figure_labels=None,
    tensorboard: bool = True,
    margin: float = DEFAULT_MARGIN,
) -> Path:
    """Write the report of a (possibly partial) study and return the report folder.

    Parameters
    ----------
    study_dir : path
        The study directory.
    out_dir : path, optional
        Where to write; default ``study_dir/report``.
    reference_resolution : int, optional
        Resolution every other one is compared with; default 320 where run, else the
        highest of each label x architecture.
    figure_labels : list of str, optional
        Labels of the architecture figure; default Mass and Nodule where run.
    tensorboard : bool
        Also write the study-level TensorBoard log.
    margin : float, default=0.02
        Non-inferiority margin of the verdict, in AUC, in (0, 1).

    Raises
    ------
    CxrError
        No finished cell, malformed study files, predictions that do not match the split,
        a reference resolution that was not run, or a margin outside (0, 1).
    """
    margin = check_margin(margin)
    study = load_study(study_dir)
    check_reference(study.finished, reference_resolution)
    labels = sorted({c.label for c in study.finished})
    unknown = [x for x in figure_labels or [] if x not in labels]
    if unknown:
        raise CxrError(f"figure label {unknown[0]!r} has no finished cell; labels: {', '.join(labels)}")
    out = Path(out_dir) if out_dir is not None else study.path / "report"
    log.info(
        f"report: {len(study.finished)} finished cell(s) of the grid's "
        f"{len(study.finished) + len(study.missing)}, {len(study.missing)} missing"
        + (f"; {len(study.ignored)} folder(s) not in the grid ignored" if study.ignored else "")
    )
    if study.optimistic:
        log.warning(
            f"report: no test predictions for {', '.join(study.optimistic)}: their AUCs are on the "
            "val images that also chose the checkpoint (optimistic)"
        )

    grouped = groups(study)
    tables = {
        "summary": summary_table(study),
        "pooled": pooled_table(grouped),
        "comparisons": comparison_table(grouped, reference_resolution),
        "verdict": verdict_table(grouped, margin),
        "paper": paper_table(grouped),
    }
    for name in ("verdict", "pooled", "comparisons", "summary"):  # full precision: thresholds round-trip
        write_csv(out / f"{name}.csv", tables[name])
    if len(tables["paper"]):
        write_csv(out / "paper.csv", tables["paper"])
    else:
        (out / "paper.csv").unlink(missing_ok=True)

    figures = make_figures(
        tables["summary"],
        tables["pooled"],
        tables["comparisons"],
        tables["verdict"],
        grouped,
        out / "figures",
        study.synthetic,
        figure_labels,
    )
    command = ["monai-cxr report", f"--study-dir {_shown(study.path)}"]
    if reference_resolution:
        command.append(f"--reference-resolution {reference_resolution}")
    if margin != DEFAULT_MARGIN:
        command.append(f"--margin {margin:g}")
    if out_dir is not None:
        command.append(f"--out {_shown(out)}")
    if figure_labels:
        command.append(f"--figure-labels {','.join(figure_labels)}")
    if not tensorboard:
        command.append("--no-tensorboard")
    shown = {name: shown_archs(frame) for name, frame in tables.items()}  # "resnet34 (multilabel)" in words
    write_text(out / "report.md", report_markdown(study, shown, figures, " ".join(command)))
    if tensorboard:
        texts = {
            "verdict": verdict_markdown(shown["verdict"]),
            "pooled": pooled_markdown(shown["pooled"]),
            "summary": summary_markdown(shown["summary"]),
        }
        write_tensorboard(study, tables["summary"], tables["pooled"], figures, texts, out)
    log.info(f"report: wrote {out / 'report.md'}")
    for line in verdict_text(shown["verdict"]):
        log.info(line)
    return out
