"""Tests of hybrid_utils.language_information: the centred probe and the translation margin.

The synthetic embeddings are ``meaning of the group + offset of the language + noise``. With an
offset of 0.7 (per dimension, meaning and offset both ~N(0, 1) scaled) the raw probe reads 1.0:
the offset alone identifies the language. Centring removes exactly that offset, so the centred
probe falls to chance, while the translation margin says how much the meaning still outweighs
the language in the cosine: (1 - 0.7^2) / (1 + 0.7^2 + 0.3^2) ~ 0.32 in expectation. Languages
that differ in the shape of their clouds rather than in their means (``shaped``) show why the
centred probe votes among neighbours: a logistic regression on such centred data reads chance.
"""

import json
import time

import numpy as np
import pytest

from hybrid_utils.data import load_lareqa
from hybrid_utils.evaluation import evaluate_lareqa
from hybrid_utils.results import load_result, save_result
from hybrid_utils.language_information import (answer_groups, centered_probe_accuracy, probe_accuracy,
                                               translation_groups, translation_margin)

LANGS = ("de", "en", "fr", "zh")


def synthetic(n_groups=150, offset=0.7, noise=0.3, shared=True, dim=64, seed=0):
    """``(embeddings, languages, groups)``: one sentence per group and language.

    ``shared``: the sentences of a group share one meaning vector (translations); otherwise every
    sentence has its own, so the groups link unrelated sentences.
    """
    rng = np.random.default_rng(seed)
    shift = {lang: offset * rng.standard_normal(dim) for lang in LANGS}
    meaning = rng.standard_normal((n_groups, dim))
    emb, languages, groups = [], [], []
    for g in range(n_groups):
        for lang in LANGS:
            m = meaning[g] if shared else rng.standard_normal(dim)
            emb.append(m + shift[lang] + noise * rng.standard_normal(dim))
            languages.append(lang)
            groups.append(g)
    return np.array(emb, dtype=np.float32), languages, np.array(groups)


def test_offset_saturates_the_raw_probe_but_not_the_centred_probe_or_the_margin():
    emb, langs, groups = synthetic()
    raw = probe_accuracy(emb, langs, groups)
    assert raw["probe_accuracy"] >= 0.98
    assert raw["probe_chance"] == 0.25 and raw["probe_n_train"] + raw["probe_n_test"] == 600
    centred = centered_probe_accuracy(emb, langs, groups)
    assert centred <= 0.25 + 0.08  # chance: nothing but the offset told the languages apart
    assert centered_probe_accuracy(emb, langs, groups, classifier="logistic") <= 0.25 + 0.08
    margin = translation_margin(emb, langs, groups)
    assert 0.2 < margin["translation_margin"] < 0.45
    assert margin["n_sentences"] == 600 and set(margin["translation_margin_by_language"]) == set(LANGS)
    assert all(v > 0.15 for v in margin["translation_margin_by_language"].values())


def test_centred_probe_with_given_means():
    emb, langs, groups = synthetic()
    x = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    means = {lang: x[np.array(langs) == lang].mean(axis=0) for lang in LANGS}
    assert centered_probe_accuracy(emb, langs, groups, means=means) <= 0.25 + 0.08
    # means that remove nothing leave the raw probe
    zeros = {lang: np.zeros(emb.shape[1], dtype=np.float32) for lang in LANGS}
    raw = probe_accuracy(emb, langs, groups)["probe_accuracy"]
    assert centered_probe_accuracy(emb, langs, groups, means=zeros, classifier="logistic") == raw
    assert centered_probe_accuracy(emb, langs, groups, means=zeros) >= 0.98
    with pytest.raises(ValueError):
        centered_probe_accuracy(emb, langs, groups, classifier="svm")


