"""Seed summaries and paired comparisons between training methods, corrected for the many tests of a table.

Two sources of uncertainty matter when one training method is compared with another:

* **the evaluation questions**: a method may win on average only because of the
  particular questions in XQuAD-R / MLQA-R. Both methods are evaluated on the same
  questions, so the comparison is *paired*; the unit is the question id, because the
  translations of one question are not independent.
* **the training seed**: a second training run of the same method gives a somewhat
  different model, and a table shows the mean over seeds.

:func:`paired_difference` resamples both at once (:func:`hybrid_utils.study.bootstrap.paired_bootstrap`:
seeds of each method and question ids, all language versions of an id together) and
resamples the number the table shows: the macro average over query languages of each seed,
averaged over seeds, from the per-query values of
:func:`hybrid_utils.evaluation.evaluate_lareqa` (``per_query``). A result file written before
``per_query`` existed only has ``per_question`` (means over all of an id's languages); then
the comparison is the old one over questions, labelled so in the ``estimand`` column.

A table holds ~100 such tests, and at the 5 % level some would come out "significant" by
chance alone. :func:`compare_methods` therefore adjusts the p-values of one evaluation set
with Holm's step-down method (:func:`holm`, ``p_holm``), and :func:`judge` calls a method
better only when the adjusted p-value is below 0.05 *and* the 95 % interval excludes 0 in
that method's favour. :func:`describe_comparisons` turns the rows into plain sentences.

Example::

    >>> from hybrid_utils.evaluation import load_result
    >>> from hybrid_utils.study.stats import compare_methods, describe_comparisons
    >>> results = {(m, "xquad-r"): [load_result(f"results/{m}/seed{s}/xquad-r.json") for s in (0, 1, 2)]
    ...            for m in ("hybrid", "monolingual", "cross-lingual", "adversarial")}
    >>> print(describe_comparisons(compare_methods(results)))
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from .bootstrap import SeedValues, paired_bootstrap

__all__ = ["METRICS", "METRIC_NAMES", "STUDY_COMPARISONS", "ESTIMAND_MACRO", "ESTIMAND_QUESTIONS", "seed_summary",
           "seed_means", "paired_difference", "holm", "judge", "compare_methods", "describe_comparisons"]

#: Summary metric -> (key in ``result["per_query"]`` / ``result["per_question"]``, direction): +1 higher is
#: better, -1 lower is better.
METRICS: dict[str, tuple[str, int]] = {
    "mono_map": ("mono_ap", +1),
    "cross_map": ("cross_ap", +1),
    "multilingual_map": ("multilingual_ap", +1),
    "language_bias": ("rank_distance", -1),
}

#: Readable names of the summary metrics (used by :func:`describe_comparisons`).
METRIC_NAMES: dict[str, str] = {
    "mono_map": "monolingual mAP",
    "cross_map": "cross-lingual mAP",
    "multilingual_map": "multilingual mAP",
    "language_bias": "rank distance",
}

#: Verdicts of :func:`judge`.
A_BETTER, B_BETTER = "a better", "b better"
NO_DIFFERENCE = "no measurable difference"
ONE_SEED = "no measurable difference (one seed)"

#: What a comparison resamples (column ``estimand``): the table's macro, or (old result files) the per-question mean.
ESTIMAND_MACRO = "macro over query languages"
ESTIMAND_QUESTIONS = "mean over questions (old result file)"

_COLUMNS = ["eval_on", "metric", "method_a", "method_b", "diff", "ci_low", "ci_high", "p_value", "p_holm",
            "n_questions", "n_seeds_a", "n_seeds_b", "a_seed_sd", "b_seed_sd", "seed_spread", "estimand", "verdict"]


# --------------------------------------------------------------------------------------
# Seeds
# --------------------------------------------------------------------------------------
def seed_summary(frame: pd.DataFrame, group_by: Sequence[str] = ("model", "method", "train_on", "eval_on"),
                 metrics: Iterable[str] | None = None) -> pd.DataFrame:
    """Mean and standard deviation over training seeds.

    Args:
        frame: One row per (run, seed) with the grouping columns and one column per metric
            (e.g. ``mono_map`` of each run's result).
        group_by: Columns that identify a run apart from its seed. Columns of ``group_by``
            that ``frame`` does not have are ignored (at least one must exist).
        metrics: Metric columns to summarise. Defaults to the keys of :data:`METRICS`
            present in ``frame``.

    Returns:
        pandas.DataFrame: One row per group: the group columns, the mean of each metric
        (same column name; NaN values are skipped), ``<metric>_sd`` (sample standard
        deviation, ``ddof=1``; NaN for a group with one seed) and ``n_seeds`` (rows in the group).
    """
    keys = [c for c in group_by if c in frame.columns]
    if not keys:
        raise ValueError(f"frame has none of the grouping columns {list(group_by)}")
    metrics = [m for m in METRICS if m in frame.columns] if metrics is None else list(metrics)
    missing = [m for m in metrics if m not in frame.columns]
    if missing:
        raise ValueError(f"frame has no column(s) {missing}")
    grouped = frame.groupby(keys, sort=False, dropna=False)
    out = grouped[metrics].mean()
    sd = grouped[metrics].std(ddof=1)
    columns = []
    for m in metrics:
        columns += [m, f"{m}_sd"]
        out[f"{m}_sd"] = sd[m]
    out = out[columns]
    out["n_seeds"] = grouped.size()
    return out.reset_index()


def seed_means(frame: pd.DataFrame, group_by: Sequence[str], metrics: Iterable[str], seed_column: str = "seed",
               sort: bool = False) -> pd.DataFrame:
    """:func:`seed_summary` laid out for a sweep's table: the group columns, ``seeds`` (distinct values of
    ``seed_column``), then ``<metric>_mean`` and ``<metric>_sd`` per metric; ``sort`` orders the groups."""
    metrics = list(metrics)
    summary = seed_summary(frame, group_by=group_by, metrics=metrics)
    summary["seeds"] = frame.groupby(list(group_by), sort=False, dropna=False)[seed_column].nunique().to_numpy()
    summary = summary.rename(columns={m: f"{m}_mean" for m in metrics})
    summary = summary[[*group_by, "seeds", *[f"{m}_{stat}" for m in metrics for stat in ("mean", "sd")]]]
    return summary.sort_values(list(group_by), ignore_index=True) if sort else summary


# --------------------------------------------------------------------------------------
# Paired comparison
# --------------------------------------------------------------------------------------
def _per_question_key(metric: str) -> str:
    if metric in METRICS:
        return METRICS[metric][0]
    if metric in {key for key, _ in METRICS.values()}:
        return metric
    raise ValueError(f"unknown metric {metric!r}; use one of {list(METRICS)} or their per-question keys")


def _seed_table(results: Sequence[Mapping], key: str, side: str) -> pd.DataFrame:
    """Question id x seed table of one per-question value (NaN where missing)."""
    if not results:
        raise ValueError(f"no results for method {side}")
    columns = []
    for seed, result in enumerate(results):
        per_question = result.get("per_question") if isinstance(result, Mapping) else None
        if not per_question or key not in per_question:
            raise ValueError(f"result {seed} of method {side} has no per_query or per_question[{key!r}]; "
                             "re-run evaluate_lareqa")
        values = pd.to_numeric(pd.Series(per_question[key], index=per_question["question_id"], dtype=object),
                               errors="coerce")
        columns.append(values.rename(seed))
    return pd.concat(columns, axis=1)


def _sd(values: np.ndarray) -> float:
    values = values[np.isfinite(values)]
    return float(np.std(values, ddof=1)) if values.size >= 2 else math.nan


def _has_per_query(results: Sequence[Mapping], key: str) -> bool:
    return bool(results) and all(isinstance(r, Mapping) and isinstance(r.get("per_query"), Mapping)
                                 and key in r["per_query"] for r in results)


def _question_means(a_results: Sequence[Mapping], b_results: Sequence[Mapping], key: str) -> tuple:
    """Old result files: per side and seed the per-question values on the ids both sides have (one pseudo-language,
    so the bootstrap still resamples seeds, then questions), and each seed's mean over questions (for the seed sd)."""
    a_table, b_table = _seed_table(a_results, key, "a"), _seed_table(b_results, key, "b")
    ids = a_table.index[a_table.notna().any(axis=1) & b_table.reindex(a_table.index).notna().any(axis=1)]
    one_group = np.full(len(ids), "all")

    def seeds(table: pd.DataFrame) -> list:
        return [SeedValues(ids.astype(str).to_numpy(), one_group, table.loc[ids, c].to_numpy(dtype=float))
                for c in table.columns]

    return (seeds(a_table), seeds(b_table), a_table.mean(axis=0).to_numpy(dtype=float),
            b_table.mean(axis=0).to_numpy(dtype=float))


