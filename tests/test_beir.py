"""Tests of hybrid_utils.study.beir (BEIR export of LAReQA) and hybrid_utils.study.benchmark (mteb evaluation).

mteb's numbers on an exported folder are cross-checked against an independent computation:
the project's own encoding, exact faiss search and ir-measures (pytrec_eval).
"""

import json

import pandas as pd
import pytest

from hybrid_utils.study.cli import main
from hybrid_utils.study.beir import BEIRFolderError, beir_task, exact_search_metrics, export_beir, read_beir
from hybrid_utils.study.benchmark import (METRICS, HubDataUnavailableError, _hub_tasks, benchmark, benchmark_models,
                                    mteb_model, mteb_prompts)
from hybrid_utils.data import load_lareqa


# --------------------------------------------------------------------------------------
# export
# --------------------------------------------------------------------------------------
def read_jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_export_xquad_english_in_beir_layout(tmp_path, capsys):
    assert main(["export-beir", "xquad-r", "--language", "en", "--output", str(tmp_path / "xq")]) == 0
    assert "1190 queries, 1180 passages" in capsys.readouterr().out
    corpus, queries = read_jsonl(tmp_path / "xq" / "corpus.jsonl"), read_jsonl(tmp_path / "xq" / "queries.jsonl")
    qrels = (tmp_path / "xq" / "qrels" / "test.tsv").read_text(encoding="utf-8").splitlines()
    assert len(queries) == 1190 and len(corpus) == 1180
    assert qrels[0] == "query-id\tcorpus-id\tscore" and len(qrels) == 1191
    assert all(doc["title"] == "" and doc["_id"].startswith("en-") for doc in corpus)
    # each query's one relevant passage is its English answer sentence
    english = load_lareqa("xquad-r", languages=["en"])
    sentence = dict(zip(english.candidates["id"], english.candidates["sentence"]))
    text_of = {doc["_id"]: doc["text"] for doc in corpus}
    qid, cid, score = qrels[1].split("\t")
    assert (qid, score) == (queries[0]["_id"], "1")
    assert text_of[cid] == sentence[english.questions[0]["answer_id"]]


def test_export_and_read_errors_say_what_to_do(tmp_path, capsys):
    with pytest.raises(ValueError, match="fr"):
        export_beir("xquad-r", "fr", tmp_path / "fr")
    assert main(["export-beir", "mlqa-r", "--language", "el", "--output", str(tmp_path / "el")]) == 2
    assert "error:" in capsys.readouterr().err
    folder = export_beir("mlqa-r", "de", tmp_path / "de", limit_questions=5)
    (folder / "qrels" / "test.tsv").unlink()
    with pytest.raises(BEIRFolderError, match="export-beir"):
        read_beir(folder)


def test_read_beir_rejects_qrels_naming_unknown_passages(tmp_path):
    folder = export_beir("xquad-r", "de", tmp_path / "de", limit_questions=3)
    with (folder / "qrels" / "test.tsv").open("a", encoding="utf-8") as handle:
        handle.write("some-question\tno-such-passage\t1\n")
    with pytest.raises(BEIRFolderError, match="no-such-passage"):
        read_beir(folder)


def test_beir_task_has_mteb_metadata(tmp_path):
    task = beir_task(export_beir("xquad-r", "de", tmp_path / "de", limit_questions=3))
    assert task.metadata.name == "BEIR:de" and task.metadata.eval_langs == ["deu-Latn"]
    task.load_data()
    split = task.dataset["default"]["test"]
    assert len(split["queries"]) == 3 and set(split["relevant_docs"]) == set(split["queries"]["id"])


# --------------------------------------------------------------------------------------
# hub tasks offline
# --------------------------------------------------------------------------------------
def test_offline_hub_task_fails_at_once_naming_task_and_remedy(monkeypatch, capsys):
    import hybrid_utils.encoder

    def no_model(*args, **kwargs):
        raise AssertionError("the model must not be loaded when the data is unreachable")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hybrid_utils.encoder, "load_encoder", no_model)
    with pytest.raises(HubDataUnavailableError, match=r"SciFact.*HF_HUB_OFFLINE=1.*export-beir"):
        benchmark("bundled", tasks=["SciFact"])
    assert main(["benchmark", "--tasks", "NQHardNegatives"]) == 2
    assert "mteb task NQHardNegatives needs its data from the Hugging Face Hub" in capsys.readouterr().err


def test_unreachable_hub_without_offline_flag_fails_in_seconds_not_after_retries(monkeypatch):
    import socket

    import hybrid_utils.study.benchmark as benchmark_module

    calls = []

    def refused(address, timeout=None):
        calls.append((address, timeout))
        raise OSError("Name or service not known")

    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(socket, "create_connection", refused)
    assert not benchmark_module.hub_reachable()
    # the probe's message, not huggingface_hub's after its five retries
    with pytest.raises(HubDataUnavailableError, match=r"SciFact.*did not answer within 3 s.*HF_HUB_OFFLINE=1"):
        benchmark("bundled", tasks=["SciFact"])
    assert calls[0][0] == ("huggingface.co", 443) and calls[0][1] == 3.0


