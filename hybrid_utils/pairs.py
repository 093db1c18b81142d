"""Training pairs built from a LAReQA data set: every (question in X, answer in Y), then cleaned for a run.

Zero-shot protocols (as in the paper): train on MLQA-R and evaluate on XQuAD-R, or the
reverse. Both come from Wikipedia, so :func:`remove_overlap` drops every training pair
whose question or answer text occurs, as a question or candidate sentence, in the
evaluation set (exact match after ``strip()``); :func:`prepare_training_pairs` (and so
:func:`hybrid_utils.training.train`) does it by default (``exclude_overlap_with="auto"``).
On the shipped data no training pair overlaps (only two short Hindi candidate sentences,
"[उद्धरण वांछित]" and "ए.", occur in both sets, and neither is the answer of a question),
but the check keeps it that way for any data. :func:`split_pairs_by_question_id` holds
question ids out of training (whole groups of ids that share a paragraph, :func:`question_groups`) and
:func:`hybrid_utils.data.subset_lareqa` turns them into an evaluation set.

Example::

    >>> from hybrid_utils.data import load_lareqa
    >>> from hybrid_utils.pairs import build_training_pairs
    >>> pairs = build_training_pairs(load_lareqa("mlqa-r"))
"""

from __future__ import annotations

import random
from collections import defaultdict
from typing import TYPE_CHECKING, Any, Sequence

from datasets import Dataset

from .data import LAReQADataset, check_languages, load_lareqa

if TYPE_CHECKING:  # config imports samplers; only the type is needed here
    from .config import TrainConfig


def build_training_pairs(dataset: LAReQADataset, question_languages: Sequence[str] | None = None,
                         answer_languages: Sequence[str] | None = None,
                         monolingual: bool = True, cross_lingual: bool = True) -> Dataset:
    """All (question in X, answer sentence in Y) pairs for question ids present in both X and Y.

    Args:
        dataset: a loaded LAReQA data set.
        question_languages: languages X of the questions (default: all).
        answer_languages: languages Y of the answers (default: all).
        monolingual: include pairs with X == Y.
        cross_lingual: include pairs with X != Y.

    Returns:
        a :class:`datasets.Dataset` with columns ``question``, ``answer`` (the text the
        model is trained on), ``question_id``, ``question_language``, ``answer_language``
        and ``answer_id``; one row per pair, sorted by (X, Y, question id order).
    """
    if not (monolingual or cross_lingual):
        raise ValueError("build_training_pairs needs monolingual=True, cross_lingual=True or both")
    xs = check_languages(dataset.languages if question_languages is None else question_languages, dataset.languages, "question_languages")
    ys = check_languages(dataset.languages if answer_languages is None else answer_languages, dataset.languages, "answer_languages")
    sentence_of = dict(zip(dataset.candidates["id"][:], dataset.candidates["sentence"][:]))
    by_language: dict[str, dict[str, tuple[str, str]]] = defaultdict(dict)
    for qid, lang, text, answer_id in zip(dataset.questions["id"][:], dataset.questions["language"][:],
                                          dataset.questions["text"][:], dataset.questions["answer_id"][:]):
        by_language[lang][qid] = (text, answer_id)
    rows = []
    for x in xs:
        for y in ys:
            if (x == y and not monolingual) or (x != y and not cross_lingual):
                continue
            for qid, (question, _) in by_language[x].items():
                if qid in by_language[y]:
                    answer_id = by_language[y][qid][1]
                    rows.append({"question": question, "answer": sentence_of[answer_id], "question_id": qid,
                                 "question_language": x, "answer_language": y, "answer_id": answer_id})
    if not rows:
        raise ValueError(f"no training pairs for question languages {xs} and answer languages {ys}")
    return Dataset.from_list(rows)


# --------------------------------------------------------------------------- overlap, holdout, limits

def _strip_set(texts) -> set[str]:
    return {t.strip() for t in texts if t is not None}