def shaped(n_groups=150, dim=64, seed=0):
    """Shared meaning per group, and each language varies in its own 16 dimensions: no offset at all."""
    rng = np.random.default_rng(seed)
    meaning = rng.standard_normal((n_groups, dim))
    emb, languages, groups = [], [], []
    for g in range(n_groups):
        for k, lang in enumerate(LANGS):
            style = np.zeros(dim)
            style[16 * k:16 * (k + 1)] = rng.standard_normal(16)
            emb.append(0.5 * meaning[g] + style)
            languages.append(lang)
            groups.append(g)
    return np.array(emb, dtype=np.float32), languages, np.array(groups)


def test_a_linear_probe_after_centring_is_blind_but_the_neighbour_probe_is_not():
    emb, langs, groups = shaped()
    # the languages differ in the shape of their clouds, not in their means: the neighbours see it
    assert centered_probe_accuracy(emb, langs, groups) >= 0.85
    # the logistic regression cannot: with every training mean at zero, w = 0 is its optimum
    assert centered_probe_accuracy(emb, langs, groups, classifier="logistic") <= 0.25 + 0.1


def test_margin_is_graded_where_the_probe_is_saturated():
    probes, margins = [], []
    for offset in (0.5, 1.0, 1.5):
        emb, langs, groups = synthetic(offset=offset)
        probes.append(probe_accuracy(emb, langs, groups)["probe_accuracy"])
        margins.append(translation_margin(emb, langs, groups)["translation_margin"])
    assert min(probes) >= 0.98
    assert margins[0] > 0.4 and margins[0] > margins[1] + 0.3 > margins[2] + 0.6
    assert margins[2] < -0.3  # the offset outweighs the meaning: own language closer than translations


def test_separated_languages_without_shared_meaning_have_no_positive_margin():
    emb, langs, groups = synthetic(shared=False)
    assert probe_accuracy(emb, langs, groups)["probe_accuracy"] >= 0.98
    margin = translation_margin(emb, langs, groups)
    assert margin["translation_margin"] <= 0
    assert margin["translation_margin"] == pytest.approx(-0.34, abs=0.08)  # -0.7^2 / (1 + 0.7^2 + 0.3^2)
    # no offset and no shared meaning: nothing links the translations, nothing the languages
    emb, langs, groups = synthetic(shared=False, offset=0.0)
    assert translation_margin(emb, langs, groups)["translation_margin"] == pytest.approx(0, abs=0.02)


def naive_margin(emb, langs, group_ids):
    """The definition as a plain double loop over sentences."""
    def keys(g):
        if g is None or (isinstance(g, int) and g < 0):
            return set()
        return set(g) if isinstance(g, (tuple, list, set)) else {g}

    x = [np.asarray(e, dtype=np.float64) / np.linalg.norm(e) for e in emb]
    per_lang = {}
    for i in range(len(x)):
        translations = [float(x[i] @ x[j]) for j in range(len(x))
                        if langs[j] != langs[i] and keys(group_ids[i]) & keys(group_ids[j])]
        others = [float(x[i] @ x[k]) for k in range(len(x)) if k != i and langs[k] == langs[i]]
        if translations and others:
            per_lang.setdefault(langs[i], []).append(np.mean(translations) - np.mean(others))
    return per_lang


def test_margin_equals_a_double_loop():
    rng = np.random.default_rng(3)
    langs = ["de", "en", "en", "fr", "de", "fr", "en", "de", "fr", "en"]
    groups = [("a",), ("a", "b"), "b", "a", None, ["b", "c"], -1, "c", (), "d"]
    emb = rng.standard_normal((len(langs), 5)) * rng.uniform(0.5, 3, (len(langs), 1))  # unnormalised rows
    per_lang = naive_margin(emb, langs, groups)
    out = translation_margin(emb, langs, groups)
    assert out["n_sentences"] == sum(len(v) for v in per_lang.values()) == 6
    assert out["translation_margin_by_language"] == pytest.approx({k: np.mean(v) for k, v in per_lang.items()})
    assert out["translation_margin"] == pytest.approx(np.mean([np.mean(v) for v in per_lang.values()]))
    assert out["translation_margin_micro"] == pytest.approx(np.mean([m for v in per_lang.values() for m in v]))


