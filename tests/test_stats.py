"""Tests of hybrid_utils.stats: seed summaries, paired bootstrap / permutation comparisons and verdicts."""

import math

import numpy as np
import pandas as pd
import pytest

from hybrid_utils.stats import (METRICS, compare_methods, describe_comparisons, judge, paired_difference,
                                seed_summary)

N = 400
IDS = [f"q{i:04d}" for i in range(N)]


def fake_result(values, key="multilingual_ap", ids=IDS):
    """A result dict with only the per-question values of one metric (others copied from it)."""
    values = [None if v is None else float(v) for v in values]
    per_question = {"question_id": list(ids), **{k: values for k, _ in METRICS.values()}}
    per_question[key] = values
    return {"per_question": per_question}


@pytest.fixture(scope="module")
def base():
    return np.random.default_rng(0).uniform(0.1, 0.9, N)


def seeds(values, shifts):
    return [fake_result(values + s) for s in shifts]


def test_exact_shift_is_detected(base):
    a = seeds(base, [0.0, 0.001, -0.001])
    b = seeds(base + 0.05, [0.0, 0.001, -0.001])
    row = paired_difference(a, b, "multilingual_map", n_resamples=999)
    assert row["diff"] == pytest.approx(-0.05, abs=1e-12)
    assert row["ci_low"] == pytest.approx(-0.05, abs=1e-9) and row["ci_high"] == pytest.approx(-0.05, abs=1e-9)
    assert row["ci_high"] < 0
    assert row["p_value"] < 0.01
    assert row["n_questions"] == N
    assert row["a_seed_sd"] == pytest.approx(0.001) and row["b_seed_sd"] == pytest.approx(0.001)
    assert row["seed_spread"] == pytest.approx(math.sqrt(2) * 0.001)
    assert judge(row, +1) == "b better"
    assert judge(row, -1) == "a better"  # lower is better: a's smaller values win


def test_pure_noise_gives_no_difference(base):
    noise = np.random.default_rng(1).normal(0, 0.05, N)
    a = seeds(base, [0.0, 0.002, -0.002])
    b = seeds(base + noise - noise.mean(), [0.0, 0.002, -0.002])  # mean difference exactly 0
    row = paired_difference(a, b, "multilingual_ap", n_resamples=999)
    assert row["diff"] == pytest.approx(0.0, abs=1e-12)
    assert row["ci_low"] < 0 < row["ci_high"]
    assert row["ci_high"] - row["ci_low"] == pytest.approx(2 * 1.96 * noise.std(ddof=1) / math.sqrt(N), rel=0.15)
    assert row["p_value"] > 0.9
    assert judge(row, +1) == "no measurable difference"


def test_independent_noise_is_not_significant():
    rng = np.random.default_rng(5)
    a = [fake_result(rng.uniform(0, 1, N)) for _ in range(3)]
    b = [fake_result(rng.uniform(0, 1, N)) for _ in range(3)]
    row = paired_difference(a, b, "mono_map", n_resamples=999)
    assert row["ci_low"] < 0 < row["ci_high"] and row["p_value"] > 0.05
    assert judge(row) == "no measurable difference"


def test_large_difference_but_larger_seed_spread_gives_no_verdict(base):
    a = seeds(base + 0.05, [0.0, 0.2, -0.2])  # seeds of a differ by far more than the 0.05 gap
    b = seeds(base, [0.0, 0.001, -0.001])
    row = paired_difference(a, b, "cross_map", n_resamples=999)
    assert row["diff"] == pytest.approx(0.05)
    assert row["ci_low"] > 0  # the questions alone would say a is better
    assert row["a_seed_sd"] == pytest.approx(0.2) and row["seed_spread"] > 0.2
    assert judge(row, +1) == "no measurable difference"


def test_one_seed_cannot_be_called_better(base):
    row = paired_difference([fake_result(base + 0.05)], [fake_result(base)], "multilingual_map", n_resamples=999)
    assert row["ci_low"] > 0
    assert math.isnan(row["a_seed_sd"]) and math.isnan(row["b_seed_sd"]) and math.isnan(row["seed_spread"])
    assert judge(row, +1) == "no measurable difference (one seed)"
    # one seed on one side only: the other side's sd is the spread
    row = paired_difference(seeds(base + 0.05, [0.0, 0.001, -0.001]), [fake_result(base)], "multilingual_map",
                            n_resamples=999)
    assert row["seed_spread"] == pytest.approx(0.001)
    assert judge(row, +1) == "a better"


def test_exact_permutation_p_value_and_missing_questions():
    # 5 paired questions, all differences positive: the exact sign-flip test gives p = 2 / 2**5
    ids = ["a", "b", "c", "d", "e", "f"]
    a = [fake_result([0.5, 0.6, 0.7, 0.8, 0.9, None], ids=ids)]
    b = [fake_result([0.4, 0.45, 0.5, 0.6, 0.85, 0.3], ids=ids)]
    row = paired_difference(a, b, "multilingual_map")
    assert row["n_questions"] == 5  # f has no value for a
    assert row["diff"] == pytest.approx(np.mean([0.1, 0.15, 0.2, 0.2, 0.05]))
    assert row["p_value"] == pytest.approx(2 / 32)
    # seeds are averaged per question id, whatever the order of the ids in each result
    b2 = [fake_result([0.3, 0.85, 0.6, 0.5, 0.45, 0.4], ids=ids[::-1])]
    assert paired_difference(a, b2, "multilingual_map")["diff"] == pytest.approx(row["diff"])


