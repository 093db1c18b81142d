"""One folder per training run: the study, the default ``reproduce`` and the chapters share their runs."""
import json
from dataclasses import replace
from pathlib import Path

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


def test_each_adversary_has_its_own_sweep_runs_but_lambda_zero_is_one_run_for_all():
    profile = replace(get_profile("cpu"), adversary="reversal")
    model = profile.models[0]
    reversal = sweep_dir(profile, model, 0.3, 2, "reversal")
    confusion = sweep_dir(profile, model, 0.3, 2, "confusion")
    assert reversal.name == f"adversarial-{profile.sweep_train_on}-lambda0.3-seed2"
    assert confusion.parent == reversal.parent and confusion.name == "confusion-" + reversal.name
    assert sweep_dir(profile, model, 0.0, 2, "confusion") == sweep_dir(profile, model, 0.0, 2, "reversal")
    assert sweep_dir(profile, model, 0.3, 2) == reversal  # the profile's adversary by default
    assert (train_config(profile, "adversarial", profile.sweep_train_on, seed=2, lambda_max=0.3,
                         adversary="confusion").output_dir == str(confusion))


def test_a_lambda_zero_run_is_not_retrained_for_another_adversary(tmp_path):
    from hybrid_utils.experiments import changed_settings

    profile = replace(get_profile("cpu"), adversary="reversal")
    run = tmp_path / "run"
    run.mkdir()
    for value, other_adversary_retrains in ((0.0, False), (0.3, True)):
        saved = train_config(profile, "adversarial", profile.sweep_train_on, lambda_max=value, adversary="reversal")
        (run / "train_config.json").write_text(json.dumps(saved.to_dict()))
        wanted = train_config(profile, "adversarial", profile.sweep_train_on, lambda_max=value, adversary="confusion")
        assert ("adversary" in changed_settings(run, wanted)) is other_adversary_retrains
    # a method without a discriminator is the same run whatever adversary the profile names
    saved = train_config(profile, "monolingual", profile.sweep_train_on, adversary="reversal")
    (run / "train_config.json").write_text(json.dumps(saved.to_dict()))
    wanted = train_config(profile, "monolingual", profile.sweep_train_on, adversary="confusion")
    assert changed_settings(run, wanted) == []
    assert changed_settings(run, train_config(profile, "monolingual", profile.sweep_train_on, steps=7)) == ["steps"]


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


def test_the_smoke_folder_follows_its_environment_variable_and_no_other_profile_does(monkeypatch, tmp_path):
    from hybrid_utils.profiles import PROFILES, SMOKE_DIR_ENV, get_profile

    monkeypatch.setenv(SMOKE_DIR_ENV, str(tmp_path))
    smoke = get_profile("smoke", steps=5)
    assert (smoke.runs_dir, smoke.results_dir, smoke.steps) == (str(tmp_path / "runs"), str(tmp_path / "results"), 5)
    assert get_profile("cpu") == PROFILES["cpu"]
    monkeypatch.delenv(SMOKE_DIR_ENV)
    assert get_profile("smoke").runs_dir == PROFILES["smoke"].runs_dir == "runs/smoke/runs"


def test_a_chapter_sized_sweep_trains_shorter_runs_in_folders_of_its_own():
    from hybrid_utils.tutorial import CHAPTER_SIZED, chapter_sized

    study = get_profile("cpu")
    small = chapter_sized(study)
    assert small.steps == study.chapter_steps < study.steps and small.sweep_seeds == study.sweep_seeds[:1]
    model, value = study.models[0], study.lambda_max
    config = train_config(small, "adversarial", small.sweep_train_on, seed=small.sweep_seeds[0], lambda_max=value)
    assert config.steps == study.chapter_steps
    folder = sweep_dir(small, model, value, small.sweep_seeds[0])
    assert config.output_dir == str(folder) and folder.is_relative_to(f"{study.runs_dir}/{CHAPTER_SIZED}")
    assert folder != sweep_dir(study, model, value, small.sweep_seeds[0])  # the study's run is never replaced
    assert small.results_dir.startswith(f"{study.runs_dir}/{CHAPTER_SIZED}/")  # nor results/
    # a profile tuned per training set and method: every run of it is chapter-sized too
    tuned_per_set = {"mlqa-r": {"steps": 400, "methods": {"hybrid": {"steps": 300}}}}
    tuned = chapter_sized(replace(study, per_train_set=tuned_per_set))
    assert {method: tuned.training_defaults("mlqa-r", method)["steps"] for method in ("hybrid", "adversarial")} == {
        "hybrid": study.chapter_steps, "adversarial": study.chapter_steps}
    unsized = replace(study, chapter_steps=None)
    assert chapter_sized(unsized) is unsized  # a profile without chapter steps: unchanged


