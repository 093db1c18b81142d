"""Embedding maps: the sample, the projections and the language-separation number."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from hybrid_utils import maps
from hybrid_utils.data import load_lareqa

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def xquad():
    return load_lareqa("xquad-r")


def test_answer_sample_has_every_language_of_each_id_and_its_relevant_answer(xquad):
    sample = maps.answer_sample(xquad, n_ids=5, seed=3)
    assert len(sample) == 5 * 11 and sample["question_id"].nunique() == 5
    assert (sample.groupby("question_id")["language"].apply(sorted) == [sorted(xquad.languages)] * 5).all()
    assert all(cid.startswith(f"{lang}-") for cid, lang in zip(sample["candidate_id"], sample["language"]))
    first = sample.iloc[0]
    assert first["sentence"] == xquad.translations(first["question_id"])[first["language"]]["answer"]
    assert maps.answer_sample(xquad, n_ids=5, seed=3).equals(sample)  # the draw is reproducible
    assert not maps.answer_sample(xquad, n_ids=5, seed=4)["question_id"].equals(sample["question_id"])


def test_answer_sample_rejects_bad_input_with_a_clear_message(xquad):
    with pytest.raises(ValueError, match="not in the dataset"):
        maps.answer_sample(xquad, languages=["en", "xx"])
    with pytest.raises(ValueError, match="n_ids must be at least 1"):
        maps.answer_sample(xquad, n_ids=0)


def _clusters(n_per=40, spread=0.05, seed=0):
    """Two languages, each a tight cluster around its own direction in 16 dimensions."""
    rng = np.random.default_rng(seed)
    centres = np.eye(16)[:2] * 3
    x = np.concatenate([c + spread * rng.standard_normal((n_per, 16)) for c in centres])
    return x, ["en"] * n_per + ["de"] * n_per


def test_language_separation_is_high_for_language_islands_and_low_for_mixed_languages():
    x, languages = _clusters()
    assert maps.language_separation(x, languages) > 0.9
    mixed = list(np.random.default_rng(1).permutation(languages))
    assert abs(maps.language_separation(x, mixed)) < 0.1
    with pytest.raises(ValueError, match="two languages"):
        maps.language_separation(x, ["en"] * len(x))


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_projection_keeps_the_two_clusters_apart(method):
    x, languages = _clusters()
    xy = maps.project(x, method, seed=0)
    assert xy.shape == (80, 2)
    a, b = xy[:40], xy[40:]
    between = np.linalg.norm(a.mean(0) - b.mean(0))
    within = max(a.std(0).max(), b.std(0).max())
    assert between > 5 * within
    with pytest.raises(ValueError, match="unknown projection"):
        maps.project(x, "umap")


def test_probe_accuracies_read_the_committed_study():
    """The seed-1 probe of each method, as its evaluation JSON holds it (read here independently)."""
    import json

    found = maps.probe_accuracies(ROOT / "results")
    assert set(found) >= {"zero-shot", "monolingual", "cross-lingual", "hybrid", "adversarial"}
    study = ROOT / "results" / "multilingual-e5-small"
    for method, accuracy in found.items():
        name = "xquad-r.json" if method == "zero-shot" else "xquad-r-seed1.json"
        assert accuracy == json.loads((study / method / name).read_text())["probe_accuracy"], method
    assert found["zero-shot"] > 0.9  # raw embeddings tell XQuAD-R's 11 languages apart (chance 1/11)


def test_embedding_maps_side_by_side(monkeypatch):
    sample = pd.DataFrame({"question_id": [f"q{i // 2}" for i in range(80)],
                           "language": ["en", "de"] * 40, "candidate_id": [f"c{i}" for i in range(80)],
                           "sentence": [f"s{i}" for i in range(80)]})
    x, _ = _clusters()
    by_language = np.empty_like(x)
    by_language[0::2], by_language[1::2] = x[:40], x[40:]  # "biased": en and de apart
    rng = np.random.default_rng(2)
    agnostic = np.repeat(rng.standard_normal((40, 16)), 2, axis=0) + 0.01 * rng.standard_normal((80, 16))
    fake = {"biased": by_language, "agnostic": agnostic}
    monkeypatch.setattr(maps, "embed_answers", lambda model, sample, batch_size=64: fake[model])
    frame = maps.embedding_maps({"biased": "biased", "agnostic": "agnostic"}, sample, projections=("pca",))
    assert len(frame) == 160
    separation = frame.groupby("model")["separation"].first()
    assert separation["biased"] > 0.9 and separation["agnostic"] < 0.1
    summary = maps.map_summary(frame, probe_accuracy={"biased": 1.0})
    # biased: every nearest neighbour is another answer in the same language; agnostic: the translation
    assert summary.loc["biased", "nearest = other answer, same language"] == 1.0
    assert summary.loc["agnostic", "nearest = same answer, other language"] == 1.0
    assert summary.loc["biased", "language probe accuracy"] == 1.0
    assert np.isnan(summary.loc["agnostic", "language probe accuracy"])
    fig = maps.plot_embedding_maps(frame, probe_accuracy={"biased": 1.0, "agnostic": 0.5})
    titles = [ax.get_title() for ax in fig.axes]
    assert "probe 1.00" in titles[0] and "probe 0.50" in titles[1]
    plt.close(fig)
