import json
from pathlib import Path

import pandas as pd
import pytest

from hybrid_utils.profiles import get_profile
from hybrid_utils.study.report import SUMMARY_COLUMNS, describe_findings
from hybrid_utils.study.reproduce import reproduce
from hybrid_utils.experiments import result_path, run_dir


@pytest.fixture(scope="module")
def study(smoke_study):
    """The session's smoke study (conftest.py): trained once, in the session's smoke folder."""
    profile, summary, lines = smoke_study
    assert (profile.study_seeds, profile.lambda_sweep) == ((1, 2), (0.0, 1.0))  # what the assertions below expect
    return smoke_study


def test_study_writes_tables_json_and_figures(study):
    profile, summary, lines = study
    results = Path(profile.results_dir)
    assert list(summary.columns) == SUMMARY_COLUMNS
    assert list(summary["method"]) == ["zero-shot", "monolingual", "hybrid", "adversarial"]
    assert list(summary["n_seeds"]) == [1, 2, 2, 2]
    assert summary["mono_map_sd"].isna().tolist() == [True, False, False, False]
    assert summary[["mono_map", "cross_map", "multilingual_map"]].apply(lambda c: c.between(0, 1)).all().all()
    assert (summary["language_bias"] >= 0).all()
    assert summary["probe_accuracy"].between(0, 1).all()
    # the summary is the mean of the seeds
    per_seed = pd.read_csv(results / "seed_results.csv")
    hybrid = per_seed[(per_seed["method"] == "hybrid") & (per_seed["postprocess"] == "none")]
    assert sorted(hybrid["seed"]) == [1, 2]
    assert summary.set_index("method").loc["hybrid", "mono_map"] == pytest.approx(hybrid["mono_map"].mean())
    assert summary.set_index("method").loc["hybrid", "mono_map_sd"] == pytest.approx(hybrid["mono_map"].std())
    on_disk = pd.read_csv(results / "summary.csv")
    plain = on_disk[on_disk["postprocess"] == "none"]
    assert plain["mono_map"].tolist() == pytest.approx(summary["mono_map"].tolist())
    # every evaluation is also scored with language-centred embeddings (hybrid_utils.postprocess)
    centered = on_disk[on_disk["postprocess"] == "center"].set_index("method")
    assert list(centered.index) == ["zero-shot", "monolingual", "hybrid", "adversarial"]
    assert (centered["language_bias"] != plain.set_index("method")["language_bias"]).all()
    assert summary[["mono_recall_at_1", "multilingual_recall_at_10"]].apply(lambda c: c.between(0, 1)).all().all()
    assert " ± " in (results / "summary.md").read_text()
    for method in ("monolingual", "hybrid"):
        for seed in (1, 2):
            assert result_path(profile, "bundled", method, "xquad-r", seed).exists()
    assert result_path(profile, "bundled", "zero-shot", "xquad-r").exists()

    comparisons = pd.read_csv(results / "comparisons.csv")
    assert list(comparisons.columns[:8]) == ["eval_on", "metric", "method_a", "method_b", "diff", "ci_low",
                                             "ci_high", "p_value"]
    pairs = set(zip(comparisons["method_a"], comparisons["method_b"]))
    assert pairs == {("hybrid", "monolingual"), ("hybrid", "adversarial"), ("adversarial", "monolingual"),
                     ("zero-shot + center", "zero-shot"), ("monolingual + center", "monolingual"),
                     ("hybrid + center", "hybrid"), ("adversarial + center", "adversarial"),
                     # the study's comparisons again, both sides centred
                     ("hybrid + center", "monolingual + center"), ("hybrid + center", "adversarial + center"),
                     ("adversarial + center", "monolingual + center")}
    assert (comparisons["ci_low"] <= comparisons["diff"]).all() and (comparisons["diff"] <= comparisons["ci_high"]).all()

    sweep = pd.read_csv(results / "adversarial_sweep.csv")
    from hybrid_utils.study.report import SWEEP_COLUMNS
    from hybrid_utils.study.tuning import choose_lambda

    assert list(sweep.columns) == SWEEP_COLUMNS
    # every adversary at every lambda_max > 0; lambda_max 0 is one run, shared by all of them
    assert list(zip(sweep["adversary"], sweep["lambda_max"])) == [("none", 0.0), ("reversal", 1.0), ("confusion", 1.0)]
    assert sweep["discriminator_accuracy"].between(0, 1).all()
    # lambda is chosen on held-out training questions (val_*), the evaluation set's columns are only reported
    assert sweep[["val_mono_map", "val_score", "val_probe_accuracy"]].apply(lambda c: c.between(0, 1)).all().all()
    assert sweep["mono_map"].between(0, 1).all()
    choice = choose_lambda(sweep)  # lambda 0 is the monolingual method, never the adversary
    assert choice["lambda_max"] == 1.0 and choice["adversary"] in ("reversal", "confusion")
    # the study's adversarial runs are the chosen adversary's
    saved = json.loads((run_dir(profile, "bundled", "adversarial", "mlqa-r", seed=2, lambda_max=1.0,
                                adversary=choice["adversary"]) / "train_config.json").read_text())
    assert saved.get("config", saved)["adversary"] == choice["adversary"]

    figures = sorted(p.name for p in (results / "figures").iterdir())  # later tests and chapters may add more
    assert set(figures) >= {"adversarial_sweep.png", "multilingual-e5-small_xquad-r_bias_and_languages.png",
                       "multilingual-e5-small_xquad-r_overview.png", "multilingual-e5-small_xquad-r_pair_maps.png"}
    timing = json.loads((results / "timing.json").read_text())["invocations"][-1]
    assert timing["study"] is True and timing["seeds"] == [1, 2] and timing["total_seconds"] > 0
    assert lines[-1].startswith("\nTime per stage") and "total" in lines[-1]
    findings = describe_findings(summary, comparisons)
    assert "hybrid − monolingual" in findings and "Holm" in findings
    assert "p_holm" in comparisons.columns and (comparisons["p_holm"] >= comparisons["p_value"]).all()