def find_overlap(pairs, eval_dataset: LAReQADataset) -> dict:
    """Which training pairs share a text with ``eval_dataset``.

    A pair overlaps if its question or its answer, after ``strip()``, equals any question
    text or any candidate sentence of ``eval_dataset`` (candidates include every answer
    sentence). Returns ``{"rows": [...], "questions": n, "answers": n, "shared_texts": [...]}``.
    """
    eval_texts = _strip_set(eval_dataset.questions["text"][:]) | _strip_set(eval_dataset.candidates["sentence"][:])
    rows, shared = [], set()
    nq = na = 0
    for i, (q, a) in enumerate(zip(pairs["question"][:], pairs["answer"][:])):
        q_hit, a_hit = q.strip() in eval_texts, a.strip() in eval_texts
        if q_hit or a_hit:
            rows.append(i)
            nq += q_hit
            na += a_hit
            shared.update(t.strip() for t, hit in ((q, q_hit), (a, a_hit)) if hit)
    return {"rows": rows, "questions": nq, "answers": na, "shared_texts": sorted(shared)}


def remove_overlap(pairs, eval_dataset: LAReQADataset, log=print):
    """Drop the training pairs whose question or answer occurs in ``eval_dataset`` (see :func:`find_overlap`).

    Returns ``(pairs, info)`` with ``info = {"eval_dataset", "removed_pairs", "overlapping_questions",
    "overlapping_answers", "shared_texts" (up to 20)}``.
    """
    found = find_overlap(pairs, eval_dataset)
    info = {"eval_dataset": eval_dataset.name, "removed_pairs": len(found["rows"]),
            "overlapping_questions": found["questions"], "overlapping_answers": found["answers"],
            "shared_texts": found["shared_texts"][:20]}
    if found["rows"]:
        drop = set(found["rows"])
        pairs = pairs.select([i for i in range(len(pairs)) if i not in drop])
    if log:
        log(f"overlap with {eval_dataset.name}: removed {info['removed_pairs']} of "
            f"{len(pairs) + info['removed_pairs']} training pairs")
    return pairs, info


def question_groups(dataset: LAReQADataset) -> dict[str, int]:
    """Group the question ids that share an answer paragraph or an answer sentence, in any language.

    Holding out single question ids leaks: in XQuAD-R about five questions share each paragraph,
    so a held-out question's answer sentence and paragraph would still be trained on through its
    neighbours. Holding out whole groups does not. Hand-written union-find (a dozen lines; no
    library of this project offers grouping by shared keys).

    Returns:
        ``{question_id: group number}``.
    """
    paragraph_of = dict(zip(dataset.candidates["id"][:], dataset.candidates["paragraph_id"][:]))
    sentence_of = dict(zip(dataset.candidates["id"][:], dataset.candidates["sentence"][:]))
    parent: dict[str, str] = {}

    def root(node: str) -> str:
        parent.setdefault(node, node)
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    for qid, answer_id in zip(dataset.questions["id"][:], dataset.questions["answer_id"][:]):
        for key in (f"p:{paragraph_of[answer_id]}", f"s:{sentence_of[answer_id].strip()}"):
            parent[root(key)] = root(f"q:{qid}")
    roots: dict[str, int] = {}
    return {qid: roots.setdefault(root(f"q:{qid}"), len(roots)) for qid in dict.fromkeys(dataset.questions["id"][:])}


