"""The positive control: does a setting show the trade-off between monolingual and cross-lingual batches?"""

import os

import pandas as pd
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from hybrid_utils.study.positive_control import COLUMNS, describe_trade_off, trade_off, write_report


def _rows(setting, method, finals, start=0.5):
    return [{"setting": setting, "method": method, "seed": seed, "step": step, "mono_map": value if step else start,
             "cross_map": 0.5, "multilingual_map": 0.4, "language_bias": 100.0}
            for seed, value in enumerate(finals, 1) for step in (0, 240)]


def test_trade_off_needs_the_gap_to_stand_out_from_the_seed_noise_of_either_method():
    frame = pd.DataFrame(_rows("clear", "monolingual", [0.670, 0.664]) + _rows("clear", "cross-lingual", [0.650, 0.648])
                         + _rows("noisy", "monolingual", [0.700, 0.660]) + _rows("noisy", "cross-lingual", [0.660, 0.661])
                         + _rows("reversed", "monolingual", [0.60, 0.601]) + _rows("reversed", "cross-lingual", [0.65, 0.651]))
    table = trade_off(frame).set_index("setting")
    assert table.loc["clear", "gap"] == pytest.approx(0.018)
    assert table.loc["clear", "seed_sd"] == pytest.approx(0.0042426, rel=1e-4)  # the larger of the two sds
    assert table.loc["clear", "shows"] and table.loc["clear", "steps"] == 240  # the last step, not step 0
    assert not table.loc["noisy", "shows"]  # a gap of 0.0195 inside a seed sd of 0.028
    assert not table.loc["reversed", "shows"]  # cross-lingual batches better: no trade-off to repair
    text = describe_trade_off(trade_off(frame))
    assert "- clear: monolingual - cross-lingual batches, monolingual mAP on held-out training questions +0.018" in text
    assert "shows the trade-off (gap 4.2 x the seed sd)" in text and text.count("does not show it") == 2


def test_one_seed_is_not_enough_to_tell_and_the_report_is_generated(tmp_path):
    frame = pd.DataFrame(_rows("single", "monolingual", [0.7]) + _rows("single", "cross-lingual", [0.6])
                         + _rows("pair", "monolingual", [0.670, 0.664]) + _rows("pair", "cross-lingual", [0.650, 0.648]))
    assert list(trade_off(frame)["setting"]) == ["pair"]
    text = write_report(frame, tmp_path / "pc.md")
    assert (tmp_path / "pc.md").read_text() == text
    assert "| pair      | monolingual   |       2 | 0.667 ± 0.004" in text


@pytest.mark.slow
def test_run_positive_control_writes_rows_and_resumes(tmp_path):
    from hybrid_utils.study.positive_control import run_positive_control

    out = tmp_path / "pc.csv"
    small = dict(languages=("de", "en", "es"), limit_pairs=600, batch_size=8, steps=2, eval_holdout=0.04)
    frame = run_positive_control(["pretrained-top2-120"], seeds=[1], output=out, runs_dir=tmp_path / "runs",
                                 eval_every=2, log=None, **small)
    assert list(frame.columns) == COLUMNS and sorted(set(frame["method"])) == ["cross-lingual", "monolingual"]
    assert sorted(set(frame["step"])) == [0, 2]
    assert frame[["mono_map", "cross_map", "multilingual_map"]].apply(lambda c: c.between(0, 1)).all().all()
    again = run_positive_control(["pretrained-top2-120"], seeds=[1], output=out, runs_dir=tmp_path / "runs",
                                 eval_every=2, log=None, **small)
    pd.testing.assert_frame_equal(again, frame)  # resumed: nothing trained again
    with pytest.raises(ValueError, match="unknown positive-control setting"):
        run_positive_control(["magic"], output=out)


def _finished_run(folder, **config):
    """A run folder with the files add_finished_runs reads (its validation row already cached, as after a study)."""
    import json

    folder.mkdir(parents=True)
    (folder / "train_config.json").write_text(json.dumps({"config": config}))
    row = {"val_mono_map": 0.61, "val_cross_map": 0.52, "val_multilingual_map": 0.40, "val_language_bias": 150.0}
    (folder / "validation.json").write_text(json.dumps(
        {"train_config_mtime": (folder / "train_config.json").stat().st_mtime, "row": row}))
    return folder


def test_the_studys_runs_join_the_control_only_when_trained_in_its_setting(tmp_path):
    from hybrid_utils.study.positive_control import SETTINGS, add_finished_runs

    setting = dict(SETTINGS["reinit-top2-240"], scale=50.0)
    good = _finished_run(tmp_path / "hybrid-seed3", **setting)
    output = tmp_path / "pc.csv"
    pd.DataFrame(_rows("reinit-top2-240", "hybrid", [0.7])).reindex(columns=COLUMNS).to_csv(output, index=False)
    frame = add_finished_runs({("hybrid", 3): good, ("hybrid", 1): good}, "reinit-top2-240", output, log=None)
    added = frame[(frame["method"] == "hybrid") & (frame["seed"] == 3)]
    assert added[["step", "mono_map", "language_bias"]].values.tolist() == [[240, 0.61, 150.0]]
    kept = frame[(frame["method"] == "hybrid") & (frame["seed"] == 1) & (frame["step"] == 240)]
    assert kept["mono_map"].tolist() == [0.7]  # the control's own run is not replaced
    other = _finished_run(tmp_path / "pretrained", **dict(setting, reinit_top_layers=0))
    with pytest.raises(ValueError, match="not trained in the positive-control setting"):
        add_finished_runs({("hybrid", 2): other}, "reinit-top2-240", output, log=None)