def test_study_resumes_without_recomputing(study):
    profile, summary, _ = study
    model_file = run_dir(profile, "bundled", "hybrid", "mlqa-r", seed=2) / "model.safetensors"
    stamp = model_file.stat().st_mtime_ns
    lines = []
    again = reproduce(profile, methods=["monolingual", "hybrid", "adversarial"], study=True, log=lines.append)
    assert model_file.stat().st_mtime_ns == stamp
    # the sweep that chooses the adversary and lambda first: 3 runs (lambda 0, two adversaries at lambda 1); then
    # 6 runs + 7 evaluations; then the sweep on the evaluation set: 3 runs + 3 evaluations (one is the study's own)
    assert sum("[skip]" in line for line in lines) == 22
    pd.testing.assert_frame_equal(again, summary)


def test_sweep_validation_through_the_evaluators_frozen_layers_equals_a_plain_one(study):
    """The sweep validates its runs with the Evaluator's cached lower layers (computed once for all runs): the
    same numbers as a plain full-model validation."""
    from hybrid_utils.experiments import Evaluator, sweep_dir
    from hybrid_utils.study.tuning import validate_run

    profile = study[0]
    folder = sweep_dir(profile, "bundled", 1.0, 1, "reversal")
    evaluator = Evaluator(profile, log=lambda *a: None)
    frozen_layers, asked = evaluator._cache, []
    evaluator._cache = lambda base: asked.append(frozen_layers(base)) or asked[-1]
    cached = validate_run(folder, limit_questions=5, evaluator=evaluator)
    assert asked and all(cache is not None for cache in asked)  # the frozen lower layers were used
    plain = validate_run(folder, limit_questions=5)
    for key in ("mono_map", "cross_map", "multilingual_map", "language_bias", "probe_accuracy_centered",
                "translation_margin"):
        assert cached[key] == pytest.approx(plain[key], abs=1e-6), key


