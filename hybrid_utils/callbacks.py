"""Trainer callbacks and the collator of a training run: step log, discriminator checkpoints, batch records.

* :class:`TrainLogCallback` writes ``train_log.jsonl`` (one line per optimizer step);
* :class:`DiscriminatorCheckpointCallback` saves the adversarial discriminator into every
  checkpoint (it lives in the loss, not in the model);
* :class:`PairCollator` tokenizes only the question and answer columns of the pairs (the samplers need
  the others), and its :class:`BatchRecordingCollator` optionally records the languages of every batch a
  process trains on;
* :class:`TrainingProgressCallback` is the run's one progress bar (loss in its postfix), in place of
  the trainer's per-step printing.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from transformers import TrainerCallback

try:  # sentence-transformers >= 6
    from sentence_transformers.sentence_transformer.data_collator import SentenceTransformerDataCollator
except ImportError:  # pragma: no cover - sentence-transformers 3.x - 5.x
    from sentence_transformers.data_collator import SentenceTransformerDataCollator

from .config import DISCRIMINATOR_NAME
from .runs import _read_jsonl

__all__ = ["TrainLogCallback", "DiscriminatorCheckpointCallback", "BatchRecordingCollator", "TrainingProgressCallback",
           "use_single_progress_bar"]


class TrainLogCallback(TrainerCallback):
    """Appends one JSON line per logged step to ``<run>/train_log.jsonl`` (main process only).

    Keys: ``step``, ``epoch``, ``loss``, ``learning_rate``, ``grad_norm``, ``elapsed_s``
    and, when the loss reports them, ``contrastive``, ``adversarial``, ``confusion``, ``discriminator_queue``, ``adversarial_lambda``,
    ``discriminator_accuracy``, ``discriminator_loss`` and ``discriminator_chance``. The
    trainer's end-of-training summary (runtime, samples per second) is kept in ``summary``.

    ``learning_rate`` is the encoder's learning rate in that step, read from the optimizer's
    parameter groups (``trainer``, set by :func:`~hybrid_utils.training.build_training_run`):
    the trainer itself logs the rate of the *first* group, which need not be the encoder's once
    ``learning_rate_mapping`` gives the discriminator of the adversarial methods groups of its
    own. Those runs also log ``discriminator_learning_rate``.
    """

    def __init__(self, path: str | os.PathLike, loss=None, trainer=None) -> None:
        self.path = Path(path)
        self.loss = loss
        self.trainer = trainer
        self.summary: dict = {}
        self._start = None
        self._offset = 0.0
        self._rates: dict = {}

    def _learning_rates(self, optimizer) -> dict:
        """``{"learning_rate": encoder's, "discriminator_learning_rate": ...}`` from the parameter groups."""
        if optimizer is None:
            return {}
        discriminator = getattr(self.loss, "discriminator", None)
        disc_ids = {id(p) for p in discriminator.parameters()} if discriminator is not None else set()
        rates = {}
        for group in optimizer.param_groups:
            params = group.get("params", [])
            if not params:
                continue  # a group emptied by learning_rate_mapping holds nothing that trains
            lr = group.get("lr")
            lr = float(lr.item() if hasattr(lr, "item") else lr)
            if any(id(p) not in disc_ids for p in params):
                rates.setdefault("learning_rate", lr)
            if any(id(p) in disc_ids for p in params):
                rates.setdefault("discriminator_learning_rate", lr)
        return rates

    def on_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        # after optimizer.step() and before the scheduler's step: the rates this step was taken with
        trainer_optimizer = getattr(self.trainer, "optimizer", None)
        self._rates = self._learning_rates(trainer_optimizer if trainer_optimizer is not None else optimizer)

    def on_train_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()
        rows = _read_jsonl(self.path)
        self._offset = float(rows[-1].get("elapsed_s", 0.0)) if rows else 0.0

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = dict(logs or {})
        stats = self.loss.pop_stats() if self.loss is not None and hasattr(self.loss, "pop_stats") else {}
        if "loss" not in logs:
            if "train_runtime" in logs:
                self.summary.update(logs)
            return
        if not state.is_world_process_zero:
            return
        row = {"step": int(state.global_step), "epoch": round(float(state.epoch or 0.0), 4)}
        logs.update(self._rates)
        for key in ("loss", "contrastive", "adversarial", "confusion", "discriminator_queue", "learning_rate",
                    "discriminator_learning_rate", "grad_norm"):
            if key in logs and logs[key] is not None:
                row[key] = float(logs[key])
        row.update(stats)
        row["elapsed_s"] = round(self._offset + time.perf_counter() - (self._start or time.perf_counter()), 3)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")


class NoFinalCheckpointCallback(TrainerCallback):
    """Skips the trainer's checkpoint at the last step when checkpoints are not kept.

    transformers saves a checkpoint (the whole model and the optimizer) when training ends, and
    :func:`hybrid_utils.training.train` then saves the finished model itself and deletes the checkpoints unless
    ``keep_checkpoints``: without this callback every run writes the model twice (470 MB more for
    multilingual-e5-small). The checkpoints during training, which resuming needs, are unchanged.
    """

    def on_step_end(self, args, state, control, **kwargs):
        if state.max_steps and state.global_step >= state.max_steps:
            control.should_save = False


class DiscriminatorCheckpointCallback(TrainerCallback):
    """Saves the adversarial loss's discriminator into every checkpoint (it is not part of the model)."""

    def __init__(self, loss) -> None:
        self.loss = loss

    def on_save(self, args, state, control, **kwargs):
        import torch

        if not state.is_world_process_zero:
            return
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if folder.is_dir():
            torch.save(self.loss.discriminator.state_dict(), folder / DISCRIMINATOR_NAME)


# --------------------------------------------------------------------------- collator

@dataclass
class PairCollator(SentenceTransformerDataCollator):
    """Sentence-transformers collator that tokenizes only the text columns of the pairs.

    ST's default collator tokenizes every column that is not a label, so the language and
    id columns the samplers need would be fed to the model as extra texts. This one keeps
    ``text_columns`` (default ``("question", "answer")``, in that order: anchor, positive),
    a label column and ``dataset_name`` if present, and drops the rest before tokenizing.

    Build it from the model (and the training arguments, to keep their prompts and router
    mapping)::

        collator = PairCollator.for_model(model, args)
        trainer = SentenceTransformerTrainer(..., train_dataset=pairs, data_collator=collator)
    """

    text_columns: tuple[str, ...] = ("question", "answer")

    @classmethod
    def for_model(cls, model: Any, args: Any = None, text_columns: Sequence[str] = ("question", "answer")
                  ) -> "PairCollator":
        return cls(preprocess_fn=model.preprocess,
                   router_mapping=getattr(args, "router_mapping", None) or {},
                   prompts=getattr(args, "prompts", None) or {},
                   text_columns=tuple(text_columns))

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        if not features:
            return {}
        present = features[0].keys()
        missing = [c for c in self.text_columns if c not in present]
        if missing:
            raise ValueError(f"PairCollator needs the text columns {list(self.text_columns)}; {missing} missing "
                             f"from the batch (it has {list(present)})")
        extra = [c for c in ("dataset_name", *self.valid_label_columns) if c in present]
        keep = [*self.text_columns, *extra]
        return super().__call__([{c: row[c] for c in keep} for row in features])


@dataclass
class BatchRecordingCollator(PairCollator):
    """:class:`PairCollator` that can also record each batch's languages.

    With ``record_path`` set, every collated batch appends ``{"rank", "n", "question_languages",
    "answer_languages", "question_ids"}`` (sorted distinct values) as a JSON line. This is
    where the batches really are: after accelerate has sharded them over the processes.
    """

    record_path: str | None = None

    def __call__(self, features):
        if self.record_path and features:
            rank = int(os.environ.get("RANK", "0"))
            rec = {"rank": rank, "n": len(features),
                   "question_languages": sorted({f.get("question_language") for f in features}),
                   "answer_languages": sorted({f.get("answer_language") for f in features}),
                   "question_ids": sorted({str(f.get("question_id")) for f in features})[:4]}
            with open(self.record_path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(rec) + "\n")
        return super().__call__(features)



class TrainingProgressCallback(TrainerCallback):
    """One tqdm bar over the optimizer steps, the latest loss in its postfix (main process only).

    transformers prints every log as a dict (``{'loss': ..., 'grad_norm': ...}``): with
    ``PrinterCallback`` when ``disable_tqdm`` is set, under its bar with ``ProgressCallback``,
    and as an HTML table with ``NotebookProgressCallback`` in notebooks. Every step is already in
    ``train_log.jsonl`` (:class:`TrainLogCallback`), so the screen shows one bar instead;
    ``tqdm.auto`` draws it as a widget in JupyterLab and Colab, as text elsewhere.
    """

    def __init__(self, description: str = "training") -> None:
        self.description = description
        self.bar = None

    def on_train_begin(self, args, state, control, **kwargs):
        from tqdm.auto import tqdm

        if state.is_world_process_zero:
            self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc=self.description, unit="step")

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.bar is not None and logs and "loss" in logs:
            self.bar.set_postfix(loss=f"{float(logs['loss']):.4f}", refresh=False)

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def use_single_progress_bar(trainer, show_progress: bool = True, description: str = "training") -> None:
    """Replace the trainer's printing and progress callbacks by one :class:`TrainingProgressCallback`.

    Args:
        trainer: a (sentence-transformers) ``Trainer``, modified in place.
        show_progress: False leaves no progress output at all.
        description: the bar's label.
    """
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    printing = [PrinterCallback, ProgressCallback]
    try:
        from transformers.utils.notebook import NotebookProgressCallback

        printing.append(NotebookProgressCallback)
    except ImportError:  # pragma: no cover - transformers without notebook support
        pass
    for callback in printing:
        trainer.remove_callback(callback)
    if show_progress:
        trainer.add_callback(TrainingProgressCallback(description))
