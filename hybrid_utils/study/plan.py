"""What a ``reproduce`` call will run, how long it should take, and a time budget.

:func:`plan_study` lists the training runs and evaluations a call of
:func:`hybrid_utils.study.reproduce.reproduce` would make, and which are already done (finished
runs and up-to-date evaluations are skipped by ``reproduce``, so they cost nothing).

Two estimates of the time the rest takes:

* **measured** (:func:`measure_seconds`): a few real optimizer steps of the profile's
  configuration in a temporary folder (discarded), and the encoding of a sample of the
  evaluation texts, scaled to the planned steps and texts. This is what ``reproduce`` prints
  before training when the profile has a budget (``Profile.max_hours``) or ``--max-hours`` is
  given, and it stops with :class:`BudgetExceededError` (nothing trained, earlier results
  untouched) when the estimate is over budget.
* **assumed** (:func:`assumed_seconds`): no model is loaded and nothing runs: the
  floating-point operations of a step (``2 x parameters x tokens`` forward, ``4 x trainable
  parameters x tokens`` backward) divided by an *assumed* effective throughput of the target
  device (:data:`DEVICES`). Only a rough guide, printed by ``reproduce --dry-run``.

Example::

    from hybrid_utils.study.plan import plan_study, assumed_seconds, describe_plan
    plan = plan_study("gpu")
    print(describe_plan(plan, assumed_seconds(plan)))
"""

from __future__ import annotations

import functools
import math
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..profiles import Profile, get_profile

__all__ = ["PlannedRun", "PlannedEvaluation", "StudyPlan", "Estimate", "Device", "DEVICES", "BudgetExceededError",
           "plan_study", "assumed_seconds", "measure_seconds", "describe_plan", "check_budget", "dry_run"]


class BudgetExceededError(ValueError):
    """The estimated time of a ``reproduce`` call exceeds its budget (raised before anything is trained)."""


@dataclass(frozen=True)
class PlannedRun:
    model: str
    method: str
    train_on: str
    seed: int
    steps: int
    folder: str
    done: bool
    lambda_max: float | None = None   # set for the runs of the adversarial lambda sweep


@dataclass(frozen=True)
class PlannedEvaluation:
    model: str
    name: str            # method, or "zero-shot"
    eval_on: str
    path: str
    done: bool


@dataclass
class StudyPlan:
    """The runs and evaluations of one ``reproduce`` call (``done``: already there, skipped)."""

    profile: Profile
    runs: list[PlannedRun] = field(default_factory=list)
    evaluations: list[PlannedEvaluation] = field(default_factory=list)

    @property
    def models(self) -> list[str]:
        return list(dict.fromkeys([r.model for r in self.runs] + [e.model for e in self.evaluations]))

    def pending_runs(self, model: str | None = None) -> list[PlannedRun]:
        return [r for r in self.runs if not r.done and (model is None or r.model == model)]

    def pending_evaluations(self, model: str | None = None) -> list[PlannedEvaluation]:
        return [e for e in self.evaluations if not e.done and (model is None or e.model == model)]

    def table(self) -> pd.DataFrame:
        """One row per training run: model, method, train_on, seed, steps, done, folder."""
        return pd.DataFrame([r.__dict__ for r in self.runs],
                            columns=["model", "method", "train_on", "seed", "steps", "lambda_max", "done", "folder"])


@dataclass
class Estimate:
    """Estimated seconds of the pending work, per model, and where the numbers come from."""

    seconds: dict[str, float]                   # model -> seconds (training + evaluation)
    step_seconds: dict[str, float | None]       # model -> seconds per optimizer step
    run_overhead_seconds: dict[str, float]      # model -> per-run set-up (data, model loading)
    evaluation_seconds: dict[str, float | None]  # model -> seconds per evaluation of the largest set
    source: str                                 # "measured on ..." or "assumed ..."

    @property
    def total_seconds(self) -> float:
        return float(sum(self.seconds.values()))

    @property
    def hours(self) -> float:
        return self.total_seconds / 3600.0


# --------------------------------------------------------------------------- the plan

