"""The configuration of a training run: methods, protocols, file names and :class:`TrainConfig`.

One source of defaults: a profile builds its runs (:meth:`TrainConfig.from_profile`, from
:meth:`hybrid_utils.profiles.Profile.train_settings`), and the fields a profile sets
(:data:`hybrid_utils.profiles.RUN_FIELDS`) left at ``None`` take the ``cpu`` profile's values
(:data:`~hybrid_utils.profiles.DEFAULT_PROFILE`) through the same mapping, for the training set ``train_on``
and the method, when the config is made. So ``TrainConfig()`` and ``python -m hybrid_utils train`` (whose
options are this class's fields, :mod:`hybrid_utils.study.cli_train`) train exactly the model of the cpu
profile, and no other module holds a copy of its numbers. The seed defaults to
:data:`~hybrid_utils.profiles.DEFAULT_SEED`, a profile's first seed.

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
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, NamedTuple

from .profiles import (DEFAULT_PROFILE, DEFAULT_SEED, PAPER_BATCH_SIZE, PAPER_LEARNING_RATE, PROFILES, RUN_FIELDS,
                       Profile, get_profile)
from .samplers import CrossLingualBatchSampler, HybridBatchSampler, MonolingualBatchSampler
from .batch_groups import check_language_weights

__all__ = [
    "METHODS", "ZERO_SHOT", "METHOD_NAMES", "PROTOCOLS", "TRAINABLE", "PAPER_LEARNING_RATE", "PAPER_BATCH_SIZE",
    "LOG_NAME", "CONFIG_NAME", "HELDOUT_NAME", "CHECKPOINT_DIR", "DISCRIMINATOR_NAME", "MethodSpec", "TrainConfig",
]

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
                              "monolingual batches + a language discriminator (gradient reversal or confusion)"),
    "hybrid-adversarial": MethodSpec(HybridBatchSampler, {}, True,
                                     "hybrid batches + a language discriminator (gradient reversal or confusion)"),
}
#: every method name, ``zero-shot`` (no training) first
METHOD_NAMES = (ZERO_SHOT, *METHODS)


#: seed of the split of training question ids into training and held-out (validation) ids: fixed, so that
#: every method and seed of a study holds out the same questions and tuning sees the same validation set
HOLDOUT_SEED = 0


@dataclass
class TrainConfig:
    """Everything a training run depends on (saved as ``train_config.json``).

    A field that a profile sets (:data:`hybrid_utils.profiles.RUN_FIELDS`: ``model``, ``alpha``,
    ``language_weights``, ``batch_size``, ``trainable``, ``max_seq_length``, ``limit_pairs``, ``eval_holdout``,
    ``lambda_max``, ``steps``, ``learning_rate``, ``scale``, ``num_trainable_layers``, ``reinit_top_layers``)
    left at ``None`` takes the ``cpu`` profile's value for the training set ``train_on`` and the method
    (:meth:`hybrid_utils.profiles.Profile.train_settings`); :meth:`from_profile` builds any profile's run.
    For ``max_seq_length`` and ``limit_pairs``, 0 means none (the model's own limit, every pair).

    Attributes:
        method: one of :data:`METHOD_NAMES`.
        train_on: ``"mlqa-r"``, ``"xquad-r"`` or a folder of LAReQA files.
        model: ``"bundled"`` (offline multilingual-e5-small, the cpu profile's), a local folder or a Hub name.
        output_dir: run folder (default ``runs/<method>-<train_on>``).
        alpha: probability of a monolingual batch (hybrid methods only).
        language_weights: how a batch's language (pair) is drawn within its kind: ``"size"``
            (in proportion to its number of pairs) or ``"uniform"`` (every language, or language
            pair, equally likely; the paper's method section). See :mod:`hybrid_utils.samplers`.
        batch_size: pairs per batch (per process). The paper uses 100.
        steps: optimizer steps (``max_steps``).
        learning_rate: the profile's for the training set (see :mod:`hybrid_utils.profiles`); the paper's is 3e-5.
        warmup: linear warm-up, a fraction of ``steps`` if < 1, else a number of steps.
        weight_decay: AdamW weight decay.
        seed: seeds the model's trainable init (discriminator, re-initialised layers), batches, dropout (default
            :data:`~hybrid_utils.profiles.DEFAULT_SEED`; the held-out split has its own, :data:`HOLDOUT_SEED`).
        scale: similarity scale of the InfoNCE loss (1 / temperature).
        max_seq_length: truncation while training (the saved model keeps its own limit).
        trainable: ``"cpu-default"`` (top ``num_trainable_layers`` layers), ``"full"`` or
            ``"no-embeddings"`` (everything but the embedding layer).
        num_trainable_layers: transformer layers trained with ``"cpu-default"``.
        reinit_top_layers: re-initialise the top N transformer layers before training (their weights drawn
            afresh, seeded by ``seed``), so the model must learn retrieval from the batches, as a masked
            language model such as XLM-R must; the positive control of the study (``hybrid_utils.study.positive_control``).
            At most ``num_trainable_layers`` with ``trainable="cpu-default"``. ``None``: the cpu profile's value
            for its own model and ``trainable`` (at most ``num_trainable_layers``), 0 for any other model or
            ``trainable`` (a Hub model such as XLM-R is trained from its own start, as in the paper).
        languages: training languages (default: all of ``train_on``).
        limit_pairs: keep about this many pairs (whole question ids, drawn at random), for quick runs.
        eval_holdout: fraction of question ids held out of training (ids saved in
            ``heldout_question_ids.json``), to evaluate in-domain on unseen questions.
        exclude_overlap_with: ``"auto"`` (the evaluation set of the protocol: XQuAD-R for
            MLQA-R and vice versa), a data set name / folder, or ``None`` to keep every pair.
        lambda_max, lambda_schedule, lambda_gamma: gradient-reversal strength and its ramp
            (``"ganin"``, ``"constant"``, ``"linear"``), adversarial methods only.
        lambda_warmup: fraction of the steps at the start during which lambda stays 0 (the
            discriminator learns, the encoder is not pushed yet).
        adversary: ``"reversal"`` (gradient reversal) or ``"confusion"`` (the encoder is pushed towards a
            uniform language prediction), see :class:`hybrid_utils.losses.AdversarialLoss` (None: the profile's).
        discriminator_hidden: hidden units of the language discriminator.
        discriminator_lr: learning rate of the discriminator (None: ``learning_rate``).
        discriminator_queue: embeddings of earlier batches the discriminator also classifies,
            so that it sees several languages per step even with monolingual batches.
        discriminator_warm_start: discriminator-only steps on a mixed-language sample before training.
        discriminator_sample: texts per language and side (questions, answers) in that sample.
        discriminator_heldout_every: log the discriminator's accuracy on held-out texts every N steps, and at
            every step of the first and last tenth of training (needs ``eval_holdout > 0``; 0: never; see
            :class:`~hybrid_utils.adversarial.HeldoutDiscriminatorCallback`). It only writes the log: the trained
            weights are the same for every N.
        prefix_cache: with ``trainable="cpu-default"`` on one process, compute the frozen lower
            layers once per distinct text and train only the top layers
            (:class:`~hybrid_utils.plumbing.training_cache.TrainingPrefixCache`); same loss and gradients.
        save_steps: checkpoint every N steps (0: only at the end).
        save_total_limit: checkpoints kept while training.
        keep_checkpoints: keep ``<output_dir>/checkpoints`` after a successful run (needed to
            continue a finished run with more steps).
        resume: ``"auto"`` / True (continue from the last checkpoint if there is one) or False
            (start from scratch, deleting old checkpoints and log).
        bf16: bfloat16 autocast (weights and optimizer stay fp32). ``"auto"`` (default): on
            when the device runs bf16 matrix products natively (a CUDA GPU with bf16, or a CPU
            with AMX tiles, e.g. Xeon Sapphire Rapids), where it makes a step 1.5x faster; on a
            CUDA GPU without bf16 (e.g. Colab's T4) ``"auto"`` trains in fp16 mixed precision
            instead (with loss scaling); elsewhere fp32. ``False``: fp32 everywhere.
        num_threads: ``torch.set_num_threads`` (None: PyTorch's default, one per core).
        device: None (CUDA if available) or ``"cpu"``, ``"cuda"``, ...
        show_progress: tqdm progress bar.
        record_batches: also write ``batches-rank<r>.jsonl`` with the languages of every batch
            each process trains on (to check that batches stay homogeneous, e.g. under torchrun).
    """

    method: str = "hybrid"
    train_on: str = "mlqa-r"
    model: str | None = None
    output_dir: str | None = None
    alpha: float | None = None
    language_weights: str | None = None
    batch_size: int | None = None
    steps: int | None = None
    learning_rate: float | None = None
    warmup: float = 0.1
    weight_decay: float = 0.01
    seed: int = DEFAULT_SEED
    scale: float | None = None
    max_seq_length: int | None = None
    trainable: str | None = None
    num_trainable_layers: int | None = None
    reinit_top_layers: int | None = None
    languages: tuple[str, ...] | None = None
    limit_pairs: int | None = None
    eval_holdout: float | None = None
    exclude_overlap_with: str | None = "auto"
    lambda_max: float | None = None
    lambda_schedule: str = "ganin"
    lambda_gamma: float = 10.0
    lambda_warmup: float = 0.1
    adversary: str | None = None
    discriminator_hidden: int = 256
    discriminator_lr: float | None = 1e-3
    discriminator_queue: int = 1024
    discriminator_warm_start: int = 200
    discriminator_sample: int | None = None
    discriminator_heldout_every: int = 10
    prefix_cache: bool = True
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
        self._fill_profile_defaults()
        if self.method not in METHOD_NAMES:
            raise ValueError(f"unknown method {self.method!r}: choose one of {list(METHOD_NAMES)}")
        if self.trainable not in TRAINABLE:
            raise ValueError(f"unknown trainable={self.trainable!r}: choose one of {list(TRAINABLE)}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")
        check_language_weights(self.language_weights)
        if self.steps < 1 and self.method != ZERO_SHOT:
            raise ValueError("steps must be >= 1")
        from .adversarial import ADVERSARIES
        if self.adversary not in ADVERSARIES:
            raise ValueError(f"unknown adversary {self.adversary!r}: choose one of {list(ADVERSARIES)}")
        if self.reinit_top_layers < 0 or (self.trainable == "cpu-default"
                                          and self.reinit_top_layers > self.num_trainable_layers):
            raise ValueError(f"reinit_top_layers={self.reinit_top_layers} must be between 0 and the number of trained "
                             f"layers ({self.num_trainable_layers}): a re-initialised layer that is frozen never learns")
        if self.batch_size < 2:
            raise ValueError("in-batch negatives need batch_size >= 2")
        if not 0.0 <= self.eval_holdout < 1.0:
            raise ValueError("eval_holdout is a fraction of question ids in [0, 1)")
        if self.languages is not None:
            self.languages = tuple(self.languages)
        if self.output_dir is None:
            self.output_dir = str(Path("runs") / f"{self.method}-{Path(str(self.train_on)).name}")
        self.output_dir = str(self.output_dir)

    def _fill_profile_defaults(self) -> None:
        """Fields a profile sets that are ``None``: the default profile's value for this training set and method."""
        values = PROFILES[DEFAULT_PROFILE].train_settings(Path(str(self.train_on)).name, self.method)
        for key in ("model", "trainable"):
            if getattr(self, key) is None:
                setattr(self, key, values[key])
        if self.reinit_top_layers is None and (self.model, self.trainable) != (values["model"], values["trainable"]):
            self.reinit_top_layers = 0  # the re-initialised start is the bundled model's stand-in for an MLM start
        reinit_default = self.reinit_top_layers is None
        for key in RUN_FIELDS:
            if getattr(self, key) is None:
                setattr(self, key, values[key])
        if reinit_default:
            self.reinit_top_layers = min(self.reinit_top_layers, self.num_trainable_layers)

    @classmethod
    def from_profile(cls, profile: Profile | str | None, method: str, train_on: str, seed: int | None = None,
                     **overrides) -> "TrainConfig":
        """The run ``profile`` trains for ``method`` on ``train_on``: every field the profile sets
        (:meth:`~hybrid_utils.profiles.Profile.train_settings`), its first seed unless ``seed``; ``overrides`` win.

        The one place where a profile becomes a run (:func:`hybrid_utils.experiments.train_config` adds the study's
        folder). ``profile``: a :class:`~hybrid_utils.profiles.Profile` or its name (None: from the environment).
        """
        profile = profile if isinstance(profile, Profile) else get_profile(profile)
        seed = profile.seeds[0] if seed is None else int(seed)
        settings = profile.train_settings(Path(str(train_on)).name, method)
        return cls(**{**settings, "method": method, "train_on": train_on, "seed": seed, **overrides})

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


# --------------------------------------------------------------------------- a batch strategy by name

_STRATEGIES = {
    "monolingual": MonolingualBatchSampler, "mono": MonolingualBatchSampler, "x-x": MonolingualBatchSampler,
    "cross-lingual": CrossLingualBatchSampler, "cross_lingual": CrossLingualBatchSampler,
    "crosslingual": CrossLingualBatchSampler, "cross": CrossLingualBatchSampler, "x-y": CrossLingualBatchSampler,
    "hybrid": HybridBatchSampler,
}


def make_batch_sampler(strategy: str, alpha: float | None = None, **kwargs: Any) -> functools.partial:
    """A ``batch_sampler`` value for ``SentenceTransformerTrainingArguments``.

    Args:
        strategy: ``"monolingual"``, ``"cross-lingual"`` or ``"hybrid"``.
        alpha: probability of a monolingual batch; required for ``"hybrid"`` only.
        **kwargs: passed on to the sampler (``metadata``, ``kind_sampling``, ``language_weights``).

    Example::

        >>> args = SentenceTransformerTrainingArguments(
        ...     output_dir="out", batch_sampler=make_batch_sampler("hybrid", alpha=0.5))
    """
    if "language_weights" in kwargs:  # fail now, not when training starts
        check_language_weights(kwargs["language_weights"])
    cls = _STRATEGIES.get(str(strategy).lower())
    if cls is None:
        raise ValueError(f"unknown batch strategy {strategy!r}: use 'monolingual', 'cross-lingual' or 'hybrid'")
    if cls is HybridBatchSampler:
        if alpha is None:
            raise ValueError("the hybrid strategy needs alpha (probability of a monolingual batch), e.g. alpha=0.5")
        HybridBatchSampler._check_alpha(HybridBatchSampler, alpha)  # fail now, not when training starts
        kwargs["alpha"] = alpha
    elif alpha is not None and alpha != cls.default_alpha:
        raise ValueError(f"the {strategy} strategy has alpha={cls.default_alpha:g}; use strategy='hybrid' "
                         f"to set alpha={alpha}")
    return functools.partial(cls, **kwargs)
