"""The report's figures, after Sabottke & Spieler (2020), as PNG and SVG.

- ``verdict``: pooled AUC against input size per label, the best size and the smallest
  sufficient one marked, the margin drawn below the best;
- ``auc_vs_resolution``: pooled AUC against input size per label (their Fig. 2);
- ``auc_ratio``: pooled AUC of each size as a share of the reference size's, ratio +/- SE (Fig. 3);
- ``architectures``: two or more architectures side by side for chosen labels (Fig. 4);
- ``tradeoff``: throughput, peak memory and batch size against input size;
- ``roc_<label-slug>``: one per label, ROC curves of every size overlaid (one seed), with the
  operating point chosen on val.

AUC points are pooled over seeds (``pooled.csv``), error bars their pooled SE. Titles of figures
made from phantom data say that the data are synthetic. Labels and architecture names are data:
``$`` is escaped, so no name is read as mathtext.

Over 400 lines: one function per figure, sharing the styling helpers at the top.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
from sklearn.metrics import roc_curve

from monai_cxr.fileio import atomic_write
from monai_cxr.grid.cells import label_slug
from monai_cxr.report.tables import shown_archs

SYNTHETIC_NOTE = "synthetic phantom data"
PAPER_LABELS = ("Mass", "Nodule")  # Fig. 4 of the paper

STYLE = {
    "savefig.dpi": 150,
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "legend.frameon": False,
    "svg.hashsalt": "monai-cxr",
    "svg.fonttype": "none",  # text stays text: searchable and editable
    "text.usetex": False,
}


@dataclass(frozen=True)
class Drawn:
    """A written figure: ``name``.png and ``name``.svg, with the report's title and caption."""

    name: str
    png: Path
    title: str
    caption: str


def esc(text) -> str:
    """A name as matplotlib text: ``$`` escaped, so ``$x^2$`` is shown, not typeset."""
    return str(text).replace("$", r"\$")


def fold_words(folds) -> str:
    """How the scored folds read in an axis label."""
    folds = set(folds)
    if folds == {"test"}:
        return "test"
    if folds == {"val"}:
        return "val, optimistic"
    return "test; val where no test"


def _figure(n: int, width: float = 4.2, height: float = 3.4, sharey: bool = True, ncols: int | None = None):
    """Panels on a pyplot-free Figure (no global backend, nothing to close), ``ncols`` a row."""
    ncols = min(n, ncols or n)
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(width * ncols + 1.4, height * nrows), layout="constrained")
    axes = list(fig.subplots(nrows, ncols, squeeze=False, sharey=sharey).ravel())
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def _title(text: str, synthetic: bool, notes=()) -> str:
    notes = list(notes) + ([SYNTHETIC_NOTE] if synthetic else [])
    return text + (f" ({'; '.join(notes)})" if notes else "")


def _seeds_note(n_seeds) -> list[str]:
    top = int(max(n_seeds)) if len(n_seeds) else 1
    return [f"pooled over {top} seeds"] if top > 1 else []


