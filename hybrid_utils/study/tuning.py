"""Choosing steps, learning rate and InfoNCE scale on held-out questions of the *training* set.

Hyperparameters must never be chosen on an evaluation set. Each zero-shot protocol trains on
one data set (MLQA-R or XQuAD-R) and is evaluated on the other, so the choice is made on a
validation split of the training set: ``eval_holdout`` of its question ids (all language
versions of a held-out question leave training together, and so do all questions that share a
paragraph or an answer sentence with it, :func:`hybrid_utils.pairs.question_groups`, so no
held-out answer is trained on; the split is fixed, see :data:`hybrid_utils.config.HOLDOUT_SEED`).

:func:`tune` trains one run per method and grid point (every method the same grid: an equal
tuning budget) and, every ``eval_every`` steps, evaluates the
model in LAReQA fashion on the held-out questions against the sentences of their paragraphs
in every language (:func:`hybrid_utils.data.subset_lareqa` with ``pool="paragraphs"``: the
hardest in-domain negatives, and small enough to evaluate in seconds). It writes one CSV row
per (grid point, step) and picks:

* the grid point with the best validation score, the mean of the mono-, cross- and
  multilingual mAP (the paper's goal is all three at once);
* the number of steps at which that run's score has flattened: the first evaluated step
  whose score is within ``tolerance`` of the run's best.

``python -m hybrid_utils tune --train-on mlqa-r`` runs it; the chosen values and the
evidence (the CSV under ``results/tuning/``) are recorded in :mod:`hybrid_utils.profiles`.
"""

from __future__ import annotations

import itertools
import json
import shutil
import time
from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd
from transformers import TrainerCallback

from ..adversarial import with_adversary
from ..profiles import TUNING_EVAL_EVERY, TUNING_GRID, TUNING_SEED, TUNING_STEPS

__all__ = ["ValidationCallback", "validation_dataset", "validate_run", "train_and_validate", "validation_row", "choose_lambda",
           "VALIDATION_COLUMNS", "tune", "choose", "describe_tuning", "DEFAULT_GRID",
           "TUNED_METHODS"]

TUNING_COLUMNS = ["train_on", "method", "learning_rate", "scale", "num_trainable_layers", "step", "mono_map", "cross_map",
                  "multilingual_map", "language_bias", "score", "seconds"]


def validation_dataset(train_on: str, question_ids: Sequence[str], languages=None):
    """The held-out questions of ``train_on`` with the sentences of their paragraphs in every language."""
    from ..data import load_lareqa, subset_lareqa

    return subset_lareqa(load_lareqa(train_on, languages=languages), question_ids, pool="paragraphs")


def validate_run(run_dir: str | Path, model=None, probe: bool = True, limit_questions: int | None = None,
                 evaluator=None) -> dict:
    """Evaluate a finished run on the held-out questions of its own training set (never the evaluation set).

    The held-out ids are the ones the run saved (``heldout_question_ids.json``); the pool is the sentences of
    their paragraphs in every language, as in :func:`tune`. ``probe``: also the language probes (raw and on
    centred embeddings) and the translation margin, where :func:`~hybrid_utils.evaluation.evaluate_lareqa`
    computes them, so the adversary is judged by a *freshly trained* probe, not by its own discriminator.
    ``limit_questions``: only the first N held-out question ids (a profile's ``limit_questions``; the ``smoke``
    profile's tests then validate on 25 ids, not all 10 %). ``evaluator``: a
    :class:`~hybrid_utils.experiments.Evaluator` whose frozen lower layers serve the encoding, so the runs of one
    sweep compute them once (used when ``model`` is None; the embeddings are not kept in the store).
    """
    from ..config import HELDOUT_NAME
    from ..encoder import load_encoder
    from ..evaluation import evaluate_lareqa

    saved = json.loads((Path(run_dir) / HELDOUT_NAME).read_text())
    question_ids = saved["question_ids"] if limit_questions is None else saved["question_ids"][:limit_questions]
    validation = validation_dataset(saved["train_on"], question_ids)
    if model is None and evaluator is not None:
        _, model = evaluator.encoder(str(run_dir), store=False, show_progress_bar=False)  # encode(texts, prompt)
    model = model or load_encoder(str(run_dir))
    return evaluate_lareqa(model, validation, show_progress_bar=False, probe=probe)