def plan_study(profile: Profile | str | None = None, methods=None, models=None, study: bool = False,
               train_sets=None) -> StudyPlan:
    """The training runs and evaluations ``reproduce(profile, methods, models, study, train_sets)`` makes.

    Mirrors the loops of :func:`hybrid_utils.study.reproduce.reproduce` (same folders, same file
    names), including the adversarial lambda sweep of ``study=True``.
    """
    from ..config import PROTOCOLS, ZERO_SHOT
    from ..experiments import is_finished_run, result_path, run_dir, sweep_dir, sweep_name, sweep_points, train_config

    profile = profile if isinstance(profile, Profile) else get_profile(profile)
    seeds = tuple(profile.study_seeds if study else profile.seeds)
    protocols = [(t, e) for t, e in profile.protocols if not train_sets or t in train_sets]
    plan = StudyPlan(profile)
    for model in models or profile.models:
        for train_on, eval_on in protocols:
            out = result_path(profile, model, ZERO_SHOT, eval_on)
            plan.evaluations.append(PlannedEvaluation(model, ZERO_SHOT, eval_on, str(out), out.exists()))
            for method in methods or profile.methods:
                steps = int(profile.training_defaults(train_on, method)["steps"])
                for seed in seeds:
                    folder = run_dir(profile, model, method, train_on, seed)
                    done = is_finished_run(folder) and not _changed(folder, train_config(profile, method, train_on,
                                                                                        model, seed=seed))
                    plan.runs.append(PlannedRun(model, method, train_on, seed, steps, str(folder), done))
                    out = result_path(profile, model, method, eval_on, seed)
                    plan.evaluations.append(PlannedEvaluation(model, method, eval_on, str(out), done and out.exists()))
    if study and any(t == profile.sweep_train_on for t, _ in protocols):
        model, train_on = profile.models[0], profile.sweep_train_on
        for seed in profile.sweep_seeds:
            for value, adversary in sweep_points(profile):
                if (value, adversary) == (profile.lambda_max, profile.adversary):
                    continue  # the study's own adversarial run, planned above
                folder = sweep_dir(profile, model, value, seed, adversary)
                config = train_config(profile, "adversarial", train_on, model, seed=seed, lambda_max=value,
                                      adversary=adversary, output_dir=str(folder))
                done = is_finished_run(folder) and not _changed(folder, config)
                plan.runs.append(PlannedRun(model, "adversarial", train_on, seed, int(config.steps), str(folder),
                                            done, lambda_max=value))
                plan.evaluations.append(PlannedEvaluation(model, f"adversarial {sweep_name(value, adversary)}",
                                                          PROTOCOLS[train_on], "", done))
    return plan


def _changed(folder: Path, config) -> list[str]:
    from ..experiments import changed_settings

    return changed_settings(Path(folder), config)


# --------------------------------------------------------------------------- assumed estimate

@dataclass(frozen=True)
class Device:
    """An assumed effective speed of a device (not a measurement: see :func:`assumed_seconds`)."""

    name: str
    tflops: float            # effective dense matrix throughput while training / encoding
    bandwidth_gbs: float     # effective memory bandwidth (the optimizer update is memory-bound)


#: assumed effective speeds: about a third of a T4's 65 TFLOP/s fp16 tensor-core peak and of its 320 GB/s;
#: for two AVX2 cores in fp32 about 50 GFLOP/s. Rough guides for ``--dry-run``; the budget uses measured steps.
DEVICES = {
    "t4": Device("a Colab T4 in fp16 mixed precision", tflops=20.0, bandwidth_gbs=100.0),
    "cpu": Device("two CPU cores in fp32", tflops=0.05, bandwidth_gbs=10.0),
}

#: (layers, hidden size, feed-forward size, vocabulary) of the models the profiles name, so that a dry run
#: needs no download; other models are read from their local config.json when there is one
KNOWN_ARCHITECTURES = {
    "xlm-roberta-base": (12, 768, 3072, 250002),
    "FacebookAI/xlm-roberta-base": (12, 768, 3072, 250002),
    "sentence-transformers/LaBSE": (12, 768, 3072, 501153),
    "bundled": (12, 384, 1536, 250037),
}
#: tokens a question takes after padding to the longest of its batch (the longest LAReQA questions: 52-84 tokens)
QUESTION_TOKENS = 48
#: average tokens of an evaluation text (questions 18-21, answer sentences 40-46 on average)
EVAL_TOKENS = 40


