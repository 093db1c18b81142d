"""Fine-tuning a multilingual retriever with monolingual, cross-lingual, hybrid or adversarial batches.

One function, :func:`train`, runs every method of the study on top of
sentence-transformers' :class:`~sentence_transformers.SentenceTransformerTrainer`:

==========================  ==============================================  ===========
method                      batches (``hybrid_utils.samplers``)             adversarial
==========================  ==============================================  ===========
``monolingual``             one language X per batch (X-X pairs)            no
``cross-lingual``           one language pair X != Y per batch              no
``hybrid``                  monolingual with probability ``alpha``, else    no
                            cross-lingual (Elmahdy, Lin & Ahmad, 2024)
``adversarial``             monolingual batches                             yes
``hybrid-adversarial``      hybrid batches                                  yes
``zero-shot``               no training: the untrained model                -
==========================  ==============================================  ===========

The loss is InfoNCE with in-batch negatives
(:class:`~sentence_transformers.sentence_transformer.losses.MultipleNegativesRankingLoss`, ``scale`` =
1 / temperature, 20 as in sentence-transformers); the adversarial methods add a language
discriminator behind a gradient reversal layer (:mod:`hybrid_utils.adversarial`).
Questions are encoded with the model's ``"query"`` prompt and answers with its
``"passage"`` prompt, exactly as at evaluation time.

Zero-shot protocols (as in the paper): train on MLQA-R and evaluate on XQuAD-R, or the
reverse. Both come from Wikipedia, so :func:`remove_overlap` drops every training pair
whose question or answer text occurs, as a question or candidate sentence, in the
evaluation set (exact match after ``strip()``); :func:`train` does it by default
(``exclude_overlap_with="auto"``). On the shipped data no training pair overlaps
(only two short Hindi candidate sentences, "[उद्धरण वांछित]" and "ए.", occur in both sets,
and neither is the answer of a question), but the check keeps it that way for any data.

CPU defaults (``trainable="cpu-default"``, ``learning_rate=1e-4``, ``max_seq_length=64``,
``num_trainable_layers=4``): the paper fine-tunes everything at ``lr=3e-5`` with batches
of 100 on GPUs for thousands of steps. On two CPU cores we can afford a few hundred steps,
so by default

* the word-embedding matrix (250k x 384 = 96M of the model's 118M parameters) is frozen:
  its gradient and its two Adam moments would cost ~1.2 GB of memory traffic every step
  for rows that a batch hardly touches;
* so are the lower ``12 - num_trainable_layers`` transformer layers: back-propagation then
  stops at layer 8 and costs a third of a full backward pass;
* with only the top layers moving and ~200 steps instead of thousands, we use
  ``lr=1e-4`` (instead of 3e-5) so that the weights move visibly in a CPU run (30 steps
  at batch 16 take the training loss from ~1.3 to ~0.1; held-out mAP on small paragraph
  pools did *not* improve in that test, see ``tests/test_training.py``); this is a
  pragmatic choice, not a tuned optimum. ``learning_rate=3e-5,
  trainable="full", batch_size=100`` (``--paper`` on the command line) restores the
  paper's settings;
* ``max_seq_length=64`` during training: questions are 18-21 tokens on average (at most 52
  on MLQA-R and 84 on XQuAD-R with the ``query:`` prompt), answer sentences 40-46 (10% of
  MLQA-R and 17% of XQuAD-R sentences are longer than 64 tokens and get truncated while
  training). The saved model keeps the model's own limit (512) for evaluation;
* bfloat16 autocast where the hardware multiplies bf16 natively (``bf16="auto"``: CUDA
  GPUs with bf16, CPUs with AMX such as Xeon Sapphire Rapids, like the 2-core CI
  machine): about 1.5x less CPU time per step than fp32. Weights and Adam state stay fp32.

Everything is one flag away: ``trainable="full"`` / ``"no-embeddings"``, any learning
rate, sequence length or number of layers. A GPU is used automatically when present.

Runs are resumable: checkpoints go to ``<output_dir>/checkpoints`` every ``save_steps``
steps and :func:`train` continues from the last one (``resume="auto"``), truncating the
step log to the checkpoint's step so that the log never has a step twice.

Outputs in ``output_dir``: the fine-tuned Sentence Transformers model (load it with
``hybrid_utils.encoder.load_encoder(output_dir)``), ``train_log.jsonl`` (one line per
optimizer step: loss, learning rate, gradient norm, elapsed seconds and, for the
adversarial methods, contrastive/adversarial parts, lambda, discriminator accuracy and its
chance level), ``train_config.json`` (written last: the configuration plus a summary of the
run) and, with ``eval_holdout > 0``, ``heldout_question_ids.json``.

Command line (the same entry point runs under ``torchrun`` / ``accelerate launch``, see
``docs/distributed.md``)::

    python -m hybrid_utils.training --method hybrid --train-on mlqa-r --output runs/hybrid-mlqa-r
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import time
from dataclasses import asdict, dataclass, fields
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple, Sequence

from transformers import TrainerCallback

from .data import LAReQADataset, build_training_pairs, load_lareqa
from .samplers import CrossLingualBatchSampler, HybridBatchSampler, MonolingualBatchSampler, PairCollator

__all__ = [
    "METHODS", "ZERO_SHOT", "METHOD_NAMES", "PROTOCOLS", "TRAINABLE", "PAPER_LEARNING_RATE", "PAPER_BATCH_SIZE",
    "MethodSpec", "TrainConfig", "TrainingRun", "train", "build_training_run", "prepare_training_pairs",
    "remove_overlap", "find_overlap", "split_pairs_by_question_id", "subset_lareqa", "apply_trainable",
    "load_train_log", "TrainLogCallback", "BatchRecordingCollator", "add_train_arguments", "config_from_args",
    "run_train_command", "main",
]

#: the paper's (Elmahdy et al., 2024) learning rate and batch size, for GPU runs
PAPER_LEARNING_RATE = 3e-5
PAPER_BATCH_SIZE = 100
ZERO_SHOT = "zero-shot"
#: zero-shot protocol: train on the key, evaluate on the value
PROTOCOLS = {"mlqa-r": "xquad-r", "xquad-r": "mlqa-r"}
TRAINABLE = ("cpu-default", "full", "no-embeddings")
LOG_NAME = "train_log.jsonl"
CONFIG_NAME = "train_config.json"
HELDOUT_NAME = "heldout_question_ids.json"
CHECKPOINT_DIR = "checkpoints"
DISCRIMINATOR_NAME = "discriminator.pt"


class MethodSpec(NamedTuple):
    """How a method batches its pairs and whether it adds the adversarial language loss."""

    sampler: type            # a hybrid_utils.samplers class
    sampler_kwargs: dict     # fixed keyword arguments (alpha comes from the config for "hybrid")
    adversarial: bool
    description: str


METHODS: dict[str, MethodSpec] = {
    "monolingual": MethodSpec(MonolingualBatchSampler, {}, False, "one language X per batch"),
    "cross-lingual": MethodSpec(CrossLingualBatchSampler, {}, False, "one language pair X != Y per batch"),
    "hybrid": MethodSpec(HybridBatchSampler, {}, False, "monolingual batch with probability alpha, else cross-lingual"),
    "adversarial": MethodSpec(MonolingualBatchSampler, {}, True,
                              "monolingual batches + language discriminator behind gradient reversal"),
    "hybrid-adversarial": MethodSpec(HybridBatchSampler, {}, True,
                                     "hybrid batches + language discriminator behind gradient reversal"),
}
#: every method name, ``zero-shot`` (no training) first
METHOD_NAMES = (ZERO_SHOT, *METHODS)


# --------------------------------------------------------------------------- configuration

@dataclass
class TrainConfig:
    """Everything a training run depends on (saved as ``train_config.json``).

    Attributes:
        method: one of :data:`METHOD_NAMES`.
        train_on: ``"mlqa-r"``, ``"xquad-r"`` or a folder of LAReQA files.
        model: ``"bundled"`` (offline multilingual-e5-small), a local folder or a Hub name.
        output_dir: run folder (default ``runs/<method>-<train_on>``).
        alpha: probability of a monolingual batch (hybrid methods only).
        batch_size: pairs per batch (per process). The paper uses 100.
        steps: optimizer steps (``max_steps``).
        learning_rate: 1e-4 on CPU (see the module docstring); the paper's is 3e-5.
        warmup: linear warm-up, a fraction of ``steps`` if < 1, else a number of steps.
        weight_decay: AdamW weight decay.
        seed: seeds the model's trainable init (discriminator), batches, dropout, holdout split.
        scale: similarity scale of the InfoNCE loss (1 / temperature).
        max_seq_length: truncation while training (the saved model keeps its own limit).
        trainable: ``"cpu-default"`` (top ``num_trainable_layers`` layers), ``"full"`` or
            ``"no-embeddings"`` (everything but the embedding layer).
        num_trainable_layers: transformer layers trained with ``"cpu-default"``.
        languages: training languages (default: all of ``train_on``).
        limit_pairs: keep about this many pairs (whole question ids, drawn at random), for quick runs.
        eval_holdout: fraction of question ids held out of training (ids saved in
            ``heldout_question_ids.json``), to evaluate in-domain on unseen questions.
        exclude_overlap_with: ``"auto"`` (the evaluation set of the protocol: XQuAD-R for
            MLQA-R and vice versa), a data set name / folder, or ``None`` to keep every pair.
        lambda_max, lambda_schedule, lambda_gamma: gradient-reversal strength and its ramp
            (``"ganin"``, ``"constant"``, ``"linear"``), adversarial methods only.
        discriminator_hidden: hidden units of the language discriminator.
        discriminator_lr: learning rate of the discriminator (None: ``learning_rate``).
        save_steps: checkpoint every N steps (0: only at the end).
        save_total_limit: checkpoints kept while training.
        keep_checkpoints: keep ``<output_dir>/checkpoints`` after a successful run (needed to
            continue a finished run with more steps).
        resume: ``"auto"`` / True (continue from the last checkpoint if there is one) or False
            (start from scratch, deleting old checkpoints and log).
        bf16: bfloat16 autocast (weights and optimizer stay fp32). ``"auto"`` (default): on
            when the device runs bf16 matrix products natively (a CUDA GPU with bf16, or a CPU
            with AMX tiles, e.g. Xeon Sapphire Rapids), where it makes a step 1.5x faster.
        num_threads: ``torch.set_num_threads`` (None: PyTorch's default, one per core).
        device: None (CUDA if available) or ``"cpu"``, ``"cuda"``, ...
        show_progress: tqdm progress bar.
        record_batches: also write ``batches-rank<r>.jsonl`` with the languages of every batch
            each process trains on (to check that batches stay homogeneous, e.g. under torchrun).
    """

    method: str = "hybrid"
    train_on: str = "mlqa-r"
    model: str = "bundled"
    output_dir: str | None = None
    alpha: float = 0.5
    batch_size: int = 32
    steps: int = 200
    learning_rate: float = 1e-4
    warmup: float = 0.1
    weight_decay: float = 0.01
    seed: int = 42
    scale: float = 20.0
    max_seq_length: int | None = 64
    trainable: str = "cpu-default"
    num_trainable_layers: int = 4
    languages: tuple[str, ...] | None = None
    limit_pairs: int | None = None
    eval_holdout: float = 0.0
    exclude_overlap_with: str | None = "auto"
    lambda_max: float = 0.1
    lambda_schedule: str = "ganin"
    lambda_gamma: float = 10.0
    discriminator_hidden: int = 256
    discriminator_lr: float | None = 1e-3
    save_steps: int = 50
    save_total_limit: int = 1
    keep_checkpoints: bool = False
    resume: bool | str = "auto"
    bf16: bool | str = "auto"
    num_threads: int | None = None
    device: str | None = None
    show_progress: bool = True
    record_batches: bool = False

    def __post_init__(self) -> None:
        if self.method not in METHOD_NAMES:
            raise ValueError(f"unknown method {self.method!r}: choose one of {list(METHOD_NAMES)}")
        if self.trainable not in TRAINABLE:
            raise ValueError(f"unknown trainable={self.trainable!r}: choose one of {list(TRAINABLE)}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")
        if self.steps < 1 and self.method != ZERO_SHOT:
            raise ValueError("steps must be >= 1")
        if self.batch_size < 2:
            raise ValueError("in-batch negatives need batch_size >= 2")
        if not 0.0 <= self.eval_holdout < 1.0:
            raise ValueError("eval_holdout is a fraction of question ids in [0, 1)")
        if self.languages is not None:
            self.languages = tuple(self.languages)
        if self.output_dir is None:
            self.output_dir = str(Path("runs") / f"{self.method}-{Path(str(self.train_on)).name}")
        self.output_dir = str(self.output_dir)

    @property
    def spec(self) -> MethodSpec | None:
        return METHODS.get(self.method)

    @property
    def eval_dataset_name(self) -> str | None:
        """The data set this run is evaluated on zero-shot (None if there is no protocol)."""
        if self.exclude_overlap_with == "auto":
            return PROTOCOLS.get(str(self.train_on))
        return self.exclude_overlap_with

    def to_dict(self) -> dict:
        d = asdict(self)
        d["languages"] = list(self.languages) if self.languages else None
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


# --------------------------------------------------------------------------- data

def _strip_set(texts) -> set[str]:
    return {t.strip() for t in texts if t is not None}


def find_overlap(pairs, eval_dataset: LAReQADataset) -> dict:
    """Which training pairs share a text with ``eval_dataset``.

    A pair overlaps if its question or its answer, after ``strip()``, equals any question
    text or any candidate sentence of ``eval_dataset`` (candidates include every answer
    sentence). Returns ``{"rows": [...], "questions": n, "answers": n, "shared_texts": [...]}``.
    """
    eval_texts = _strip_set(eval_dataset.questions["text"]) | _strip_set(eval_dataset.candidates["sentence"])
    rows, shared = [], set()
    nq = na = 0
    for i, (q, a) in enumerate(zip(pairs["question"], pairs["answer"])):
        q_hit, a_hit = q.strip() in eval_texts, a.strip() in eval_texts
        if q_hit or a_hit:
            rows.append(i)
            nq += q_hit
            na += a_hit
            shared.update(t.strip() for t, hit in ((q, q_hit), (a, a_hit)) if hit)
    return {"rows": rows, "questions": nq, "answers": na, "shared_texts": sorted(shared)}


def remove_overlap(pairs, eval_dataset: LAReQADataset, log=print):
    """Drop the training pairs whose question or answer occurs in ``eval_dataset`` (see :func:`find_overlap`).

    Returns ``(pairs, info)`` with ``info = {"eval_dataset", "removed_pairs", "overlapping_questions",
    "overlapping_answers", "shared_texts" (up to 20)}``.
    """
    found = find_overlap(pairs, eval_dataset)
    info = {"eval_dataset": eval_dataset.name, "removed_pairs": len(found["rows"]),
            "overlapping_questions": found["questions"], "overlapping_answers": found["answers"],
            "shared_texts": found["shared_texts"][:20]}
    if found["rows"]:
        drop = set(found["rows"])
        pairs = pairs.select([i for i in range(len(pairs)) if i not in drop])
    if log:
        log(f"overlap with {eval_dataset.name}: removed {info['removed_pairs']} of "
            f"{len(pairs) + info['removed_pairs']} training pairs")
    return pairs, info


def split_pairs_by_question_id(pairs, holdout_fraction: float, seed: int = 42):
    """Split pairs into (train, held-out) by question id: all translations of a held-out question go out.

    Args:
        pairs: training pairs (``build_training_pairs``).
        holdout_fraction: fraction of the distinct question ids to hold out, in [0, 1).
        seed: for the random choice of ids.

    Returns:
        ``(train_pairs, heldout_pairs)``; no question id occurs in both.
    """
    if not 0.0 <= holdout_fraction < 1.0:
        raise ValueError("holdout_fraction must be in [0, 1)")
    ids = list(dict.fromkeys(pairs["question_id"]))
    n_out = int(round(holdout_fraction * len(ids)))
    if holdout_fraction > 0 and n_out == 0:
        n_out = 1
    rng = random.Random(seed)
    out = set(rng.sample(ids, n_out)) if n_out else set()
    qids = pairs["question_id"]
    train_rows = [i for i, q in enumerate(qids) if q not in out]
    held_rows = [i for i, q in enumerate(qids) if q in out]
    return pairs.select(train_rows), pairs.select(held_rows)


def subset_lareqa(dataset: LAReQADataset, question_ids, pool: str = "paragraphs") -> LAReQADataset:
    """A LAReQA data set restricted to the questions with these ids.

    Args:
        dataset: the full data set.
        question_ids: ids to keep (all their language versions are kept).
        pool: ``"paragraphs"`` keeps only the candidates from the paragraphs of the kept
            questions' answers (small and fast, like ``load_lareqa(limit_questions=...)``);
            ``"all"`` keeps every candidate (the real, harder pool).
    """
    if pool not in ("paragraphs", "all"):
        raise ValueError("pool must be 'paragraphs' or 'all'")
    keep = set(question_ids)
    rows = [i for i, q in enumerate(dataset.questions["id"]) if q in keep]
    if not rows:
        raise ValueError("none of the question ids occurs in the data set")
    questions = dataset.questions.select(rows)
    candidates = dataset.candidates
    if pool == "paragraphs":
        relevant = {cid for ids in questions["relevant_ids"] for cid in ids}
        paragraphs = {p for cid, p in zip(candidates["id"], candidates["paragraph_id"]) if cid in relevant}
        candidates = candidates.select([i for i, p in enumerate(candidates["paragraph_id"]) if p in paragraphs])
    languages = sorted(set(questions["language"]) | set(candidates["language"]))
    return LAReQADataset(name=f"{dataset.name}[{len(keep)} ids]", languages=languages, questions=questions,
                         candidates=candidates, source=dataset.source)


def _limit_by_question_id(pairs, limit: int, seed: int):
    """About ``limit`` pairs: whole question ids (all their language pairs), drawn at random."""
    if limit >= len(pairs):
        return pairs
    rows_of: dict[str, list[int]] = {}
    for i, q in enumerate(pairs["question_id"]):
        rows_of.setdefault(q, []).append(i)
    ids = list(rows_of)
    random.Random(seed).shuffle(ids)
    keep: list[int] = []
    for q in ids:
        if len(keep) >= limit:
            break
        keep.extend(rows_of[q])
    return pairs.select(sorted(keep))


def _as_dataset(name_or_dataset, languages=None) -> LAReQADataset:
    if isinstance(name_or_dataset, LAReQADataset):
        return name_or_dataset
    return load_lareqa(str(name_or_dataset), languages=languages)


def prepare_training_pairs(config: TrainConfig, log=print):
    """The pairs a run trains on, and what was done to them.

    Loads ``config.train_on`` (``config.languages``), builds every (question in X, answer in
    Y) pair, removes the pairs overlapping the evaluation set, holds out ``eval_holdout`` of
    the question ids and limits to ``limit_pairs`` (whole question ids).

    Returns:
        ``(pairs, heldout_pairs, info)``: datasets.Dataset of training pairs, of held-out
        pairs (empty selection if no holdout), and a dict for ``train_config.json``.
    """
    dataset = load_lareqa(str(config.train_on), languages=config.languages)
    pairs = build_training_pairs(dataset)
    info: dict[str, Any] = {"train_dataset": dataset.name, "languages": list(dataset.languages),
                            "pairs_built": len(pairs)}
    eval_name = config.eval_dataset_name
    if eval_name:
        pairs, overlap = remove_overlap(pairs, _as_dataset(eval_name), log=log)
        info["overlap"] = overlap
    else:
        info["overlap"] = None
    heldout = pairs.select([])
    if config.eval_holdout > 0:
        pairs, heldout = split_pairs_by_question_id(pairs, config.eval_holdout, config.seed)
    info["heldout_question_ids"] = sorted(set(heldout["question_id"]))
    if config.limit_pairs:
        pairs = _limit_by_question_id(pairs, config.limit_pairs, config.seed)
    info["pairs"] = len(pairs)
    info["monolingual_pairs"] = int(sum(x == y for x, y in zip(pairs["question_language"], pairs["answer_language"])))
    info["cross_lingual_pairs"] = info["pairs"] - info["monolingual_pairs"]
    return pairs, heldout, info


# --------------------------------------------------------------------------- model

def _layer_index(name: str) -> int | None:
    parts = name.split(".")
    for i, part in enumerate(parts[:-1]):
        if part in ("layer", "layers", "h", "block", "blocks") and parts[i + 1].isdigit():
            return int(parts[i + 1])
    return None


def apply_trainable(model, trainable: str = "cpu-default", num_trainable_layers: int = 4) -> dict:
    """Freeze parts of the model in place, and report what trains.

    * ``"full"``: everything trains;
    * ``"no-embeddings"``: the embedding layer (word, position, token-type embeddings and
      their LayerNorm) is frozen;
    * ``"cpu-default"``: the embedding layer and all but the top ``num_trainable_layers``
      transformer layers are frozen.

    An unused BERT pooler (sentence-transformers pools the token embeddings itself) is always
    frozen: it gets no gradient, which DistributedDataParallel would not accept.

    Returns:
        ``{"trainable_parameters", "total_parameters", "num_layers", "trained_layers"}``.
    """
    if trainable not in TRAINABLE:
        raise ValueError(f"unknown trainable={trainable!r}: choose one of {list(TRAINABLE)}")
    named = list(model.named_parameters())
    layers = sorted({i for n, _ in named if (i := _layer_index(n)) is not None})
    num_layers = (max(layers) + 1) if layers else 0
    if trainable == "cpu-default":
        if not 0 <= num_trainable_layers <= num_layers:
            raise ValueError(f"num_trainable_layers={num_trainable_layers} but the model has {num_layers} layers")
        first_trained = num_layers - num_trainable_layers
    else:
        first_trained = 0
    for name, p in named:
        layer = _layer_index(name)
        if ".pooler." in f".{name}":
            p.requires_grad = False
        elif "embeddings" in name.split(".") or ".embeddings." in f".{name}.":
            p.requires_grad = trainable == "full"
        elif layer is not None:
            p.requires_grad = layer >= first_trained
        else:  # e.g. a final LayerNorm or a Dense head: trained
            p.requires_grad = True
    total = sum(p.numel() for _, p in named)
    n_train = sum(p.numel() for _, p in named if p.requires_grad)
    return {"trainable_parameters": n_train, "total_parameters": total, "num_layers": num_layers,
            "trained_layers": list(range(first_trained, num_layers))}


def _training_prompts(model) -> dict[str, str]:
    """``{"question": <query prompt>, "answer": <passage prompt>}`` from the model's own prompts."""
    prompts = getattr(model, "prompts", None) or {}
    out = {}
    if prompts.get("query"):
        out["question"] = prompts["query"]
    if prompts.get("passage") or prompts.get("document"):
        out["answer"] = prompts.get("passage") or prompts.get("document")
    return out


# --------------------------------------------------------------------------- callbacks / collator

class TrainLogCallback(TrainerCallback):
    """Appends one JSON line per logged step to ``<run>/train_log.jsonl`` (main process only).

    Keys: ``step``, ``epoch``, ``loss``, ``learning_rate``, ``grad_norm``, ``elapsed_s``
    and, when the loss reports them, ``contrastive``, ``adversarial``, ``adversarial_lambda``,
    ``discriminator_accuracy``, ``discriminator_loss`` and ``discriminator_chance``. The
    trainer's end-of-training summary (runtime, samples per second) is kept in ``summary``.
    """

    def __init__(self, path: str | os.PathLike, loss=None) -> None:
        self.path = Path(path)
        self.loss = loss
        self.summary: dict = {}
        self._start = None
        self._offset = 0.0

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
        for key in ("loss", "contrastive", "adversarial", "learning_rate", "grad_norm"):
            if key in logs and logs[key] is not None:
                row[key] = float(logs[key])
        row.update(stats)
        row["elapsed_s"] = round(self._offset + time.perf_counter() - (self._start or time.perf_counter()), 3)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")


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


@dataclass
class BatchRecordingCollator(PairCollator):
    """:class:`~hybrid_utils.samplers.PairCollator` that can also record each batch's languages.

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


# --------------------------------------------------------------------------- the run

@dataclass
class TrainingRun:
    """A configured but not yet started run (see :func:`build_training_run`)."""

    config: TrainConfig
    trainer: Any
    model: Any
    loss: Any
    pairs: Any
    heldout_pairs: Any
    info: dict
    log_callback: TrainLogCallback
    original_max_seq_length: int | None
    checkpoint_dir: Path
    sampler_factory: Any = None


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


def _trainer_class():
    """SentenceTransformerTrainer whose checkpoint reload tolerates a re-created BERT pooler.

    A BERT saved without pooler (like the bundled model) is re-created *with* a freshly
    initialised pooler when a checkpoint folder is loaded, and sentence-transformers'
    strict ``load_state_dict`` then fails on resume with "Unexpected key(s) ... pooler".
    The pooler is unused (mean pooling) and frozen, so those keys are skipped; any other
    mismatch still raises.
    """
    from sentence_transformers import SentenceTransformerTrainer

    class HybridTrainer(SentenceTransformerTrainer):
        def _load_from_checkpoint(self, checkpoint_path, model=None):
            target = getattr(self.model, "_orig_mod", self.model)
            try:
                return super()._load_from_checkpoint(checkpoint_path)
            except RuntimeError as err:
                if "pooler" not in str(err):
                    raise
            loaded = type(target)(str(checkpoint_path), device="cpu", local_files_only=True)
            result = target.load_state_dict(loaded.state_dict(), strict=False)
            unexpected = [k for k in result.unexpected_keys if ".pooler." not in k]
            if result.missing_keys or unexpected:
                raise RuntimeError(f"checkpoint {checkpoint_path} does not match the model: missing "
                                   f"{result.missing_keys}, unexpected {unexpected}")

    return HybridTrainer


def build_training_run(config: TrainConfig, model=None, log=print) -> TrainingRun:
    """Everything :func:`train` sets up, without training: data, model, loss, trainer.

    Useful in notebooks and tests, e.g. to look at the batches of
    ``run.trainer.get_train_dataloader()``. ``model`` may be passed to reuse a loaded
    SentenceTransformer (it is modified in place).
    """
    import torch
    from sentence_transformers import SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from transformers import set_seed

    if config.method == ZERO_SHOT:
        raise ValueError("zero-shot means no training: evaluate the model directly")
    spec = METHODS[config.method]
    if config.num_threads:
        torch.set_num_threads(int(config.num_threads))
    set_seed(config.seed)
    out = Path(config.output_dir)
    checkpoint_dir = out / CHECKPOINT_DIR

    pairs, heldout, info = prepare_training_pairs(config, log=log if _is_main_process() else None)

    if model is None:
        from .encoder import load_encoder
        model = load_encoder(config.model, device=config.device)
    original_max = getattr(model, "max_seq_length", None)
    if config.max_seq_length:
        model.max_seq_length = int(config.max_seq_length)
    info["trainable"] = apply_trainable(model, config.trainable, config.num_trainable_layers)

    base_loss = MultipleNegativesRankingLoss(model, scale=config.scale)
    loss = base_loss
    columns = ["question", "answer", "question_id", "question_language", "answer_language"]
    train_dataset = pairs.select_columns(columns)
    if spec.adversarial:
        from .adversarial import AdversarialLoss, language_label_column

        languages = sorted(set(pairs["question_language"]) | set(pairs["answer_language"]))
        loss = AdversarialLoss(model, base_loss, languages=languages, lambda_max=config.lambda_max,
                               schedule=config.lambda_schedule, total_steps=config.steps,
                               gamma=config.lambda_gamma, hidden_dim=config.discriminator_hidden)
        loss.to(model.device)
        train_dataset = train_dataset.add_column(
            "label", language_label_column(pairs["question_language"], pairs["answer_language"], languages))
        info["adversarial_languages"] = languages

    sampler_kwargs = dict(spec.sampler_kwargs)
    if spec.sampler is HybridBatchSampler:
        sampler_kwargs["alpha"] = config.alpha
    sampler_factory = partial(spec.sampler, **sampler_kwargs)

    learning_rate_mapping = {}
    if spec.adversarial and config.discriminator_lr:
        learning_rate_mapping[r"^discriminator\."] = float(config.discriminator_lr)
    use_cuda = torch.cuda.is_available() and (config.device is None or str(config.device).startswith("cuda"))
    args = SentenceTransformerTrainingArguments(
        output_dir=str(checkpoint_dir),
        max_steps=int(config.steps),
        per_device_train_batch_size=int(config.batch_size),
        learning_rate=float(config.learning_rate),
        warmup_steps=config.warmup,
        weight_decay=float(config.weight_decay),
        lr_scheduler_type="linear",
        seed=int(config.seed),
        data_seed=int(config.seed),
        logging_steps=1,
        logging_strategy="steps",
        save_strategy="steps" if config.save_steps else "no",
        save_steps=int(config.save_steps) if config.save_steps else 500,
        save_total_limit=config.save_total_limit,
        report_to="none",
        disable_tqdm=not config.show_progress,
        dataloader_num_workers=0,
        dataloader_drop_last=True,
        batch_sampler=sampler_factory,
        prompts=_training_prompts(model) or None,
        bf16=_resolve_bf16(config.bf16, use_cuda),
        use_cpu=not use_cuda,
        ddp_find_unused_parameters=False,
        learning_rate_mapping=learning_rate_mapping,
    )
    record_path = None
    if config.record_batches:
        out.mkdir(parents=True, exist_ok=True)
        record_path = str(out / f"batches-rank{int(os.environ.get('RANK', '0'))}.jsonl")
    collator = BatchRecordingCollator(preprocess_fn=model.preprocess, prompts=args.prompts or {},
                                      router_mapping=args.router_mapping or {}, record_path=record_path)

    log_callback = TrainLogCallback(out / LOG_NAME, loss if spec.adversarial else None)
    callbacks = [log_callback]
    if spec.adversarial:
        from .adversarial import AdversarialCallback
        callbacks += [AdversarialCallback(loss), DiscriminatorCheckpointCallback(loss)]
    trainer = _trainer_class()(model=model, args=args, train_dataset=train_dataset, loss=loss,
                                         data_collator=collator, callbacks=callbacks)
    return TrainingRun(config=config, trainer=trainer, model=model, loss=loss, pairs=pairs, heldout_pairs=heldout,
                       info=info, log_callback=log_callback, original_max_seq_length=original_max,
                       checkpoint_dir=checkpoint_dir, sampler_factory=sampler_factory)


def _resolve_bf16(setting, use_cuda: bool) -> bool:
    """``"auto"``: bf16 where the hardware has native bf16 matrix units (CUDA bf16, CPU AMX)."""
    import torch

    if setting != "auto":
        return bool(setting) and str(setting).lower() not in ("false", "0", "no", "off")
    if use_cuda:
        return bool(torch.cuda.is_bf16_supported())
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    try:
        return bool(amx and amx())
    except Exception:  # noqa: BLE001 - unknown platform: stay in fp32
        return False


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


def _save_zero_shot(config: TrainConfig, log=print) -> Path:
    from .encoder import load_encoder

    out = Path(config.output_dir)
    model = load_encoder(config.model, device="cpu")
    if _is_main_process():
        out.mkdir(parents=True, exist_ok=True)
        model.save(str(out))
        _write_json(out / CONFIG_NAME, {**config.to_dict(), "summary": {"global_step": 0, "note": "untrained"},
                                        "versions": _versions()})
    log(f"zero-shot: saved the untrained model to {out}")
    return out


def train(config: TrainConfig | None = None, log=print, model=None, **overrides) -> Path:
    """Fine-tune a retriever and save it; returns the run folder (``config.output_dir``).

    Args:
        config: a :class:`TrainConfig` (keyword ``overrides`` change single fields, or build
            one: ``train(method="hybrid", train_on="mlqa-r", steps=50)``).
        log: where progress messages go (None: silent).
        model: optionally an already loaded SentenceTransformer to train (modified in place).

    The folder then holds the model (``load_encoder(path)``), ``train_log.jsonl``,
    ``train_config.json`` (config + summary, written last) and, if kept, ``checkpoints/``.
    An existing checkpoint in ``<output_dir>/checkpoints`` is resumed (``config.resume``).
    """
    import torch

    if config is None:
        config = TrainConfig(**overrides)
    elif overrides:
        config = TrainConfig.from_dict({**config.to_dict(), **overrides})
    log = log or (lambda *a, **k: None)
    if config.method == ZERO_SHOT:
        return _save_zero_shot(config, log)
    out = Path(config.output_dir)
    checkpoint_dir = out / CHECKPOINT_DIR
    main = _is_main_process()

    resume_from = None
    if config.resume in (True, "auto"):
        resume_from = _last_checkpoint(checkpoint_dir)
    elif main and checkpoint_dir.exists():
        shutil.rmtree(checkpoint_dir)
    if main:
        out.mkdir(parents=True, exist_ok=True)
        if resume_from:
            step = _checkpoint_step(resume_from)
            dropped = _truncate_log(out / LOG_NAME, step)
            log(f"resuming from {resume_from} (step {step}; {dropped} later log lines dropped)")
        elif (out / LOG_NAME).exists():
            (out / LOG_NAME).unlink()
        for stale in out.glob("batches-rank*.jsonl"):
            if not resume_from:
                stale.unlink()

    run = build_training_run(config, model=model, log=log)
    if resume_from and METHODS[config.method].adversarial and (Path(resume_from) / DISCRIMINATOR_NAME).exists():
        state = torch.load(Path(resume_from) / DISCRIMINATOR_NAME, map_location=run.model.device)
        run.loss.discriminator.load_state_dict(state)

    if main:
        log(f"training {config.method} on {config.train_on}: {run.info['pairs']} pairs "
            f"({run.info['monolingual_pairs']} monolingual), {config.steps} steps of {config.batch_size}, "
            f"lr {config.learning_rate:g}, trainable {config.trainable} "
            f"({run.info['trainable']['trainable_parameters'] / 1e6:.1f}M of "
            f"{run.info['trainable']['total_parameters'] / 1e6:.1f}M parameters) -> {out}")
        if config.eval_holdout > 0:
            _write_json(out / HELDOUT_NAME, {"train_on": str(config.train_on), "seed": config.seed,
                                            "question_ids": run.info["heldout_question_ids"]})
    start = time.perf_counter()
    output = run.trainer.train(resume_from_checkpoint=resume_from)
    seconds = time.perf_counter() - start

    if run.trainer.is_world_process_zero():
        if run.original_max_seq_length:
            run.model.max_seq_length = run.original_max_seq_length
        run.model.save(str(out))
        if METHODS[config.method].adversarial:
            torch.save(run.loss.discriminator.state_dict(), out / DISCRIMINATOR_NAME)
        steps_done = int(run.trainer.state.global_step)
        world = int(os.environ.get("WORLD_SIZE", "1"))
        summary = {
            "global_step": steps_done,
            "resumed_from": resume_from,
            "seconds": round(seconds, 2),
            "train_loss": float(getattr(output, "training_loss", float("nan"))),
            "pairs_per_second": round(run.log_callback.summary.get("train_samples_per_second", float("nan")), 2)
            if run.log_callback.summary else None,
            "world_size": world,
            "device": str(run.model.device),
            "torch_threads": torch.get_num_threads(),
            "bf16": bool(run.trainer.args.bf16),
        }
        info = {k: v for k, v in run.info.items() if k != "heldout_question_ids"}
        info["heldout_question_ids"] = len(run.info["heldout_question_ids"])
        _write_json(out / CONFIG_NAME, {**config.to_dict(), "data": info, "summary": summary,
                                        "versions": _versions()})
        if not config.keep_checkpoints and checkpoint_dir.exists():
            shutil.rmtree(checkpoint_dir, ignore_errors=True)
        log(f"saved {out} (step {steps_done}, {seconds:.0f} s)")
    return out


# --------------------------------------------------------------------------- reading runs

def load_train_log(run_dir: str | os.PathLike):
    """The step log of a run as a :class:`pandas.DataFrame` (one row per optimizer step).

    Columns: ``step``, ``epoch``, ``loss``, ``learning_rate``, ``grad_norm``, ``elapsed_s``,
    and for the adversarial methods ``contrastive``, ``adversarial``, ``adversarial_lambda``,
    ``discriminator_accuracy``, ``discriminator_loss``, ``discriminator_chance``.
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


# --------------------------------------------------------------------------- command line

def add_train_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``train`` options to ``parser`` (used by ``python -m hybrid_utils train`` and this module)."""
    d = TrainConfig()
    parser.add_argument("--method", choices=list(METHOD_NAMES), default=d.method, help="batching method (default %(default)s)")
    parser.add_argument("--train-on", default=d.train_on,
                        help="mlqa-r, xquad-r or a folder of LAReQA files (default %(default)s)")
    parser.add_argument("--model", default=d.model, help="'bundled', a local folder or a Hub name (default %(default)s)")
    parser.add_argument("--output", "--output-dir", dest="output_dir", default=None,
                        help="run folder (default runs/<method>-<train-on>)")
    parser.add_argument("--alpha", type=float, default=d.alpha, help="P(monolingual batch) for hybrid (default %(default)s)")
    parser.add_argument("--batch-size", type=int, default=d.batch_size, help="pairs per batch and process (default %(default)s)")
    parser.add_argument("--steps", type=int, default=d.steps, help="optimizer steps (default %(default)s)")
    parser.add_argument("--lr", "--learning-rate", dest="learning_rate", type=float, default=None,
                        help=f"learning rate (default {d.learning_rate:g}; the paper's is {PAPER_LEARNING_RATE:g})")
    parser.add_argument("--warmup", type=float, default=d.warmup, help="warm-up: fraction (<1) or steps (default %(default)s)")
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--scale", type=float, default=d.scale, help="InfoNCE scale = 1/temperature (default %(default)s)")
    parser.add_argument("--max-seq-length", type=int, default=None,
                        help=f"truncation while training (default {d.max_seq_length})")
    parser.add_argument("--trainable", choices=list(TRAINABLE), default=None,
                        help=f"what is fine-tuned (default {d.trainable})")
    parser.add_argument("--num-trainable-layers", type=int, default=d.num_trainable_layers,
                        help="top layers trained with --trainable cpu-default (default %(default)s)")
    parser.add_argument("--paper", action="store_true",
                        help=f"the paper's settings: lr {PAPER_LEARNING_RATE:g}, batch {PAPER_BATCH_SIZE}, "
                             "full fine-tuning, max-seq-length 128 (explicit flags still win)")
    parser.add_argument("--languages", nargs="+", default=None, help="training languages (default: all)")
    parser.add_argument("--limit-pairs", type=int, default=None, help="about this many pairs, for quick runs")
    parser.add_argument("--eval-holdout", type=float, default=d.eval_holdout,
                        help="fraction of question ids held out of training (default %(default)s)")
    parser.add_argument("--exclude-overlap-with", default=d.exclude_overlap_with,
                        help="drop pairs overlapping this data set: auto (the protocol's evaluation set), "
                             "a name/folder, or none (default %(default)s)")
    parser.add_argument("--lambda-max", type=float, default=d.lambda_max, help="adversarial: final GRL lambda")
    parser.add_argument("--lambda-schedule", choices=["ganin", "constant", "linear"], default=d.lambda_schedule)
    parser.add_argument("--discriminator-lr", type=float, default=d.discriminator_lr)
    parser.add_argument("--save-steps", type=int, default=d.save_steps, help="checkpoint every N steps (default %(default)s)")
    parser.add_argument("--keep-checkpoints", action="store_true", help="keep checkpoints/ after a finished run")
    parser.add_argument("--no-resume", action="store_true", help="start from scratch even if a checkpoint exists")
    parser.add_argument("--bf16", choices=["auto", "on", "off"], default="auto",
                        help="bfloat16 autocast; auto = on for CUDA bf16 GPUs and CPUs with AMX (default %(default)s)")
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
        alpha=args.alpha,
        batch_size=args.batch_size if not (paper and args.batch_size == d.batch_size) else PAPER_BATCH_SIZE,
        steps=args.steps,
        learning_rate=args.learning_rate if args.learning_rate is not None else (
            PAPER_LEARNING_RATE if paper else d.learning_rate),
        warmup=args.warmup, seed=args.seed, scale=args.scale,
        max_seq_length=args.max_seq_length if args.max_seq_length is not None else (128 if paper else d.max_seq_length),
        trainable=args.trainable or ("full" if paper else d.trainable),
        num_trainable_layers=args.num_trainable_layers,
        languages=tuple(args.languages) if args.languages else None, limit_pairs=args.limit_pairs,
        eval_holdout=args.eval_holdout, exclude_overlap_with=exclude,
        lambda_max=args.lambda_max, lambda_schedule=args.lambda_schedule, discriminator_lr=args.discriminator_lr,
        save_steps=args.save_steps, keep_checkpoints=args.keep_checkpoints,
        resume=not args.no_resume and "auto", bf16={"on": True, "off": False}.get(args.bf16, "auto"), num_threads=args.num_threads, device=args.device,
        show_progress=not args.no_progress, record_batches=args.record_batches,
    )


def run_train_command(args: argparse.Namespace) -> int:
    """Run ``train`` from parsed :func:`add_train_arguments` options; returns an exit code."""
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
        prog="python -m hybrid_utils.training",
        description="Fine-tune a multilingual retriever with monolingual, cross-lingual, hybrid or adversarial "
                    "batches (also under torchrun / accelerate launch).")
    add_train_arguments(parser)
    return run_train_command(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
