"""Training on cached frozen layers: the same loss and gradients as the plain forward, and the cache really hits."""

import os
import random

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def setup():
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    from hybrid_utils.pairs import build_training_pairs
    from hybrid_utils.data import load_lareqa
    from hybrid_utils.encoder import load_encoder
    from hybrid_utils.trainable import apply_trainable

    model = load_encoder("bundled", device="cpu")
    model.max_seq_length = 64
    apply_trainable(model, "cpu-default", 4)
    pairs = build_training_pairs(load_lareqa("mlqa-r", languages=["de", "en", "zh"]))
    rows = random.Random(0).sample(range(len(pairs)), 12)
    questions = [pairs[i]["question"] for i in rows]
    answers = [pairs[i]["answer"] for i in rows]
    return model, MultipleNegativesRankingLoss(model, scale=50.0), questions, answers


def _loss_and_grads(model, loss, questions, answers, cache=None):
    import contextlib

    model.eval()  # dropout off in every layer: both paths then compute the same function
    model.zero_grad()
    features = [model.preprocess(questions, prompt="query: "), model.preprocess(answers, prompt="passage: ")]
    with cache.attached() if cache is not None else contextlib.nullcontext():
        value = loss(features, None)
        value.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    return float(value.detach()), grads


@pytest.mark.parametrize("packed", [True, False])
def test_cached_path_gives_the_same_loss_and_gradients(setup, packed):
    from hybrid_utils.plumbing.training_cache import TrainingPrefixCache

    model, loss, questions, answers = setup
    plain_loss, plain_grads = _loss_and_grads(model, loss, questions, answers)
    cache = TrainingPrefixCache(model, num_frozen_layers=8, packed=packed, shared=False)
    cold_loss, cold_grads = _loss_and_grads(model, loss, questions, answers, cache)   # fills the cache
    warm_loss, warm_grads = _loss_and_grads(model, loss, questions, answers, cache)   # reads it
    assert cache.stats["misses"] == 24 and cache.stats["hits"] == 24
    assert cache.packed is packed
    assert plain_grads.keys() == warm_grads.keys()
    assert len(plain_grads) == 4 * 16  # top 4 layers only: 16 tensors each
    for value in (cold_loss, warm_loss):
        assert value == pytest.approx(plain_loss, rel=1e-5)
    for grads in (cold_grads, warm_grads):
        for name, grad in plain_grads.items():
            scale = grad.abs().max()
            if scale < 1e-6:  # e.g. key biases: mathematically zero gradient, only rounding noise
                continue
            assert torch.allclose(grads[name], grad, atol=1e-4 * float(scale), rtol=1e-3), name


def test_cache_needs_frozen_lower_layers():
    from hybrid_utils.encoder import load_encoder
    from hybrid_utils.plumbing.training_cache import TrainingPrefixCache

    model = load_encoder("bundled", device="cpu")  # nothing frozen
    with pytest.raises(ValueError, match="apply_trainable"):
        TrainingPrefixCache(model, num_frozen_layers=8)


def test_warm_uses_the_collator_tokenization(setup):
    """Texts warmed up front are hits when the same texts arrive in a training batch."""
    from hybrid_utils.plumbing.training_cache import TrainingPrefixCache

    model, loss, questions, answers = setup
    cache = TrainingPrefixCache(model, num_frozen_layers=8, shared=False)
    stats = cache.warm({"query: ": questions, "passage: ": answers})
    assert stats["cached_texts"] == len(set(questions)) + len(set(answers))
    _loss_and_grads(model, loss, questions, answers, cache)
    assert cache.stats["misses"] == stats["cached_texts"] and cache.stats["hits"] == 24
