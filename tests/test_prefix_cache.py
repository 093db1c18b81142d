import numpy as np
import pytest
import torch

from hybrid_utils.data import load_lareqa
from hybrid_utils.encoder import encode_texts, load_encoder
from hybrid_utils.plumbing.prefix_cache import FrozenPrefixCache


@pytest.fixture(scope="module")
def texts():
    ds = load_lareqa("xquad-r", languages=["en", "zh", "th"], limit_questions=12)
    return list(ds.candidates["sentence"]) + list(ds.questions["text"])


@pytest.fixture(scope="module")
def base():
    return load_encoder("bundled")


def test_cache_reproduces_the_full_model(base, texts):
    cache = FrozenPrefixCache(base, num_frozen_layers=8)
    full = encode_texts(base, texts, "passage", show_progress_bar=False)
    cached = cache.encode(base, texts, "passage", show_progress_bar=False)
    cosine = np.sum(full * cached, axis=1)
    print(f"cache vs full encode on {len(texts)} texts: min cosine {cosine.min():.7f}")
    assert cosine.min() > 0.99999


def test_cache_serves_a_model_with_changed_top_layers_only(base, texts):
    cache = FrozenPrefixCache(base, num_frozen_layers=8)
    tuned = load_encoder("bundled")
    with torch.no_grad():  # stands in for fine-tuning of the top layers
        tuned[0].auto_model.encoder.layer[11].intermediate.dense.weight.mul_(1.5)
    assert cache.matches(tuned)
    cached = cache.encode(tuned, texts, "query", show_progress_bar=False)
    full = encode_texts(tuned, texts, "query", show_progress_bar=False)
    before = encode_texts(base, texts, "query", show_progress_bar=False)
    assert np.sum(full * cached, axis=1).min() > 0.99999
    assert np.sum(before * full, axis=1).min() < 0.9999  # the change is visible, and the cache follows it

    with torch.no_grad():
        tuned[0].auto_model.encoder.layer[3].output.dense.bias.add_(0.01)
    assert not cache.matches(tuned)  # a lower layer changed: the cache must not be used
    fallback = cache.encode(tuned, texts, "query", show_progress_bar=False)
    assert np.sum(fallback * encode_texts(tuned, texts, "query", show_progress_bar=False), axis=1).min() > 0.99999


def test_invalid_layer_count(base):
    with pytest.raises(ValueError, match="between 1 and 11"):
        FrozenPrefixCache(base, num_frozen_layers=12)


def test_evaluators_of_one_process_share_the_frozen_layers():
    """A chapter makes an Evaluator per ensure_result call: they must not compute the pool's lower layers again."""
    from dataclasses import replace

    from hybrid_utils.experiments import Evaluator
    from hybrid_utils.profiles import get_profile

    smoke = get_profile("smoke")
    first, second = Evaluator(smoke, log=None), Evaluator(smoke, log=None)
    assert first._cache("bundled") is second._cache("bundled") is not None
    other = Evaluator(replace(smoke, num_trainable_layers=smoke.num_trainable_layers + 1), log=None)._cache("bundled")
    assert other is not first._cache("bundled")
    assert other.num_frozen_layers == first._cache("bundled").num_frozen_layers - 1