def test_margin_without_translations_is_none():
    out = translation_margin(np.eye(3), ["de", "en", "fr"], [None, -1, ()])
    assert out["translation_margin"] is None and out["n_sentences"] == 0
    with pytest.raises(ValueError):
        translation_margin(np.eye(3), ["de", "en"], [1, 1, 1])


def test_margin_is_fast_on_an_xquad_r_sized_pool():
    rng = np.random.default_rng(0)
    n_groups, n_langs = 1190, 11  # 13,090 sentences of 384 dims, as XQuAD-R
    langs = [f"l{k}" for _ in range(n_groups) for k in range(n_langs)]
    groups = [g for g in range(n_groups) for _ in range(n_langs)]
    emb = rng.standard_normal((len(langs), 384)).astype(np.float32)
    start = time.perf_counter()
    out = translation_margin(emb, langs, groups)
    assert time.perf_counter() - start < 10
    assert out["n_sentences"] == 13090 and abs(out["translation_margin"]) < 0.01  # random: no structure


class CharNgramEncoder:
    """Cheap deterministic surface-form encoder: hashed character 1-3-grams, randomly projected to 64 dims."""

    def __init__(self, dim=64, seed=0):
        from sklearn.feature_extraction.text import HashingVectorizer

        self.vectorizer = HashingVectorizer(analyzer="char_wb", ngram_range=(1, 3), n_features=2 ** 14,
                                            alternate_sign=False, norm=None)
        self.projection = np.random.default_rng(seed).standard_normal((2 ** 14, dim)).astype(np.float32)

    def __call__(self, texts, prompt_name):
        return np.asarray(self.vectorizer.transform(texts) @ self.projection, dtype=np.float32)


@pytest.mark.parametrize("name, n_ids", [("xquad-r", 40), ("mlqa-r", 60)])
def test_real_lareqa_subset_has_the_new_fields(tmp_path, name, n_ids):
    dataset = load_lareqa(name, limit_questions=n_ids)
    result = evaluate_lareqa(CharNgramEncoder(), dataset, show_progress_bar=False)
    q = dataset.questions
    versions = {}
    for qid in q["id"]:
        versions[qid] = versions.get(qid, 0) + 1
    with_translation = {a for qid, a in zip(q["id"], q["answer_id"]) if versions[qid] >= 2}
    assert result["translation_margin_n"] == len(with_translation) > 50
    assert set(result["translation_margin_by_language"]) <= set(dataset.languages)
    by_language = result["translation_margin_by_language"]
    assert result["translation_margin"] == pytest.approx(np.mean(list(by_language.values())))
    # character n-grams are surface form: sentences of one script share n-grams, translations mostly do not
    assert -1 < result["translation_margin"] < 0
    assert 0.8 <= result["probe_accuracy"] <= 1
    assert 0 <= result["probe_accuracy_centered"] < result["probe_accuracy"]
    # the probe's groups are the answers' connected components; the split itself is unchanged
    groups = translation_groups(q["id"], q["answer_id"], dataset.candidates["id"], dataset.candidates["language"])
    assert result["probe_n_train"] + result["probe_n_test"] == int((groups >= 0).sum())
    answered = answer_groups(q["id"], q["answer_id"], dataset.candidates["id"])
    assert sum(bool(ids) for ids in answered) == len(set(q["answer_id"]))
    path = save_result(result, tmp_path / "r.json")
    assert load_result(path)["translation_margin_by_language"] == json.loads(json.dumps(by_language))
    off = evaluate_lareqa(CharNgramEncoder(), dataset, show_progress_bar=False, probe=False)
    assert off["probe_accuracy_centered"] is None and off["probe_accuracy"] is None
    assert off["translation_margin"] == pytest.approx(result["translation_margin"])