def split_pairs_by_question_id(pairs, holdout_fraction: float, seed: int | None = None,
                               groups: dict[str, int] | None = None):
    """Split pairs into (train, held-out) by question id: all translations of a held-out question go out.

    Args:
        pairs: training pairs (``build_training_pairs``).
        holdout_fraction: fraction of the distinct question ids to hold out, in [0, 1).
        seed: for the random choice of ids (None: :data:`hybrid_utils.config.HOLDOUT_SEED`, the study's split).
        groups: ``{question_id: group}`` (:func:`question_groups`): whole groups are held out, so no
            held-out answer sentence or paragraph is trained on; None: single question ids.

    Returns:
        ``(train_pairs, heldout_pairs)``; no question id (and with ``groups`` no group) occurs in both.
    """
    if not 0.0 <= holdout_fraction < 1.0:
        raise ValueError("holdout_fraction must be in [0, 1)")
    if seed is None:
        from .config import HOLDOUT_SEED
        seed = HOLDOUT_SEED
    ids = list(dict.fromkeys(pairs["question_id"][:]))
    n_out = int(round(holdout_fraction * len(ids)))
    if holdout_fraction > 0 and n_out == 0:
        n_out = 1
    group_of = groups if groups is not None else {q: i for i, q in enumerate(ids)}
    members: dict[int, list[str]] = {}
    for q in ids:
        members.setdefault(group_of[q], []).append(q)
    order = list(members)
    random.Random(seed).shuffle(order)
    out: set[str] = set()
    for group in order:
        if len(out) >= n_out:
            break
        out.update(members[group])
    qids = pairs["question_id"][:]
    train_rows = [i for i, q in enumerate(qids) if q not in out]
    held_rows = [i for i, q in enumerate(qids) if q in out]
    return pairs.select(train_rows), pairs.select(held_rows)


def _limit_by_question_id(pairs, limit: int, seed: int):
    """About ``limit`` pairs: whole question ids (all their language pairs), drawn at random."""
    if limit >= len(pairs):
        return pairs
    rows_of: dict[str, list[int]] = {}
    for i, q in enumerate(pairs["question_id"][:]):
        rows_of.setdefault(q, []).append(i)
    ids = list(rows_of)
    random.Random(seed).shuffle(ids)
    keep: list[int] = []
    for q in ids:
        if len(keep) >= limit:
            break
        keep.extend(rows_of[q])
    return pairs.select(sorted(keep))


def _as_dataset(name_or_dataset, languages=None) -> LAReQADataset:
    if isinstance(name_or_dataset, LAReQADataset):
        return name_or_dataset
    return load_lareqa(str(name_or_dataset), languages=languages)


def prepare_training_pairs(config: "TrainConfig", log=print):
    """The pairs a run trains on, and what was done to them.

    Loads ``config.train_on`` (``config.languages``), builds every (question in X, answer in
    Y) pair, removes the pairs overlapping the evaluation set, holds out ``eval_holdout`` of
    the question ids and limits to ``limit_pairs`` (whole question ids).

    Returns:
        ``(pairs, heldout_pairs, info)``: datasets.Dataset of training pairs, of held-out
        pairs (empty selection if no holdout), and a dict for ``train_config.json``.
    """
    from .config import HOLDOUT_SEED

    dataset = load_lareqa(str(config.train_on), languages=config.languages)
    pairs = build_training_pairs(dataset)
    info: dict[str, Any] = {"train_dataset": dataset.name, "languages": list(dataset.languages),
                            "pairs_built": len(pairs)}
    eval_name = config.eval_dataset_name
    if eval_name:
        pairs, overlap = remove_overlap(pairs, _as_dataset(eval_name), log=log)
        info["overlap"] = overlap
    else:
        info["overlap"] = None
    heldout = pairs.select([])
    if config.eval_holdout > 0:
        pairs, heldout = split_pairs_by_question_id(pairs, config.eval_holdout, HOLDOUT_SEED, question_groups(dataset))
    info["heldout_question_ids"] = sorted(set(heldout["question_id"][:]))
    if config.limit_pairs:
        pairs = _limit_by_question_id(pairs, config.limit_pairs, config.seed)
    info["pairs"] = len(pairs)
    info["monolingual_pairs"] = int(sum(x == y for x, y in zip(pairs["question_language"][:], pairs["answer_language"][:])))
    info["cross_lingual_pairs"] = info["pairs"] - info["monolingual_pairs"]
    return pairs, heldout, info
