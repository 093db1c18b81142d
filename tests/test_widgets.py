"""The interactive search: the plain compare function, the session's caching and the widget.

``hybrid_utils.search.PoolSearch`` (another module) is replaced here by a small exact faiss search with
the same contract, so these tests check this module's own behaviour; the slow test uses the real
``PoolSearch`` when it is installed.
"""
import sys
import types

import faiss
import numpy as np
import pandas as pd
import pytest

from hybrid_utils import widgets
from hybrid_utils.data import load_lareqa, subset_lareqa


class StandInPoolSearch:
    """Exact inner-product search over the pool's answer sentences (the contract of hybrid_utils.search)."""

    built = []

    def __init__(self, model, dataset, languages=None, kind="exact"):
        keep = [i for i, lang in enumerate(dataset.candidates["language"]) if languages is None or lang in languages]
        self.candidates = dataset.candidates.select(keep)
        self.model, self.dataset = model, dataset
        self.relevant = {}
        for qid, ids in zip(dataset.questions["id"], dataset.questions["relevant_ids"]):
            self.relevant.setdefault(qid, set()).update(ids)
        embeddings = _embed(model, list(self.candidates["sentence"]), "passage")
        self.index = faiss.IndexFlatIP(embeddings.shape[1])
        self.index.add(embeddings)
        StandInPoolSearch.built.append((id(model), dataset.name))

    def search(self, question, k=10, question_id=None):
        scores, rows = self.index.search(_embed(self.model, [question], "query"), k)
        relevant = self.relevant.get(question_id, set())
        ids = [self.candidates["id"][int(r)] for r in rows[0]]
        return pd.DataFrame({"rank": range(1, len(ids) + 1), "score": scores[0],
                             "language": [self.candidates["language"][int(r)] for r in rows[0]],
                             "sentence": [self.candidates["sentence"][int(r)] for r in rows[0]],
                             "candidate_id": ids, "relevant": [c in relevant for c in ids]})


def _embed(model, texts, prompt):
    if not hasattr(model, "encode"):  # the fast tests' toy encoders are plain functions
        return np.ascontiguousarray(model(texts), dtype=np.float32)
    from hybrid_utils.encoder import encode_texts

    return encode_texts(model, texts, prompt, show_progress_bar=False)


def _letter_model(texts):
    """A toy encoder: bag of letters, unit norm; questions land near sentences that share their letters."""
    out = np.zeros((len(texts), 26), dtype=np.float32)
    for i, text in enumerate(texts):
        for ch in text.lower():
            if "a" <= ch <= "z":
                out[i, ord(ch) - 97] += 1
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


@pytest.fixture()
def stand_in(monkeypatch):
    module = types.ModuleType("hybrid_utils.search")
    module.PoolSearch = StandInPoolSearch
    monkeypatch.setitem(sys.modules, "hybrid_utils.search", module)
    StandInPoolSearch.built = []
    return StandInPoolSearch


@pytest.fixture(scope="module")
def small_pool():
    xquad = load_lareqa("xquad-r")
    ids = list(dict.fromkeys(xquad.questions["id"]))[:6]
    return subset_lareqa(xquad, ids, pool="paragraphs")


def _english(dataset, index=0):
    rows = [(t, q) for t, q, lang in zip(dataset.questions["text"], dataset.questions["id"],
                                         dataset.questions["language"]) if lang == "en"]
    return rows[index]


def test_compare_search_puts_models_side_by_side(stand_in, small_pool):
    text, qid = _english(small_pool)
    table = widgets.compare_search({"letters": _letter_model, "reversed": lambda t: _letter_model(t)[:, ::-1]},
                                   small_pool, text, k=5, question_id=qid)
    assert list(table.index) == [1, 2, 3, 4, 5]
    assert list(table.columns.get_level_values(0).unique()) == ["letters", "reversed"]
    assert list(table["letters"].columns) == ["language", "score", "relevant", "sentence"]
    assert table["letters"]["score"].is_monotonic_decreasing
    # a letter histogram reversed is the same similarity: both models rank identically
    assert table["letters"]["sentence"].tolist() == table["reversed"]["sentence"].tolist()
    english_only = widgets.compare_search({"letters": _letter_model}, small_pool, text, k=5, languages=["en"])
    assert set(english_only["letters"]["language"]) == {"en"}
    assert not english_only["letters"]["relevant"].any()  # no question id: nothing can be marked relevant


