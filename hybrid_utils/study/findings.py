"""What the study found, in at most eight generated lines: README's results and chapter 05 print these.

Every line is built from the committed tables (``summary.csv``, ``comparisons.csv``,
``adversarial_sweep.csv``, ``positive_control.csv``): a direction or a size is picked from the
numbers, and "better" only appears where :func:`hybrid_utils.study.stats.verdict` said so (Holm-corrected
p < 0.05 and a two-level bootstrap interval over seeds and questions that excludes 0). A re-run with
other numbers therefore changes the words, never leaves them behind.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..config import PROTOCOLS
from ..data import load_lareqa
from ..profiles import Profile
from .paper import PAPER_XQUAD_R_HYBRID
from .positive_control import trade_off
from .stats import A_BETTER, B_BETTER
from .tuning import choose_lambda

__all__ = ["what_we_found", "study_findings", "study_intro"]

DATASET_NAMES = {"xquad-r": "XQuAD-R", "mlqa-r": "MLQA-R"}
_METRICS = ("mono_map", "cross_map", "multilingual_map", "language_bias")
_SHORT = {"mono_map": "mono", "cross_map": "cross", "multilingual_map": "multilingual", "language_bias": "rank distance"}


def _number(metric: str, value: float, sign: bool = False) -> str:
    digits = 0 if metric == "language_bias" else 3
    value = 0.0 if abs(value) < 0.5 * 10 ** -digits else value  # no "-0.000"
    return f"{value:{'+' if sign else ''}.{digits}f}"


def _pair_line(comparisons: pd.DataFrame, a: str, b: str) -> str | None:
    """``a`` against ``b`` on the four measures: the difference and the verdict in ``a``'s words."""
    rows = comparisons[(comparisons["method_a"] == a) & (comparisons["method_b"] == b)].set_index("metric")
    if rows.empty:
        return None
    parts = []
    for metric in _METRICS:
        if metric not in rows.index:
            continue
        row = rows.loc[metric]
        word = {A_BETTER: "better", B_BETTER: "worse"}.get(row["verdict"], "no measurable difference")
        p_text = "< 1e-6" if row["p_holm"] < 1e-6 else f"{row['p_holm']:.0e}"
        sure = f", Holm p {p_text}" if word != "no measurable difference" else ""
        parts.append(f"{_SHORT[metric]} {_number(metric, row['diff'], sign=True)} ({word}{sure})")
    return f"**{a.capitalize()} − {b}**: " + "; ".join(parts) + "."


def _best_line(plain: pd.DataFrame) -> str:
    """Which trained method has the best mean on each measure (lower rank distance is better), and where zero-shot is."""
    trained = plain[plain["method"] != "zero-shot"].set_index("method")
    best = [f"{_SHORT[m]} {(trained[m].idxmin() if m == 'language_bias' else trained[m].idxmax())} "
            f"({_number(m, trained[m].min() if m == 'language_bias' else trained[m].max())})" for m in _METRICS]
    seeds = "/".join(str(n) for n in sorted(set(trained["n_seeds"].astype(int))))
    text = (f"**Best mean per measure** ({seeds} seeds; whether a gap is real is in the paired lines): "
            + ", ".join(best) + ".")
    zero = plain[plain["method"] == "zero-shot"]
    if len(zero):
        zero = zero.iloc[0]
        place = ("above every trained method" if zero["mono_map"] > trained["mono_map"].max() else
                 "below every trained method" if zero["mono_map"] < trained["mono_map"].min() else
                 "among the trained methods")
        text += (f" The untouched encoder (zero-shot) has monolingual mAP {zero['mono_map']:.3f}, {place}, and "
                 f"multilingual mAP {zero['multilingual_map']:.3f}.")
    return text


def _positive_control_line(positive_control: pd.DataFrame, setting: str, plain: pd.DataFrame) -> str | None:
    table = trade_off(positive_control)
    row = table[table["setting"] == setting]
    if row.empty:
        return None
    r = row.iloc[0]
    verdict = ("shows the paper's trade-off" if r["shows"] else
               "does not clear the 3 × criterion: it cannot be said to show the paper's trade-off")
    return (f"**Positive control**: on held-out training questions, monolingual batches beat cross-lingual ones on "
            f"monolingual mAP by {r['gap']:+.3f} ({r['gap_over_sd']:.1f} × the seed sd, {int(r['seeds'])} seeds): "
            f"the study's setting {verdict}." + _evaluation_gap(plain))


