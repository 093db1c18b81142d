"""``chapter_cost``: one line per chapter from results/notebook_times.json, "not measured yet" rather than a guess."""

import json

import pytest

from hybrid_utils.notebook import COMMITTED, FROM_SCRATCH, chapter_cost

MACHINE = {"cpu": "AMD EPYC", "cpu_count": 2, "amx_bf16": False, "precision": "fp32", "torch_threads": 2}


def entry(chapter="03_fine_tuning", seconds=252.0, mode=COMMITTED, profile="cpu", date="2026-01-10", kind="chapter",
          **extra):
    return {"chapter": chapter, "kind": kind, "profile": profile, "mode": mode, "seconds": seconds,
            "ok": True, "date": date, "machine": dict(MACHINE), **extra}


def write(tmp_path, entries):
    path = tmp_path / "notebook_times.json"
    path.write_text(json.dumps({"measurements": entries}))
    return path


def test_a_measured_chapter(tmp_path):
    path = write(tmp_path, [entry(), entry(mode=FROM_SCRATCH, seconds=3 * 3600 + 360, date="2026-01-09")])
    line = chapter_cost("03_fine_tuning", path)
    assert line == ("On 2 fp32 cores this chapter took 4.2 minutes with the committed results (measured 2026-01-10, "
                    "AMD EPYC); from scratch: 3.1 hours (measured 2026-01-09, AMD EPYC); "
                    "on a Colab T4 (gpu profile): not measured yet.")
    assert "\n" not in line
    # the number, a notebook path and a file name name the same chapter
    assert chapter_cost("03", path) == chapter_cost("notebooks/03_fine_tuning.ipynb", path) == line
    # measured as a fresh clone has it (the committed results, no runs): the line says so
    fresh = chapter_cost("03", write(tmp_path, [entry(fresh_clone=True)]))
    assert fresh.startswith("On 2 fp32 cores this chapter took 4.2 minutes with the committed results in a fresh "
                            "clone (no runs) (measured 2026-01-10, AMD EPYC)")


@pytest.mark.parametrize("content", [None, "not json", json.dumps({"measurements": []}), json.dumps([1, 2])],
                         ids=["no-file", "garbage", "empty", "wrong-shape"])
def test_nothing_measured_says_so_and_invents_no_number(tmp_path, content):
    path = tmp_path / "notebook_times.json"
    if content is not None:
        path.write_text(content)
    line = chapter_cost("05_evaluation", path)
    assert line.count("not measured yet") == 3
    assert not any(ch.isdigit() for ch in line.replace("Colab T4", ""))


def test_only_this_chapter_profile_and_successful_runs_count(tmp_path):
    path = write(tmp_path, [
        entry(chapter="05_evaluation", seconds=100),                      # another chapter
        entry(chapter="03_fine_tuning_solutions", kind="solution", seconds=5, date="2026-03-01"),  # its solutions
        entry(profile="smoke", seconds=12),                               # another profile
        entry(seconds=999, ok=False, error="boom", date="2026-02-01"),    # failed: not a measurement
        entry(seconds=30, date="2026-01-01"),                             # older
        entry(seconds=75, date="2026-01-05"),                             # the latest successful one
    ])
    line = chapter_cost("03", path)
    assert line.startswith("On 2 fp32 cores this chapter took 75 seconds with the committed results "
                           "(measured 2026-01-05, AMD EPYC)")
    assert "from scratch: not measured yet" in line
    assert chapter_cost("03_fine_tuning_solutions", path).startswith("On 2 fp32 cores this chapter took 5 seconds")


def test_a_gpu_measurement_is_reported_as_measured(tmp_path):
    gpu = entry(profile="gpu", seconds=600, mode=FROM_SCRATCH)
    gpu["machine"]["gpu"] = "Tesla T4"
    line = chapter_cost("03", write(tmp_path, [gpu]))
    assert line.endswith("on a Colab T4 (gpu profile): 10.0 minutes (measured 2026-01-10, Tesla T4).")
    assert "committed results (cpu profile) this chapter's time is not measured yet" in line


