"""How much language information sentence embeddings carry: measures that tell models apart.

The question behind them: does a multilingual retriever encode *what* a sentence says, or also
(and how strongly) *which language* it is written in? Adversarial training tries to remove the
language; hybrid batches try to make it irrelevant to the ranking. Three measures, all on the
candidate (answer) sentences of a LAReQA evaluation set:

* **Raw probe** (``probe_accuracy``, :func:`probe_accuracy`): a logistic regression predicts the
  language of an L2-normalised sentence embedding; train/test split by translation group, so the
  translations of an answer are never on both sides. It **saturates** (0.999 for every model on
  XQuAD-R): a constant offset per language (all German sentences share a component no English
  sentence has) is enough to identify the language, and every model we train keeps some offset.
  The probe then cannot tell a model with a small offset from one with a large one.
* **Centred probe** (``probe_accuracy_centered``, :func:`centered_probe_accuracy`): a language
  probe after subtracting each language's mean embedding (:func:`hybrid_utils.metrics.center_by_language`;
  centring and probe follow Libovický et al., 2020, "On the language neutrality of pre-trained
  multilingual representations", Findings of EMNLP). What it still finds is language information
  *beyond* the offset, which a training-free centring cannot remove. The means come from the
  probe's training half, so nothing is estimated on the test half. The classifier is a
  k-nearest-neighbour vote (cosine, k = :data:`CENTERED_PROBE_NEIGHBOURS`), not the logistic
  regression of the raw probe, because a *linear* probe is blind by construction here: the
  logistic regression's optimum solves ``sum_i (p_i - y_i) x_i = 0`` (the predicted class
  moments match the true ones), and when every language's training mean is zero the constant
  classifier ``w = 0`` solves it; the loss is convex, so that is the optimum and the accuracy is
  chance for *any* embeddings (0.096 on XQuAD-R with multilingual-e5-small; the kNN probe: 0.40,
  chance 0.09). A linear probe after centring only sees means that differ from the centring
  means: the 0.48 of ``result["postprocess"]["center"]["probe_accuracy"]`` comes from centring
  XQuAD-R with means of the *training* set (MLQA-R) for 7 of its 11 languages, so it mostly
  measures how far those means are from XQuAD-R's. ``classifier="logistic"`` keeps that variant.
* **Translation margin** (``translation_margin``, :func:`translation_margin`): for each sentence
  with a known translation, its mean cosine to its translations minus its mean cosine to the other
  sentences of its own language. Positive: translations are closer than same-language
  non-translations (language-neutral, the "strong alignment" LAReQA asks for: Roy et al., 2020,
  "LAReQA: Language-agnostic answer retrieval from a multilingual pool", EMNLP); negative: the
  language dominates the meaning. Unlike the probes it needs no classifier and no split, and it is
  graded, not saturated. No library computes it, so it is hand-written (numpy with per-language
  sum vectors and a sparse translation matrix, never a dense n x n matrix: 13k sentences take
  milliseconds; the tests check it against a plain double loop).

Translations: LAReQA links sentences across languages only through the questions. The answer
sentences of the language versions of one question id translate each other (XQuAD-R: every id in
all 11 languages; MLQA-R: an id in 2 to 7 of its 7 languages). :func:`answer_groups` lists the ids
each candidate answers, for the margin; the other candidate sentences have no known translation
and count only as other sentences of their language. The probes split by
:func:`translation_groups` (ids sharing an answer sentence joined), so that no translation of a
test sentence is trained on.

Example::

    >>> q, c = dataset.questions, dataset.candidates
    >>> groups = answer_groups(q["id"], q["answer_id"], c["id"])
    >>> translation_margin(candidate_embeddings, c["language"], groups)["translation_margin"]
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .metrics import center_by_language, language_means, normalize_rows

__all__ = ["PROBE_KEYS", "MARGIN_KEYS", "CENTERED_PROBE_NEIGHBOURS", "translation_groups", "answer_groups",
           "probe_split", "probe_accuracy", "centered_probe_accuracy", "translation_margin",
           "language_information_metrics"]

#: the fields of the raw probe in an evaluation result (all None when the probe is off or has too little data)
PROBE_KEYS = ("probe_accuracy", "probe_chance", "probe_n_train", "probe_n_test")
#: neighbours of the centred probe's k-nearest-neighbour vote (see the module docstring)
CENTERED_PROBE_NEIGHBOURS = 10
#: the fields of the translation margin in an evaluation result
MARGIN_KEYS = ("translation_margin", "translation_margin_by_language", "translation_margin_n")


def translation_groups(question_ids: Sequence, answer_ids: Sequence, candidate_ids: Sequence,
                       candidate_languages: Sequence[str]) -> np.ndarray:
    """The translation group of every candidate sentence: ``(n_candidates,)`` int64, -1 for none.

    Only question ids with an answer sentence in at least two languages count (an id keeps its
    first answer row per language). A group is a connected component of the graph "id -- its answer
    sentences", so the translations of an id are together, and so are ids that share an answer
    sentence. scipy finds the components.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    c_index = {cid: i for i, cid in enumerate(candidate_ids)}
    languages = list(candidate_languages)
    answers: dict[str, dict[str, int]] = {}  # id -> {language: candidate row of its answer sentence}
    for qid, aid in zip(question_ids, answer_ids):
        row = c_index.get(aid)
        if row is not None:
            answers.setdefault(str(qid), {}).setdefault(languages[row], row)
    pairs = [(k, row) for k, qid in enumerate(sorted(answers)) if len(answers[qid]) >= 2
             for row in answers[qid].values()]
    groups = np.full(len(languages), -1, dtype=np.int64)
    if not pairs:
        return groups
    id_node = np.array([k for k, _ in pairs])
    c_node = np.array([row for _, row in pairs]) + len(answers)
    n_nodes = len(answers) + len(languages)
    graph = coo_matrix((np.ones(len(pairs)), (id_node, c_node)), shape=(n_nodes, n_nodes))
    component = connected_components(graph, directed=False)[1]
    rows = np.unique(c_node) - len(answers)
    groups[rows] = component[rows + len(answers)]
    return groups


