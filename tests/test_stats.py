"""Tests of hybrid_utils.study.stats and hybrid_utils.study.bootstrap: seed summaries, the table's macro estimand, the paired
two-level bootstrap (cross-checked against scipy), Holm's correction and the verdicts."""

import json
import math
import time
import zlib
from collections import Counter

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from hybrid_utils.study.bootstrap import SeedValues, macro_over_languages, paired_bootstrap
from hybrid_utils.study.stats import (ESTIMAND_MACRO, ESTIMAND_QUESTIONS, METRICS, compare_methods, describe_comparisons,
                                holm, judge, paired_difference, seed_summary)

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
    # the seeds (shifted by +-0.001) are resampled too, even in old result files: the interval has their width
    assert -0.0525 < row["ci_low"] < -0.0501 and -0.0499 < row["ci_high"] < -0.0475
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


def test_old_result_files_pair_questions_and_say_so():
    # only per_question (files from before per_query): 5 paired questions, f has no value for a
    ids = ["a", "b", "c", "d", "e", "f"]
    a = [fake_result([0.5, 0.6, 0.7, 0.8, 0.9, None], ids=ids)]
    b = [fake_result([0.4, 0.45, 0.5, 0.6, 0.85, 0.3], ids=ids)]
    row = paired_difference(a, b, "multilingual_map", n_resamples=4000)
    d = np.array([0.1, 0.15, 0.2, 0.2, 0.05])
    assert row["estimand"] == ESTIMAND_QUESTIONS
    assert row["n_questions"] == 5 and row["n_seeds_a"] == row["n_seeds_b"] == 1
    assert row["diff"] == pytest.approx(d.mean())
    # p from the bootstrap sd (sd of a resampled mean: std(d, ddof=0) / sqrt(n)), not floored at 1 / (n + 1)
    z = d.mean() / (d.std() / math.sqrt(d.size))
    assert scipy_stats.norm.isf(row["p_value"] / 2) == pytest.approx(z, rel=0.05)
    assert row["p_value"] < 1e-5  # the old permutation test could not go below 2 / 2**5
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
                                   "p_value", "p_holm", "n_questions", "n_seeds_a", "n_seeds_b", "a_seed_sd",
                                   "b_seed_sd", "seed_spread", "estimand", "verdict"]
    assert (frame["estimand"] == ESTIMAND_QUESTIONS).all() and (frame["n_seeds_a"] == 3).all()
    assert len(frame) == 4  # only hybrid vs monolingual on xquad-r exists; 4 metrics
    bias = frame.set_index("metric").loc["language_bias"]
    assert bias["diff"] == pytest.approx(-3.0) and bias["verdict"] == "a better"
    multi = frame.set_index("metric").loc["multilingual_map"]
    assert multi["diff"] == pytest.approx(0.02) and multi["verdict"] == "a better"
    text = describe_comparisons(frame)
    lines = text.splitlines()
    assert len(lines) == 4
    assert any(line.startswith("- xquad-r, multilingual mAP: hybrid − monolingual = +0.020 [0.019, 0.021] "
                               "(mean over questions, old result file), p = < 1e-6, Holm p = < 1e-6, ")
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


# --------------------------------------------------------------------------------------
# per-query values: the table's macro estimand
# --------------------------------------------------------------------------------------
def per_query_result(values, ids, languages, rank_distance=None):
    """A result dict with per-query values (the same values for every mAP key)."""
    values = [None if v is None or not np.isfinite(v) else float(v) for v in values]
    distances = values if rank_distance is None else list(rank_distance)
    per_query = {"question_id": list(ids), "language": list(languages), "mono_ap": values, "cross_ap": values,
                 "multilingual_ap": values, "rank_distance": distances}
    return {"per_query": per_query}


def hashed_encoder(texts, prompt_name, dim=12):
    """A tiny deterministic fake encoder: one pseudo-random vector per text (crc32-seeded)."""
    return np.stack([np.random.default_rng(zlib.crc32(f"{prompt_name}:{t}".encode())).standard_normal(dim)
                     for t in texts]).astype(np.float32)


@pytest.fixture(scope="module")
def mlqa_subset():
    """An unbalanced MLQA-R subset: ids with 2, 3 and 4 language versions (English always among them)."""
    from hybrid_utils.data import load_lareqa, subset_lareqa

    dataset = load_lareqa("mlqa-r")
    versions = Counter(dataset.questions["id"])
    ids = [i for n in (2, 3, 4) for i in [q for q, c in versions.items() if c == n][:10]]
    return subset_lareqa(dataset, ids)


STORED = {"mono_map": "mono_ap", "cross_map": "cross_ap", "multilingual_map": "multilingual_ap",
          "language_bias": "rank_distance"}
STORED_BY_KEY = {key: metric for metric, key in STORED.items()}


def id_means(per_query):
    """Per question (sorted ids), the mean of each per-query key over the question's rows (NaN without a value)."""
    frame = pd.DataFrame(per_query).drop(columns="language").set_index("question").astype(float)
    return {key: frame[key].groupby(level=0).mean().sort_index().to_numpy() for key in STORED_BY_KEY}


def per_question_values(result, key):
    return np.array([np.nan if v is None else v for v in result["per_question"][key]], dtype=float)


def test_macro_of_per_query_reproduces_the_stored_metrics_on_unbalanced_mlqa_r(mlqa_subset, tmp_path):
    from hybrid_utils.evaluation import evaluate_lareqa
    from hybrid_utils.results import load_result, save_result
    from hybrid_utils.postprocess import centered_evaluation, centering_means

    dataset = mlqa_subset
    counts = Counter(dataset.questions["language"])
    assert counts["en"] == 30 and min(counts.values()) < 20  # unbalanced, like the whole of MLQA-R
    q = hashed_encoder(list(dataset.questions["text"]), "query")
    c = hashed_encoder(list(dataset.candidates["sentence"]), "passage")
    result = evaluate_lareqa(None, dataset, embeddings=(q, c), show_progress_bar=False, probe=False)
    result["postprocess"] = {"center": centered_evaluation(q, c, dataset, centering_means(hashed_encoder, dataset),
                                                           probe=False)}
    for variant in (result, result["postprocess"]["center"]):
        pq = variant["per_query"]
        ids = [variant["per_question"]["question_id"][i] for i in pq["question"]]
        assert ids == list(dataset.questions["id"]) and pq["language"] == list(dataset.questions["language"])
        assert {len(v) for v in pq.values()} == {len(dataset.questions)}
        for metric, key in STORED.items():
            assert macro_over_languages(pq[key], pq["language"]) == pytest.approx(variant[metric], abs=2e-6, rel=0)
    # the per-question means (all of an id's languages) are not the table's numbers here
    assert abs(np.mean(result["per_question"]["multilingual_ap"]) - result["multilingual_map"]) > 1e-3
    # mono / multilingual / rank distance are the query's own values: per id they average to per_question ...
    by_id = id_means(result["per_query"])
    for key in ("mono_ap", "multilingual_ap", "rank_distance"):
        assert by_id[key] == pytest.approx(per_question_values(result, key), abs=1e-5)
    # ... while cross_ap is the query's share of the settings mean, weighted by the sizes of the settings
    assert len({n for n in result["pair_n_questions"]["en"].values() if n}) > 1  # settings of different sizes
    assert np.nanmax(np.abs(by_id["cross_ap"] - per_question_values(result, "cross_ap"))) > 1e-3
    # saved compactly (also inside postprocess), and read back unchanged
    path = save_result(result, tmp_path / "r.json")
    text = path.read_text()
    assert text.count('"language": ["') == 2 and text.count('"per_query": {') == 2
    assert text.count('"question_id": ["') == 2  # per_question, plain and centred: one line each
    assert text.count('"question": [') == 2  # per_query refers to per_question's ids by index
    first_id = json.dumps(dataset.questions["id"][0])
    assert not any(line.strip().rstrip(",") == first_id for line in text.splitlines())
    assert load_result(path) == json.loads(json.dumps(result))


def test_cross_ap_is_the_plain_mean_over_other_languages_on_parallel_xquad_r():
    from hybrid_utils.data import load_lareqa
    from hybrid_utils.evaluation import evaluate_lareqa

    dataset = load_lareqa("xquad-r", languages=["de", "en", "es"], limit_questions=8)
    q = hashed_encoder(list(dataset.questions["text"]), "query")
    c = hashed_encoder(list(dataset.candidates["sentence"]), "passage")
    result = evaluate_lareqa(None, dataset, embeddings=(q, c), show_progress_bar=False, probe=False)
    pq = result["per_query"]
    assert len(pq["question"]) == 24
    # every id in every language: the query's cross_ap is the plain mean of its AP in the two other pools, so
    # per id it averages to per_question's cross_ap (the mean over the id's rows of that plain mean)
    for key in ("mono_ap", "cross_ap", "multilingual_ap", "rank_distance"):
        assert id_means(pq)[key] == pytest.approx(per_question_values(result, key), abs=1e-5)
        assert macro_over_languages(pq[key], pq["language"]) == pytest.approx(result[STORED_BY_KEY[key]], abs=2e-6)


def test_macro_over_languages_by_hand():
    # de: mean(0.2, 0.4) = 0.3; en: mean(1.0) = 1.0 (None skipped); fr: no value, left out
    assert macro_over_languages([0.2, 0.4, 1.0, None, None], ["de", "de", "en", "en", "fr"]) == pytest.approx(0.65)
    assert math.isnan(macro_over_languages([None], ["de"]))
    with pytest.raises(ValueError, match="languages"):
        macro_over_languages([0.1, 0.2], ["de"])


def unbalanced_rows(n_ids=120, seed=0):
    """ids in 1-4 languages (English always): an MLQA-R-like layout."""
    rng = np.random.default_rng(seed)
    ids, languages = [], []
    for k in range(n_ids):
        for lang in ["en", *rng.choice(["ar", "de", "es"], size=rng.integers(0, 4), replace=False)]:
            ids.append(f"q{k:03d}")
            languages.append(str(lang))
    return np.array(ids), np.array(languages)


def test_diff_is_the_difference_of_the_tables_macro_means():
    ids, languages = unbalanced_rows()
    rng = np.random.default_rng(1)
    base = rng.uniform(0.2, 0.8, ids.size) + 0.2 * (languages == "en")  # English easier: macro != row mean
    a = [per_query_result(base + 0.03 + rng.normal(0, 0.05, ids.size), ids, languages) for _ in range(3)]
    b = [per_query_result(base + rng.normal(0, 0.05, ids.size), ids, languages) for _ in range(2)]
    table = {side: [macro_over_languages(r["per_query"]["multilingual_ap"], languages) for r in results]
             for side, results in (("a", a), ("b", b))}
    row = paired_difference(a, b, "multilingual_map", n_resamples=2000)
    assert row["estimand"] == ESTIMAND_MACRO
    assert row["diff"] == pytest.approx(np.mean(table["a"]) - np.mean(table["b"]), abs=1e-12)
    assert row["a_seed_sd"] == pytest.approx(np.std(table["a"], ddof=1), abs=1e-12)
    assert (row["n_seeds_a"], row["n_seeds_b"], row["n_questions"]) == (3, 2, 120)
    assert row["ci_low"] < row["diff"] < row["ci_high"]


# --------------------------------------------------------------------------------------
# the two-level bootstrap
# --------------------------------------------------------------------------------------
def test_bootstrap_matches_scipy_on_one_seed_per_side_and_balanced_data():
    n_ids, langs = 300, ["de", "en", "es", "zh"]
    ids = np.repeat([f"q{k:03d}" for k in range(n_ids)], len(langs))
    languages = np.tile(langs, n_ids)
    rng = np.random.default_rng(7)
    question_effect = np.repeat(rng.normal(0.01, 0.08, n_ids), len(langs))  # rows of an id are correlated
    b_values = rng.uniform(0.2, 0.8, ids.size)
    a_values = b_values + question_effect + rng.normal(0, 0.03, ids.size)
    a, b = SeedValues(ids, languages, a_values), SeedValues(ids, languages, b_values)
    ours = paired_bootstrap([a], [b], n_resamples=5000, random_state=3)
    # balanced data: the macro over languages is the mean over ids of the per-id mean difference
    d = (a_values - b_values).reshape(n_ids, len(langs)).mean(axis=1)
    theirs = scipy_stats.bootstrap((d,), np.mean, n_resamples=5000, method="percentile", random_state=4)
    se = d.std(ddof=1) / math.sqrt(n_ids)
    assert ours.diff == pytest.approx(d.mean(), abs=1e-12)
    assert ours.n_questions == n_ids
    # same interval within Monte-Carlo error (one limit's MC sd is ~0.05 se for 5000 replicates)
    assert ours.ci_low == pytest.approx(theirs.confidence_interval.low, abs=0.2 * se)
    assert ours.ci_high == pytest.approx(theirs.confidence_interval.high, abs=0.2 * se)
    assert ours.sd == pytest.approx(theirs.standard_error, rel=0.05)
    assert ours.sd == pytest.approx(se, rel=0.05)
    # the cluster draw matters: resampling the 1,200 rows as if independent gives a too narrow interval
    rows = scipy_stats.bootstrap((a_values - b_values,), np.mean, n_resamples=2000, random_state=4)
    assert rows.standard_error < 0.7 * ours.sd


def test_bootstrap_is_fast_enough_for_a_study_table():
    ids = np.repeat([f"{k:024x}" for k in range(1190)], 11)  # XQuAD-R: 1,190 ids x 11 languages
    languages = np.tile([f"l{x:02d}" for x in range(11)], 1190)
    rng = np.random.default_rng(0)
    seeds = [SeedValues(ids, languages, rng.uniform(size=ids.size)) for _ in range(6)]
    start = time.perf_counter()
    result = paired_bootstrap(seeds[:3], seeds[3:], n_resamples=4000)
    assert time.perf_counter() - start < 5.0  # ~0.2 s on 2 cores: 100 comparisons take well under a minute
    assert result.replicates.shape == (4000,) and np.isfinite(result.replicates).all()


# --------------------------------------------------------------------------------------
# Holm and the verdicts
# --------------------------------------------------------------------------------------
def test_holm_by_hand():
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> running max 0.02, 0.03, 0.06, 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02], abs=1e-15)
    assert holm([0.5, 0.4]) == pytest.approx([0.8, 0.8])  # capped at 1 only when above it
    assert holm([0.6, 0.9]).tolist() == [1.0, 1.0]
    adjusted = holm([0.01, float("nan"), 0.02])  # NaN is no test: m = 2
    assert adjusted[0] == pytest.approx(0.02) and math.isnan(adjusted[1]) and adjusted[2] == pytest.approx(0.02)