def test_compare_search_rejects_empty_input(stand_in, small_pool):
    with pytest.raises(ValueError, match="no models given"):
        widgets.compare_search({}, small_pool, "Who?")
    with pytest.raises(ValueError, match="question is empty"):
        widgets.compare_search({"letters": _letter_model}, small_pool, "   ")


def test_session_builds_each_index_once(stand_in, small_pool):
    session = widgets.SearchSession({"a": _letter_model, "b": _letter_model}, profile="smoke")
    session._pools["xquad-r"] = small_pool
    text, qid = _english(small_pool, 1)
    first = session.compare(text, ["a", "b"], pool="xquad-r", k=3, question_id=qid)
    again = session.compare(text, ["a", "b", "a"], pool="xquad-r", k=3, question_id=qid)
    assert len(stand_in.built) == 2  # one PoolSearch per (model, pool), reused by the second search
    pd.testing.assert_frame_equal(first, again)
    with pytest.raises(KeyError, match="unknown model 'c'"):
        session.model("c")


def test_find_models_lists_zero_shot_and_finished_runs(tmp_path):
    from hybrid_utils.profiles import get_profile

    profile = get_profile("smoke", runs_dir=str(tmp_path))
    base = tmp_path / "multilingual-e5-small"
    for name in ("hybrid-mlqa-r-seed1", "lambda-sweep/adversarial-mlqa-r-lambda1-seed1"):
        (base / name).mkdir(parents=True)
        (base / name / "train_config.json").write_text("{}")
        (base / name / "modules.json").write_text("[]")
    (base / "unfinished-run").mkdir()
    found = widgets.find_models(profile)
    assert found == {"zero-shot": "bundled", "hybrid-mlqa-r-seed1": str(base / "hybrid-mlqa-r-seed1"),
                     "lambda-sweep/adversarial-mlqa-r-lambda1-seed1":
                         str(base / "lambda-sweep/adversarial-mlqa-r-lambda1-seed1")}


def test_widget_search_shows_both_models_and_marks_relevant_hits(stand_in, small_pool):
    session = widgets.SearchSession({"letters": _letter_model, "other": _letter_model}, profile="smoke")
    session._pools.update({"xquad-r": small_pool, "mlqa-r": small_pool})
    box = widgets.search_widget(session=session, k=10)
    controls, examples, search_row, status, output = box.children
    question, button = search_row.children
    assert [c.value for c in controls.children] == ["xquad-r", "letters", "other"]
    text, qid = examples.options[1][1]  # the first example question (English, with its id)
    examples.value = (text, qid)
    assert question.value == text
    button.click()
    assert output.value.count("<table>") == 2 and "letters" in output.value and "other" in output.value
    relevant = int(StandInPoolSearch(_letter_model, small_pool).search(text, 10, qid)["relevant"].sum())
    assert relevant >= 1 and output.value.count("✓") == 2 * relevant  # the same hits in both models' tables
    question.value = "Qui a gagné le match ?"  # a typed question has no id
    button.click()
    assert "relevance is unknown" in status.value and "✓" not in output.value


@pytest.mark.slow
def test_bundled_model_finds_the_english_answer_of_a_known_question(small_pool, monkeypatch):
    try:
        from hybrid_utils.search import PoolSearch  # noqa: F401 - the real search, when installed
    except ImportError:
        module = types.ModuleType("hybrid_utils.search")
        module.PoolSearch = StandInPoolSearch
        monkeypatch.setitem(sys.modules, "hybrid_utils.search", module)
    from hybrid_utils.encoder import load_encoder

    text, qid = _english(small_pool)
    answer = small_pool.translations(qid)["en"]["answer"]
    table = widgets.compare_search({"zero-shot": load_encoder("bundled")}, small_pool, text, k=10, question_id=qid)
    hits = table["zero-shot"]
    english = hits[(hits["language"] == "en") & hits["relevant"]]
    assert answer in english["sentence"].tolist()
