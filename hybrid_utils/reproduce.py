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
:func:`hybrid_utils.stats.compare_methods`), ``timing.json`` (seconds per stage) and the figures.

``reproduce --study`` is the committed study: every seed of ``profile.study_seeds`` and the
adversarial lambda sweep (``adversarial_sweep.csv``). The default (one seed) is the quick look.
It is resumable: a finished training run (its folder holds ``train_config.json`` and a model)
or evaluation (its JSON exists) is skipped, so an interrupted study continues where it stopped.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd

from .run_notebooks import NOTEBOOKS, execute_notebooks  # noqa: F401 - re-exported (the CLI imports them from here)
from .timing import StageTimer, write_timing  # noqa: F401 - re-exported (the sweeps import StageTimer from here)
from .profiles import Profile, get_profile
from .report import (  # noqa: F401 - re-exported (notebooks and tests import them from here)
    SEED_COLUMNS, SUMMARY_COLUMNS, SWEEP_COLUMNS, centering_effect, describe_centering, describe_findings,
    LANGUAGE_INFO_COLUMNS, summarize_seeds, summary_markdown,
    update_readme, write_summary,
)
from .results import load_results, load_seed_results, model_slug, result_name  # noqa: F401 - re-exported

ZERO_SHOT = "zero-shot"


def run_dir(profile: Profile, model: str, method: str, train_on: str, seed: int | None = None) -> Path:
    """``<runs_dir>/<model>/<method>-<train_on>-seed<k>`` (default seed: the profile's first)."""
    seed = profile.seeds[0] if seed is None else int(seed)
    return Path(profile.runs_dir) / model_slug(model) / f"{method}-{train_on}-seed{seed}"


def result_path(profile: Profile, model: str, method: str, eval_on: str, seed: int | None = None) -> Path:
    """``<results_dir>/<model>/<method>/<eval_on>[-seed<k>].json`` (zero-shot has no seed)."""
    if method != ZERO_SHOT and seed is None:
        seed = profile.seeds[0]
    return Path(profile.results_dir) / model_slug(model) / method / result_name(eval_on, None if method == ZERO_SHOT
                                                                                 else seed)


def is_finished_run(path: Path) -> bool:
    return (path / "train_config.json").exists() and (path / "modules.json").exists()