def _save(fig, out_dir: Path, name: str) -> Path:
    """Write ``name``.png and ``name``.svg atomically, without time stamps (stable diffs)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    png = out_dir / f"{name}.png"
    atomic_write(png, lambda tmp: fig.savefig(tmp, format="png", bbox_inches="tight", metadata={"Software": None}))
    atomic_write(
        out_dir / f"{name}.svg",
        lambda tmp: fig.savefig(tmp, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": None}),
    )
    return png


def _resolution_axis(ax, resolutions):
    ax.set_xscale("log", base=2)
    ax.set_xticks(resolutions)
    ax.set_xticklabels([str(r) for r in resolutions], rotation=45 if len(resolutions) > 6 else 0)
    ax.minorticks_off()
    ax.set_xlabel("input size (pixels, square)")


def _colours(names):
    cmap = matplotlib.colormaps["tab10" if len(names) <= 10 else "tab20"]
    return {name: cmap(i % cmap.N) for i, name in enumerate(names)}


def _series(ax, frame, by, x, y, err, colours):
    """One error-bar line per value of ``by``, dodged sideways, coloured by ``colours``."""
    names = [n for n in colours if n in set(frame[by])]
    for i, name in enumerate(names):
        rows = frame[frame[by] == name].sort_values(x)
        ax.errorbar(
            _dodge(rows[x], i, len(names)),
            rows[y],
            yerr=rows[err],
            marker="o",
            markersize=4,
            capsize=2.5,
            linewidth=1.4,
            elinewidth=1.0,
            color=colours[name],
            label=esc(name),
        )


def _chance(ax):
    """A dotted line at AUC 0.5 where the axis already shows it (it never rescales the axis)."""
    low, high = ax.get_ylim()
    if low <= 0.5 <= high:
        ax.axhline(0.5, color="0.5", linewidth=0.8, linestyle=":", zorder=0)
        ax.set_ylim(low, high)


def _legend(fig, axes):
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center")


def _dodge(x, i: int, k: int, step: float = 0.035):
    """Shift series ``i`` of ``k`` sideways on the log2 axis so error bars do not overlap."""
    return np.asarray(x, float) * 2.0 ** ((i - (k - 1) / 2) * step)


def _rated(pooled):
    return pooled.dropna(subset=["auc_mean", "auc_se"])


def verdict_figure(pooled, verdict, out_dir: Path, synthetic: bool) -> Drawn | None:
    """Pooled AUC against input size, one panel per label: best (star) and sufficient (ring) marked."""
    data = _rated(pooled)
    rows = verdict.dropna(subset=["best_resolution"])
    if data.empty or rows.empty:
        return None
    labels = sorted(rows["label"].unique())
    archs = sorted(data["arch"].unique())
    colours = _colours(archs)
    fig, axes = _figure(len(labels), ncols=4)
    for ax, label in zip(axes, labels):
        points = data[data["label"] == label]
        _series(ax, points, "arch", "resolution", "auc_mean", "auc_se", colours)
        for _, v in rows[rows["label"] == label].iterrows():
            colour = colours[v["arch"]]
            ax.axhline(v["auc_best"] - v["margin"], color=colour, linewidth=0.8, linestyle="--", alpha=0.7)
            ax.plot(
                [v["best_resolution"]],
                [v["auc_best"]],
                marker="*",
                markersize=13,
                color=colour,
                linestyle="none",
                zorder=5,
            )
            ax.plot(
                [v["sufficient_resolution"]],
                [v["auc_sufficient"]],
                marker="o",
                markersize=12,
                markerfacecolor="none",
                markeredgewidth=1.6,
                color=colour,
                linestyle="none",
                zorder=5,
            )
        _resolution_axis(ax, sorted(points["resolution"].unique()))
        ax.set_title(esc(label))
    margin = float(rows["margin"].iloc[0])
    axes[0].set_ylabel(f"AUC ({fold_words(rows['fold'])}; bars: pooled SE)")
    _legend(fig, axes)
    fig.suptitle(_title("How much resolution each finding needs", synthetic, _seeds_note(data["n_seeds"])))
    caption = (
        f"Pooled AUC against input size (error bars: pooled SE). Star: the best size; ring: the "
        f"smallest size non-inferior to it at a margin of {margin:g} AUC (Holm-adjusted one-sided "
        f"tests); dashed: the best AUC minus the margin."
    )
    return Drawn("verdict", _save(fig, out_dir, "verdict"), "How much resolution each finding needs", caption)


def _auc_panels(data, panel: str, series: str, panels, out_dir: Path, title: str, name: str) -> Path:
    """Pooled AUC (± SE) against input size: one panel per value of ``panel``, one line per
    value of ``series``."""
    colours = _colours(sorted(data[series].unique()))
    fig, axes = _figure(len(panels))
    for ax, key in zip(axes, panels):
        _series(ax, data[data[panel] == key], series, "resolution", "auc_mean", "auc_se", colours)
        _chance(ax)
        _resolution_axis(ax, sorted(data["resolution"].unique()))
        ax.set_title(esc(key))
    axes[0].set_ylabel(f"AUC ({fold_words(data['fold'])}; bars: pooled SE)")
    _legend(fig, axes)
    fig.suptitle(title)
    return _save(fig, out_dir, name)


def auc_vs_resolution(pooled, out_dir: Path, synthetic: bool) -> Drawn | None:
    """Pooled AUC against input size, one line per label and one panel per architecture."""
    data = _rated(pooled)
    if data.empty:
        return None
    png = _auc_panels(
        data,
        "arch",
        "label",
        sorted(data["arch"].unique()),
        out_dir,
        _title("AUC vs input size", synthetic, _seeds_note(data["n_seeds"])),
        "auc_vs_resolution",
    )
    return Drawn(
        "auc_vs_resolution",
        png,
        "AUC vs input size",
        "Pooled AUC against input size for each label (error bars: pooled SE, which counts the test "
        "sample and the seeds; dotted: chance, where in range), after Fig. 2 of Sabottke & Spieler (2020).",
    )


def auc_ratio(comparisons, pooled, out_dir: Path, synthetic: bool) -> Drawn | None:
    """Pooled AUC as a percentage of the reference size's AUC (ratio +/- SE), per label."""
    rows = comparisons[comparisons["kind"] == "reference"].dropna(subset=["ratio", "ratio_se"])
    if rows.empty:
        return None
    rows = rows.assign(ratio=100 * rows["ratio"], ratio_se=100 * rows["ratio_se"])
    refs = rows[["label", "arch", "resolution_b"]].drop_duplicates()  # the reference itself: 100 %
    refs = refs.rename(columns={"resolution_b": "resolution_a"}).assign(ratio=100.0, ratio_se=0.0)
    rows = pd.concat([rows, refs], ignore_index=True)
    archs = sorted(rows["arch"].unique())
    colours = _colours(sorted(rows["label"].unique()))
    reference = sorted(refs["resolution_a"].unique())
    fig, axes = _figure(len(archs))
    for ax, arch in zip(axes, archs):
        ax.axhline(100, color="0.4", linewidth=0.8, linestyle="--")
        _series(ax, rows[rows["arch"] == arch], "label", "resolution_a", "ratio", "ratio_se", colours)
        _resolution_axis(ax, sorted(pooled["resolution"].unique()))
        ax.set_title(esc(arch))
    ref_text = "/".join(map(str, reference))
    axes[0].set_ylabel(f"AUC as % of AUC at {ref_text} px (± SE)")
    _legend(fig, axes)
    fig.suptitle(_title(f"AUC relative to {ref_text} px", synthetic, _seeds_note(pooled["n_seeds"])))
    return Drawn(
        "auc_ratio",
        _save(fig, out_dir, "auc_ratio"),
        "AUC relative to the reference size",
        "Pooled AUC at each input size as a percentage of the pooled AUC at the reference size "
        "(error bars: delta-method SE of the paired ratio), after their Fig. 3.",
    )


