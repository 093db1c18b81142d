"""hybrid_utils: the small library behind the hybrid-batch tutorials.

The chapters grow it in the order of the book, and each name below is defined (and documented) in the
module named next to it:

* data (chapter 1): :mod:`~hybrid_utils.data` reads XQuAD-R and MLQA-R in the LAReQA format, and
  :mod:`~hybrid_utils.pairs` builds the training pairs;
* batches (chapter 2): :mod:`~hybrid_utils.samplers` builds monolingual, cross-lingual and hybrid batches;
* encoder and training (chapter 3): :mod:`~hybrid_utils.encoder`, :mod:`~hybrid_utils.config`,
  :mod:`~hybrid_utils.training`, and :mod:`~hybrid_utils.experiments`, which reuses the study's runs;
* the losses (chapters 3, 4): :mod:`~hybrid_utils.losses` (contrastive; adversarial, whose pieces are in
  :mod:`~hybrid_utils.adversarial`), and which parameters train: :mod:`~hybrid_utils.trainable`;
* evaluation (chapter 5): the metrics as pure functions of ranks in :mod:`~hybrid_utils.metrics`, composed by
  :mod:`~hybrid_utils.evaluation` (LAReQA's mAP, Recall@k, language bias, and the probe of
  :mod:`~hybrid_utils.language_information`); result files in :mod:`~hybrid_utils.results`;
* search and exploration (chapters 6, 7): :mod:`~hybrid_utils.search`, :mod:`~hybrid_utils.maps`,
  :mod:`~hybrid_utils.widgets`; figures in :mod:`~hybrid_utils.plots`; notebook set-up in :mod:`~hybrid_utils.notebook`.

So a chapter may write ``import hybrid_utils as hu`` and then ``hu.load_lareqa("xquad-r")``, or
``from hybrid_utils import load_lareqa, HybridBatchSampler, evaluate_lareqa``.

The study machinery (reproducing the committed study, sweeps, tuning, statistics, reports, the command line)
is the sub-package :mod:`hybrid_utils.study`, which this core never imports; code that only makes things fast
or available offline is in :mod:`hybrid_utils.plumbing` (skip it on a first reading).
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

#: The chapters' API: each name and the module that defines it.
#:
#: The names are loaded on first use (PEP 562 module ``__getattr__``) rather than imported here: the samplers,
#: the losses and training import torch and sentence-transformers, about 10 s of CPU, which
#: ``python -m hybrid_utils --help`` and a chapter that only reads data should not pay for.
API = {
    # data (chapter 1)
    "LAReQADataset": "data", "LANGUAGE_NAMES": "data", "load_lareqa": "data", "build_training_pairs": "pairs",
    "find_overlap": "pairs", "remove_overlap": "pairs", "subset_lareqa": "data",
    # batches (chapter 2)
    "MONOLINGUAL": "batch_groups", "CROSS_LINGUAL": "batch_groups",
    "HybridBatchSampler": "samplers", "MonolingualBatchSampler": "samplers", "CrossLingualBatchSampler": "samplers",
    "composition_matrix": "tutorial",
    # encoder and training (chapter 3)
    "load_encoder": "encoder", "encode_texts": "encoder",
    "METHODS": "config", "PROTOCOLS": "config", "HOLDOUT_SEED": "config", "TrainConfig": "config",
    "ContrastiveLoss": "losses", "apply_trainable": "trainable", "train": "training",
    "load_train_log": "runs", "load_train_config": "runs",
    "run_dir": "experiments", "is_finished_run": "experiments", "ensure_run": "experiments",
    "ensure_result": "experiments",
    # the adversarial baseline (chapter 4)
    "GradientReversal": "adversarial", "grad_reverse": "adversarial", "LanguageDiscriminator": "adversarial",
    "lambda_schedule": "adversarial", "SCHEDULES": "adversarial", "AdversarialLoss": "losses",
    # evaluation (chapter 5)
    "average_precision": "metrics", "recall_at_k": "metrics", "rank_distance": "metrics",
    "evaluate_lareqa": "evaluation", "summarize": "results", "save_result": "results", "load_result": "results",
    "load_results": "results", "load_seed_results": "results", "model_slug": "results",
    # search and exploration (chapters 6, 7)
    "PoolSearch": "search", "search_pool": "search",
    "setup": "notebook",
}

#: The core's modules, reachable as attributes too (``hu.plots.plot_matrix``).
MODULES = (
    "adversarial", "batch_groups", "callbacks", "config", "data", "encoder", "evaluation", "experiments",
    "language_information", "losses", "maps", "metrics", "notebook", "pairs", "plots", "postprocess", "profiles",
    "results", "runs", "samplers", "search", "trainable", "training", "tutorial", "widgets",
)


def __getattr__(name: str):
    if name in API:
        value = getattr(importlib.import_module(f"{__name__}.{API[name]}"), name)
    elif name in MODULES:
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # the next look-up is an ordinary attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(API) | set(MODULES))
