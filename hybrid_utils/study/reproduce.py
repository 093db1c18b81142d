"""The whole study in one call: train every method on both protocols, evaluate, compare, tabulate, plot.

``python -m hybrid_utils reproduce`` runs, for each model of the profile and each
zero-shot protocol (train on MLQA-R → evaluate on XQuAD-R, and the reverse):

1. the untrained model (``zero-shot``) on the evaluation set,
2. each method (``monolingual``, ``cross-lingual``, ``hybrid``, ``adversarial``,
   ``hybrid-adversarial``) for each seed: fine-tune on the training set, evaluate on the
   full pools of the evaluation set,

then writes into the profile's results folder: the JSON of every evaluation,
``seed_results.csv`` (one row per model and seed), ``summary.csv`` / ``summary.md`` (mean and
sd over seeds), ``comparisons.csv`` (paired intervals over questions,
:func:`hybrid_utils.study.stats.compare_methods`), ``timing.json`` (seconds per stage) and the figures.

``reproduce --study`` is the committed study: every seed of ``profile.study_seeds`` and the
adversarial lambda sweep (``adversarial_sweep.csv``). The default (one seed) is the quick look.
It is resumable: a finished training run (its folder holds ``train_config.json`` and a model)
or evaluation (its JSON exists) is skipped, so an interrupted study continues where it stopped.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pandas as pd

from ..config import ZERO_SHOT
from ..experiments import (Evaluator, ensure_run, result_path, run_dir, saved_without_run, sweep_dir, sweep_name,
                           sweep_points)
from ..profiles import Profile, get_profile
from ..results import load_seed_results, model_slug, result_name
from .report import SWEEP_COLUMNS
from .timing import ReuseCounter, StageTimer, write_timing


def reproduce(profile: Profile | str | None = None, methods=None, models=None, study: bool = False,
              train_sets=None, refresh=(), log=print, max_hours: float | None = None,
              language_weights: bool = False, read_saved: bool = False) -> pd.DataFrame:
    """Run the study of ``profile`` (resumable) and return the summary table (means over seeds).

    Args:
        profile: a :class:`~hybrid_utils.profiles.Profile` or its name (default: from the environment).
        methods: restrict to these methods (default: the profile's).
        models: restrict to these models (default: the profile's).
        study: the committed study: every seed of ``profile.study_seeds`` and the adversarial
            lambda sweep; otherwise one seed per method (``profile.seeds``).
        train_sets: only the protocols that train on these sets (default: all). Two processes
            can run disjoint protocols side by side (e.g. one thread each on a 2-core machine);
            the lambda sweep runs with the protocol of ``profile.sweep_train_on``. The tables
            then cover the protocols run so far; a last run without ``train_sets`` tabulates all.
        refresh: methods (``zero-shot`` included) whose stored evaluations are redone when they lack
            a metric added since they were written (Recall@k, the centred embeddings); runs are not retrained.
        language_weights: also train hybrid with uniform languages and compare it with the
            size-proportional hybrid runs (:func:`hybrid_utils.study.language_weighting.language_weights_study`,
            same seeds and protocols; ``language_weights.csv``, ``language_weights_comparisons.csv``).
        read_saved: read an evaluation saved in ``profile.results_dir`` whose run is not here as it is, and
            train nothing for it (:func:`~hybrid_utils.experiments.saved_without_run`): chapter 5 in a fresh clone,
            which has the committed results but not the runs. Without it (the command line), such a run is trained
            again and its evaluation redone: reproducing the study is what ``reproduce`` is for.
        log: where progress lines go.
        max_hours: a time budget (default: ``profile.max_hours``); with one, the time of the plan is
            estimated from measured steps before training and the call stops with
            :class:`hybrid_utils.study.plan.BudgetExceededError` when over budget (:func:`hybrid_utils.study.plan.check_budget`).
    """
    from ..config import METHODS
    from .tabulate import add_postprocessed, seed_rows, tabulate_study

    profile = profile if isinstance(profile, Profile) else get_profile(profile)
    log = ReuseCounter(log)  # counts what existed and was reused, for timing.json's from_scratch
    methods = list(methods or profile.methods)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}: choose from {sorted(METHODS)}")
    seeds = tuple(profile.study_seeds if study else profile.seeds)
    protocols = [(t, e) for t, e in profile.protocols if not train_sets or t in train_sets]
    if not protocols:
        raise ValueError(f"no protocol trains on {list(train_sets)}: choose from {[t for t, _ in profile.protocols]}")
    from .plan import check_budget
    check_budget(profile, methods, models, study, train_sets, max_hours, log)  # may stop here, before any training
    started = time.time()
    timer = StageTimer()
    evaluate = Evaluator(profile, log)
    rows, results = [], {}
    run_sweep = study and any(t == profile.sweep_train_on for t, _ in protocols) and "adversarial" in methods
    if run_sweep:  # lambda is chosen on held-out training questions before the study's adversarial runs are used
        profile = _choose_lambda_first(profile, evaluate, timer, log)
    for model in models or profile.models:
        for train_on, eval_on in protocols:
            log(f"== {model_slug(model)}: zero-shot on {eval_on}")
            start = time.perf_counter()
            result = evaluate(model, model, eval_on, result_path(profile, model, ZERO_SHOT, eval_on),
                              model_name=model_slug(model), refresh=ZERO_SHOT in refresh)
            timer.add(f"evaluate zero-shot on {eval_on}", time.perf_counter() - start)
            rows += seed_rows(model, ZERO_SHOT, "-", eval_on, None, result)
            results.setdefault((ZERO_SHOT, eval_on), []).append(result)  # only compared with its own post-processing
            add_postprocessed(results, ZERO_SHOT, eval_on, result)
            for method in methods:
                for seed in seeds:
                    out_dir = run_dir(profile, model, method, train_on, seed)
                    log(f"== {model_slug(model)}: {method} (seed {seed}), train on {train_on} -> evaluate on {eval_on}")
                    out = result_path(profile, model, method, eval_on, seed)
                    start = time.perf_counter()
                    if read_saved and saved_without_run(out, out_dir):
                        log(f"  [skip] {out} is saved and its run is not here: read as it is, nothing trained")
                    else:
                        ensure_run(profile, method, train_on, model, log=log, seed=seed, output_dir=str(out_dir))
                    timer.add(f"train {method} on {train_on}", time.perf_counter() - start, seed)
                    start = time.perf_counter()
                    result = evaluate(str(out_dir), model, eval_on, out,
                                      model_name=f"{model_slug(model)} + {method} ({train_on}, seed {seed})",
                                      refresh=method in refresh)
                    timer.add(f"evaluate {method} on {eval_on}", time.perf_counter() - start, seed)
                    rows += seed_rows(model, method, train_on, eval_on, seed, result)
                    results.setdefault((method, eval_on), []).append(result)
                    add_postprocessed(results, method, eval_on, result)
    sweep = (lambda_sweep(profile, evaluate, timer, log=log, eval_seeds=profile.sweep_seeds[:1]) if run_sweep
             else None)  # the exploration on the evaluation set, one seed per lambda (labelled so in the report)
    if sweep is None and study and (Path(profile.results_dir) / "adversarial_sweep.csv").exists():
        sweep = pd.read_csv(Path(profile.results_dir) / "adversarial_sweep.csv")
    if language_weights:
        from .language_weighting import language_weights_study
        language_weights_study(profile, seeds=seeds, train_sets=train_sets, evaluate=evaluate, timer=timer, log=log)

    if not study and _holds_other_seeds(profile, seeds):  # e.g. the committed study: keep its tables whole
        log("  the results folder holds evaluations of other seeds too (a study): the tables cover all of them")
        from .tabulate import retabulate
        summary = retabulate(profile, log=log)
    else:
        summary = tabulate_study(profile, rows, results, sweep, timer)
    write_timing(timer, Path(profile.results_dir), profile, study, seeds, protocols, started,
                 from_scratch=log.reused == 0)
    log("\nTime per stage\n" + timer.table())
    return summary


def _holds_other_seeds(profile: Profile, seeds) -> bool:
    """True when ``profile.results_dir`` has evaluations of trained models with seeds other than ``seeds``.

    Then a one-seed ``reproduce`` must not tabulate its seed alone: that would overwrite the study's summary,
    comparisons and README block with one-seed versions.
    """
    slugs = {model_slug(model) for model in profile.models}
    saved = load_seed_results(profile.results_dir)
    return any(result.get("seed") not in seeds for (model, method, _), results in saved.items()
               if model in slugs and method in profile.methods for result in results)


def _choose_lambda_first(profile: Profile, evaluate: "Evaluator", timer: "StageTimer", log=print) -> Profile:
    """Run the lambda sweep on held-out training questions and return ``profile`` at the chosen ``lambda_max``."""
    from .tuning import choose_lambda

    chosen = choose_lambda(lambda_sweep(profile, evaluate, timer, log=log, eval_set=False))
    said = f"the {chosen['adversary']} adversary at lambda_max {chosen['lambda_max']:g}"
    if (chosen["adversary"], chosen["lambda_max"]) != (profile.adversary, profile.lambda_max):
        log(f"  the sweep chose {said}, the profile says {profile.adversary} at {profile.lambda_max:g}: the study uses "
            f"the sweep's choice (set it in profiles.py so that the default reproduce trains it too)")
    else:
        log(f"  the sweep chose {said} (validation score {chosen['val_score']:.4f})")
    return replace(profile, lambda_max=chosen["lambda_max"], adversary=chosen["adversary"])


def lambda_sweep(profile: Profile, evaluate: "Evaluator | None" = None, timer: "StageTimer | None" = None,
                 lambdas=None, seeds=None, log=print, eval_set: bool = True, eval_seeds=None,
                 adversaries=None) -> pd.DataFrame:
    """The adversarial method with each adversary, ``lambda_max`` and seed; writes ``adversarial_sweep.csv``.

    Every adversary of ``adversaries`` (default: ``profile.sweep_adversaries``) gets the same values and seeds;
    ``lambda_max = 0`` is one run for all of them (adversary ``"none"``: the discriminator learns, the encoder
    ignores it). Every run is measured on held-out questions of its *training* set (``val_*`` columns, by
    :func:`hybrid_utils.study.tuning.validate_run`: mAPs, a freshly trained language probe on raw and centred
    embeddings, the translation margin): that is where the adversary and lambda are chosen
    (:func:`hybrid_utils.study.tuning.choose_lambda`). ``discriminator_accuracy`` is the discriminator's own
    accuracy on held-out texts of every language over the last tenth of training (chance: 1 / languages). With
    ``eval_set`` the runs are also evaluated on the full evaluation pool (the other columns): an exploration,
    never used to choose; ``eval_seeds`` limits it to those seeds (the study explores one seed: the chosen
    point's other seeds are the study's adversarial runs). The runs of the profile's own adversary and
    ``lambda_max`` are the study's adversarial runs (:func:`hybrid_utils.experiments.run_dir`).
    """
    from ..config import PROTOCOLS
    from ..adversarial import NO_ADVERSARY
    from .tuning import discriminator_row, validation_row

    evaluate = evaluate or Evaluator(profile, log)
    timer = timer or StageTimer()
    model, train_on = profile.models[0], profile.sweep_train_on
    eval_on = PROTOCOLS[train_on]
    rows = []
    for seed in seeds or profile.sweep_seeds:
        for value, adversary in sweep_points(profile, lambdas, adversaries):
            folder = sweep_dir(profile, model, value, seed, adversary)
            name = sweep_name(value, adversary)
            log(f"== lambda sweep: {name} (seed {seed})")
            start = time.perf_counter()
            ensure_run(profile, "adversarial", train_on, model, log=log, seed=seed, lambda_max=value,
                       adversary=adversary, output_dir=str(folder))
            row = {"adversary": adversary if value > 0 else NO_ADVERSARY, "lambda_max": value, "seed": seed,
                   **validation_row(folder, limit_questions=profile.limit_questions, evaluator=evaluate)}
            timer.add("train and validate lambda sweep", time.perf_counter() - start, "sweep")
            if eval_set and (eval_seeds is None or seed in eval_seeds):
                start = time.perf_counter()
                studied = (value, adversary) == (profile.lambda_max, profile.adversary)
                out = (result_path(profile, model, "adversarial", eval_on, seed) if studied else
                       Path(profile.results_dir) / "lambda-sweep" / model_slug(model) / name
                       / result_name(eval_on, seed))
                result = evaluate(str(folder), model, eval_on, out,
                                  model_name=f"{model_slug(model)} + adversarial {name} (seed {seed})")
                timer.add("evaluate lambda sweep", time.perf_counter() - start, "sweep")
                row.update({k: result.get(k) for k in ("probe_accuracy", "mono_map", "cross_map",
                                                       "multilingual_map", "language_bias")})
            row["discriminator_accuracy"] = discriminator_row(folder)["discriminator_accuracy"]
            rows.append(row)
            sweep = pd.DataFrame(rows).reindex(columns=SWEEP_COLUMNS)
            Path(profile.results_dir).mkdir(parents=True, exist_ok=True)
            sweep.to_csv(Path(profile.results_dir) / "adversarial_sweep.csv", index=False)  # after every run
    return sweep