def test_holm_family_is_one_evaluation_set_and_decides_the_verdict():
    row = {"diff": 0.02, "ci_low": 0.001, "ci_high": 0.04, "p_value": 0.01, "seed_spread": 0.001}
    assert judge(row) == "a better"
    assert judge({**row, "p_holm": 0.2}) == "no measurable difference"  # significant alone, not in the family
    assert judge({**row, "p_holm": 0.2}, -1) == "no measurable difference"
    assert judge({**row, "p_holm": 0.04}, -1) == "b better"  # higher a, lower is better
    # an interval on the other side of 0 than diff (possible with a skewed bootstrap) is no verdict
    assert judge({**row, "ci_low": -0.04, "ci_high": -0.001}) == "no measurable difference"
    ids, languages = unbalanced_rows(80)
    rng = np.random.default_rng(2)
    base = rng.uniform(0.2, 0.8, ids.size)
    results = {(m, e): [per_query_result(base + shift + rng.normal(0, 0.05, ids.size), ids, languages)
                        for _ in range(3)]
               for e in ("xquad-r", "mlqa-r") for m, shift in (("hybrid", 0.01), ("monolingual", 0.0))}
    results[("adversarial", "mlqa-r")] = results[("monolingual", "mlqa-r")]
    frame = compare_methods(results, n_resamples=1000)
    assert len(frame) == 4 + 3 * 4  # xquad-r: hybrid - monolingual; mlqa-r: also both against adversarial
    for _, family in frame.groupby("eval_on"):
        assert family["p_holm"].to_numpy() == pytest.approx(holm(family["p_value"].to_numpy()))
    assert (frame["p_holm"] >= frame["p_value"]).all()