def discriminator_row(run_dir: str | Path) -> dict:
    """An adversarial run's discriminator over the last tenth of training, from its log.

    ``discriminator_accuracy``: its accuracy on held-out texts of every language (chance: 1 / languages);
    ``discriminator_loss``: its cross-entropy on the current batch (far above ln #languages: confidently wrong).
    Both are means over the steps of the last tenth of training (the held-out accuracy is measured at each of
    them, :class:`~hybrid_utils.adversarial.HeldoutDiscriminatorCallback`). None where the log has no such column
    (a run without an adversary).
    """
    from ..adversarial import end_steps
    from ..runs import load_train_log

    log = load_train_log(run_dir)
    last = log[log["step"] > log["step"].max() - end_steps(int(log["step"].max()))] if len(log) else log

    def mean(column):
        values = last.get(column, pd.Series(dtype=float)).dropna()
        return float(values.mean()) if len(values) else None

    return {"discriminator_accuracy": mean("discriminator_heldout_accuracy"), "discriminator_loss": mean("adversarial")}


#: the held-out validation columns of a run (``validation_row``); ``val_score`` is the mean of the three mAPs
VALIDATION_COLUMNS = ["val_mono_map", "val_cross_map", "val_multilingual_map", "val_language_bias", "val_score",
                      "val_probe_accuracy", "val_probe_accuracy_centered", "val_translation_margin"]


def validation_row(run_dir: str | Path, model=None, limit_questions: int | None = None, evaluator=None) -> dict:
    """:func:`validate_run` as one row of :data:`VALIDATION_COLUMNS` (a probe the evaluation lacks: None).

    The row is kept in the run folder (``validation.json``) and read from there while the run's
    ``train_config.json`` and ``limit_questions`` are unchanged, so a resumed study does not validate a run twice.
    """
    cache, config = Path(run_dir) / "validation.json", Path(run_dir) / "train_config.json"
    stamp = config.stat().st_mtime if config.exists() else None
    if cache.exists():
        saved = json.loads(cache.read_text())
        if saved.get("train_config_mtime") == stamp and saved.get("limit_questions") == limit_questions:
            return saved["row"]
    result = validate_run(run_dir, model, limit_questions=limit_questions, evaluator=evaluator)
    row = {f"val_{key}": result.get(key) for key in ("mono_map", "cross_map", "multilingual_map", "language_bias",
                                                      "probe_accuracy", "probe_accuracy_centered",
                                                      "translation_margin")}
    row["val_score"] = (row["val_mono_map"] + row["val_cross_map"] + row["val_multilingual_map"]) / 3
    cache.write_text(json.dumps({"train_config_mtime": stamp, "limit_questions": limit_questions, "row": row}))
    return row


def choose_lambda(sweep: pd.DataFrame) -> dict:
    """The adversary and its ``lambda_max``: the best mean validation score over seeds among ``lambda_max > 0``.

    The same criterion as every other method's tuning (:func:`choose`: the mean of mono-, cross- and
    multilingual mAP on held-out training questions), over every (adversary, ``lambda_max``) of the sweep, which
    gives each adversary the same values and seeds; ``lambda_max = 0`` is left out because it is the
    monolingual method, not an adversary. Returns ``adversary``, ``lambda_max``, ``val_score`` (mean),
    ``val_score_sd`` and ``seeds``.
    """
    sweep = with_adversary(sweep)
    means = (sweep[sweep["lambda_max"] > 0].groupby(["adversary", "lambda_max"])["val_score"]
             .agg(["mean", "std", "count"]))
    if means.empty:
        raise ValueError("no lambda_max > 0 with validation scores in the sweep")
    best = means["mean"].idxmax()
    return {"adversary": best[0], "lambda_max": float(best[1]), "val_score": float(means.loc[best, "mean"]),
            "val_score_sd": float(means.loc[best, "std"]), "seeds": int(means.loc[best, "count"])}


class ValidationCallback(TrainerCallback):
    """Evaluates the model on a validation LAReQA set every ``every`` steps (and at step 0).

    Rows (``step``, the three mAPs, rank distance, ``score`` = mean of the three mAPs) collect
    in :attr:`rows`.
    """

    def __init__(self, model, dataset, every: int = 50) -> None:
        self.model, self.dataset, self.every = model, dataset, max(1, int(every))
        self.rows: list[dict] = []

    def measure(self, step: int) -> dict:
        from ..evaluation import evaluate_lareqa

        was_training = self.model.training
        result = evaluate_lareqa(self.model, self.dataset, show_progress_bar=False, probe=False)
        self.model.train(was_training)
        row = {"step": int(step), **{k: result[k] for k in ("mono_map", "cross_map", "multilingual_map",
                                                             "language_bias")}}
        row["score"] = (row["mono_map"] + row["cross_map"] + row["multilingual_map"]) / 3
        self.rows.append(row)
        return row

    def on_train_begin(self, args, state, control, **kwargs):
        if state.global_step == 0:
            self.measure(0)

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.every == 0 or state.global_step == state.max_steps:
            self.measure(state.global_step)


