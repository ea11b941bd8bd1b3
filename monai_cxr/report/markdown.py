"""``report.md``: the verdict first, then what was run, the figures and the tables, in plain Markdown.

Figures are linked relative to the report (``figures/<name>.png``), so the report folder
can be copied elsewhere (e.g. into the repository's ``results/``) and still render. Labels
are data: Markdown's special characters in them are escaped.

Over 400 lines: one function per section of ``report.md``, sharing the formatting helpers.
"""

from __future__ import annotations

import math
import re

import pandas as pd

from monai_cxr.report.figures import SYNTHETIC_NOTE
from monai_cxr.report.paper import CITATION, SHORT_CITATION

_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>$|#])")


def md(text) -> str:
    """A name as Markdown text: ``*``, ``_``, ``$``, ``|``, ... escaped, so nothing is formatted."""
    return _MD_SPECIAL.sub(r"\\\1", str(text))


def _blank(x) -> bool:
    """None, NaN or pandas' NA: an empty table cell."""
    return x is None or bool(pd.isna(x))


def _num(x, digits=3) -> str:
    if _blank(x):
        return ""
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def _int(x) -> str:
    return "" if _blank(x) else str(int(x))


def _p(p) -> str:
    if _blank(p):
        return ""
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _pm(value, se, digits=3) -> str:
    if _blank(value):
        return ""
    return f"{value:.{digits}f}" + ("" if _blank(se) else f" ± {se:.{digits}f}")


