"""Monolingual, cross-lingual and hybrid batch samplers for contrastive retrieval training.

With an in-batch-negatives loss (``MultipleNegativesRankingLoss``) the *composition* of a
batch decides what the model learns, because the other answers of the batch are the
negatives every question is contrasted against:

* **Monolingual batches** (every pair of the batch is question in X, answer in X, one
  language X per batch). The model learns to rank answers *within* a language, which gives
  strong monolingual retrieval. But it never has to compare a relevant answer in one
  language with an irrelevant one in another, so in a multilingual pool it keeps a
  *language bias*: it prefers answers in the query's language over relevant ones in
  other languages.
* **Cross-lingual batches** (every pair of the batch is question in X, answer in Y, X != Y,
  one language pair per batch). The model learns to match meaning across languages,
  i.e. *cross-lingual alignment*, which reduces the language bias and helps retrieval
  from a multilingual pool, at some cost in monolingual accuracy.
* **Hybrid batches** (Elmahdy, Lin & Ahmad, 2024, arXiv:2408.10536): each batch is
  monolingual with probability ``alpha`` and cross-lingual otherwise. The model gets
  both training signals, and in the paper it matches or beats both single strategies in
  monolingual, cross-lingual and multilingual retrieval while reducing language bias.

No library provides these samplers: sentence-transformers ships a plain random sampler,
a no-duplicates sampler and a group-by-label sampler, none of which keeps a batch inside
one language (pair) or mixes batch types with a given probability. So they are written
by hand here, on top of sentence-transformers' :class:`DefaultBatchSampler` interface.

How an epoch is built (all three samplers share it; ``MonolingualBatchSampler`` is
the hybrid sampler with ``alpha=1`` and ``CrossLingualBatchSampler`` the one with
``alpha=0``, so they produce identical batches for identical seeds):

1. **Groups.** Pairs are grouped by (question language X, answer language Y). A group is
   *monolingual* if X == Y, else *cross-lingual*.
2. **Duplicate-free packing.** Two pairs *conflict* if they share a ``question_id``, an
   answer text or a question text: in one batch they would be false in-batch negatives
   (e.g. two questions answered by the same sentence). Within each group the conflict
   classes are shuffled (and the pairs inside each class), laid out class after class and
   dealt into ``K`` batches by striping (position ``i`` goes to batch ``i mod K``). A class
   of ``s <= K`` consecutive pairs thus lands in ``s`` different batches, so a batch never
   holds two conflicting pairs, and every batch is *full*. ``K`` (the number of batches of
   the group) depends only on the data, not on the shuffle, so ``len(sampler)`` is exact.
   The pairs left over (fewer than ``batch_size``, plus conflicting surplus in degenerate
   data) are *dropped for that epoch*: batches are always exactly ``batch_size`` (like
   ``drop_last=True``); a new shuffle drops different pairs next epoch.
   ``describe().attrs["dropped_fraction"]`` reports the share of pairs that cannot be
   placed in full batches.
3. **Group draws.** All batches of one kind are put in a random order.
   This is the same as drawing, at every step, the group with probability proportional to
   the number of batches it has left. With ``language_weights="size"`` (default) every group
   brings all the batches it can fill, so at every step the chance of group ``g`` is
   ``batches_g / batches_of_kind`` ~ ``pairs_g / pairs_of_kind`` (its data size). With
   ``language_weights="uniform"`` every group of a kind brings the same number of batches
   (the smallest group's), so every language (pair) of the kind is equally likely at every
   step, as in the paper's method section; the larger groups' other batches wait for later
   epochs (:func:`hybrid_utils.batch_groups.batches_per_epoch`). See
   :meth:`HybridBatchSampler.target_proportions`.
4. **Batch kinds.** The epoch has ``L = floor(min(M / alpha, C / (1 - alpha)))`` steps for
   ``M`` monolingual and ``C`` cross-lingual batches, i.e. it lasts until the scarcer kind
   is used up (for ``alpha=1``: ``L = M``; for ``alpha=0``: ``L = C``). By default
   (``kind_sampling="stratified"``) ``round(alpha * L)`` of the ``L`` steps, chosen at
   random, are monolingual: every step is monolingual with probability ``alpha`` and the
   epoch realises exactly that fraction. ``kind_sampling="independent"`` draws a
   Bernoulli(``alpha``) per step instead; when the drawn kind has no batch left the step
   takes the other kind, so the realised fraction can fall short of ``alpha`` by about
   ``0.4 * sqrt(alpha * (1 - alpha) / L)``.
   Batches of the abundant kind that do not fit into the ``L`` steps are not used in that
   epoch (``describe().attrs["unused_fraction"]``); with XQuAD-R and ``alpha=0.5`` that is
   most of the cross-lingual pairs, because there are 10 times more of them than
   monolingual ones. Later epochs use other ones.

Every pair is used at most once per epoch; batches depend only on ``(seed, epoch)``.

Use with ``SentenceTransformerTrainer`` (sentence-transformers 6.x): the trainer calls
``args.batch_sampler(dataset, batch_size=..., drop_last=..., valid_label_columns=...,
generator=..., seed=args.seed)`` when ``batch_sampler`` is a ``DefaultBatchSampler``
subclass or any callable, so a class or a :func:`functools.partial` works::

    from functools import partial
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from hybrid_utils.callbacks import PairCollator
    from hybrid_utils.data import load_lareqa
    from hybrid_utils.pairs import build_training_pairs
    from hybrid_utils.samplers import HybridBatchSampler

    pairs = build_training_pairs(load_lareqa("mlqa-r"))        # keeps the language columns
    args = SentenceTransformerTrainingArguments(
        output_dir="out", per_device_train_batch_size=32, seed=42,
        batch_sampler=partial(HybridBatchSampler, alpha=0.5),  # or MonolingualBatchSampler
    )
    trainer = SentenceTransformerTrainer(
        model=model, args=args, train_dataset=pairs,
        loss=MultipleNegativesRankingLoss(model),
        data_collator=PairCollator.for_model(model, args),     # tokenizes question/answer only
    )

The collator matters: ST's default collator tokenizes *every* column that is not a label,
so it would feed ``question_id``, ``question_language`` ... to the model as texts.
:class:`~hybrid_utils.callbacks.PairCollator` only tokenizes ``question`` and ``answer`` (in that order: anchor,
positive). Alternatively pass ``train_dataset=pairs.select_columns(["question", "answer"])``
and give the sampler the language columns separately:
``batch_sampler=partial(HybridBatchSampler, alpha=0.5, metadata=pairs)``.
``args.dataloader_drop_last`` is ignored: batches are always full. The ``generator`` the
trainer passes is ignored too: the shuffle is seeded with ``(seed, epoch)``. The trainer
calls :meth:`set_epoch` at the start of every epoch (checked: 2 epochs of training ran 16
steps with ``sampler.epoch == 0`` and 16 with ``sampler.epoch == 1``). Tested in a single
process; with several processes accelerate's ``BatchSamplerShard`` (default
``split_batches=False``) hands whole batches to the processes in turn, so each process
still gets homogeneous batches, and the trainer forwards ``set_epoch`` through the wrapper.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import pandas as pd
import torch
from sentence_transformers import DefaultBatchSampler

from .batch_groups import (
    CROSS_LINGUAL, MONOLINGUAL, _batches_of_group, _codes, _conflict_components, _Group, batches_per_epoch,
    check_language_weights,
)

__all__ = ["REQUIRED_COLUMNS", "HybridBatchSampler", "MonolingualBatchSampler", "CrossLingualBatchSampler"]

#: columns the samplers read (all produced by ``hybrid_utils.pairs.build_training_pairs``)
REQUIRED_COLUMNS = ("question_id", "question_language", "answer_language", "answer")
#: read too when present, to keep identical question texts out of one batch
OPTIONAL_COLUMNS = ("question",)
_KIND_SAMPLING = ("stratified", "independent")


# --------------------------------------------------------------------------- helpers

def _column_names(table: Any) -> list[str]:
    if hasattr(table, "column_names"):          # datasets.Dataset
        names = table.column_names
        return list(names) if names is not None else []
    if isinstance(table, pd.DataFrame):
        return list(table.columns)
    if isinstance(table, Mapping):
        return list(table.keys())
    raise TypeError(f"cannot read columns from a {type(table).__name__}: pass a datasets.Dataset, a pandas "
                    f"DataFrame or a dict of lists (e.g. the output of hybrid_utils.pairs.build_training_pairs)")


def _column(table: Any, name: str) -> list:
    """One column as a python list, read column-wise (never row by row)."""
    if hasattr(table, "with_format") and hasattr(table, "column_names"):  # datasets.Dataset
        # the arrow view honours select/shuffle indices and skips per-row formatting
        return table.with_format("arrow")[name].to_pylist()
    values = table[name]
    return values.tolist() if hasattr(values, "tolist") else list(values)


# --------------------------------------------------------------------------- samplers

class HybridBatchSampler(DefaultBatchSampler):
    """Each batch is monolingual (X == Y) with probability ``alpha``, else cross-lingual (X != Y).

    The language X (monolingual) or language pair (X, Y) (cross-lingual) of a batch is drawn
    in proportion to its number of pairs (``language_weights="size"``) or uniformly
    (``"uniform"``); every batch is full, holds a single language
    (pair) and never two pairs with the same question id, answer text or question text.
    See the module docstring for how an epoch is built.

    Args:
        dataset: training pairs with the columns ``question_id``, ``question_language``,
            ``answer_language`` and ``answer`` (``hybrid_utils.pairs.build_training_pairs``
            makes them), or any dataset of the same length when ``metadata`` is given.
        batch_size: pairs per batch.
        drop_last: accepted for the sentence-transformers interface and ignored: partial
            batches are always dropped (``self.drop_last`` is ``True``).
        valid_label_columns: accepted for the interface, unused.
        generator: accepted for the interface, unused (shuffles are seeded by ``(seed, epoch)``).
        seed: random seed; the batches of an epoch depend only on ``(seed, epoch)``.
        alpha: probability that a batch is monolingual, in [0, 1]. ``alpha=1`` gives the
            batches of :class:`MonolingualBatchSampler`, ``alpha=0`` those of
            :class:`CrossLingualBatchSampler`.
        metadata: where to read the columns above, when ``dataset`` lacks them (e.g. the
            trainer gets ``pairs.select_columns(["question", "answer"])`` and the sampler
            ``metadata=pairs``): a Dataset, DataFrame or dict of lists, row-aligned with
            ``dataset``.
        kind_sampling: ``"stratified"`` (default: a random ``round(alpha * len)`` of the steps
            are monolingual, so each step is monolingual with probability ``alpha`` and the
            epoch realises it exactly) or ``"independent"`` (a Bernoulli draw per step).
        language_weights: how the language (pair) of a batch is drawn within its kind:
            ``"size"`` (default: in proportion to its number of pairs) or ``"uniform"`` (every
            language, or language pair, of the kind equally likely; an epoch then uses as many
            batches of each group as the smallest group fills).

    Example::

        >>> from functools import partial
        >>> from hybrid_utils.samplers import HybridBatchSampler
        >>> sampler = HybridBatchSampler(pairs, batch_size=32, alpha=0.5, seed=0)
        >>> sampler.set_epoch(1)
        >>> batches = list(sampler)                      # lists of row indices of `pairs`
        >>> sampler.describe().kind.value_counts()       # composition of this epoch
        >>> # in SentenceTransformerTrainingArguments:
        >>> # batch_sampler=partial(HybridBatchSampler, alpha=0.5)
    """

    default_alpha: float | None = None  # fixed by the mono / cross subclasses

    def __init__(self, dataset: Any, batch_size: int, drop_last: bool = True,
                 valid_label_columns: list[str] | None = None, generator: torch.Generator | None = None,
                 seed: int = 0, alpha: float | None = None, metadata: Any = None,
                 kind_sampling: str = "stratified", language_weights: str = "size") -> None:
        alpha = self._check_alpha(alpha)
        self.language_weights = check_language_weights(language_weights)
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer (pairs per batch), got {batch_size!r}")
        if kind_sampling not in _KIND_SAMPLING:
            raise ValueError(f"kind_sampling must be one of {_KIND_SAMPLING}, got {kind_sampling!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        super().__init__(dataset, batch_size=int(batch_size), drop_last=True,
                         valid_label_columns=valid_label_columns, generator=generator, seed=int(seed))
        self.alpha = alpha
        self.kind_sampling = kind_sampling
        self.requested_drop_last = drop_last
        self._cache: tuple[int, dict[str, np.ndarray]] | None = None
        self._read_columns(dataset, metadata)
        self._build_groups()
        self._num_batches = self._epoch_length()

    # ------------------------------------------------------------------ construction

    def _check_alpha(self, alpha: float | None) -> float:
        if self.default_alpha is not None:
            if alpha is not None and alpha != self.default_alpha:
                raise ValueError(f"{type(self).__name__} has alpha fixed to {self.default_alpha}; use "
                                 f"HybridBatchSampler(alpha={alpha}) for a mix of batch kinds")
            return float(self.default_alpha)
        if alpha is None:
            raise ValueError("HybridBatchSampler needs alpha, the probability of a monolingual batch, e.g. "
                             "functools.partial(HybridBatchSampler, alpha=0.5)")
        try:
            value = float(alpha)
        except (TypeError, ValueError):
            raise ValueError(f"alpha must be a number in [0, 1] (probability of a monolingual batch), "
                             f"got {alpha!r}") from None
        if not 0.0 <= value <= 1.0:  # also rejects NaN
            raise ValueError(f"alpha must lie in [0, 1] (probability of a monolingual batch), got {alpha!r}: "
                             f"use alpha=1 for only monolingual, alpha=0 for only cross-lingual batches")
        return value

    def _read_columns(self, dataset: Any, metadata: Any) -> None:
        source = dataset if metadata is None else metadata
        names = _column_names(source)
        missing = [c for c in REQUIRED_COLUMNS if c not in names]
        if missing:
            where = "the dataset" if metadata is None else "metadata"
            raise ValueError(
                f"{type(self).__name__} needs the columns {list(REQUIRED_COLUMNS)} in {where}, but "
                f"{missing} {'is' if len(missing) == 1 else 'are'} missing (it has {names}). "
                f"hybrid_utils.pairs.build_training_pairs produces them; if the trainer's dataset keeps only "
                f"the text columns, pass the full pairs as metadata=pairs.")
        n_rows = len(source)
        if metadata is not None and len(dataset) != n_rows:
            raise ValueError(f"metadata has {n_rows} rows but the dataset has {len(dataset)}: they must be "
                             f"row-aligned (select the text columns with dataset.select_columns, do not filter)")
        if n_rows == 0:
            raise ValueError("the dataset is empty: build training pairs with "
                             "hybrid_utils.pairs.build_training_pairs(load_lareqa(...))")
        self.n_pairs = n_rows
        self._question_language = _column(source, "question_language")
        self._answer_language = _column(source, "answer_language")
        keys = [_codes(_column(source, "question_id")), _codes(_column(source, "answer"))]
        keys += [_codes(_column(source, c)) for c in OPTIONAL_COLUMNS if c in names]
        self._conflict_keys = keys

    def _build_groups(self) -> None:
        pair_labels = list(zip(self._question_language, self._answer_language))
        group_code = _codes(pair_labels)
        component = _conflict_components(group_code, self._conflict_keys)
        del self._conflict_keys
        order = np.argsort(group_code, kind="stable")
        bounds = np.r_[0, np.flatnonzero(np.diff(group_code[order])) + 1, len(order)]
        groups = []
        for start, stop in zip(bounds[:-1], bounds[1:]):
            rows = order[start:stop]
            local = np.unique(component[rows], return_inverse=True)[1]
            sizes = np.bincount(local)
            k = _batches_of_group(sizes, self.batch_size)
            x, y = pair_labels[rows[0]]
            groups.append(_Group(str(x), str(y), rows, local, len(sizes), k, bool(sizes.max() > k)))
        self.groups = sorted(groups, key=lambda g: (g.kind != MONOLINGUAL, g.question_language, g.answer_language))

        needed = []
        if self.alpha > 0:
            needed.append(MONOLINGUAL)
        if self.alpha < 1:
            needed.append(CROSS_LINGUAL)
        for kind in needed:
            of_kind = [g for g in self.groups if g.kind == kind]
            if not of_kind:
                other = "alpha=0 (CrossLingualBatchSampler)" if kind == MONOLINGUAL else "alpha=1 (MonolingualBatchSampler)"
                condition = "question_language == answer_language" if kind == MONOLINGUAL else "question_language != answer_language"
                raise ValueError(
                    f"alpha={self.alpha:g} needs {kind} pairs ({condition}), but the dataset has none "
                    f"(language pairs: {sorted({g.name for g in self.groups})}). Use {other}, or build the pairs "
                    f"with build_training_pairs(..., {'monolingual' if kind == MONOLINGUAL else 'cross_lingual'}=True).")
            if not any(g.n_batches for g in of_kind):
                largest = max(of_kind, key=lambda g: len(g.indices))
                raise ValueError(
                    f"batch_size={self.batch_size} is too large: no {kind} group can fill one duplicate-free "
                    f"batch (the largest, {largest.name}, has {len(largest.indices)} pairs). Use a batch size of "
                    f"at most {self._largest_fillable(largest)}.")
            empty = [g.name for g in of_kind if g.n_batches == 0]
            if empty:
                warnings.warn(f"{len(empty)} {kind} group(s) cannot fill a batch of {self.batch_size} pairs and are "
                              f"never sampled: {empty}. Use a smaller batch size to include them.", stacklevel=3)
        self._active = [g for g in self.groups if g.kind in needed and g.n_batches > 0]
        quota = batches_per_epoch(self.groups, self.language_weights)
        self._quota = {id(g): quota[i] for i, g in enumerate(self.groups)}   # batches per epoch of each group
        self.monolingual_batches = sum(self._quota[id(g)] for g in self._active if g.kind == MONOLINGUAL)
        self.cross_lingual_batches = sum(self._quota[id(g)] for g in self._active if g.kind == CROSS_LINGUAL)

    @staticmethod
    def _largest_fillable(group: _Group) -> int:
        sizes = np.bincount(group.classes)
        return max((b for b in range(1, len(group.indices) + 1) if _batches_of_group(sizes, b) >= 1), default=1)

    def _epoch_length(self) -> int:
        m, c, a = self.monolingual_batches, self.cross_lingual_batches, self.alpha
        if a == 1.0:
            return m
        if a == 0.0:
            return c
        return int(math.floor(min(m / a, c / (1.0 - a)) + 1e-9))

    # ------------------------------------------------------------------ epochs

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose batches ``__iter__`` yields (the trainer calls this every epoch)."""
        super().set_epoch(int(epoch))

    def __len__(self) -> int:
        return self._num_batches

    def _plan(self, epoch: int) -> dict[str, np.ndarray]:
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        rng = np.random.default_rng([self.seed, epoch])
        packed = {MONOLINGUAL: [], CROSS_LINGUAL: []}
        labels = {MONOLINGUAL: [], CROSS_LINGUAL: []}
        for index, group in enumerate(self.groups):
            if group in self._active:
                quota = self._quota[id(group)]   # the shuffled packing makes its first rows a random choice
                packed[group.kind].append(group.pack(rng, self.batch_size)[:quota])
                labels[group.kind].append(np.full(quota, index))
        queues = {}
        for kind in (MONOLINGUAL, CROSS_LINGUAL):
            if packed[kind]:
                rows, grp = np.concatenate(packed[kind]), np.concatenate(labels[kind])
                shuffle = rng.permutation(len(rows))   # = size-proportional draws without replacement
                queues[kind] = (rows[shuffle], grp[shuffle])
            else:
                queues[kind] = (np.empty((0, self.batch_size), dtype=np.int64), np.empty(0, dtype=np.int64))

        steps = self._num_batches
        if self.kind_sampling == "stratified":
            n_mono = min(int(round(self.alpha * steps)), self.monolingual_batches)
            n_mono = max(n_mono, steps - self.cross_lingual_batches)
            is_mono = np.zeros(steps, dtype=bool)
            is_mono[:n_mono] = True
            is_mono = rng.permutation(is_mono)
        else:
            is_mono = rng.random(steps) < self.alpha
            m_left, c_left = self.monolingual_batches, self.cross_lingual_batches
            for t in range(steps):  # an exhausted kind hands its step to the other kind
                if is_mono[t] and m_left == 0:
                    is_mono[t] = False
                elif not is_mono[t] and c_left == 0:
                    is_mono[t] = True
                m_left -= int(is_mono[t])
                c_left -= int(not is_mono[t])
        mono_pos, cross_pos = np.flatnonzero(is_mono), np.flatnonzero(~is_mono)
        batches = np.empty((steps, self.batch_size), dtype=np.int64)
        group_of = np.empty(steps, dtype=np.int64)
        batches[mono_pos], group_of[mono_pos] = (q[:len(mono_pos)] for q in queues[MONOLINGUAL])
        batches[cross_pos], group_of[cross_pos] = (q[:len(cross_pos)] for q in queues[CROSS_LINGUAL])
        plan = {"batches": batches, "group": group_of, "monolingual": is_mono}
        self._cache = (epoch, plan)
        return plan

    def __iter__(self) -> Iterator[list[int]]:
        for row in self._plan(self.epoch)["batches"]:
            yield row.tolist()

    def batches(self, epoch: int | None = None) -> list[list[int]]:
        """The batches (lists of dataset row indices) of ``epoch`` (default: the current epoch)."""
        return self._plan(self.epoch if epoch is None else int(epoch))["batches"].tolist()

    # ------------------------------------------------------------------ reporting

    def target_proportions(self) -> pd.DataFrame:
        """Target probability that a batch comes from each language (pair).

        ``language_weights="size"``: ``target = P(kind) * pairs / pairs_of_kind``;
        ``"uniform"``: ``target = P(kind) / groups_of_kind`` over the groups that fill a batch;
        ``P(monolingual) = alpha``. One row per group with ``kind``, ``question_language``,
        ``answer_language``, ``pairs``, ``batches_per_epoch`` (batches the group brings to an
        epoch) and ``target`` (sums to 1).
        """
        pairs_of_kind = {k: sum(len(g.indices) for g in self.groups if g.kind == k)
                         for k in (MONOLINGUAL, CROSS_LINGUAL)}
        p_kind = {MONOLINGUAL: self.alpha, CROSS_LINGUAL: 1.0 - self.alpha}
        groups_of_kind = {k: sum(1 for g in self._active if g.kind == k) for k in (MONOLINGUAL, CROSS_LINGUAL)}
        rows = []
        for g in self.groups:
            active = g in self._active
            if not p_kind[g.kind]:
                target = 0.0
            elif self.language_weights == "uniform":
                target = p_kind[g.kind] / groups_of_kind[g.kind] if active else 0.0
            else:
                target = p_kind[g.kind] * len(g.indices) / pairs_of_kind[g.kind]
            rows.append({"kind": g.kind, "question_language": g.question_language,
                         "answer_language": g.answer_language, "pairs": len(g.indices),
                         "batches_per_epoch": self._quota[id(g)] if active else 0, "target": target})
        return pd.DataFrame(rows)

    def describe(self, epoch: int | None = None) -> pd.DataFrame:
        """Composition of the batches of ``epoch`` (default: current), one row per batch.

        Columns: ``index`` (position in the epoch), ``kind`` (``"monolingual"`` /
        ``"cross-lingual"``), ``question_language``, ``answer_language``, ``size``.
        ``.attrs`` holds the epoch summary: ``epoch``, ``seed``, ``alpha``, ``batch_size``,
        ``n_pairs``, ``pairs_used``, ``monolingual_fraction`` (realised), ``dropped_fraction``
        (share of the pairs of the sampled kinds that cannot fill a full batch in an epoch:
        group remainders and groups smaller than a batch) and ``unused_fraction`` (all pairs not in
        this epoch's batches, including dropped ones and the unused kind).
        """
        epoch = self.epoch if epoch is None else int(epoch)
        plan = self._plan(epoch)
        groups = [self.groups[i] for i in plan["group"]]
        frame = pd.DataFrame({
            "index": np.arange(len(groups)),
            "kind": [MONOLINGUAL if m else CROSS_LINGUAL for m in plan["monolingual"]],
            "question_language": [g.question_language for g in groups],
            "answer_language": [g.answer_language for g in groups],
            "size": [self.batch_size] * len(groups),
        })
        sampled_kinds = {g.kind for g in self._active}
        pairs_of_sampled = sum(len(g.indices) for g in self.groups if g.kind in sampled_kinds)
        placeable = sum(g.n_batches for g in self._active) * self.batch_size
        used = len(groups) * self.batch_size
        frame.attrs.update({
            "epoch": epoch, "seed": self.seed, "alpha": self.alpha, "batch_size": self.batch_size,
            "language_weights": self.language_weights,
            "n_pairs": self.n_pairs, "pairs_used": used,
            "monolingual_fraction": float(np.mean(plan["monolingual"])) if len(groups) else float("nan"),
            "dropped_fraction": (pairs_of_sampled - placeable) / pairs_of_sampled if pairs_of_sampled else 0.0,
            "unused_fraction": (self.n_pairs - used) / self.n_pairs,
        })
        return frame

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(alpha={self.alpha:g}, batch_size={self.batch_size}, pairs={self.n_pairs}, "
                f"language_weights={self.language_weights!r}, "
                f"batches_per_epoch={len(self)} [monolingual available {self.monolingual_batches}, "
                f"cross-lingual available {self.cross_lingual_batches}], seed={self.seed}, epoch={self.epoch})")


class MonolingualBatchSampler(HybridBatchSampler):
    """Every batch holds pairs of one language X (question and answer both in X).

    The language of a batch is drawn in proportion to its number of pairs. Same as
    ``HybridBatchSampler(alpha=1)``; cross-lingual pairs in the dataset are ignored.
    Use with the trainer as ``batch_sampler=MonolingualBatchSampler`` (the class itself).
    """

    default_alpha = 1.0


class CrossLingualBatchSampler(HybridBatchSampler):
    """Every batch holds pairs of one language pair X != Y (question in X, answer in Y).

    The language pair of a batch is drawn in proportion to its number of pairs. Same as
    ``HybridBatchSampler(alpha=0)``; monolingual pairs in the dataset are ignored.
    Use with the trainer as ``batch_sampler=CrossLingualBatchSampler`` (the class itself).
    """

    default_alpha = 0.0
