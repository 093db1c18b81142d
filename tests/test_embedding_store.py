"""The embedding store: a model's embeddings read back across processes, never another model's."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

from hybrid_utils.encoder import encode_texts
from hybrid_utils.plumbing.embedding_store import EmbeddingStore, model_fingerprint
from hybrid_utils.plumbing.frozen_store import FrozenLayerStore

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "berlin", "has", "people", "how", "many", "live", "in",
         "paris", "is", "big", "who", "query", ":", "passage"]


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    """A 1-layer BERT of 8 dimensions with a 19-word vocabulary (no hub), saved once."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-bert")
    (folder / "vocab.txt").write_text("\n".join(WORDS) + "\n")
    BertTokenizerFast(str(folder / "vocab.txt")).save_pretrained(folder)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(WORDS), hidden_size=8, num_hidden_layers=1, num_attention_heads=1,
                         intermediate_size=16, max_position_embeddings=32)).save_pretrained(folder)
    return folder


@pytest.fixture
def tiny_model(tiny_folder):
    def build(seed: int = 0) -> SentenceTransformer:
        """The tiny BERT with mean pooling and the package's two prompts; ``seed`` perturbs its weights."""
        transformer = Transformer(str(tiny_folder), max_seq_length=16)
        model = SentenceTransformer(modules=[transformer, Pooling(8, "mean"), Normalize()], device="cpu",
                                    prompts={"query": "query : ", "passage": "passage : "})
        if seed:
            torch.manual_seed(seed)
            with torch.no_grad():
                for parameter in model.parameters():
                    parameter.add_(0.1 * torch.randn_like(parameter))
        return model.eval()
    return build


TEXTS = ["berlin has many people", "paris is big", "how many people live in berlin", "paris is big"]


class Counting:
    """``encode_missing`` that records which texts it was asked for."""

    def __init__(self, model, prompt):
        self.model, self.prompt, self.calls = model, prompt, []

    def __call__(self, texts):
        self.calls.append(list(texts))
        return encode_texts(self.model, texts, self.prompt, show_progress_bar=False)


def test_stored_embeddings_equal_fresh_ones_and_are_not_encoded_again(tmp_path, tiny_model):
    model = tiny_model()
    fresh = encode_texts(model, TEXTS, "passage", show_progress_bar=False)
    first = Counting(model, "passage")
    stored = EmbeddingStore(tmp_path).encode(model, TEXTS, "passage", first)
    np.testing.assert_array_equal(stored, fresh)
    assert first.calls == [["berlin has many people", "paris is big", "how many people live in berlin"]]
    # a new store object (as in another process) on the same folder: nothing is encoded, only new texts are
    again = Counting(model, "passage")
    np.testing.assert_array_equal(EmbeddingStore(tmp_path).encode(model, TEXTS[::-1], "passage", again), fresh[::-1])
    more = EmbeddingStore(tmp_path).encode(model, ["who is big", "paris is big"], "passage", again)
    assert again.calls == [["who is big"]]
    assert EmbeddingStore(tmp_path).encode(model, [], "passage", again).shape == (0, 8)  # nothing to store
    np.testing.assert_allclose(more, encode_texts(model, ["who is big", "paris is big"], "passage",
                                                  show_progress_bar=False), atol=1e-6)


def test_another_model_prompt_or_changed_weights_get_their_own_embeddings(tmp_path, tiny_model):
    store = EmbeddingStore(tmp_path)
    model, other = tiny_model(0), tiny_model(1)
    passage = store.encode(model, TEXTS, "passage", Counting(model, "passage"))
    calls = Counting(other, "passage")
    assert not np.allclose(store.encode(other, TEXTS, "passage", calls), passage)
    assert calls.calls, "a different model must not read the first model's embeddings"
    query = Counting(model, "query")
    assert not np.allclose(store.encode(model, TEXTS, "query", query), passage)  # the query prompt differs
    assert query.calls
    # training changes the weights in place: the fingerprint follows, the old vectors are not reused
    before = model_fingerprint(model)
    with torch.no_grad():
        model[0].auto_model.encoder.layer[0].output.dense.bias.add_(1.0)
    assert model_fingerprint(model) != before
    changed = Counting(model, "passage")
    store.encode(model, TEXTS, "passage", changed)
    assert changed.calls


def test_encode_texts_store_flag_uses_the_default_store(tmp_path, tiny_model, monkeypatch):
    monkeypatch.setenv("HYBRID_UTILS_CACHE", str(tmp_path))
    model = tiny_model()
    stored = encode_texts(model, TEXTS, "passage", show_progress_bar=False, store=True)
    np.testing.assert_array_equal(stored, encode_texts(model, TEXTS, "passage", show_progress_bar=False))
    assert [p.name for p in (tmp_path / "embeddings").iterdir()] and EmbeddingStore().size_bytes() > 0
    monkeypatch.setenv("HYBRID_EMBEDDING_CACHE_MB", "0")  # turned off: encoded, nothing stored
    calls = Counting(model, "passage")
    EmbeddingStore(tmp_path / "off").encode(model, TEXTS, "passage", calls)
    assert calls.calls and not (tmp_path / "off").exists()


