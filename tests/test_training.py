"""Fine-tuning: methods, zero-shot overlap, held-out splits, sampler hook, loss/mAP movement, resume, torchrun."""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from hybrid_utils.profiles import PROFILES  # noqa: E402

from hybrid_utils.pairs import build_training_pairs  # noqa: E402
from hybrid_utils.data import load_lareqa
from hybrid_utils.samplers import CrossLingualBatchSampler, HybridBatchSampler, MonolingualBatchSampler  # noqa: E402
from hybrid_utils.config import METHOD_NAMES, METHODS, PAPER_LEARNING_RATE, PROTOCOLS, TrainConfig
from hybrid_utils.study.cli_train import add_train_arguments, config_from_args
from hybrid_utils.trainable import apply_trainable
from hybrid_utils.training import build_training_run, train
from hybrid_utils.pairs import find_overlap, prepare_training_pairs, remove_overlap, split_pairs_by_question_id
from hybrid_utils.data import subset_lareqa
from hybrid_utils.runs import load_train_log

SMALL = dict(train_on="mlqa-r", languages=("de", "en", "es"), show_progress=False)


@pytest.fixture(scope="module")
def _pristine_bundled_model():
    from hybrid_utils.encoder import load_encoder

    return load_encoder("bundled", device="cpu")


@pytest.fixture
def bundled_model(_pristine_bundled_model):
    """A copy per test: training (build_training_run) re-initialises and trains the model it is given, and a test
    that reads the untouched weights must not see what an earlier test in the same worker did to them."""
    import copy

    return copy.deepcopy(_pristine_bundled_model)


# --------------------------------------------------------------------------- names and config

def test_method_names():
    assert METHOD_NAMES == ("zero-shot", "monolingual", "cross-lingual", "hybrid", "adversarial", "hybrid-adversarial")
    assert METHODS["monolingual"].sampler is MonolingualBatchSampler and not METHODS["monolingual"].adversarial
    assert METHODS["cross-lingual"].sampler is CrossLingualBatchSampler and not METHODS["cross-lingual"].adversarial
    assert METHODS["hybrid"].sampler is HybridBatchSampler and not METHODS["hybrid"].adversarial
    assert METHODS["adversarial"].sampler is MonolingualBatchSampler and METHODS["adversarial"].adversarial
    assert METHODS["hybrid-adversarial"].sampler is HybridBatchSampler and METHODS["hybrid-adversarial"].adversarial
    with pytest.raises(ValueError, match="unknown method"):
        TrainConfig(method="bilingual")
    with pytest.raises(ValueError, match="trainable"):
        TrainConfig(trainable="half")
    assert TrainConfig(method="hybrid", train_on="xquad-r").output_dir == str(Path("runs/hybrid-xquad-r"))
    assert TrainConfig(train_on="mlqa-r").eval_dataset_name == "xquad-r"
    assert TrainConfig(train_on="xquad-r").eval_dataset_name == "mlqa-r"
    assert TrainConfig(exclude_overlap_with=None).eval_dataset_name is None


def test_cli_arguments():
    parser = add_train_arguments(argparse.ArgumentParser())
    cfg = config_from_args(parser.parse_args(["--method", "hybrid", "--train-on", "mlqa-r", "--output", "runs/x",
                                              "--alpha", "0.3", "--steps", "7", "--batch-size", "16", "--seed", "3"]))
    assert (cfg.method, cfg.alpha, cfg.steps, cfg.batch_size, cfg.seed, cfg.output_dir) == (
        "hybrid", 0.3, 7, 16, 3, "runs/x")
    cpu = PROFILES["cpu"].training_defaults("mlqa-r", "hybrid")
    assert cfg.learning_rate == cpu["learning_rate"] and cfg.trainable == "cpu-default" and cfg.resume == "auto"
    assert cfg.reinit_top_layers == cpu["reinit_top_layers"] == 2  # the bundled model's default start (profiles.py)
    paper = config_from_args(parser.parse_args(["--paper"]))
    assert (paper.learning_rate, paper.batch_size, paper.trainable) == (PAPER_LEARNING_RATE, 100, "full")
    assert config_from_args(parser.parse_args(["--paper", "--lr", "1e-5"])).learning_rate == 1e-5
    assert config_from_args(parser.parse_args(["--exclude-overlap-with", "none", "--no-resume"])).exclude_overlap_with is None
    with pytest.raises(SystemExit):
        parser.parse_args(["--method", "bilingual"])