def table(frame, columns) -> str:
    """A Markdown table from ``columns``: a list of (header, row -> text); cells are written as given."""
    lines = ["| " + " | ".join(h for h, _ in columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for _, row in frame.iterrows():
        lines.append("| " + " | ".join(str(f(row)).replace("\n", " ") for _, f in columns) + " |")
    return "\n".join(lines)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _join(values) -> str:
    return ", ".join(str(v) for v in values)


# ------------------------------------------------------------------------ tables
def summary_markdown(summary) -> str:
    def auc(row):
        if math.isnan(row["auc"]):
            return ""
        ci = "" if math.isnan(row["auc_ci_low"]) else f" ({row['auc_ci_low']:.3f}–{row['auc_ci_high']:.3f})"
        return f"{row['auc']:.3f}{ci}"

    return table(
        summary,
        [
            ("label", lambda r: md(r["label"])),
            ("arch", lambda r: md(r["arch"])),
            ("size", lambda r: r["resolution"]),
            ("seed", lambda r: r["seed"]),
            ("fold", lambda r: r["fold"]),
            ("pos / neg", lambda r: f"{r['n_pos']} / {r['n_neg']}"),
            ("AUC (95% CI)", auc),
            ("SE", lambda r: _num(r["auc_se"])),
            ("val AUC", lambda r: _num(r["val_auc"])),
            ("sens", lambda r: _num(r["sensitivity"])),
            ("spec", lambda r: _num(r["specificity"])),
            ("acc@Youden", lambda r: _num(r["accuracy_youden"])),
            ("acc@0.5", lambda r: _num(r["accuracy_050"])),
            ("batch", lambda r: _int(r["batch_size"])),
            ("images/s", lambda r: _num(r["images_per_s"], 1)),
            ("peak MB", lambda r: _num(r["peak_mem_mb"], 0)),
            ("train s", lambda r: _num(r["train_seconds"], 1)),
            ("threads", lambda r: _int(r["torch_threads"])),
            ("note", lambda r: md(r["note"] or "")),
        ],
    )


def pooled_markdown(pooled) -> str:
    return table(
        pooled,
        [
            ("label", lambda r: md(r["label"])),
            ("arch", lambda r: md(r["arch"])),
            ("size", lambda r: r["resolution"]),
            ("fold", lambda r: r["fold"]),
            ("seeds", lambda r: r["n_seeds"]),
            (
                "AUC mean (95% CI)",
                lambda r: (
                    ""
                    if math.isnan(r["auc_mean"])
                    else f"{r['auc_mean']:.3f} ({r['auc_ci_low']:.3f}–{r['auc_ci_high']:.3f})"
                ),
            ),
            ("SD over seeds", lambda r: _num(r["auc_sd"])),
            ("SE", lambda r: _num(r["auc_se"])),
            ("df", lambda r: "∞" if r["df"] == math.inf else _num(r["df"], 1)),
            ("note", lambda r: md(r["note"] or "")),
        ],
    )


def comparisons_markdown(comparisons) -> str:
    return table(
        comparisons,
        [
            ("label", lambda r: md(r["label"])),
            ("arch", lambda r: md(r["arch"])),
            ("a vs b", lambda r: f"{r['resolution_a']} vs {r['resolution_b']}"),
            ("kind", lambda r: r["kind"]),
            ("seeds", lambda r: f"{r['n_seeds_a']} / {r['n_seeds_b']}"),
            ("AUC a", lambda r: _num(r["auc_a"])),
            ("AUC b", lambda r: _num(r["auc_b"])),
            ("diff (95% CI)", lambda r: f"{r['diff']:+.3f} ({r['diff_ci_low']:+.3f} to {r['diff_ci_high']:+.3f})"),
            ("p", lambda r: _p(r["p_value"])),
            ("p Holm", lambda r: _p(r["p_holm"])),
            (
                "ratio ± SE",
                lambda r: "" if math.isnan(r["ratio"]) else f"{100 * r['ratio']:.1f}% ± {100 * r['ratio_se']:.1f}",
            ),
        ],
    )


def verdict_markdown(verdict) -> str:
    return table(
        verdict,
        [
            ("label", lambda r: md(r["label"])),
            ("arch", lambda r: md(r["arch"])),
            ("fold", lambda r: r["fold"]),
            ("seeds", lambda r: r["n_seeds"]),
            ("best size", lambda r: _int(r["best_resolution"])),
            ("AUC there ± SE", lambda r: _pm(r["auc_best"], r["auc_best_se"])),
            (
                "sufficient size",
                lambda r: "" if _blank(r["sufficient_resolution"]) else f"**{_int(r['sufficient_resolution'])}**",
            ),
            ("AUC there ± SE", lambda r: _pm(r["auc_sufficient"], r["auc_sufficient_se"])),
            ("margin", lambda r: f"{r['margin']:g}"),
            ("p (Holm)", lambda r: _p(r["p_holm"])),
            ("note", lambda r: md(r["note"] or "")),
        ],
    )


def verdict_text(verdict) -> list[str]:
    """The verdict as plain lines for the terminal (the last thing ``report`` and ``study`` print)."""
    head = ("label", "arch", "fold", "seeds", "best px", "AUC", "enough px", "AUC", "p Holm")
    rows = [head]
    for _, r in verdict.iterrows():
        rows.append(
            (
                str(r["label"]),
                str(r["arch"]),
                r["fold"],
                str(r["n_seeds"]),
                _int(r["best_resolution"]),
                _num(r["auc_best"]),
                _int(r["sufficient_resolution"]),
                _num(r["auc_sufficient"]),
                _p(r["p_holm"]) or ("-" if r["note"] == "" else r["note"]),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    margin = verdict["margin"].iloc[0] if len(verdict) else math.nan
    lines = [f"verdict: smallest input size within {margin:g} AUC of the best (non-inferiority, Holm):"]
    lines += ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    return lines


# ------------------------------------------------------------------------ sections
def _verdict_sentences(verdict, comparisons) -> list[str]:
    lines = []
    for _, v in verdict.iterrows():
        name = f"**{md(v['label'])}** ({md(v['arch'])}"
        if v["note"]:
            lines.append(f"- {name}): no verdict: {md(v['note'])}.")
            continue
        seeds = f", {v['n_seeds']} seeds" if v["n_seeds"] > 1 else ", one seed"
        text = (
            f"- {name}{seeds}, {v['fold']} fold): best at {v['best_resolution']} px, AUC "
            f"{v['auc_best']:.3f} ± {v['auc_best_se']:.3f}. "
        )
        if v["sufficient_resolution"] == v["best_resolution"]:
            if len(v["resolutions"].split()) == 1:
                text += "No other size finished."
            else:
                text += (
                    f"No smaller size is shown to be within {v['margin']:g} AUC of it "
                    f"(Holm-adjusted one-sided tests, alpha {v['alpha']:g})."
                )
        else:
            text += (
                f"{v['sufficient_resolution']} px is enough: AUC {v['auc_sufficient']:.3f}, "
                f"{v['diff']:+.3f} below the best, non-inferior at margin {v['margin']:g} "
                f"(Holm-adjusted p {_p(v['p_holm'])})."
            )
        refs = comparisons[
            (comparisons["label"] == v["label"])
            & (comparisons["arch"] == v["arch"])
            & (comparisons["kind"] == "reference")
        ]
        if len(refs):
            low = refs.loc[refs["resolution_a"].idxmin()]
            text += (
                f" At {low['resolution_a']} px it keeps {100 * low['ratio']:.1f}% "
                f"± {100 * low['ratio_se']:.1f} of its AUC at {low['resolution_b']} px "
                f"(`p_holm` {_p(low['p_holm'])})."
            )
        lines.append(text)
    return lines


def _paper_section(paper, synthetic: bool) -> list[str]:
    if not len(paper):
        return []
    lines = [
        f"## Side by side with {SHORT_CITATION}",
        "",
        (
            "The published 64 px vs 320 px values (abstract) beside ours, pooled over seeds. "
            '"Within": our ratio\'s 95% CI overlaps their ratio ± 1.96 SD.'
        ),
        "",
    ]
    if synthetic:
        lines += [f"> Ours come from {SYNTHETIC_NOTE}: the comparison only shows the plumbing.", ""]

    def within(r):
        if _blank(r["within"]):
            return ""
        if r["within"]:
            return "yes"
        return "no (ours higher)" if r["ratio_ci_low"] > r["paper_ratio_high"] else "no (ours lower)"

    lines += [
        table(
            paper,
            [
                ("label", lambda r: md(r["label"])),
                ("arch", lambda r: md(r["arch"])),
                ("fold", lambda r: r["fold"]),
                ("AUC 64 ours", lambda r: _pm(r["auc_low"], r["auc_low_se"])),
                ("AUC 64 paper", lambda r: f"{r['paper_auc_low']:.3f}"),
                ("AUC 320 ours", lambda r: _pm(r["auc_high"], r["auc_high_se"])),
                ("AUC 320 paper", lambda r: f"{r['paper_auc_high']:.3f}"),
                (
                    "ratio ours (95% CI)",
                    lambda r: f"{100 * r['ratio']:.1f}% ({100 * r['ratio_ci_low']:.1f}–{100 * r['ratio_ci_high']:.1f})",
                ),
                ("ratio paper ± SD", lambda r: f"{100 * r['paper_ratio']:.1f}% ± {100 * r['paper_ratio_sd']:.1f}"),
                ("within", within),
            ],
        ),
        "",
        f"Published values: {CITATION}.",
        "",
    ]
    return lines


def _what_was_run(study, summary, command) -> list[str]:
    data = study.settings.get("data", {}) or {}
    grid = study.settings.get("grid", {}) or {}
    versions = study.settings.get("versions", {}) or {}
    lines = ["## What was run", ""]
    if data:
        split = str(data.get("split", "?"))
        fractions = [
            (k, n)
            for k, n in (("val_fraction", "validation"), ("test_fraction", "test"))
            if isinstance(data.get(k), (int, float))
        ]
        for key, name in fractions:
            split += f", {data[key]:.0%} of patients to {name}"
        lines += [
            f"- Dataset: {data.get('dataset', '?')}"
            + (f" ({SYNTHETIC_NOTE})" if study.synthetic else "")
            + (f", view {data['view']}" if data.get("view") else ""),
            f"- Split: {split}" + (f", seed {data['seed']}" if "seed" in data else ""),
        ]
        shown = {
            "dataset",
            "split",
            "val_fraction",
            "test_fraction",
            "seed",
            "view",
            "notes",
            "data_dir",
            "resolutions",
            "labels",
            "square",
        }
        rest = {k: v for k, v in data.items() if k not in shown and v not in (None, "", [], {})}
        if data.get("square"):
            rest = {"square": data["square"], **rest}
        if rest:
            lines.append("- Data settings: " + ", ".join(f"{k}={v}" for k, v in rest.items()))
        for note in data.get("notes") or []:
            lines.append(f"- Note: {note}")
    if grid:
        for key, name in (
            ("labels", "Labels"),
            ("resolutions", "Input sizes (px)"),
            ("archs", "Architectures"),
            ("seeds", "Seeds"),
            ("epochs", "Epochs"),
        ):
            if key in grid:
                value = grid[key]
                value = _join(value) if isinstance(value, list) else value
                lines.append(f"- {name}: {md(value) if key == 'labels' else value}")
        rest = {
            k: v
            for k, v in grid.items()  # the cell list is the tables' business
            if k not in ("labels", "resolutions", "archs", "seeds", "epochs", "cells")
        }
        if rest:
            lines.append("- Other settings: " + ", ".join(f"{k}={v}" for k, v in rest.items()))
    folders = {c.path for c in study.finished}, {c.path for c in study.finished + study.missing}
    lines.append(
        f"- Cells finished: {len(folders[0])} of the grid's {len(folders[1])}"
        + (
            " (a multi-label cell is one network, reported per finding)"
            if any(c.task == "multilabel" for c in study.finished + study.missing)
            else ""
        )
    )
    threads = sorted({int(t) for t in pd.to_numeric(summary["torch_threads"], errors="coerce").dropna()})
    if threads:
        lines.append(
            f"- Torch threads per cell: {_join(threads)} (column `threads` below; results differ with the "
            "thread count, and seeds are the honest measure of that noise)"
        )
    else:
        lines.append("- Torch threads per cell: not recorded")
    if versions:
        lines.append("- Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    lines.append(f"- Report made by: `{command}`")
    if study.settings.get("command"):
        lines.append(f"- Study made by: `{study.settings['command']}`")
    return lines + [""]


def _missing_frame(study):
    return pd.DataFrame(
        [
            {
                "cell": c.name,
                "label": c.label,
                "arch": c.arch,
                "resolution": c.resolution or "",
                "seed": c.seed if c.label else "",
                "reason": c.reason,
            }
            for c in study.missing
        ]
    )


def report_markdown(study, tables: dict, figures: list, command: str) -> str:
    """The whole ``report.md``; ``tables`` holds summary, pooled, comparisons, verdict, paper."""
    summary, pooled, comparisons = tables["summary"], tables["pooled"], tables["comparisons"]
    verdict, paper = tables["verdict"], tables["paper"]
    lines = ["# monai-cxr study report", ""]
    if study.synthetic:
        lines += [
            (
                "> **These data are synthetic.** The study ran on the phantom generated by "
                "`monai-cxr synth`, not on radiographs; its numbers show that the pipeline "
                "works and say nothing about diagnosis."
            ),
            "",
        ]
    if study.optimistic:
        one = len(study.optimistic) == 1
        lines += [
            (
                f"> **Optimistic AUCs:** {', '.join(md(x) for x in study.optimistic)} "
                f"{'has' if one else 'have'} no test predictions, so {'it is' if one else 'they are'} "
                "scored on the validation images that also chose the checkpoint: selection and scoring "
                "used the same images."
            ),
            "",
        ]
    if study.missing:
        lines += [
            (
                f"> **Partial study:** {_count(len(study.finished), 'cell')} of the grid finished, "
                f"{len(study.missing)} did not; this report covers the finished ones "
                "(missing cells listed at the end)."
            ),
            "",
        ]
    if study.ignored:
        lines += [
            (
                f"> {_count(len(study.ignored), 'folder')} in `bundles/` "
                f"{'is' if len(study.ignored) == 1 else 'are'} not in this study's grid "
                "(`study.json`, from an earlier grid) and "
                f"{'was' if len(study.ignored) == 1 else 'were'} ignored."
            ),
            "",
        ]
    lines += [
        "## Verdict (`verdict.csv`)",
        "",
        (
            "How much resolution does each finding need? The sufficient size is the smallest one whose "
            "pooled AUC is non-inferior to the best size's at the margin (one-sided paired tests, "
            "Holm-adjusted across the sizes of a label × architecture)."
        ),
        "",
        verdict_markdown(verdict),
        "",
    ]
    by_name = {d.name: d for d in figures}
    if "verdict" in by_name:
        d = by_name["verdict"]
        lines += [f"![{d.title}](figures/verdict.png)", "", f"*{d.caption}* ([SVG](figures/verdict.svg))", ""]
    lines += _verdict_sentences(verdict, comparisons) + [""]
    unrated = summary[summary["note"].astype(bool)]
    for _, r in unrated.iterrows():
        lines.append(
            f"- **{md(r['label'])}** ({md(r['arch'])}, {r['resolution']} px, seed {r['seed']}): "
            f"not tested: {md(r['note'])} (n_pos {r['n_pos']}, n_neg {r['n_neg']})."
        )
    if len(unrated):
        lines.append("")
    lines += _paper_section(paper, study.synthetic)
    lines += _what_was_run(study, summary, command)
    rest = [d for d in figures if d.name != "verdict"]
    if rest:
        lines += ["## Figures", ""]
        for d in rest:
            lines += [
                f"![{md(d.title)}](figures/{d.name}.png)",
                "",
                f"*{md(d.caption)}* ([SVG](figures/{d.name}.svg))",
                "",
            ]
    lines += ["## Pooled over seeds (`pooled.csv`)", "", pooled_markdown(pooled), ""]
    lines += ["## Comparisons between sizes (`comparisons.csv`)", ""]
    if len(comparisons):
        lines += [comparisons_markdown(comparisons), ""]
    else:
        lines += [
            (
                "No pair of sizes could be compared: a comparison needs two finished sizes of one "
                "label × architecture, with at least two positive and two negative scored images."
            ),
            "",
        ]
    lines += ["## Every cell (`summary.csv`)", "", summary_markdown(summary), ""]
    if study.missing:
        lines += [
            "## Missing cells",
            "",
            table(
                _missing_frame(study),
                [
                    ("cell", lambda r: f"`{r['cell']}`"),
                    ("label", lambda r: md(r["label"])),
                    ("arch", lambda r: md(r["arch"])),
                    ("size", lambda r: r["resolution"]),
                    ("seed", lambda r: r["seed"]),
                    ("why", lambda r: md(r["reason"])),
                ],
            ),
            "",
        ]
    if study.ignored:
        shown = ", ".join(f"`{n}`" for n in study.ignored[:20])
        more = f" and {len(study.ignored) - 20} more" if len(study.ignored) > 20 else ""
        lines += ["## Folders not in the grid", "", f"Ignored: {shown}{more}.", ""]
    lines += _methods(verdict)
    return "\n".join(lines)


def _methods(verdict) -> list[str]:
    margin = f"{verdict['margin'].iloc[0]:g}" if len(verdict) else "0.02"
    return (
        [
            "## Methods",
            "",
            (
                "- Scored fold: every AUC of a label is computed on the held-out `test` fold when all its cells "
                "have test predictions; otherwise on `val`, which also chose each cell's checkpoint (optimistic, "
                "flagged above). The checkpoint was always chosen on `val`."
            ),
            "- AUC with DeLong's standard error; 95% CI = AUC ± 1.96 SE clipped to [0, 1] (pROC's convention).",
            (
                "- Operating point: the threshold maximising sensitivity + specificity − 1 (Youden) on `val`, "
                "applied to the scored fold (`sens`, `spec`, `acc@Youden`); `acc@0.5` thresholds at 0.5."
            ),
            (
                "- Seeds pooled: each size's seeds are scored on the same images; the pooled AUC is their mean, its "
                "SE counts the test-sample covariance the seeds share plus the between-seed variance / S, with a "
                "t reference (Hillis' degrees of freedom); with one seed it is DeLong's SE "
                "(`monai_cxr.stats.pool_seeds`)."
            ),
            (
                "- Comparisons: within each label × architecture, each size against the reference size (320 px where "
                "run, else the largest) and each size against its next larger neighbour, each pair once, on the pooled "
                "AUCs (`monai_cxr.stats.pooled_difference`; DeLong's paired test with one seed each). `ratio` is "
                "AUC a / AUC b with its delta-method SE (the paper's \"AUC ratio ± SD\"). `p_holm`: Holm's "
                "adjustment within a label; the family is every comparison of that label (all architectures and kinds)."
            ),
            (
                f"- Verdict: the best size has the highest pooled AUC; every other size is tested for non-inferiority "
                f"(H0: AUC_best − AUC_r ≥ {margin}, one-sided, same pooled SE), Holm-adjusted across the sizes of the "
                "label × architecture at alpha 0.05; the sufficient size is the smallest one rejected, else the best "
                "(`monai_cxr.stats.sufficient_resolution`)."
            ),
            (
                "- ROC curves show one seed (named in each figure), not a pooled curve; every other figure plots "
                "pooled values."
            ),
        ]
        + (
            [
                (
                    "- Multi-label: an architecture shown as `ARCH (multilabel)` (`task` multilabel in the CSV files) "
                    "is one network per size and seed trained on all the grid's labels at once (cross-entropy over "
                    "the labels, unknown ones left out), read out for this finding; it is scored on the same images "
                    "as the binary networks and pooled, compared and judged on its own, never with them."
                )
            ]
            if "task" in verdict.columns and (verdict["task"] == "multilabel").any()
            else []
        )
        + [""]
    )
