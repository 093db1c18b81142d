"""A training-free language-bias correction: centre every language's embeddings, then renormalise.

Part of the language bias of a multilingual encoder is a constant offset per language: all
German sentences share a component that no English sentence has, so a question scores its
own language's candidates a little higher whatever they say. Subtracting each language's
mean embedding removes that offset without any training (Libovický et al., 2020, "On the
language neutrality of pre-trained multilingual representations", used the same idea for
sentence retrieval). Whether it also lowers the rank distance of LAReQA, and what it costs
monolingually, is what :func:`centered_evaluation` measures.

The means use no relevance labels. For each language of the evaluation set they come from
texts of the *training* data set when that language occurs in it (its questions for the
query side, its candidate sentences for the passage side), and otherwise from the
unlabelled texts of the evaluation set itself (its questions, its candidate pool): the
result records which (``means_from``). Questions and candidates get separate means because
E5 encodes them with different prompts (``query: `` / ``passage: ``).

No library offers this, so it is hand-written; it is a dozen lines of numpy
(:func:`hybrid_utils.metrics.language_means`, :func:`hybrid_utils.metrics.center_by_language`).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from .metrics import center_by_language, language_means

__all__ = ["POSTPROCESSES", "MEAN_SAMPLE", "centering_means", "centered_evaluation"]

#: the post-processing variants of an evaluation: ``none`` (the embeddings as they are) and ``center``
POSTPROCESSES = ("none", "center")
#: texts per language and side (questions / candidates) from which a language's mean embedding is estimated
MEAN_SAMPLE = 500
#: metrics kept for a post-processed evaluation (the keys of :func:`hybrid_utils.evaluation.evaluate_lareqa`)
CENTERED_KEYS = ("mono_map", "cross_map", "multilingual_map", "language_bias", "mono_map_micro", "cross_map_micro",
                 "multilingual_map_micro", "language_bias_micro", "recall_at_1", "recall_at_10",
                 "multilingual_map_by_language", "language_bias_by_language", "per_question", "per_query",
                 "probe_accuracy", "probe_chance")


def _sample(values: list, size: int, seed: int) -> list:
    if len(values) <= size:
        return values
    rows = np.random.default_rng(seed).choice(len(values), size=size, replace=False)
    return [values[i] for i in sorted(rows)]


def _by_language(values: list[str], languages: list[str]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for value, language in zip(values, languages):
        grouped.setdefault(language, []).append(value)
    return grouped


def centering_means(encode: Callable[[list[str], str], np.ndarray], eval_dataset, train_dataset=None,
                    sample: int = MEAN_SAMPLE, seed: int = 0) -> dict:
    """Per-language mean query and passage embeddings, estimated without relevance labels.

    Args:
        encode: ``encode(texts, prompt_name) -> np.ndarray`` with the model being evaluated
            (``prompt_name`` is ``"query"`` or ``"passage"``); rows need not be normalised.
        eval_dataset: The :class:`~hybrid_utils.data.LAReQADataset` being evaluated.
        train_dataset: The training data set of the protocol (None: every language from the
            evaluation set's own unlabelled texts).
        sample: Texts per language and side. Defaults to :data:`MEAN_SAMPLE`.
        seed: Seed of the sample.

    Returns:
        dict: ``{"query": {language: mean}, "passage": {language: mean}, "means_from": {language: source}}``
        with ``source`` the name of the data set the means came from.
    """
    sources = {}
    texts: dict[str, list[tuple[str, str]]] = {"query": [], "passage": []}
    train_languages = set(getattr(train_dataset, "languages", None) or [])
    grouped: dict[tuple[int, str], dict[str, list[str]]] = {}  # each data set's columns are read once
    for lang in eval_dataset.languages:
        source = train_dataset if lang in train_languages else eval_dataset
        sources[lang] = str(source.name)
        for side, table, column in (("query", source.questions, "text"), ("passage", source.candidates, "sentence")):
            if (id(source), side) not in grouped:
                grouped[id(source), side] = _by_language(table[column][:], table["language"][:])
            texts[side] += [(lang, t) for t in _sample(grouped[id(source), side].get(lang, []), sample, seed)]
    out = {"means_from": sources}
    for side, pairs in texts.items():
        embeddings = encode([t for _, t in pairs], side)
        norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
        out[side] = language_means(embeddings / np.maximum(norms, 1e-12), [lang for lang, _ in pairs])
    return out


def centered_evaluation(question_embeddings: np.ndarray, candidate_embeddings: np.ndarray, eval_dataset,
                        means: dict, **evaluate_kwargs) -> dict:
    """LAReQA metrics of the language-centred embeddings (see the module docstring).

    Returns the :data:`CENTERED_KEYS` of :func:`hybrid_utils.evaluation.evaluate_lareqa` on the
    centred embeddings, plus ``means_from`` (where each language's means came from).
    """
    from .evaluation import evaluate_lareqa

    questions = center_by_language(question_embeddings, list(eval_dataset.questions["language"][:]), means["query"])
    candidates = center_by_language(candidate_embeddings, list(eval_dataset.candidates["language"][:]), means["passage"])
    result = evaluate_lareqa(None, eval_dataset, embeddings=(questions, candidates), show_progress_bar=False,
                             **evaluate_kwargs)
    return {**{key: result.get(key) for key in CENTERED_KEYS}, "means_from": means["means_from"]}