# --------------------------------------------------------------------------- data

@pytest.mark.parametrize("train_on", sorted(PROTOCOLS))
def test_zero_shot_protocols_have_no_overlap(train_on):
    """No question or candidate sentence of the evaluation set occurs in the training pairs."""
    pairs, heldout, info = prepare_training_pairs(TrainConfig(method="hybrid", train_on=train_on), log=None)
    evaluation = load_lareqa(PROTOCOLS[train_on])
    eval_texts = {t.strip() for t in evaluation.questions["text"][:]} | {t.strip() for t in evaluation.candidates["sentence"][:]}
    assert not any(q.strip() in eval_texts for q in pairs["question"][:])
    assert not any(a.strip() in eval_texts for a in pairs["answer"][:])
    assert info["overlap"]["eval_dataset"] == PROTOCOLS[train_on]
    assert info["pairs"] + len(heldout) == info["pairs_built"] - info["overlap"]["removed_pairs"]
    assert len(heldout) > 0 and not set(heldout["question_id"]) & set(pairs["question_id"])


def test_remove_overlap_drops_injected_pairs():
    mlqa = load_lareqa("mlqa-r", languages=["de", "en"], limit_questions=40)
    xquad = load_lareqa("xquad-r", languages=["en"], limit_questions=5)
    pairs = build_training_pairs(mlqa)
    rows = pairs.to_list()
    rows[0]["question"] = "  " + xquad.questions["text"][0] + " "   # an evaluation question
    rows[1]["answer"] = xquad.candidates["sentence"][3]               # an evaluation candidate
    from datasets import Dataset

    leaked = Dataset.from_list(rows)
    found = find_overlap(leaked, xquad)
    assert found["rows"] == [0, 1] and found["questions"] == 1 and found["answers"] == 1
    cleaned, info = remove_overlap(leaked, xquad, log=None)
    assert len(cleaned) == len(leaked) - 2 and info["removed_pairs"] == 2
    assert find_overlap(cleaned, xquad)["rows"] == []


def test_split_pairs_by_question_id():
    pairs = build_training_pairs(load_lareqa("mlqa-r", languages=["de", "en", "es"], limit_questions=100))
    train_pairs, held = split_pairs_by_question_id(pairs, 0.2, seed=1)
    ids_train, ids_held = set(train_pairs["question_id"]), set(held["question_id"])
    assert not ids_train & ids_held
    assert len(train_pairs) + len(held) == len(pairs)
    assert len(ids_held) == round(0.2 * len(set(pairs["question_id"])))
    again = split_pairs_by_question_id(pairs, 0.2, seed=1)[1]
    assert set(again["question_id"]) == ids_held  # deterministic
    subset = subset_lareqa(load_lareqa("mlqa-r", languages=["de", "en", "es"]), ids_held)
    assert set(subset.questions["id"]) == ids_held
    relevant = {c for ids in subset.questions["relevant_ids"] for c in ids}
    assert relevant <= set(subset.candidates["id"])


def test_apply_trainable(bundled_model):
    info = apply_trainable(bundled_model, "cpu-default", 4)
    assert info["num_layers"] == 12 and info["trained_layers"] == [8, 9, 10, 11]
    names = {n for n, p in bundled_model.named_parameters() if p.requires_grad}
    assert not any("embeddings" in n or "layer.7." in n or "pooler" in n for n in names)
    assert any("layer.11." in n for n in names)
    assert info["trainable_parameters"] < 0.1 * info["total_parameters"]
    no_emb = apply_trainable(bundled_model, "no-embeddings")
    full = apply_trainable(bundled_model, "full")
    assert info["trainable_parameters"] < no_emb["trainable_parameters"] < full["trainable_parameters"]
    assert full["total_parameters"] - full["trainable_parameters"] < 200_000  # only the unused pooler


# --------------------------------------------------------------------------- sampler hook