def chosen_labels(labels, wanted=None, limit: int = 4) -> list[str]:
    """Labels for the architecture figure: ``wanted`` if given, else the paper's Mass and
    Nodule where run, else the first ``limit`` labels."""
    labels = sorted(labels)
    if wanted:
        return [x for x in wanted if x in labels]
    paper = [x for x in PAPER_LABELS if x in labels]
    return paper or labels[:limit]


def architectures(pooled, out_dir: Path, synthetic: bool, labels=None) -> Drawn | None:
    """Architectures side by side: one panel per chosen label, one line per architecture."""
    data = _rated(pooled)
    archs = sorted(data["arch"].unique())
    chosen = chosen_labels(data["label"].unique(), labels)
    if len(archs) < 2 or not chosen:
        return None
    png = _auc_panels(
        data,
        "label",
        "arch",
        chosen,
        out_dir,
        _title("Architectures compared", synthetic, _seeds_note(data["n_seeds"])),
        "architectures",
    )
    return Drawn(
        "architectures",
        png,
        "Architectures compared",
        "Architectures side by side for chosen labels (pooled AUC ± SE), after their Fig. 4.",
    )


def tradeoff(summary, out_dir: Path, synthetic: bool) -> Drawn | None:
    """Throughput, peak memory and batch size against input size, one line per architecture
    (the median over labels and seeds)."""
    metrics = [
        ("images_per_s", "training throughput (images/s)"),
        ("peak_mem_mb", "peak memory (MB)"),
        ("batch_size", "batch size"),
    ]
    metrics = [m for m in metrics if pd.to_numeric(summary[m[0]], errors="coerce").notna().any()]
    if not metrics:
        return None
    archs = sorted(summary["arch"].unique())
    colours = _colours(archs)
    fig, axes = _figure(len(metrics), sharey=False)
    for ax, (column, name) in zip(axes, metrics):
        values = summary.assign(**{column: pd.to_numeric(summary[column], errors="coerce")})
        med = values.groupby(["arch", "resolution"])[column].median().reset_index()
        for arch, rows in med.groupby("arch"):
            ax.plot(
                rows["resolution"],
                rows[column],
                marker="o",
                markersize=4,
                linewidth=1.4,
                color=colours[arch],
                label=esc(arch),
            )
        low, high = med[column].min(), med[column].max()
        if low > 0 and high / low >= 10:  # a log axis only where the values span a decade
            ax.set_yscale("log")
            ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.yaxis.set_minor_formatter(NullFormatter())
        else:
            ax.set_ylim(bottom=0, top=1.1 * high if high > 0 else None)
        _resolution_axis(ax, sorted(summary["resolution"].unique()))
        ax.set_title(name)
    _legend(fig, axes)
    fig.suptitle(_title("What resolution costs", synthetic))
    return Drawn(
        "tradeoff",
        _save(fig, out_dir, "tradeoff"),
        "What resolution costs",
        "What resolution costs: training throughput, peak memory and batch size (median over labels and seeds).",
    )


