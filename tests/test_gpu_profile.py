"""The gpu profile on CPU: its configuration end to end on a tiny XLM-RoBERTa, the time budget, --dry-run.

Every code path of a Colab T4 run except CUDA itself runs here: full fine-tuning of an
XLM-RoBERTa-architecture model (randomly initialised, 2 layers of 32 dimensions, a Unigram
vocabulary trained on MLQA-R texts, built in a temporary folder: no hub) with the profile's
batch of 100 pairs, sequence length 128, learning rate, methods and evaluation, and the
measured time estimate that runs before training.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from hybrid_utils.study.plan import BudgetExceededError, assumed_seconds, plan_study
from hybrid_utils.profiles import get_profile

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_xlmr(tmp_path_factory) -> str:
    """A randomly initialised 2-layer XLM-RoBERTa saved as a Sentence Transformers folder (mean pooling)."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import XLMRobertaConfig, XLMRobertaModel, XLMRobertaTokenizerFast

    from hybrid_utils.data import load_lareqa

    data = load_lareqa("mlqa-r")
    texts = list(data.questions["text"][:3000]) + list(data.candidates["sentence"][:3000])
    special = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]   # XLM-R's ids 0-3 and its mask token
    tokenizer = Tokenizer(models.Unigram())
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    tokenizer.train_from_iterator(texts, trainers.UnigramTrainer(vocab_size=1000, special_tokens=special,
                                                                 unk_token="<unk>"))
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
    fast = XLMRobertaTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", sep_token="</s>",
                                   cls_token="<s>", unk_token="<unk>", pad_token="<pad>", mask_token="<mask>")
    folder = tmp_path_factory.mktemp("tiny-xlm-roberta")
    config = XLMRobertaConfig(vocab_size=len(fast), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                              intermediate_size=64, max_position_embeddings=130, pad_token_id=1, bos_token_id=0,
                              eos_token_id=2)
    XLMRobertaModel(config).save_pretrained(folder)
    fast.save_pretrained(folder)
    transformer = Transformer(str(folder), max_seq_length=128)
    SentenceTransformer(modules=[transformer, Pooling(transformer.get_embedding_dimension(), "mean")],
                        device="cpu").save(str(folder))
    return str(folder)


def _tiny_gpu_profile(tiny_xlmr: str, tmp_path: Path, **overrides):
    """The gpu profile with the tiny model, 3 steps, 25 evaluation questions, one protocol, a temporary folder."""
    settings = dict(models=(tiny_xlmr,), steps=3, limit_questions=25, protocols=(("mlqa-r", "xquad-r"),),
                    results_dir=str(tmp_path / "results"), runs_dir=str(tmp_path / "runs"))
    settings.update(overrides)
    return replace(get_profile("gpu"), **settings)


def test_gpu_profile_end_to_end_on_a_tiny_xlm_roberta(tiny_xlmr, tmp_path):
    from hybrid_utils.encoder import native_bf16
    from hybrid_utils.study.reproduce import reproduce
    from hybrid_utils.experiments import run_dir

    gpu = get_profile("gpu")
    profile = _tiny_gpu_profile(tiny_xlmr, tmp_path)
    assert (profile.batch_size, profile.max_seq_length, profile.trainable) == (100, 128, "full")
    lines: list[str] = []
    summary = reproduce(profile, log=lines.append)
    text = "\n".join(lines)
    # the measured estimate came before any training, and the plan fits the budget
    assert text.index("time estimate") < text.index("== tiny")
    assert "measured on this CPU" in text and f"within the budget of {gpu.max_hours:g} h" in text

    assert sorted(summary["method"]) == sorted(["zero-shot", *gpu.methods])
    maps = summary[["mono_map", "cross_map", "multilingual_map"]].to_numpy()
    assert ((maps > 0) & (maps <= 1)).all()
    for method in gpu.methods:
        saved = json.loads((run_dir(profile, tiny_xlmr, method, "mlqa-r") / "train_config.json").read_text())
        assert (saved["batch_size"], saved["trainable"], saved["learning_rate"]) == (100, "full", gpu.learning_rate)
        assert saved["summary"]["global_step"] == 3
        # no CUDA here: fp16 is for GPUs without bf16 only; bf16 only on CPUs with AMX
        assert saved["summary"]["fp16"] is False
        assert saved["summary"]["bf16"] is native_bf16("cpu")
        # full fine-tuning: everything, embeddings included, but the BERT-style pooler that mean pooling never uses
        trainable = saved["data"]["trainable"]
        assert trainable["total_parameters"] - trainable["trainable_parameters"] == 32 * 32 + 32


def test_over_budget_stops_before_training_and_keeps_earlier_results(tiny_xlmr, tmp_path):
    from hybrid_utils.study.reproduce import reproduce
    from hybrid_utils.experiments import run_dir

    profile = _tiny_gpu_profile(tiny_xlmr, tmp_path, methods=("hybrid",))
    reproduce(profile, log=lambda *a: None, max_hours=1.0)
    results = sorted(Path(profile.results_dir).rglob("*"))
    before = {p: p.stat().st_mtime for p in results if p.is_file()}
    folder = run_dir(profile, tiny_xlmr, "hybrid", "mlqa-r")
    model_time = (folder / "model.safetensors").stat().st_mtime

    longer = replace(profile, steps=10**7)   # months of training at any speed
    with pytest.raises(BudgetExceededError, match=r"exceeds the budget of 1 h.*Nothing was trained"):
        reproduce(longer, log=lambda *a: None, max_hours=1.0)
    assert {p: p.stat().st_mtime for p in results if p.is_file()} == before
    assert (folder / "model.safetensors").stat().st_mtime == model_time
    assert json.loads((folder / "train_config.json").read_text())["steps"] == 3


def test_dry_run_prints_the_plan_without_a_gpu(tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "hybrid_utils", "reproduce", "--profile", "gpu", "--dry-run"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    gpu = get_profile("gpu")
    assert "models xlm-roberta-base;" in out and "batch 100" in out
    runs = len(gpu.methods) * len(gpu.protocols)
    assert f"{runs} training runs (0 done, {runs} to train, {runs * gpu.steps} steps)" in out
    assert out.count(f"{gpu.steps} steps  -> runs/gpu/xlm-roberta-base/") == runs
    assert "estimated total:" in out and "not measured" in out
    assert not (tmp_path / "runs").exists() and not (tmp_path / "results-gpu").exists()  # nothing written


def test_paper_setting_is_one_profile_away():
    paper = plan_study("gpu-paper")
    assert paper.models == ["xlm-roberta-base", "sentence-transformers/LaBSE"]
    assert len(paper.runs) == 2 * 5 * 2 and {r.steps for r in paper.runs} == {2000}
    assert paper.profile.batch_size == 100
    # the assumed estimate grows with the work: the paper's setting costs several times the Colab one
    colab = assumed_seconds(plan_study("gpu"))
    full = assumed_seconds(paper)
    assert 0 < colab.hours < get_profile("gpu").max_hours < full.hours
    frame = paper.table()
    assert isinstance(frame, pd.DataFrame) and len(frame) == 20 and not frame["done"].any()
