"""Run folders: what a training run writes, how it is resumed, and how to read it back.

Runs are resumable: checkpoints go to ``<output_dir>/checkpoints`` every ``save_steps``
steps and :func:`hybrid_utils.training.train` continues from the last one
(``resume="auto"``), truncating the step log to the checkpoint's step
(:func:`_truncate_log`) so that the log never has a step twice.

Outputs in ``output_dir``: the fine-tuned Sentence Transformers model (load it with
``hybrid_utils.encoder.load_encoder(output_dir)``), ``train_log.jsonl`` (one line per
optimizer step: loss, learning rate, gradient norm, elapsed seconds and, for the
adversarial methods, the discriminator's learning rate, contrastive/adversarial parts,
lambda, discriminator accuracy and its chance level; read it with :func:`load_train_log`),
``train_config.json`` (written last: the configuration plus a summary of the run; read it
with :func:`load_train_config`) and, with ``eval_holdout > 0``, ``heldout_question_ids.json``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from .config import CONFIG_NAME, LOG_NAME

__all__ = ["load_train_log", "load_train_config"]


# --------------------------------------------------------------------------- resume

def _read_jsonl(path: Path) -> list[dict]:
    if not Path(path).exists():
        return []
    rows = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if line:
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:  # a line cut by an interruption
                    break
    return rows


def _truncate_log(path: Path, last_step: int) -> int:
    """Keep only the log lines up to ``last_step`` (the checkpoint a run resumes from)."""
    rows = _read_jsonl(path)
    kept = [r for r in rows if int(r.get("step", 0)) <= last_step]
    if len(kept) != len(rows) or (path.exists() and not rows):
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
        tmp.replace(path)
    return len(rows) - len(kept)


def _last_checkpoint(checkpoint_dir: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    if not checkpoint_dir.is_dir():
        return None
    last = get_last_checkpoint(str(checkpoint_dir))
    if last and not (Path(last) / "trainer_state.json").exists():  # half-written: fall back to the previous one
        return None
    return last


def _checkpoint_step(checkpoint: str) -> int:
    state = json.loads((Path(checkpoint) / "trainer_state.json").read_text())
    return int(state.get("global_step", 0))


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0

# --------------------------------------------------------------------------- writing

def _versions() -> dict:
    import sentence_transformers
    import torch
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__,
            "sentence_transformers": sentence_transformers.__version__, "python": sys.version.split()[0]}


def _write_json(path: Path, payload: dict) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, ensure_ascii=False, default=str), encoding="utf-8")
    tmp.replace(path)

# --------------------------------------------------------------------------- reading runs

def load_train_log(run_dir: str | os.PathLike):
    """The step log of a run as a :class:`pandas.DataFrame` (one row per optimizer step).

    Columns: ``step``, ``epoch``, ``loss``, ``learning_rate``, ``grad_norm``, ``elapsed_s``,
    and for the adversarial methods ``discriminator_learning_rate``, ``contrastive``, ``adversarial``,
    ``adversarial_lambda``, ``discriminator_accuracy``, ``discriminator_loss``, ``discriminator_chance``,
    ``discriminator_heldout_accuracy`` and ``discriminator_learning_rate``.
    """
    import pandas as pd

    path = Path(run_dir)
    if path.is_dir():
        path = path / LOG_NAME
    if not path.exists():
        raise FileNotFoundError(f"no training log at {path}: is {run_dir} a run folder made by hybrid_utils.training?")
    rows = _read_jsonl(path)
    frame = pd.DataFrame(rows)
    if len(frame):
        frame = frame.drop_duplicates("step", keep="last").sort_values("step").reset_index(drop=True)
    return frame


def load_train_config(run_dir: str | os.PathLike) -> dict:
    """``train_config.json`` of a finished run (config, data info, summary, versions)."""
    return json.loads((Path(run_dir) / CONFIG_NAME).read_text(encoding="utf-8"))
