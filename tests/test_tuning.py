"""Hyperparameters are chosen on held-out questions of the training set: the rule, and one small real search."""

import json
import os

import pandas as pd
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from hybrid_utils.study.tuning import choose


def _curve(lr, scale, layers, scores, method="hybrid"):
    return [{"train_on": "mlqa-r", "method": method, "learning_rate": lr, "scale": scale,
             "num_trainable_layers": layers, "step": 40 * i, "score": s} for i, s in enumerate(scores)]


def test_choose_takes_the_best_point_and_the_step_where_it_flattened():
    frame = pd.DataFrame(_curve(1e-4, 50.0, 2, [0.60, 0.66, 0.671, 0.672, 0.6725])
                         + _curve(3e-4, 50.0, 2, [0.60, 0.67, 0.676, 0.679, 0.680])
                         + _curve(3e-4, 20.0, 4, [0.60, 0.64, 0.65, 0.655, 0.66]))
    choice = choose(frame, tolerance=0.002)
    assert (choice["learning_rate"], choice["scale"], choice["num_trainable_layers"]) == (3e-4, 50.0, 2)
    assert choice["best_step"] == 160 and choice["best_score"] == pytest.approx(0.680)
    assert choice["steps"] == 120  # 0.679 is within 0.002 of 0.680; 0.676 is not
    assert choose(frame, tolerance=0.0)["steps"] == 160
    # each method is chosen on its own curves: a better curve of another method does not count
    both = pd.concat([frame, pd.DataFrame(_curve(1e-4, 20.0, 2, [0.60, 0.70, 0.71, 0.71, 0.71], "monolingual"))])
    assert choose(both, method="hybrid")["learning_rate"] == 3e-4
    mono = choose(both, method="monolingual")
    assert (mono["method"], mono["learning_rate"], mono["scale"], mono["steps"]) == ("monolingual", 1e-4, 20.0, 80)


@pytest.mark.slow
def test_tune_tracks_validation_mAP_on_held_out_training_questions(tmp_path):
    from hybrid_utils.study.tuning import tune

    out = tmp_path / "tuning.csv"
    frame = tune("mlqa-r", methods=["hybrid"], grid={"learning_rate": (1e-4, 1e-3)}, steps=4, eval_every=2, output=out,
                 runs_dir=tmp_path / "runs", log=None, languages=("de", "en", "es"), limit_pairs=1500, batch_size=8,
                 eval_holdout=0.04, choose_with={"num_trainable_layers": 2})  # 4 %: a validation pool of seconds
    assert list(frame.columns[:6]) == ["train_on", "method", "learning_rate", "scale", "num_trainable_layers", "step"]
    assert sorted(set(frame["step"])) == [0, 2, 4]
    assert len(frame) == 6
    # the untrained model scores the same at step 0 of both grid points; training changes the score
    start = frame[frame["step"] == 0]["score"]
    assert start.max() - start.min() < 1e-9
    assert (frame[frame["step"] == 4]["score"] != start.iloc[0]).all()
    assert frame[["mono_map", "cross_map", "multilingual_map"]].apply(lambda c: c.between(0, 1)).all().all()
    saved = json.loads(out.with_suffix(".json").read_text())["hybrid"]
    assert saved["learning_rate"] in (1e-4, 1e-3) and saved["steps"] in (0, 2, 4)
    assert saved["fixed"] == {"num_trainable_layers": 2}  # the same restriction as the profile's choice
    assert pd.read_csv(out).shape == frame.shape
    seconds = list(frame["seconds"])
    again = tune("mlqa-r", methods=["hybrid"], grid={"learning_rate": (1e-4, 1e-3)}, steps=4, eval_every=2, output=out,
                 runs_dir=tmp_path / "runs", log=None, languages=("de", "en", "es"), limit_pairs=1500, batch_size=8,
                 eval_holdout=0.04)
    assert list(again["seconds"]) == seconds  # resumed: both grid points were already there, nothing retrained