#: the grid every method is tuned on (defined in :mod:`hybrid_utils.profiles` with the rest of the tuning budget)
DEFAULT_GRID = TUNING_GRID
#: every trained method of the study gets the same grid and the same steps (equal tuning budget); the adversarial
#: method's lambda is chosen by the lambda sweep on the same held-out questions (``adversarial_sweep.csv``)
TUNED_METHODS = ("monolingual", "cross-lingual", "hybrid", "adversarial")
_POINT = ["method", "learning_rate", "scale", "num_trainable_layers"]


def _label(method: str, point: Mapping) -> str:
    return "-".join([method] + [f"{k}{v:g}" if isinstance(v, float) else f"{k}{v}" for k, v in point.items()])


def _done(frame: pd.DataFrame, method: str, point: Mapping, steps: int) -> bool:
    """Whether ``frame`` already holds this method's grid point up to ``steps`` (a resumed search skips it)."""
    if frame.empty:
        return False
    rows = frame[frame["method"] == method]
    for key, value in point.items():
        rows = rows[rows[key].astype(float) == float(value)] if key in rows else rows.iloc[0:0]
    return not rows.empty and int(rows["step"].max()) >= int(steps)


def train_and_validate(config, train_on: str, eval_every: int) -> tuple[list[dict], float, int]:
    """Train one run from scratch, validating every ``eval_every`` steps on held-out questions of ``train_on``.

    Returns the validation rows (:class:`ValidationCallback`), the training seconds and the number of validation
    questions. Used by :func:`tune` and by :mod:`hybrid_utils.study.positive_control`.
    """
    from ..training import build_training_run

    if config.eval_holdout <= 0:
        raise ValueError("tuning needs held-out questions: eval_holdout > 0")
    shutil.rmtree(config.output_dir, ignore_errors=True)  # a fresh run: no step log of an earlier attempt
    run = build_training_run(config, log=None)
    validation = validation_dataset(train_on, run.info["heldout_question_ids"], languages=config.languages)
    callback = ValidationCallback(run.model, validation, every=eval_every)
    run.trainer.add_callback(callback)
    start = time.perf_counter()
    with run.attached():
        run.trainer.train()
    return callback.rows, time.perf_counter() - start, len(validation.questions)


def tune(train_on: str = "mlqa-r", methods: Sequence[str] = TUNED_METHODS, grid: Mapping[str, Sequence] | None = None,
         steps: int = TUNING_STEPS, eval_every: int = TUNING_EVAL_EVERY, output: str | Path | None = None,
         runs_dir: str | Path = "runs/tuning", log=print, choose_with: Mapping | None = None,
         seed: int = TUNING_SEED, **overrides) -> pd.DataFrame:
    """Train every method at every point of ``grid`` on ``train_on`` and track validation mAP.

    Every method gets the same grid, steps and validation questions: the same tuning budget.
    ``grid`` maps :class:`~hybrid_utils.config.TrainConfig` fields to the values to try
    (default :data:`DEFAULT_GRID`). Returns (and writes to ``output``, default
    ``results/tuning/<train_on>.csv``, rewritten after every grid point, keeping the rows already there
    for other grid points) one row per method, grid point and evaluated step. A grid point whose rows
    are already there is not trained again, so an interrupted search resumes. The choice per method
    (:func:`choose`) goes to ``<output>.json``; ``choose_with`` restricts it to grid points with these
    values. ``seed``: every run's training seed (:data:`hybrid_utils.profiles.TUNING_SEED`, the committed
    evidence's). ``overrides`` go to every run's config.
    """
    from ..config import TrainConfig

    log = log or (lambda *args, **kwargs: None)
    grid = dict(grid or DEFAULT_GRID)
    name = Path(str(train_on)).name
    output = Path(output or Path("results") / "tuning" / f"{name}.csv")
    frame = pd.read_csv(output) if output.exists() else pd.DataFrame(columns=TUNING_COLUMNS)
    keys = list(grid)
    for method in methods:
        for values in itertools.product(*(grid[k] for k in keys)):
            point = dict(zip(keys, values))
            label = _label(method, point)
            if _done(frame, method, point, steps):
                log(f"{label}: already in {output}")
                continue
            settings = dict(method=method, train_on=train_on, steps=int(steps), seed=int(seed), save_steps=0,
                            resume=False, output_dir=str(Path(runs_dir) / name / label), show_progress=False)
            config = TrainConfig(**{**settings, **overrides, **point})
            rows, seconds, n_questions = train_and_validate(config, train_on, eval_every)
            fixed = {"train_on": name, "method": method, "learning_rate": config.learning_rate, "scale": config.scale,
                     "num_trainable_layers": config.num_trainable_layers}
            new = pd.DataFrame([{**fixed, **row, "seconds": round(seconds, 1)} for row in rows], columns=TUNING_COLUMNS)
            frame = _merge(frame, new)
            best = max(rows, key=lambda r: r["score"])
            log(f"{label}: validation score {rows[0]['score']:.4f} at step 0, best {best['score']:.4f} at step "
                f"{best['step']} ({seconds:.0f} s, {n_questions} validation questions)")
            output.parent.mkdir(parents=True, exist_ok=True)
            frame.to_csv(output, index=False)  # after every grid point: an interrupted search keeps its evidence
    choices = {method: choose(frame, method=method, **dict(choose_with or {})) for method in methods}
    output.with_suffix(".json").write_text(json.dumps(choices, indent=2))
    log(f"chosen: {choices}")
    return frame