@pytest.mark.parametrize("method", ["monolingual", "cross-lingual", "hybrid", "hybrid-adversarial"])
def test_trainer_batches_are_homogeneous(method, tmp_path, bundled_model):
    """The trainer's own dataloader yields full, single-language-pair batches of the method's kind."""
    config = TrainConfig(method=method, limit_pairs=1200, batch_size=8, steps=5, output_dir=str(tmp_path),
                         record_batches=True, **SMALL)
    run = build_training_run(config, model=bundled_model, log=None)
    loader = run.trainer.get_train_dataloader()
    n = 0
    for batch in loader:
        text_keys = {k.rsplit("_input_ids", 1)[0] for k in batch if k.endswith("_input_ids")}
        assert text_keys == {"question", "answer"}  # language/id columns are not tokenized
        assert batch["question_input_ids"].shape[0] == 8
        assert ("label" in batch) == METHODS[method].adversarial
        n += 1
        if n == 12:
            break
    records = [json.loads(line) for line in open(tmp_path / "batches-rank0.jsonl")]
    assert len(records) >= 12
    kinds = set()
    for rec in records:
        assert rec["n"] == 8
        assert len(rec["question_languages"]) == 1 and len(rec["answer_languages"]) == 1
        kinds.add("mono" if rec["question_languages"] == rec["answer_languages"] else "cross")
    expected = {"monolingual": {"mono"}, "cross-lingual": {"cross"}}.get(method, {"mono", "cross"})
    assert kinds == expected


# --------------------------------------------------------------------------- training moves the numbers

def test_training_lowers_loss_and_raises_held_out_cross_lingual_map(tmp_path):
    """30 CPU-default steps of cross-lingual batches: the loss goes down and, on question ids held out
    of training, retrieval across languages gets better (multilingual-pool mAP up, language bias down)
    while monolingual mAP is not damaged.
    """
    from hybrid_utils.encoder import load_encoder
    from hybrid_utils.evaluation import evaluate_lareqa
    from hybrid_utils.plumbing.prefix_cache import FrozenPrefixCache

    # the pretrained start and its learning rate (profile cpu-pretrained), not the cpu profile's re-initialised top
    # layers, which 30 steps cannot bring back to the pretrained model
    config = TrainConfig(method="cross-lingual", batch_size=16, steps=30, eval_holdout=0.1, save_steps=0,
                         scale=50.0, output_dir=str(tmp_path / "cross"), seed=0, reinit_top_layers=0,
                         learning_rate=1e-4, **SMALL)
    dataset = load_lareqa("mlqa-r", languages=list(SMALL["languages"]))
    _, heldout, _ = prepare_training_pairs(config, log=None)
    held = subset_lareqa(dataset, sorted(set(heldout["question_id"])))

    # both models share the frozen lower layers: they are computed once (the study's Evaluator does the same)
    base_model = load_encoder("bundled", device="cpu")
    layers = FrozenPrefixCache(base_model, num_frozen_layers=12 - config.num_trainable_layers)
    base = evaluate_lareqa(base_model, held, embeddings=layers.lareqa_embeddings(base_model, held, False),
                           show_progress_bar=False)
    path = train(config, log=None)
    frame = load_train_log(path)
    assert list(frame["step"]) == list(range(1, 31))
    assert frame["loss"].tail(5).mean() < frame["loss"].head(5).mean()
    saved = json.loads((path / "heldout_question_ids.json").read_text())["question_ids"]
    assert set(saved) == set(heldout["question_id"])
    assert not set(saved) & set(prepare_training_pairs(config, log=None)[0]["question_id"])

    tuned_model = load_encoder(str(path), device="cpu")
    assert tuned_model.max_seq_length == 512  # the training truncation is not saved
    assert layers.matches(tuned_model)  # only the top layers were trained
    tuned = evaluate_lareqa(tuned_model, held, embeddings=layers.lareqa_embeddings(tuned_model, held, False),
                            show_progress_bar=False)
    for key in ("multilingual_map", "cross_map", "mono_map", "language_bias"):
        print(f"held-out {key}: {base[key]:.4f} -> {tuned[key]:.4f}")
    assert tuned["multilingual_map"] > base["multilingual_map"] + 0.02
    assert tuned["language_bias"] < base["language_bias"]
    assert tuned["cross_map"] > base["cross_map"]
    assert tuned["mono_map"] > base["mono_map"] - 0.01