def probe_split(groups: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray] | None:
    """Rows of the probe's training and test halves: the grouped rows split 50/50 by group.

    scikit-learn's ``GroupShuffleSplit`` with ``random_state=seed``; None with fewer than two groups.
    """
    from sklearn.model_selection import GroupShuffleSplit

    groups = np.asarray(groups)
    rows = np.flatnonzero(groups >= 0)
    if np.unique(groups[rows]).size < 2:
        return None
    train, test = next(GroupShuffleSplit(n_splits=1, test_size=0.5, random_state=seed).split(rows, groups=groups[rows]))
    return rows[train], rows[test]


def _fit_probe(x: np.ndarray, labels: np.ndarray, train: np.ndarray, test: np.ndarray) -> float:
    """Accuracy on ``test`` of a logistic regression (default C) fitted on ``train``, rounded to 5 decimals."""
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    # One BLAS/OpenMP thread: the small lbfgs problem is ~30x slower with competing thread pools.
    with threadpool_limits(limits=1):
        classifier = LogisticRegression(max_iter=2000).fit(x[train], labels[train])
    return round(float(classifier.score(x[test], labels[test])), 5)


def probe_accuracy(embeddings: np.ndarray, languages: Sequence[str], groups: np.ndarray, seed: int = 0) -> dict:
    """The raw language-identification probe (``probe_accuracy`` of :func:`hybrid_utils.evaluation.evaluate_lareqa`).

    Args:
        embeddings: ``(n, dim)`` candidate embeddings (L2-normalised here).
        languages: the language of each row.
        groups: translation group per row (:func:`translation_groups`); rows with -1 are left out.
        seed: seed of the split (:func:`probe_split`).

    Returns:
        dict: :data:`PROBE_KEYS`: test accuracy, chance (1 / languages in the probe), training and
        test sentences; all None with fewer than two groups or one language in the training half.
    """
    split = probe_split(groups, seed)
    labels = np.asarray(languages)
    if split is None or len(set(labels[split[0]])) < 2:
        return dict.fromkeys(PROBE_KEYS)
    train, test = split
    return {"probe_accuracy": _fit_probe(normalize_rows(embeddings), labels, train, test),
            "probe_chance": round(1.0 / len(set(labels[np.concatenate([train, test])])), 5),
            "probe_n_train": int(train.size), "probe_n_test": int(test.size)}


