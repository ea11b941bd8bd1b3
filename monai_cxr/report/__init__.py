"""The study report: tables, paired comparisons between resolutions, figures, TensorBoard.

``make_report(study_dir)`` reads only the files of the study-directory contract
(``study.json`` and each ``bundles/<cell>/``'s ``cell.json``, ``predictions.csv`` and
``run.json``) and writes into ``STUDY/report/`` (or ``out_dir``)::

    summary.csv       one row per finished cell
    comparisons.csv   DeLong tests between resolutions, Holm-adjusted within a label
    report.md         what was run and what it found, tables and figures (relative links)
    figures/          PNG and SVG
    tensorboard/      the study-level TensorBoard log (HParams, figures, summary)
"""

from __future__ import annotations

import logging
from pathlib import Path

from monai_cxr.errors import CxrError
from monai_cxr.fileio import write_csv, write_text
from monai_cxr.report.figures import make_figures
from monai_cxr.report.load import load_study
from monai_cxr.report.markdown import report_markdown, summary_markdown
from monai_cxr.report.tables import (
    best_table,
    check_reference,
    comparison_table,
    summary_table,
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


def make_report(study_dir, out_dir=None, reference_resolution: int | None = None, figure_labels=None, tensorboard: bool = True) -> Path:
    """Write the report of a (possibly partial) study and return the report folder.

    Parameters
    ----------
    study_dir : path
        The study directory.
    out_dir : path, optional
        Where to write; default ``study_dir/report``.
    reference_resolution : int, optional
        Resolution every other one is compared with; default 320 where run, else the
        highest of each label x architecture x seed.
    figure_labels : list of str, optional
        Labels of the architecture figure; default Mass and Nodule where run.
    tensorboard : bool
        Also write the study-level TensorBoard log.

    Raises
    ------
    CxrError
        No finished cell, malformed study files, or a reference resolution that was not run.
    """
    study = load_study(study_dir)
    check_reference(study.finished, reference_resolution)
    labels = sorted({c.label for c in study.finished})
    unknown = [x for x in figure_labels or [] if x not in labels]
    if unknown:
        raise CxrError(f"figure label {unknown[0]!r} has no finished cell; "
                       f"labels: {', '.join(labels)}")
    out = Path(out_dir) if out_dir is not None else study.path / "report"
    log.info(f"report: {len(study.finished)} finished cell(s), {len(study.missing)} missing")

    summary = summary_table(study.finished)
    comparisons = comparison_table(study.finished, reference_resolution)
    best = best_table(study.finished)
    write_csv(out / "summary.csv", summary)  # full precision: the threshold must round-trip
    write_csv(out / "comparisons.csv", comparisons)

    figures = make_figures(summary, comparisons, out / "figures", study.synthetic, figure_labels)
    command = ["monai-cxr report", f"--study-dir {_shown(study.path)}"]
    if reference_resolution:
        command.append(f"--reference-resolution {reference_resolution}")
    if out_dir is not None:
        command.append(f"--out {_shown(out)}")
    if figure_labels:
        command.append(f"--figure-labels {','.join(figure_labels)}")
    if not tensorboard:
        command.append("--no-tensorboard")
    write_text(out / "report.md",
               report_markdown(study, summary, comparisons, best, figures,
                               " ".join(command)))
    if tensorboard:
        write_tensorboard(summary, figures, summary_markdown(summary), out)
    log.info(f"report: wrote {out / 'report.md'}")
    return out