def _architecture(model: str) -> tuple[int, int, int, int] | None:
    if model in KNOWN_ARCHITECTURES:
        return KNOWN_ARCHITECTURES[model]
    config = Path(model) / "config.json"
    if config.is_file():
        import json

        c = json.loads(config.read_text())
        try:
            return (int(c["num_hidden_layers"]), int(c["hidden_size"]), int(c["intermediate_size"]),
                    int(c["vocab_size"]))
        except KeyError:
            return None
    return None


def _step_flops(profile: Profile, model: str, train_on: str) -> tuple[float, float] | None:
    """(floating-point operations of one optimizer step, trainable parameters), or None for an unknown model."""
    arch = _architecture(model)
    if arch is None:
        return None
    layers, hidden, ffn, vocab = arch
    per_layer = 4 * hidden * hidden + 2 * hidden * ffn
    embeddings = vocab * hidden
    trained_layers = (min(layers, int(profile.training_defaults(train_on)["num_trainable_layers"]))
                      if profile.trainable == "cpu-default" else layers)
    trainable = trained_layers * per_layer + (embeddings if profile.trainable == "full" else 0)
    tokens = profile.batch_size * (min(QUESTION_TOKENS, profile.max_seq_length) + profile.max_seq_length)
    flops = 2 * layers * per_layer * tokens + 4 * trained_layers * per_layer * tokens
    return float(flops), float(trainable)


def _target_device(profile: Profile) -> Device:
    return DEVICES["t4"] if profile.name.startswith("gpu") else DEVICES["cpu"]


def _evaluation_texts(profile: Profile, eval_on: str) -> int:
    """Questions + candidates an evaluation of ``eval_on`` encodes with the profile's languages and limit."""
    return _count_texts(eval_on, profile.eval_languages, profile.limit_questions)


@functools.lru_cache(maxsize=None)
def _count_texts(eval_on: str, languages, limit_questions) -> int:
    from ..data import load_lareqa

    data = load_lareqa(eval_on, languages=languages, limit_questions=limit_questions)
    return len(data.questions) + len(data.candidates)


def assumed_seconds(plan: StudyPlan, device: Device | None = None) -> Estimate:
    """An estimate from operation counts and an assumed device speed (:data:`DEVICES`); nothing is run.

    Training: ``2 x layer parameters x tokens`` forward plus ``4 x trainable layer parameters x
    tokens`` backward per step (tokens: ``batch x (48 + max_seq_length)``, padded), plus an Adam
    update reading and writing 16 bytes per trainable parameter four times. Evaluation:
    ``2 x layer parameters x 40 tokens`` per text. Set-up, downloads and data loading are not counted.
    """
    profile = plan.profile
    device = device or _target_device(profile)
    texts = {e.eval_on: _evaluation_texts(profile, e.eval_on) for e in plan.evaluations}
    seconds, per_step, per_eval = {}, {}, {}
    for model in plan.models:
        runs, evaluations = plan.pending_runs(model), plan.pending_evaluations(model)
        flops = _step_flops(profile, model, runs[0].train_on if runs else profile.protocols[0][0])
        arch = _architecture(model)
        if flops is None or arch is None:
            seconds[model], per_step[model], per_eval[model] = float("nan"), None, None
            continue
        step_flops, trainable = flops
        step = step_flops / (device.tflops * 1e12) + 64 * trainable / (device.bandwidth_gbs * 1e9)
        layers, hidden, ffn, _ = arch
        per_text = 2 * layers * (4 * hidden * hidden + 2 * hidden * ffn) * EVAL_TOKENS / (device.tflops * 1e12)
        per_step[model] = step
        per_eval[model] = per_text * max(texts.values(), default=0)
        seconds[model] = (sum(r.steps for r in runs) * step
                          + sum(texts[e.eval_on] for e in evaluations) * per_text)
    return Estimate(seconds, per_step, {m: 0.0 for m in plan.models}, per_eval,
                    source=f"assumed: operation counts at {device.tflops:g} TFLOP/s and {device.bandwidth_gbs:g} "
                           f"GB/s ({device.name}); not measured, set-up and downloads not counted")