def _fit_neighbours(x: np.ndarray, labels: np.ndarray, train: np.ndarray, test: np.ndarray) -> float:
    """Accuracy on ``test`` of a k-nearest-neighbour vote (cosine) among ``train``, rounded to 5 decimals."""
    from sklearn.neighbors import KNeighborsClassifier

    k = min(CENTERED_PROBE_NEIGHBOURS, train.size)
    classifier = KNeighborsClassifier(n_neighbors=k, metric="cosine").fit(x[train], labels[train])
    return round(float(classifier.score(x[test], labels[test])), 5)


def centered_probe_accuracy(embeddings: np.ndarray, languages: Sequence[str], groups: np.ndarray, seed: int = 0,
                            means: dict[str, np.ndarray] | None = None, classifier: str = "knn") -> float | None:
    """A language probe, split as :func:`probe_accuracy`, after removing each language's mean embedding.

    The L2-normalised rows are centred and renormalised with
    :func:`hybrid_utils.metrics.center_by_language`. scikit-learn does the fitting.

    Args:
        embeddings, languages, groups, seed: as for :func:`probe_accuracy`.
        means: ``{language: (dim,) mean of normalised embeddings}``, e.g.
            ``centering_means(...)["passage"]`` of :mod:`hybrid_utils.postprocess`. Default: the means of
            the probe's training half, so that no statistic of the test half is used. A language
            without a mean (none of its sentences in the training half) is left uncentred.
        classifier: ``"knn"`` (default: k-nearest-neighbour vote, cosine, k =
            :data:`CENTERED_PROBE_NEIGHBOURS`) or ``"logistic"`` (the raw probe's logistic regression,
            which reads chance whenever the means are the training half's: see the module docstring).

    Returns:
        float | None: the test accuracy (5 decimals); None where :func:`probe_accuracy` is None.
    """
    if classifier not in ("knn", "logistic"):
        raise ValueError(f"classifier must be 'knn' or 'logistic', got {classifier!r}")
    split = probe_split(groups, seed)
    labels = np.asarray(languages)
    if split is None or len(set(labels[split[0]])) < 2:
        return None
    train, test = split
    x = normalize_rows(embeddings)
    means = dict(language_means(x[train], labels[train]) if means is None else means)
    for lang in set(labels.tolist()) - set(means):
        means[lang] = np.zeros(x.shape[1], dtype=np.float32)
    fit = _fit_neighbours if classifier == "knn" else _fit_probe
    return fit(center_by_language(x, labels.tolist(), means), labels, train, test)


def answer_groups(question_ids: Sequence, answer_ids: Sequence, candidate_ids: Sequence) -> list[tuple]:
    """The question ids each candidate sentence answers (``()`` for none): :func:`translation_margin`'s ``group_ids``.

    Two sentences in different languages that answer the same question id translate each other.
    Unlike :func:`translation_groups` (connected components, needed to keep the probe's split clean)
    this links a sentence only to the answers of its *own* ids: in XQuAD-R the components join many
    ids of one paragraph (8,504 answer sentences in 486 components), which would count neighbouring
    sentences as translations.
    """
    c_index = {cid: i for i, cid in enumerate(candidate_ids)}
    ids: list[list] = [[] for _ in range(len(candidate_ids))]
    for qid, aid in zip(question_ids, answer_ids):
        row = c_index.get(aid)
        if row is not None and str(qid) not in ids[row]:
            ids[row].append(str(qid))
    return [tuple(found) for found in ids]


def _group_keys(group) -> tuple:
    """The groups of one sentence: None, a negative integer or an empty collection mean none."""
    if group is None or (isinstance(group, (int, np.integer)) and group < 0):
        return ()
    if isinstance(group, (list, tuple, set, frozenset, np.ndarray)):
        return tuple(key for g in group for key in _group_keys(g))
    return (group,)


def _translation_matrix(group_ids: Sequence, lang: np.ndarray):
    """Sparse ``(n, n)`` 0/1 matrix: 1 where two sentences share a group and differ in language."""
    from scipy.sparse import csr_matrix

    rows, cols, code = [], [], {}
    for i, group in enumerate(group_ids):
        for key in _group_keys(group):
            rows.append(i)
            cols.append(code.setdefault(key, len(code)))
    n = len(lang)
    member = csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, len(code)))
    shared = (member @ member.T).tocoo()
    keep = lang[shared.row] != lang[shared.col]
    return csr_matrix((np.ones(int(keep.sum())), (shared.row[keep], shared.col[keep])), shape=(n, n))