# --------------------------------------------------------------------------- step log

@pytest.mark.parametrize("discriminator_first", [False, True])
def test_adversarial_log_has_the_encoder_and_discriminator_learning_rates(tmp_path, bundled_model,
                                                                           discriminator_first):
    """``learning_rate`` in train_log.jsonl is the encoder's, not that of the optimizer's first group.

    ``discriminator_lr`` puts the discriminator into parameter groups of its own
    (``learning_rate_mapping``); the trainer logs the rate of group 0 only. With the groups in
    the other order (``discriminator_first``) that would be the discriminator's rate.
    """
    config = TrainConfig(method="adversarial", limit_pairs=500, batch_size=8, steps=3, warmup=0, save_steps=0,
                         learning_rate=1e-4, discriminator_lr=1e-3, output_dir=str(tmp_path / "adv"), **SMALL)
    run = build_training_run(config, model=bundled_model, log=None)
    optimizer = run.trainer.create_optimizer()
    disc_ids = {id(p) for p in run.loss.discriminator.parameters()}
    is_disc = [any(id(p) in disc_ids for p in g["params"]) for g in optimizer.param_groups]
    assert any(is_disc) and not all(is_disc)
    if discriminator_first:
        optimizer.param_groups.sort(key=lambda g: not any(id(p) in disc_ids for p in g["params"]))
        assert any(id(p) in disc_ids for p in optimizer.param_groups[0]["params"])
    run.trainer.train()
    frame = load_train_log(config.output_dir)
    assert list(frame["step"]) == [1, 2, 3]
    linear = [1.0, 2 / 3, 1 / 3]  # no warm-up, linear decay to 0 over 3 steps: the rate each step used
    assert frame["learning_rate"].tolist() == pytest.approx([1e-4 * f for f in linear])
    assert frame["discriminator_learning_rate"].tolist() == pytest.approx([1e-3 * f for f in linear])


def test_train_config_defaults_are_the_cpu_profile():
    """One source of defaults: TrainConfig and the CLI train exactly what the cpu profile trains, per training set."""
    from hybrid_utils.profiles import PROFILES
    from hybrid_utils.experiments import train_config

    cpu = PROFILES["cpu"]
    for train_on in ("mlqa-r", "xquad-r"):
        expected = {name: getattr(cpu, name) for name in ("batch_size", "alpha", "trainable", "max_seq_length",
                                                          "limit_pairs", "eval_holdout", "lambda_max")}
        expected.update(cpu.training_defaults(train_on, "hybrid"))  # TrainConfig and the CLI default to hybrid
        config = TrainConfig(train_on=train_on)
        cli = config_from_args(add_train_arguments(argparse.ArgumentParser()).parse_args(["--train-on", train_on]))
        study = train_config(cpu, "hybrid", train_on)
        for name, value in expected.items():
            assert getattr(config, name) == value, (train_on, name)
            assert getattr(cli, name) == value, (train_on, name)
            assert getattr(study, name) == value, (train_on, name)


# --------------------------------------------------------------------------- resume

def test_resume_continues_at_the_saved_step(tmp_path):
    out = tmp_path / "resume"
    common = dict(method="hybrid-adversarial", limit_pairs=600, batch_size=8, save_steps=3, keep_checkpoints=True,
                  output_dir=str(out), **SMALL)
    train(TrainConfig(steps=3, **common), log=None)
    assert list(load_train_log(out)["step"]) == [1, 2, 3]
    assert (out / "checkpoints" / "checkpoint-3" / "discriminator.pt").exists()
    # an interrupted run may have logged steps after its last checkpoint: they are redone
    with open(out / "train_log.jsonl", "a") as fh:
        fh.write(json.dumps({"step": 4, "loss": 123.0}) + "\n")
    messages = []
    train(TrainConfig(steps=6, **common), log=messages.append)
    assert any("resuming from" in m and "checkpoint-3" in m for m in messages)
    frame = load_train_log(out)
    assert list(frame["step"]) == [1, 2, 3, 4, 5, 6] and 123.0 not in set(frame["loss"])
    state = json.loads((out / "checkpoints" / "checkpoint-6" / "trainer_state.json").read_text())
    assert state["global_step"] == 6
    summary = json.loads((out / "train_config.json").read_text())["summary"]
    assert summary["global_step"] == 6 and summary["resumed_from"].endswith("checkpoint-3")
    assert frame["elapsed_s"].is_monotonic_increasing


