"""The training-free correction of hybrid_utils.postprocess: centring each language's embeddings."""

import numpy as np
import pytest
from datasets import Dataset

from hybrid_utils.data import LAReQADataset
from hybrid_utils.evaluation import evaluate_lareqa
from hybrid_utils.metrics import center_by_language, language_means
from hybrid_utils.postprocess import centered_evaluation, centering_means


def parallel_dataset(n_ids=40, languages=("de", "en", "fr"), name="toy"):
    """Every id has one question and one answer sentence in every language."""
    questions, candidates = [], []
    for k in range(n_ids):
        answers = [f"{lang}-{k:03d}" for lang in languages]
        for lang in languages:
            questions.append({"id": f"q{k:03d}", "language": lang, "text": f"question {k} {lang}",
                              "answer_id": f"{lang}-{k:03d}", "relevant_ids": answers})
            candidates.append({"id": f"{lang}-{k:03d}", "language": lang, "sentence": f"answer {k} {lang}",
                               "context": "", "paragraph_id": f"p{k}"})
    return LAReQADataset(name=name, languages=list(languages), questions=Dataset.from_list(questions),
                         candidates=Dataset.from_list(candidates))


def biased_embeddings(dataset, offset=1.5, noise=0.6, dim=32, seed=0):
    """Meaning (one random vector per id) plus a constant offset per language plus noise."""
    rng = np.random.default_rng(seed)
    meaning = {qid: rng.standard_normal(dim) for qid in dict.fromkeys(dataset.questions["id"])}
    shift = {lang: offset * rng.standard_normal(dim) for lang in dataset.languages}

    def embed(ids, langs):
        rows = np.stack([meaning[i] + shift[l] + noise * rng.standard_normal(dim) for i, l in zip(ids, langs)])
        return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)

    q = embed(dataset.questions["id"], dataset.questions["language"])
    c = embed([f"q{cid.split('-')[1]}" for cid in dataset.candidates["id"]],
              dataset.candidates["language"])
    return q, c


def test_centering_removes_a_constant_language_offset():
    dataset = parallel_dataset()
    q, c = biased_embeddings(dataset)
    raw = evaluate_lareqa(None, dataset, embeddings=(q, c), show_progress_bar=False, probe=False)
    means = {"query": language_means(q, dataset.questions["language"]),
             "passage": language_means(c, dataset.candidates["language"]), "means_from": {}}
    centered = centered_evaluation(q, c, dataset, means, probe=False)
    # the offset makes every question prefer its own language: a large rank distance
    assert raw["language_bias"] > 30
    assert centered["language_bias"] < raw["language_bias"] / 3
    assert centered["multilingual_map"] > raw["multilingual_map"] + 0.2
    # and within one language nothing is lost: the offset is the same for the whole pool
    assert centered["mono_map"] == pytest.approx(raw["mono_map"], abs=0.05)


def test_centered_rows_have_unit_norm_and_zero_language_mean():
    rng = np.random.default_rng(1)
    emb = rng.standard_normal((6, 4)).astype(np.float32)
    langs = ["de", "de", "de", "en", "en", "en"]
    means = language_means(emb, langs)
    np.testing.assert_allclose(means["de"], emb[:3].mean(axis=0), rtol=1e-6)
    out = center_by_language(emb, langs, means)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)
    raw_centered = emb[:3] - emb[:3].mean(axis=0)
    np.testing.assert_allclose(out[:3], raw_centered / np.linalg.norm(raw_centered, axis=1, keepdims=True), rtol=1e-5)


def test_a_language_without_a_mean_is_a_clear_error():
    with pytest.raises(ValueError, match=r"no mean embedding for language\(s\) \['fr'\]"):
        center_by_language(np.ones((2, 3)), ["de", "fr"], {"de": np.zeros(3)})


def test_means_come_from_the_training_set_where_it_has_the_language():
    evaluation = parallel_dataset(languages=("de", "en", "fr"), name="eval-set")
    training = parallel_dataset(n_ids=30, languages=("de", "en"), name="train-set")
    seen = []

    def encode(texts, side):
        seen.append((side, list(texts)))
        return np.ones((len(texts), 3), dtype=np.float32)

    means = centering_means(encode, evaluation, training, sample=10)
    assert means["means_from"] == {"de": "train-set", "en": "train-set", "fr": "eval-set"}
    queries = dict(seen)["query"]
    assert len(queries) == 30  # 10 per language
    assert sum(t.startswith("question") and t.endswith(" fr") for t in queries) == 10
    assert set(means["query"]) == set(means["passage"]) == {"de", "en", "fr"}
    # no training set: every language from the evaluation set's own (unlabelled) texts
    assert set(centering_means(encode, evaluation, None, sample=5)["means_from"].values()) == {"eval-set"}