class Evaluator:
    """Evaluates models of one profile; with the CPU default it reuses the frozen layers' work.

    Every model fine-tuned with ``trainable="cpu-default"`` keeps the base model's embeddings
    and lower layers, so a :class:`~hybrid_utils.prefix_cache.FrozenPrefixCache` per base
    model computes them once, and each model only runs its top layers.
    """

    def __init__(self, profile: Profile, log=print):
        self.profile, self.log = profile, log
        self._datasets: dict = {}
        self._caches: dict = {}

    def dataset(self, name: str):
        """The evaluation set ``name`` with the profile's languages and question limit (loaded once)."""
        from .data import load_lareqa

        if name not in self._datasets:
            self._datasets[name] = load_lareqa(name, languages=self.profile.eval_languages,
                                               limit_questions=self.profile.limit_questions)
        return self._datasets[name]

    def _cache(self, base_model: str):
        from .encoder import load_encoder
        from .prefix_cache import FrozenPrefixCache

        if self.profile.trainable != "cpu-default" or self.profile.int8_eval:
            return None
        if base_model not in self._caches:
            base = load_encoder(base_model)
            total = base[0].auto_model.config.num_hidden_layers
            self._caches[base_model] = FrozenPrefixCache(base, total - self.profile.num_trainable_layers,
                                                         precision=self.profile.precision)
        return self._caches[base_model]

    def evaluate(self, model_path: str, dataset, model_name: str, base_model: str | None = None,
                 show_progress_bar: bool = True) -> dict:
        """``evaluate_lareqa`` of the model at ``model_path`` (a run folder or model name) on ``dataset``.

        With ``"center"`` among the profile's ``postprocess``, the result also holds the metrics of the
        language-centred embeddings under ``result["postprocess"]["center"]`` (:mod:`hybrid_utils.postprocess`).
        """
        from .encoder import encode_texts, load_encoder
        from .evaluation import evaluate_lareqa

        encoder = load_encoder(model_path, quantize_int8=self.profile.int8_eval)
        cache = self._cache(base_model or self.profile.models[0])
        if cache is not None:
            def encode(texts, prompt_name, progress=show_progress_bar):
                return cache.encode(encoder, texts, prompt_name, progress)
        else:
            def encode(texts, prompt_name, progress=show_progress_bar):
                return encode_texts(encoder, list(texts), prompt_name, show_progress_bar=progress,
                                    precision=self.profile.precision)
        start = time.perf_counter()
        embeddings = (encode(dataset.questions["text"], "query"), encode(dataset.candidates["sentence"], "passage"))
        seconds_encoding = time.perf_counter() - start
        result = evaluate_lareqa(encoder, dataset, model_name=model_name, embeddings=embeddings,
                                 precision=self.profile.precision, show_progress_bar=show_progress_bar)
        result["seconds_encoding"] = round(seconds_encoding, 3)
        result["precision"] = cache.precision if cache is not None else self.profile.precision
        if cache is not None:
            result["encoding"] = (f"lower {cache.num_frozen_layers} layers computed once per text "
                                  f"(FrozenPrefixCache), top layers by this model")
        if "center" in self.profile.postprocess:
            from .postprocess import centered_evaluation, centering_means

            start = time.perf_counter()
            means = centering_means(lambda texts, side: encode(texts, side, False), dataset,
                                    self.training_set_of(dataset), sample=self.profile.center_sample)
            result["postprocess"] = {"center": centered_evaluation(*embeddings, dataset, means)}
            result["seconds_postprocess"] = round(time.perf_counter() - start, 3)
        return result

    def missing_metrics(self, result: dict) -> list[str]:
        """Metrics this evaluator writes that ``result`` (written by older code) does not have."""
        missing = [key for key in ("recall_at_1", "recall_at_10") if key not in result]
        missing += [f"postprocess {name}" for name in self.profile.postprocess
                    if name not in (result.get("postprocess") or {})]
        return missing

    def training_set_of(self, dataset):
        """The training set of the protocol that evaluates on ``dataset`` (None for a custom data set)."""
        from .config import PROTOCOLS
        from .data import load_lareqa

        train_on = next((t for t, e in PROTOCOLS.items() if e == getattr(dataset, "name", None)), None)
        if train_on is None:
            return None
        key = ("train", train_on)
        if key not in self._datasets:
            self._datasets[key] = load_lareqa(train_on)
        return self._datasets[key]

    def __call__(self, model_path: str, base_model: str, eval_on: str, out: Path, model_name: str,
                 refresh: bool = False) -> dict:
        """Evaluate on the full evaluation set ``eval_on`` and save to ``out``, unless ``out`` is up to date.

        ``refresh``: also evaluate again when ``out`` lacks a metric added since it was written
        (:meth:`missing_metrics`); the model is not retrained.
        """
        from .evaluation import save_result

        trained = Path(model_path) / "train_config.json"
        if out.exists() and (not trained.exists() or out.stat().st_mtime >= trained.stat().st_mtime):
            saved = json.loads(out.read_text())
            missing = self.missing_metrics(saved)
            if not (refresh and missing):
                self.log(f"  [skip] {out} exists" + (f" (without {', '.join(missing)})" if missing else ""))
                return saved
            self.log(f"  {out} has no {', '.join(missing)}: evaluating again")
        result = self.evaluate(model_path, self.dataset(eval_on), model_name, base_model)
        save_result(result, out)
        self.log(f"  mAP mono {result['mono_map']:.3f}  cross {result['cross_map']:.3f}  "
                 f"multi {result['multilingual_map']:.3f}  bias {result['language_bias']:.1f}  -> {out}")
        return result


def train_config(profile: Profile, method: str, train_on: str, model: str | None = None, seed: int | None = None,
                 **overrides):
    """The :class:`~hybrid_utils.config.TrainConfig` of one run of the study (``overrides`` win)."""
    from .config import PROTOCOLS, TrainConfig

    model = model or profile.models[0]
    seed = profile.seeds[0] if seed is None else int(seed)
    settings = dict(method=method, train_on=train_on, model=model, seed=seed, lambda_max=profile.lambda_max,
                    output_dir=str(run_dir(profile, model, method, train_on, seed)), alpha=profile.alpha,
                    language_weights=profile.language_weights,
                    batch_size=profile.batch_size, trainable=profile.trainable,
                    max_seq_length=profile.max_seq_length, limit_pairs=profile.limit_pairs,
                    **profile.training_defaults(train_on, method),
                    eval_holdout=profile.eval_holdout,
                    exclude_overlap_with=PROTOCOLS.get(train_on, "auto"))
    settings.update(overrides)
    return TrainConfig(**settings)