def _evaluation_gap(plain: pd.DataFrame) -> str:
    """The same gap (monolingual − cross-lingual batches, monolingual mAP) on the evaluation set, from the means."""
    means = plain.set_index("method")["mono_map"]
    if not {"monolingual", "cross-lingual"} <= set(means.index):
        return ""
    gap = means["monolingual"] - means["cross-lingual"]
    return f" On the evaluation set the same gap is {_number('mono_map', gap, sign=True)} (means)."


def _adversary_line(sweep: pd.DataFrame, comparisons: pd.DataFrame, chance: float) -> str | None:
    from ..adversarial import NO_ADVERSARY
    from .report import sweep_means

    if sweep is None or "val_score" not in sweep or sweep["val_score"].isna().all():
        return None
    choice = choose_lambda(sweep)
    chosen, adversary = choice["lambda_max"], choice["adversary"]
    means = sweep_means(sweep, ["discriminator_accuracy", "val_probe_accuracy_centered",
                                "val_translation_margin"]).xs("mean", axis=1, level=1)
    at, off = means.loc[(adversary, chosen)], means.loc[(NO_ADVERSARY, 0.0)]
    compared = sorted(set(means.index.get_level_values("adversary")) - {NO_ADVERSARY})
    fooled = "fooled" if at["discriminator_accuracy"] <= chance + 0.15 else "not fooled"
    probe = at["val_probe_accuracy_centered"] - off["val_probe_accuracy_centered"]
    probe_words = "a fresh probe on centred embeddings reads the language " + (
        "less well than" if probe < -0.02 else "better than" if probe > 0.02 else "as well as")
    return (f"**Adversary** ({adversary}, λ = {chosen:g}, chosen among {' and '.join(compared)} on held-out training "
            f"questions): its discriminator is {fooled} ({at['discriminator_accuracy']:.2f}, chance {chance:.2f}; "
            f"{off['discriminator_accuracy']:.2f} without an adversary) and {probe_words} without it "
            f"({at['val_probe_accuracy_centered']:.2f} vs {off['val_probe_accuracy_centered']:.2f}); the translation "
            f"margin {'falls' if at['val_translation_margin'] < off['val_translation_margin'] else 'rises'} from "
            f"{off['val_translation_margin']:.2f} to {at['val_translation_margin']:.2f}. "
            + (_pair_line(comparisons, "adversarial", "monolingual") or ""))


def _centring_line(summary: pd.DataFrame) -> str | None:
    if "postprocess" not in summary:
        return None
    table = summary.set_index(["method", "postprocess"])
    if ("zero-shot", "center") not in table.index:
        return None
    zero, centred = table.loc[("zero-shot", "none")], table.loc[("zero-shot", "center")]
    trained = summary[(summary["postprocess"] == "none") & (summary["method"] != "zero-shot")]
    best = trained.loc[trained["multilingual_map"].idxmax()]
    after = table.loc[(best["method"], "center")] if (best["method"], "center") in table.index else None
    words = "above" if centred["multilingual_map"] > best["multilingual_map"] else "below"
    text = (f"**Centring** each language's embeddings (no training) takes zero-shot multilingual mAP from "
            f"{zero['multilingual_map']:.3f} to {centred['multilingual_map']:.3f} and rank distance from "
            f"{zero['language_bias']:.0f} to {centred['language_bias']:.0f}, {words} the best trained method "
            f"({best['method']}, {best['multilingual_map']:.3f})")
    if after is not None:
        text += f"; on top of {best['method']} it gives {after['multilingual_map']:.3f} and {after['language_bias']:.0f}"
    return text + "."


def _paper_line(plain: pd.DataFrame, setting: str) -> str | None:
    hybrid = plain[plain["method"] == "hybrid"]
    if hybrid.empty:
        return None
    ours, paper = hybrid.iloc[0], PAPER_XQUAD_R_HYBRID[0]
    return (f"**Against the paper** (XLM-R hybrid on XQuAD-R: mono / cross / multilingual mAP {paper['mono_map']:.3f} / "
            f"{paper['cross_map']:.3f} / {paper['multilingual_map']:.3f}, rank distance {paper['language_bias']:.0f}): "
            f"here {ours['mono_map']:.3f} / {ours['cross_map']:.3f} / {ours['multilingual_map']:.3f}, "
            f"{ours['language_bias']:.0f}. {setting}")