def test_unknown_method_is_refused_before_any_work(tmp_path):
    profile = get_profile("smoke", runs_dir=str(tmp_path / "runs"), results_dir=str(tmp_path / "results"))
    with pytest.raises(ValueError, match="unknown method.*choose from"):
        reproduce(profile, methods=["hybrid", "magic"])
    assert not (tmp_path / "runs").exists()


def test_describe_sweep_says_when_the_discriminator_is_fooled_and_what_the_probe_finds():
    from hybrid_utils.study.report import describe_sweep

    sweep = pd.DataFrame({"lambda_max": [0.0, 0.0, 1.0, 1.0, 3.0, 3.0], "seed": [1, 2] * 3,
                          "discriminator_accuracy": [0.98, 0.96, 0.95, 0.93, 0.2, 0.22],
                          "val_probe_accuracy_centered": [0.40, 0.42, 0.41, 0.41, 0.40, 0.42],
                          "val_translation_margin": [0.07] * 6, "val_score": [0.70, 0.70, 0.71, 0.69, 0.66, 0.68]})
    text = describe_sweep(sweep, chance=1 / 7)
    assert "- reversal, lambda_max 3 (2 seeds): 0.21 ± 0.01 / 0.41 ± 0.01 / 0.070 ± 0.000 / 0.670 ± 0.014" in text
    assert "- no adversary, lambda_max 0 (2 seeds)" in text
    assert "chosen on held-out training questions: reversal at lambda_max 1 (validation score 0.700" in text
    assert "reversal: the discriminator is fooled from lambda_max 3" in text
    assert "hidden from that discriminator, not removed" in text
    confusion = sweep[sweep["lambda_max"] > 0].assign(adversary="confusion", discriminator_accuracy=0.8,
                                                      val_score=[0.72, 0.74, 0.60, 0.60])
    both = describe_sweep(pd.concat([sweep, confusion]), chance=1 / 7)
    assert "chosen on held-out training questions: confusion at lambda_max 1 (validation score 0.730" in both
    assert "confusion: the encoder fooled the discriminator at no lambda_max (chance 0.14; lowest 0.80" in both
    assert both.index("no adversary") < both.index("reversal, lambda_max 1") < both.index("confusion, lambda_max 1")
    reduced = sweep.assign(val_probe_accuracy_centered=[0.40, 0.42, 0.35, 0.35, 0.20, 0.22])
    assert "the language information is reduced" in describe_sweep(reduced, chance=1 / 7)
    never = describe_sweep(sweep.iloc[:4], chance=1 / 7)
    assert "fooled the discriminator at no lambda_max" in never
    one_seed = describe_sweep(sweep[sweep["seed"] == 1], chance=1 / 7, source="runs/chapter-sized/results/sweep.csv")
    assert one_seed.startswith("Adversarial lambda sweep (`runs/chapter-sized/results/sweep.csv`")
    assert "chosen on held-out training questions: reversal at lambda_max 1 (validation score 0.710)" in one_seed


