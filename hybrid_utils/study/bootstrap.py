"""The table's estimand and a paired two-level bootstrap over training seeds and questions.

A result table shows, per method, the mean over training seeds of a macro average: the mean
over query languages X of the mean over X's queries (``mono_map``, ``multilingual_map``, ...
of :func:`hybrid_utils.evaluation.evaluate_lareqa`). :func:`macro_over_languages` computes that
number from the per-query values a result stores under ``per_query``, and
:func:`paired_bootstrap` resamples it.

Two sources of noise make a difference between two methods uncertain, and the bootstrap
resamples both in every replicate:

* **training seeds**: each side's seeds are drawn with replacement (k of k, m of m);
* **questions**: question ids are drawn with replacement, one draw shared by both methods
  (paired: both were evaluated on the same questions), and all language versions of a drawn id
  come along (cluster bootstrap: the translations of one question are not independent).

The replicate statistic is the macro of method a minus the macro of method b, each averaged
over the drawn seeds; the language means are recomputed from the drawn rows (a ratio of
weighted sums), so a replicate is the table's own statistic on resampled data.

``scipy.stats.bootstrap`` resamples the observations of each sample independently (or the
paired rows together); it cannot draw clusters of rows, let alone seeds and clusters at two
levels with one cluster draw shared by both samples. That is why the loop is written here, in
numpy (a replicate is one matrix product: ~100 comparisons of 4,000 replicates on 1,190
XQuAD-R ids take seconds); ``tests/test_stats.py`` checks it against ``scipy.stats.bootstrap``
on a case scipy can do (one seed per side, balanced data).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
from scipy import stats

__all__ = ["SeedValues", "BootstrapResult", "macro_over_languages", "paired_bootstrap"]

#: Replicates drawn at a time (bounds memory to ``_BATCH * n_ids`` floats).
_BATCH = 1000


@dataclass(frozen=True)
class SeedValues:
    """The per-query values of one method and one training seed: three aligned 1-D arrays.

    ``values`` may hold NaN (no value: skipped, like ``None`` in ``per_query``).
    """

    question_ids: np.ndarray
    languages: np.ndarray
    values: np.ndarray

    @classmethod
    def from_table(cls, table: dict, key: str, ids: Sequence[str] | None = None) -> "SeedValues":
        """From a ``per_query`` dict (``language``, ``key`` and ``question_id``, or ``question``: indices into
        ``ids``, the result's ``per_question["question_id"]``); ``None`` becomes NaN."""
        if "question_id" in table:
            question_ids = np.asarray(table["question_id"], dtype=str)
        else:
            question_ids = np.asarray(ids, dtype=str)[np.asarray(table["question"], dtype=int)]
        return cls(question_ids, np.asarray(table["language"], dtype=str),
                   np.array([np.nan if v is None else v for v in table[key]], dtype=np.float64))

    @classmethod
    def from_result(cls, result: Mapping, key: str) -> "SeedValues":
        """From an evaluation result (its ``per_query``, with ids from its ``per_question``)."""
        return cls.from_table(result["per_query"], key, (result.get("per_question") or {}).get("question_id"))


@dataclass(frozen=True)
class BootstrapResult:
    """The estimate, its percentile interval, the normal-approximation p-value and the replicates."""

    diff: float
    ci_low: float
    ci_high: float
    p_value: float
    sd: float
    n_questions: int
    a_macros: np.ndarray
    b_macros: np.ndarray
    replicates: np.ndarray


def macro_over_languages(values: Sequence[float], languages: Sequence[str]) -> float:
    """Mean over languages of the mean over that language's finite values (NaN / None skipped).

    A language without any finite value is left out, as :func:`hybrid_utils.evaluation.evaluate_lareqa`
    leaves out a setting without questions. With ``per_query`` arrays this reproduces the stored
    ``mono_map``, ``cross_map``, ``multilingual_map`` and ``language_bias``; NaN without any value.
    """
    values = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    languages = np.asarray(languages, dtype=str)
    if values.shape != languages.shape:
        raise ValueError(f"{values.size} values but {languages.size} languages")
    means = [values[(languages == lang) & np.isfinite(values)].mean() for lang in np.unique(languages)
             if np.isfinite(values[languages == lang]).any()]
    return float(np.mean(means)) if means else float("nan")


def _sums_and_counts(seeds: Sequence[SeedValues], ids: np.ndarray, languages: np.ndarray) -> tuple[np.ndarray, ...]:
    """``(n_ids, n_seeds * n_languages)`` sums and counts of each seed's finite values per (id, language)."""
    sums = np.zeros((ids.size, len(seeds) * languages.size))
    counts = np.zeros_like(sums)
    for s, seed in enumerate(seeds):
        ok = np.isfinite(seed.values)
        row = np.searchsorted(ids, seed.question_ids[ok])
        column = s * languages.size + np.searchsorted(languages, seed.languages[ok])
        np.add.at(sums, (row, column), seed.values[ok])
        np.add.at(counts, (row, column), 1.0)
    return sums, counts


def _macros(weights: np.ndarray, sums: np.ndarray, counts: np.ndarray, n_languages: int) -> np.ndarray:
    """``(n_replicates, n_seeds)`` macro per seed when id ``i`` is drawn ``weights[:, i]`` times."""
    with np.errstate(invalid="ignore", divide="ignore"):
        means = (weights @ sums) / (weights @ counts)  # NaN for a language with no drawn value
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a replicate without any value: NaN
        return np.nanmean(means.reshape(len(weights), -1, n_languages), axis=2)


def _draw_ids(rng: np.random.Generator, n_replicates: int, n_ids: int) -> np.ndarray:
    """``(n_replicates, n_ids)`` counts: how often each id is drawn in ``n_ids`` draws with replacement."""
    draws = rng.integers(0, n_ids, size=(n_replicates, n_ids)) + n_ids * np.arange(n_replicates)[:, None]
    return np.bincount(draws.ravel(), minlength=n_replicates * n_ids).reshape(n_replicates, n_ids).astype(np.float64)


def _seed_mean(rng: np.random.Generator, macros: np.ndarray) -> np.ndarray:
    """Per replicate, the mean of the macros of ``n_seeds`` seeds drawn with replacement."""
    drawn = rng.integers(0, macros.shape[1], size=macros.shape)
    return np.take_along_axis(macros, drawn, axis=1).mean(axis=1)


def _normal_p_value(diff: float, sd: float) -> float:
    """Two-sided p of ``diff = 0`` from ``z = diff / sd`` (see :func:`paired_bootstrap`)."""
    if not np.isfinite(sd):
        return float("nan")
    if sd <= 1e-12 * max(1.0, abs(diff)):  # no variation at all: exact answer
        return 1.0 if abs(diff) <= 1e-12 else 0.0
    return float(2 * stats.norm.sf(abs(diff) / sd))


def paired_bootstrap(a_seeds: Sequence[SeedValues], b_seeds: Sequence[SeedValues], n_resamples: int = 4000,
                     confidence: float = 0.95, random_state: int = 0) -> BootstrapResult:
    """Two-level paired bootstrap of ``mean over seeds of macro(a) - mean over seeds of macro(b)``.

    Each replicate draws a's seeds and b's seeds with replacement and one set of question ids
    (shared by a and b, all language rows of an id together), then recomputes every drawn
    seed's macro over query languages on the drawn ids (see the module docstring).

    * ``diff``: the estimate on the data as they are: the difference of the table's means over seeds.
    * ``ci_low``, ``ci_high``: percentile interval of the replicates.
    * ``p_value``: two-sided, ``2 * (1 - Phi(|diff| / sd))`` with ``sd`` the replicates' standard
      deviation. A p-value read off the replicates (the share beyond 0) cannot go below
      ``1 / n_resamples``; with ~100 tests in a table the Holm correction needs p-values near
      0.05 / 100 and below, so that floor would decide the verdicts. A mean over ~1,000
      question ids is close to normal (central limit theorem), which the normal approximation
      uses; it agrees with the percentile interval, whose limits are ``diff -/+ 1.96 sd`` then.
    * With one seed a side adds no seed noise: the seed level cannot be estimated from one run
      (and with 2-3 seeds it is estimated roughly: the bootstrap of a mean of k values
      underestimates its variance by the factor ``(k - 1) / k``).

    Args:
        a_seeds, b_seeds: One :class:`SeedValues` per training seed of method a / b.
        n_resamples: Bootstrap replicates. Defaults to 4000.
        confidence: Level of the interval. Defaults to 0.95.
        random_state: Seed of the resampling.

    Returns:
        BootstrapResult: also ``n_questions`` (ids with a value on both sides), the macros of
        every seed on the full data (``a_macros``, ``b_macros``) and the replicates.

    Raises:
        ValueError: Without seeds on a side, or with fewer than 2 ids with values on both sides.
    """
    if not a_seeds or not b_seeds:
        raise ValueError("need at least one seed on each side")
    ids = np.unique(np.concatenate([s.question_ids for s in (*a_seeds, *b_seeds)]))
    languages = np.unique(np.concatenate([s.languages for s in (*a_seeds, *b_seeds)]))
    sums, counts = _sums_and_counts([*a_seeds, *b_seeds], ids, languages)  # a's seeds first, then b's
    k = len(a_seeds)
    n_languages = languages.size
    has_a, has_b = counts[:, :k * n_languages].sum(axis=1) > 0, counts[:, k * n_languages:].sum(axis=1) > 0
    n_questions = int(np.count_nonzero(has_a & has_b))
    if n_questions < 2:
        raise ValueError(f"only {n_questions} question id(s) have values for both methods; need at least 2")
    macros = _macros(np.ones((1, ids.size)), sums, counts, n_languages)[0]
    a_macros, b_macros = macros[:k], macros[k:]
    diff = float(a_macros.mean() - b_macros.mean())
    rng = np.random.default_rng(random_state)
    replicates = []
    for start in range(0, n_resamples, _BATCH):
        drawn = _macros(_draw_ids(rng, min(_BATCH, n_resamples - start), ids.size), sums, counts, n_languages)
        replicates.append(_seed_mean(rng, drawn[:, :k]) - _seed_mean(rng, drawn[:, k:]))
    replicates = np.concatenate(replicates)
    tail = (1 - confidence) / 2
    ci_low, ci_high = (float(v) for v in np.nanquantile(replicates, [tail, 1 - tail]))
    sd = float(np.nanstd(replicates, ddof=1))
    return BootstrapResult(diff=diff, ci_low=ci_low, ci_high=ci_high, p_value=_normal_p_value(diff, sd), sd=sd,
                           n_questions=n_questions, a_macros=a_macros, b_macros=b_macros, replicates=replicates)
