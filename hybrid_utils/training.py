"""Fine-tuning a multilingual retriever with monolingual, cross-lingual, hybrid or adversarial batches.

This module freezes the model, assembles the trainer and runs it (:func:`train`).

One function, :func:`train`, runs every method of the study on top of
sentence-transformers' :class:`~sentence_transformers.SentenceTransformerTrainer`:

(the methods and their batches: the table in :mod:`hybrid_utils.config`).

The loss is InfoNCE with in-batch negatives
(:class:`~hybrid_utils.losses.ContrastiveLoss`, sentence-transformers' ``MultipleNegativesRankingLoss``, ``scale`` =
1 / temperature, 50 by default as in the ``cpu`` profile, see :mod:`hybrid_utils.profiles`;
sentence-transformers' own default is 20); the adversarial methods add a language
discriminator behind a gradient reversal layer (:mod:`hybrid_utils.adversarial`).
Questions are encoded with the model's ``"query"`` prompt and answers with its
``"passage"`` prompt, exactly as at evaluation time.

Zero-shot protocols (as in the paper): train on MLQA-R and evaluate on XQuAD-R, or the
reverse; the training pairs that overlap the evaluation set are dropped by default
(``exclude_overlap_with="auto"``, see :func:`hybrid_utils.pairs.remove_overlap`).

CPU defaults (the ``cpu`` profile's, :mod:`hybrid_utils.profiles`, which also records how steps,
learning rate and scale were chosen on held-out training questions): the paper fine-tunes everything
at ``lr=3e-5`` with batches of 100 on GPUs for thousands of steps. On two CPU cores we can afford a
few hundred steps, so by default

* the word-embedding matrix (250k x 384 = 96M of the model's 118M parameters) is frozen:
  its gradient and its two Adam moments would cost ~1.2 GB of memory traffic every step
  for rows that a batch hardly touches;
* so are the lower ``12 - num_trainable_layers`` transformer layers, kept in eval mode (no
  dropout): their output is then a fixed function of the text, computed once per distinct
  text and reused by every step (:mod:`hybrid_utils.plumbing.training_cache`), and back-propagation
  stops at the first trainable layer;
* ``learning_rate=3e-5, trainable="full", batch_size=100`` (``--paper`` on the command line)
  restores the paper's settings;
* ``max_seq_length=64`` during training: questions are 18-21 tokens on average (at most 52
  on MLQA-R and 84 on XQuAD-R with the ``query:`` prompt), answer sentences 40-46 (10% of
  MLQA-R and 17% of XQuAD-R sentences are longer than 64 tokens and get truncated while
  training). The saved model keeps the model's own limit (512) for evaluation;
* bfloat16 autocast where the hardware multiplies bf16 natively (``bf16="auto"``: CUDA
  GPUs with bf16, CPUs with AMX such as Xeon Sapphire Rapids): about 1.5x less CPU time per
  step than fp32. Weights and Adam state stay fp32. On a CUDA GPU without bf16 (Colab's T4)
  fp16 mixed precision with loss scaling instead. Elsewhere (AVX2 laptops, Colab's CPU) fp32.

Everything is one flag away: ``trainable="full"`` / ``"no-embeddings"``, any learning
rate, sequence length or number of layers. A GPU is used automatically when present.

Runs are resumable (checkpoints in ``<output_dir>/checkpoints``, ``resume="auto"``); the run
folder and its files (model, ``train_log.jsonl``, ``train_config.json``) are described in
:mod:`hybrid_utils.runs`.

Where the rest lives: the configuration in :mod:`hybrid_utils.config`, overlap removal, held-out
splits and pair preparation in :mod:`hybrid_utils.data`, run folders and resume in
:mod:`hybrid_utils.runs`, the step log and checkpoint callbacks in :mod:`hybrid_utils.callbacks`
and the command line in :mod:`hybrid_utils.study.cli_train` (it runs under ``torchrun`` / ``accelerate
launch`` too, see ``docs/distributed.md``)::

    python -m hybrid_utils train --method hybrid --train-on mlqa-r --output runs/hybrid-mlqa-r
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Sequence

from .callbacks import (
    BatchRecordingCollator, DiscriminatorCheckpointCallback, NoFinalCheckpointCallback, TrainLogCallback,
    use_single_progress_bar,
)
from .config import (
    CHECKPOINT_DIR, CONFIG_NAME, DISCRIMINATOR_NAME, HELDOUT_NAME, LOG_NAME, METHODS, ZERO_SHOT, TrainConfig,
)
from .pairs import prepare_training_pairs
from .runs import _checkpoint_step, _is_main_process, _last_checkpoint, _truncate_log, _versions, _write_json
from .samplers import HybridBatchSampler
from .trainable import apply_trainable, reinitialise_top_layers


def _training_prompts(model) -> dict[str, str]:
    """``{"question": <query prompt>, "answer": <passage prompt>}`` from the model's own prompts."""
    prompts = getattr(model, "prompts", None) or {}
    out = {}
    if prompts.get("query"):
        out["question"] = prompts["query"]
    if prompts.get("passage") or prompts.get("document"):
        out["answer"] = prompts.get("passage") or prompts.get("document")
    return out



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
    prefix_cache: Any = None

    def attached(self):
        """Context in which the model trains on cached frozen layers (a no-op without a cache)."""
        return self.prefix_cache.attached() if self.prefix_cache is not None else contextlib.nullcontext()



