"""``report.md``: what was run, what it found, the tables and the figures, in plain Markdown.

Figures are linked relative to the report (``figures/<name>.png``), so the report folder
can be copied elsewhere (e.g. into the repository's ``results/``) and still render.
"""

from __future__ import annotations

import math

import pandas as pd

from monai_cxr.report.figures import SYNTHETIC_NOTE

TITLES = {"auc_vs_resolution": "AUC vs input size", "auc_ratio": "AUC relative to the reference size",
          "architectures": "Architectures compared", "tradeoff": "What resolution costs"}
CAPTIONS = {
    "auc_vs_resolution": "Validation AUC against input size for each label (error bars: DeLong "
                         "standard error; dotted: chance, where in range), after Fig. 2 of "
                         "Sabottke & Spieler (2020).",
    "auc_ratio": "AUC at each input size as a percentage of the AUC at the reference size "
                 "(error bars: delta-method SE of the paired ratio), after their Fig. 3.",
    "architectures": "Architectures side by side for chosen labels, after their Fig. 4.",
    "tradeoff": "What resolution costs: training throughput, peak memory and batch size "
                "(median over labels and seeds).",
}


def _num(x, digits=3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def _int(x) -> str:
    return "" if x is None or x != x else str(int(x))


def _p(p) -> str:
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return ""
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def table(frame, columns) -> str:
    """A Markdown table from ``columns``: a list of (header, row -> text)."""
    lines = ["| " + " | ".join(h for h, _ in columns) + " |",
             "|" + "|".join("---" for _ in columns) + "|"]
    for _, row in frame.iterrows():
        lines.append("| " + " | ".join(str(f(row)).replace("|", "/") for _, f in columns) + " |")
    return "\n".join(lines)


def summary_markdown(summary) -> str:
    def auc(row):
        if math.isnan(row["auc"]):
            return ""
        ci = "" if math.isnan(row["auc_ci_low"]) else \
            f" ({row['auc_ci_low']:.3f}–{row['auc_ci_high']:.3f})"
        return f"{row['auc']:.3f}{ci}"

    return table(summary, [
        ("label", lambda r: r["label"]), ("arch", lambda r: r["arch"]),
        ("size", lambda r: r["resolution"]), ("seed", lambda r: r["seed"]),
        ("pos / neg", lambda r: f"{r['n_pos']} / {r['n_neg']}"),
        ("AUC (95% CI)", auc), ("SE", lambda r: _num(r["auc_se"])),
        ("acc@0.5", lambda r: _num(r["accuracy_050"])),
        ("acc@Youden", lambda r: _num(r["accuracy_youden"])),
        ("batch", lambda r: _int(r["batch_size"])),
        ("images/s", lambda r: _num(r["images_per_s"], 1)),
        ("peak MB", lambda r: _num(r["peak_mem_mb"], 0)),
        ("train s", lambda r: _num(r["train_seconds"], 1)),
        ("note", lambda r: r["note"] or ""),
    ])


def comparisons_markdown(comparisons) -> str:
    return table(comparisons, [
        ("label", lambda r: r["label"]), ("arch", lambda r: r["arch"]),
        ("seed", lambda r: r["seed"]),
        ("a vs b", lambda r: f"{r['resolution_a']} vs {r['resolution_b']}"),
        ("kind", lambda r: r["kind"] + ("" if r["paired"] else " (unpaired)")),
        ("AUC a", lambda r: _num(r["auc_a"])), ("AUC b", lambda r: _num(r["auc_b"])),
        ("diff (95% CI)", lambda r: f"{r['diff']:+.3f} ({r['diff_ci_low']:+.3f} to "
                                    f"{r['diff_ci_high']:+.3f})"),
        ("p", lambda r: _p(r["p_value"])), ("p Holm", lambda r: _p(r["p_holm"])),
        ("ratio ± SE", lambda r: "" if math.isnan(r["ratio"]) else
            f"{100 * r['ratio']:.1f}% ± {100 * r['ratio_se']:.1f}"),
    ])


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _join(values) -> str:
    return ", ".join(str(v) for v in values)


def _what_was_run(study, n_finished, n_missing, command) -> list[str]:
    data = study.settings.get("data", {}) or {}
    grid = study.settings.get("grid", {}) or {}
    versions = study.settings.get("versions", {}) or {}
    lines = ["## What was run", ""]
    if data:
        split = str(data.get("split", "?"))
        if isinstance(data.get("val_fraction"), (int, float)):
            split += f", {data['val_fraction']:.0%} of patients to validation"
        lines += [f"- Dataset: {data.get('dataset', '?')}"
                  + (f" ({SYNTHETIC_NOTE})" if study.synthetic else "")
                  + (f", view {data['view']}" if data.get("view") else ""),
                  f"- Split: {split}"
                  + (f", seed {data['seed']}" if "seed" in data else "")]
        shown = {"dataset", "split", "val_fraction", "seed", "view", "notes", "data_dir",
                 "resolutions", "labels", "square"}
        rest = {k: v for k, v in data.items() if k not in shown and v not in (None, "", [], {})}
        if data.get("square"):
            rest = {"square": data["square"], **rest}
        if rest:
            lines.append("- Data settings: " + ", ".join(f"{k}={v}" for k, v in rest.items()))
        for note in data.get("notes") or []:
            lines.append(f"- Note: {note}")
    if grid:
        for key, name in (("labels", "Labels"), ("resolutions", "Input sizes (px)"),
                          ("archs", "Architectures"), ("seeds", "Seeds"), ("epochs", "Epochs")):
            if key in grid:
                value = grid[key]
                lines.append(f"- {name}: {_join(value) if isinstance(value, list) else value}")
        rest = {k: v for k, v in grid.items()  # the cell list is the tables' business
                if k not in ("labels", "resolutions", "archs", "seeds", "epochs", "cells")}
        if rest:
            lines.append("- Other settings: " + ", ".join(f"{k}={v}" for k, v in rest.items()))
    lines.append(f"- Cells finished: {n_finished} of {n_finished + n_missing}")
    if versions:
        lines.append("- Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    lines.append(f"- Report made by: `{command}`")
    if study.settings.get("command"):
        lines.append(f"- Study made by: `{study.settings['command']}`")
    return lines + [""]


def _findings(summary, comparisons, best) -> list[str]:
    lines = ["## Findings", ""]
    for _, b in best.iterrows():
        text = (f"- **{b['label']}** ({b['arch']}, seed {b['seed']}): best at "
                f"{b['best_resolution']} px, AUC {b['auc']:.3f}. ")
        if b["better_than"] and not b["not_different_from"]:
            text += "Significantly better than every other size (Holm-adjusted p < 0.05)."
        elif b["better_than"]:
            text += (f"Significantly better than {b['better_than'].replace(' ', ', ')} px; "
                     f"not significantly different from "
                     f"{b['not_different_from'].replace(' ', ', ')} px "
                     f"(largest Holm-adjusted p {_p(b['max_p_holm'])}).")
        elif b["not_different_from"]:
            text += (f"Not significantly better than any other size "
                     f"(smallest Holm-adjusted p {_p(b['min_p_holm'])}).")
        else:
            text += "No other finished size to compare it with."
        refs = comparisons[(comparisons["label"] == b["label"]) & (comparisons["arch"] == b["arch"])
                           & (comparisons["seed"] == b["seed"]) & (comparisons["kind"] == "reference")]
        if len(refs):
            low = refs.loc[refs["resolution_a"].idxmin()]
            text += (f" At {low['resolution_a']} px it keeps {100 * low['ratio']:.1f}% "
                     f"± {100 * low['ratio_se']:.1f} of its AUC at {low['resolution_b']} px "
                     f"(`p_holm` {_p(low['p_holm'])}).")
        lines.append(text)
    unrated = summary[summary["note"].astype(bool)]
    for _, r in unrated.iterrows():
        lines.append(f"- **{r['label']}** ({r['arch']}, {r['resolution']} px, seed {r['seed']}): "
                     f"not tested: {r['note']} (n_pos {r['n_pos']}, n_neg {r['n_neg']}).")
    return lines + [""]


def report_markdown(study, summary, comparisons, best, figures: dict, command: str) -> str:
    """The whole ``report.md``."""
    n_missing = len(study.missing)
    lines = ["# monai-cxr study report", ""]
    if study.synthetic:
        lines += ["> **These data are synthetic.** The study ran on the phantom generated by "
                  "`monai-cxr synth`, not on radiographs; its numbers show that the pipeline "
                  "works and say nothing about diagnosis.", ""]
    if n_missing:
        lines += [f"> **Partial study:** {_count(len(summary), 'cell')} finished, "
                  f"{n_missing} did not; "
                  "this report covers the finished ones (missing cells listed at the end).", ""]
    lines += _what_was_run(study, len(summary), n_missing, command)
    lines += _findings(summary, comparisons, best)
    if figures:
        lines += ["## Figures", ""]
        for name in figures:
            lines += [f"![{TITLES[name]}](figures/{name}.png)", "",
                      f"*{CAPTIONS[name]}* ([SVG](figures/{name}.svg))", ""]
    lines += ["## Summary (`summary.csv`)", "", summary_markdown(summary), ""]
    lines += ["## Comparisons between sizes (`comparisons.csv`)", ""]
    if len(comparisons):
        lines += [comparisons_markdown(comparisons), ""]
    else:
        lines += ["No pair of sizes could be compared: a comparison needs two finished cells "
                  "of one label × architecture × seed, each with at least two positive and two "
                  "negative validation images.", ""]
    if n_missing:
        lines += ["## Missing cells", "",
                  table(_missing_frame(study), [
                      ("cell", lambda r: f"`{r['cell']}`"), ("label", lambda r: r["label"]),
                      ("arch", lambda r: r["arch"]), ("size", lambda r: r["resolution"]),
                      ("seed", lambda r: r["seed"]), ("why", lambda r: r["reason"])]), ""]
    lines += ["## Methods", "",
              "- AUC with DeLong's standard error; 95% CI = AUC ± 1.96 SE clipped to [0, 1] "
              "(pROC's convention).",
              "- `acc@0.5` thresholds the predicted probability at 0.5; `acc@Youden` at the "
              "threshold maximising sensitivity + specificity − 1 on the same validation "
              "images, so it is optimistic.",
              "- Comparisons: within each label × architecture × seed, each size against the "
              "reference size (320 px where run, else the largest) and each size against its "
              "next larger neighbour, each pair once. Two cells validated on the same images "
              "(joined on `image_id`) get the paired DeLong test; otherwise the unpaired one "
              "(`paired` is false). `ratio` is AUC a / AUC b with its delta-method SE "
              "(the paper's \"AUC ratio ± SD\").",
              "- `p_holm`: Holm's adjustment within a label; the family is every comparison of "
              "that label in `comparisons.csv` (all architectures, seeds and kinds).",
              "- Findings: the best size is tested against every other size of its label × "
              "architecture × seed; those p-values are Holm-adjusted within that group.", ""]
    return "\n".join(lines)


def _missing_frame(study):
    return pd.DataFrame([{"cell": c.name, "label": c.label, "arch": c.arch,
                          "resolution": c.resolution, "seed": c.seed, "reason": c.reason}
                         for c in study.missing])