def test_compare_methods_rank_distance_direction_and_description(base):
    shifts = [0.0, 0.001, -0.001]
    distances = base * 20

    def method(ap_shift, distance_shift):
        out = []
        for s in shifts:
            r = fake_result(base + ap_shift + s)
            r["per_question"]["rank_distance"] = list(distances + distance_shift + s)
            out.append(r)
        return out

    results = {("hybrid", "xquad-r"): method(0.02, -3.0),  # better mAP and smaller rank distance
               ("monolingual", "xquad-r"): method(0.0, 0.0),
               ("adversarial", "mlqa-r"): method(0.0, 0.0)}
    frame = compare_methods(results, n_resamples=999)
    assert list(frame.columns) == ["eval_on", "metric", "method_a", "method_b", "diff", "ci_low", "ci_high",
                                   "p_value", "n_questions", "a_seed_sd", "b_seed_sd", "seed_spread", "verdict"]
    assert len(frame) == 4  # only hybrid vs monolingual on xquad-r exists; 4 metrics
    bias = frame.set_index("metric").loc["language_bias"]
    assert bias["diff"] == pytest.approx(-3.0) and bias["verdict"] == "a better"
    multi = frame.set_index("metric").loc["multilingual_map"]
    assert multi["diff"] == pytest.approx(0.02) and multi["verdict"] == "a better"
    text = describe_comparisons(frame)
    lines = text.splitlines()
    assert len(lines) == 4
    assert any(line.startswith("- xquad-r, multilingual mAP: hybrid − monolingual = +0.020 [0.020, 0.020], p = ")
               and line.endswith("seed spread 0.001: hybrid better") for line in lines)
    assert any(line.startswith("- xquad-r, rank distance: hybrid − monolingual = -3.00") and
               line.endswith(": hybrid better") for line in lines)


def test_describe_no_difference_and_one_seed(base):
    results = {("hybrid", "mlqa-r"): [fake_result(base + 0.05)], ("monolingual", "mlqa-r"): [fake_result(base)]}
    frame = compare_methods(results, metrics={"mono_map": METRICS["mono_map"]}, n_resamples=999)
    assert frame["verdict"].tolist() == ["no measurable difference (one seed)"]
    assert describe_comparisons(frame).endswith("one seed: no measurable difference (one seed)")


def test_seed_summary_matches_numpy():
    rng = np.random.default_rng(3)
    rows = []
    for method, n_seeds in (("hybrid", 3), ("monolingual", 5), ("adversarial", 1)):
        for seed in range(n_seeds):
            rows.append({"model": "m", "method": method, "train_on": "squad", "eval_on": "xquad-r", "seed": seed,
                         "mono_map": rng.uniform(), "multilingual_map": rng.uniform(), "language_bias": rng.uniform(0, 50)})
    frame = pd.DataFrame(rows)
    out = seed_summary(frame).set_index("method")
    for method, group in frame.groupby("method"):
        for metric in ("mono_map", "multilingual_map", "language_bias"):
            assert out.loc[method, metric] == pytest.approx(np.mean(group[metric]))
            if len(group) > 1:
                assert out.loc[method, f"{metric}_sd"] == pytest.approx(np.std(group[metric], ddof=1))
            else:
                assert math.isnan(out.loc[method, f"{metric}_sd"])
        assert out.loc[method, "n_seeds"] == len(group)
    assert "cross_map" not in out.columns  # only metrics present in the frame
    assert list(seed_summary(frame, metrics=["mono_map"]).columns) == [
        "model", "method", "train_on", "eval_on", "mono_map", "mono_map_sd", "n_seeds"]


def test_bad_input():
    with pytest.raises(ValueError, match="metric"):
        paired_difference([fake_result([0.1, 0.2])], [fake_result([0.1, 0.2])], "recall", n_resamples=99)
    with pytest.raises(ValueError, match="per_question"):
        paired_difference([{"mono_map": 0.5}], [fake_result([0.1])], "mono_map")
    with pytest.raises(ValueError, match="direction"):
        judge({"diff": 1, "ci_low": 0.5, "ci_high": 1.5, "seed_spread": 0.1}, 0)


def test_an_untrained_model_against_its_own_post_processing_has_no_seed_noise(base):
    results = {("zero-shot", "x"): [fake_result(base)], ("zero-shot + center", "x"): [fake_result(base + 0.05)],
               ("hybrid", "x"): [fake_result(base)], ("hybrid + center", "x"): [fake_result(base + 0.05)]}
    frame = compare_methods(results, comparisons=[("zero-shot + center", "zero-shot"), ("hybrid + center", "hybrid")],
                            metrics={"multilingual_map": METRICS["multilingual_map"]}, n_resamples=999)
    verdicts = dict(zip(frame["method_a"], frame["verdict"]))
    # the fixed model: only the questions are noise, and +0.05 on every question is a real gain
    assert verdicts["zero-shot + center"] == "a better"
    assert frame.set_index("method_a").loc["zero-shot + center", "seed_spread"] == 0.0
    # a trained method with one seed still cannot be called better
    assert verdicts["hybrid + center"] == "no measurable difference (one seed)"