def seed_results(offsets, ids, languages, base, noise=0.02, seed=0):
    """One per-query result per seed: ``base`` plus the seed's offset plus per-row noise."""
    rng = np.random.default_rng(seed)
    return [per_query_result(np.clip(base + o + rng.normal(0, noise, ids.size), 0, 1), ids, languages)
            for o in offsets]


def test_one_outlier_seed_no_longer_dismisses_a_clear_difference():
    ids, languages = unbalanced_rows(150)
    base = np.random.default_rng(3).uniform(0.3, 0.7, ids.size)
    # 11 runs of a are 0.03 above b, one run is 0.06 below: its single-run sd (0.026) exceeds the gap (0.0225)
    a = seed_results([0.03] * 11 + [-0.06], ids, languages, base, seed=1)
    b = seed_results([0.0, 0.001, -0.001], ids, languages, base, seed=2)
    frame = compare_methods({("hybrid", "x"): a, ("monolingual", "x"): b},
                            metrics={"multilingual_map": METRICS["multilingual_map"]})
    row = frame.iloc[0]
    assert row["diff"] == pytest.approx(0.0225, abs=0.002)
    assert abs(row["diff"]) < row["seed_spread"]  # the old rule ("diff must exceed the seed spread") said no
    assert row["ci_low"] > 0 and row["p_holm"] < 0.01
    assert row["verdict"] == "a better"


