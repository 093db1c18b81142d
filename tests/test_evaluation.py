"""Tests of hybrid_utils.evaluation (LAReQA mAP, language bias) and the ``evaluate`` CLI.

The mAP values are cross-checked against ir_measures (trec_eval's AP) on real XQuAD-R /
MLQA-R subsets; the rank distance (language bias), which no library computes, is
checked on hand-made examples.
"""

import json
import math
from collections import defaultdict

import numpy as np
import pytest
from datasets import Dataset

from hybrid_utils.data import LAReQADataset, load_lareqa
from hybrid_utils.metrics import average_precision
from hybrid_utils.evaluation import evaluate_lareqa
from hybrid_utils.results import load_result, save_result, summarize


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------
def make_dataset(questions, candidates, languages, name="toy"):
    """A LAReQADataset from plain dicts; ``relevant`` is a list of candidate ids per question."""
    qrows = [{"id": qid, "language": lang, "text": f"{qid}-{lang}", "answer_id": rel[0], "relevant_ids": rel}
             for qid, lang, rel in questions]
    crows = [{"id": cid, "language": cid[:2], "sentence": f"sentence {cid}", "context": f"context {cid}",
              "paragraph_id": f"{cid}-p"} for cid in candidates]
    return LAReQADataset(name=name, languages=languages, questions=Dataset.from_list(qrows),
                         candidates=Dataset.from_list(crows))


def one_hot_embeddings(candidates, scores):
    """Candidate i = unit vector e_i; a question = the vector of its wanted scores (so q . c_i = score_i).

    L2-normalisation scales a question's scores by one positive factor, so ranks do not change.
    """
    c = np.eye(len(candidates), dtype=np.float32)
    q = np.array([[row[cid] for cid in candidates] for row in scores], dtype=np.float32)
    return q, c


# Candidates are deliberately interleaved across languages (the evaluator regroups them).
TOY_CANDIDATES = ["de1", "en1", "en2", "de2", "en3", "de3"]
TOY_QUESTIONS = [
    ("a", "en", ["en1", "de1"]),  # question a exists in en and de
    ("a", "de", ["en1", "de1"]),
    ("b", "en", ["en2"]),  # question b exists only in en: skipped in the (en, de) setting
]
TOY_SCORES = [
    # a/en: en pool: en2 .9 > en1 .5 -> en1 rank 2, AP 1/2.   de pool: de2 .8, de3 .7 > de1 .2 -> rank 3, AP 1/3.
    #       all: en2 .9, de2 .8, de3 .7, en1 .5, de1 .2, en3 .1 -> ranks 4, 5: AP (1/4 + 2/5)/2 = 0.325, distance 1
    {"en1": 0.5, "en2": 0.9, "en3": 0.1, "de1": 0.2, "de2": 0.8, "de3": 0.7},
    # a/de: en pool: en1 .3 first -> AP 1.   de pool: de1 .9 first -> AP 1.
    #       all: de1 .9, de2 .5, de3 .4, en1 .3 -> ranks 1, 4: AP (1/1 + 2/4)/2 = 0.75, distance 3
    {"en1": 0.3, "en2": 0.1, "en3": 0.2, "de1": 0.9, "de2": 0.5, "de3": 0.4},
    # b/en: en pool: en1 .9, en3 .8 > en2 .4 -> rank 3, AP 1/3.   all: en1, en3, en2 -> rank 3, AP 1/3,
    #       one relevant answer only: no rank distance
    {"en1": 0.9, "en2": 0.4, "en3": 0.8, "de1": 0.1, "de2": 0.2, "de3": 0.3},
]


@pytest.fixture()
def toy():
    dataset = make_dataset(TOY_QUESTIONS, TOY_CANDIDATES, ["de", "en"])
    return dataset, one_hot_embeddings(TOY_CANDIDATES, TOY_SCORES)