def _trainer_class():
    """SentenceTransformerTrainer whose checkpoint reload tolerates a re-created BERT pooler (and draws no model-card bar).

    A BERT saved without pooler (like the bundled model) is re-created *with* a freshly
    initialised pooler when a checkpoint folder is loaded, and sentence-transformers'
    strict ``load_state_dict`` then fails on resume with "Unexpected key(s) ... pooler".
    The pooler is unused (mean pooling) and frozen, so those keys are skipped; any other
    mismatch still raises.
    """
    from sentence_transformers import SentenceTransformerTrainer

    class HybridTrainer(SentenceTransformerTrainer):
        def add_model_card_callback(self, default_args_dict):
            # The model-card callback samples Hub "widget examples" under a tqdm bar ("Computing widget examples")
            # each time a trainer is built; the examples still go into the card, only the bar stays off screen.
            try:
                from sentence_transformers.base import model_card
            except ImportError:  # another sentence-transformers layout: keep its bar
                return super().add_model_card_callback(default_args_dict)
            bar = getattr(model_card, "tqdm", None)
            if bar is None:
                return super().add_model_card_callback(default_args_dict)
            model_card.tqdm = partial(bar, disable=True)
            try:
                return super().add_model_card_callback(default_args_dict)
            finally:
                model_card.tqdm = bar

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
    if config.reinit_top_layers:
        info["reinitialised_layers"] = reinitialise_top_layers(model, config.reinit_top_layers, config.seed)
    info["trainable"] = apply_trainable(model, config.trainable, config.num_trainable_layers)

    prefix_cache = _prefix_cache(model, config, info["trainable"])
    info["prefix_cache"] = prefix_cache is not None

    loss, train_dataset = _loss_and_dataset(model, pairs, config, spec.adversarial, info)

    sampler_kwargs = dict(spec.sampler_kwargs, language_weights=config.language_weights)
    if spec.sampler is HybridBatchSampler:
        sampler_kwargs["alpha"] = config.alpha
    sampler_factory = partial(spec.sampler, **sampler_kwargs)

    args = _training_arguments(config, spec.adversarial, model, sampler_factory, checkpoint_dir)
    record_path = None
    if config.record_batches:
        out.mkdir(parents=True, exist_ok=True)
        record_path = str(out / f"batches-rank{int(os.environ.get('RANK', '0'))}.jsonl")
    collator = BatchRecordingCollator(preprocess_fn=model.preprocess, prompts=args.prompts or {},
                                      router_mapping=args.router_mapping or {}, record_path=record_path)

    log_callback = TrainLogCallback(out / LOG_NAME, loss if spec.adversarial else None)
    callbacks = [log_callback] + ([] if config.keep_checkpoints else [NoFinalCheckpointCallback()])
    if spec.adversarial:
        from .adversarial import AdversarialCallback
        callbacks += [AdversarialCallback(loss), DiscriminatorCheckpointCallback(loss)]
        callbacks += _prepare_discriminator(loss, model, pairs, heldout, config, info, prefix_cache)
    trainer = _trainer_class()(model=model, args=args, train_dataset=train_dataset, loss=loss,
                                         data_collator=collator, callbacks=callbacks)
    log_callback.trainer = trainer  # reads the learning rates from the optimizer's parameter groups
    # every step is in train_log.jsonl: the screen gets one bar, not a printed dict per step
    use_single_progress_bar(trainer, show_progress=config.show_progress, description=f"training {config.method}")
    return TrainingRun(config=config, trainer=trainer, model=model, loss=loss, pairs=pairs, heldout_pairs=heldout,
                       info=info, log_callback=log_callback, original_max_seq_length=original_max,
                       checkpoint_dir=checkpoint_dir, sampler_factory=sampler_factory, prefix_cache=prefix_cache)


