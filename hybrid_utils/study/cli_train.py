"""The ``train`` command line: options, their :class:`~hybrid_utils.config.TrainConfig`, and running it.

Used by ``python -m hybrid_utils train`` and ``python -m hybrid_utils.study.cli_train``. Every
default comes from :class:`~hybrid_utils.config.TrainConfig`, so from the ``cpu`` profile.
The same entry point runs under ``torchrun`` / ``accelerate launch`` (see
``docs/distributed.md``)::

    python -m hybrid_utils.study.cli_train --method hybrid --train-on mlqa-r --output runs/hybrid-mlqa-r
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from ..config import METHOD_NAMES, PAPER_BATCH_SIZE, PAPER_LEARNING_RATE, TRAINABLE, ZERO_SHOT, TrainConfig
from ..runs import _is_main_process, load_train_log

__all__ = ["add_train_arguments", "config_from_args", "run_train_command", "main"]


def _defaults_text(train_on: str) -> str:
    from ..profiles import PROFILES

    v = PROFILES["cpu"].training_defaults(train_on)
    return f"{v['steps']} steps, lr {v['learning_rate']:g}, scale {v['scale']:g}, top {v['num_trainable_layers']} layers"


def add_train_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``train`` options to ``parser`` (``python -m hybrid_utils train`` and ``python -m hybrid_utils.training``)."""
    d = TrainConfig()
    parser.add_argument("--method", choices=list(METHOD_NAMES), default=d.method, help="batching method (default %(default)s)")
    parser.add_argument("--train-on", default=d.train_on,
                        help="mlqa-r, xquad-r or a folder of LAReQA files (default %(default)s)")
    parser.add_argument("--model", default=d.model, help="'bundled', a local folder or a Hub name (default %(default)s)")
    parser.add_argument("--output", "--output-dir", dest="output_dir", default=None,
                        help="run folder (default runs/<method>-<train-on>)")
    parser.add_argument("--alpha", type=float, default=d.alpha, help="P(monolingual batch) for hybrid (default %(default)s)")
    parser.add_argument("--language-weights", choices=["size", "uniform"], default=d.language_weights,
                        help="a batch's language (pair) drawn in proportion to its pairs (size) or uniformly "
                             "(default %(default)s)")
    parser.add_argument("--batch-size", type=int, default=d.batch_size, help="pairs per batch and process (default %(default)s)")
    tuned = "; ".join(f"{name}: {_defaults_text(name)}" for name in ("mlqa-r", "xquad-r"))
    parser.add_argument("--steps", type=int, default=None,
                        help=f"optimizer steps (default: the cpu profile's for the training set: {tuned})")
    parser.add_argument("--lr", "--learning-rate", dest="learning_rate", type=float, default=None,
                        help=f"learning rate (default: the cpu profile's for the training set; the paper's is "
                             f"{PAPER_LEARNING_RATE:g})")
    parser.add_argument("--warmup", type=float, default=d.warmup, help="warm-up: fraction (<1) or steps (default %(default)s)")
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--scale", type=float, default=None,
                        help="InfoNCE scale = 1/temperature (default: the cpu profile's for the training set)")
    parser.add_argument("--max-seq-length", type=int, default=None,
                        help=f"truncation while training (default {d.max_seq_length})")
    parser.add_argument("--trainable", choices=list(TRAINABLE), default=None,
                        help=f"what is fine-tuned (default {d.trainable})")
    parser.add_argument("--num-trainable-layers", type=int, default=None,
                        help="top layers trained with --trainable cpu-default (default: the cpu profile's)")
    parser.add_argument("--paper", action="store_true",
                        help=f"the paper's settings: lr {PAPER_LEARNING_RATE:g}, batch {PAPER_BATCH_SIZE}, "
                             "full fine-tuning, max-seq-length 128 (explicit flags still win)")
    parser.add_argument("--languages", nargs="+", default=None, help="training languages (default: all)")
    parser.add_argument("--limit-pairs", type=int, default=d.limit_pairs, help="about this many pairs, for quick runs")
    parser.add_argument("--eval-holdout", type=float, default=d.eval_holdout,
                        help="fraction of question ids held out of training (default %(default)s)")
    parser.add_argument("--exclude-overlap-with", default=d.exclude_overlap_with,
                        help="drop pairs overlapping this data set: auto (the protocol's evaluation set), "
                             "a name/folder, or none (default %(default)s)")
    parser.add_argument("--lambda-max", type=float, default=d.lambda_max, help="adversarial: final GRL lambda")
    parser.add_argument("--lambda-schedule", choices=["ganin", "constant", "linear"], default=d.lambda_schedule)
    parser.add_argument("--discriminator-lr", type=float, default=d.discriminator_lr)
    parser.add_argument("--lambda-warmup", type=float, default=d.lambda_warmup,
                        help="adversarial: fraction of steps with lambda 0 at the start (default %(default)s)")
    parser.add_argument("--discriminator-queue", type=int, default=d.discriminator_queue,
                        help="adversarial: embeddings of earlier batches the discriminator also sees (default %(default)s)")
    parser.add_argument("--adversary", choices=["reversal", "confusion"], default=d.adversary,
                        help="adversarial: gradient reversal or a confusion loss towards uniform (default %(default)s)")
    parser.add_argument("--reinit-top-layers", type=int, default=d.reinit_top_layers,
                        help="re-initialise the top N layers before training (default %(default)s)")
    parser.add_argument("--no-prefix-cache", action="store_true",
                        help="recompute the frozen lower layers at every step (slower; same loss and gradients)")
    parser.add_argument("--save-steps", type=int, default=d.save_steps, help="checkpoint every N steps (default %(default)s)")
    parser.add_argument("--keep-checkpoints", action="store_true", help="keep checkpoints/ after a finished run")
    parser.add_argument("--no-resume", action="store_true", help="start from scratch even if a checkpoint exists")
    parser.add_argument("--bf16", choices=["auto", "on", "off"], default="auto",
                        help="bfloat16 autocast; auto = on for CUDA bf16 GPUs and CPUs with AMX, fp16 on CUDA GPUs "
                             "without bf16 (e.g. a T4), else fp32; off = fp32 (default %(default)s)")
    parser.add_argument("--num-threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    parser.add_argument("--record-batches", action="store_true",
                        help="write batches-rank<r>.jsonl with the languages of every batch")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """A :class:`TrainConfig` from parsed :func:`add_train_arguments` options."""
    d = TrainConfig()
    paper = getattr(args, "paper", False)
    exclude = args.exclude_overlap_with
    if exclude is not None and str(exclude).lower() in ("none", "no", "off", ""):
        exclude = None
    return TrainConfig(
        method=args.method, train_on=args.train_on, model=args.model, output_dir=args.output_dir,
        alpha=args.alpha, language_weights=getattr(args, "language_weights", d.language_weights),
        batch_size=args.batch_size if not (paper and args.batch_size == d.batch_size) else PAPER_BATCH_SIZE,
        steps=args.steps,
        learning_rate=args.learning_rate if args.learning_rate is not None else (
            PAPER_LEARNING_RATE if paper else None),
        warmup=args.warmup, seed=args.seed, scale=args.scale,
        max_seq_length=args.max_seq_length if args.max_seq_length is not None else (128 if paper else d.max_seq_length),
        trainable=args.trainable or ("full" if paper else d.trainable),
        num_trainable_layers=args.num_trainable_layers,
        languages=tuple(args.languages) if args.languages else None, limit_pairs=args.limit_pairs,
        eval_holdout=args.eval_holdout, exclude_overlap_with=exclude,
        lambda_max=args.lambda_max, lambda_schedule=args.lambda_schedule, discriminator_lr=args.discriminator_lr,
        lambda_warmup=args.lambda_warmup, discriminator_queue=args.discriminator_queue,
        adversary=args.adversary, reinit_top_layers=args.reinit_top_layers, prefix_cache=not args.no_prefix_cache,
        save_steps=args.save_steps, keep_checkpoints=args.keep_checkpoints,
        resume=not args.no_resume and "auto", bf16={"on": True, "off": False}.get(args.bf16, "auto"), num_threads=args.num_threads, device=args.device,
        show_progress=not args.no_progress, record_batches=args.record_batches,
    )


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