def paired_difference(a_results: Sequence[Mapping], b_results: Sequence[Mapping], metric: str,
                      n_resamples: int = 4000, confidence: float = 0.95, random_state: int = 0) -> dict:
    """Paired comparison of two methods evaluated on the same questions (``a - b``), seeds and questions resampled.

    With ``per_query`` in every result (estimand :data:`ESTIMAND_MACRO`): the difference of the
    table's numbers, i.e. of the means over seeds of each seed's macro average over query
    languages, with :func:`hybrid_utils.study.bootstrap.paired_bootstrap` (seeds of each side and
    question ids resampled in every replicate). Otherwise (:data:`ESTIMAND_QUESTIONS`, result
    files from before ``per_query``): the mean per-question difference of the seed-averaged
    ``per_question`` values on the ids both sides have, seeds and questions resampled the same
    way; that is not the table's macro on unbalanced data (MLQA-R).

    Returns:
        dict: ``diff``, ``ci_low``, ``ci_high`` (percentile interval), ``p_value`` (two-sided,
        normal approximation from the bootstrap sd: no ``1 / n_resamples`` floor, see
        :func:`~hybrid_utils.study.bootstrap.paired_bootstrap`), ``n_questions`` (paired ids),
        ``n_seeds_a``, ``n_seeds_b``, ``a_seed_sd``, ``b_seed_sd`` (sd over seeds of each
        seed's summary value, ``ddof=1``, NaN with one seed), ``seed_spread`` (``sqrt(a_seed_sd**2
        + b_seed_sd**2)``, a NaN side counted as 0, NaN if both are NaN; information only) and
        ``estimand``.

    Args:
        a_results, b_results: :func:`hybrid_utils.evaluation.evaluate_lareqa` results of
            methods a and b, one per training seed, on the same evaluation set.
        metric: A key of :data:`METRICS` (``"multilingual_map"``) or a per-query key (``"multilingual_ap"``).
        n_resamples: Bootstrap replicates. Defaults to 4000.
        confidence: Confidence level of the interval. Defaults to 0.95.
        random_state: Seed of the resampling. Defaults to 0.

    Raises:
        ValueError: For an unknown metric, a result without ``per_query`` / ``per_question``
            or fewer than two paired questions.
    """
    key = _per_question_key(metric)
    if _has_per_query(a_results, key) and _has_per_query(b_results, key):
        estimand = ESTIMAND_MACRO
        a_seeds = [SeedValues.from_result(r, key) for r in a_results]
        b_seeds = [SeedValues.from_result(r, key) for r in b_results]
        boot = paired_bootstrap(a_seeds, b_seeds, n_resamples, confidence, random_state)
        a_seed_values, b_seed_values = boot.a_macros, boot.b_macros
    else:
        estimand = ESTIMAND_QUESTIONS
        a_seeds, b_seeds, a_seed_values, b_seed_values = _question_means(a_results, b_results, key)
        boot = paired_bootstrap(a_seeds, b_seeds, n_resamples, confidence, random_state)
    a_seed_sd, b_seed_sd = _sd(np.asarray(a_seed_values)), _sd(np.asarray(b_seed_values))
    sds = [s for s in (a_seed_sd, b_seed_sd) if np.isfinite(s)]
    return {"diff": boot.diff, "ci_low": boot.ci_low, "ci_high": boot.ci_high, "p_value": boot.p_value,
            "n_questions": boot.n_questions, "n_seeds_a": len(a_results), "n_seeds_b": len(b_results),
            "a_seed_sd": a_seed_sd, "b_seed_sd": b_seed_sd,
            "seed_spread": float(math.sqrt(sum(s * s for s in sds))) if sds else math.nan, "estimand": estimand}


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (NaN stays NaN and does not count as a test).

    Written out because statsmodels (``multipletests(method="holm")``) is not a dependency of
    the project and scipy has no Holm correction. Sorted ascending, the i-th of m p-values
    (0-based) becomes ``min(1, max over j <= i of (m - j) p_(j))``.
    """
    p = np.asarray(p_values, dtype=np.float64)
    adjusted = np.full(p.shape, np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    order = finite[np.argsort(p[finite], kind="stable")]
    steps = (order.size - np.arange(order.size)) * p[order]
    adjusted[order] = np.minimum(1.0, np.maximum.accumulate(steps))
    return adjusted


def _float(row: Mapping, key: str) -> float:
    value = row.get(key) if hasattr(row, "get") else None
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def judge(row: Mapping, direction: int = +1, alpha: float = 0.05) -> str:
    """Verdict on one comparison (a row of :func:`compare_methods` or a :func:`paired_difference` dict).

    A method is called better only when both agree: the p-value is below ``alpha`` (the
    Holm-adjusted ``p_holm`` when the row has one: a table makes ~100 tests, and without the
    correction about 5 of them would pass by chance) **and** the interval of ``diff = a - b``
    excludes 0 on that method's side. Seed noise is inside both (the bootstrap resamples the
    seeds), so no separate seed-spread rule is needed; with one seed on *both* sides
    (``seed_spread`` NaN) it cannot be estimated, and a trained method is not called better.

    Args:
        row: Has ``diff``, ``ci_low``, ``ci_high`` and optionally ``p_value``, ``p_holm``, ``seed_spread``.
        direction: +1 if higher is better (mAP), -1 if lower is better (rank distance).
        alpha: Significance level. Defaults to 0.05.

    Returns:
        str: ``"a better"``, ``"b better"``, ``"no measurable difference"``, or ``"no measurable
        difference (one seed)"`` when the test passes but each side has a single training run.
    """
    if direction not in (1, -1):
        raise ValueError("direction must be +1 (higher is better) or -1 (lower is better)")
    diff, low, high = (_float(row, k) for k in ("diff", "ci_low", "ci_high"))
    side = 1 if low > 0 else -1 if high < 0 else 0  # NaN limits compare False: side 0
    if side == 0 or diff * side <= 0:
        return NO_DIFFERENCE
    p_value = _float(row, "p_holm")
    p_value = p_value if np.isfinite(p_value) else _float(row, "p_value")
    has_p = any(k in row for k in ("p_holm", "p_value"))
    if has_p and not p_value < alpha:
        return NO_DIFFERENCE
    if "seed_spread" in row and not np.isfinite(_float(row, "seed_spread")):
        return ONE_SEED
    return A_BETTER if side * direction > 0 else B_BETTER


# --------------------------------------------------------------------------------------
# All comparisons
# --------------------------------------------------------------------------------------
#: the comparisons of the study: (method_a, method_b), reported as a − b
STUDY_COMPARISONS = (("hybrid", "monolingual"), ("hybrid", "cross-lingual"), ("hybrid", "adversarial"),
                     ("adversarial", "monolingual"))


def compare_methods(results: Mapping[tuple[str, str], Sequence[Mapping]],
                    comparisons: Sequence[tuple[str, str]] = STUDY_COMPARISONS,
                    metrics: Mapping[str, tuple[str, int]] = METRICS, untrained: Sequence[str] = ("zero-shot",),
                    alpha: float = 0.05, **kw) -> pd.DataFrame:
    """Run :func:`paired_difference` for every comparison, evaluation set and metric; Holm; :func:`judge`.

    The family of the Holm correction is one evaluation set: all rows of the returned table
    with the same ``eval_on`` (every comparison and metric on it).

    Args:
        results: ``{(method, eval_on): [result dict per seed]}``.
        comparisons: ``(method_a, method_b)`` pairs; a pair is skipped for an ``eval_on``
            where either method has no results.
        metrics: ``{summary metric: (per-query key, direction)}``. Defaults to :data:`METRICS`.
        untrained: Methods without a training seed. When both sides are one of them or a
            post-processing of one (``"zero-shot + center"``), their seed spread is 0, not unknown:
            the same fixed model, so only the questions are a source of noise.
        alpha: Level of the Holm-adjusted test. Defaults to 0.05.
        **kw: Passed to :func:`paired_difference` (``n_resamples``, ``confidence``, ``random_state``).

    Returns:
        pandas.DataFrame: One row per (eval_on, comparison, metric) with the columns ``eval_on,
        metric, method_a, method_b, diff, ci_low, ci_high, p_value, p_holm, n_questions,
        n_seeds_a, n_seeds_b, a_seed_sd, b_seed_sd, seed_spread, estimand, verdict``
        (``diff = a - b``; ``verdict`` from :func:`judge`).
    """
    rows = []
    for eval_on in dict.fromkeys(e for _, e in results):
        for method_a, method_b in comparisons:
            a_results, b_results = results.get((method_a, eval_on)), results.get((method_b, eval_on))
            if not a_results or not b_results:
                continue
            fixed = all(m.split(" + ")[0] in untrained for m in (method_a, method_b))
            for metric, (key, _) in metrics.items():
                row = paired_difference(a_results, b_results, key, **kw)
                if fixed:
                    row.update(a_seed_sd=0.0, b_seed_sd=0.0, seed_spread=0.0)
                rows.append({"eval_on": eval_on, "metric": metric, "method_a": method_a, "method_b": method_b, **row})
    frame = pd.DataFrame(rows, columns=_COLUMNS).astype({"p_holm": float})
    for _, family in frame.groupby("eval_on", sort=False):
        frame.loc[family.index, "p_holm"] = holm(family["p_value"].to_numpy(dtype=float))
    frame["verdict"] = [judge(row, metrics[row["metric"]][1], alpha) for row in frame.to_dict("records")]
    return frame


def _number(value: float, digits: int, sign: bool = False) -> str:
    if value is None or not np.isfinite(value):
        return "n/a"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def _p_text(value) -> str:
    """A p-value for a sentence: below 1e-6 a normal approximation's tail says nothing more precise than that."""
    value = math.nan if value is None else float(value)
    if not np.isfinite(value):
        return "n/a"
    return "< 1e-6" if value < 1e-6 else f"{value:.1e}" if value < 1e-4 else f"{value:.4f}"