def test_a_difference_within_seed_noise_is_not_called_better(base):
    ids, languages = unbalanced_rows(150)
    values = np.random.default_rng(4).uniform(0.3, 0.7, ids.size)
    a = seed_results([0.05, 0.25, -0.15], ids, languages, values, noise=0.01, seed=5)  # runs of a scatter widely
    b = seed_results([0.0, 0.002, -0.002], ids, languages, values, noise=0.01, seed=6)
    row = paired_difference(a, b, "mono_map")
    assert row["diff"] == pytest.approx(0.05, abs=0.005)
    assert row["ci_low"] < 0 < row["ci_high"] and row["p_value"] > 0.05
    assert judge(row) == "no measurable difference"
    # over questions alone (seed means per question, the old test) the same gap looked certain
    boot = paired_bootstrap([SeedValues(ids, languages, np.mean([r["per_query"]["mono_ap"] for r in a], axis=0))],
                            [SeedValues(ids, languages, np.mean([r["per_query"]["mono_ap"] for r in b], axis=0))])
    assert boot.ci_low > 0.03  # the questions alone would call a better


def test_describe_an_old_comparisons_table_without_the_new_columns():
    old = pd.DataFrame([{"eval_on": "xquad-r", "metric": "cross_map", "method_a": "hybrid", "method_b": "monolingual",
                         "diff": 0.008, "ci_low": 0.006, "ci_high": 0.0099, "p_value": 0.0002, "n_questions": 1190,
                         "a_seed_sd": 0.0015, "b_seed_sd": 0.0014, "seed_spread": 0.002, "verdict": "a better"}])
    assert describe_comparisons(old) == ("- xquad-r, cross-lingual mAP: hybrid − monolingual = +0.008 [0.006, 0.010], "
                                         "p = 0.0002, seed spread 0.002: hybrid better")
    new = old.assign(p_value=2e-7, p_holm=3e-6, estimand=ESTIMAND_QUESTIONS)
    assert describe_comparisons(new) == ("- xquad-r, cross-lingual mAP: hybrid − monolingual = +0.008 [0.006, 0.010] "
                                         "(mean over questions, old result file), p = < 1e-6, Holm p = 3.0e-06, "
                                         "seed spread 0.002: hybrid better")
