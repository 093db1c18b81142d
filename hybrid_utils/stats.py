"""Seed summaries and paired significance tests between training methods.

Two sources of uncertainty matter when one training method is compared with another:

* **the evaluation questions**: a method may win on average only because of the
  particular questions in XQuAD-R / MLQA-R. Both methods are evaluated on the same
  questions, so a *paired* test on the per-question differences is the right tool
  (:func:`paired_difference`, with the per-question values that
  :func:`hybrid_utils.evaluation.evaluate_lareqa` stores under ``per_question``). The
  unit is the question id: the translations of one question are not independent.
* **the training seed**: a second training run of the same method gives a somewhat
  different model. The spread over seeds (:func:`seed_summary`, ``seed_spread`` in
  :func:`paired_difference`) says how much of a difference could be luck of the run.

:func:`judge` calls a method better only when both agree: the bootstrap interval of the
mean per-question difference excludes 0 *and* the difference is larger than the seed
spread. :func:`compare_methods` runs the standard comparisons and
:func:`describe_comparisons` turns them into plain sentences.

All statistics come from :mod:`scipy.stats` (``bootstrap``, ``permutation_test``); nothing
here is a hand-written test.

Example::

    >>> from hybrid_utils.evaluation import load_result
    >>> from hybrid_utils.stats import compare_methods, describe_comparisons
    >>> results = {(m, "xquad-r"): [load_result(f"results/{m}/seed{s}/xquad-r.json") for s in (0, 1, 2)]
    ...            for m in ("hybrid", "monolingual", "cross-lingual", "adversarial")}
    >>> print(describe_comparisons(compare_methods(results)))
"""

from __future__ import annotations

import math
import warnings
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

__all__ = ["METRICS", "METRIC_NAMES", "STUDY_COMPARISONS", "seed_summary", "seed_means", "paired_difference", "judge", "compare_methods",
           "describe_comparisons"]

#: Summary metric -> (key in ``result["per_question"]``, direction): +1 higher is better, -1 lower is better.
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

_COLUMNS = ["eval_on", "metric", "method_a", "method_b", "diff", "ci_low", "ci_high", "p_value",
            "n_questions", "a_seed_sd", "b_seed_sd", "seed_spread", "verdict"]


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
            raise ValueError(f"result {seed} of method {side} has no per_question[{key!r}]; re-run evaluate_lareqa")
        values = pd.to_numeric(pd.Series(per_question[key], index=per_question["question_id"], dtype=object),
                               errors="coerce")
        columns.append(values.rename(seed))
    return pd.concat(columns, axis=1)


def _sd(values: np.ndarray) -> float:
    values = values[np.isfinite(values)]
    return float(np.std(values, ddof=1)) if values.size >= 2 else math.nan


