"""Tests of hybrid_utils.search: the faiss index (exact and HNSW) and searching a LAReQA pool."""

import numpy as np
import pytest

from hybrid_utils.data import load_lareqa, subset_lareqa
from hybrid_utils.search import RESULT_COLUMNS, PoolSearch, SearchIndex, encode_pool, search_pool


def unit_vectors(n, dim, seed):
    vectors = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


# --------------------------------------------------------------------------------------
# SearchIndex
# --------------------------------------------------------------------------------------
def test_exact_index_returns_the_numpy_top_k():
    corpus, queries = unit_vectors(500, 32, 0), unit_vectors(20, 32, 1)
    scores, indices = SearchIndex(corpus).search(queries, k=5)
    expected = np.argsort(-(queries @ corpus.T), axis=1)[:, :5]
    np.testing.assert_array_equal(indices, expected)
    np.testing.assert_allclose(scores, np.take_along_axis(queries @ corpus.T, expected, axis=1), rtol=1e-5)
    assert scores.shape == (20, 5) and np.all(np.diff(scores, axis=1) <= 0)


def test_hnsw_index_finds_almost_all_exact_neighbours():
    corpus, queries = unit_vectors(2000, 32, 2), unit_vectors(50, 32, 3)
    _, exact = SearchIndex(corpus).search(queries, k=10)
    _, approx = SearchIndex(corpus, kind="hnsw", hnsw_m=16, ef_search=64).search(queries, k=10)
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact)])
    assert recall >= 0.9


def test_index_accepts_a_single_query_vector():
    corpus = unit_vectors(10, 8, 4)
    _, indices = SearchIndex(corpus).search(corpus[3], k=1)
    assert indices.tolist() == [[3]]


def test_index_rejects_bad_input_with_clear_errors():
    corpus = unit_vectors(10, 8, 5)
    with pytest.raises(ValueError, match="kind must be one of"):
        SearchIndex(corpus, kind="ivf")
    with pytest.raises(ValueError, match="empty"):
        SearchIndex(np.zeros((0, 8), dtype=np.float32))
    index = SearchIndex(corpus)
    with pytest.raises(ValueError, match="dimension 4 but the index holds 8"):
        index.search(unit_vectors(2, 4, 6), k=3)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        index.search(corpus[:2], k=0)
    with pytest.raises(ValueError, match="at most 10"):
        index.search(corpus[:2], k=11)


# --------------------------------------------------------------------------------------
# Searching a LAReQA pool with the bundled model
# --------------------------------------------------------------------------------------
QUESTION_ID = "56beb4343aeaaa14008c925b"  # "How many points did the Panthers defense surrender?"


@pytest.fixture(scope="module")
def model():
    from hybrid_utils.encoder import load_encoder

    return load_encoder("bundled", device="cpu")


@pytest.fixture(scope="module")
def pool():
    """English and German sentences of the paragraphs of the first 120 XQuAD-R question ids (~200 sentences)."""
    dataset = load_lareqa("xquad-r", languages=["de", "en"])
    ids = list(dict.fromkeys(dataset.questions["id"]))[:120]
    assert QUESTION_ID in ids
    return subset_lareqa(dataset, ids)


@pytest.fixture(scope="module")
def searcher(model, pool):
    return PoolSearch(model, pool)


@pytest.mark.slow
def test_encode_pool_describes_every_candidate(model, pool):
    paragraph = subset_lareqa(pool, [QUESTION_ID])  # the question's paragraph, in English and German
    embeddings, frame = encode_pool(model, paragraph, languages=["en"])
    english = [cid for cid, lang in zip(paragraph.candidates["id"], paragraph.candidates["language"]) if lang == "en"]
    assert frame["candidate_id"].tolist() == english and len(english) > 3
    assert embeddings.shape == (len(english), 384)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    answer = pool.translations(QUESTION_ID)["en"]["answer"]
    answers = frame.loc[frame["sentence"] == answer, "question_ids"].iloc[0]
    assert QUESTION_ID in answers
    assert sum(len(ids) > 0 for ids in frame["question_ids"]) < len(frame)  # most sentences answer nothing
    with pytest.raises(ValueError, match="not in"):
        encode_pool(model, pool, languages=["fr"])


@pytest.mark.slow
def test_english_question_finds_its_english_answer_in_the_top_10(searcher, pool):
    english = pool.translations(QUESTION_ID)["en"]
    results = searcher.search(english["question"], k=10, question_id=QUESTION_ID)
    assert list(results.columns) == RESULT_COLUMNS
    assert results["rank"].tolist() == list(range(1, 11))
    assert results["score"].is_monotonic_decreasing
    hit = results[(results["language"] == "en") & results["relevant"]]
    assert hit["sentence"].tolist() == [english["answer"]]
    # the German translation's answer is relevant too, and nothing else is
    relevant = set(results.loc[results["relevant"], "candidate_id"])
    assert relevant <= {cid for qid, ids in zip(pool.questions["id"], pool.questions["relevant_ids"]) if qid == QUESTION_ID for cid in ids}


@pytest.mark.slow
def test_search_without_question_id_marks_nothing_relevant(searcher, pool):
    results = searcher.search(pool.translations(QUESTION_ID)["de"]["question"], k=3)
    assert len(results) == 3 and not results["relevant"].any()
    with pytest.raises(ValueError, match="not a question of"):
        searcher.search("anything", question_id="no-such-id")
    with pytest.raises(ValueError, match="non-empty"):
        searcher.search("  ")


@pytest.mark.slow
def test_search_pool_matches_pool_search_and_clamps_k(model, pool, searcher):
    question = pool.translations(QUESTION_ID)["en"]["question"]
    small = subset_lareqa(pool, [QUESTION_ID])
    once = search_pool(model, small, question, k=1000, question_id=QUESTION_ID, languages=["en"])
    assert len(once) == sum(lang == "en" for lang in small.candidates["language"])  # the whole pool, no error
    best = searcher.search(question, k=1, question_id=QUESTION_ID)
    assert once.iloc[0]["candidate_id"] == best.iloc[0]["candidate_id"]
    assert once.iloc[0]["relevant"]
