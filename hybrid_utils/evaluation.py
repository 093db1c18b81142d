"""LAReQA evaluation: mono-, cross- and multilingual mAP and language bias.

LAReQA (Roy et al., 2020) measures how well a retriever finds the answer sentence
of a question among candidate sentences. With questions and candidates in several
languages there are three ways to build the retrieval task, and Elmahdy et al.
(2024, "hybrid batch training", arXiv 2408.10536) report all of them:

* **Monolingual** (X, X): questions in language X, pool = all candidates in X.
* **Cross-lingual** (X, Y), X != Y: questions in X, pool = all candidates in Y; the
  relevant candidate is the answer sentence of the question's translation in Y.
* **Multilingual**: questions in X, pool = the candidates of *all* languages; every
  translation's answer sentence is relevant (11 relevant items per question on
  XQuAD-R, 2 to 4 on MLQA-R).

The metric is mean average precision (mAP) over the whole ranking (no cut-off).
The multilingual pool also gives the **language bias** (rank distance) of a model: for
each question, the rank of its lowest-ranked relevant answer minus the rank of its
highest-ranked one. An unbiased model ranks the answers in every language next to
each other (distance ``R - 1`` for ``R`` relevant answers in the best case), while a
model that prefers answers in the question's language pushes the other languages
down and the distance grows.

No library computes the rank distance, so it is hand-written here; the mAP values
are cross-checked against ``ir_measures`` (trec_eval's ``AP``) in
``tests/test_evaluation.py``.

Example::

    >>> from hybrid_utils.data import load_lareqa
    >>> from hybrid_utils.encoder import load_encoder
    >>> from hybrid_utils.evaluation import evaluate_lareqa, summarize, save_result
    >>> result = evaluate_lareqa(load_encoder("bundled"), load_lareqa("xquad-r"))
    >>> print(summarize(result))
    >>> save_result(result, "results/zero-shot/xquad-r.json")
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

__all__ = [
    "CANDIDATE_TEXTS",
    "RECALL_CUTOFFS",
    "TIE_RULE",
    "evaluate_lareqa",
    "average_precision",
    "describe_model",
    "summarize",
    "save_result",
    "load_result",
]

#: How a candidate is turned into text for the passage encoder.
CANDIDATE_TEXTS = ("sentence", "sentence+context")

#: The cut-offs of Recall@k reported for every setting (the paper's Recall@1 and Recall@10).
RECALL_CUTOFFS = (1, 10)

#: How tied scores are ranked (recorded in every result).
TIE_RULE = ("pessimistic: a relevant candidate is ranked after every non-relevant candidate with the same "
            "score; relevant candidates tied with each other take consecutive ranks")


# --------------------------------------------------------------------------------------
# Ranks and average precision
# --------------------------------------------------------------------------------------
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
    ap, _, _ = _average_precision(np.asarray(ranks, dtype=np.float64))
    return ap if np.ndim(ranks) > 1 else ap[:1]


def _average_precision(ranks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AP per row, the sorted (tie-resolved) ranks and the number of relevant items per row."""
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


