import numpy as np
import pytest
import torch

from hybrid_utils.data import load_lareqa
from hybrid_utils.encoder import encode_texts, load_encoder
from hybrid_utils.plumbing.frozen_store import FrozenLayerStore
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


def test_a_new_process_reads_the_lower_layers_from_disk(base, texts, tmp_path):
    """What one cache computed, a second one (as in the next chapter's process) reads: no lower layer runs and the
    embeddings are the same bit for bit. Other texts, another prompt or other lower layers are not served."""
    texts = texts[:30]
    store = FrozenLayerStore(tmp_path)
    expected = FrozenPrefixCache(base, num_frozen_layers=10, store=store).encode(base, texts, "passage", False)
    assert len(list(tmp_path.iterdir())) == 1

    lower_layer_calls = []
    hook = base[0].auto_model.encoder.layer[0].register_forward_hook(lambda *args: lower_layer_calls.append(1))
    try:
        second = FrozenPrefixCache(base, num_frozen_layers=10, store=store)
        np.testing.assert_array_equal(second.encode(base, texts, "passage", False), expected)
        assert not lower_layer_calls
        second.encode(base, texts[:5], "passage", False)
        assert lower_layer_calls  # another pool: computed, and stored beside the first
        assert len(list(tmp_path.iterdir())) == 2
        (tmp_path / second.store_key(texts, "passage") / "states.pt").write_bytes(b"damaged")
        lower_layer_calls.clear()
        np.testing.assert_array_equal(FrozenPrefixCache(base, num_frozen_layers=10, store=store).encode(
            base, texts, "passage", False), expected)
        assert lower_layer_calls  # a damaged entry is computed again
    finally:
        hook.remove()
    assert second.store_key(texts, "query") != second.store_key(texts, "passage")
    assert FrozenPrefixCache(base, num_frozen_layers=9, store=store).store_key(texts, "passage") != \
        second.store_key(texts, "passage")
    changed = load_encoder("bundled")
    with torch.no_grad():
        changed[0].auto_model.encoder.layer[9].output.dense.bias.add_(0.01)  # a lower layer
    assert FrozenPrefixCache(changed, num_frozen_layers=10, store=store).store_key(texts, "passage") != \
        second.store_key(texts, "passage")

    off = FrozenLayerStore(tmp_path / "off", max_megabytes=0)
    FrozenPrefixCache(base, num_frozen_layers=10, store=off).encode(base, texts[:3], "passage", False)
    assert not (tmp_path / "off").exists()


def test_the_frozen_layer_store_keeps_its_size_limit(tmp_path):
    """Beyond the limit the least recently used entries go; the one just written stays."""
    import os

    entry = ([(np.arange(4), torch.zeros(4, 8, 96), torch.ones(4, 8, dtype=torch.long))], np.arange(4), 4)
    store = FrozenLayerStore(tmp_path, max_megabytes=0.03)  # room for two entries of about 12 kB
    for number, key in enumerate(("a", "b")):
        store.write(key, entry)
        os.utime(tmp_path / key, (number, number))
    assert store.read("a") is not None  # read: now the most recently used
    store.write("c", entry)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "c"]
    batches, inverse, n_unique = store.read("c")
    assert torch.equal(batches[0][1], entry[0][0][1]) and list(inverse) == [0, 1, 2, 3] and n_unique == 4
    assert store.clear() > 0 and not tmp_path.exists()


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