def ensure_run(profile: Profile | str | None, method: str, train_on: str, model: str | None = None, log=print,
               seed: int | None = None, **overrides) -> Path:
    """The folder of a finished training run of the study: trained now unless it is already there.

    Notebooks call this too, so they reuse the runs of ``reproduce`` (and vice versa).
    """
    from .training import train

    profile = profile if isinstance(profile, Profile) else get_profile(profile)
    config = train_config(profile, method, train_on, model, seed=seed, **overrides)
    out_dir = Path(config.output_dir)
    if is_finished_run(out_dir):
        changed = _changed_settings(out_dir, config)
        if not changed:
            log(f"  [skip] {out_dir} is a finished run")
            return out_dir
        log(f"  {out_dir} was trained with other settings ({', '.join(changed)}): training it again")
        config.resume = False
    return Path(train(config, log=log))


_RUN_DEFINING = ("method", "train_on", "model", "alpha", "language_weights", "batch_size", "steps", "learning_rate", "scale", "trainable",
                 "num_trainable_layers", "max_seq_length", "limit_pairs", "seed", "lambda_max", "lambda_schedule",
                 "eval_holdout", "lambda_warmup", "discriminator_queue", "discriminator_warm_start", "adversary",
                 "reinit_top_layers")


def _changed_settings(run: Path, config) -> list[str]:
    """The settings that define a run and differ between its saved ``train_config.json`` and ``config``."""
    try:
        saved = json.loads((run / "train_config.json").read_text())
    except (OSError, ValueError):
        return ["unreadable train_config.json"]
    saved = saved.get("config", saved)
    wanted = config.to_dict()
    return [key for key in _RUN_DEFINING if key in saved and saved[key] != wanted.get(key)]


def ensure_result(profile: Profile | str | None, method: str, eval_on: str, seed: int | None = None,
                  model: str | None = None, evaluator: "Evaluator | None" = None, log=print) -> dict:
    """The evaluation of one model of the study on ``eval_on``: read from its JSON, else trained and evaluated now.

    Uses the same folders, file names and model names as :func:`reproduce`.
    """
    from .config import PROTOCOLS

    profile = profile if isinstance(profile, Profile) else get_profile(profile)
    model = model or profile.models[0]
    evaluator = evaluator or Evaluator(profile, log)
    if method == ZERO_SHOT:
        return evaluator(model, model, eval_on, result_path(profile, model, ZERO_SHOT, eval_on),
                         model_name=model_slug(model))
    train_on = next(t for t, e in PROTOCOLS.items() if e == eval_on)
    seed = profile.seeds[0] if seed is None else seed
    folder = ensure_run(profile, method, train_on, model, log=log, seed=seed)
    return evaluator(str(folder), model, eval_on, result_path(profile, model, method, eval_on, seed),
                     model_name=f"{model_slug(model)} + {method} ({train_on}, seed {seed})")


def reproduce(profile: Profile | str | None = None, methods=None, models=None, study: bool = False,
              train_sets=None, refresh=(), log=print, max_hours: float | None = None,
              language_weights: bool = False) -> pd.DataFrame:
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
            size-proportional hybrid runs (:func:`hybrid_utils.language_weighting.language_weights_study`,
            same seeds and protocols; ``language_weights.csv``, ``language_weights_comparisons.csv``).
        log: where progress lines go.
        max_hours: a time budget (default: ``profile.max_hours``); with one, the time of the plan is
            estimated from measured steps before training and the call stops with
            :class:`hybrid_utils.plan.BudgetExceededError` when over budget (:func:`hybrid_utils.plan.check_budget`).
    """
    from .config import METHODS
    from .tabulate import add_postprocessed, seed_rows, tabulate_study

    profile = profile if isinstance(profile, Profile) else get_profile(profile)
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
                    out_dir = study_run_dir(profile, model, method, train_on, seed, study)
                    log(f"== {model_slug(model)}: {method} (seed {seed}), train on {train_on} -> evaluate on {eval_on}")
                    start = time.perf_counter()
                    ensure_run(profile, method, train_on, model, log=log, seed=seed, output_dir=str(out_dir))
                    timer.add(f"train {method} on {train_on}", time.perf_counter() - start, seed)
                    start = time.perf_counter()
                    result = evaluate(str(out_dir), model, eval_on, result_path(profile, model, method, eval_on, seed),
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

    summary = tabulate_study(profile, rows, results, sweep, timer)
    write_timing(timer, Path(profile.results_dir), profile, study, seeds, protocols, started)
    log("\nTime per stage\n" + timer.table())
    return summary


def _choose_lambda_first(profile: Profile, evaluate: "Evaluator", timer: "StageTimer", log=print) -> Profile:
    """Run the lambda sweep on held-out training questions and return ``profile`` at the chosen ``lambda_max``."""
    from .tuning import choose_lambda

    chosen = choose_lambda(lambda_sweep(profile, evaluate, timer, log=log, eval_set=False))
    if chosen["lambda_max"] != profile.lambda_max:
        log(f"  the sweep chose lambda_max {chosen['lambda_max']:g}, the profile says {profile.lambda_max:g}: the study "
            f"uses the sweep's choice (set it in profiles.py so that the default reproduce trains it too)")
    else:
        log(f"  the sweep chose lambda_max {chosen['lambda_max']:g} (validation score {chosen['val_score']:.4f})")
    return replace(profile, lambda_max=chosen["lambda_max"])


def sweep_dir(profile: Profile, model: str, lambda_max: float, seed: int) -> Path:
    """The run folder of the lambda sweep at ``lambda_max``; the study's adversarial runs are those at the chosen value."""
    return (Path(profile.runs_dir) / model_slug(model) / "lambda-sweep"
            / f"adversarial-{profile.sweep_train_on}-lambda{lambda_max:g}-seed{seed}")