def roc_seed(seeds: dict) -> int | None:
    """The seed whose ROC curves are drawn: the smallest seed run at every size, else None."""
    common = set.intersection(*(set(s) for s in seeds.values())) if seeds else set()
    return min(common) if common else None


def roc_curves(label: str, groups_: list, summary, out_dir: Path, synthetic: bool) -> Drawn | None:
    """ROC curves of one label on its scored fold: one panel per architecture, every size overlaid."""
    usable = [g for g in groups_ if not g.note]
    if not usable:
        return None
    fig, axes = _figure(len(usable), width=3.6, height=3.6)
    seeds_used = set()
    for ax, g in zip(axes, usable):
        resolutions = sorted(g.scores)
        cmap = matplotlib.colormaps["viridis"]
        common = roc_seed(g.seeds)
        for i, r in enumerate(resolutions):
            seed = common if common is not None else min(g.seeds[r])
            seeds_used.add(seed)
            s = g.scores[r][g.seeds[r].index(seed)]
            fpr, tpr, _ = roc_curve(g.y, s)
            colour = cmap(i / max(len(resolutions) - 1, 1) * 0.9)
            ax.plot(fpr, tpr, color=colour, linewidth=1.2, label=f"{r} px")
            row = summary[
                (summary["label"] == g.label)
                & (summary["arch"] == g.shown_arch)
                & (summary["resolution"] == r)
                & (summary["seed"] == seed)
            ]
            if len(row) and not math.isnan(row["sensitivity"].iloc[0]) and not math.isnan(row["specificity"].iloc[0]):
                ax.plot(
                    [1 - row["specificity"].iloc[0]],
                    [row["sensitivity"].iloc[0]],
                    marker="o",
                    markersize=4,
                    color=colour,
                    linestyle="none",
                )
        ax.plot([0, 1], [0, 1], color="0.6", linewidth=0.8, linestyle=":")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_aspect("equal")
        ax.set_xlabel("1 - specificity")
        ax.set_title(esc(g.shown_arch))
        ax.legend(loc="lower right", fontsize=7)
    axes[0].set_ylabel("sensitivity")
    seed_text = f"seed {min(seeds_used)}" if len(seeds_used) == 1 else "first seed of each size"
    fold = usable[0].fold
    fig.suptitle(_title(f"ROC curves: {esc(label)}", synthetic, [f"{fold} fold", seed_text]))
    name = f"roc_{label_slug(label)}"
    caption = (
        f"ROC curves of {label} on the {fold} fold, every input size overlaid ({seed_text}, not pooled); "
        "dots: the operating point chosen on val (Youden) applied to these images."
    )
    return Drawn(name, _save(fig, out_dir, name), f"ROC curves: {label}", caption)


def make_figures(
    summary, pooled, comparisons, verdict, groups_: dict, out_dir, synthetic: bool, labels=None
) -> list[Drawn]:
    """Draw every figure that the tables allow; figures this run cannot draw are removed.

    A multi-label result is drawn as an architecture of its own, ``resnet34 (multilabel)``, beside the binary one.
    """
    out_dir = Path(out_dir)
    summary, pooled, comparisons, verdict = (shown_archs(t) for t in (summary, pooled, comparisons, verdict))
    with matplotlib.rc_context(STYLE):
        made = [
            verdict_figure(pooled, verdict, out_dir, synthetic),
            auc_vs_resolution(pooled, out_dir, synthetic),
            auc_ratio(comparisons, pooled, out_dir, synthetic) if len(comparisons) else None,
            architectures(pooled, out_dir, synthetic, labels),
            tradeoff(summary, out_dir, synthetic),
        ]
        by_label: dict[str, list] = {}
        for g in groups_.values():
            by_label.setdefault(g.label, []).append(g)
        made += [roc_curves(label, gs, summary, out_dir, synthetic) for label, gs in by_label.items()]
    made = [d for d in made if d is not None]
    names = {d.name for d in made}
    if out_dir.is_dir():  # a figure this run did not draw must not linger
        for path in list(out_dir.glob("*.png")) + list(out_dir.glob("*.svg")):
            if path.stem not in names:
                path.unlink()
    return made