def test_chapter_runs_are_chapter_sized_only_with_the_studys_results_and_without_its_runs(tmp_path):
    """Which runs a chapter shows: the study's, unless the study's results are there and its runs are not."""
    from hybrid_utils import tutorial
    from hybrid_utils.experiments import is_finished_run, result_path
    from hybrid_utils.runs import load_train_config

    scratch = replace(get_profile("smoke"), runs_dir=str(tmp_path / "runs"), results_dir=str(tmp_path / "results"))
    model, methods = scratch.models[0], ["monolingual"]
    steps = lambda folder: load_train_config(folder)["summary"]["global_step"]  # noqa: E731
    assert scratch.chapter_steps != scratch.steps
    # from scratch, no results: the study's run, trained now for the later chapters to evaluate
    runs, run_profile = tutorial.chapter_runs(scratch, methods, "mlqa-r", log=lambda *_: None)
    assert run_profile is scratch and runs == {"monolingual": run_dir(scratch, model, "monolingual", "mlqa-r")}
    assert steps(runs["monolingual"]) == scratch.steps
    # the study's run is there (and now its result too): shown, nothing trained
    out = result_path(scratch, model, "monolingual", "xquad-r")
    out.parent.mkdir(parents=True)
    out.write_text("{}")  # only its presence counts
    lines = []
    assert tutorial.chapter_runs(scratch, methods, "mlqa-r", log=lines.append) == (runs, scratch)
    assert sum("[skip]" in line for line in lines) == 1
    # a fresh clone: the study's results without its runs -> a chapter-sized run in a folder of its own
    clone = replace(scratch, runs_dir=str(tmp_path / "clone"))
    lines = []
    runs, run_profile = tutorial.chapter_runs(clone, methods, "mlqa-r", log=lines.append)
    assert run_profile.steps == scratch.chapter_steps and "chapter-sized runs of" in lines[0]
    assert Path(runs["monolingual"]).is_relative_to(tmp_path / "clone" / tutorial.CHAPTER_SIZED)
    assert steps(runs["monolingual"]) == scratch.chapter_steps
    assert not is_finished_run(run_dir(clone, model, "monolingual", "mlqa-r"))


def test_chapter_evaluations_are_chapter_sized_only_without_the_studys_results(tmp_path):
    """From scratch a chapter evaluates the study's runs on a few question ids, in a folder of its own; with the
    study's results it reads them and evaluates nothing."""
    from hybrid_utils import tutorial
    from hybrid_utils.data import load_lareqa
    from hybrid_utils.experiments import is_finished_run, result_path

    scratch = replace(get_profile("smoke"), runs_dir=str(tmp_path / "runs"), results_dir=str(tmp_path / "results"))
    model, methods = scratch.models[0], ["zero-shot", "monolingual"]
    questions = {n: len(load_lareqa("xquad-r", languages=scratch.eval_languages, limit_questions=n).questions)
                 for n in (scratch.chapter_questions, scratch.limit_questions)}
    assert questions[scratch.chapter_questions] < questions[scratch.limit_questions]
    # from scratch: the study's run (trained now), evaluated on chapter_questions question ids, results/ untouched
    lines = []
    evaluations, eval_profile = tutorial.chapter_evaluations(scratch, methods, "xquad-r", log=lines.append)
    assert "from scratch" in lines[0] and eval_profile.limit_questions == scratch.chapter_questions
    assert is_finished_run(run_dir(scratch, model, "monolingual", "mlqa-r"))
    assert not Path(scratch.results_dir).exists()
    assert Path(eval_profile.results_dir).is_relative_to(tmp_path / "runs" / tutorial.CHAPTER_SIZED)
    for method in methods:
        (result,) = evaluations[method]
        assert result["n_questions"] == questions[scratch.chapter_questions]
        assert "postprocess" not in result and 0 < result["probe_accuracy"] <= 1
    # the study's results are there (placeholders, written after the run): read as they are, nothing evaluated
    saved = {method: result_path(scratch, model, method, "xquad-r") for method in methods}
    for method, path in saved.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"mono_map": 0.5, "method": method}))
    before = {method: (path.read_bytes(), path.stat().st_mtime_ns) for method, path in saved.items()}
    lines = []
    evaluations, eval_profile = tutorial.chapter_evaluations(scratch, methods, "xquad-r", log=lines.append)
    assert eval_profile is scratch and sum("[skip]" in line and " exists" in line for line in lines) == len(methods)
    assert {m: (p.read_bytes(), p.stat().st_mtime_ns) for m, p in saved.items()} == before
    assert {m: [r["method"] for r in evaluations[m]] for m in methods} == {m: [m] for m in methods}