def test_choose_lambda_takes_the_best_mean_validation_score_among_real_adversaries():
    from hybrid_utils.study.tuning import choose_lambda

    sweep = pd.DataFrame({"lambda_max": [0.0, 0.0, 0.3, 0.3, 1.0, 1.0],
                          "val_score": [0.70, 0.70, 0.66, 0.68, 0.69, 0.67]})
    choice = choose_lambda(sweep)
    assert choice["lambda_max"] == 1.0 and choice["val_score"] == pytest.approx(0.68) and choice["seeds"] == 2
    assert choice["adversary"] == "reversal"  # a sweep without an adversary column was gradient reversal only
    with pytest.raises(ValueError, match="no lambda_max > 0"):
        choose_lambda(sweep[sweep["lambda_max"] == 0])
    both = pd.concat([sweep.assign(adversary=["none", "none"] + ["reversal"] * 4),
                      sweep[sweep["lambda_max"] > 0].assign(adversary="confusion", val_score=[0.69, 0.69, 0.6, 0.6])])
    assert (choose_lambda(both)["adversary"], choose_lambda(both)["lambda_max"]) == ("confusion", 0.3)


def test_each_method_trains_with_its_own_tuned_values():
    from dataclasses import replace

    from hybrid_utils.profiles import PROFILES

    profile = replace(PROFILES["cpu"], per_train_set={"mlqa-r": {"scale": 20.0, "methods": {
        "monolingual": {"learning_rate": 3e-4, "steps": 80}}}})
    assert profile.training_defaults("mlqa-r", "monolingual") == {
        "steps": 80, "learning_rate": 3e-4, "scale": 20.0, "num_trainable_layers": profile.num_trainable_layers,
        "reinit_top_layers": profile.reinit_top_layers}
    assert profile.training_defaults("mlqa-r", "hybrid")["learning_rate"] == profile.learning_rate
    assert profile.training_defaults("xquad-r", "monolingual")["steps"] == profile.steps


def test_pretrained_profile_trains_each_method_with_its_committed_tuning_choice():
    """The values in profiles.py are the ones `tune` chose (results/tuning/<set>.json): they cannot drift apart."""
    from pathlib import Path

    from hybrid_utils.profiles import PROFILES

    checked = 0
    for path in sorted(Path(__file__).resolve().parents[1].joinpath("results", "tuning").glob("*.json")):
        choices = json.loads(path.read_text())
        if "learning_rate" in choices:  # a search of one method only, from before every method was tuned
            continue
        for method, choice in choices.items():
            values = PROFILES["cpu-pretrained"].training_defaults(path.stem, method)
            assert (values["steps"], values["learning_rate"], values["scale"]) == (
                choice["steps"], choice["learning_rate"], choice["scale"]), (path.name, method)
            checked += 1
    assert checked >= 4  # at least one training set with the four methods of the study


def test_cpu_profile_trains_every_method_with_the_same_settings():
    """The study's setting gives every method the same budget: no method has values of its own."""
    from hybrid_utils.profiles import PROFILES

    cpu = PROFILES["cpu"]
    values = [cpu.training_defaults(train_on, method) for train_on, _ in cpu.protocols for method in cpu.methods]
    assert all(v == values[0] for v in values)
    assert values[0]["reinit_top_layers"] == 2 and values[0]["steps"] == 240


def test_cpu_profile_adversary_and_lambda_are_the_committed_sweeps_choice():
    """profiles.py's adversary and lambda_max are the ones the committed sweep chose on held-out training questions."""
    from pathlib import Path

    import pandas as pd

    from hybrid_utils.profiles import PROFILES
    from hybrid_utils.study.tuning import choose_lambda

    sweep = pd.read_csv(Path(__file__).resolve().parents[1] / "results" / "adversarial_sweep.csv")
    choice, cpu = choose_lambda(sweep), PROFILES["cpu"]
    assert (choice["adversary"], choice["lambda_max"]) == (cpu.adversary, cpu.lambda_max)
    points = sweep.groupby(["adversary", "lambda_max"])
    assert points["seed"].nunique().min() >= 3
    # every adversary was given the same values and seeds (an equal tuning budget)
    given = {adversary: sorted(map(tuple, rows[["lambda_max", "seed"]].values.tolist()))
             for adversary, rows in sweep[sweep["lambda_max"] > 0].groupby("adversary")}
    assert set(given) == set(cpu.sweep_adversaries) and len(set(map(tuple, given.values()))) == 1
    # the sweep can show an adversary act: its discriminator learns without one, and is fooled at some point
    accuracy = points["discriminator_accuracy"].mean()
    assert accuracy[("none", 0.0)] >= 0.9 and accuracy.min() <= 0.5