def paired_difference(a_results: Sequence[Mapping], b_results: Sequence[Mapping], metric: str,
                      n_resamples: int = 9999, confidence: float = 0.95, random_state: int = 0) -> dict:
    """Paired comparison of two methods evaluated on the same questions (``a - b``).

    Per question id the per-question value (``result["per_question"]``) is averaged over
    the seeds of each method; ids with a value on both sides are kept, and ``d = a - b``
    is the per-question difference.

    * ``diff``: the mean of ``d`` (a minus b, in the metric's own units).
    * ``ci_low``, ``ci_high``: ``scipy.stats.bootstrap`` interval of the mean of ``d``
      (BCa; the percentile interval if BCa is undefined, and ``diff`` itself when all ``d``
      are equal).
    * ``p_value``: two-sided ``scipy.stats.permutation_test`` with
      ``permutation_type="samples"`` on the paired values, i.e. a sign-flip test of
      ``mean(d) = 0`` (exact when ``2**n <= n_resamples``). It tests the same statistic that
      ``diff`` and the interval report, whereas the Wilcoxon signed-rank test would test a
      pseudo-median and has to drop or rank the many exact zero differences of AP values.
    * ``n_questions``: number of paired ids.
    * ``a_seed_sd``, ``b_seed_sd``: standard deviation over seeds (``ddof=1``) of each
      method's summary value, the mean of the per-question values of one seed (NaN with
      one seed); ``seed_spread = sqrt(a_seed_sd**2 + b_seed_sd**2)``, the seed noise of a
      difference of the two; a NaN side counts as 0, and the spread is NaN only if both
      sides have one seed.

    Args:
        a_results, b_results: The :func:`hybrid_utils.evaluation.evaluate_lareqa` results of
            methods a and b, one per training seed, on the same evaluation set.
        metric: A key of :data:`METRICS` (``"multilingual_map"``) or a per-question key
            (``"multilingual_ap"``).
        n_resamples: Resamples of the bootstrap and the permutation test. Defaults to 9999.
        confidence: Confidence level of the interval. Defaults to 0.95.
        random_state: Seed of both resampling procedures. Defaults to 0.

    Returns:
        dict: ``diff``, ``ci_low``, ``ci_high``, ``p_value``, ``n_questions``, ``a_seed_sd``,
        ``b_seed_sd``, ``seed_spread`` (floats, ``n_questions`` an int).

    Raises:
        ValueError: For an unknown metric, a result without ``per_question`` or fewer than
            two paired questions.
    """
    key = _per_question_key(metric)
    a_table, b_table = _seed_table(a_results, key, "a"), _seed_table(b_results, key, "b")
    a_seed_sd = _sd(a_table.mean(axis=0).to_numpy(dtype=float))
    b_seed_sd = _sd(b_table.mean(axis=0).to_numpy(dtype=float))
    paired = pd.concat([a_table.mean(axis=1).rename("a"), b_table.mean(axis=1).rename("b")], axis=1).dropna()
    if len(paired) < 2:
        raise ValueError(f"only {len(paired)} question(s) have a {key} value for both methods; need at least 2")
    a, b = paired["a"].to_numpy(dtype=float), paired["b"].to_numpy(dtype=float)
    d = a - b
    diff = float(d.mean())

    if np.ptp(d) <= 1e-12 * max(1.0, float(np.abs(d).max())):  # all differences equal (up to rounding)
        ci_low = ci_high = diff
    else:
        ci_low = ci_high = math.nan
        for method in ("BCa", "percentile"):
            with warnings.catch_warnings():  # BCa is undefined for (nearly) degenerate d: percentile instead
                warnings.simplefilter("ignore")
                ci = stats.bootstrap((d,), np.mean, n_resamples=n_resamples, confidence_level=confidence,
                                     method=method, random_state=random_state, vectorized=True,
                                     batch=max(1, 2_000_000 // d.size)).confidence_interval
            ci_low, ci_high = float(ci.low), float(ci.high)
            if np.isfinite(ci_low) and np.isfinite(ci_high):
                break

    def mean_difference(x, y, axis=-1):
        return np.mean(x - y, axis=axis)

    p_value = float(stats.permutation_test((a, b), mean_difference, permutation_type="samples", vectorized=True,
                                           n_resamples=n_resamples, alternative="two-sided",
                                           random_state=random_state,
                                           batch=max(1, 2_000_000 // d.size)).pvalue)
    sds = [s for s in (a_seed_sd, b_seed_sd) if np.isfinite(s)]
    seed_spread = float(math.sqrt(sum(s * s for s in sds))) if sds else math.nan
    return {"diff": diff, "ci_low": ci_low, "ci_high": ci_high, "p_value": p_value, "n_questions": int(d.size),
            "a_seed_sd": a_seed_sd, "b_seed_sd": b_seed_sd, "seed_spread": seed_spread}


def judge(row: Mapping, direction: int = +1, alpha: float = 0.05) -> str:
    """Verdict on one comparison (a row of :func:`compare_methods` or a :func:`paired_difference` dict).

    A method is called better only when the confidence interval of ``diff = a - b``
    excludes 0, the permutation test agrees (``p_value < alpha``; with few questions the BCa
    interval and the permutation test can disagree, and then neither is trusted) **and**
    ``|diff|`` is larger than the seed spread (a difference smaller than the run-to-run
    variation of training could be luck of the seed).

    Args:
        row: Has ``diff``, ``ci_low``, ``ci_high`` and ``seed_spread``.
        direction: +1 if higher is better (mAP), -1 if lower is better (rank distance).

    Returns:
        str: ``"a better"`` or ``"b better"``; ``"no measurable difference"`` when the
        interval contains 0 or ``|diff| <= seed_spread``; ``"no measurable difference (one
        seed)"`` when the interval excludes 0 but the seed spread is unknown (NaN: one
        seed per method), since a real difference cannot then be told from seed luck.
    """
    if direction not in (1, -1):
        raise ValueError("direction must be +1 (higher is better) or -1 (lower is better)")
    diff, low, high, spread = (float(row[k]) for k in ("diff", "ci_low", "ci_high", "seed_spread"))
    if not (np.isfinite(low) and np.isfinite(high)) or low <= 0 <= high:
        return NO_DIFFERENCE
    p_value = row.get("p_value") if hasattr(row, "get") else None
    if p_value is not None and np.isfinite(float(p_value)) and float(p_value) >= alpha:
        return NO_DIFFERENCE
    if not np.isfinite(spread):
        return ONE_SEED
    if abs(diff) <= spread:
        return NO_DIFFERENCE
    return A_BETTER if diff * direction > 0 else B_BETTER


# --------------------------------------------------------------------------------------
# All comparisons
# --------------------------------------------------------------------------------------
#: the comparisons of the study: (method_a, method_b), reported as a − b
STUDY_COMPARISONS = (("hybrid", "monolingual"), ("hybrid", "cross-lingual"), ("hybrid", "adversarial"),
                     ("adversarial", "monolingual"))


def compare_methods(results: Mapping[tuple[str, str], Sequence[Mapping]],
                    comparisons: Sequence[tuple[str, str]] = STUDY_COMPARISONS,
                    metrics: Mapping[str, tuple[str, int]] = METRICS, untrained: Sequence[str] = ("zero-shot",),
                    **kw) -> pd.DataFrame:
    """Run :func:`paired_difference` and :func:`judge` for every comparison, evaluation set and metric.

    Args:
        results: ``{(method, eval_on): [result dict per seed]}``.
        comparisons: ``(method_a, method_b)`` pairs; a pair is skipped for an ``eval_on``
            where either method has no results.
        metrics: ``{summary metric: (per-question key, direction)}``. Defaults to :data:`METRICS`.
        untrained: Methods without a training seed. When both sides are one of them or a
            post-processing of one (``"zero-shot + center"``), their seed spread is 0, not unknown:
            the same fixed model, so only the questions are a source of noise.
        **kw: Passed to :func:`paired_difference` (``n_resamples``, ``confidence``, ``random_state``).

    Returns:
        pandas.DataFrame: One row per (eval_on, comparison, metric) with the columns
        ``eval_on, metric, method_a, method_b, diff, ci_low, ci_high, p_value, n_questions,
        a_seed_sd, b_seed_sd, seed_spread, verdict`` (``diff = a - b``; ``verdict`` from
        :func:`judge`: ``"a better"``, ``"b better"``, ...).
    """
    rows = []
    for eval_on in dict.fromkeys(e for _, e in results):
        for method_a, method_b in comparisons:
            a_results, b_results = results.get((method_a, eval_on)), results.get((method_b, eval_on))
            if not a_results or not b_results:
                continue
            fixed = all(m.split(" + ")[0] in untrained for m in (method_a, method_b))
            for metric, (key, direction) in metrics.items():
                row = paired_difference(a_results, b_results, key, **kw)
                if fixed:
                    row.update(a_seed_sd=0.0, b_seed_sd=0.0, seed_spread=0.0)
                rows.append({"eval_on": eval_on, "metric": metric, "method_a": method_a, "method_b": method_b,
                             **row, "verdict": judge(row, direction)})
    return pd.DataFrame(rows, columns=_COLUMNS)


def _number(value: float, digits: int, sign: bool = False) -> str:
    if value is None or not np.isfinite(value):
        return "n/a"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def describe_comparisons(frame: pd.DataFrame) -> str:
    """One plain-language bullet per row of :func:`compare_methods`.

    Example: ``- xquad-r, multilingual mAP: hybrid − monolingual = +0.016 [0.012, 0.020],
    p = 0.0001, seed spread 0.004: hybrid better``. mAP differences have 3 decimals, rank
    distances 2; "a better" / "b better" are replaced by the method's name.
    """
    lines = []
    for row in frame.to_dict("records"):
        digits = 2 if row["metric"] == "language_bias" else 3
        name = METRIC_NAMES.get(row["metric"], row["metric"])
        verdict = {A_BETTER: f"{row['method_a']} better", B_BETTER: f"{row['method_b']} better"}.get(
            row["verdict"], row["verdict"])
        spread = row["seed_spread"]
        spread_text = f"seed spread {_number(spread, digits)}" if np.isfinite(spread) else "one seed"
        lines.append(f"- {row['eval_on']}, {name}: {row['method_a']} − {row['method_b']} = "
                     f"{_number(row['diff'], digits, sign=True)} [{_number(row['ci_low'], digits)}, "
                     f"{_number(row['ci_high'], digits)}], p = {_number(row['p_value'], 4)}, {spread_text}: {verdict}")
    return "\n".join(lines)
