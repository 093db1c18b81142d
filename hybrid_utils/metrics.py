"""The metrics of LAReQA as pure functions of ranks (and the language centring of embeddings).

Everything here takes arrays and returns arrays or numbers: no model, no data set, no files. The ranks are
1-based positions of a question's relevant candidates in a pool, found by counting the candidates that score at
least as high (:func:`hybrid_utils.evaluation.evaluate_lareqa` does the scoring), with the pessimistic tie rule
:data:`TIE_RULE`, so a model that gives every candidate the same score gets the worst ordering's values.

* :func:`average_precision` (and :func:`ranks_and_average_precision`, which also returns the tie-resolved ranks):
  uncut AP, trec_eval's ``AP``;
* :func:`recall_at_k`: trec_eval's ``recall_k``;
* :func:`rank_distance`: the language bias of a question in the multilingual pool (no library computes it);
* :func:`mean_or_none`: the macro average over settings that have questions;
* :func:`per_question_values`, :func:`per_query_values`, :func:`cross_share`: the values behind the macro
  averages, for paired tests between models (:mod:`hybrid_utils.study.stats`);
* :func:`normalize_rows`: unit-length embeddings, so that scores are cosines;
* :func:`language_means`, :func:`center_by_language`: subtract each language's mean embedding
  (:mod:`hybrid_utils.postprocess` evaluates with it, :mod:`hybrid_utils.language_information` probes with it).

The mAP values are cross-checked against ``ir_measures`` in ``tests/test_evaluation.py``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

#: The cut-offs of Recall@k reported for every setting (the paper's Recall@1 and Recall@10).
RECALL_CUTOFFS = (1, 10)

#: How tied scores are ranked (recorded in every result).
TIE_RULE = ("pessimistic: a relevant candidate is ranked after every non-relevant candidate with the same "
            "score; relevant candidates tied with each other take consecutive ranks")


# --------------------------------------------------------------------------- ranks: AP, Recall@k, rank distance

def average_precision(ranks: np.ndarray | Sequence) -> np.ndarray:
    """Uncut average precision from the ranks of the relevant items.

    ``AP = (1 / R) * sum_k k / r_k``, where ``r_1 <= ... <= r_R`` are the 1-based ranks
    of the ``R`` relevant items in the full ranking. This equals trec_eval's ``AP``
    (``map``) when the run contains the whole pool.

    Args:
        ranks: A ``(n_questions, max_relevant)`` array of ranks, one row per question,
            padded with ``np.inf`` (or NaN) where a question has fewer relevant items.
            A 1-D array is treated as a single question.

    Returns:
        np.ndarray: ``(n_questions,)`` float64 AP values; NaN for a question with no
        relevant item.
    """
    ap, _, _ = ranks_and_average_precision(np.asarray(ranks, dtype=np.float64))
    return ap if np.ndim(ranks) > 1 else ap[:1]


def ranks_and_average_precision(ranks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AP per row, the sorted (tie-resolved) ranks and the number of relevant items per row.

    The ranks are those of :func:`average_precision`; :func:`recall_at_k` and :func:`rank_distance` read the
    sorted ranks this returns, so every metric sees the same tie resolution.
    """
    r = np.array(ranks, dtype=np.float64, ndmin=2)
    r[~np.isfinite(r)] = np.inf
    r.sort(axis=1)
    # Relevant items tied with each other all receive the pessimistic count P = #(score >= s);
    # a group of t of them occupies ranks P-t+1 .. P. Going backwards, r_k = min(r_k, r_{k+1} - 1)
    # turns (P, P, P) into (P-2, P-1, P) and leaves distinct ranks untouched.
    for k in range(r.shape[1] - 2, -1, -1):
        np.minimum(r[:, k], r[:, k + 1] - 1, out=r[:, k])
    valid = np.isfinite(r)
    n_rel = valid.sum(axis=1)
    k = np.arange(1, r.shape[1] + 1, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(valid, k[None, :] / r, 0.0)
        ap = precision.sum(axis=1) / n_rel
    ap[n_rel == 0] = np.nan
    return ap, r, n_rel


def recall_at_k(sorted_ranks: np.ndarray, n_rel: np.ndarray, k: int) -> np.ndarray:
    """Recall@k per row: the share of a question's relevant items ranked in the top ``k`` (NaN without any).

    ``sorted_ranks`` are the tie-resolved ranks of :func:`ranks_and_average_precision`, so ties count
    pessimistically here too. This is trec_eval's ``recall_k`` (ir_measures ``R@k``).
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = (sorted_ranks <= k).sum(axis=1) / n_rel
    recall[n_rel == 0] = np.nan
    return recall


def rank_distance(sorted_ranks: np.ndarray, n_rel: np.ndarray) -> np.ndarray:
    """The language bias of each question: rank of its lowest-ranked relevant item minus rank of its highest.

    ``sorted_ranks`` and ``n_rel`` as returned by :func:`ranks_and_average_precision` on the ranks in the
    multilingual pool (tie-resolved, so tied relevant answers are ``1`` apart). A question with fewer than two
    relevant items has no distance (NaN). An unbiased model ranks the answers of every language next to each
    other (distance ``R - 1`` for ``R`` relevant answers at best); a model that prefers the question's
    language pushes the other languages' answers down, and the distance grows.
    """
    last = np.take_along_axis(sorted_ranks, np.maximum(n_rel - 1, 0)[:, None], axis=1)[:, 0]
    return np.where(n_rel >= 2, last - sorted_ranks[:, 0], np.nan)


def mean_or_none(values) -> float | None:
    """The mean of the values that are not None; None when there is none (a setting without questions)."""
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


# --------------------------------------------------------------------------- per question and per query

def per_question_values(ids: list, q_lang_idx: np.ndarray, pool_ap: np.ndarray, multi_ap: np.ndarray,
                  distance: np.ndarray) -> dict[str, list]:
    """Per-question-id values (see ``per_question`` in :func:`hybrid_utils.evaluation.evaluate_lareqa`): means over an id's rows."""
    rows = np.arange(len(ids))
    mono = pool_ap[rows, q_lang_idx]
    other = pool_ap.copy()
    other[rows, q_lang_idx] = np.nan
    has_other = np.isfinite(other).any(axis=1)
    cross = np.full(len(ids), np.nan)
    cross[has_other] = np.nanmean(other[has_other], axis=1)
    unique, inverse = np.unique(np.asarray(ids, dtype=object).astype(str), return_inverse=True)

    def by_id(values: np.ndarray) -> list:
        ok = np.isfinite(values)
        total = np.bincount(inverse[ok], weights=values[ok], minlength=len(unique))
        count = np.bincount(inverse[ok], minlength=len(unique))
        return [round(float(t / c), 5) if c else None for t, c in zip(total, count)]

    return {"question_id": [str(u) for u in unique], "mono_ap": by_id(mono), "cross_ap": by_id(cross),
            "multilingual_ap": by_id(multi_ap), "rank_distance": by_id(distance)}


#: Decimals of the ``per_query`` values: their macro averages then match the stored metrics to ~1e-6, and an
#: XQuAD-R result file stays a few hundred kB
PER_QUERY_DECIMALS = 6


def cross_share(pool_ap: np.ndarray, q_lang_idx: np.ndarray) -> np.ndarray:
    """Each query's share of ``cross_map`` (see ``per_query`` in :func:`hybrid_utils.evaluation.evaluate_lareqa`); NaN without other pools.

    ``cross_map`` is the mean over the S settings (X, Y) of the mean over the ``n_XY`` queries of
    X with an answer in Y. Regrouped as a mean over the L query languages of a mean over the
    ``n_X`` queries of each, a query contributes ``(L n_X / S) sum_Y AP(q, Y) / n_XY``.
    """
    rows = np.arange(len(q_lang_idx))
    other = pool_ap.copy()
    other[rows, q_lang_idx] = np.nan
    found = np.isfinite(other)
    n_xy = np.zeros((pool_ap.shape[1], pool_ap.shape[1]))
    np.add.at(n_xy, q_lang_idx, found.astype(np.float64))
    has_other = found.any(axis=1)
    n_x = np.bincount(q_lang_idx[has_other], minlength=pool_ap.shape[1])
    n_settings, n_languages = np.count_nonzero(n_xy), np.count_nonzero(n_x)
    if n_settings == 0:
        return np.full(len(rows), np.nan)
    per_setting = np.where(found, np.nan_to_num(other) / np.maximum(n_xy[q_lang_idx], 1.0), 0.0).sum(axis=1)
    return np.where(has_other, n_languages * n_x[q_lang_idx] / n_settings * per_setting, np.nan)


def per_query_values(ids: list, q_langs: list, q_lang_idx: np.ndarray, pool_ap: np.ndarray, multi_ap: np.ndarray,
               distance: np.ndarray) -> dict[str, list]:
    """Per-(question, query language) values in question row order (see ``per_query`` in :func:`hybrid_utils.evaluation.evaluate_lareqa`)."""
    def rounded(values: np.ndarray) -> list:
        return [round(float(v), PER_QUERY_DECIMALS) if np.isfinite(v) else None for v in values]

    mono = pool_ap[np.arange(len(ids)), q_lang_idx]
    # a question is the index of its id in per_question["question_id"] (the sorted distinct ids): small files
    unique, index = np.unique(np.asarray(ids, dtype=object).astype(str), return_inverse=True)
    return {"question": [int(i) for i in index], "language": [str(lang) for lang in q_langs],
            "mono_ap": rounded(mono), "cross_ap": rounded(cross_share(pool_ap, q_lang_idx)),
            "multilingual_ap": rounded(multi_ap),
            "rank_distance": [int(d) if np.isfinite(d) else None for d in distance]}


# --------------------------------------------------------------------------- language centring

def language_means(embeddings: np.ndarray, languages: Sequence[str]) -> dict[str, np.ndarray]:
    """The mean embedding of each language: ``{language: (dim,) float32}``."""
    embeddings = np.asarray(embeddings, dtype=np.float32)
    languages = np.asarray(languages)
    if len(languages) != len(embeddings):
        raise ValueError(f"{len(embeddings)} embeddings but {len(languages)} languages")
    return {lang: embeddings[languages == lang].mean(axis=0) for lang in dict.fromkeys(languages.tolist())}


def center_by_language(embeddings: np.ndarray, languages: Sequence[str], means: dict[str, np.ndarray]) -> np.ndarray:
    """``embeddings`` minus the mean of each row's language, L2-renormalised (float32)."""
    embeddings = np.asarray(embeddings, dtype=np.float32)
    missing = sorted(set(languages) - set(means))
    if missing:
        raise ValueError(f"no mean embedding for language(s) {missing}: estimate them with language_means first")
    offsets = np.stack([means[lang] for lang in languages]).astype(np.float32)
    centered = embeddings - offsets
    norms = np.linalg.norm(centered, axis=1, keepdims=True)
    return centered / np.maximum(norms, 1e-12)


def normalize_rows(emb: np.ndarray) -> np.ndarray:
    """L2-normalised float32 rows (zero rows stay zero): scores of normalised embeddings are cosines."""
    emb = np.asarray(emb)
    norms = np.linalg.norm(emb.astype(np.float64), axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return (emb / norms).astype(np.float32)
