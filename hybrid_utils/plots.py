"""Figures for the notebooks and the study: heatmaps, scatter plots, distributions.

Every function draws on a matplotlib ``Axes`` (made for you when not given) and
returns it, so notebooks can compose them; ``save_study_figures`` writes the set
of PNGs that ``reproduce`` commits. One style for all of them: :func:`set_style`
(seaborn's theme, called by :func:`hybrid_utils.notebook.setup`), and one colour per
method (:data:`METHOD_COLORS`). Heatmaps, per-language bars (with the spread over
training seeds) and distributions are drawn with seaborn.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from .results import load_seed_results

METHOD_ORDER = ["zero-shot", "monolingual", "cross-lingual", "hybrid", "adversarial", "hybrid-adversarial"]
METHOD_COLORS = {"zero-shot": "#7f7f7f", "monolingual": "#1f77b4", "cross-lingual": "#ff7f0e",
                 "hybrid": "#2ca02c", "adversarial": "#d62728", "hybrid-adversarial": "#9467bd"}


def set_style() -> None:
    """The book's figure style: seaborn's ``whitegrid`` theme, no top/right spines, the method colours first."""
    sns.set_theme(context="notebook", style="whitegrid", font_scale=0.9,
                  palette=[METHOD_COLORS[m] for m in METHOD_ORDER],
                  rc={"figure.dpi": 100, "axes.spines.top": False, "axes.spines.right": False,
                      "grid.alpha": 0.4, "legend.frameon": False})


def _seeds(value) -> list[dict]:
    """One evaluation result or a list of them (one per training seed) as a list."""
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _axes(ax, figsize=(5, 4)):
    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    return ax


def _ordered(methods) -> list[str]:
    methods = list(dict.fromkeys(methods))
    return [m for m in METHOD_ORDER if m in methods] + [m for m in methods if m not in METHOD_ORDER]


def plot_matrix(matrix: pd.DataFrame, ax=None, title: str = "", fmt: str = "{:.2f}", cmap: str = "viridis",
                xlabel: str = "candidate language (Y)", ylabel: str = "question language (X)",
                vmin=None, vmax=None):
    """A labelled heatmap of a square-ish DataFrame (rows X, columns Y), values written in the cells (seaborn)."""
    ax = _axes(ax, figsize=(0.55 * matrix.shape[1] + 2, 0.5 * matrix.shape[0] + 1.5))
    values = matrix.astype(float)
    annotate = values.size <= 150  # beyond that the numbers no longer fit their cells
    labels = values.map(lambda v: fmt.format(v) if np.isfinite(v) else "") if annotate else False
    sns.heatmap(values, ax=ax, cmap=cmap, vmin=vmin, vmax=vmax, annot=labels, fmt="", square=False,
                annot_kws={"fontsize": 7}, cbar_kws={"fraction": 0.046, "pad": 0.04})
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.tick_params(axis="y", rotation=0)
    if title:
        ax.set_title(title)
    return ax


def pair_map_frame(result: dict) -> pd.DataFrame:
    """The X × Y mAP table of one evaluation result as a DataFrame."""
    languages = result["languages"]
    return pd.DataFrame([[result["pair_map"].get(x, {}).get(y, np.nan) for y in languages] for x in languages],
                        index=languages, columns=languages)


def plot_pair_map(result: dict, ax=None, title: str | None = None, vmin=0.0, vmax=1.0):
    """Heatmap of mAP per (question language X, candidate language Y)."""
    return plot_matrix(pair_map_frame(result), ax=ax, title=title or result.get("model", ""), vmin=vmin, vmax=vmax)


def plot_mono_vs_cross(summary: pd.DataFrame, ax=None, title: str = ""):
    """Monolingual against cross-lingual mAP, one point per method: the balance the paper is about."""
    ax = _axes(ax)
    for _, row in summary.iterrows():
        ax.scatter(row["mono_map"], row["cross_map"], s=60, color=METHOD_COLORS.get(row["method"], "k"),
                   label=row["method"], zorder=3)
        ax.annotate(row["method"], (row["mono_map"], row["cross_map"]), textcoords="offset points",
                    xytext=(5, 4), fontsize=8)
    ax.set_xlabel("monolingual mAP")
    ax.set_ylabel("cross-lingual mAP")
    ax.grid(alpha=0.3)
    ax.set_title(title)
    return ax


def plot_setting_bars(summary: pd.DataFrame, ax=None, title: str = ""):
    """Grouped bars: mono / cross / multilingual mAP for each method."""
    ax = _axes(ax, figsize=(7, 3.5))
    methods = _ordered(summary["method"])
    settings = [("mono_map", "monolingual"), ("cross_map", "cross-lingual"), ("multilingual_map", "multilingual")]
    width = 0.8 / len(methods)
    for i, method in enumerate(methods):
        row = summary[summary["method"] == method].iloc[0]
        xs = np.arange(len(settings)) + (i - (len(methods) - 1) / 2) * width
        errors = [row.get(f"{key}_sd", np.nan) for key, _ in settings]
        errors = [e if e is not None and np.isfinite(e) else 0.0 for e in errors]
        ax.bar(xs, [row[key] for key, _ in settings], width, label=method, color=METHOD_COLORS.get(method),
               yerr=errors if any(errors) else None, capsize=2)
    ax.set_xticks(range(len(settings)), [name for _, name in settings])
    ax.set_ylabel("mAP")
    ax.legend(fontsize=7, ncol=2)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    return ax


def rank_distance_frame(results: dict) -> pd.DataFrame:
    """Long table of per-question rank distances: ``method, seed, language, rank_distance`` (all seeds given)."""
    rows = []
    for method, value in results.items():
        for result in _seeds(value):
            for language, distances in result["rank_distances"].items():
                rows += [(method, result.get("seed"), language, float(d)) for d in distances]
    return pd.DataFrame(rows, columns=["method", "seed", "language", "rank_distance"])


def plot_rank_distances(results: dict, ax=None, title: str = ""):
    """Distribution of the per-question rank distance (language bias) for each method (seaborn boxes).

    ``results``: ``{method: result}`` or ``{method: [result per seed]}`` (the seeds are pooled).
    """
    ax = _axes(ax, figsize=(7, 3.5))
    methods = _ordered(results)
    frame = rank_distance_frame(results)
    with warnings.catch_warnings():  # seaborn 0.13 passes matplotlib 3.11's deprecated ``vert``: not ours to fix
        warnings.simplefilter("ignore", matplotlib.MatplotlibDeprecationWarning)
        sns.boxplot(frame, x="method", y="rank_distance", hue="method", order=methods, hue_order=methods,
                    palette=METHOD_COLORS, showfliers=False, boxprops={"alpha": 0.8}, legend=False, ax=ax)
    ax.tick_params(axis="x", rotation=20)
    ax.set_xlabel("")
    ax.set_ylabel("rank distance (max − min rank)")
    ax.set_title(title)
    return ax


def per_language_frame(results: dict, key: str = "multilingual_map_by_language") -> pd.DataFrame:
    """Long table ``method, seed, language, value`` of a per-language field of each result (all seeds given)."""
    rows = [(method, result.get("seed"), language, float(value))
            for method, value_or_list in results.items() for result in _seeds(value_or_list)
            for language, value in result[key].items()]
    return pd.DataFrame(rows, columns=["method", "seed", "language", "value"])


def plot_per_language(results: dict, key: str = "multilingual_map_by_language", ax=None, title: str = "",
                      ylabel: str = "multilingual mAP"):
    """Bars per question language for each method (e.g. multilingual mAP or rank distance).

    ``results``: ``{method: result}``, or ``{method: [result per seed]}`` (``load_seed_results``): the bars are
    then seed means with ± 1 sd error bars over the training seeds.
    """
    ax = _axes(ax, figsize=(8, 3.5))
    methods = _ordered(results)
    frame = per_language_frame(results, key)
    languages = list(dict.fromkeys(frame["language"]))
    several_seeds = frame.groupby(["method", "language"]).size().max() > 1
    sns.barplot(frame, x="language", y="value", hue="method", order=languages, hue_order=methods,
                palette=METHOD_COLORS, errorbar="sd" if several_seeds else None, capsize=0.1,
                err_kws={"linewidth": 1}, ax=ax)
    ax.set_xlabel("question language")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7, ncol=len(methods), loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    ax.set_title(title + (" (bars: seed mean ± sd)" if several_seeds and title else ""), pad=22)
    return ax


def plot_loss_curves(logs: dict, ax=None, column: str = "loss", smooth: int = 10, title: str = "training loss"):
    """Loss per step for several runs (``{name: DataFrame with step and loss}``), smoothed by a rolling mean."""
    ax = _axes(ax, figsize=(7, 3.5))
    for name, frame in logs.items():
        frame = frame.dropna(subset=[column])
        ax.plot(frame["step"], frame[column].rolling(smooth, min_periods=1).mean(), label=name,
                color=METHOD_COLORS.get(name))
    ax.set_xlabel("step")
    ax.set_ylabel(column)
    ax.legend(fontsize=8)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return ax


def plot_lambda_sweep(sweep: pd.DataFrame, chance: float | None = None, axes=None):
    """The lambda sweep on held-out training questions, mean ± sd over seeds: language information (left), score (right).

    One colour per adversary; each line starts at the shared ``lambda_max = 0`` run (no adversary). Left: the
    discriminator's own held-out accuracy at the end of training (solid) and a freshly trained probe on centred
    embeddings (dashed; where the sweep has it, else the raw probe of the evaluation set). Right: the validation
    score that chooses the adversary and lambda (mean of the three mAPs, solid) and the translation margin (dotted).
    """
    from .adversarial import NO_ADVERSARY, with_adversary

    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(11, 3.5))
    sweep = with_adversary(sweep)
    values = sorted(sweep["lambda_max"].unique())
    position = {value: i for i, value in enumerate(values)}
    adversaries = [a for a in dict.fromkeys(sweep["adversary"]) if a != NO_ADVERSARY] or [NO_ADVERSARY]
    probe = "val_probe_accuracy_centered" if "val_probe_accuracy_centered" in sweep else "probe_accuracy"
    score = "val_score" if "val_score" in sweep else "multilingual_map"
    twin = axes[1].twinx()
    for colour, adversary in zip(plt.rcParams["axes.prop_cycle"].by_key()["color"], adversaries):
        rows = sweep[sweep["adversary"].isin([adversary, NO_ADVERSARY])]
        stats = rows.groupby("lambda_max").agg({k: ["mean", "std"] for k in (probe, score, "discriminator_accuracy",
                                                                             "val_translation_margin") if k in rows})
        xs = [position[v] for v in stats.index]

        def line(ax, key, fmt, label):
            if key in rows and rows[key].notna().any():
                ax.errorbar(xs, stats[(key, "mean")], yerr=stats[(key, "std")].fillna(0), fmt=fmt, capsize=3,
                            color=colour, label=f"{adversary}: {label}")

        line(axes[0], "discriminator_accuracy", "o-", "discriminator (held-out texts, end of training)")
        line(axes[0], probe, "s--", "fresh probe, centred" if probe.startswith("val_") else "fresh probe (eval set)")
        line(axes[1], score, "o-", "validation score" if score == "val_score" else "multilingual mAP")
        line(twin, "val_translation_margin", "s:", "translation margin")
    if chance:
        axes[0].axhline(chance, color="k", ls="--", lw=1, label=f"chance = {chance:.2f}")
    for ax in axes:
        ax.set_xticks(range(len(values)), [f"{v:g}" for v in values])
        ax.set_xlabel("λ_max")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("language-identification accuracy")
    axes[0].set_ylim(0, 1.05)
    axes[0].legend(fontsize=7)
    axes[1].set_ylabel("mAP (mean of mono, cross, multi)" if score == "val_score" else "mAP")
    twin.set_ylabel("translation margin")
    handles = axes[1].get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    axes[1].legend(handles, [h.get_label() for h in handles], fontsize=7, loc="lower left")
    axes[0].figure.tight_layout()
    return axes


def plot_tuning_curves(frame: pd.DataFrame, ax=None, chosen_step: int | None = None,
                       title: str = "validation score (held-out training questions)"):
    """Validation score (mean of the three mAPs) against step, one line per method and grid point (``results/tuning/*.csv``)."""
    ax = _axes(ax, figsize=(7, 3.5))
    keys = [k for k in ("num_trainable_layers", "learning_rate", "scale") if k in frame and frame[k].nunique() > 1]
    methods = "method" in frame and frame["method"].nunique() > 1
    for point, curve in frame.groupby((["method"] if methods else []) + (keys or ["scale"])):
        point = point[1:] if methods else point
        label = ", ".join(f"{k.replace('num_trainable_layers', 'layers').replace('learning_rate', 'lr')} {v:g}"
                          for k, v in zip(keys, point))
        label = f"{curve['method'].iloc[0]}{', ' + label if label else ''}" if methods else (label or "grid point")
        curve = curve.sort_values("step")
        ax.plot(curve["step"], curve["score"], "o-", ms=3, label=label)
    if chosen_step is not None:
        ax.axvline(chosen_step, color="k", ls="--", lw=1, label=f"chosen: {chosen_step} steps")
    ax.set_xlabel("training step")
    ax.set_ylabel("validation score")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    ax.set_title(title)
    return ax


def plot_comparisons(comparisons: pd.DataFrame, eval_on: str, metrics=("multilingual_map", "language_bias"),
                     axes=None):
    """Paired differences with their 95 % intervals, one panel per metric; the grey band is ± the seed spread."""
    if axes is None:
        _, axes = plt.subplots(1, len(metrics), figsize=(6 * len(metrics), 3.2), squeeze=False)
        axes = axes[0]
    for ax, metric in zip(axes, metrics):
        part = comparisons[(comparisons["eval_on"] == eval_on) & (comparisons["metric"] == metric)]
        labels = [f"{a} − {b}" for a, b in zip(part["method_a"], part["method_b"])]
        ys = np.arange(len(part))
        ax.errorbar(part["diff"], ys, xerr=[part["diff"] - part["ci_low"], part["ci_high"] - part["diff"]],
                    fmt="o", capsize=3)
        for y, spread in zip(ys, part["seed_spread"]):
            if np.isfinite(spread):
                ax.fill_betweenx([y - 0.3, y + 0.3], -spread, spread, color="0.85", zorder=0)
        ax.axvline(0, color="k", lw=1)
        ax.set_yticks(ys, labels)
        better = "negative: a less biased" if metric == "language_bias" else "positive: a better"
        ax.set_xlabel(f"difference a − b ({better})")
        ax.set_title(f"{metric.replace('_', ' ')} on {eval_on}")
        ax.grid(axis="x", alpha=0.3)
    return axes


def save_study_figures(results_dir: Path, summary: pd.DataFrame) -> list[Path]:
    """The study's PNGs: per evaluation set, bars, scatter, rank distances, per-language bars, heatmaps."""
    results_dir = Path(results_dir)
    figures_dir = results_dir / "figures"
    figures_dir.mkdir(parents=True, exist_ok=True)
    written = []
    seed_results = load_seed_results(results_dir)
    for (model, eval_on), part in summary.groupby(["model", "eval_on"], sort=False):
        by_seed = {method: seed_results[(model, method, eval_on)] for method in part["method"]
                   if (model, method, eval_on) in seed_results}
        results = {method: values[0] for method, values in by_seed.items()}  # the lowest seed's heatmaps
        prefix = f"{model}_{eval_on}"
        fig, axes = plt.subplots(1, 2, figsize=(12, 4))
        plot_setting_bars(part, ax=axes[0], title=f"{model} on {eval_on}: mAP per setting")
        plot_mono_vs_cross(part, ax=axes[1], title="monolingual vs cross-lingual mAP")
        written.append(_save(fig, figures_dir / f"{prefix}_overview.png"))
        fig, axes = plt.subplots(1, 2, figsize=(13, 4))
        plot_rank_distances(results, ax=axes[0], title=f"language bias on {eval_on}")
        plot_per_language(by_seed, ax=axes[1], title=f"multilingual mAP per question language ({eval_on})")
        written.append(_save(fig, figures_dir / f"{prefix}_bias_and_languages.png"))
        methods = _ordered(results)
        fig, axes = plt.subplots(2, (len(methods) + 1) // 2, figsize=(6 * ((len(methods) + 1) // 2), 10))
        for ax, method in zip(np.ravel(axes), methods):
            plot_pair_map(results[method], ax=ax, title=method)
        for ax in np.ravel(axes)[len(methods):]:
            ax.axis("off")
        fig.suptitle(f"{model}: mAP per (question language, candidate language) on {eval_on}")
        written.append(_save(fig, figures_dir / f"{prefix}_pair_maps.png"))
    sweep_csv = results_dir / "adversarial_sweep.csv"
    if sweep_csv.exists():
        sweep = pd.read_csv(sweep_csv)
        if len(sweep):
            fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
            plot_lambda_sweep(sweep, axes=axes)
            fig.suptitle("adversarial training: how strong a gradient reversal?")
            written.append(_save(fig, figures_dir / "adversarial_sweep.png"))
    return written


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
