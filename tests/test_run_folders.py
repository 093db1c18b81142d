"""One folder per training run: the study, the default ``reproduce`` and the chapters share their runs."""
import json
from dataclasses import replace

from hybrid_utils.experiments import run_dir, sweep_dir, train_config
from hybrid_utils.profiles import get_profile
from hybrid_utils.study.reproduce import _holds_other_seeds


def test_the_adversarial_run_at_a_swept_lambda_is_the_sweep_run():
    profile = get_profile("cpu")
    model = profile.models[0]
    assert profile.lambda_max in profile.lambda_sweep
    assert run_dir(profile, model, "adversarial", profile.sweep_train_on, 2) == sweep_dir(profile, model,
                                                                                        profile.lambda_max, 2)
    swept = max(profile.lambda_sweep)
    assert (train_config(profile, "adversarial", profile.sweep_train_on, seed=3, lambda_max=swept).output_dir
            == str(sweep_dir(profile, model, swept, 3)))


def test_other_runs_keep_their_own_folder():
    profile = get_profile("cpu")
    model = profile.models[0]
    off_grid = replace(profile, lambda_max=0.123)
    assert run_dir(off_grid, model, "adversarial", profile.sweep_train_on, 1).name == f"adversarial-{profile.sweep_train_on}-seed1"
    assert run_dir(profile, model, "hybrid", profile.sweep_train_on, 1).name == f"hybrid-{profile.sweep_train_on}-seed1"


def _save(results_dir, method, seed):
    folder = results_dir / "multilingual-e5-small" / method
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"xquad-r-seed{seed}.json").write_text(json.dumps({"seed": seed, "model": "x", "mono_map": 0.5}))


def test_a_one_seed_reproduce_sees_that_a_study_is_saved(tmp_path):
    profile = replace(get_profile("cpu"), results_dir=str(tmp_path))
    _save(tmp_path, "hybrid", 1)
    assert not _holds_other_seeds(profile, (1,))
    _save(tmp_path, "hybrid", 2)
    assert _holds_other_seeds(profile, (1,))
    assert not _holds_other_seeds(profile, (1, 2))


def test_the_reuse_counter_counts_skipped_work():
    from hybrid_utils.study.timing import ReuseCounter

    lines = []
    log = ReuseCounter(lines.append)
    log("== training hybrid")
    assert log.reused == 0
    log("  [skip] runs/x is a finished run")
    log("  [skip] results/x.json exists")
    assert log.reused == 2 and len(lines) == 3
    assert ReuseCounter(log).log == lines.append  # wrapping twice does not count twice