def test_language_weights_compare_uniform_with_the_study_hybrid_runs(study):
    """``reproduce(..., language_weights=True)``: the size rows are the study's hybrid runs, uniform ones are new."""
    profile, _, _ = study
    results = Path(profile.results_dir)
    hybrid_seed2 = run_dir(profile, "bundled", "hybrid", "mlqa-r", seed=2) / "model.safetensors"
    stamp = hybrid_seed2.stat().st_mtime_ns
    reproduce(profile, methods=["hybrid"], study=True, language_weights=True, log=lambda *a: None)
    assert hybrid_seed2.stat().st_mtime_ns == stamp  # reused, not retrained
    table = pd.read_csv(results / "language_weights.csv")
    assert table[["language_weights", "seed"]].values.tolist() == [["size", 1], ["uniform", 1], ["size", 2], ["uniform", 2]]
    # the smoke profile's 2,500-pair subset of MLQA-R has languages of different sizes: real uniform runs
    uniform = table[table["language_weights"] == "uniform"]
    assert not uniform["identical_to_size"].any()
    for seed in (1, 2):
        folder = Path(profile.runs_dir) / "multilingual-e5-small" / "language-weights" / f"hybrid-mlqa-r-uniform-seed{seed}"
        config = json.loads((folder / "train_config.json").read_text())
        assert config["language_weights"] == "uniform" and config["method"] == "hybrid"
    per_seed = pd.read_csv(results / "seed_results.csv")
    study_hybrid = per_seed[(per_seed["method"] == "hybrid") & (per_seed["postprocess"] == "none")].sort_values("seed")
    size = table[table["language_weights"] == "size"]
    assert size["mono_map"].tolist() == pytest.approx(study_hybrid["mono_map"].tolist())
    comparisons = pd.read_csv(results / "language_weights_comparisons.csv")
    assert set(zip(comparisons["method_a"], comparisons["method_b"])) == {("hybrid (uniform)", "hybrid (size)")}
    assert comparisons["metric"].tolist() == ["mono_map", "cross_map", "multilingual_map", "language_bias"]
    assert comparisons["seed_spread"].notna().all()


def test_lambda_sweep_runs_without_training_returns_only_the_finished_runs(study):
    from hybrid_utils import tutorial

    profile, _, _ = study
    lines = []
    trained = tutorial.lambda_sweep_runs(profile, adversary="reversal", log=lines.append)  # the study's: all there
    assert sorted(trained) == [0.0, 1.0] and all("[skip]" in line for line in lines)
    assert tutorial.lambda_sweep_runs(profile, adversary="reversal", train=False) == trained
    # a lambda_max the study never trained: not trained now, and left out
    missing = tutorial.lambda_sweep_runs(profile, [0.5, 1.0], adversary="reversal", train=False)
    assert list(missing) == [1.0] and missing[1.0] == trained[1.0]
    assert not list(Path(profile.runs_dir).rglob("*lambda0.5*"))


def test_a_fresh_clone_reads_the_saved_evaluations_and_trains_no_run(study, tmp_path):
    """The committed results without the runs: chapters read them; nothing is retrained, no number rewritten."""
    import shutil
    from dataclasses import replace

    from hybrid_utils.experiments import ensure_result
    from hybrid_utils.results import model_slug

    profile, _, _ = study
    shutil.copytree(profile.results_dir, tmp_path / "results")
    clone = replace(profile, runs_dir=str(tmp_path / "runs"), results_dir=str(tmp_path / "results"))
    saved = {path: path.read_bytes() for path in (tmp_path / "results").rglob("*.json")}
    model = profile.models[0]
    result = ensure_result(clone, "hybrid", "xquad-r", log=lambda *_: None)
    assert result["mono_map"] == json.loads(result_path(profile, model, "hybrid", "xquad-r").read_text())["mono_map"]
    methods, lines = ["monolingual", "hybrid", "adversarial"], []  # the ones the smoke study evaluated
    summary = reproduce(clone, methods=methods, log=lines.append, read_saved=True)
    read = [line for line in lines if "read as it is, nothing trained" in line]
    assert len(read) == len(methods) * len(profile.seeds)
    assert not list((tmp_path / "runs").rglob("train_config.json"))  # no run trained
    evaluations = [path for path in saved if path.parent.parent.name == model_slug(model)]
    assert evaluations and all(path.read_bytes() == saved[path] for path in evaluations)  # none rewritten
    assert set(summary["method"]) >= {"zero-shot", *methods}  # the tables cover every evaluation of the folder