# --------------------------------------------------------------------------- measured estimate

def _measure_steps(profile: Profile, model: str, method: str, train_on: str, steps: int, log) -> tuple[float, float]:
    """(seconds per optimizer step, set-up seconds of a run), from ``steps`` real steps in a temporary folder."""
    from ..experiments import train_config
    from ..runs import load_train_log
    from ..training import build_training_run

    folder = Path(tempfile.mkdtemp(prefix="hybrid-estimate-"))
    try:
        config = train_config(profile, method, train_on, model, output_dir=str(folder), steps=steps, save_steps=0,
                              show_progress=False, discriminator_warm_start=0, discriminator_heldout_every=0)
        start = time.perf_counter()
        run = build_training_run(config, log=None)
        setup = time.perf_counter() - start
        with run.attached():
            run.trainer.train()
        elapsed = load_train_log(folder)["elapsed_s"].tolist()
        del run
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        _free_memory()  # the measured model and optimizer must not stay on the GPU next to the real runs
    # the first steps pay for warm-up (allocator, kernels, caches): time the later ones
    deltas = [b - a for a, b in zip(elapsed, elapsed[1:])][1:] or [elapsed[-1] / max(len(elapsed), 1)]
    step = statistics.median(deltas)
    return step, setup + max(0.0, elapsed[0] - step)


def _measure_evaluation(profile: Profile, model: str, eval_on: str, sample: int) -> float:
    """Seconds to encode one text of ``eval_on``, from encoding ``sample`` of its questions and candidates."""
    from ..encoder import encode_texts, load_encoder
    from ..data import load_lareqa

    data = load_lareqa(eval_on, languages=profile.eval_languages, limit_questions=profile.limit_questions)
    half = max(1, sample // 2)
    questions = data.questions.select(range(min(half, len(data.questions))))["text"]
    sentences = data.candidates.select(range(min(half, len(data.candidates))))["sentence"]
    encoder = load_encoder(model)
    encode_texts(encoder, questions[:8], "query", 8, False)   # warm-up
    start = time.perf_counter()
    encode_texts(encoder, questions, "query", 64, False)
    encode_texts(encoder, sentences, "passage", 64, False)
    seconds = (time.perf_counter() - start) / (len(questions) + len(sentences))
    del encoder
    _free_memory()
    return seconds


def _free_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def measure_seconds(plan: StudyPlan, steps: int = 6, sample: int = 256, log=print) -> Estimate:
    """An estimate of the pending work from measured steps and encodings (per model of the plan).

    Trains ``steps`` optimizer steps of the first pending training run of each model (with
    the profile's batch size, sequence length, trainable parameters and precision, in a
    temporary folder that is deleted), times the later ones, and encodes ``sample`` evaluation
    texts. Adversarial runs are assumed to cost the same per step (their discriminator is a
    small MLP on the embeddings); their discriminator warm start is not counted.
    """
    profile = plan.profile
    texts = {e.eval_on: _evaluation_texts(profile, e.eval_on) for e in plan.evaluations}
    seconds, per_step, overhead, per_eval = {}, {}, {}, {}
    for model in plan.models:
        runs, evaluations = plan.pending_runs(model), plan.pending_evaluations(model)
        step = setup = 0.0
        if runs:
            first = next((r for r in runs if "adversarial" not in r.method), runs[0])
            log(f"  measuring {steps} training steps of {first.method} on {first.train_on} ({model})")
            step, setup = _measure_steps(profile, model, first.method, first.train_on, steps, log)
        per_text = 0.0
        if evaluations:
            per_text = _measure_evaluation(profile, model, evaluations[0].eval_on, sample)
        per_step[model], overhead[model] = (step if runs else None), setup
        per_eval[model] = per_text * max(texts.values(), default=0) if evaluations else None
        seconds[model] = (sum(r.steps * step + setup for r in runs)
                          + sum(texts[e.eval_on] * per_text for e in evaluations))
    import torch

    where = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "this CPU"
    return Estimate(seconds, per_step, overhead, per_eval,
                    source=f"measured on {where}: {steps} training steps and {sample} encoded texts per model")


# --------------------------------------------------------------------------- reporting and budget

def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "unknown"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.0f} min" if seconds >= 60 else f"{seconds:.0f} s"


