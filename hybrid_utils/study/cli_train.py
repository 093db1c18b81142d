"""The ``train`` command line: options, their :class:`~hybrid_utils.config.TrainConfig`, and running it.

Used by ``python -m hybrid_utils train`` and ``python -m hybrid_utils.study.cli_train``. The options are
the fields of :class:`~hybrid_utils.config.TrainConfig` (``--<field-name>``, with the field's type and default;
:data:`OPTIONS` adds help texts, choices and the few flags spelled otherwise), so every default comes from
``TrainConfig``, so from the ``cpu`` profile; ``--paper`` takes the ``gpu-paper`` profile's settings
(:data:`hybrid_utils.profiles.PAPER_FIELDS`). The same entry point runs under ``torchrun`` /
``accelerate launch`` (see ``docs/distributed.md``)::

    python -m hybrid_utils.study.cli_train --method hybrid --train-on mlqa-r --output runs/hybrid-mlqa-r
"""

from __future__ import annotations

import argparse
import sys
import typing
from dataclasses import MISSING, Field, fields
from pathlib import Path
from typing import Sequence

from ..adversarial import ADVERSARIES, SCHEDULES
from ..batch_groups import LANGUAGE_WEIGHTS
from ..config import METHOD_NAMES, PROTOCOLS, TRAINABLE, ZERO_SHOT, TrainConfig
from ..profiles import DEFAULT_PROFILE, PAPER_FIELDS, PAPER_PROFILE, PROFILES, RUN_FIELDS, TUNED
from ..runs import _is_main_process, load_train_log

__all__ = ["OPTIONS", "add_train_arguments", "config_from_args", "run_train_command", "main"]


def _name_or_none(value: str) -> str | None:
    """``none``, ``no``, ``off`` or an empty string: None; anything else as it is."""
    return None if value.lower() in ("none", "no", "off", "") else value


def _bf16(value: str) -> bool | str:
    choices = {"auto": "auto", "on": True, "off": False}
    if value not in choices:
        raise argparse.ArgumentTypeError(f"invalid choice {value!r} (choose from auto, on, off)")
    return choices[value]


#: Per :class:`TrainConfig` field: its help text and, where the option is not ``--<field-name>`` of the field's
#: type, its flags and argparse settings. A field missing here still gets its option (``--<field-name>``).
OPTIONS: dict[str, dict] = {
    "method": {"choices": list(METHOD_NAMES), "help": "batching method"},
    "train_on": {"help": "mlqa-r, xquad-r or a folder of LAReQA files"},
    "model": {"help": "'bundled', a local folder or a Hub name"},
    "output_dir": {"flags": ("--output", "--output-dir"), "help": "run folder (default runs/<method>-<train-on>)"},
    "alpha": {"help": "P(monolingual batch) for hybrid"},
    "language_weights": {"choices": list(LANGUAGE_WEIGHTS),
                         "help": "a batch's language (pair) drawn in proportion to its pairs (size) or uniformly"},
    "batch_size": {"help": "pairs per batch and process"},
    "steps": {"help": "optimizer steps"},
    "learning_rate": {"flags": ("--lr", "--learning-rate"), "help": "learning rate"},
    "warmup": {"help": "warm-up: fraction (<1) or steps"},
    "weight_decay": {"help": "AdamW weight decay"},
    "seed": {"help": "training seed (batches, dropout, re-initialised and discriminator weights)"},
    "scale": {"help": "InfoNCE scale = 1/temperature"},
    "max_seq_length": {"help": "truncation while training (0: the model's own)"},
    "trainable": {"choices": list(TRAINABLE), "help": "what is fine-tuned"},
    "num_trainable_layers": {"help": "top layers trained with --trainable cpu-default"},
    "reinit_top_layers": {"help": "re-initialise the top N layers before training; not given, 0 with another --model "
                                  "or --trainable than the profile's"},
    "languages": {"nargs": "+", "help": "training languages (default: all)"},
    "limit_pairs": {"help": "about this many pairs, for quick runs (0: all)"},
    "eval_holdout": {"help": "fraction of question ids held out of training"},
    "exclude_overlap_with": {"type": _name_or_none,
                             "help": "drop pairs overlapping this data set: auto (the protocol's evaluation set), "
                                     "a name/folder, or none"},
    "lambda_max": {"help": "adversarial: final GRL lambda"},
    "lambda_schedule": {"choices": list(SCHEDULES), "help": "adversarial: how lambda ramps up"},
    "lambda_gamma": {"help": "adversarial: steepness of the ganin ramp"},
    "lambda_warmup": {"help": "adversarial: fraction of steps with lambda 0 at the start"},
    "adversary": {"choices": list(ADVERSARIES),
                  "help": "adversarial: gradient reversal or a confusion loss towards uniform"},
    "discriminator_hidden": {"help": "adversarial: hidden units of the language discriminator"},
    "discriminator_lr": {"help": "adversarial: the discriminator's learning rate"},
    "discriminator_queue": {"help": "adversarial: embeddings of earlier batches the discriminator also sees"},
    "discriminator_warm_start": {"help": "adversarial: discriminator-only steps before training"},
    "discriminator_sample": {"help": "adversarial: texts per language and side of the warm-start sample"},
    "discriminator_heldout_every": {"help": "adversarial: log the discriminator's held-out accuracy every N steps "
                                            "(and at every step of the first and last tenth)"},
    "prefix_cache": {"flags": ("--no-prefix-cache",),
                     "help": "recompute the frozen lower layers at every step (slower; same loss and gradients)"},
    "save_steps": {"help": "checkpoint every N steps"},
    "save_total_limit": {"help": "checkpoints kept while training"},
    "keep_checkpoints": {"help": "keep checkpoints/ after a finished run"},
    "resume": {"flags": ("--no-resume",), "action": "store_const", "const": False,
               "help": "start from scratch even if a checkpoint exists"},
    "bf16": {"type": _bf16, "metavar": "{auto,on,off}",
             "help": "bfloat16 autocast; auto = on for CUDA bf16 GPUs and CPUs with AMX, fp16 on CUDA GPUs without "
                     "bf16 (e.g. a T4), else fp32; off = fp32"},
    "num_threads": {"help": "torch CPU threads"},
    "device": {"help": "cpu, cuda, ... (default: cuda if available)"},
    "show_progress": {"flags": ("--no-progress",), "help": "no progress bar"},
    "record_batches": {"help": "write batches-rank<r>.jsonl with the languages of every batch"},
}


