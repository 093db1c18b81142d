import json
from collections import Counter

import pytest

from hybrid_utils.data import DATASETS, LAReQADataError, download_lareqa, load_lareqa
from hybrid_utils.pairs import build_training_pairs


@pytest.fixture(scope="module")
def xquad():
    return load_lareqa("xquad-r")


@pytest.fixture(scope="module")
def mlqa():
    return load_lareqa("mlqa-r")


def test_xquad_r_sizes(xquad):
    assert xquad.languages == sorted(DATASETS["xquad-r"])
    sizes = xquad.sizes()
    assert {lang: s["questions"] for lang, s in sizes.items()} == {lang: 1190 for lang in xquad.languages}
    assert len(xquad.candidates) == 13014
    assert sizes["en"]["candidates"] == 1180 and sizes["th"]["candidates"] == 852
    # 11-way parallel: every question id has a relevant sentence in each of the 11 languages
    assert Counter(len(r) for r in xquad.questions["relevant_ids"]) == {11: 13090}


def test_mlqa_r_sizes(mlqa):
    assert len(mlqa.questions) == 4199
    assert len(set(mlqa.questions["id"])) == 1148
    assert len(mlqa.candidates) == 20534
    per_id = Counter(mlqa.questions["id"])
    assert set(per_id.values()) == {2, 3, 4}


def test_relevant_sentence_contains_the_answer(xquad):
    """The relevant candidate of a question is the sentence holding the answer start."""
    en = xquad.questions.filter(lambda r: r["language"] == "en").select(range(50))
    for row in en:
        answer = xquad.candidate(row["answer_id"])
        assert answer["language"] == "en"
        assert answer["sentence"] in answer["context"]
    translations = xquad.translations(en[0]["id"])
    assert set(translations) == set(xquad.languages)
    assert "308" in translations["de"]["answer"]  # "How many points did the Panthers defense surrender?"


def test_candidate_ids_unique_and_relevant_ids_exist(mlqa):
    ids = mlqa.candidates["id"]
    assert len(ids) == len(set(ids))
    known = set(ids)
    assert all(r in known for rel in mlqa.questions["relevant_ids"] for r in rel)


def test_training_pairs_cover_every_shared_id(mlqa):
    pairs = build_training_pairs(mlqa)
    ids_by_lang = {}
    for qid, lang in zip(mlqa.questions["id"], mlqa.questions["language"]):
        ids_by_lang.setdefault(lang, set()).add(qid)
    expected = sum(len(ids_by_lang[x] & ids_by_lang[y]) for x in ids_by_lang for y in ids_by_lang)
    assert len(pairs) == expected == 15747
    mono = build_training_pairs(mlqa, cross_lingual=False)
    assert len(mono) == 4199 and set(zip(mono["question_language"], mono["answer_language"])) == {
        (lang, lang) for lang in mlqa.languages}
    en_de = build_training_pairs(mlqa, question_languages=["en"], answer_languages=["de"], monolingual=False)
    assert len(en_de) == 512
    row = en_de[0]
    assert mlqa.candidate(row["answer_id"])["language"] == "de"
    assert row["answer"] == mlqa.candidate(row["answer_id"])["sentence"]


def test_limit_questions_shrinks_pool_consistently():
    small = load_lareqa("xquad-r", languages=["en", "de"], limit_questions=10)
    assert len(set(small.questions["id"])) == 10 and len(small.questions) == 20
    pool = set(small.candidates["id"])
    assert all(r in pool for rel in small.questions["relevant_ids"] for r in rel)
    assert len(pool) < 200


def test_unknown_dataset_and_language_errors():
    with pytest.raises(ValueError, match="unknown dataset 'squad'.*mlqa-r"):
        load_lareqa("squad")
    with pytest.raises(ValueError, match=r"unknown language code\(s\) \['fr'\].*available"):
        load_lareqa("mlqa-r", languages=["en", "fr"])
    with pytest.raises(ValueError, match="empty language list"):
        build_training_pairs(load_lareqa("mlqa-r", languages=["en"]), question_languages=[], answer_languages=["en"])


def test_user_folder_missing_and_malformed_files(tmp_path):
    good = {"data": [{"title": "t", "paragraphs": [{
        "context": "Paris is in France. Berlin is in Germany.",
        "sentence_breaks": [[0, 18], [20, 40]],
        "sentences": ["Paris is in France.", "Berlin is in Germany."],
        "qas": [{"id": "q1", "question": "Where is Berlin?", "answers": [{"answer_start": 33, "text": "Germany"}]}],
    }]}]}
    (tmp_path / "en.json").write_text(json.dumps(good))
    ds = load_lareqa(str(tmp_path))
    assert ds.languages == ["en"] and len(ds.candidates) == 2
    assert ds.candidate(ds.questions[0]["answer_id"])["sentence"] == "Berlin is in Germany."

    (tmp_path / "de.json").write_text("{not json")
    with pytest.raises(LAReQADataError, match="de.json is not a readable LAReQA JSON file"):
        load_lareqa(str(tmp_path))
    (tmp_path / "de.json").write_text(json.dumps({"data": [{"paragraphs": [{"context": "x"}]}]}))
    with pytest.raises(LAReQADataError, match="no 'sentence_breaks' field"):
        load_lareqa(str(tmp_path))
    (tmp_path / "empty").mkdir()
    with pytest.raises(LAReQADataError, match="holds no <language>.json"):
        load_lareqa(str(tmp_path / "empty"))


def test_download_offline_says_what_to_do(tmp_path, monkeypatch):
    import urllib.request

    def refuse(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    with pytest.raises(ConnectionError, match=r"offline: use the copy shipped with the package, load_lareqa\('xquad-r'\)"):
        download_lareqa("xquad-r", tmp_path, languages=["en"])
    assert not list((tmp_path / "xquad-r").iterdir())  # nothing half-written left behind


def test_heldout_groups_share_no_answer_sentence_or_paragraph_with_training(xquad):
    """Holding out single question ids leaks on XQuAD-R (about five questions share a paragraph); groups do not."""
    from hybrid_utils.pairs import question_groups, split_pairs_by_question_id

    groups = question_groups(xquad)
    assert len(groups) == 1190 and len(set(groups.values())) == 240  # one group per parallel paragraph
    pairs = build_training_pairs(xquad, question_languages=["en", "de"], answer_languages=["en", "de"])
    paragraph_of = dict(zip(xquad.candidates["id"], xquad.candidates["paragraph_id"]))
    train, held = split_pairs_by_question_id(pairs, 0.1, seed=0, groups=groups)
    assert set(train["question_id"]).isdisjoint(held["question_id"])
    assert len(set(held["question_id"])) >= 119
    assert set(train["answer"]).isdisjoint(held["answer"])
    assert {paragraph_of[a] for a in train["answer_id"]}.isdisjoint({paragraph_of[a] for a in held["answer_id"]})
    # by single question ids, the same split leaks: held-out answer sentences occur in training
    train_ids, held_ids = split_pairs_by_question_id(pairs, 0.1, seed=0)
    assert set(train_ids["answer"]) & set(held_ids["answer"])
