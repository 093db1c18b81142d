"""The seaborn figures: values drawn are the values given, seed spreads become error bars."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from hybrid_utils import plots


def _result(seed, by_language, distances):
    return {"seed": seed, "multilingual_map_by_language": by_language,
            "rank_distances": {lang: list(d) for lang, d in distances.items()}}


@pytest.fixture()
def seeded():
    return {
        "zero-shot": [_result(None, {"en": 0.30, "de": 0.20}, {"en": [10, 20], "de": [30]})],
        "hybrid": [_result(1, {"en": 0.50, "de": 0.40}, {"en": [1, 2], "de": [3]}),
                   _result(2, {"en": 0.60, "de": 0.44}, {"en": [2, 3], "de": [4]})],
    }


def test_per_language_bars_are_seed_means_with_sd_error_bars(seeded):
    frame = plots.per_language_frame(seeded)
    assert len(frame) == 6 and set(frame["method"]) == {"zero-shot", "hybrid"}
    ax = plots.plot_per_language(seeded, title="t")
    heights = sorted(round(p.get_height(), 4) for p in ax.patches if p.get_height() > 0)
    assert heights == [0.2, 0.3, 0.42, 0.55]  # hybrid's bars are the means of its two seeds
    # error bars (with caps) only on hybrid's bars: half their height is the sample sd of the two seeds
    spans = sorted(round((np.nanmax(line.get_ydata()) - np.nanmin(line.get_ydata())) / 2, 4) for line in ax.lines
                   if np.isfinite(line.get_ydata()).any())
    assert spans == [round(np.std([0.40, 0.44], ddof=1), 4), round(np.std([0.5, 0.6], ddof=1), 4)]
    assert "seed mean ± sd" in ax.get_title()
    plt.close("all")


def test_rank_distance_frame_pools_seeds_and_boxes_follow_method_order(seeded):
    frame = plots.rank_distance_frame(seeded)
    assert frame.groupby("method")["rank_distance"].median().to_dict() == {"hybrid": 2.5, "zero-shot": 20.0}
    ax = plots.plot_rank_distances(seeded)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["zero-shot", "hybrid"]
    plt.close("all")


def test_heatmap_writes_each_value_in_its_cell():
    matrix = pd.DataFrame([[0.9, 0.1], [np.nan, 0.75]], index=["en", "de"], columns=["en", "de"])
    ax = plots.plot_matrix(matrix, title="pair mAP", vmin=0, vmax=1)
    texts = [t.get_text() for t in ax.texts]
    assert texts.count("0.90") == 1 and texts.count("0.75") == 1 and "nan" not in texts
    assert [t.get_text() for t in ax.get_yticklabels()] == ["en", "de"]
    plt.close("all")


def test_set_style_applies_the_theme():
    plots.set_style()
    assert plt.rcParams["axes.spines.top"] is False
    assert plt.rcParams["axes.grid"] is True  # seaborn's whitegrid
