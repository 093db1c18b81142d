"""The held-out comparison of the two adversaries: folders and the summary (the runs themselves are long)."""
import pandas as pd

from hybrid_utils.experiments import sweep_dir
from hybrid_utils.profiles import get_profile
from hybrid_utils.study.adversaries import adversary_dir, summarize_adversaries


def test_reversal_reuses_the_sweep_run_and_confusion_gets_its_own_folder():
    profile = get_profile("cpu")
    model = profile.models[0]
    assert adversary_dir(profile, model, "reversal", 0.3, 2) == sweep_dir(profile, model, 0.3, 2)
    confusion = adversary_dir(profile, model, "confusion", 0.3, 2)
    assert confusion.parent == sweep_dir(profile, model, 0.3, 2).parent
    assert confusion.name == "confusion-" + sweep_dir(profile, model, 0.3, 2).name


def test_the_summary_is_mean_and_sd_per_adversary():
    frame = pd.DataFrame({"adversary": ["reversal", "reversal", "confusion", "confusion"], "lambda_max": 0.3,
                          "seed": [1, 2, 1, 2], "val_score": [0.4, 0.6, 0.5, 0.5]})
    summary = summarize_adversaries(frame)
    assert list(summary.index) == ["reversal", "confusion"]
    assert summary.loc["reversal", ("val_score", "mean")] == 0.5
    assert summary.loc["confusion", ("val_score", "std")] == 0.0
    assert round(summary.loc["reversal", ("val_score", "std")], 4) == 0.1414
