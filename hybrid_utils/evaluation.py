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

The metrics themselves are pure functions of ranks in :mod:`hybrid_utils.metrics` (no library computes
the rank distance, so it is hand-written there; the mAP values are cross-checked against ``ir_measures``,
trec_eval's ``AP``, in ``tests/test_evaluation.py``). This module encodes, scores every question against
every candidate once, turns the scores into ranks, and composes the metrics per setting.

Example::

    >>> from hybrid_utils.data import load_lareqa
    >>> from hybrid_utils.encoder import load_encoder
    >>> from hybrid_utils.evaluation import evaluate_lareqa
    >>> from hybrid_utils.results import save_result, summarize
    >>> result = evaluate_lareqa(load_encoder("bundled"), load_lareqa("xquad-r"))
    >>> print(summarize(result))
    >>> save_result(result, "results/zero-shot/xquad-r.json")
"""

from __future__ import annotations

import datetime as _dt
import time
from typing import Any

import numpy as np

from .metrics import (
    RECALL_CUTOFFS, TIE_RULE, mean_or_none, normalize_rows, per_query_values, per_question_values, rank_distance,
    ranks_and_average_precision, recall_at_k,
)

__all__ = ["CANDIDATE_TEXTS", "evaluate_lareqa", "describe_model"]

#: How a candidate is turned into text for the passage encoder.
CANDIDATE_TEXTS = ("sentence", "sentence+context")


# --------------------------------------------------------------------------- encoding

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


# --------------------------------------------------------------------------- evaluation

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
      evaluated on the same questions (see :mod:`hybrid_utils.study.stats`). The unit is the
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
      :func:`hybrid_utils.study.bootstrap.macro_over_languages`) reproduces ``mono_map``,
      ``cross_map``, ``multilingual_map`` and ``language_bias`` (to ~1e-6; values are
      rounded to 6 decimals; ``question`` is the index of the id in ``per_question["question_id"]``,
      which keeps the file small), so :mod:`hybrid_utils.study.stats` can resample the very number a
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
    pessimistically (see :data:`hybrid_utils.metrics.TIE_RULE`), so a degenerate model that gives every
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
    q_langs = list(questions["language"][:])
    c_ids = list(candidates["id"][:])
    c_langs = list(candidates["language"][:])
    n_q, n_c = len(q_langs), len(c_ids)
    if n_q == 0 or n_c == 0:
        raise ValueError(f"{getattr(dataset, 'name', 'dataset')} has {n_q} questions and {n_c} candidates; "
                         "need at least one of each")
    languages = list(dict.fromkeys(list(getattr(dataset, "languages", None) or [])
                                   + sorted(set(q_langs) | set(c_langs))))
    lang_index = {lang: i for i, lang in enumerate(languages)}
    rel_rows = _relevant_rows(dataset, c_ids)

    t0 = time.perf_counter()
    q_emb, c_emb = _embeddings(model, dataset, embeddings, candidate_text, batch_size, show_progress_bar, precision)
    seconds_encoding = 0.0 if embeddings is not None else time.perf_counter() - t0
    if normalize:
        q_emb, c_emb = normalize_rows(q_emb), normalize_rows(c_emb)

    t1 = time.perf_counter()
    c_lang_idx = np.array([lang_index[lang] for lang in c_langs], dtype=np.int64)
    q_lang_idx = np.array([lang_index[lang] for lang in q_langs], dtype=np.int64)
    own_ranks, multi_ranks, rel_lang, bounds = _ranks(q_emb, c_emb, c_lang_idx, rel_rows, len(languages), chunk_size)
    pools = _pool_metrics(own_ranks, rel_lang, q_lang_idx, languages)
    multi = _multilingual_metrics(multi_ranks, q_lang_idx, languages)
    ids = list(questions["id"][:])
    tables = {"per_question": per_question_values(ids, q_lang_idx, pools["pool_ap"], multi["ap"], multi["distance"]),
              "per_query": per_query_values(ids, q_langs, q_lang_idx, pools["pool_ap"], multi["ap"],
                                            multi["distance"])}
    seconds_scoring = time.perf_counter() - t1

    t2 = time.perf_counter()
    from .language_information import language_information_metrics

    probe_result = language_information_metrics(ids, list(questions["answer_id"][:]), c_ids, c_emb, c_langs, probe_seed,
                                                probe=probe)
    seconds_probe = time.perf_counter() - t2

    return {
        "dataset": str(getattr(dataset, "name", "")),
        "model": model_name or describe_model(model) or ("precomputed embeddings" if model is None else type(model).__name__),
        "languages": languages,
        "candidate_text": candidate_text,
        "precision": precision if embeddings is None else "precomputed",
        **_headline_metrics(pools, multi, languages),
        **_recall_metrics(pools["pair_recall"], multi["recall"], q_lang_idx, languages),
        "pair_map": pools["pair_map"],
        "pair_n_questions": pools["pair_n"],
        "multilingual_map_by_language": multi["by_language"],
        "language_bias_by_language": multi["bias_by_language"],
        "rank_distances": multi["rank_distances"],
        **tables,
        **probe_result,
        "n_settings": pools["n_settings"],
        "n_questions": n_q,
        "n_candidates": n_c,
        "questions_per_language": multi["questions_per_language"],
        "candidates_per_language": {lang: int(bounds[i + 1] - bounds[i]) for i, lang in enumerate(languages)},
        "tie_rule": TIE_RULE,
        "seconds_encoding": round(seconds_encoding, 3),
        "seconds_scoring": round(seconds_scoring, 3),
        "seconds_probe": round(seconds_probe, 3),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _relevant_rows(dataset, c_ids: list) -> np.ndarray:
    """``(n_questions, max relevant)`` candidate rows of each question's relevant ids, padded with -1."""
    questions = dataset.questions
    q_langs, relevant = list(questions["language"][:]), list(questions["relevant_ids"][:])
    c_index = {cid: i for i, cid in enumerate(c_ids)}
    if len(c_index) != len(c_ids):
        raise ValueError("candidate ids are not unique")
    max_rel = max((len(r) for r in relevant), default=0)
    if max_rel == 0:
        raise ValueError("no question has a relevant candidate")
    rel_rows = np.full((len(q_langs), max_rel), -1, dtype=np.int64)
    for qi, rel in enumerate(relevant):
        rel = list(dict.fromkeys(rel))
        missing = [r for r in rel if r not in c_index]
        if missing:
            raise ValueError(f"question {questions[qi]['id']!r} ({q_langs[qi]}) has relevant id(s) {missing} "
                             f"that are not among the {len(c_ids)} candidates of "
                             f"{getattr(dataset, 'name', 'the dataset')}")
        rel_rows[qi, :len(rel)] = [c_index[r] for r in rel]
    return rel_rows


def _embeddings(model, dataset, embeddings, candidate_text: str, batch_size: int, show_progress_bar: bool,
                precision: str) -> tuple[np.ndarray, np.ndarray]:
    """The question and candidate embeddings: checked precomputed ones, or encoded now by ``model``."""
    questions, candidates = dataset.questions, dataset.candidates
    n_q, n_c = len(questions), len(candidates)
    if embeddings is not None:
        if len(embeddings) != 2:
            raise ValueError("embeddings must be a pair (question_embeddings, candidate_embeddings)")
        q_emb = _check_embeddings(embeddings[0], "question")
        c_emb = _check_embeddings(embeddings[1], "candidate")
    else:
        if model is None:
            raise ValueError("pass a model or precomputed embeddings")
        if candidate_text == "sentence":
            c_texts = list(candidates["sentence"][:])
        else:
            c_texts = [f"{s} {c}" for s, c in zip(candidates["sentence"][:], candidates["context"][:])]
        q_emb = _encode(model, list(questions["text"][:]), "query", batch_size, show_progress_bar, "question", precision)
        c_emb = _encode(model, c_texts, "passage", batch_size, show_progress_bar, "candidate", precision)
    if q_emb.shape[0] != n_q or c_emb.shape[0] != n_c:
        raise ValueError(f"got {q_emb.shape[0]} question and {c_emb.shape[0]} candidate embeddings for "
                         f"{n_q} questions and {n_c} candidates")
    if q_emb.shape[1] != c_emb.shape[1]:
        raise ValueError(f"question embeddings have dimension {q_emb.shape[1]} but candidate embeddings "
                         f"{c_emb.shape[1]}")
    return q_emb, c_emb


def _ranks(q_emb: np.ndarray, c_emb: np.ndarray, c_lang_idx: np.ndarray, rel_rows: np.ndarray, n_lang: int,
           chunk_size: int):
    """The rank of every relevant candidate in its own language's pool and in the multilingual pool.

    Candidates are grouped by language so that every pool is a contiguous slice of one score matrix,
    computed ``chunk_size`` questions at a time. Returns ``(own_ranks, multi_ranks, rel_lang, bounds)``:
    ``(n_questions, max relevant)`` float ranks (``inf`` for padding), each relevant candidate's language
    index (-1 for padding), and the slice bounds of the languages.
    """
    n_q, max_rel = rel_rows.shape
    n_c = len(c_lang_idx)
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
    return own_ranks, multi_ranks, rel_lang, bounds


def _pool_metrics(own_ranks: np.ndarray, rel_lang: np.ndarray, q_lang_idx: np.ndarray, languages: list) -> dict:
    """The monolingual and cross-lingual settings: AP and Recall@k of the questions of X against the pool of Y."""
    n_q, n_lang = len(q_lang_idx), len(languages)
    pair_map: dict[str, dict[str, float | None]] = {}
    pair_n: dict[str, dict[str, int]] = {}
    mono_aps, cross_aps = [], []
    pool_ap = np.full((n_q, n_lang), np.nan)  # AP of each question against each language's pool
    pair_recall: dict[int, dict[str, dict[str, float | None]]] = {k: {} for k in RECALL_CUTOFFS}
    for y, lang_y in enumerate(languages):
        ap_y, sorted_y, n_rel_y = ranks_and_average_precision(np.where(rel_lang == y, own_ranks, np.inf))
        pool_ap[:, y] = ap_y
        recall_y = {k: recall_at_k(sorted_y, n_rel_y, k) for k in RECALL_CUTOFFS}
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
    return {"pair_map": pair_map, "pair_n": pair_n, "pool_ap": pool_ap, "pair_recall": pair_recall,
            "mono_aps": mono_aps, "cross_aps": cross_aps, "mono_values": mono_values, "cross_values": cross_values,
            "n_settings": {"mono": len(mono_values), "cross": len(cross_values), "skipped": len(skipped),
                           "skipped_settings": skipped}}


def _multilingual_metrics(multi_ranks: np.ndarray, q_lang_idx: np.ndarray, languages: list) -> dict:
    """The multilingual pool: AP, Recall@k and rank distance per question, and their means per question language."""
    multi_ap, multi_sorted, multi_n_rel = ranks_and_average_precision(multi_ranks)
    distance = rank_distance(multi_sorted, multi_n_rel)
    by_language, bias_by_language, rank_distances, questions_per_language = {}, {}, {}, {}
    for x, lang_x in enumerate(languages):
        sel = q_lang_idx == x
        questions_per_language[lang_x] = int(sel.sum())
        if not sel.any():
            continue
        by_language[lang_x] = float(multi_ap[sel].mean())
        d = distance[sel]
        d = d[np.isfinite(d)]
        rank_distances[lang_x] = [int(v) for v in d]
        bias_by_language[lang_x] = float(d.mean()) if d.size else None
    return {"ap": multi_ap, "distance": distance, "by_language": by_language, "bias_by_language": bias_by_language,
            "rank_distances": rank_distances, "questions_per_language": questions_per_language,
            "recall": {k: recall_at_k(multi_sorted, multi_n_rel, k) for k in RECALL_CUTOFFS}}


def _headline_metrics(pools: dict, multi: dict, languages: list) -> dict:
    """``mono_map``, ``cross_map``, ``multilingual_map``, ``language_bias`` (macro) and their ``*_micro`` variants."""
    all_d = multi["distance"][np.isfinite(multi["distance"])]
    return {
        "mono_map": mean_or_none(pools["mono_values"]),
        "cross_map": mean_or_none(pools["cross_values"]),
        "multilingual_map": mean_or_none(multi["by_language"].values()),
        "language_bias": mean_or_none(multi["bias_by_language"].values()),
        "mono_map_micro": float(np.concatenate(pools["mono_aps"]).mean()) if pools["mono_values"] else None,
        "cross_map_micro": float(np.concatenate(pools["cross_aps"]).mean()) if pools["cross_values"] else None,
        "multilingual_map_micro": float(multi["ap"].mean()),
        "language_bias_micro": float(all_d.mean()) if all_d.size else None,
    }


def _recall_metrics(pair_recall: dict, multi_recall: dict, q_lang_idx: np.ndarray, languages: list) -> dict:
    """``recall_at_<k>``: ``{"mono", "cross", "multilingual"}``, averaged like the mAP of each setting."""
    n_lang = len(languages)
    return {f"recall_at_{k}": {
        "mono": mean_or_none([pair_recall[k][x][x] for x in languages if pair_recall[k][x][x] is not None]),
        "cross": mean_or_none([pair_recall[k][x][y] for x in languages for y in languages
                               if x != y and pair_recall[k][x][y] is not None]),
        "multilingual": mean_or_none([float(multi_recall[k][q_lang_idx == x].mean())
                                      for x in range(n_lang) if (q_lang_idx == x).any()]),
    } for k in RECALL_CUTOFFS}
