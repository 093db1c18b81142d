"""The positive control: a CPU setting in which the batches can show the paper's trade-off at all.

Before methods are compared, the setting must be able to show the effect they are about. The paper's
XLM-R rows (X-X / X-Y monolingual mAP .792 / .755) describe a model that learns retrieval from its
batches: cross-lingual batches then cost monolingual accuracy, which hybrid batches are meant to win
back. multilingual-e5-small is already a contrastively trained retriever; with its top two layers
fine-tuned for 120 steps, every method lands within 0.002 monolingual mAP of the others, so there is
nothing for hybrid batches to repair.

:func:`run_positive_control` trains monolingual and cross-lingual batches (and optionally the other
methods) in each of a few :data:`SETTINGS`, at least two seeds each, and measures them on held-out
questions of the *training* set (the validation split of :mod:`hybrid_utils.study.tuning`, grouped by
paragraph), never on an evaluation set. :func:`trade_off` tells, per setting, whether monolingual
batches beat cross-lingual ones on monolingual mAP by at least ``3 x`` the seed sd: the criterion the
study uses before it compares methods in that setting.

Every row goes to ``results/positive_control.csv`` as soon as its run ends, so an interrupted search
resumes where it stopped (rows already there are not trained again).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

__all__ = ["SETTINGS", "SEEDS", "COLUMNS", "run_positive_control", "add_finished_runs", "trade_off", "describe_trade_off", "write_report"]

#: the settings searched: TrainConfig overrides. ``pretrained-top2`` is today's study setting; the others start from
#: the bundled encoder with its top layers re-initialised (the closest offline analogue of XLM-R's masked-language-model
#: start: retrieval must be learnt from the batches), train more layers and go past one epoch of the monolingual pairs.
SETTINGS: dict[str, dict] = {
    "pretrained-top2-120": {"train_on": "mlqa-r", "num_trainable_layers": 2, "steps": 120, "learning_rate": 1e-4},
    "pretrained-top2-120-xquad": {"train_on": "xquad-r", "num_trainable_layers": 2, "steps": 120, "learning_rate": 1e-4},
    "reinit-top2-240": {"train_on": "mlqa-r", "reinit_top_layers": 2, "num_trainable_layers": 2, "steps": 240,
                        "learning_rate": 3e-4},
    "reinit-top4-240": {"train_on": "mlqa-r", "reinit_top_layers": 4, "num_trainable_layers": 4, "steps": 240,
                        "learning_rate": 3e-4},
}
#: the training seeds of every setting and method: at least two, so that a gap can be set against the seed sd
SEEDS = (1, 2)
COLUMNS = ["setting", "train_on", "method", "seed", "step", "mono_map", "cross_map", "multilingual_map",
           "language_bias", "seconds", "reinit_top_layers", "num_trainable_layers", "learning_rate", "scale"]


def _finished(frame: pd.DataFrame, setting: str, method: str, seed: int, steps: int) -> bool:
    done = frame[(frame["setting"] == setting) & (frame["method"] == method) & (frame["seed"] == seed)]
    return not done.empty and int(done["step"].max()) >= int(steps)


def run_positive_control(settings: Sequence[str] | None = None, methods: Sequence[str] = ("monolingual", "cross-lingual"),
                         seeds: Sequence[int] = SEEDS, train_on: str = "mlqa-r",
                         output: str | Path = "results/positive_control.csv", runs_dir: str | Path = "runs/positive-control",
                         eval_every: int = 120, log=print, **overrides) -> pd.DataFrame:
    """Train ``methods`` x ``seeds`` in every setting and validate on held-out training questions.

    Args:
        settings: names in :data:`SETTINGS` (default: all).
        methods: the methods to train; monolingual and cross-lingual are the control's pair.
        seeds: training seeds (they also seed the re-initialised layers).
        train_on: the training set of a setting that names none; its held-out questions (grouped by
            paragraph) are the validation set.
        output: the CSV, rewritten after every run (rows already there are kept and not trained again).
        eval_every: validation every N steps (and at step 0), so the CSV also holds the learning curve.
        overrides: TrainConfig fields for every run (e.g. ``limit_pairs`` for a quick test).

    Returns:
        every row of ``output`` (one per setting, method, seed and validated step).
    """
    from ..config import TrainConfig
    from .tuning import train_and_validate

    log = log or (lambda *args, **kwargs: None)
    output = Path(output)
    frame = pd.read_csv(output) if output.exists() else pd.DataFrame(columns=COLUMNS)
    for setting in settings or list(SETTINGS):
        if setting not in SETTINGS:
            raise ValueError(f"unknown positive-control setting {setting!r}: choose from {list(SETTINGS)}")
        for method in methods:
            for seed in seeds:
                values = {"train_on": train_on, **SETTINGS[setting], **overrides}
                if _finished(frame, setting, method, seed, values["steps"]):
                    log(f"  [skip] {setting} {method} seed {seed}: in {output}")
                    continue
                config = TrainConfig(method=method, seed=int(seed), save_steps=0, resume=False,
                                     show_progress=False, output_dir=str(Path(runs_dir) / setting / f"{method}-seed{seed}"),
                                     **values)
                rows, seconds, _ = train_and_validate(config, config.train_on, eval_every)
                fixed = {"setting": setting, "train_on": Path(config.train_on).name, "method": method, "seed": int(seed),
                         "seconds": round(seconds, 1), "reinit_top_layers": config.reinit_top_layers,
                         "num_trainable_layers": config.num_trainable_layers,
                         "learning_rate": config.learning_rate, "scale": config.scale}
                new = pd.DataFrame([{**fixed, **row} for row in rows]).reindex(columns=COLUMNS)
                keep = frame[~((frame["setting"] == setting) & (frame["method"] == method) & (frame["seed"] == seed))]
                frame = pd.concat([keep, new], ignore_index=True) if not keep.empty else new
                output.parent.mkdir(parents=True, exist_ok=True)
                frame.to_csv(output, index=False)
                final = rows[-1]
                log(f"  {setting} {method} seed {seed}: mono mAP {final['mono_map']:.3f}, cross {final['cross_map']:.3f}, "
                    f"multilingual {final['multilingual_map']:.3f} at step {final['step']} ({seconds:.0f} s)")
    return frame


def add_finished_runs(runs: dict, setting: str, output: str | Path = "results/positive_control.csv",
                      log=print) -> pd.DataFrame:
    """Add finished runs trained in ``setting`` (e.g. the study's) to the control, validated at their last step.

    ``runs`` maps ``(method, seed)`` to a run folder whose ``train_config.json`` matches ``SETTINGS[setting]``
    (checked: a run trained otherwise is refused). Rows already in ``output`` for that setting, method and
    seed are kept, so the control's own runs are never replaced.
    """
    from ..runs import load_train_config
    from .tuning import validation_row

    log = log or (lambda *args, **kwargs: None)
    output = Path(output)
    frame = pd.read_csv(output) if output.exists() else pd.DataFrame(columns=COLUMNS)
    for (method, seed), folder in runs.items():
        saved = load_train_config(folder)
        saved = saved.get("config", saved)
        wrong = {k: (saved.get(k), v) for k, v in SETTINGS[setting].items() if saved.get(k) != v}
        if wrong:
            raise ValueError(f"{folder} was not trained in the positive-control setting {setting!r}: {wrong}")
        if _finished(frame, setting, method, int(seed), saved["steps"]):
            continue
        row = validation_row(folder)
        new = {"setting": setting, "train_on": saved["train_on"], "method": method, "seed": int(seed),
               "step": saved["steps"], **{k: row[f"val_{k}"] for k in ("mono_map", "cross_map", "multilingual_map",
                                                                         "language_bias")},
               "reinit_top_layers": saved["reinit_top_layers"], "num_trainable_layers": saved["num_trainable_layers"],
               "learning_rate": saved["learning_rate"], "scale": saved["scale"]}
        frame = pd.concat([frame, pd.DataFrame([new]).reindex(columns=COLUMNS)], ignore_index=True)
        log(f"  {setting} {method} seed {seed}: mono mAP {new['mono_map']:.3f} (from {folder})")
    frame.to_csv(output, index=False)
    return frame


def trade_off(frame: pd.DataFrame, metric: str = "mono_map", factor: float = 3.0,
              a: str = "monolingual", b: str = "cross-lingual") -> pd.DataFrame:
    """Per setting: the final-step ``metric`` of ``a`` minus ``b``, the seed sd, and whether the gap is ``>= factor x sd``.

    The seed sd is the larger of the two methods' sample sds over seeds (ddof 1): the gap must stand out from
    the noise of either. A setting ``shows`` the trade-off when the gap is positive and at least ``factor`` times it.
    """
    rows = []
    for setting, group in frame.groupby("setting", sort=False):
        last = group[group["step"] == group["step"].max()]
        values = {m: last.loc[last["method"] == m, metric].to_numpy(float) for m in (a, b)}
        if min(len(v) for v in values.values()) < 2:
            continue
        gap = float(values[a].mean() - values[b].mean())
        sd = float(max(np.std(values[a], ddof=1), np.std(values[b], ddof=1)))
        rows.append({"setting": setting, "steps": int(last["step"].iloc[0]), f"{a}": float(values[a].mean()),
                     f"{b}": float(values[b].mean()), "gap": gap, "seed_sd": sd,
                     "gap_over_sd": gap / sd if sd > 0 else float("inf") if gap > 0 else 0.0,
                     "seeds": int(min(len(v) for v in values.values())),
                     "shows": bool(gap > 0 and gap >= factor * sd)})
    return pd.DataFrame(rows)


def describe_trade_off(table: pd.DataFrame, factor: float = 3.0) -> str:
    """One generated sentence per setting, from :func:`trade_off`'s numbers."""
    lines = []
    for r in table.to_dict("records"):
        verdict = (f"shows the trade-off (gap {r['gap_over_sd']:.1f} x the seed sd)" if r["shows"] else
                   f"does not show it (gap {r['gap_over_sd']:.1f} x the seed sd; {factor:g} x needed)")
        lines.append(f"- {r['setting']}: monolingual - cross-lingual batches, monolingual mAP on held-out training "
                     f"questions {r['gap']:+.3f} ({r['monolingual']:.3f} vs {r['cross-lingual']:.3f}, "
                     f"{r['seeds']} seeds, seed sd {r['seed_sd']:.3f}): {verdict}")
    return "\n".join(lines)


def write_report(frame: pd.DataFrame, path: str | Path = "results/positive_control.md", factor: float = 3.0) -> str:
    """Write (and return) the generated report: the final-step means per setting and method, then the verdicts."""
    last = frame[frame["step"] == frame.groupby("setting")["step"].transform("max")]
    table = (last.groupby(["setting", "method"], sort=False)[["mono_map", "cross_map", "multilingual_map", "language_bias"]]
             .agg(lambda values: f"{values.mean():.3f} ± {values.std(ddof=1):.3f}" if len(values) > 1
                  else f"{values.mean():.3f}"))
    seeds = last.groupby(["setting", "method"], sort=False)["seed"].nunique().rename("seeds")
    text = ("# Positive control\n\nGenerated by `python -m hybrid_utils positive-control` from "
            "`results/positive_control.csv`; do not edit by hand. Held-out questions of the training set (never the "
            "evaluation set); mean ± sd over seeds at the last step. A setting shows the paper's trade-off when "
            f"monolingual batches beat cross-lingual ones on monolingual mAP by at least {factor:g} x the seed sd.\n\n"
            + pd.concat([seeds, table], axis=1).reset_index().to_markdown(index=False) + "\n\n"
            + describe_trade_off(trade_off(frame, factor=factor), factor=factor) + "\n")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(text)
    return text