def _recall(sorted_ranks: np.ndarray, n_rel: np.ndarray, k: int) -> np.ndarray:
    """Recall@k per row: the share of a question's relevant items ranked in the top ``k`` (NaN without any).

    ``sorted_ranks`` are the tie-resolved ranks of :func:`_average_precision`, so ties count
    pessimistically here too. This is trec_eval's ``recall_k`` (ir_measures ``R@k``).
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = (sorted_ranks <= k).sum(axis=1) / n_rel
    recall[n_rel == 0] = np.nan
    return recall


# --------------------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------------------
def describe_model(model: Any) -> str | None:
    """A readable name for ``model``: its model-card name / id / base model, or the path it was loaded from."""
    card = getattr(model, "model_card_data", None)
    for attr in ("model_name", "model_id", "base_model"):
        value = getattr(card, attr, None)
        if value:
            return str(value)
    try:
        path = model[0].auto_model.config._name_or_path  # SentenceTransformer -> Transformer module
        if path:
            return str(path)
    except Exception:  # noqa: BLE001 - any model without that structure
        pass
    name = getattr(model, "__name__", None)
    return str(name) if name and name != "<lambda>" else None


def _encode(model: Any, texts: list[str], prompt_name: str, batch_size: int, show_progress_bar: bool,
            what: str, precision: str = "fp32") -> np.ndarray:
    """Encode each distinct text once and return float32 embeddings in input order."""
    from hybrid_utils.encoder import distinct_texts, encode_texts

    if hasattr(model, "encode"):  # a SentenceTransformer (callable too, so check this first)
        # encode_texts already encodes each distinct text once
        emb = encode_texts(model, texts, prompt_name=prompt_name, batch_size=batch_size,
                           show_progress_bar=show_progress_bar, precision=precision)
        return _check_embeddings(emb, what)
    if not callable(model):
        raise TypeError(f"model must be a SentenceTransformer or a callable encode(texts, prompt_name) -> "
                        f"np.ndarray, not {type(model).__name__}")
    unique, inverse = distinct_texts(texts)
    emb = np.asarray(model(unique, prompt_name))
    if emb.ndim != 2 or emb.shape[0] != len(unique):
        raise ValueError(f"the encoder returned an array of shape {emb.shape} for {len(unique)} distinct {what} "
                         f"texts; expected ({len(unique)}, dim)")
    return _check_embeddings(emb, what)[inverse]


def _check_embeddings(emb: Any, what: str) -> np.ndarray:
    emb = np.asarray(emb)
    if emb.ndim != 2 or emb.shape[1] == 0:
        raise ValueError(f"{what} embeddings must be a 2-D (n, dim) array, got shape {emb.shape}")
    if not np.issubdtype(emb.dtype, np.number):
        raise ValueError(f"{what} embeddings must be numeric, got dtype {emb.dtype}")
    emb = emb.astype(np.float32, copy=False)
    if not np.isfinite(emb).all():
        raise ValueError(f"{what} embeddings contain NaN or infinite values")
    return emb


def _normalize(emb: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(emb.astype(np.float64), axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return (emb / norms).astype(np.float32)


# --------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------
def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def evaluate_lareqa(
    model: Any,
    dataset,
    batch_size: int = 64,
    candidate_text: str = "sentence",
    show_progress_bar: bool = True,
    embeddings: tuple[np.ndarray, np.ndarray] | None = None,
    model_name: str | None = None,
    normalize: bool = True,
    chunk_size: int = 1024,
    precision: str = "fp32",
    probe: bool = True,
    probe_seed: int = 0,
) -> dict:
    """Evaluate a retriever on a LAReQA data set (XQuAD-R, MLQA-R) exactly, with the full pools.

    Every question is encoded once with the prompt ``"query"`` and every candidate once
    with the prompt ``"passage"``; scores are dot products of the (L2-normalised) float32
    embeddings, i.e. cosine similarities. One score matrix serves all settings:

    * ``pair_map[X][Y]``: questions in X, pool = all candidates in Y, relevant = the
      question's answer sentence(s) in Y. A question whose id does not exist in Y is
      skipped in that setting; a setting with no question is skipped altogether (its
      value is ``None``) and counted in ``n_settings["skipped"]``.
    * ``mono_map`` / ``cross_map``: macro averages of ``pair_map`` over the X == Y /
      X != Y settings (11 / 110 on XQuAD-R, 7 / 42 on MLQA-R), as in LAReQA. The
      ``*_micro`` variants pool all (question, setting) instances, which differs on
      MLQA-R where the settings have different sizes.
    * ``multilingual_map``: pool = all candidates of all languages, every translation's
      answer sentence relevant; mean AP over the questions of each language, then macro
      averaged over question languages (``multilingual_map_micro``: over all questions;
      ``multilingual_map_by_language``: per question language).
    * ``language_bias``: in the multilingual pool, ``max rank - min rank`` of a
      question's relevant answers (1-based ranks over the whole pool), averaged per
      question language and then macro averaged (``language_bias_micro``: over all
      questions). Questions with fewer than two relevant answers in the pool have no
      rank distance and are left out. ``rank_distances`` holds the raw per-question
      distances for histograms. This metric is hand-written (no library computes it);
      the mAP values are cross-checked against ``ir_measures`` in the tests.
    * ``recall_at_1`` / ``recall_at_10``: ``{"mono": ..., "cross": ..., "multilingual": ...}``,
      Recall@k (trec_eval's ``recall_k``: the share of a question's relevant candidates ranked in
      the top k, with the same pessimistic ties), averaged like the mAP of each setting (macro over
      settings; multilingual: macro over question languages). In the multilingual pool of XQuAD-R a
      question has 11 relevant answers, so its Recall@1 is at most 1/11.
    * ``per_question``: per-question values for paired significance tests between models
      evaluated on the same questions (see :mod:`hybrid_utils.stats`). The unit is the
      question **id**, not the (id, language) row: the translations of one question are
      not independent observations, so treating the 11 language versions of an XQuAD-R
      question as 11 samples would overstate the evidence. ``per_question`` is
      ``{"question_id": [...], "mono_ap": [...], "cross_ap": [...], "multilingual_ap": [...],
      "rank_distance": [...]}`` with one entry per id in sorted id order (1,190 on XQuAD-R,
      1,148 on MLQA-R); each value is the mean over the id's language versions of

      - ``mono_ap``: the AP in the pool of the version's own language,
      - ``cross_ap``: the mean AP over the other-language pools where the id has an answer,
      - ``multilingual_ap``: the AP in the multilingual pool,
      - ``rank_distance``: the rank distance in the multilingual pool (only versions with
        at least two relevant answers),

      rounded to 5 decimals, ``None`` where an id has no such value (e.g. ``cross_ap`` of an
      id that exists in one language only). On data where every id has the same number of
      language versions (XQuAD-R) the mean of ``multilingual_ap`` over ids equals
      ``multilingual_map_micro``; the macro averages above are computed as before and are
      not affected.
    * ``per_query``: the values behind the table's macro averages, one entry per question
      row (question, query language) in the order of ``dataset.questions``:
      ``{"question": [...], "language": [...], "mono_ap": [...], "cross_ap": [...],
      "multilingual_ap": [...], "rank_distance": [...]}`` (equal-length lists). The mean
      over query languages X of the mean over X's entries (``None`` skipped, see
      :func:`hybrid_utils.bootstrap.macro_over_languages`) reproduces ``mono_map``,
      ``cross_map``, ``multilingual_map`` and ``language_bias`` (to ~1e-6; values are
      rounded to 6 decimals; ``question`` is the index of the id in ``per_question["question_id"]``,
      which keeps the file small), so :mod:`hybrid_utils.stats` can resample the very number a
      table shows. ``per_question`` averages over all of an id's languages, which differs
      from that macro on unbalanced data (MLQA-R: 1,148 English queries, ~510 per other
      language). ``mono_ap``, ``multilingual_ap`` and ``rank_distance`` (an int) are the
      query's own values. ``cross_map`` is a mean over the (X, Y) settings, each the mean over
      X's queries with an answer in Y, so ``cross_ap`` is the query's *share* of it: with
      ``n_XY`` such queries, ``n_X`` queries of X with any answer in another language, ``S``
      cross settings and ``L`` query languages that have one, ``cross_ap = (L n_X / S)
      sum_Y AP(q, Y) / n_XY``. Where every id exists in every language (XQuAD-R) this is the
      plain mean over the other languages' pools; on MLQA-R it weights a pool with few
      queries of X more, exactly as the settings mean does.
    * ``probe_accuracy`` (language-identification probe): how much language information
      the candidate embeddings still carry (adversarial training tries to remove it). For
      every question id with an answer sentence in at least two languages, its answer
      sentences' L2-normalised candidate embeddings are the samples and their language the
      label. The ids are split 50/50 with ``probe_seed`` (scikit-learn's
      ``GroupShuffleSplit`` grouped by id, so the translations of one answer never sit on
      both sides; a sentence that answers ids on both sides is kept in training only), a
      ``sklearn.linear_model.LogisticRegression`` (default C) is fitted on one half and the
      accuracy on the other half is reported; scikit-learn does all the fitting. Also
      ``probe_chance`` (1 / number of languages in the probe), ``probe_n_train`` and
      ``probe_n_test`` (sentences); all four are ``None`` when the probe is off or has too
      little data. It takes a few seconds on XQuAD-R (13k candidates, 384 dims).
      It saturates (a per-language offset suffices to identify the language), so two more
      measures of :mod:`hybrid_utils.language_information` come with it:
      ``probe_accuracy_centered`` (same split, after removing each language's mean estimated on
      the training half; a 10-nearest-neighbour vote, since a linear probe is then blind by
      construction; ``None`` like the probe) and ``translation_margin`` (mean cosine of an
      answer sentence to its translations minus to the other sentences of its language, macro
      over languages; ``translation_margin_by_language``, ``translation_margin_n`` sentences;
      computed even with ``probe=False``, ``None`` without any translation).

    AP is uncut: ``AP = (1/R) sum_k k / r_k`` over the sorted ranks ``r_k`` of the ``R``
    relevant candidates in the pool, the rank of a relevant candidate being found by
    counting the pool candidates whose score is at least as high. Ties are resolved
    pessimistically (see :data:`TIE_RULE`), so a degenerate model that gives every
    candidate the same score gets the mAP of the worst ordering rather than a perfect one.

    Args:
        model: A :class:`~sentence_transformers.SentenceTransformer` with the prompts
            ``"query"`` and ``"passage"`` (e.g. from :func:`hybrid_utils.encoder.load_encoder`),
            or any callable ``encode(texts, prompt_name) -> np.ndarray`` returning one row per
            text. Ignored if ``embeddings`` is given (may then be None).
        dataset: A :class:`hybrid_utils.data.LAReQADataset`.
        batch_size: Encoding batch size. Defaults to 64.
        candidate_text: ``"sentence"`` (LAReQA: encode the candidate sentence) or
            ``"sentence+context"`` (sentence + " " + its paragraph). Defaults to "sentence".
        show_progress_bar: Show encoding progress bars. Defaults to True.
        embeddings: Precomputed ``(question_embeddings, candidate_embeddings)``, aligned
            with the rows of ``dataset.questions`` and ``dataset.candidates``; skips encoding.
        model_name: Name recorded in the result. Defaults to :func:`describe_model`.
        normalize: L2-normalise the embeddings before scoring (cosine similarity).
            Defaults to True.
        chunk_size: Questions scored at a time (bounds memory to about
            ``chunk_size * n_candidates * 5`` bytes). Defaults to 1024.
        precision: ``"fp32"`` (default), ``"bf16"`` or ``"auto"``: bfloat16 autocast while
            encoding (see :func:`hybrid_utils.encoder.inference_precision`); recorded in the result.
        probe: Run the language-identification probe. Defaults to True.
        probe_seed: Seed of the probe's train/test split of the question ids. Defaults to 0.

    Returns:
        dict: A JSON-serialisable result with ``mono_map``, ``cross_map``,
        ``multilingual_map``, ``language_bias`` (macro averages), their ``*_micro``
        variants, ``recall_at_1``, ``recall_at_10``, ``pair_map`` (``{X: {Y: mAP or None}}``), ``pair_n_questions``,
        ``multilingual_map_by_language``, ``language_bias_by_language``,
        ``rank_distances`` (``{X: [int, ...]}``), ``per_question``, ``per_query``, ``probe_accuracy``,
        ``probe_chance``, ``probe_n_train``, ``probe_n_test``, ``probe_accuracy_centered``,
        ``translation_margin``, ``translation_margin_by_language``, ``translation_margin_n``,
        ``n_settings``, ``n_questions``,
        ``n_candidates``, ``questions_per_language``, ``candidates_per_language``,
        ``model``, ``dataset``, ``languages``, ``candidate_text``, ``tie_rule``,
        ``seconds_encoding``, ``seconds_scoring`` and ``created``.

    Raises:
        ValueError: For an unknown ``candidate_text``, a relevant id that is not a
            candidate, or embeddings of the wrong shape / with NaN values.
    """
    if candidate_text not in CANDIDATE_TEXTS:
        raise ValueError(f"candidate_text must be one of {CANDIDATE_TEXTS}, got {candidate_text!r}")
    if chunk_size < 1:
        raise ValueError("chunk_size must be positive")
    questions, candidates = dataset.questions, dataset.candidates
    q_langs = list(questions["language"])
    c_ids = list(candidates["id"])
    c_langs = list(candidates["language"])
    relevant = list(questions["relevant_ids"])
    n_q, n_c = len(q_langs), len(c_ids)
    if n_q == 0 or n_c == 0:
        raise ValueError(f"{getattr(dataset, 'name', 'dataset')} has {n_q} questions and {n_c} candidates; "
                         "need at least one of each")
    languages = list(dict.fromkeys(list(getattr(dataset, "languages", None) or [])
                                   + sorted(set(q_langs) | set(c_langs))))
    lang_index = {lang: i for i, lang in enumerate(languages)}
    n_lang = len(languages)

    # --- map relevant ids to candidate rows
    c_index = {cid: i for i, cid in enumerate(c_ids)}
    if len(c_index) != n_c:
        raise ValueError("candidate ids are not unique")
    max_rel = max((len(r) for r in relevant), default=0)
    if max_rel == 0:
        raise ValueError("no question has a relevant candidate")
    rel_rows = np.full((n_q, max_rel), -1, dtype=np.int64)
    for qi, rel in enumerate(relevant):
        rel = list(dict.fromkeys(rel))
        missing = [r for r in rel if r not in c_index]
        if missing:
            raise ValueError(f"question {questions[qi]['id']!r} ({q_langs[qi]}) has relevant id(s) {missing} "
                             f"that are not among the {n_c} candidates of {getattr(dataset, 'name', 'the dataset')}")
        rel_rows[qi, :len(rel)] = [c_index[r] for r in rel]

    # --- embeddings
    t0 = time.perf_counter()
    if embeddings is not None:
        if len(embeddings) != 2:
            raise ValueError("embeddings must be a pair (question_embeddings, candidate_embeddings)")
        q_emb = _check_embeddings(embeddings[0], "question")
        c_emb = _check_embeddings(embeddings[1], "candidate")
        seconds_encoding = 0.0
    else:
        if model is None:
            raise ValueError("pass a model or precomputed embeddings")
        if candidate_text == "sentence":
            c_texts = list(candidates["sentence"])
        else:
            c_texts = [f"{s} {c}" for s, c in zip(candidates["sentence"], candidates["context"])]
        q_emb = _encode(model, list(questions["text"]), "query", batch_size, show_progress_bar, "question", precision)
        c_emb = _encode(model, c_texts, "passage", batch_size, show_progress_bar, "candidate", precision)
        seconds_encoding = time.perf_counter() - t0
    if q_emb.shape[0] != n_q or c_emb.shape[0] != n_c:
        raise ValueError(f"got {q_emb.shape[0]} question and {c_emb.shape[0]} candidate embeddings for "
                         f"{n_q} questions and {n_c} candidates")
    if q_emb.shape[1] != c_emb.shape[1]:
        raise ValueError(f"question embeddings have dimension {q_emb.shape[1]} but candidate embeddings "
                         f"{c_emb.shape[1]}")
    if normalize:
        q_emb, c_emb = _normalize(q_emb), _normalize(c_emb)

    # --- scoring: candidates grouped by language so that every pool is a contiguous slice
    t1 = time.perf_counter()
    c_lang_idx = np.array([lang_index[lang] for lang in c_langs], dtype=np.int64)
    order = np.argsort(c_lang_idx, kind="stable")
    position = np.empty(n_c, dtype=np.int64)
    position[order] = np.arange(n_c)
    c_sorted = np.ascontiguousarray(c_emb[order])
    bounds = np.searchsorted(c_lang_idx[order], np.arange(n_lang + 1))
    rel_pos = np.where(rel_rows >= 0, position[np.maximum(rel_rows, 0)], -1)  # column in c_sorted
    rel_lang = np.where(rel_rows >= 0, c_lang_idx[np.maximum(rel_rows, 0)], -1)

    # ge_count[q, k, l] = number of candidates of language l scoring >= relevant item k of question q
    ge_count = np.zeros((n_q, max_rel, n_lang), dtype=np.int64)
    for start in range(0, n_q, chunk_size):
        stop = min(start + chunk_size, n_q)
        scores = q_emb[start:stop] @ c_sorted.T  # float32, (chunk, n_c)
        for k in range(max_rel):
            has = rel_pos[start:stop, k] >= 0
            if not has.any():
                continue
            sub = np.flatnonzero(has)
            block = scores if sub.size == scores.shape[0] else scores[sub]
            s = block[np.arange(sub.size), rel_pos[start + sub, k]]  # the matrix entries themselves: exact self-ties
            ge = block >= s[:, None]
            for lang in range(n_lang):
                a, b = bounds[lang], bounds[lang + 1]
                if b > a:
                    ge_count[start + sub, k, lang] = np.count_nonzero(ge[:, a:b], axis=1)
        del scores

    valid = rel_pos >= 0
    multi_ranks = np.where(valid, ge_count.sum(axis=2), np.inf).astype(np.float64)
    own_ranks = np.where(valid, np.take_along_axis(ge_count, np.maximum(rel_lang, 0)[..., None], axis=2)[..., 0],
                         np.inf).astype(np.float64)

    q_lang_idx = np.array([lang_index[lang] for lang in q_langs], dtype=np.int64)
    # per (X, Y): AP of each question of X against the pool of Y
    pair_map: dict[str, dict[str, float | None]] = {}
    pair_n: dict[str, dict[str, int]] = {}
    mono_aps, cross_aps = [], []
    pool_ap = np.full((n_q, n_lang), np.nan)  # AP of each question against each language's pool
    pair_recall: dict[int, dict[str, dict[str, float | None]]] = {k: {} for k in RECALL_CUTOFFS}
    for y, lang_y in enumerate(languages):
        ap_y, sorted_y, n_rel_y = _average_precision(np.where(rel_lang == y, own_ranks, np.inf))
        pool_ap[:, y] = ap_y
        recall_y = {k: _recall(sorted_y, n_rel_y, k) for k in RECALL_CUTOFFS}
        for x, lang_x in enumerate(languages):
            sel = (q_lang_idx == x) & (n_rel_y > 0)
            pair_n.setdefault(lang_x, {})[lang_y] = int(sel.sum())
            pair_map.setdefault(lang_x, {})[lang_y] = float(ap_y[sel].mean()) if sel.any() else None
            for k in RECALL_CUTOFFS:
                pair_recall[k].setdefault(lang_x, {})[lang_y] = float(recall_y[k][sel].mean()) if sel.any() else None
            (mono_aps if x == y else cross_aps).append(ap_y[sel])

    mono_values = [pair_map[x][x] for x in languages if pair_map[x][x] is not None]
    cross_values = [pair_map[x][y] for x in languages for y in languages
                    if x != y and pair_map[x][y] is not None]
    skipped = [[x, y] for x in languages for y in languages if pair_map[x][y] is None]

    multi_ap, multi_sorted, multi_n_rel = _average_precision(multi_ranks)
    multi_recall = {k: _recall(multi_sorted, multi_n_rel, k) for k in RECALL_CUTOFFS}
    recall = {f"recall_at_{k}": {
        "mono": _mean([pair_recall[k][x][x] for x in languages if pair_recall[k][x][x] is not None]),
        "cross": _mean([pair_recall[k][x][y] for x in languages for y in languages
                        if x != y and pair_recall[k][x][y] is not None]),
        "multilingual": _mean([float(multi_recall[k][q_lang_idx == x].mean())
                               for x in range(n_lang) if (q_lang_idx == x).any()]),
    } for k in RECALL_CUTOFFS}
    last = np.take_along_axis(multi_sorted, np.maximum(multi_n_rel - 1, 0)[:, None], axis=1)[:, 0]
    distance = np.where(multi_n_rel >= 2, last - multi_sorted[:, 0], np.nan)

    multi_by_lang, bias_by_lang, rank_distances, q_per_lang = {}, {}, {}, {}
    for x, lang_x in enumerate(languages):
        sel = q_lang_idx == x
        q_per_lang[lang_x] = int(sel.sum())
        if not sel.any():
            continue
        multi_by_lang[lang_x] = float(multi_ap[sel].mean())
        d = distance[sel]
        d = d[np.isfinite(d)]
        rank_distances[lang_x] = [int(v) for v in d]
        bias_by_lang[lang_x] = float(d.mean()) if d.size else None
    all_d = distance[np.isfinite(distance)]
    per_question = _per_question(list(questions["id"]), q_lang_idx, pool_ap, multi_ap, distance)
    per_query = _per_query(list(questions["id"]), q_langs, q_lang_idx, pool_ap, multi_ap, distance)
    seconds_scoring = time.perf_counter() - t1

    t2 = time.perf_counter()
    from .language_information import language_information_metrics

    probe_result = language_information_metrics(list(questions["id"]), list(questions["answer_id"]), c_ids, c_emb,
                                                c_langs, probe_seed, probe=probe)
    seconds_probe = time.perf_counter() - t2

    c_per_lang = {lang: int(bounds[i + 1] - bounds[i]) for i, lang in enumerate(languages)}
    return {
        "dataset": str(getattr(dataset, "name", "")),
        "model": model_name or describe_model(model) or ("precomputed embeddings" if model is None else type(model).__name__),
        "languages": languages,
        "candidate_text": candidate_text,
        "precision": precision if embeddings is None else "precomputed",
        "mono_map": _mean(mono_values),
        "cross_map": _mean(cross_values),
        "multilingual_map": _mean(multi_by_lang.values()),
        "language_bias": _mean(bias_by_lang.values()),
        "mono_map_micro": float(np.concatenate(mono_aps).mean()) if mono_values else None,
        "cross_map_micro": float(np.concatenate(cross_aps).mean()) if cross_values else None,
        "multilingual_map_micro": float(multi_ap.mean()),
        "language_bias_micro": float(all_d.mean()) if all_d.size else None,
        **recall,
        "pair_map": pair_map,
        "pair_n_questions": pair_n,
        "multilingual_map_by_language": multi_by_lang,
        "language_bias_by_language": bias_by_lang,
        "rank_distances": rank_distances,
        "per_question": per_question,
        "per_query": per_query,
        **probe_result,
        "n_settings": {"mono": len(mono_values), "cross": len(cross_values), "skipped": len(skipped),
                       "skipped_settings": skipped},
        "n_questions": n_q,
        "n_candidates": n_c,
        "questions_per_language": q_per_lang,
        "candidates_per_language": c_per_lang,
        "tie_rule": TIE_RULE,
        "seconds_encoding": round(seconds_encoding, 3),
        "seconds_scoring": round(seconds_scoring, 3),
        "seconds_probe": round(seconds_probe, 3),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _per_question(ids: list, q_lang_idx: np.ndarray, pool_ap: np.ndarray, multi_ap: np.ndarray,
                  distance: np.ndarray) -> dict[str, list]:
    """Per-question-id values (see ``per_question`` in :func:`evaluate_lareqa`): means over an id's rows."""
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


