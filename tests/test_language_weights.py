"""``language_weights``: languages drawn by data size (default) or uniformly, on the real MLQA-R pairs.

MLQA-R's languages differ in size (monolingual training pairs: English 1,148, the six others
500-517), so the two settings give clearly different batch compositions: over 20 epochs with
batches of 32 and alpha 0.5, "size" draws English for 27.6 % of the monolingual batches and each
other language for 11.8-12.6 %; "uniform" draws every language for 1/7 = 14.3 % of them.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from hybrid_utils.batch_groups import batches_per_epoch
from hybrid_utils.pairs import build_training_pairs
from hybrid_utils.data import load_lareqa
from hybrid_utils.batch_groups import MONOLINGUAL
from hybrid_utils.samplers import CrossLingualBatchSampler, HybridBatchSampler, MonolingualBatchSampler
from hybrid_utils.config import make_batch_sampler

B = 32


@pytest.fixture(scope="module")
def mlqa_pairs():
    return build_training_pairs(load_lareqa("mlqa-r"))


def _monolingual_language_frequencies(sampler, epochs: int = 20) -> tuple[dict[str, float], int]:
    counts = Counter()
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        frame = sampler.describe()
        counts.update(frame.loc[frame["kind"] == MONOLINGUAL, "question_language"])
    total = sum(counts.values())
    return {language: n / total for language, n in counts.items()}, total


def test_uniform_weights_draw_every_monolingual_language_equally_often(mlqa_pairs):
    sampler = HybridBatchSampler(mlqa_pairs, B, alpha=0.5, seed=3, language_weights="uniform")
    frequencies, total = _monolingual_language_frequencies(sampler)
    languages = sorted(set(mlqa_pairs["question_language"]))
    assert sorted(frequencies) == languages and total > 100
    uniform = 1 / len(languages)
    assert max(abs(f - uniform) for f in frequencies.values()) <= 0.02, frequencies
    # the documented target says the same
    target = sampler.target_proportions()
    mono = target[target["kind"] == MONOLINGUAL]
    assert mono["target"].to_numpy() == pytest.approx(np.full(len(languages), 0.5 / len(languages)))
    assert target["target"].sum() == pytest.approx(1.0)


def test_size_weights_stay_proportional_to_the_number_of_pairs(mlqa_pairs):
    sampler = HybridBatchSampler(mlqa_pairs, B, alpha=0.5, seed=3)  # default: "size"
    assert sampler.language_weights == "size"
    frequencies, _ = _monolingual_language_frequencies(sampler)
    sizes = Counter(q for q, a in zip(mlqa_pairs["question_language"], mlqa_pairs["answer_language"]) if q == a)
    proportional = {language: n / sum(sizes.values()) for language, n in sizes.items()}
    assert max(abs(frequencies[k] - proportional[k]) for k in sizes) <= 0.02, (frequencies, proportional)
    # and far from uniform: the largest language is drawn more than twice as often as the smallest
    assert max(frequencies.values()) > 2 * min(frequencies.values())


def test_uniform_cross_lingual_pairs_and_the_alpha_edges(mlqa_pairs):
    cross = CrossLingualBatchSampler(mlqa_pairs, B, seed=1, language_weights="uniform")
    groups = Counter(zip(cross.describe()["question_language"], cross.describe()["answer_language"]))
    assert len(set(groups.values())) == 1 and len(groups) == 42  # every X != Y pair equally often per epoch
    # alpha = 1 / 0 hybrid batches are exactly the monolingual / cross-lingual sampler's, in both settings
    for weights in ("size", "uniform"):
        for alpha, cls in ((1.0, MonolingualBatchSampler), (0.0, CrossLingualBatchSampler)):
            hybrid = HybridBatchSampler(mlqa_pairs, B, alpha=alpha, seed=7, language_weights=weights)
            single = cls(mlqa_pairs, B, seed=7, language_weights=weights)
            for epoch in (0, 3):
                assert hybrid.batches(epoch) == single.batches(epoch)


def test_uniform_epoch_uses_as_many_batches_of_every_group_as_the_smallest_fills(mlqa_pairs):
    sampler = MonolingualBatchSampler(mlqa_pairs, B, language_weights="uniform")
    size = MonolingualBatchSampler(mlqa_pairs, B)
    mono = [g for g in size.groups if g.kind == MONOLINGUAL]
    smallest = min(g.n_batches for g in mono)
    assert len(sampler) == smallest * len(mono) < len(size)
    assert set(batches_per_epoch(mono, "uniform").values()) == {smallest}
    assert sampler.describe().attrs["language_weights"] == "uniform"


def test_unknown_language_weights_say_what_to_use(mlqa_pairs):
    with pytest.raises(ValueError, match="'size'.*'uniform'"):
        HybridBatchSampler(mlqa_pairs, B, alpha=0.5, language_weights="equal")
    with pytest.raises(ValueError, match="language_weights"):
        make_batch_sampler("hybrid", alpha=0.5, language_weights="by-size")
