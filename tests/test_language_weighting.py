"""The size-vs-uniform study: which runs it reuses, which it trains, and how it reports them.

XQuAD-R's 11 languages are parallel, so every language and language pair fills the same number
of batches of 32 (33 per epoch after the held-out questions): uniform and size-proportional
weights then give the very same batches, and the study reuses the hybrid run instead of training
a copy. MLQA-R's languages differ in size (English 1,148 monolingual pairs, the others ~500), so
there the two weightings give different epochs (232 batches with "size", 196 with "uniform").
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from hybrid_utils.pairs import build_training_pairs
from hybrid_utils.data import load_lareqa
from hybrid_utils.study.language_weighting import (LANGUAGE_WEIGHTS_COLUMNS, describe_language_weights, language_weights_run,
                                             weights_are_equivalent)
from hybrid_utils.profiles import get_profile
from hybrid_utils.samplers import HybridBatchSampler
from hybrid_utils.study.stats import compare_methods

B = 32


def test_parallel_xquad_r_gives_identical_batches_with_both_weightings():
    pairs = build_training_pairs(load_lareqa("xquad-r"))
    assert weights_are_equivalent(pairs, B, 0.5)
    size = HybridBatchSampler(pairs, B, alpha=0.5, seed=2)
    uniform = HybridBatchSampler(pairs, B, alpha=0.5, seed=2, language_weights="uniform")
    assert len(size) == len(uniform) > 500
    for epoch in (0, 1):
        assert size.batches(epoch) == uniform.batches(epoch)


def test_mlqa_r_languages_of_different_sizes_give_different_batches():
    pairs = build_training_pairs(load_lareqa("mlqa-r"))
    assert not weights_are_equivalent(pairs, B, 0.5)
    size = HybridBatchSampler(pairs, B, alpha=0.5, seed=2)
    uniform = HybridBatchSampler(pairs, B, alpha=0.5, seed=2, language_weights="uniform")
    assert len(uniform) < len(size)


def test_runs_reuse_the_study_hybrid_run_unless_the_batches_differ(tmp_path):
    profile = get_profile("smoke", runs_dir=str(tmp_path / "runs"), results_dir=str(tmp_path / "results"))
    overrides, folder, out, reused = language_weights_run(profile, "size", "mlqa-r", seed=2)
    assert reused and overrides == {} and folder.name == "hybrid-mlqa-r-seed2"
    assert out.parent.name == "hybrid" and out.name == "xquad-r-seed2.json"
    # uniform on identical batches: the same run again
    assert language_weights_run(profile, "uniform", "xquad-r", seed=2, equivalent=True)[1].name == "hybrid-xquad-r-seed2"
    overrides, folder, out, reused = language_weights_run(profile, "uniform", "mlqa-r", seed=2)
    assert not reused and overrides == {"language_weights": "uniform", "output_dir": str(folder)}
    assert folder == Path(profile.runs_dir) / "multilingual-e5-small" / "language-weights" / "hybrid-mlqa-r-uniform-seed2"
    assert out.parts[-2:] == ("uniform", "xquad-r-seed2.json") and "language-weights" in out.parts
    with pytest.raises(ValueError, match="'size'.*'uniform'"):
        language_weights_run(profile, "equal", "mlqa-r")


def _result(values):
    """A stored evaluation with per-question values (only what compare_methods reads)."""
    ids = [f"q{i}" for i in range(len(values))]
    per_question = {"question_id": ids, "mono_ap": values, "cross_ap": values, "multilingual_ap": values,
                    "rank_distance": [10 * (1 - v) for v in values]}
    return {"per_question": per_question}


def test_description_names_identical_runs_and_a_measured_difference():
    rows = []
    for weights in ("size", "uniform"):
        for seed in (1, 2):
            rows.append({"train_on": "xquad-r", "eval_on": "mlqa-r", "language_weights": weights, "seed": seed,
                         "identical_to_size": True, "mono_map": .5, "cross_map": .4, "multilingual_map": .3,
                         "language_bias": 100.0})
            rows.append({"train_on": "mlqa-r", "eval_on": "xquad-r", "language_weights": weights, "seed": seed,
                         "identical_to_size": weights == "size", "mono_map": .5, "cross_map": .4,
                         "multilingual_map": .3, "language_bias": 100.0})
    table = pd.DataFrame(rows, columns=LANGUAGE_WEIGHTS_COLUMNS)
    base = [0.2 + 0.6 * (i % 7) / 7 for i in range(60)]
    results = {("hybrid (size)", "xquad-r"): [_result(base), _result([v + 0.002 for v in base])],
               ("hybrid (uniform)", "xquad-r"): [_result([v + 0.05 for v in base]), _result([v + 0.052 for v in base])]}
    comparisons = compare_methods(results, comparisons=[("hybrid (uniform)", "hybrid (size)")], n_resamples=999)
    text = describe_language_weights(table, comparisons)
    assert "Trained on xquad-r, evaluated on mlqa-r (2 seeds): every language and language pair" in text
    assert "identical batches" in text
    # +0.05 on every question, seeds 0.002 apart: uniform better on the three mAPs and the rank distance
    assert "a difference passes the test on monolingual mAP, cross-lingual mAP, multilingual mAP, rank distance" in text
    assert "hybrid (uniform) − hybrid (size) = +0.050" in text


def test_results_are_read_back_from_the_written_files_and_summarized(tmp_path):
    from hybrid_utils.study.language_weighting import language_weights_results, summarize_language_weights

    profile = get_profile("smoke", runs_dir=str(tmp_path / "runs"), results_dir=str(tmp_path / "results"))
    rows = [{"train_on": "mlqa-r", "eval_on": "xquad-r", "language_weights": w, "seed": seed, "identical_to_size": w == "size",
             "mono_map": m, "cross_map": 0.4, "multilingual_map": 0.3, "language_bias": b}
            for w, seed, m, b in (("size", 1, 0.50, 100.0), ("size", 2, 0.52, 110.0), ("uniform", 1, 0.60, 90.0),
                                  ("uniform", 2, 0.64, 80.0))]
    (tmp_path / "results").mkdir()
    pd.DataFrame(rows).to_csv(tmp_path / "results" / "language_weights.csv", index=False)
    pd.DataFrame(columns=["eval_on", "metric", "verdict"]).to_csv(
        tmp_path / "results" / "language_weights_comparisons.csv", index=False)
    table, comparisons = language_weights_results(profile)  # read, not trained: the run folder stays empty
    assert len(table) == 4 and comparisons.empty and not (tmp_path / "runs").exists()
    summary = summarize_language_weights(table).set_index("language_weights")
    assert summary.loc["uniform", "mono_map_mean"] == pytest.approx(0.62)
    assert summary.loc["uniform", "language_bias_sd"] == pytest.approx(7.0711, abs=1e-4)
    assert summary.loc["size", "seeds"] == 2 and summary.loc["size", "identical_to_size"]
    with pytest.raises(ValueError, match="language_weights.csv"):
        summarize_language_weights(table.drop(columns="seed"))