def _cross_share(pool_ap: np.ndarray, q_lang_idx: np.ndarray) -> np.ndarray:
    """Each query's share of ``cross_map`` (see ``per_query`` in :func:`evaluate_lareqa`); NaN without other pools.

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


def _per_query(ids: list, q_langs: list, q_lang_idx: np.ndarray, pool_ap: np.ndarray, multi_ap: np.ndarray,
               distance: np.ndarray) -> dict[str, list]:
    """Per-(question, query language) values in question row order (see ``per_query`` in :func:`evaluate_lareqa`)."""
    def rounded(values: np.ndarray) -> list:
        return [round(float(v), PER_QUERY_DECIMALS) if np.isfinite(v) else None for v in values]

    mono = pool_ap[np.arange(len(ids)), q_lang_idx]
    # a question is the index of its id in per_question["question_id"] (the sorted distinct ids): small files
    unique, index = np.unique(np.asarray(ids, dtype=object).astype(str), return_inverse=True)
    return {"question": [int(i) for i in index], "language": [str(lang) for lang in q_langs],
            "mono_ap": rounded(mono), "cross_ap": rounded(_cross_share(pool_ap, q_lang_idx)),
            "multilingual_ap": rounded(multi_ap),
            "rank_distance": [int(d) if np.isfinite(d) else None for d in distance]}


# --------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------
def _fmt(value: float | None, scale: float = 100.0, digits: int = 1) -> str:
    return "-" if value is None else f"{value * scale:.{digits}f}"


def summarize(result: dict) -> str:
    """A readable multi-line summary of an :func:`evaluate_lareqa` result.

    Shows mono-, cross- and multilingual mAP (macro, with the micro averages), the
    language bias, timings, and a compact table of mAP x 100 with question languages X
    as rows and pool languages Y as columns, followed by each row's multilingual mAP
    and mean rank distance.
    """
    n = result.get("n_settings", {})
    lines = [
        f"LAReQA {result.get('dataset', '?')} | model: {result.get('model', '?')} | "
        f"{result.get('n_questions', '?')} questions, {result.get('n_candidates', '?')} candidates, "
        f"{len(result.get('languages', []))} languages, candidates encoded as {result.get('candidate_text', '?')}",
        f"mAP x100  mono {_fmt(result.get('mono_map'), digits=2)} (micro {_fmt(result.get('mono_map_micro'), digits=2)},"
        f" {n.get('mono', '?')} settings) | cross {_fmt(result.get('cross_map'), digits=2)} "
        f"(micro {_fmt(result.get('cross_map_micro'), digits=2)}, {n.get('cross', '?')} settings) | "
        f"multilingual {_fmt(result.get('multilingual_map'), digits=2)} "
        f"(micro {_fmt(result.get('multilingual_map_micro'), digits=2)})",
        f"language bias (mean rank distance, lower is better): {_fmt(result.get('language_bias'), 1.0)} "
        f"(micro {_fmt(result.get('language_bias_micro'), 1.0)})",
    ]
    recall = [f"R@{k} mono {_fmt(result[f'recall_at_{k}'].get('mono'), digits=2)} / cross "
              f"{_fmt(result[f'recall_at_{k}'].get('cross'), digits=2)} / multilingual "
              f"{_fmt(result[f'recall_at_{k}'].get('multilingual'), digits=2)}"
              for k in RECALL_CUTOFFS if isinstance(result.get(f"recall_at_{k}"), dict)]
    if recall:
        lines.append("recall x100  " + " | ".join(recall))
    if n.get("skipped"):
        lines.append(f"skipped settings without questions: {n['skipped']}")
    if "seconds_encoding" in result:
        lines.append(f"time: encoding {result['seconds_encoding']:.1f} s, scoring {result['seconds_scoring']:.1f} s")
    langs = result.get("languages", [])
    pair = result.get("pair_map", {})
    if langs and pair:
        lines.append("mAP x100, question language (rows) x pool language (columns):")
        width = 6
        lines.append("X\\Y".ljust(4) + "".join(lang.rjust(width) for lang in langs) + " | " + "multi".rjust(width)
                     + "bias".rjust(width + 2))
        for x in langs:
            row = pair.get(x, {})
            lines.append(x.ljust(4) + "".join(_fmt(row.get(y)).rjust(width) for y in langs) + " | "
                         + _fmt(result.get("multilingual_map_by_language", {}).get(x)).rjust(width)
                         + _fmt(result.get("language_bias_by_language", {}).get(x), 1.0).rjust(width + 2))
    return "\n".join(lines)


#: Per-entry tables whose lists :func:`save_result` writes one per line (also inside ``postprocess`` variants).
_COMPACT_TABLES = ("per_question", "per_query")


def _mark_tables(block: Any, prefix: str, marks: dict) -> Any:
    """``block`` with each list of its :data:`_COMPACT_TABLES` replaced by a placeholder string kept in ``marks``."""
    if not isinstance(block, dict):
        return block
    out = dict(block)
    for table in _COMPACT_TABLES:
        if isinstance(block.get(table), dict):
            out[table] = {}
            for key, values in block[table].items():
                mark = f"@@{prefix}{table}:{key}@@"
                marks[mark] = values
                out[table][key] = mark
    return out


def _dumps(result: dict) -> str:
    """``result`` as indented JSON, each ``per_question`` / ``per_query`` list on a single line (keeps the file small).

    The tables of the post-processed variants (``result["postprocess"][name]``) are compacted too.
    """
    marks: dict[str, Any] = {}
    marked = _mark_tables(result, "", marks)
    if isinstance(marked, dict) and isinstance(marked.get("postprocess"), dict):
        marked["postprocess"] = {name: _mark_tables(variant, f"{name}/", marks)
                                 for name, variant in marked["postprocess"].items()}
    text = json.dumps(marked, indent=2, ensure_ascii=False, allow_nan=False)
    for mark, values in marks.items():
        value = json.dumps(values, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        text = text.replace(json.dumps(mark, ensure_ascii=False), value, 1)
    return text


def save_result(result: dict, path: str | os.PathLike) -> Path:
    """Write ``result`` as JSON to ``path`` atomically, creating parent folders.

    The JSON is indented, except that each list of ``per_question`` and ``per_query`` (also those of the
    ``postprocess`` variants) is written on one line.

    The JSON is serialised first and written to a temporary file next to ``path``,
    which then replaces ``path`` in one rename: an existing result is never left
    half-written or destroyed if anything fails.

    Returns:
        pathlib.Path: ``path``.
    """
    path = Path(path).expanduser()
    text = _dumps(result)  # fails before touching the disk
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def load_result(path: str | os.PathLike) -> dict:
    """Read a result written by :func:`save_result`."""
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)
