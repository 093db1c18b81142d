"""Size-proportional or uniform languages: does it matter how a hybrid batch's language is drawn?

The paper's abstract draws a batch's language (pair) in proportion to its data size, its method
section uniformly. :class:`~hybrid_utils.samplers.HybridBatchSampler` does either
(``language_weights="size"`` or ``"uniform"``, see :mod:`hybrid_utils.batch_groups`).
:func:`language_weights_study` trains the hybrid method with both, on both zero-shot protocols
and the study's seeds, evaluates on the full pools and compares them with the study's paired
test over seeds and questions, Holm-corrected (:func:`hybrid_utils.study.stats.compare_methods`).

The runs with the profile's own weighting (``size``) *are* the study's hybrid runs and are reused.
So is a run whose training set gives both weightings the same batches: when every language (pair)
of a kind fills the same number of batches, the uniform quota equals the size quota and the
sampler draws exactly the same sequence (:func:`weights_are_equivalent`; the case of XQuAD-R,
whose 11 languages are parallel, tested in ``tests/test_language_weighting.py``). Only MLQA-R,
whose languages differ in size (English 1,148 monolingual training pairs, the others about 500),
needs runs of its own; they go to ``<runs_dir>/<model>/language-weights/`` and are evaluated into
``<results_dir>/language-weights/``. Finished runs and evaluations are skipped.

Writes ``language_weights.csv`` (one row per protocol, weighting and seed) and
``language_weights_comparisons.csv`` (uniform − size per evaluation set and metric).
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from ..batch_groups import LANGUAGE_WEIGHTS, batches_per_epoch, check_language_weights
from ..profiles import Profile, get_profile
from ..experiments import Evaluator, ensure_run, result_path, run_dir, train_config
from .timing import StageTimer
from ..results import model_slug
from ..results import result_name

__all__ = ["LANGUAGE_WEIGHTS_COLUMNS", "weights_are_equivalent", "language_weights_run", "language_weights_study",
           "language_weights_results", "summarize_language_weights", "describe_language_weights",
           "plot_language_weights"]

LANGUAGE_WEIGHTS_COLUMNS = ["train_on", "eval_on", "language_weights", "seed", "identical_to_size", "mono_map",
                            "cross_map", "multilingual_map", "language_bias"]
#: the method names of the two weightings in ``language_weights_comparisons.csv``
METHOD_NAMES = {"size": "hybrid (size)", "uniform": "hybrid (uniform)"}


def weights_are_equivalent(pairs, batch_size: int, alpha: float) -> bool:
    """Whether ``"size"`` and ``"uniform"`` give a hybrid sampler on ``pairs`` the very same batches.

    The two weightings differ only in how many batches each group (language or language pair)
    contributes to an epoch (:func:`hybrid_utils.batch_groups.batches_per_epoch`); with equal quotas
    the sampler's draws are identical for every seed.
    """
    from ..samplers import HybridBatchSampler

    sampler = HybridBatchSampler(pairs, batch_size, alpha=alpha, seed=0)
    return batches_per_epoch(sampler.groups, "size") == batches_per_epoch(sampler.groups, "uniform")


def language_weights_run(profile: Profile, weights: str, train_on: str, model: str | None = None,
                         seed: int | None = None, equivalent: bool = False) -> tuple[dict, Path, Path, bool]:
    """Where the hybrid run with ``weights`` lives: ``(overrides, run folder, result file, reuses the study's run)``.

    The profile's own weighting, or any weighting when ``equivalent`` (:func:`weights_are_equivalent`
    on the run's training pairs), is the study's hybrid run.
    """
    from ..config import PROTOCOLS

    weights = check_language_weights(weights)
    model = model or profile.models[0]
    seed = profile.seeds[0] if seed is None else int(seed)
    eval_on = PROTOCOLS[train_on]
    if weights == profile.language_weights or equivalent:
        return ({}, run_dir(profile, model, "hybrid", train_on, seed),
                result_path(profile, model, "hybrid", eval_on, seed), True)
    folder = Path(profile.runs_dir) / model_slug(model) / "language-weights" / f"hybrid-{train_on}-{weights}-seed{seed}"
    out = Path(profile.results_dir) / "language-weights" / model_slug(model) / weights / result_name(eval_on, seed)
    return {"language_weights": weights, "output_dir": str(folder)}, folder, out, False


def language_weights_study(profile: Profile | str | None = None, seeds=None, train_sets=None, model: str | None = None,
                           evaluate: Evaluator | None = None, timer: StageTimer | None = None, log=print,
                           write: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train (or reuse) hybrid runs with size-proportional and uniform languages, evaluate and compare them.

    Args:
        profile: a :class:`~hybrid_utils.profiles.Profile` or its name (default: from the environment).
        seeds: training seeds (default: the profile's ``study_seeds``, the seeds of its hybrid runs).
        train_sets: only the protocols training on these sets (default: the profile's protocols).
        model: the base model (default: the profile's first).
        evaluate: an :class:`~hybrid_utils.experiments.Evaluator` to share (its caches) with a study.
        timer: a :class:`~hybrid_utils.study.reproduce.StageTimer` to add the seconds to.
        log: where progress lines go.
        write: write ``language_weights.csv`` and ``language_weights_comparisons.csv`` to the
            profile's results folder.

    Returns:
        ``(table, comparisons)``: one row per (protocol, weighting, seed) with
        :data:`LANGUAGE_WEIGHTS_COLUMNS`, and :func:`hybrid_utils.study.stats.compare_methods` of
        ``hybrid (uniform)`` against ``hybrid (size)`` per evaluation set.
    """
    from .stats import compare_methods
    from ..pairs import prepare_training_pairs

    profile = profile if isinstance(profile, Profile) else get_profile(profile)
    model = model or profile.models[0]
    evaluate = evaluate or Evaluator(profile, log)
    timer = timer or StageTimer()
    protocols = [(t, e) for t, e in profile.protocols if not train_sets or t in train_sets]
    if not protocols:
        raise ValueError(f"no protocol trains on {list(train_sets)}: choose from {[t for t, _ in profile.protocols]}")
    rows, results = [], {}
    for train_on, eval_on in protocols:
        for seed in seeds or profile.study_seeds:
            pairs, _, _ = prepare_training_pairs(train_config(profile, "hybrid", train_on, model, seed=seed))
            equivalent = weights_are_equivalent(pairs, profile.batch_size, profile.alpha)
            for weights in LANGUAGE_WEIGHTS:
                overrides, folder, out, reused = language_weights_run(profile, weights, train_on, model, seed,
                                                                      equivalent=equivalent)
                note = " (the study's hybrid run" + (": identical batches)" if weights != profile.language_weights
                                                     else ")") if reused else ""
                log(f"== language weights: {weights}, train on {train_on} (seed {seed}){note}")
                start = time.perf_counter()
                ensure_run(profile, "hybrid", train_on, model, log=log, seed=seed, **overrides)
                timer.add("train language weights", time.perf_counter() - start, "language weights")
                start = time.perf_counter()
                result = evaluate(str(folder), model, eval_on, out,
                                  model_name=f"{model_slug(model)} + hybrid, {weights} languages ({train_on}, seed {seed})")
                timer.add("evaluate language weights", time.perf_counter() - start, "language weights")
                rows.append({"train_on": train_on, "eval_on": eval_on, "language_weights": weights, "seed": int(seed),
                             "identical_to_size": bool(equivalent or weights == "size"),
                             **{k: result[k] for k in LANGUAGE_WEIGHTS_COLUMNS[5:]}})
                if not (reused and weights != profile.language_weights):  # an identical run has nothing to compare
                    results.setdefault((METHOD_NAMES[weights], eval_on), []).append(result)
    table = pd.DataFrame(rows, columns=LANGUAGE_WEIGHTS_COLUMNS)
    comparisons = compare_methods(results, comparisons=[(METHOD_NAMES["uniform"], METHOD_NAMES["size"])])
    if write:
        folder = Path(profile.results_dir)
        folder.mkdir(parents=True, exist_ok=True)
        table.to_csv(folder / "language_weights.csv", index=False)
        comparisons.to_csv(folder / "language_weights_comparisons.csv", index=False)
    return table, comparisons


def language_weights_results(profile: Profile | str | None = None, study: bool = False, train_sets=None,
                             log=print) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(table, comparisons)`` as written by the last :func:`language_weights_study` of ``profile``, else run now.

    What the notebooks call: after ``reproduce --study --language-weights`` they read its files;
    on a fresh clone they run the study with the profile's ``study_seeds`` (``study``) or ``seeds``.
    Delete the two CSV files to run it again.
    """
    profile = profile if isinstance(profile, Profile) else get_profile(profile)
    folder = Path(profile.results_dir)
    table, comparisons = folder / "language_weights.csv", folder / "language_weights_comparisons.csv"
    if table.exists() and comparisons.exists():
        return pd.read_csv(table), pd.read_csv(comparisons)
    seeds = profile.study_seeds if study else profile.seeds
    return language_weights_study(profile, seeds=seeds, train_sets=train_sets, log=log)


def summarize_language_weights(table: pd.DataFrame) -> pd.DataFrame:
    """Mean and sd over seeds per protocol and weighting: ``<metric>_mean`` / ``<metric>_sd`` and ``seeds``."""
    missing = [c for c in LANGUAGE_WEIGHTS_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"a language-weights table needs the columns {LANGUAGE_WEIGHTS_COLUMNS}; missing {missing} "
                         f"(read it with pandas.read_csv('results/language_weights.csv'))")
    from .stats import seed_means

    keys = ["train_on", "eval_on", "language_weights"]
    summary = seed_means(table, keys, LANGUAGE_WEIGHTS_COLUMNS[5:])
    summary.insert(len(keys) + 1, "identical_to_size",
                   table.groupby(keys, sort=False)["identical_to_size"].all().to_numpy())
    return summary


def describe_language_weights(table: pd.DataFrame, comparisons: pd.DataFrame) -> str:
    """The comparison in words, one block per evaluation set (identical runs said as such)."""
    from .stats import A_BETTER, B_BETTER, METRIC_NAMES, describe_comparisons

    blocks = []
    for (train_on, eval_on), part in table.groupby(["train_on", "eval_on"], sort=False):
        uniform = part[part["language_weights"] == "uniform"]
        seeds = part["seed"].nunique()
        head = f"Trained on {train_on}, evaluated on {eval_on} ({seeds} seed{'s' if seeds != 1 else ''}):"
        if len(uniform) and uniform["identical_to_size"].all():
            blocks.append(f"{head} every language and language pair of {train_on} fills the same number of batches, "
                          f"so uniform and size-proportional weights draw identical batches: one run, no difference.")
            continue
        rows = comparisons[comparisons["eval_on"] == eval_on]
        winners = rows[rows["verdict"].isin([A_BETTER, B_BETTER])]
        verdict = ("uniform and size-proportional weights cannot be told apart on any metric" if winners.empty else
                   "a difference passes the test on " + ", ".join(METRIC_NAMES.get(m, m) for m in winners["metric"]))
        blocks.append(f"{head} {verdict}.\n{describe_comparisons(rows)}")
    return "\n\n".join(blocks)


def plot_language_weights(comparisons: pd.DataFrame, metrics=("mono_map", "multilingual_map", "language_bias")):
    """uniform − size per evaluation set: one row of panels per evaluation set (interval over questions,
    grey band ± seed spread), from :func:`hybrid_utils.plots.plot_comparisons`. Returns the figure."""
    import matplotlib.pyplot as plt

    from ..plots import plot_comparisons

    eval_sets = list(dict.fromkeys(comparisons["eval_on"]))
    if not eval_sets:
        raise ValueError("no comparison to plot: run language_weights_study (or `python -m hybrid_utils reproduce "
                         "--study --language-weights`) first")
    fig, axes = plt.subplots(len(eval_sets), len(metrics), figsize=(5 * len(metrics), 2.2 * len(eval_sets) + 0.6),
                             squeeze=False)
    for row, eval_on in zip(axes, eval_sets):
        plot_comparisons(comparisons, eval_on, metrics=metrics, axes=row)
    fig.tight_layout()
    return fig
