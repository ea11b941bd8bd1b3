"""The report's figures, after Sabottke & Spieler (2020), as PNG and SVG.

- ``auc_vs_resolution``: AUC against input size per label, DeLong SE as error bars (their Fig. 2);
- ``auc_ratio``: AUC of each size as a share of the reference size, ratio +/- SE (Fig. 3);
- ``architectures``: two or more architectures side by side for chosen labels (Fig. 4);
- ``tradeoff``: throughput, peak memory and batch size against input size.

Each function takes the report's tables and returns the written PNG path (or None when it
has nothing to draw). When several seeds were run, a point is the mean over seeds and its
bar the root-mean-square of their SEs; the title says how many seeds. Titles of figures
made from phantom data say that the data are synthetic.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from monai_cxr.fileio import atomic_write

SYNTHETIC_NOTE = "synthetic phantom data"
PAPER_LABELS = ("Mass", "Nodule")  # Fig. 4 of the paper


STYLE = {
    "savefig.dpi": 150, "font.size": 9, "axes.titlesize": 10,
    "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True,
    "grid.alpha": 0.3, "legend.frameon": False, "svg.hashsalt": "monai-cxr",
    "svg.fonttype": "none",  # text stays text: searchable and editable
}


def _figure(n: int, width: float = 4.2, height: float = 3.4, sharey: bool = True):
    """A row of ``n`` panels on a pyplot-free Figure (no global backend, nothing to close)."""
    fig = Figure(figsize=(width * n + 1.4, height), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False, sharey=sharey)
    return fig, list(axes[0])


def _title(text: str, synthetic: bool, n_seeds: int = 1) -> str:
    notes = ([f"mean of {n_seeds} seeds"] if n_seeds > 1 else []) + \
        ([SYNTHETIC_NOTE] if synthetic else [])
    return text + (f" ({'; '.join(notes)})" if notes else "")


def _save(fig, out_dir: Path, name: str) -> Path:
    """Write ``name``.png and ``name``.svg atomically, without time stamps (stable diffs)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    png = out_dir / f"{name}.png"
    atomic_write(png, lambda tmp: fig.savefig(tmp, format="png", bbox_inches="tight",
                                              metadata={"Software": None}))
    atomic_write(out_dir / f"{name}.svg",
                 lambda tmp: fig.savefig(tmp, format="svg", bbox_inches="tight",
                                         metadata={"Date": None, "Creator": None}))
    return png


def _resolution_axis(ax, resolutions):
    ax.set_xscale("log", base=2)
    ax.set_xticks(resolutions)
    ax.set_xticklabels([str(r) for r in resolutions], rotation=45 if len(resolutions) > 6 else 0)
    ax.minorticks_off()
    ax.set_xlabel("input size (pixels, square)")


def _colours(labels):
    cmap = matplotlib.colormaps["tab10" if len(labels) <= 10 else "tab20"]
    return {label: cmap(i % cmap.N) for i, label in enumerate(labels)}


def _series(ax, frame, by, x, y, err, colours):
    """One error-bar line per value of ``by``, dodged sideways, coloured by ``colours``."""
    names = [n for n in colours if n in set(frame[by])]
    for i, name in enumerate(names):
        rows = frame[frame[by] == name].sort_values(x)
        ax.errorbar(_dodge(rows[x], i, len(names)), rows[y], yerr=rows[err], marker="o",
                    markersize=4, capsize=2.5, linewidth=1.4, elinewidth=1.0,
                    color=colours[name], label=name)


def _chance(ax):
    """A dotted line at AUC 0.5 where the axis already shows it (it never rescales the axis)."""
    low, high = ax.get_ylim()
    if low <= 0.5 <= high:
        ax.axhline(0.5, color="0.5", linewidth=0.8, linestyle=":", zorder=0)
        ax.set_ylim(low, high)


def _mean_over_seeds(frame, keys, value, se):
    """Mean of ``value`` and root-mean-square of ``se`` over seeds."""
    grouped = frame.groupby(keys, sort=True)
    out = grouped[value].mean().to_frame(value)
    out[se] = grouped[se].apply(lambda s: float(np.sqrt(np.mean(np.square(s)))))
    return out.reset_index()


def _legend(fig, axes):
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center")


def _dodge(x, i: int, k: int, step: float = 0.035):
    """Shift series ``i`` of ``k`` sideways on the log2 axis so error bars do not overlap."""
    return np.asarray(x, float) * 2.0 ** ((i - (k - 1) / 2) * step)


def auc_vs_resolution(summary, out_dir: Path, synthetic: bool) -> Path | None:
    """AUC against input size, one line per label and one panel per architecture."""
    data = summary.dropna(subset=["auc", "auc_se"])
    if data.empty:
        return None
    return _auc_panels(data, "arch", "label", sorted(data["arch"].unique()), out_dir,
                       _title("AUC vs input size", synthetic, data["seed"].nunique()),
                       "auc_vs_resolution")