# --------------------------------------------------------------------------------------
# hand-made examples
# --------------------------------------------------------------------------------------
def test_hand_made_example(toy):
    dataset, embeddings = toy
    r = evaluate_lareqa(None, dataset, embeddings=embeddings, show_progress_bar=False)
    assert r["pair_map"]["en"]["en"] == pytest.approx((1 / 2 + 1 / 3) / 2)  # a/en and b/en
    assert r["pair_map"]["en"]["de"] == pytest.approx(1 / 3)  # only a/en (b has no German version)
    assert r["pair_map"]["de"]["en"] == pytest.approx(1.0)
    assert r["pair_map"]["de"]["de"] == pytest.approx(1.0)
    assert r["pair_n_questions"] == {"de": {"de": 1, "en": 1}, "en": {"de": 1, "en": 2}}
    # macro over settings vs micro over (question, setting) instances
    assert r["mono_map"] == pytest.approx(((1 / 2 + 1 / 3) / 2 + 1) / 2)  # 17/24
    assert r["mono_map_micro"] == pytest.approx((1 / 2 + 1 / 3 + 1) / 3)  # 11/18
    assert r["cross_map"] == pytest.approx((1 / 3 + 1) / 2)
    assert r["cross_map_micro"] == pytest.approx((1 / 3 + 1) / 2)
    assert r["n_settings"] == {"mono": 2, "cross": 2, "skipped": 0, "skipped_settings": []}
    # multilingual pool
    en_multi = (0.325 + 1 / 3) / 2
    assert r["multilingual_map_by_language"] == pytest.approx({"en": en_multi, "de": 0.75})
    assert r["multilingual_map"] == pytest.approx((en_multi + 0.75) / 2)
    assert r["multilingual_map_micro"] == pytest.approx((0.325 + 1 / 3 + 0.75) / 3)
    # language bias: a/en 5 - 4 = 1, a/de 4 - 1 = 3, b/en has a single answer and is left out
    assert r["rank_distances"] == {"en": [1], "de": [3]}
    assert r["language_bias_by_language"] == {"en": 1.0, "de": 3.0}
    assert r["language_bias"] == pytest.approx(2.0)
    assert r["language_bias_micro"] == pytest.approx(2.0)
    assert r["n_questions"] == 3 and r["n_candidates"] == 6
    assert r["languages"] == ["de", "en"] and r["dataset"] == "toy"
    assert r["candidates_per_language"] == {"de": 3, "en": 3}
    json.dumps(r, allow_nan=False)  # plain JSON


def test_small_chunks_give_the_same_result(toy):
    dataset, embeddings = toy
    a = evaluate_lareqa(None, dataset, embeddings=embeddings, show_progress_bar=False)
    b = evaluate_lareqa(None, dataset, embeddings=embeddings, show_progress_bar=False, chunk_size=1)
    for key in ("pair_map", "multilingual_map", "rank_distances", "mono_map", "cross_map"):
        assert a[key] == b[key]


def test_rank_distance_ranks_1_and_5():
    # one English question; its answers: en1 at rank 1 and de1 at rank 5 of the 6-candidate pool
    candidates = ["en1", "en2", "en3", "de1", "de2", "de3"]
    dataset = make_dataset([("q", "en", ["en1", "de1"])], candidates, ["de", "en"])
    scores = [{"en1": 0.9, "en2": 0.8, "en3": 0.7, "de2": 0.6, "de1": 0.5, "de3": 0.1}]
    r = evaluate_lareqa(None, dataset, embeddings=one_hot_embeddings(candidates, scores), show_progress_bar=False)
    assert r["rank_distances"] == {"en": [4]}
    assert r["language_bias"] == 4.0
    assert r["multilingual_map"] == pytest.approx((1 / 1 + 2 / 5) / 2)