def _loss_and_dataset(model, pairs, config: TrainConfig, adversarial: bool, info: dict):
    """The run's loss and the columns it trains on: :class:`~hybrid_utils.losses.ContrastiveLoss`, wrapped in an
    :class:`~hybrid_utils.losses.AdversarialLoss` (and a ``label`` column of languages) for the adversarial methods."""
    from .losses import ContrastiveLoss

    base_loss = ContrastiveLoss(model, scale=config.scale)
    columns = ["question", "answer", "question_id", "question_language", "answer_language"]
    train_dataset = pairs.select_columns(columns)
    if not adversarial:
        return base_loss, train_dataset
    from .adversarial import language_label_column
    from .losses import AdversarialLoss

    languages = sorted(set(pairs["question_language"][:]) | set(pairs["answer_language"][:]))
    loss = AdversarialLoss(model, base_loss, languages=languages, lambda_max=config.lambda_max,
                           schedule=config.lambda_schedule, total_steps=config.steps,
                           gamma=config.lambda_gamma, hidden_dim=config.discriminator_hidden,
                           queue_size=config.discriminator_queue, lambda_warmup=config.lambda_warmup,
                           adversary=config.adversary)
    loss.to(model.device)
    train_dataset = train_dataset.add_column(
        "label", language_label_column(pairs["question_language"][:], pairs["answer_language"][:], languages))
    info["adversarial_languages"] = languages
    return loss, train_dataset


def _training_arguments(config: TrainConfig, adversarial: bool, model, sampler_factory, checkpoint_dir: Path):
    """The trainer's arguments for ``config``: steps, rates, precision, checkpoints, and the batch sampler."""
    import torch
    from sentence_transformers import SentenceTransformerTrainingArguments

    learning_rate_mapping = {}
    if adversarial and config.discriminator_lr:
        learning_rate_mapping[r"^discriminator\."] = float(config.discriminator_lr)
    use_cuda = torch.cuda.is_available() and (config.device is None or str(config.device).startswith("cuda"))
    return SentenceTransformerTrainingArguments(
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
        fp16=_resolve_fp16(config.bf16, use_cuda),
        use_cpu=not use_cuda,
        ddp_find_unused_parameters=False,
        learning_rate_mapping=learning_rate_mapping,
    )


def _prefix_cache(model, config: TrainConfig, trainable: dict):
    """A :class:`~hybrid_utils.plumbing.training_cache.TrainingPrefixCache` when the run can use one, else None."""
    if not config.prefix_cache or config.trainable != "cpu-default" or int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return None
    from .plumbing.training_cache import TrainingPrefixCache

    frozen = trainable["num_layers"] - config.num_trainable_layers
    if frozen < 1:
        return None
    try:
        return TrainingPrefixCache(model, num_frozen_layers=frozen)
    except ValueError:  # not a Transformer -> mean Pooling model: train the plain way
        return None