def _auc_panels(data, panel: str, series: str, panels, out_dir: Path, title: str, name: str) -> Path:
    """AUC (± DeLong SE) against input size: one panel per value of ``panel``, one line per
    value of ``series``; seeds averaged."""
    colours = _colours(sorted(data[series].unique()))
    points = _mean_over_seeds(data, [panel, series, "resolution"], "auc", "auc_se")
    fig, axes = _figure(len(panels))
    for ax, key in zip(axes, panels):
        _series(ax, points[points[panel] == key], series, "resolution", "auc", "auc_se", colours)
        _chance(ax)
        _resolution_axis(ax, sorted(data["resolution"].unique()))
        ax.set_title(key)
    axes[0].set_ylabel("validation AUC (error bars: DeLong SE)")
    _legend(fig, axes)
    fig.suptitle(title)
    return _save(fig, out_dir, name)


def auc_ratio(comparisons, summary, out_dir: Path, synthetic: bool) -> Path | None:
    """AUC as a percentage of the reference size's AUC (ratio +/- SE), per label."""
    rows = comparisons[comparisons["kind"] == "reference"].dropna(subset=["ratio", "ratio_se"])
    if rows.empty:
        return None

    rows = rows.assign(ratio=100 * rows["ratio"], ratio_se=100 * rows["ratio_se"])
    # the reference itself: 100 % exactly
    refs = rows[["label", "arch", "seed", "resolution_b"]].drop_duplicates()
    refs = refs.rename(columns={"resolution_b": "resolution_a"}).assign(ratio=100.0, ratio_se=0.0)
    rows = pd.concat([rows, refs], ignore_index=True)
    archs = sorted(rows["arch"].unique())
    colours = _colours(sorted(rows["label"].unique()))
    n_seeds = rows["seed"].nunique()
    points = _mean_over_seeds(rows, ["arch", "label", "resolution_a"], "ratio", "ratio_se")
    reference = sorted(refs["resolution_a"].unique())
    fig, axes = _figure(len(archs))
    for ax, arch in zip(axes, archs):
        ax.axhline(100, color="0.4", linewidth=0.8, linestyle="--")
        _series(ax, points[points["arch"] == arch], "label", "resolution_a", "ratio",
                "ratio_se", colours)
        _resolution_axis(ax, sorted(summary["resolution"].unique()))
        ax.set_title(arch)
    ref_text = "/".join(map(str, reference))
    axes[0].set_ylabel(f"AUC as % of AUC at {ref_text} px (± SE)")
    _legend(fig, axes)
    fig.suptitle(_title(f"AUC relative to {ref_text} px", synthetic, n_seeds))
    return _save(fig, out_dir, "auc_ratio")


def chosen_labels(labels, wanted=None, limit: int = 4) -> list[str]:
    """Labels for the architecture figure: ``wanted`` if given, else the paper's Mass and
    Nodule where run, else the first ``limit`` labels."""
    labels = sorted(labels)
    if wanted:
        return [x for x in wanted if x in labels]
    paper = [x for x in PAPER_LABELS if x in labels]
    return paper or labels[:limit]


def architectures(summary, out_dir: Path, synthetic: bool, labels=None) -> Path | None:
    """Architectures side by side: one panel per chosen label, one line per architecture."""
    data = summary.dropna(subset=["auc", "auc_se"])
    archs = sorted(data["arch"].unique())
    chosen = chosen_labels(data["label"].unique(), labels)
    if len(archs) < 2 or not chosen:
        return None
    return _auc_panels(data, "label", "arch", chosen, out_dir,
                       _title("Architectures compared", synthetic, data["seed"].nunique()),
                       "architectures")


def tradeoff(summary, out_dir: Path, synthetic: bool) -> Path | None:
    """Throughput, peak memory and batch size against input size, one line per architecture
    (the median over labels and seeds)."""
    metrics = [("images_per_s", "training throughput (images/s)"),
               ("peak_mem_mb", "peak memory (MB)"), ("batch_size", "batch size")]
    metrics = [m for m in metrics if summary[m[0]].notna().any()]
    if not metrics:
        return None

    archs = sorted(summary["arch"].unique())
    colours = _colours(archs)
    fig, axes = _figure(len(metrics), sharey=False)
    for ax, (column, name) in zip(axes, metrics):
        values = summary.assign(**{column: summary[column].astype(float)})
        med = values.groupby(["arch", "resolution"])[column].median().reset_index()
        for arch, rows in med.groupby("arch"):
            ax.plot(rows["resolution"], rows[column], marker="o", markersize=4, linewidth=1.4,
                    color=colours[arch], label=arch)
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
    return _save(fig, out_dir, "tradeoff")


def make_figures(summary, comparisons, out_dir, synthetic: bool, labels=None) -> dict:
    """Draw every figure that the tables allow; returns {name: png path}."""
    out_dir = Path(out_dir)
    with matplotlib.rc_context(STYLE):
        made = {
            "auc_vs_resolution": auc_vs_resolution(summary, out_dir, synthetic),
            "auc_ratio": auc_ratio(comparisons, summary, out_dir, synthetic)
            if len(comparisons) else None,
            "architectures": architectures(summary, out_dir, synthetic, labels),
            "tradeoff": tradeoff(summary, out_dir, synthetic),
        }
    for name, png in made.items():  # a figure this run cannot draw must not linger
        if png is None:
            for suffix in (".png", ".svg"):
                (out_dir / f"{name}{suffix}").unlink(missing_ok=True)
    return {k: v for k, v in made.items() if v is not None}