def _profile_default(name: str, defaults: TrainConfig) -> str:
    """The value a field left unset takes: the default profile's (per training set for the tuned ones)."""
    if name in TUNED:
        per_set = "; ".join(f"{t}: {getattr(TrainConfig(train_on=t, method=defaults.method), name)}"
                            for t in PROTOCOLS)
        return f"default: the {DEFAULT_PROFILE} profile's for the training set, {per_set}"
    value = getattr(defaults, name)
    return f"default: the {DEFAULT_PROFILE} profile's, {'none' if value is None else value}"


def _option(field: Field, hint, defaults: TrainConfig) -> tuple[tuple[str, ...], dict]:
    """The flags and ``add_argument`` settings of a :class:`TrainConfig` field: its type, its default."""
    if field.default is MISSING:  # pragma: no cover - every field has a default (TrainConfig() works)
        raise TypeError(f"TrainConfig.{field.name} has no default")
    spec = dict(OPTIONS.get(field.name, {}))
    flag = "--" + field.name.replace("_", "-")
    kinds = [k for k in typing.get_args(hint) if k is not type(None)] or [hint]
    settings = {"dest": field.name, "default": field.default}
    if hint is bool:
        settings["action"] = "store_false" if field.default else "store_true"
        flag = f"--no-{flag[2:]}" if field.default else flag
    elif "action" not in spec and "type" not in spec:
        kind = kinds[0]
        if typing.get_origin(kind) is tuple:
            kind, settings["nargs"] = typing.get_args(kind)[0], "+"
        settings["type"] = kind
    flags = spec.pop("flags", (flag,))
    help_text = spec.pop("help", field.name.replace("_", " "))
    if field.name in RUN_FIELDS and field.default is None:
        help_text += f" ({_profile_default(field.name, defaults)})"
    elif field.default is not None and "action" not in settings and "action" not in spec:
        help_text += f" (default {field.default})"
    return flags, {**settings, **spec, "help": help_text}


def add_train_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``train`` options to ``parser``: one per :class:`TrainConfig` field, and ``--paper``."""
    defaults = TrainConfig()
    hints = typing.get_type_hints(TrainConfig)
    for field in fields(TrainConfig):
        flags, settings = _option(field, hints[field.name], defaults)
        parser.add_argument(*flags, **settings)
    paper = PROFILES[PAPER_PROFILE].train_settings()
    settings = ", ".join(f"{name.replace('_', ' ')} {paper[name]:g}" if isinstance(paper[name], float)
                         else f"{name.replace('_', ' ')} {paper[name]}" for name in PAPER_FIELDS)
    parser.add_argument("--paper", action="store_true",
                        help=f"the paper's settings, as the {PAPER_PROFILE} profile has them: {settings} "
                             "(explicit options still win)")
    return parser


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """A :class:`TrainConfig` from parsed :func:`add_train_arguments` options (unset ones: its own defaults)."""
    values = {field.name: getattr(args, field.name) for field in fields(TrainConfig) if hasattr(args, field.name)}
    if getattr(args, "paper", False):
        paper = PROFILES[PAPER_PROFILE].train_settings(Path(str(values["train_on"])).name, values["method"])
        values.update({name: paper[name] for name in PAPER_FIELDS if values.get(name) is None})
    return TrainConfig(**values)


def run_train_command(args: argparse.Namespace) -> int:
    """Run ``train`` from parsed :func:`add_train_arguments` options; returns an exit code."""
    from ..training import train

    config = config_from_args(args)
    path = train(config)
    if _is_main_process():
        frame = load_train_log(path) if config.method != ZERO_SHOT else None
        if frame is not None and len(frame):
            head, tail = frame["loss"].head(5).mean(), frame["loss"].tail(5).mean()
            print(f"loss: first 5 steps {head:.4f} -> last 5 steps {tail:.4f}")
        print(f"model saved to {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hybrid_utils.study.cli_train",
        description="Fine-tune a multilingual retriever with monolingual, cross-lingual, hybrid or adversarial "
                    "batches (also under torchrun / accelerate launch).")
    add_train_arguments(parser)
    return run_train_command(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