def study_run_dir(profile: Profile, model: str, method: str, train_on: str, seed: int, study: bool) -> Path:
    """Where :func:`reproduce` trains ``method``: in the study, the adversarial runs of the sweep's protocol are the
    sweep's runs at the chosen ``lambda_max`` (trained once, not again)."""
    if study and method == "adversarial" and train_on == profile.sweep_train_on and profile.lambda_max in profile.lambda_sweep:
        return sweep_dir(profile, model, profile.lambda_max, seed)
    return run_dir(profile, model, method, train_on, seed)


def lambda_sweep(profile: Profile, evaluate: "Evaluator | None" = None, timer: "StageTimer | None" = None,
                 lambdas=None, seeds=None, log=print, eval_set: bool = True, eval_seeds=None) -> pd.DataFrame:
    """The adversarial method at each ``lambda_max`` and seed; writes ``adversarial_sweep.csv``.

    Every run is measured on held-out questions of its *training* set (``val_*`` columns, by
    :func:`hybrid_utils.tuning.validate_run`: mAPs, a freshly trained language probe on raw and centred
    embeddings, the translation margin): that is where lambda is chosen (:func:`hybrid_utils.tuning.choose_lambda`).
    ``discriminator_accuracy`` is the discriminator's own accuracy on held-out texts of every language over
    the last tenth of training (chance: 1 / languages). With ``eval_set`` the runs are also evaluated on the
    full evaluation pool (the other columns): an exploration, never used to choose; ``eval_seeds`` limits it to
    those seeds (the study explores one seed: the chosen value's other seeds are the study's adversarial runs).
    The runs at the profile's own ``lambda_max`` are the study's adversarial runs (:func:`study_run_dir`).
    """
    from .config import PROTOCOLS
    from .runs import load_train_log
    from .tuning import validation_row

    evaluate = evaluate or Evaluator(profile, log)
    timer = timer or StageTimer()
    model, train_on = profile.models[0], profile.sweep_train_on
    eval_on = PROTOCOLS[train_on]
    rows = []
    for seed in seeds or profile.sweep_seeds:
        for value in lambdas or profile.lambda_sweep:
            value = float(value)
            folder = sweep_dir(profile, model, value, seed)
            log(f"== lambda sweep: lambda_max {value:g} (seed {seed})")
            start = time.perf_counter()
            ensure_run(profile, "adversarial", train_on, model, log=log, seed=seed, lambda_max=value,
                       output_dir=str(folder))
            row = {"lambda_max": value, "seed": seed, **validation_row(folder)}
            timer.add("train and validate lambda sweep", time.perf_counter() - start, "sweep")
            if eval_set and (eval_seeds is None or seed in eval_seeds):
                start = time.perf_counter()
                out = (result_path(profile, model, "adversarial", eval_on, seed) if value == profile.lambda_max else
                       Path(profile.results_dir) / "lambda-sweep" / model_slug(model) / f"lambda{value:g}"
                       / result_name(eval_on, seed))
                result = evaluate(str(folder), model, eval_on, out,
                                  model_name=f"{model_slug(model)} + adversarial lambda_max {value:g} (seed {seed})")
                timer.add("evaluate lambda sweep", time.perf_counter() - start, "sweep")
                row.update({k: result.get(k) for k in ("probe_accuracy", "mono_map", "cross_map", "multilingual_map",
                                                       "language_bias")})
            tail = load_train_log(folder).get("discriminator_heldout_accuracy", pd.Series(dtype=float)).dropna()
            row["discriminator_accuracy"] = float(tail.iloc[-max(1, len(tail) // 10):].mean()) if len(tail) else None
            rows.append(row)
            sweep = pd.DataFrame(rows).reindex(columns=SWEEP_COLUMNS)
            Path(profile.results_dir).mkdir(parents=True, exist_ok=True)
            sweep.to_csv(Path(profile.results_dir) / "adversarial_sweep.csv", index=False)  # after every run
    return sweep