def test_the_size_limit_drops_the_least_recently_used_model(tmp_path, tiny_model):
    small = EmbeddingStore(tmp_path)
    first, second = tiny_model(0), tiny_model(1)
    small.encode(first, TEXTS, "passage", Counting(first, "passage"))
    one = small.size_bytes()
    small.max_bytes = one + 100  # room for one model's entry, not two
    small.encode(second, TEXTS, "passage", Counting(second, "passage"))
    assert len(list(tmp_path.iterdir())) == 1 and small.size_bytes() <= one + 100
    calls = Counting(second, "passage")
    small.encode(second, TEXTS, "passage", calls)
    assert not calls.calls  # the newest entry is the one kept
    assert small.clear() > 0 and not tmp_path.exists()


def test_a_damaged_entry_is_encoded_again(tmp_path, tiny_model):
    store = EmbeddingStore(tmp_path)
    model = tiny_model()
    store.encode(model, TEXTS, "passage", Counting(model, "passage"))
    (next(tmp_path.iterdir()) / "vectors.npy").write_bytes(b"not an array")
    calls = Counting(model, "passage")
    np.testing.assert_array_equal(store.encode(model, TEXTS, "passage", calls),
                                  encode_texts(model, TEXTS, "passage", show_progress_bar=False))
    assert calls.calls


def test_cache_command_reports_and_clears(tmp_path, tiny_model, monkeypatch, capsys):
    from hybrid_utils.study.cli import main

    monkeypatch.setenv("HYBRID_UTILS_CACHE", str(tmp_path))
    model = tiny_model()
    encode_texts(model, TEXTS, "passage", show_progress_bar=False, store=True)
    FrozenLayerStore().write("pool", ([(np.arange(1), torch.zeros(1, 2, 8), torch.ones(1, 2))], np.arange(1), 1))
    assert main(["cache"]) == 0
    out = capsys.readouterr().out
    assert str(tmp_path / "embeddings") in out and str(tmp_path / "frozen-layers") in out
    assert main(["cache", "--clear"]) == 0
    assert "deleted" in capsys.readouterr().out
    assert not (tmp_path / "embeddings").exists() and not (tmp_path / "frozen-layers").exists()


@pytest.mark.slow
def test_a_saved_run_has_one_fingerprint_in_every_process(tmp_path, tiny_model):
    """A run fine-tuned from the bundled model is saved without the BERT pooler; loading used to re-create one
    with random weights, so each load had another fingerprint and the store never served a trained run."""
    from hybrid_utils.encoder import load_encoder

    load_encoder("bundled").save(str(tmp_path / "run"))
    first, second = load_encoder(str(tmp_path / "run")), load_encoder(str(tmp_path / "run"))
    assert model_fingerprint(first) == model_fingerprint(second)
    assert first[0].auto_model.pooler is None
    tiny_model().save(str(tmp_path / "tiny"))  # a model saved with its pooler keeps it
    assert load_encoder(str(tmp_path / "tiny"))[0].auto_model.pooler is not None


@pytest.mark.slow
def test_evaluation_fills_the_store_that_maps_and_search_read(tmp_path, monkeypatch):
    """The Evaluator's embeddings (frozen-prefix path) are what chapter 7's maps and search read back."""
    from hybrid_utils.encoder import load_encoder
    from hybrid_utils.experiments import Evaluator
    from hybrid_utils.maps import answer_sample, embed_answers
    from hybrid_utils.profiles import get_profile
    from hybrid_utils.search import encode_pool

    monkeypatch.setattr("hybrid_utils.plumbing.embedding_store.cache_root", lambda: tmp_path)
    profile = get_profile("smoke", limit_questions=10)
    evaluator = Evaluator(profile, log=lambda *_: None)
    pool = evaluator.dataset("xquad-r")
    evaluator.evaluate("bundled", pool, "zero-shot", show_progress_bar=False)
    model = load_encoder("bundled")
    sample = answer_sample(pool, n_ids=5, seed=0)

    def no_encoding(*args, **kwargs):
        raise AssertionError("encoded again: the store should have had these embeddings")

    monkeypatch.setattr(SentenceTransformer, "encode", no_encoding)
    mapped = embed_answers(model, sample)
    embeddings, frame = encode_pool(model, pool)
    fresh = {t: v for t, v in zip(frame["sentence"], embeddings)}
    np.testing.assert_allclose(mapped, np.stack([fresh[t] for t in sample["sentence"]]), atol=1e-6)