def test_the_t4_estimate_is_labelled_as_one_and_a_measurement_replaces_it(tmp_path):
    from hybrid_utils.notebook import ESTIMATE, GPU_STUDY

    estimate = entry(chapter=GPU_STUDY, kind="estimate", profile="gpu", mode=ESTIMATE, seconds=1.5 * 3600)
    line = chapter_cost("03", write(tmp_path, [entry(), estimate]))
    assert line.endswith("on a Colab T4 (gpu profile): not measured yet (an estimate, not a measurement: the gpu "
                         "profile's `reproduce`, whose runs and evaluations chapters 3 to 5 make on a fresh Colab, about "
                         "1.5 hours from operation counts at an assumed T4 speed, as `python -m hybrid_utils reproduce "
                         "--profile gpu --dry-run` prints it; chapter 4's λ sweep comes on top).")
    assert "from scratch: not measured yet" in line  # the estimate is never taken for a CPU measurement
    gpu = entry(profile="gpu", seconds=600, mode=FROM_SCRATCH)
    gpu["machine"]["gpu"] = "Tesla T4"
    measured = chapter_cost("03", write(tmp_path, [entry(), estimate, gpu]))
    assert measured.endswith("on a Colab T4 (gpu profile): 10.0 minutes (measured 2026-01-10, Tesla T4).")


def _benchmark_module():
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "notebook_benchmark", Path(__file__).resolve().parents[1] / "benchmarks" / "notebooks.py")
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    return benchmark


def test_the_benchmark_names_a_chapters_slowest_cells(tmp_path):
    import nbformat

    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# prose"),
                                               nbformat.v4.new_code_cell("fast = 1"),
                                               nbformat.v4.new_code_cell("train()\nmore()"),
                                               nbformat.v4.new_code_cell("")])
    for cell, seconds in zip(notebook.cells[1:], (0.2, 61.27, None)):
        cell.metadata["papermill"] = {"duration": seconds}
    nbformat.write(notebook, tmp_path / "chapter.ipynb")
    benchmark = _benchmark_module()
    slowest = benchmark.slowest_cells(tmp_path / "chapter.ipynb", count=2)
    assert slowest == [{"cell": 2, "seconds": 61.3, "first_line": "train()"},
                       {"cell": 1, "seconds": 0.2, "first_line": "fast = 1"}]
    assert benchmark.slowest_cells(tmp_path / "missing.ipynb") == []


def test_the_benchmark_records_the_dry_runs_t4_estimate_of_the_whole_gpu_study(tmp_path):
    from dataclasses import replace

    from hybrid_utils.notebook import ESTIMATE, GPU_STUDY
    from hybrid_utils.profiles import get_profile
    from hybrid_utils.study.plan import assumed_seconds, plan_study

    benchmark = _benchmark_module()
    estimate = benchmark.t4_estimate()
    assert (estimate["chapter"], estimate["profile"], estimate["mode"]) == (GPU_STUDY, "gpu", ESTIMATE)
    empty = replace(get_profile("gpu"), results_dir=str(tmp_path / "r"), runs_dir=str(tmp_path / "runs"))
    expected = assumed_seconds(plan_study(empty)).total_seconds
    assert estimate["seconds"] == pytest.approx(expected, abs=0.1) and estimate["seconds"] > 600
    assert "assumed" in estimate["source"]


def test_the_benchmark_runs_a_chapter_with_the_committed_results_as_in_a_fresh_clone(tmp_path):
    import subprocess

    benchmark = _benchmark_module()
    root = benchmark.ROOT
    tracked = subprocess.run(["git", "-C", str(root), "ls-files", "results"], capture_output=True, text=True,
                             check=True).stdout.split()
    clone = benchmark.fresh_clone(tmp_path / "clone")
    copied = sorted(str(p.relative_to(clone)) for p in clone.rglob("*") if p.is_file())
    assert copied == sorted(tracked) and "results/summary.csv" in copied
    assert not (clone / "runs").exists()
