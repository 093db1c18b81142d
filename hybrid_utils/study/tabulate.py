"""Tables, comparisons, figures and README block of a study, from its saved evaluations.

:func:`tabulate_study` is the last stage of :func:`hybrid_utils.study.reproduce.reproduce`;
:func:`retabulate` runs it alone on the evaluations already under ``results/`` (no training, no
encoding), e.g. after the statistics changed: ``python -m hybrid_utils reproduce --study --tabulate-only``.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from ..config import PROTOCOLS
from ..metrics import RECALL_CUTOFFS
from ..profiles import Profile, get_profile
from .findings import study_findings, study_intro
from .report import (LANGUAGE_INFO_COLUMNS, SEED_COLUMNS, centering_effect, describe_centering, summarize_seeds,
                     update_readme, write_comparisons_report, write_summary)
from ..results import load_seed_results, model_slug
from .timing import StageTimer

__all__ = ["tabulate_study", "retabulate", "seed_rows", "add_postprocessed", "comparison_pairs"]

ZERO_SHOT = "zero-shot"


def tabulate_study(profile: Profile, rows: list[dict], results: dict, sweep: pd.DataFrame | None,
                   timer: StageTimer) -> pd.DataFrame:
    """Write ``seed_results.csv``, ``summary.csv`` / ``.md``, ``comparisons.csv``, the figures and (cpu profile,
    ``results/``) the README block; returns the summary of the embeddings as they are (means over seeds)."""
    start = time.perf_counter()
    results_dir = Path(profile.results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    per_seed = pd.DataFrame(rows, columns=SEED_COLUMNS)
    per_seed.to_csv(results_dir / "seed_results.csv", index=False)
    summary_all = summarize_seeds(per_seed)
    write_summary(summary_all, results_dir)
    summary = summary_all[summary_all["postprocess"] == "none"].reset_index(drop=True)
    from .stats import compare_methods
    comparisons = compare_methods(results, comparisons=comparison_pairs(results))
    comparisons.to_csv(results_dir / "comparisons.csv", index=False)
    timer.add("summary and comparisons", time.perf_counter() - start)
    start = time.perf_counter()
    from ..plots import save_study_figures
    save_study_figures(results_dir, summary)
    timer.add("figures", time.perf_counter() - start)
    effect = centering_effect(summary_all)
    notes = [sweep_note(sweep, profile) if sweep is not None else "",
             ("Training-free centring of each language's embeddings (`hybrid_utils.postprocess`, rows "
              "`postprocess == center` of `summary.csv`; paired tests `<method> + center` in `comparisons.csv`):\n"
              + describe_centering(effect)) if len(effect) else "",
             language_weights_note(results_dir)]
    write_comparisons_report(comparisons, results_dir, notes="\n\n".join(note for note in notes if note))
    if profile.name == "cpu" and results_dir.resolve() == (Path.cwd() / "results").resolve():
        update_readme(summary_all, profile.results_dir, study_findings(profile, summary_all, comparisons, sweep),
                      intro=study_intro(profile))
    return summary


def retabulate(profile: Profile | str | None = None, log=print) -> pd.DataFrame:
    """:func:`tabulate_study` on the evaluations saved under ``profile.results_dir`` (no training, no encoding)."""
    profile = profile if isinstance(profile, Profile) else get_profile(profile)
    slug = model_slug(profile.models[0])
    train_of = {e: t for t, e in PROTOCOLS.items()}
    rows, results = [], {}
    saved = load_seed_results(profile.results_dir)
    order = [ZERO_SHOT, *profile.methods]
    for (model, method, eval_on), seeds in sorted(saved.items(), key=lambda kv: (kv[0][2] != "xquad-r", kv[0][2],
                                                                               order.index(kv[0][1]) if kv[0][1] in order else 99)):
        if model != slug or method not in order:
            continue
        for result in seeds:
            rows += seed_rows(profile.models[0], method, "-" if method == ZERO_SHOT else train_of[eval_on], eval_on,
                              result["seed"], result)
            results.setdefault((method, eval_on), []).append(result)
            add_postprocessed(results, method, eval_on, result)
    if not rows:
        raise FileNotFoundError(f"no saved evaluations of {slug} under {profile.results_dir}: run `reproduce` first")
    sweep_csv = Path(profile.results_dir) / "adversarial_sweep.csv"
    sweep = pd.read_csv(sweep_csv) if sweep_csv.exists() else None
    log(f"tabulating {len(rows)} rows from {profile.results_dir}")
    return tabulate_study(profile, rows, results, sweep, StageTimer())


def seed_rows(model: str, method: str, train_on: str, eval_on: str, seed: int | None, result: dict) -> list[dict]:
    """The ``seed_results.csv`` rows of one evaluation: its embeddings as they are, then each post-processing."""
    variants = {"none": result, **(result.get("postprocess") or {})}
    rows = []
    for postprocess, values in variants.items():
        row = {"model": model_slug(model), "method": method, "train_on": train_on, "eval_on": eval_on, "seed": seed,
               "postprocess": postprocess}
        for k in RECALL_CUTOFFS:
            for setting, value in (values.get(f"recall_at_{k}") or {}).items():
                row[f"{setting}_recall_at_{k}"] = value
        # a post-processed variant's language information is its own (None until it reports it), not the raw one's
        own = LANGUAGE_INFO_COLUMNS if values is not result else ()
        row.update({key: values.get(key, None if key in own else result.get(key)) for key in SEED_COLUMNS
                    if key not in row})
        rows.append(row)
    return rows


def add_postprocessed(results: dict, method: str, eval_on: str, result: dict) -> None:
    """File each post-processed variant of ``result`` as a method of its own (``hybrid + center``) for the comparisons."""
    for name, values in (result.get("postprocess") or {}).items():
        results.setdefault((f"{method} + {name}", eval_on), []).append(values)


def comparison_pairs(results: dict) -> list[tuple[str, str]]:
    """The study's method comparisons, every post-processed variant against its own embeddings, then the study's
    comparisons again after each post-processing (does a method's advantage survive a training-free correction?)."""
    from .stats import STUDY_COMPARISONS

    variants = [name for name, _ in dict.fromkeys(results) if " + " in name]
    pairs = list(STUDY_COMPARISONS)
    pairs += [(name, name.split(" + ")[0]) for name in variants]
    for postprocess in dict.fromkeys(name.split(" + ", 1)[1] for name in variants):
        pairs += [(f"{a} + {postprocess}", f"{b} + {postprocess}") for a, b in STUDY_COMPARISONS]
    return list(dict.fromkeys(pairs))


def language_weights_note(results_dir: Path) -> str:
    """The size-vs-uniform comparison in words for the README, if ``reproduce --language-weights`` has run."""
    table, comparisons = results_dir / "language_weights.csv", results_dir / "language_weights_comparisons.csv"
    if not (table.exists() and comparisons.exists()):
        return ""
    from .language_weighting import describe_language_weights

    return ("Hybrid batches with uniform instead of size-proportional languages (`reproduce --study --language-weights`, "
            "`language_weights.csv`; uniform − size):\n\n"
            + describe_language_weights(pd.read_csv(table), pd.read_csv(comparisons)))


def sweep_note(sweep: pd.DataFrame, profile: Profile) -> str:
    """The sweep in words for the README; the discriminator's chance level is 1 / languages of the training set."""
    from ..data import load_lareqa
    from .report import describe_sweep

    return describe_sweep(sweep, chance=1.0 / len(load_lareqa(profile.sweep_train_on).languages))