def describe_comparisons(frame: pd.DataFrame) -> str:
    """One plain-language bullet per row of :func:`compare_methods`.

    Example: ``- xquad-r, multilingual mAP: hybrid − monolingual = +0.016 [0.012, 0.020],
    p = 2.1e-06, Holm p = 9.0e-05, seed spread 0.004: hybrid better``. mAP differences have 3
    decimals, rank distances 2; "a better" / "b better" are replaced by the method's name. A
    row of an old result file says "(mean over questions, old result file)"; a table written
    before ``p_holm`` existed is described without it.
    """
    lines = []
    for row in frame.to_dict("records"):
        digits = 2 if row["metric"] == "language_bias" else 3
        name = METRIC_NAMES.get(row["metric"], row["metric"])
        verdict = {A_BETTER: f"{row['method_a']} better", B_BETTER: f"{row['method_b']} better"}.get(
            row["verdict"], row["verdict"])
        spread = row["seed_spread"]
        spread_text = f"seed spread {_number(spread, digits)}" if np.isfinite(spread) else "one seed"
        old = " (mean over questions, old result file)" if row.get("estimand") == ESTIMAND_QUESTIONS else ""
        holm_text = f", Holm p = {_p_text(row['p_holm'])}" if "p_holm" in row else ""
        lines.append(f"- {row['eval_on']}, {name}: {row['method_a']} − {row['method_b']} = "
                     f"{_number(row['diff'], digits, sign=True)} [{_number(row['ci_low'], digits)}, "
                     f"{_number(row['ci_high'], digits)}]{old}, p = {_p_text(row['p_value'])}{holm_text}, "
                     f"{spread_text}: {verdict}")
    return "\n".join(lines)