def test_ties_are_ranked_pessimistically():
    candidates = ["en1", "en2", "en3", "en4"]
    # q1: all four candidates tie; relevant en1 is ranked after the 3 others: rank 4, AP 1/4
    # q2: relevant en1, en2 tie with non-relevant en3 (en4 lower): ranks 2 and 3 -> AP (1/2 + 2/3)/2
    dataset = make_dataset([("q1", "en", ["en1"]), ("q2", "en", ["en1", "en2"])], candidates, ["en"])
    scores = [{"en1": 1.0, "en2": 1.0, "en3": 1.0, "en4": 1.0},
              {"en1": 1.0, "en2": 1.0, "en3": 1.0, "en4": 0.0}]
    r = evaluate_lareqa(None, dataset, embeddings=one_hot_embeddings(candidates, scores), show_progress_bar=False,
                        normalize=False)
    assert r["pair_map"]["en"]["en"] == pytest.approx((1 / 4 + (1 / 2 + 2 / 3) / 2) / 2)
    assert r["rank_distances"] == {"en": [1]}  # ranks 2 and 3


def test_constant_encoder_is_not_rewarded():
    dataset = make_dataset(TOY_QUESTIONS, TOY_CANDIDATES, ["de", "en"])
    r = evaluate_lareqa(lambda texts, prompt_name: np.ones((len(texts), 4)), dataset, show_progress_bar=False)
    assert r["pair_map"]["en"]["de"] == pytest.approx(1 / 3)  # last of 3
    assert r["mono_map"] < 0.5


def test_average_precision_helper():
    assert average_precision([1, 3])[0] == pytest.approx((1 + 2 / 3) / 2)
    ap = average_precision(np.array([[2, np.inf], [5, 1], [np.inf, np.inf]]))
    assert ap[0] == pytest.approx(0.5)
    assert ap[1] == pytest.approx((1 + 2 / 5) / 2)  # order of the ranks does not matter
    assert math.isnan(ap[2])


def test_skipped_setting_and_encoder_calls():
    # question b exists only in German; no English question at all -> (en, *) settings are skipped
    candidates = ["en1", "de1", "de2"]
    dataset = make_dataset([("b", "de", ["de1"]), ("c", "de", ["de2", "en1"])], candidates, ["de", "en"])
    calls = []

    def encode(texts, prompt_name):
        calls.append((prompt_name, list(texts)))
        rng = np.random.default_rng(len(texts))
        return rng.standard_normal((len(texts), 8))

    r = evaluate_lareqa(encode, dataset, show_progress_bar=False, model_name="random")
    assert [c[0] for c in calls] == ["query", "passage"]
    assert calls[1][1] == ["sentence en1", "sentence de1", "sentence de2"]
    assert r["pair_map"]["en"] == {"de": None, "en": None}
    assert r["n_settings"]["skipped"] == 2 and r["n_settings"]["mono"] == 1 and r["n_settings"]["cross"] == 1
    assert r["pair_n_questions"]["de"] == {"de": 2, "en": 1}
    assert r["model"] == "random"
    assert r["rank_distances"] == {"de": [r["rank_distances"]["de"][0]]}  # only c has two answers
    text = summarize(r)
    assert "mono" in text and "cross" in text and "multilingual" in text


def test_sentence_plus_context_and_duplicate_texts():
    candidates = ["en1", "en2"]
    dataset = make_dataset([("a", "en", ["en1"]), ("a2", "en", ["en2"])], candidates, ["en"])
    dataset.questions = dataset.questions.map(lambda row: {"text": "same question"})
    seen = {}

    def encode(texts, prompt_name):
        seen[prompt_name] = list(texts)
        return np.eye(len(texts), 3)

    evaluate_lareqa(encode, dataset, candidate_text="sentence+context", show_progress_bar=False)
    assert seen["query"] == ["same question"]  # each distinct text once
    assert seen["passage"] == ["sentence en1 context en1", "sentence en2 context en2"]
    with pytest.raises(ValueError, match="candidate_text"):
        evaluate_lareqa(encode, dataset, candidate_text="paragraph")