def what_we_found(summary: pd.DataFrame, comparisons: pd.DataFrame, sweep: pd.DataFrame | None,
                  positive_control: pd.DataFrame | None, eval_on: str = "xquad-r", chance: float | None = None,
                  setting: str = "reinit-top2-240", why_different: str = "") -> list[str]:
    """At most eight lines of findings for ``eval_on``, each generated from the tables it names.

    Args:
        summary: ``summary.csv`` (means over seeds, both post-processings).
        comparisons: ``comparisons.csv`` (paired tests with ``verdict`` and ``p_holm``).
        sweep: ``adversarial_sweep.csv`` (held-out ``val_*`` columns), or None.
        positive_control: ``positive_control.csv``, or None.
        eval_on: the evaluation set the lines describe.
        chance: the discriminator's chance accuracy (1 / training languages); default 1 / 7 (MLQA-R).
        setting: the positive-control setting the study runs in.
        why_different: a sentence on why the numbers differ from the paper (starting point, budget).
    """
    summary = summary[summary["eval_on"] == eval_on]
    comparisons = comparisons[comparisons["eval_on"] == eval_on]
    plain = summary[summary["postprocess"] == "none"] if "postprocess" in summary else summary
    lines = [_positive_control_line(positive_control, setting, plain) if positive_control is not None else None,
             _best_line(plain),
             *(_pair_line(comparisons, "hybrid", other) for other in ("monolingual", "cross-lingual", "adversarial")),
             _adversary_line(sweep, comparisons, chance if chance is not None else 1 / 7),
             _centring_line(summary),
             _paper_line(plain, why_different)]
    return [f"- {line}" for line in lines if line][:8]


def positive_control_setting(profile: Profile, train_on: str) -> str | None:
    """The positive-control setting (:data:`~hybrid_utils.study.positive_control.SETTINGS`) that ``profile`` trains in."""
    from .positive_control import SETTINGS

    values = {"train_on": train_on, **profile.training_defaults(train_on)}
    for name, setting in SETTINGS.items():
        if all(values.get(key, 0) == value for key, value in setting.items()):
            return name
    return None


def study_intro(profile: Profile) -> str:
    """One generated sentence: what the study trained, on what, evaluated where."""
    (train_on, eval_on), values = profile.protocols[0], profile.training_defaults(profile.protocols[0][0])
    layers = (f"its top {values['num_trainable_layers']} layers re-initialised and trained"
              if values["reinit_top_layers"] == values["num_trainable_layers"] else
              f"its top {values['num_trainable_layers']} layers trained"
              + (f" (the top {values['reinit_top_layers']} re-initialised)" if values["reinit_top_layers"] else ""))
    return (f"Setting: the bundled multilingual-e5-small with {layers} for {values['steps']} steps of "
            f"{profile.batch_size} pairs (lr {values['learning_rate']:g}) on {DATASET_NAMES.get(train_on, train_on)}, "
            f"evaluated zero-shot on the full {DATASET_NAMES.get(eval_on, eval_on)} pools; {len(profile.study_seeds)} "
            f"training seeds per method; table cells are means ± sd over seeds.")


def study_findings(profile: Profile, summary_all: pd.DataFrame, comparisons: pd.DataFrame,
                   sweep: pd.DataFrame | None, results_dir: str | Path | None = None) -> list[str]:
    """:func:`what_we_found` for the study of ``profile``, with its own positive control and chance level."""
    train_on, eval_on = profile.protocols[0]
    results_dir = Path(results_dir or profile.results_dir)
    control_csv = results_dir / "positive_control.csv"
    control = pd.read_csv(control_csv) if control_csv.exists() else None
    values = profile.training_defaults(train_on)
    reinit = ", re-initialised," if values["reinit_top_layers"] else ""
    why = (f"The starting point and the budget differ: the paper fine-tunes all of XLM-R (a masked language model) with "
           f"batches of 100 on machine-translated QA data; here the top {values['num_trainable_layers']} of 12 layers "
           f"of a small retriever{reinit} are trained for {values['steps']} steps of {profile.batch_size} pairs on "
           f"{DATASET_NAMES.get(train_on, train_on)}.")
    chance = 1.0 / len(load_lareqa(profile.sweep_train_on).languages)
    return what_we_found(summary_all, comparisons, sweep, control, eval_on=PROTOCOLS.get(train_on, eval_on),
                         chance=chance, setting=positive_control_setting(profile, train_on) or "", why_different=why)
