"""The study's tables and words: summary over seeds, paired comparisons, findings, the README block.

Everything here turns saved results into files people read (``summary.csv`` / ``summary.md``,
``seed_results.csv``, ``comparisons.csv``, ``adversarial_sweep.csv``) and into the findings
text that README and notebook 05 print instead of typing numbers by hand. A finding calls a
method better only when :mod:`hybrid_utils.study.stats` says so: the paired 95 % interval over
questions excludes 0 *and* the difference exceeds the spread over training seeds.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

__all__ = ["centering_effect", "describe_centering", "LANGUAGE_INFO_COLUMNS", "RECALL_COLUMNS", "SEED_COLUMNS", "SUMMARY_COLUMNS", "SWEEP_COLUMNS", "summarize_seeds", "write_summary",
           "summary_markdown", "describe_findings", "describe_sweep", "sweep_means", "update_readme", "headline_table",
           "write_comparisons_report", "README_START", "README_END"]

METRIC_COLUMNS = ("mono_map", "cross_map", "multilingual_map", "language_bias")
#: Recall@1 / @10 per setting, flattened from an evaluation's ``recall_at_<k>`` (absent from results made before them)
RECALL_COLUMNS = tuple(f"{setting}_recall_at_{k}" for k in (1, 10) for setting in ("mono", "cross", "multilingual"))
#: language information beside the saturated raw probe (:mod:`hybrid_utils.language_information`; NaN in older results)
LANGUAGE_INFO_COLUMNS = ("probe_accuracy_centered", "translation_margin")
#: one row per evaluated model and seed (``seed_results.csv``)
SEED_COLUMNS = ["model", "method", "train_on", "eval_on", "seed", "postprocess", *METRIC_COLUMNS, "mono_map_micro",
                "cross_map_micro", "multilingual_map_micro", *RECALL_COLUMNS, "probe_accuracy", *LANGUAGE_INFO_COLUMNS,
                "n_questions"]
#: one row per method and evaluation set (``summary.csv``): means over seeds, ``<metric>_sd``, ``n_seeds``
SUMMARY_COLUMNS = ["model", "method", "train_on", "eval_on", "postprocess", "n_seeds", *METRIC_COLUMNS,
                   *(f"{m}_sd" for m in METRIC_COLUMNS), "mono_map_micro", "cross_map_micro",
                   "multilingual_map_micro", *RECALL_COLUMNS, "probe_accuracy", "probe_accuracy_sd",
                   *(c for m in LANGUAGE_INFO_COLUMNS for c in (m, f"{m}_sd")), "n_questions"]
#: the lambda sweep: held-out validation columns (``val_*``, where lambda is chosen), then the evaluation set's
SWEEP_COLUMNS = ["adversary", "lambda_max", "seed", "discriminator_accuracy", "val_mono_map", "val_cross_map", "val_multilingual_map",
                 "val_language_bias", "val_score", "val_probe_accuracy", "val_probe_accuracy_centered",
                 "val_translation_margin", "probe_accuracy", "mono_map", "cross_map", "multilingual_map", "language_bias"]


def summarize_seeds(per_seed: pd.DataFrame) -> pd.DataFrame:
    """Means and sample sds over seeds per (model, method, train_on, eval_on, postprocess), in the order of ``per_seed``.

    ``postprocess`` is ``none`` (the embeddings as they are) or ``center`` (:mod:`hybrid_utils.postprocess`);
    rows without the column count as ``none``.
    """
    from .stats import seed_summary

    metrics = [*METRIC_COLUMNS, "mono_map_micro", "cross_map_micro", "multilingual_map_micro", *RECALL_COLUMNS,
               "probe_accuracy", *LANGUAGE_INFO_COLUMNS, "n_questions"]
    keys = ["model", "method", "train_on", "eval_on", "postprocess"]
    per_seed = per_seed.copy()
    for column in LANGUAGE_INFO_COLUMNS:  # None (or missing) for results written before them
        per_seed[column] = pd.to_numeric(per_seed[column], errors="coerce") if column in per_seed else math.nan
    if "postprocess" not in per_seed:
        per_seed["postprocess"] = "none"
    per_seed["postprocess"] = per_seed["postprocess"].fillna("none")
    summary = seed_summary(per_seed, group_by=keys, metrics=metrics)
    order = per_seed[keys].drop_duplicates()
    summary = order.merge(summary, on=keys, how="left")
    for column in SUMMARY_COLUMNS:
        if column not in summary:
            summary[column] = math.nan
    summary["n_questions"] = summary["n_questions"].astype(int)
    return summary[SUMMARY_COLUMNS]


def write_summary(summary: pd.DataFrame, results_dir: Path) -> None:
    """``summary.csv`` (all digits) and ``summary.md`` (mean ± sd, for people)."""
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    summary.to_csv(results_dir / "summary.csv", index=False)
    (results_dir / "summary.md").write_text(summary_markdown(summary) + "\n")


def _mean_sd(mean: float, sd: float, digits: int) -> str:
    if sd is None or not math.isfinite(sd):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {sd:.{digits}f}"


def summary_markdown(summary: pd.DataFrame) -> str:
    """The summary as a Markdown table: mean ± sd over seeds (mAP to three decimals, rank distance to one)."""
    rows = []
    postprocessed = "postprocess" in summary and (summary["postprocess"].fillna("none") != "none").any()
    extra = {name: column for name, column in (("centred probe", "probe_accuracy_centered"),
                                               ("translation margin", "translation_margin"))
             if column in summary and summary[column].notna().any()}  # shown once results have them
    for row in summary.itertuples(index=False):
        rows.append({
            "model": row.model, "method": row.method, "trained on": row.train_on, "evaluated on": row.eval_on,
            **({"post-processing": row.postprocess} if postprocessed else {}),
            "seeds": int(row.n_seeds),
            "mono mAP": _mean_sd(row.mono_map, row.mono_map_sd, 3),
            "cross mAP": _mean_sd(row.cross_map, row.cross_map_sd, 3),
            "multilingual mAP": _mean_sd(row.multilingual_map, row.multilingual_map_sd, 3),
            "rank distance": _mean_sd(row.language_bias, row.language_bias_sd, 1),
            "language probe": "n/a" if not math.isfinite(row.probe_accuracy) else f"{row.probe_accuracy:.3f}",
            **{name: "n/a" if not math.isfinite(getattr(row, column)) else f"{getattr(row, column):.3f}"
               for name, column in extra.items()},
        })
    return pd.DataFrame(rows).to_markdown(index=False)


def describe_findings(summary: pd.DataFrame, comparisons: pd.DataFrame | None = None) -> str:
    """Plain-language findings from the summary and the paired comparisons, one bullet per statement.

    Gains over zero-shot are reported as numbers (means over seeds); whether one method beats
    another is left to the paired comparisons (:func:`hybrid_utils.study.stats.describe_comparisons`),
    which say "no measurable difference" unless the Holm-corrected p-value and the interval over seeds and
    questions both allow more.
    """
    from .stats import METRIC_NAMES, describe_comparisons

    lines = []
    for (model, eval_on), part in summary.groupby(["model", "eval_on"], sort=False):
        part = part.set_index("method")
        if "zero-shot" not in part.index:
            continue
        base = part.loc["zero-shot"]
        trained = part.drop(index="zero-shot")
        if trained.empty:
            continue
        seeds = sorted({int(n) for n in trained["n_seeds"]})
        lines.append(f"- **{model} on {eval_on}** (trained on {', '.join(sorted(set(trained['train_on'])))}; "
                     f"{'/'.join(map(str, seeds))} seed(s) per method; means):")
        for column in ("mono_map", "cross_map", "multilingual_map"):
            change = ", ".join(f"{method} {row[column] - base[column]:+.3f}" for method, row in trained.iterrows())
            lines.append(f"  - {METRIC_NAMES[column]} vs zero-shot ({base[column]:.3f}): {change}")
        change = ", ".join(f"{method} {row['language_bias']:.0f}" for method, row in trained.iterrows())
        lines.append(f"  - rank distance (zero-shot {base['language_bias']:.0f}): {change}")
        if "probe_accuracy" in trained and trained["probe_accuracy"].notna().any():
            probe = ", ".join(f"{method} {row['probe_accuracy']:.2f}" for method, row in trained.iterrows())
            lines.append(f"  - language-identification probe accuracy (zero-shot {base['probe_accuracy']:.2f}): "
                         f"{probe}")
        if comparisons is not None and len(comparisons):
            part_cmp = comparisons[comparisons["eval_on"] == eval_on]
            if len(part_cmp):
                lines.append("  - paired comparisons (95 % interval over seeds and questions; better only if it "
                             "excludes 0 and the Holm-corrected p < 0.05):")
                lines += ["    " + line for line in describe_comparisons(part_cmp).splitlines()]
    return "\n".join(lines)


def sweep_means(sweep: pd.DataFrame, keys) -> pd.DataFrame:
    """Mean, sd and number of seeds of ``keys`` per (adversary, ``lambda_max``): no adversary first, then each
    adversary by increasing ``lambda_max``."""
    from ..adversarial import ADVERSARIES, NO_ADVERSARY, with_adversary

    frame = with_adversary(sweep)
    stats = frame.groupby(["adversary", "lambda_max"])[list(keys)].agg(["mean", "std"])
    stats[("seeds", "")] = frame.groupby(["adversary", "lambda_max"])["seed"].nunique()
    order = {name: i for i, name in enumerate((NO_ADVERSARY, *ADVERSARIES))}
    return stats.sort_index(key=lambda level: level.map(order) if level.name == "adversary" else level)


def describe_sweep(sweep: pd.DataFrame, chance: float | None = None, fooled_margin: float = 0.15,
                   source: str = "results/adversarial_sweep.csv") -> str:
    """The adversarial lambda sweep in words, from its numbers: held-out measures per adversary and lambda, the choice.

    Per adversary and ``lambda_max`` (mean ± sd over seeds, on held-out questions of the training set): the
    discriminator's own accuracy at the end of training, a freshly trained probe on centred embeddings, the
    translation margin and the validation score that chooses both (:func:`hybrid_utils.study.tuning.choose_lambda`).
    The discriminator counts as fooled when its accuracy is within ``fooled_margin`` of ``chance``; the fresh probe
    and the margin tell whether the language information is gone or only hidden from that one discriminator.
    ``source`` names the sweep's file in the first line.
    """
    from ..adversarial import NO_ADVERSARY
    from .tuning import choose_lambda

    def cell(row, key, digits):
        mean, sd = row.get((key, "mean")), row.get((key, "std"))
        if mean is None or pd.isna(mean):
            return "-"
        return f"{mean:.{digits}f}" + (f" ± {sd:.{digits}f}" if sd is not None and pd.notna(sd) else "")

    keys = [k for k in ("discriminator_accuracy", "val_probe_accuracy_centered", "val_translation_margin", "val_score")
            if k in sweep]
    stats = sweep_means(sweep, keys)
    lines = [f"Adversarial lambda sweep (`{source}`, held-out questions of the training set; "
             "mean ± sd over seeds): discriminator accuracy at the end of training / fresh probe on centred "
             "embeddings / translation margin / validation score:"]
    for (adversary, value), row in stats.iterrows():
        row = row.to_dict()
        name = "no adversary" if adversary == NO_ADVERSARY else adversary
        lines.append(f"- {name}, lambda_max {value:g} ({int(row[('seeds', '')])} seeds): " + " / ".join(
            cell(row, k, 3 if k in ("val_score", "val_translation_margin") else 2) for k in keys))
    if "val_score" in sweep and sweep["val_score"].notna().any() and (sweep["lambda_max"] > 0).any():
        choice = choose_lambda(sweep)
        spread = f" ± {choice['val_score_sd']:.3f}" if pd.notna(choice.get("val_score_sd")) else ""  # one seed: none
        lines.append(f"- chosen on held-out training questions: {choice['adversary']} at lambda_max "
                     f"{choice['lambda_max']:g} (validation score {choice['val_score']:.3f}{spread})")
    if chance is not None and "discriminator_accuracy" in keys:
        lines += _fooled_lines(stats, chance, fooled_margin)
    return "\n".join(lines)


def _fooled_lines(stats: pd.DataFrame, chance: float, fooled_margin: float) -> list[str]:
    """Per adversary: the first lambda_max at which its discriminator is fooled, and what a fresh probe reads there."""
    from ..adversarial import NO_ADVERSARY

    accuracy = stats[("discriminator_accuracy", "mean")]
    probe = stats[("val_probe_accuracy_centered", "mean")] if ("val_probe_accuracy_centered", "mean") in stats else None
    base = probe.xs(NO_ADVERSARY, level="adversary") if probe is not None and NO_ADVERSARY in probe.index else None
    lines = []
    for adversary in dict.fromkeys(a for a, _ in stats.index if a != NO_ADVERSARY):
        own = accuracy.xs(adversary, level="adversary")
        fooled = own[own <= chance + fooled_margin]
        if fooled.empty:
            lines.append(f"- {adversary}: the encoder fooled the discriminator at no lambda_max (chance {chance:.2f}; "
                         f"lowest {own.min():.2f} at lambda_max {own.idxmin():g})")
            continue
        first = fooled.index.min()
        lines.append(f"- {adversary}: the discriminator is fooled from lambda_max {first:g} on (accuracy "
                     f"{own[first]:.2f}, chance {chance:.2f})")
        if base is not None and not base.empty:
            at, off = probe[(adversary, first)], base.iloc[0]
            lines.append(f"- {adversary}: a fresh probe on centred embeddings reads the language at {at:.2f} there, "
                         f"against {off:.2f} without an adversary: the language information is "
                         f"{'reduced' if at < off - 0.02 else 'hidden from that discriminator, not removed'}")
    return lines


def centering_effect(summary: pd.DataFrame) -> pd.DataFrame:
    """What centring each language's embeddings (``postprocess == "center"``) changes, per method and evaluation set.

    ``summary`` is ``summary.csv`` with both post-processings. One row per (method, eval_on) that has
    both: the four main metrics as they are (``<metric>``), centred (``<metric>_centered``) and the
    change (``<metric>_change``, centred − as they are; for the rank distance negative is better).
    """
    keys = ["model", "method", "train_on", "eval_on"]
    if "postprocess" not in summary:
        return pd.DataFrame(columns=keys)
    plain = summary[summary["postprocess"] == "none"].set_index(keys)[list(METRIC_COLUMNS)]
    centered = summary[summary["postprocess"] == "center"].set_index(keys)[list(METRIC_COLUMNS)]
    both = plain.join(centered, rsuffix="_centered", how="inner")
    for metric in METRIC_COLUMNS:
        both[f"{metric}_change"] = both[f"{metric}_centered"] - both[metric]
    columns = [c for m in METRIC_COLUMNS for c in (m, f"{m}_centered", f"{m}_change")]
    return both[columns].reset_index()


def describe_centering(effect: pd.DataFrame) -> str:
    """The training-free centring in words: per evaluation set and method, what it does to bias and monolingual mAP."""
    lines = []
    for eval_on, part in effect.groupby("eval_on", sort=False):
        changes = ", ".join(f"{row.method} {row.language_bias:.0f} → {row.language_bias_centered:.0f} "
                            f"(mono mAP {row.mono_map_change:+.3f}, multilingual {row.multilingual_map_change:+.3f})"
                            for row in part.itertuples(index=False))
        lines.append(f"- centring each language's embeddings on {eval_on} (no training; rank distance as is → centred): "
                     f"{changes}")
    return "\n".join(lines)


README_START, README_END = "<!-- results:start -->", "<!-- results:end -->"


def headline_table(summary_all: pd.DataFrame) -> str:
    """README's one table: every method as it is, plus zero-shot with centring (the training-free correction).

    Columns: mean ± sd over seeds of the three mAPs and the rank distance; the language information as the
    probe on centred embeddings and the translation margin (the raw probe is saturated, see ``summary.md``).
    """
    plain = summary_all[summary_all["postprocess"] == "none"]
    centred = summary_all[(summary_all["postprocess"] == "center") & (summary_all["method"] == "zero-shot")].copy()
    centred["method"] = "zero-shot + centring"
    table = pd.concat([plain, centred], ignore_index=True)
    rows = [{"method": row.method, "seeds": int(row.n_seeds),
             "mono mAP": _mean_sd(row.mono_map, row.mono_map_sd, 3),
             "cross mAP": _mean_sd(row.cross_map, row.cross_map_sd, 3),
             "multilingual mAP": _mean_sd(row.multilingual_map, row.multilingual_map_sd, 3),
             "rank distance": _mean_sd(row.language_bias, row.language_bias_sd, 0),
             "centred probe": "n/a" if not math.isfinite(row.probe_accuracy_centered) else f"{row.probe_accuracy_centered:.3f}",
             "translation margin": "n/a" if not math.isfinite(row.translation_margin) else f"{row.translation_margin:.3f}"}
            for row in table.itertuples(index=False)]
    return pd.DataFrame(rows).to_markdown(index=False)


def write_comparisons_report(comparisons: pd.DataFrame, results_dir: str | Path, notes: str = "") -> Path:
    """``comparisons.md``: every paired comparison in words (README shows only the findings), then ``notes``."""
    from .stats import describe_comparisons

    path = Path(results_dir) / "comparisons.md"
    path.write_text("# Paired comparisons\n\nGenerated by `python -m hybrid_utils reproduce --study`; do not edit by "
                    "hand. a − b, 95 % interval of a two-level bootstrap (training seeds, then questions), macro over "
                    "query languages; a method is called better only when the interval excludes 0 and the Holm-"
                    "corrected p (over the whole table) is below 0.05.\n\n" + describe_comparisons(comparisons)
                    + ("\n\n" + notes if notes else "") + "\n")
    return path


def update_readme(summary_all: pd.DataFrame, results_dir: str | Path, findings: list[str], readme: str | Path = "README.md",
                  intro: str = "") -> bool:
    """Write the headline table, the findings and the key figure between the README's results markers.

    The block stays short (a front door): every paired comparison is in ``comparisons.md``.
    Returns False (and changes nothing) when the README or its markers are missing.
    """
    readme = Path(readme)
    if not readme.exists():
        return False
    text = readme.read_text()
    if README_START not in text or README_END not in text:
        return False
    figures = sorted((Path(results_dir) / "figures").glob("*xquad-r_overview.png")) or sorted(
        (Path(results_dir) / "figures").glob("*_overview.png"))
    block = [README_START, "", "Generated by `python -m hybrid_utils reproduce --study` (profile `cpu`); do not edit by hand.",
             *([intro] if intro else []), "", headline_table(summary_all), "", "**What we found**", "", *findings, ""]
    if figures:
        block += [f"![mAP per setting and method]({figures[0].as_posix()})", ""]
    block.append(README_END)
    head, rest = text.split(README_START, 1)
    tail = rest.split(README_END, 1)[1]
    readme.write_text(head + "\n".join(block) + tail)
    return True