def test_a_run_without_kept_checkpoints_skips_the_trainers_last_checkpoint(tmp_path, monkeypatch):
    """Checkpoints during training stay (resuming needs them); the one at the last step, which ``train`` would
    delete right after saving the model itself, is not written."""
    from transformers import Trainer

    saved_at, original = [], Trainer._save_checkpoint

    def recording(self, *args, **kwargs):
        saved_at.append(self.state.global_step)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "_save_checkpoint", recording)
    out = train(TrainConfig(method="monolingual", limit_pairs=300, batch_size=8, steps=3, save_steps=2,
                            output_dir=str(tmp_path / "run"), **SMALL), log=None)
    assert saved_at == [2]
    assert (out / "model.safetensors").exists() and not (out / "checkpoints").exists()


# --------------------------------------------------------------------------- several processes

@pytest.mark.slow
def test_torchrun_two_cpu_processes_keep_batches_homogeneous(tmp_path):
    """torchrun --nproc_per_node 2 (gloo): each process trains on whole, single-language-pair batches."""
    out = tmp_path / "ddp"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "hybrid_utils.study.cli_train", "--method", "hybrid", "--train-on", "mlqa-r",
           "--languages", "de", "en", "es", "--limit-pairs", "600", "--batch-size", "8", "--steps", "3",
           "--save-steps", "0", "--output", str(out), "--record-batches", "--no-progress", "--num-threads", "1"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    per_rank = {}
    for rank in (0, 1):
        records = [json.loads(line) for line in open(out / f"batches-rank{rank}.jsonl")]
        assert len(records) >= 3
        for rec in records:
            assert rec["rank"] == rank and rec["n"] == 8  # whole batches, not halves
            assert len(rec["question_languages"]) == 1 and len(rec["answer_languages"]) == 1
        per_rank[rank] = [tuple(r["question_ids"]) for r in records]
    assert not set(per_rank[0]) & set(per_rank[1])  # the processes train on different batches
    summary = json.loads((out / "train_config.json").read_text())["summary"]
    assert summary["world_size"] == 2 and summary["global_step"] == 3
    assert list(load_train_log(out)["step"]) == [1, 2, 3]


@pytest.mark.slow
def test_reinitialise_top_layers_draws_new_weights_for_those_layers_only(bundled_model):
    import copy

    import torch

    from hybrid_utils.trainable import reinitialise_top_layers

    model = copy.deepcopy(bundled_model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    assert reinitialise_top_layers(model, 2, seed=1) == [10, 11]
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all(".layer.10." in n or ".layer.11." in n for n in changed)
    assert any("layer.11.attention" in n for n in changed) and any("layer.10.output.dense" in n for n in changed)
    query = dict(model.named_parameters())["0.model.encoder.layer.11.attention.self.query.weight"]
    assert float(query.std()) == pytest.approx(0.02, rel=0.05)  # BERT's initializer_range, not the trained 0.09
    texts = ["query: where is the cat?", "passage: The cat sits on the mat."]
    assert not torch.allclose(model.encode(texts, convert_to_tensor=True), bundled_model.encode(texts, convert_to_tensor=True))
    again = copy.deepcopy(bundled_model)
    reinitialise_top_layers(again, 2, seed=1)  # the seed decides the new weights
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), again.parameters()))
    untouched = copy.deepcopy(bundled_model)
    assert reinitialise_top_layers(untouched, 0, seed=1) == []  # the pretrained start: nothing drawn afresh
    assert all(torch.equal(p, q) for p, q in zip(untouched.parameters(), bundled_model.parameters()))
    with pytest.raises(ValueError, match="but the model has 12 layers"):
        reinitialise_top_layers(untouched, 13, seed=1)
    with pytest.raises(ValueError, match="must be between 0"):
        TrainConfig(method="monolingual", reinit_top_layers=3, num_trainable_layers=2)