# --------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------
def test_missing_relevant_candidate_is_a_clear_error():
    dataset = make_dataset([("a", "en", ["en1", "de9"])], ["en1", "de1"], ["de", "en"])
    with pytest.raises(ValueError, match=r"relevant id\(s\) \['de9'\].*not among"):
        evaluate_lareqa(lambda t, p: np.ones((len(t), 2)), dataset, show_progress_bar=False)


@pytest.mark.parametrize("bad", [
    lambda texts, prompt_name: np.ones((len(texts) + 1, 4)),  # one row too many
    lambda texts, prompt_name: np.ones(len(texts)),  # 1-D
    lambda texts, prompt_name: np.full((len(texts), 4), np.nan),  # NaN
])
def test_wrong_encoder_output_is_a_clear_error(toy, bad):
    dataset, _ = toy
    with pytest.raises(ValueError, match="shape|NaN"):
        evaluate_lareqa(bad, dataset, show_progress_bar=False)


def test_wrong_precomputed_embeddings(toy):
    dataset, (q, c) = toy
    with pytest.raises(ValueError, match="candidate"):
        evaluate_lareqa(None, dataset, embeddings=(q, c[:-1]), show_progress_bar=False)
    with pytest.raises(ValueError, match="dimension"):
        evaluate_lareqa(None, dataset, embeddings=(q[:, :3], c), show_progress_bar=False)


# --------------------------------------------------------------------------------------
# cross-check against ir_measures (trec_eval AP) on real data
# --------------------------------------------------------------------------------------
class NgramEncoder:
    """Cheap deterministic encoder: hashed character n-gram counts, randomly projected to 64 dims."""

    def __init__(self, dim=64, seed=0):
        from sklearn.feature_extraction.text import HashingVectorizer

        self.vectorizer = HashingVectorizer(analyzer="char_wb", ngram_range=(1, 3), n_features=2 ** 14,
                                            alternate_sign=False, norm=None)
        self.projection = np.random.default_rng(seed).standard_normal((2 ** 14, dim)).astype(np.float32)

    def __call__(self, texts, prompt_name):
        emb = np.asarray(self.vectorizer.transform(texts) @ self.projection, dtype=np.float32)
        return emb / np.linalg.norm(emb, axis=1, keepdims=True)


def _ir_measures_ap(qrels, run):
    return _ir_measures_values(qrels, run)["AP"]


def _ir_measures_values(qrels, run):
    """``{"AP": {query: value}, "R@1": {...}, "R@10": {...}}`` computed by ir_measures (trec_eval)."""
    import ir_measures
    from ir_measures import AP, R

    out = {"AP": {}, "R@1": {}, "R@10": {}}
    for m in ir_measures.iter_calc([AP, R @ 1, R @ 10], qrels, run):
        out[str(m.measure)][m.query_id] = m.value
    assert all(set(values) == set(qrels) for values in out.values())
    return out