def test_a_local_beir_folder_loads_without_asking_the_hub(monkeypatch, tmp_path):
    """Offline without HF_HUB_OFFLINE (a laptop without network): the local folder is read, the hub never asked."""
    import hybrid_utils.study.benchmark as benchmark_module

    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(benchmark_module, "hub_reachable", lambda: pytest.fail("the hub was asked for a local folder"))
    task = beir_task(export_beir("xquad-r", "de", tmp_path / "de", limit_questions=3))
    benchmark_module._load(task)
    assert task.data_loaded


def test_unknown_task_and_language_subsets():
    with pytest.raises(ValueError, match="unknown mteb task"):
        _hub_tasks(["SciFactt"], None)
    [miracl] = _hub_tasks(["MIRACLRetrievalHardNegatives"], ["de", "en"])
    assert list(miracl.hf_subsets) == ["de", "en"]
    with pytest.raises(ValueError, match="no subset"):
        _hub_tasks(["MIRACLRetrievalHardNegatives"], ["el"])


# --------------------------------------------------------------------------------------
# mteb evaluation of the bundled model
# --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model():
    from hybrid_utils.encoder import load_encoder

    return load_encoder("bundled", device="cpu")


@pytest.mark.slow
def test_bundled_model_gives_mteb_the_e5_prompts_of_its_metadata(model):
    import mteb

    expected = mteb.get_model_meta("intfloat/multilingual-e5-small").loader_kwargs["model_prompts"]
    assert mteb_prompts(model) == expected == {"query": "query: ", "document": "passage: "}
    before = dict(model.prompts)
    wrapped = mteb_model(model, "bundled")
    assert wrapped.model_prompts == expected
    assert model.prompts == before  # the project's "passage" prompt survives
    assert wrapped.mteb_model_meta.name == "local/bundled"


@pytest.mark.slow
def test_mteb_numbers_match_an_independent_computation(model, tmp_path, capsys):
    folder = export_beir("xquad-r", "en", tmp_path / "xq-en", limit_questions=150)
    out = tmp_path / "out" / "OUT.json"
    assert main(["benchmark", "--model", "bundled", "--beir-folder", str(folder), "--output", str(out)]) == 0
    assert "BEIR:xq-en" in capsys.readouterr().out
    result = json.loads(out.read_text())
    independent = exact_search_metrics(model, folder)
    for metric in ("ndcg_at_10", "recall_at_10", "recall_at_100", "mrr_at_10"):
        assert result[metric] == pytest.approx(independent[metric], abs=0.01), metric
    # a real task: far from random (1 / ~200 passages) and not solved either
    assert 0.6 < result["ndcg_at_10"] < 0.99 and result["recall_at_10"] > result["ndcg_at_10"]
    table = pd.read_csv(out.with_suffix(".csv"))
    assert table[list(METRICS)].iloc[0].tolist() == pytest.approx([result["rows"][0][m] for m in METRICS])
    assert table["task"].tolist() == ["BEIR:xq-en"]


@pytest.mark.slow
def test_benchmark_models_gives_one_tidy_frame(model, tmp_path, monkeypatch):
    import hybrid_utils.encoder

    monkeypatch.setattr(hybrid_utils.encoder, "load_encoder", lambda name, **kwargs: model)  # load once
    folder = export_beir("xquad-r", "en", tmp_path / "small", limit_questions=20)
    table = benchmark_models({"zero-shot": "bundled", "copy": "bundled"}, beir_folder=folder,
                             output_dir=tmp_path / "bench")
    assert table["method"].tolist() == ["zero-shot", "copy"]
    assert table["ndcg_at_10"].iloc[0] == pytest.approx(table["ndcg_at_10"].iloc[1])
    assert (tmp_path / "bench" / "benchmarks.csv").is_file() and (tmp_path / "bench" / "copy.json").is_file()


def test_benchmark_study_runs_the_study_models_and_stops_offline(model, tmp_path, monkeypatch):
    import hybrid_utils.encoder
    from hybrid_utils.study.benchmark import benchmark_study
    from hybrid_utils.profiles import get_profile
    from hybrid_utils.experiments import run_dir

    monkeypatch.setattr(hybrid_utils.encoder, "load_encoder", lambda name, **kwargs: model)
    profile = get_profile("smoke", runs_dir=str(tmp_path / "runs"), results_dir=str(tmp_path / "results"))
    # one "finished run" of the study: benchmark_study picks up the runs that exist
    hybrid = run_dir(profile, "bundled", "hybrid", "mlqa-r", profile.seeds[0])
    hybrid.mkdir(parents=True)
    for name in ("train_config.json", "modules.json"):
        (hybrid / name).write_text("{}")
    folder = export_beir("xquad-r", "en", tmp_path / "small", limit_questions=20)
    table = benchmark_study(profile, beir_folder=folder, log=lambda *a: None)
    assert table[["method", "train_on"]].values.tolist() == [["zero-shot", "-"], ["hybrid", "mlqa-r"]]
    assert table["ndcg_at_10"].between(0, 1).all()
    assert (tmp_path / "results" / "benchmarks" / "study.csv").is_file()
    # hub tasks offline: a clear error before any model is loaded
    with pytest.raises(HubDataUnavailableError, match="SciFact"):
        benchmark_study(profile, tasks=["SciFact"], log=lambda *a: None)
