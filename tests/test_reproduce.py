from pathlib import Path

import pandas as pd
import pytest

from hybrid_utils.profiles import get_profile
from hybrid_utils.reproduce import SUMMARY_COLUMNS, describe_findings, reproduce, result_path, run_dir


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    profile = get_profile("smoke", runs_dir=str(root / "runs"), results_dir=str(root / "results"), steps=2)
    lines = []
    summary = reproduce(profile, methods=["monolingual", "hybrid"], log=lines.append)
    return profile, summary, lines


def test_study_writes_tables_json_and_figures(study):
    profile, summary, lines = study
    assert list(summary.columns) == SUMMARY_COLUMNS
    assert list(summary["method"]) == ["zero-shot", "monolingual", "hybrid"]
    assert summary[["mono_map", "cross_map", "multilingual_map"]].apply(lambda c: c.between(0, 1)).all().all()
    assert (summary["language_bias"] >= 0).all()
    on_disk = pd.read_csv(f"{profile.results_dir}/summary.csv")
    assert on_disk["mono_map"].tolist() == pytest.approx(summary["mono_map"].tolist())
    assert "| hybrid" in open(f"{profile.results_dir}/summary.md").read()
    for method in ("zero-shot", "monolingual", "hybrid"):
        assert result_path(profile, "bundled", method, "xquad-r").exists()
    figures = sorted(p.name for p in (Path(profile.results_dir) / "figures").iterdir())
    assert figures == ["multilingual-e5-small_xquad-r_bias_and_languages.png",
                       "multilingual-e5-small_xquad-r_overview.png", "multilingual-e5-small_xquad-r_pair_maps.png"]
    assert lines[-1].startswith("\nTime per stage") and "total" in lines[-1]
    assert "hybrid vs monolingual" in describe_findings(summary)


def test_study_resumes_without_recomputing(study):
    profile, summary, _ = study
    model_file = run_dir(profile, "bundled", "hybrid", "mlqa-r") / "model.safetensors"
    stamp = model_file.stat().st_mtime_ns
    lines = []
    again = reproduce(profile, methods=["monolingual", "hybrid"], log=lines.append)
    assert model_file.stat().st_mtime_ns == stamp
    assert sum("[skip]" in line for line in lines) == 5  # 2 runs + 3 evaluations
    pd.testing.assert_frame_equal(again, summary)


def test_unknown_method_is_refused_before_any_work(tmp_path):
    profile = get_profile("smoke", runs_dir=str(tmp_path / "runs"), results_dir=str(tmp_path / "results"))
    with pytest.raises(ValueError, match="unknown method.*choose from"):
        reproduce(profile, methods=["hybrid", "magic"])
    assert not (tmp_path / "runs").exists()