def _merge(previous: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    """``new`` rows replace earlier rows of the same grid point."""
    if previous.empty:
        return new
    key = _POINT
    points = set(map(tuple, new[key].astype(str).values))
    keep = previous[[tuple(r) not in points for r in previous[key].astype(str).values]]
    return pd.concat([keep, new], ignore_index=True)


def choose(frame: pd.DataFrame, tolerance: float = 0.002, method: str | None = None, **fixed) -> dict:
    """The grid point with the best validation score, and the step where its curve flattened.

    ``steps`` is the first evaluated step whose score is within ``tolerance`` of that run's best.
    ``method``: choose among that method's rows only (each method is tuned on its own curves).
    Keyword arguments restrict the choice to grid points with these values (e.g.
    ``num_trainable_layers=2`` when the compute budget fixes it).
    """
    if method is not None:
        frame = frame[frame["method"] == method]
    for key, value in fixed.items():
        frame = frame[frame[key] == value]
    if frame.empty:
        raise ValueError(f"no tuning rows with {fixed}")
    best = frame.loc[frame["score"].idxmax()]
    curve = frame[(frame["method"] == best["method"]) & (frame["learning_rate"] == best["learning_rate"]) & (frame["scale"] == best["scale"])
                  & (frame["num_trainable_layers"] == best["num_trainable_layers"])]
    curve = curve.sort_values("step")
    flat = curve[curve["score"] >= best["score"] - tolerance].iloc[0]
    start = curve.iloc[0]
    return {"method": str(best["method"]), "learning_rate": float(best["learning_rate"]), "scale": float(best["scale"]),
            "num_trainable_layers": int(best["num_trainable_layers"]), "steps": int(flat["step"]),
            "best_step": int(best["step"]), "best_score": round(float(best["score"]), 4),
            "score_at_steps": round(float(flat["score"]), 4), "score_at_step_0": round(float(start["score"]), 4),
            "tolerance": tolerance, **({"fixed": fixed} if fixed else {})}


def describe_tuning(frames: Mapping[str, pd.DataFrame], **fixed) -> str:
    """One line per training set and method: the choice (restricted to ``fixed`` values) and, if different, the best."""
    lines = []
    for name, frame in frames.items():
        for method in dict.fromkeys(frame["method"]):
            c = choose(frame, method=method, **fixed)
            line = (f"- {name}, {method}: top {c['num_trainable_layers']} layers, lr {c['learning_rate']:g}, "
                    f"scale {c['scale']:g}, {c['steps']} steps (validation score {c['score_at_step_0']:.3f} untrained "
                    f"-> {c['score_at_steps']:.3f}; best {c['best_score']:.3f} at step {c['best_step']})")
            overall = choose(frame, method=method)
            if fixed and overall["best_score"] > c["best_score"]:
                line += (f"; without the budget's {fixed}: top {overall['num_trainable_layers']} layers, lr "
                         f"{overall['learning_rate']:g}, scale {overall['scale']:g} reach {overall['best_score']:.3f}")
            lines.append(line)
    return "\n".join(lines)