def _check_against_ir_measures(dataset):
    encoder = NgramEncoder()
    q = encoder(list(dataset.questions["text"]), "query")
    c = encoder(list(dataset.candidates["sentence"]), "passage")
    result = evaluate_lareqa(None, dataset, embeddings=(q, c), normalize=False, show_progress_bar=False)

    scores = q @ c.T  # float32, like the evaluator
    cids = list(dataset.candidates["id"])
    clangs = np.array(dataset.candidates["language"])
    qids, qlangs, rels = dataset.questions["id"], dataset.questions["language"], dataset.questions["relevant_ids"]

    def run_row(i, rel_set, columns):
        """The pool ranked by float32 score, ties broken against relevant candidates (the evaluator's rule).

        trec_eval breaks ties by document id and pytrec_eval keeps scores in single precision,
        so the run gets distinct integer scores that encode this exact order (n, n-1, ..., 1).
        """
        columns = np.asarray(columns)
        is_rel = np.array([cids[j] in rel_set for j in columns])
        order = np.lexsort((is_rel, -scores[i, columns]))  # by score descending, then non-relevant first
        return {cids[columns[j]]: float(len(columns) - pos) for pos, j in enumerate(order)}

    # every (X, Y) setting
    setting_recall = {"mono": {1: [], 10: []}, "cross": {1: [], 10: []}}
    for x in dataset.languages:
        for y in dataset.languages:
            columns = np.flatnonzero(clangs == y)
            qrels, run = {}, {}
            for i in range(len(qids)):
                if qlangs[i] != x:
                    continue
                rel = [r for r in rels[i] if r.startswith(y + "-")]
                if rel:
                    qrels[str(i)] = {r: 1 for r in rel}
                    run[str(i)] = run_row(i, set(rel), columns)
            if not qrels:
                assert result["pair_map"][x][y] is None
                continue
            values = _ir_measures_values(qrels, run)
            expected = float(np.mean(list(values["AP"].values())))
            assert result["pair_map"][x][y] == pytest.approx(expected, abs=1e-6), (x, y)
            for k in (1, 10):
                setting_recall["mono" if x == y else "cross"][k].append(np.mean(list(values[f"R@{k}"].values())))
    for setting, by_k in setting_recall.items():
        for k, values in by_k.items():  # macro over settings, like mAP
            assert result[f"recall_at_{k}"][setting] == pytest.approx(np.mean(values), abs=1e-6), (setting, k)

    # multilingual pool
    qrels = {str(i): {r: 1 for r in rels[i]} for i in range(len(qids))}
    run = {str(i): run_row(i, set(rels[i]), np.arange(len(cids))) for i in range(len(qids))}
    values = _ir_measures_values(qrels, run)
    ap = values["AP"]
    by_lang = defaultdict(list)
    for i in range(len(qids)):
        by_lang[qlangs[i]].append(ap[str(i)])
    for k in (1, 10):
        per_lang = defaultdict(list)
        for i in range(len(qids)):
            per_lang[qlangs[i]].append(values[f"R@{k}"][str(i)])
        expected = np.mean([np.mean(v) for v in per_lang.values()])
        assert result[f"recall_at_{k}"]["multilingual"] == pytest.approx(expected, abs=1e-6)
    for lang, values in by_lang.items():
        assert result["multilingual_map_by_language"][lang] == pytest.approx(np.mean(values), abs=1e-6)
    assert result["multilingual_map"] == pytest.approx(np.mean([np.mean(v) for v in by_lang.values()]), abs=1e-6)
    assert result["multilingual_map_micro"] == pytest.approx(np.mean(list(ap.values())), abs=1e-6)
    # the rankings are non-trivial
    assert 0.05 < result["mono_map"] < 0.99
    assert 0.0 < result["recall_at_1"]["multilingual"] < result["recall_at_10"]["multilingual"] < 1.0
    return result


def test_matches_ir_measures_on_xquad_r_subset():
    dataset = load_lareqa("xquad-r", limit_questions=15)
    result = _check_against_ir_measures(dataset)
    assert result["n_settings"] == {"mono": 11, "cross": 110, "skipped": 0, "skipped_settings": []}


def test_matches_ir_measures_on_mlqa_r_subset():
    dataset = load_lareqa("mlqa-r", limit_questions=30)
    result = _check_against_ir_measures(dataset)
    assert result["n_settings"]["mono"] + result["n_settings"]["cross"] + result["n_settings"]["skipped"] == 49
    # MLQA-R settings have different sizes, so micro and macro differ
    assert result["cross_map_micro"] != pytest.approx(result["cross_map"], abs=1e-9)


# --------------------------------------------------------------------------------------
# saving
# --------------------------------------------------------------------------------------
def test_save_result_is_atomic(tmp_path, toy):
    dataset, embeddings = toy
    result = evaluate_lareqa(None, dataset, embeddings=embeddings, show_progress_bar=False)
    path = tmp_path / "a" / "b" / "result.json"
    save_result(result, path)
    assert load_result(path) == json.loads(json.dumps(result))
    before = path.read_text()
    with pytest.raises((TypeError, ValueError)):
        save_result({"bad": object()}, path)
    with pytest.raises(ValueError):
        save_result({"bad": float("nan")}, path)
    assert path.read_text() == before  # the old result survives
    assert [p.name for p in path.parent.iterdir()] == ["result.json"]  # no temporary files left