def translation_margin(embeddings: np.ndarray, languages: Sequence[str], group_ids: Sequence) -> dict:
    """Mean cosine to a sentence's translations minus mean cosine to the other sentences of its language.

    For every sentence ``i`` with at least one translation (a sentence in another language that
    shares a group with it) and at least one other sentence in its language:
    ``margin_i = mean_{j translation of i} cos(i, j) - mean_{k != i, same language} cos(i, k)``.
    The second mean is ``(x_i . S_lang - x_i . x_i) / (n_lang - 1)`` with the language's sum vector
    ``S_lang`` and the first ``x_i . (T @ X)_i / |T_i|`` with a sparse translation matrix ``T``: no
    n x n dense matrix, exactly equal to the double loop. Hand-written: no library offers it.

    Args:
        embeddings: ``(n, dim)`` sentence embeddings (L2-normalised here; cosine = dot product).
        languages: the language of each row.
        group_ids: per row, a group (any hashable) or a collection of groups; rows in other
            languages sharing a group translate each other (e.g. :func:`answer_groups`: the
            question ids a sentence answers). None, a negative integer or ``()``: no known
            translation (such rows still count as other sentences of their language).

    Returns:
        dict: ``translation_margin`` (macro average over languages of the per-language means; None
        without any sentence), ``translation_margin_micro`` (mean over sentences),
        ``translation_margin_by_language`` (``{language: mean}``) and ``n_sentences`` (sentences with
        a margin). Large = language-neutral; about 0 or below = the language outweighs the meaning.
    """
    x = normalize_rows(np.asarray(embeddings)).astype(np.float64)
    lang_names, lang = np.unique(np.asarray(languages, dtype=str), return_inverse=True)
    if len(lang) != len(x) or len(group_ids) != len(x):
        raise ValueError(f"{len(x)} embeddings, {len(lang)} languages and {len(group_ids)} group ids")
    translations = _translation_matrix(group_ids, lang)
    n_translations = np.diff(translations.indptr)
    lang_n = np.bincount(lang, minlength=len(lang_names))
    rows = np.flatnonzero((n_translations > 0) & (lang_n[lang] > 1))
    if rows.size == 0:
        return {"translation_margin": None, "translation_margin_micro": None,
                "translation_margin_by_language": {}, "n_sentences": 0}
    lang_sum = np.stack([x[lang == k].sum(axis=0) for k in range(len(lang_names))])
    xr = x[rows]
    to_translations = np.einsum("ij,ij->i", xr, np.asarray(translations[rows] @ x)) / n_translations[rows]
    to_others = ((np.einsum("ij,ij->i", xr, lang_sum[lang[rows]]) - np.einsum("ij,ij->i", xr, xr))
                 / (lang_n[lang[rows]] - 1))
    margin = to_translations - to_others
    by_language = {str(lang_names[k]): float(margin[lang[rows] == k].mean()) for k in np.unique(lang[rows])}
    return {"translation_margin": float(np.mean(list(by_language.values()))),
            "translation_margin_micro": float(margin.mean()), "translation_margin_by_language": by_language,
            "n_sentences": int(rows.size)}


def language_information_metrics(question_ids: Sequence, answer_ids: Sequence, candidate_ids: Sequence,
                                 candidate_embeddings: np.ndarray, candidate_languages: Sequence[str],
                                 seed: int = 0, probe: bool = True) -> dict:
    """The language-information fields of :func:`hybrid_utils.evaluation.evaluate_lareqa`.

    Returns:
        dict: :data:`PROBE_KEYS` and ``probe_accuracy_centered`` (None when ``probe`` is False), and
        :data:`MARGIN_KEYS` (``translation_margin_n``: sentences with a margin), computed always:
        the margin takes milliseconds.
    """
    languages = list(candidate_languages)
    groups = translation_groups(question_ids, answer_ids, candidate_ids, languages)
    out = {**dict.fromkeys(PROBE_KEYS), "probe_accuracy_centered": None}
    if probe:
        out.update(probe_accuracy(candidate_embeddings, languages, groups, seed))
        out["probe_accuracy_centered"] = centered_probe_accuracy(candidate_embeddings, languages, groups, seed)
    margin = translation_margin(candidate_embeddings, languages, answer_groups(question_ids, answer_ids, candidate_ids))
    out.update({"translation_margin": margin["translation_margin"],
                "translation_margin_by_language": margin["translation_margin_by_language"],
                "translation_margin_n": margin["n_sentences"]})
    return out
