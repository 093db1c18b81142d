"""The alpha sweep in the smoke profile (3 steps, 25 evaluation questions) in a temporary folder."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from hybrid_utils.study.alpha_sweep import (ALPHA_SWEEP_COLUMNS, alpha_run, alpha_sweep, plot_alpha_sweep,  # noqa: E402
                                      summarize_alpha_sweep)
from hybrid_utils.experiments import ensure_run, run_dir  # noqa: E402
from hybrid_utils.runs import load_train_log  # noqa: E402


@pytest.fixture(scope="module")
def smoke(smoke_study):
    """The session's smoke profile: the sweep's ends reuse the smoke study's runs (conftest.py)."""
    return smoke_study[0]


@pytest.fixture(scope="module")
def sweep(smoke):
    lines: list[str] = []
    frame = alpha_sweep(smoke, alphas=(0, 0.25, 0.5, 1), seeds=(1,), log=lines.append)
    return frame, "\n".join(lines)


def test_sweep_writes_one_row_per_alpha_and_seed(smoke, sweep):
    frame, _ = sweep
    written = pd.read_csv(f"{smoke.results_dir}/alpha_sweep.csv")
    assert list(written.columns) == ALPHA_SWEEP_COLUMNS
    assert written["alpha"].tolist() == [0.0, 0.25, 0.5, 1.0] and set(written["seed"]) == {1}
    maps = written[["mono_map", "cross_map", "multilingual_map"]].to_numpy()
    assert ((maps > 0) & (maps <= 1)).all()
    assert (written["language_bias"] >= 0).all()
    pd.testing.assert_frame_equal(written, frame, check_dtype=False)
    # different batches give different models: the curve is not flat
    assert written["mono_map"].nunique() > 1


def test_ends_and_the_profile_alpha_reuse_the_study_runs(smoke, sweep):
    _, log = sweep
    assert alpha_run(smoke, 1.0)[2] == run_dir(smoke, smoke.models[0], "monolingual", "mlqa-r")
    assert alpha_run(smoke, 0.0)[2] == run_dir(smoke, smoke.models[0], "cross-lingual", "mlqa-r")
    assert alpha_run(smoke, smoke.alpha)[2] == run_dir(smoke, smoke.models[0], "hybrid", "mlqa-r")
    assert "alpha-sweep" in str(alpha_run(smoke, 0.25)[2])
    assert "(the study's monolingual run)" in log and "(the study's cross-lingual run)" in log
    # a second call trains and evaluates nothing
    again: list[str] = []
    alpha_sweep(smoke, alphas=(0, 0.25, 0.5, 1), seeds=(1,), log=again.append)
    assert not any(line.startswith("training") for line in again)
    assert sum("[skip]" in line for line in again) == 2 * 4


def test_hybrid_at_alpha_one_is_the_monolingual_run(smoke, sweep, tmp_path):
    """Why reusing is sound: hybrid at alpha=1 trains exactly the monolingual run (same losses every step)."""
    mono = load_train_log(run_dir(smoke, smoke.models[0], "monolingual", "mlqa-r"))
    folder = ensure_run(smoke, "hybrid", "mlqa-r", alpha=1.0, output_dir=str(tmp_path / "hybrid-alpha1"),
                        log=lambda *a: None)
    hybrid = load_train_log(folder)
    assert len(mono) == smoke.steps
    # the same batches give the same losses; equal to float noise only, because the process's training cache may
    # hold frozen-layer states computed in other batches (other padding) by runs trained before this one
    assert hybrid["loss"].tolist() == pytest.approx(mono["loss"].tolist(), rel=1e-5, abs=1e-6)


def test_summary_and_plot(sweep):
    frame, _ = sweep
    two_seeds = pd.concat([frame, frame.assign(seed=2, mono_map=frame["mono_map"] + 0.01)])
    summary = summarize_alpha_sweep(two_seeds)
    assert summary["seeds"].tolist() == [2, 2, 2, 2]
    assert summary["mono_map_mean"].to_numpy() == pytest.approx(frame["mono_map"].to_numpy() + 0.005)
    assert summary["mono_map_sd"].to_numpy() == pytest.approx([0.01 / 2 ** 0.5] * 4)
    ax = plot_alpha_sweep(two_seeds)
    assert ax.get_xlabel() == "multilingual mAP" and ax.get_ylabel() == "monolingual mAP"
    assert [t.get_text() for t in ax.texts] == ["α=0", "α=0.25", "α=0.5", "α=1"]


def test_bad_alphas_say_what_to_use(smoke):
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        alpha_sweep(smoke, alphas=(0.5, 1.5))
    with pytest.raises(ValueError, match="zero-shot protocol"):
        alpha_sweep(smoke, train_on="squad")
    with pytest.raises(ValueError, match="alphas is empty"):
        alpha_sweep(smoke, alphas=())