# --------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------
@pytest.fixture()
def fake_encoder(monkeypatch):
    import hybrid_utils.encoder

    loaded = []

    def load_encoder(name, quantize_int8=False, **kwargs):
        loaded.append((name, quantize_int8))
        return NgramEncoder()

    monkeypatch.setattr(hybrid_utils.encoder, "load_encoder", load_encoder)
    return loaded


def test_cli_evaluate(tmp_path, capsys, fake_encoder):
    from hybrid_utils.study.cli import main

    out = tmp_path / "results" / "zero-shot" / "xquad-r.json"
    code = main(["evaluate", "--model", "bundled", "--dataset", "xquad-r", "--output", str(out),
                 "--limit-questions", "20", "--languages", "en", "de", "--int8", "--no-progress"])
    assert code == 0
    assert fake_encoder == [("bundled", True)]
    printed = capsys.readouterr().out
    assert "mono" in printed and "cross" in printed and str(out) in printed
    result = load_result(out)
    assert result["languages"] == ["de", "en"] and result["n_questions"] == 40
    assert result["settings"]["limit_questions"] == 20 and result["settings"]["int8"] is True
    assert set(result["pair_map"]) == {"de", "en"}


@pytest.mark.parametrize("argv, message", [
    (["--dataset", "no-such-set"], "unknown dataset"),
    (["--languages", "xx"], "unknown language"),
])
def test_cli_bad_input_exits_2(capsys, fake_encoder, argv, message):
    from hybrid_utils.study.cli import main

    assert main(["evaluate", "--limit-questions", "2", "--no-progress", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_cli_unavailable_model_exits_2(capsys, tmp_path):
    from hybrid_utils.study.cli import main

    assert main(["evaluate", "--model", str(tmp_path / "missing-model"), "--limit-questions", "2",
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: could not load model") and err.count("\n") == 1


@pytest.mark.slow
def test_cli_with_the_bundled_encoder(tmp_path, capsys):
    from hybrid_utils.study.cli import main

    out = tmp_path / "r.json"
    assert main(["evaluate", "--dataset", "mlqa-r", "--limit-questions", "20", "--languages", "en", "de",
                 "--output", str(out), "--no-progress"]) == 0
    result = load_result(out)
    assert result["mono_map"] > 0.5 and result["cross_map"] > 0.3  # a real retriever, far above chance


# --------------------------------------------------------------------------------------
# per-question values and the language-identification probe
# --------------------------------------------------------------------------------------
def test_per_question_hand_made(toy):
    dataset, embeddings = toy
    r = evaluate_lareqa(None, dataset, embeddings=embeddings, show_progress_bar=False)
    pq = r["per_question"]
    assert pq["question_id"] == ["a", "b"]  # one entry per id, sorted
    # a: mono (en pool 1/2, de pool 1), cross (a/en in de 1/3, a/de in en 1), multi (0.325, 0.75), distance (1, 3)
    assert pq["mono_ap"] == [0.75, round(1 / 3, 5)]
    assert pq["cross_ap"] == [round((1 / 3 + 1) / 2, 5), None]  # b exists in English only
    assert pq["multilingual_ap"] == [0.5375, round(1 / 3, 5)]
    assert pq["rank_distance"] == [2.0, None]  # b has a single relevant answer
    # the macro averages are unchanged by the new keys
    assert r["mono_map"] == pytest.approx(17 / 24) and r["language_bias"] == pytest.approx(2.0)
    json.dumps(r, allow_nan=False)


def test_per_question_one_entry_per_id_and_micro_mean_on_xquad_r_subset():
    dataset = load_lareqa("xquad-r", limit_questions=15)
    encoder = NgramEncoder()
    q = encoder(list(dataset.questions["text"]), "query")
    c = encoder(list(dataset.candidates["sentence"]), "passage")
    r = evaluate_lareqa(None, dataset, embeddings=(q, c), show_progress_bar=False)
    pq = r["per_question"]
    ids = sorted(set(dataset.questions["id"]))
    assert len(ids) == 15 and len(dataset.questions) == 15 * 11
    assert pq["question_id"] == ids
    assert all(len(pq[k]) == 15 for k in ("mono_ap", "cross_ap", "multilingual_ap", "rank_distance"))
    # every id has 11 language versions, so the mean over ids is the mean over all questions
    assert np.mean(pq["multilingual_ap"]) == pytest.approx(r["multilingual_map_micro"], abs=1e-5)
    assert np.mean(pq["mono_ap"]) == pytest.approx(r["mono_map_micro"], abs=1e-5)
    assert np.mean(pq["cross_ap"]) == pytest.approx(r["cross_map_micro"], abs=1e-5)
    assert np.mean(pq["rank_distance"]) == pytest.approx(r["language_bias_micro"], abs=1e-4)
    assert all(v == round(v, 5) for v in pq["multilingual_ap"])


def _probe_dataset(n_ids=60, languages=("de", "en", "fr")):
    questions, candidates = [], []
    for k in range(n_ids):
        answers = [f"{lang}-{k:03d}" for lang in languages]
        candidates += answers
        for i, lang in enumerate(languages):
            questions.append((f"q{k:03d}", lang, [answers[i]] + answers[:i] + answers[i + 1:]))
    return make_dataset(questions, candidates, list(languages))


def _probe_embeddings(dataset, language_offset, dim=16, seed=0):
    rng = np.random.default_rng(seed)
    langs = sorted(dataset.languages)
    offsets = rng.standard_normal((len(langs), dim)) * language_offset
    topics = rng.standard_normal((1000, dim))
    c = np.array([topics[int(cid[3:])] + offsets[langs.index(cid[:2])] for cid in dataset.candidates["id"]])
    q = rng.standard_normal((len(dataset.questions), dim))
    return q.astype(np.float32), c.astype(np.float32)


def test_probe_finds_a_language_offset():
    dataset = _probe_dataset()
    r = evaluate_lareqa(None, dataset, embeddings=_probe_embeddings(dataset, 3.0), show_progress_bar=False)
    assert r["probe_accuracy"] >= 0.95
    assert r["probe_chance"] == pytest.approx(1 / 3, abs=1e-5)
    assert r["probe_n_train"] == r["probe_n_test"] == 90  # 60 ids split 30/30, 3 answer sentences each


def test_probe_is_at_chance_without_language_information():
    dataset = _probe_dataset()
    r = evaluate_lareqa(None, dataset, embeddings=_probe_embeddings(dataset, 0.0), show_progress_bar=False)
    # the translations of an id have the same embedding and sit on the same side: one of 3 is right
    assert r["probe_accuracy"] == pytest.approx(1 / 3, abs=1e-5)
    off = evaluate_lareqa(None, dataset, embeddings=_probe_embeddings(dataset, 0.0), show_progress_bar=False,
                          probe=False)
    assert off["probe_accuracy"] is None and off["probe_n_train"] is None
    assert off["per_question"] == r["per_question"]


def test_probe_skips_ids_with_one_language(toy):
    dataset, embeddings = toy
    r = evaluate_lareqa(None, dataset, embeddings=embeddings, show_progress_bar=False)
    # only id a has answers in two languages: one group cannot be split into train and test
    assert r["probe_accuracy"] is None and r["probe_n_test"] is None


def test_saved_per_question_lists_are_compact(tmp_path, toy):
    dataset, embeddings = toy
    result = evaluate_lareqa(None, dataset, embeddings=embeddings, show_progress_bar=False)
    path = save_result(result, tmp_path / "r.json")
    text = path.read_text()
    assert '"question_id": ["a","b"]' in text and '"rank_distance": [2.0,null]' in text
    assert load_result(path) == json.loads(json.dumps(result))
