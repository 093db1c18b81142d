"""The study's findings are generated from its tables: the words follow the numbers."""

import os

import pandas as pd

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from hybrid_utils.study.findings import what_we_found  # noqa: E402

def _summary(values):
    rows = []
    for (method, post), (mono, cross, multi, bias) in values.items():
        rows.append({"method": method, "postprocess": post, "eval_on": "xquad-r", "n_seeds": 1 if method == "zero-shot" else 3,
                     "mono_map": mono, "cross_map": cross, "multilingual_map": multi, "language_bias": bias})
    return pd.DataFrame(rows)


def test_findings_pick_their_words_from_the_verdicts_and_stay_within_eight_lines():
    summary = _summary({("zero-shot", "none"): (0.80, 0.64, 0.30, 1232), ("zero-shot", "center"): (0.79, 0.68, 0.53, 495),
                        ("monolingual", "none"): (0.66, 0.55, 0.38, 175), ("hybrid", "none"): (0.65, 0.57, 0.42, 140),
                        ("hybrid", "center"): (0.65, 0.58, 0.45, 120)})
    comparisons = pd.DataFrame([
        {"eval_on": "xquad-r", "method_a": "hybrid", "method_b": "monolingual", "metric": "mono_map", "diff": -0.012,
         "p_holm": 1e-4, "verdict": "b better"},
        {"eval_on": "xquad-r", "method_a": "hybrid", "method_b": "monolingual", "metric": "language_bias", "diff": -35.0,
         "p_holm": 1e-3, "verdict": "a better"},
        {"eval_on": "xquad-r", "method_a": "hybrid", "method_b": "monolingual", "metric": "cross_map", "diff": 0.0004,
         "p_holm": 0.9, "verdict": "no measurable difference"}])
    lines = what_we_found(summary, comparisons, sweep=None, positive_control=None)
    assert len(lines) <= 8
    paired = next(line for line in lines if line.startswith("- **Hybrid − monolingual**"))
    assert "mono -0.012 (worse, Holm p 1e-04)" in paired
    assert "rank distance -35 (better, Holm p 1e-03)" in paired
    assert "cross +0.000 (no measurable difference)" in paired  # a tiny difference prints as +0.000, not -0.000
    best = next(line for line in lines if "Best mean per measure" in line)
    assert "mono monolingual (0.660)" in best and "rank distance hybrid (140)" in best and "(3 seeds;" in best
    assert "monolingual mAP 0.800, above every trained method" in best
    centring = next(line for line in lines if "Centring" in line)
    assert "from 0.300 to 0.530" in centring and "above the best trained method (hybrid, 0.420)" in centring


def test_centring_below_the_best_trained_method_says_below():
    summary = _summary({("zero-shot", "none"): (0.80, 0.64, 0.30, 1232), ("zero-shot", "center"): (0.79, 0.68, 0.35, 800),
                        ("hybrid", "none"): (0.65, 0.57, 0.42, 140)})
    lines = what_we_found(summary, pd.DataFrame(columns=["eval_on", "method_a", "method_b", "metric"]), None, None)
    assert any("below the best trained method (hybrid, 0.420)" in line for line in lines)


def test_the_positive_control_line_sets_the_held_out_gap_beside_the_evaluation_sets():
    control = pd.DataFrame([{"setting": "s", "method": m, "seed": seed, "step": 240, "mono_map": v}
                            for m, values in (("monolingual", (0.670, 0.664)), ("cross-lingual", (0.650, 0.648)))
                            for seed, v in enumerate(values, 1)])
    summary = _summary({("monolingual", "none"): (0.66, 0.55, 0.38, 175), ("cross-lingual", "none"): (0.665, 0.57, 0.42, 140)})
    line = what_we_found(summary, pd.DataFrame(columns=["eval_on", "method_a", "method_b", "metric"]), None, control,
                         setting="s")[0]
    assert "by +0.018 (4.2 × the seed sd, 2 seeds): the study's setting shows the paper's trade-off" in line
    assert line.endswith("On the evaluation set the same gap is -0.005 (means).")


def test_the_adversary_line_names_the_chosen_adversary_and_reads_its_own_sweep_points():
    def point(adversary, value, accuracy, probe, margin, score):
        return [{"adversary": adversary, "lambda_max": value, "seed": seed, "discriminator_accuracy": accuracy,
                 "val_probe_accuracy_centered": probe, "val_translation_margin": margin, "val_score": score + d}
                for seed, d in ((1, -0.001), (2, 0.001))]

    sweep = pd.DataFrame(point("none", 0.0, 0.98, 0.30, 0.24, 0.52) + point("reversal", 0.3, 0.12, 0.30, 0.12, 0.47)
                         + point("confusion", 0.3, 0.81, 0.25, 0.25, 0.54) + point("confusion", 1.0, 0.60, 0.28, 0.24, 0.53))
    summary = _summary({("hybrid", "none"): (0.65, 0.57, 0.42, 140)})
    lines = what_we_found(summary, pd.DataFrame(columns=["eval_on", "method_a", "method_b", "metric"]), sweep, None)
    line = next(line for line in lines if line.startswith("- **Adversary**"))
    assert "(confusion, λ = 0.3, chosen among confusion and reversal on held-out training questions)" in line
    assert "its discriminator is not fooled (0.81, chance 0.14; 0.98 without an adversary)" in line
    assert "reads the language less well than without it (0.25 vs 0.30)" in line
    assert "the translation margin rises from 0.24 to 0.25" in line
