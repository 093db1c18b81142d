"""Loads of run folders with the same tokenizer files parse the tokenizer once, and behave as separate loads."""

from __future__ import annotations

import shutil

import pytest
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.base.modules import transformer as st_transformer
from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

from hybrid_utils.encoder import load_encoder
from hybrid_utils.plumbing import shared_tokenizer
from hybrid_utils.plumbing.lru import LRURegistry
from hybrid_utils.plumbing.shared_tokenizer import shared_tokenizers, tokenizer_files_digest

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "berlin", "has", "people", "how", "many", "live", "in",
         "paris", "is", "big", "who", "query", ":", "passage"]


def _save_tiny_model(folder, words=WORDS):
    """A 1-layer BERT of 8 dimensions as a Sentence Transformers folder (its tokenizer has ``tokenizer.json``)."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    raw = folder.parent / f"{folder.name}-raw"
    raw.mkdir()
    (raw / "vocab.txt").write_text("\n".join(words) + "\n")
    BertTokenizerFast(str(raw / "vocab.txt")).save_pretrained(raw)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(words), hidden_size=8, num_hidden_layers=1, num_attention_heads=1,
                         intermediate_size=16, max_position_embeddings=32)).save_pretrained(raw)
    model = SentenceTransformer(modules=[Transformer(str(raw), max_seq_length=16), Pooling(8, "mean"), Normalize()],
                                device="cpu", prompts={"query": "query : ", "passage": "passage : "})
    model.save(str(folder))
    return folder


@pytest.fixture
def parses(monkeypatch):
    """The folders whose tokenizer transformers really parsed during the test (the shared ones are cleared first)."""
    monkeypatch.setattr(shared_tokenizer, "_SHARED", LRURegistry(size=4))
    original, seen = st_transformer.AutoProcessor, []

    class Counting:
        @staticmethod
        def from_pretrained(name_or_path, *args, **kwargs):
            seen.append(str(name_or_path))
            return original.from_pretrained(name_or_path, *args, **kwargs)

    monkeypatch.setattr(st_transformer, "AutoProcessor", Counting)
    return seen


def test_runs_with_the_same_tokenizer_files_parse_it_once_and_tokenize_alike(tmp_path, parses):
    first = _save_tiny_model(tmp_path / "run-a")
    second = tmp_path / "run-b"
    shutil.copytree(first, second)  # another run of the same base model: same tokenizer bytes
    assert tokenizer_files_digest(first) == tokenizer_files_digest(second) is not None
    parses.clear()  # building the folder loaded its tokenizer too

    a, b = load_encoder(first, device="cpu"), load_encoder(second, device="cpu", max_seq_length=4)
    assert parses == [str(first)]
    assert a.tokenizer is not b.tokenizer and a.tokenizer._tokenizer is b.tokenizer._tokenizer
    text = "query : how many people live in berlin"
    # each model keeps its own truncation although the Rust tokenizer is shared, in either order
    assert a.tokenize([text])["input_ids"].shape[1] == 10
    assert b.tokenize([text])["input_ids"].shape[1] == 4
    assert a.tokenize([text])["input_ids"].shape[1] == 10
    torch.testing.assert_close(a.encode([text], convert_to_tensor=True), load_encoder(first, device="cpu").encode(
        [text], convert_to_tensor=True))


def test_other_tokenizer_files_are_parsed_for_themselves(tmp_path, parses):
    first = _save_tiny_model(tmp_path / "run-a")
    other = _save_tiny_model(tmp_path / "other-vocabulary", words=WORDS[:5] + list(reversed(WORDS[5:])))
    assert tokenizer_files_digest(first) != tokenizer_files_digest(other)
    parses.clear()
    a, b = load_encoder(first, device="cpu"), load_encoder(other, device="cpu")
    assert parses == [str(first), str(other)]
    assert a.tokenize(["berlin"])["input_ids"].tolist() != b.tokenize(["berlin"])["input_ids"].tolist()


def test_the_loader_is_restored_after_the_block_even_on_error(tmp_path):
    original = st_transformer.AutoProcessor
    with pytest.raises(RuntimeError), shared_tokenizers():
        assert st_transformer.AutoProcessor is not original
        raise RuntimeError("a failed load")
    assert st_transformer.AutoProcessor is original
    assert tokenizer_files_digest(tmp_path) is None  # no tokenizer.json: loaded the usual way, never shared