def describe_plan(plan: StudyPlan, estimate: Estimate | None = None) -> str:
    """The plan in words: models, runs (done / to train), steps, evaluations and the estimate."""
    profile = plan.profile
    lines = [f"profile {profile.name}: models {', '.join(plan.models)}; batch {profile.batch_size}, "
             f"lr {profile.learning_rate:g}, trainable {profile.trainable}, max_seq_length {profile.max_seq_length}"]
    for model in plan.models:
        runs = [r for r in plan.runs if r.model == model]
        pending = plan.pending_runs(model)
        lines.append(f"{model}: {len(runs)} training runs ({len(runs) - len(pending)} done, {len(pending)} to train, "
                     f"{sum(r.steps for r in pending)} steps), {len(plan.pending_evaluations(model))} of "
                     f"{len([e for e in plan.evaluations if e.model == model])} evaluations to run")
        for r in runs:
            label = r.method if r.lambda_max is None else f"{r.method} (lambda_max {r.lambda_max:g})"
            lines.append(f"  {'done ' if r.done else 'train'}  {label:<32} {r.train_on:<8} seed {r.seed}  "
                         f"{r.steps} steps  -> {r.folder}")
    if estimate is not None:
        for model in plan.models:
            step = estimate.step_seconds.get(model)
            evaluation = estimate.evaluation_seconds.get(model)
            lines.append(f"estimate {model}: {_duration(estimate.seconds[model])}"
                         + (f" ({step:.2f} s per step" if step else " (no training")
                         + (f", about {_duration(evaluation)} per evaluation)" if evaluation else ")"))
        lines.append(f"estimated total: {_duration(estimate.total_seconds)} ({estimate.source})")
    return "\n".join(lines)


def check_budget(profile: Profile, methods=None, models=None, study: bool = False, train_sets=None,
                 max_hours: float | None = None, log=print) -> Estimate | None:
    """Print the measured estimate of a ``reproduce`` call; raise :class:`BudgetExceededError` if over budget.

    The budget is ``max_hours``, else ``profile.max_hours``; without either nothing is measured
    (returns None). Called by ``reproduce`` before it trains anything, so stopping loses nothing.
    """
    budget = profile.max_hours if max_hours is None else float(max_hours)
    if budget is None:
        return None
    plan = plan_study(profile, methods, models, study, train_sets)
    if not plan.pending_runs() and not plan.pending_evaluations():
        log("== time estimate: everything is done already")
        return None
    log("== time estimate (before training)")
    estimate = measure_seconds(plan, log=log)
    log(describe_plan(plan, estimate))
    if estimate.hours > budget:
        raise BudgetExceededError(
            f"the estimated time, {estimate.hours:.1f} h ({estimate.source}), exceeds the budget of {budget:g} h. "
            f"Nothing was trained and earlier results are untouched. Run fewer steps (--steps N), models (--models) "
            f"or methods (--methods), one protocol (--train-sets mlqa-r), or allow more time (--max-hours H).")
    log(f"within the budget of {budget:g} h")
    return estimate


def dry_run(profile: Profile | str | None = None, methods=None, models=None, study: bool = False,
            train_sets=None, log=print) -> StudyPlan:
    """Print the plan and the assumed estimate (no model is loaded, nothing is trained)."""
    profile = profile if isinstance(profile, Profile) else get_profile(profile)
    plan = plan_study(profile, methods, models, study, train_sets)
    log(describe_plan(plan, assumed_seconds(plan)))
    if profile.max_hours is not None:
        log(f"budget: {profile.max_hours:g} h (checked against measured steps when reproduce runs)")
    return plan