def _language_sample(pairs, languages: Sequence[str], per_language: int, seed: int) -> tuple[list, list, list]:
    """Up to ``per_language`` distinct questions and answers per language: (texts, prompt names, language ids)."""
    rng = random.Random(seed)
    index = {lang: i for i, lang in enumerate(languages)}
    texts, prompts, labels = [], [], []
    for column, language_column, prompt in (("question", "question_language", "query"),
                                            ("answer", "answer_language", "passage")):
        by_language: dict[str, list[str]] = {}
        for text, lang in zip(pairs[column], pairs[language_column]):
            by_language.setdefault(lang, []).append(text)
        for lang in languages:
            distinct = list(dict.fromkeys(by_language.get(lang, [])))
            for text in rng.sample(distinct, min(per_language, len(distinct))):
                texts.append(text)
                prompts.append(prompt)
                labels.append(index[lang])
    return texts, prompts, labels


def _prepare_discriminator(loss, model, pairs, heldout, config: TrainConfig, info: dict, prefix_cache) -> list:
    """Warm-start the discriminator on a mixed-language sample; a callback for its held-out accuracy."""
    import torch

    from .adversarial import HeldoutDiscriminatorCallback

    callbacks = []
    context = prefix_cache.attached() if prefix_cache is not None else contextlib.nullcontext()
    if config.discriminator_warm_start > 0:
        texts, prompts, labels = _language_sample(pairs, loss.languages, config.discriminator_sample, config.seed)
        with context, torch.no_grad():
            parts = [model.encode([t for t, p in zip(texts, prompts) if p == name], prompt_name=name,
                                  convert_to_tensor=True, show_progress_bar=False, batch_size=64)
                     for name in ("query", "passage")]
        ordered = [lab for name in ("query", "passage") for lab, p in zip(labels, prompts) if p == name]
        warm = loss.warm_start(torch.cat(parts), torch.tensor(ordered), steps=config.discriminator_warm_start,
                               lr=config.discriminator_lr or config.learning_rate, seed=config.seed)
        info["discriminator_warm_start"] = {k: round(v, 4) for k, v in warm.items()}
    if config.discriminator_heldout_every > 0 and len(heldout):
        texts, prompts, labels = _language_sample(heldout, loss.languages, 16, 0)
        answers = [(t, lab) for t, p, lab in zip(texts, prompts, labels) if p == "passage"]
        if answers:
            callbacks.append(HeldoutDiscriminatorCallback(loss, model, [t for t, _ in answers],
                                                          [lab for _, lab in answers], prompt_name="passage",
                                                          every=config.discriminator_heldout_every))
            info["discriminator_heldout_texts"] = len(answers)
    return callbacks


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



def _resolve_fp16(setting, use_cuda: bool) -> bool:
    """fp16 mixed precision for ``bf16="auto"`` on a CUDA GPU without bf16 (e.g. a T4); never on CPU."""
    import torch

    return setting == "auto" and use_cuda and not torch.cuda.is_bf16_supported()


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
    with run.attached():
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
            "fp16": bool(run.trainer.args.fp16),
            "prefix_cache": run.prefix_cache.stats if run.prefix_cache is not None else None,
        }
        info = {k: v for k, v in run.info.items() if k != "heldout_question_ids"}
        info["heldout_question_ids"] = len(run.info["heldout_question_ids"])
        _write_json(out / CONFIG_NAME, {**config.to_dict(), "data": info, "summary": summary,
                                        "versions": _versions()})
        if not config.keep_checkpoints and checkpoint_dir.exists():
            shutil.rmtree(checkpoint_dir, ignore_errors=True)
        log(f"saved {out} (step {steps_done}, {seconds:.0f} s)")
    return out
