"""Language (pair) groups of training pairs, duplicate-free packing, and how many batches each group gives.

The building blocks of :mod:`hybrid_utils.samplers` (see its docstring for how an epoch is built):

* :func:`_conflict_components` / :func:`_batches_of_group` / :class:`_Group`: pairs grouped by
  (question language, answer language), packed into full batches without false in-batch negatives.
* :func:`batches_per_epoch`: how many of its batches each group contributes to an epoch, which is
  what decides how often a language (pair) is drawn:

  ``language_weights="size"`` (default): every batch a group can fill, so a group is drawn in
  proportion to its data size (the paper's abstract: languages sampled by size).
  ``language_weights="uniform"``: every group of a kind contributes the same number of batches,
  the smallest group's, so every language (monolingual) or language pair (cross-lingual) is
  equally likely at every step (the paper's method section). The other batches of the larger
  groups wait for later epochs (each epoch reshuffles which of their pairs are used), so an epoch
  is shorter and ``describe().attrs["unused_fraction"]`` larger.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["MONOLINGUAL", "CROSS_LINGUAL", "LANGUAGE_WEIGHTS", "check_language_weights", "batches_per_epoch"]

MONOLINGUAL = "monolingual"
CROSS_LINGUAL = "cross-lingual"
#: how a batch's language (pair) is drawn within its kind
LANGUAGE_WEIGHTS = ("size", "uniform")


def check_language_weights(value: str) -> str:
    """``value`` if it is one of :data:`LANGUAGE_WEIGHTS`, else a ValueError saying what to use."""
    if value not in LANGUAGE_WEIGHTS:
        raise ValueError(f"language_weights must be 'size' (a language (pair) is drawn in proportion to its "
                         f"number of pairs) or 'uniform' (every language (pair) of a batch kind equally likely), "
                         f"got {value!r}")
    return value


def _codes(values: Sequence) -> np.ndarray:
    """Integer codes of a list of hashable values (equal values, equal codes)."""
    return pd.factorize(pd.Series(values, dtype=object), use_na_sentinel=False)[0].astype(np.int64)


def _conflict_components(group: np.ndarray, keys: list[np.ndarray]) -> np.ndarray:
    """Label of the conflict class of every pair: pairs of one group linked by a shared key value.

    Label propagation over "same group and same key value"; converges in as many rounds as
    the longest chain of linked pairs (1-2 rounds on LAReQA data).
    """
    n = len(group)
    label = np.arange(n, dtype=np.int64)
    scoped = [pd.factorize(group * (int(key.max()) + 1) + key)[0] for key in keys]  # (group, value) codes
    while True:
        previous = label
        for code in scoped:
            smallest = np.full(code.max() + 1, n, dtype=np.int64)
            np.minimum.at(smallest, code, label)
            label = smallest[code]
        if np.array_equal(label, previous):
            return label


def _batches_of_group(class_sizes: np.ndarray, batch_size: int) -> int:
    """Most full, duplicate-free batches a group can fill: the largest K with sum(min(s, K)) >= K * B."""
    k = int(class_sizes.sum()) // batch_size
    while k > 0 and np.minimum(class_sizes, k).sum() < k * batch_size:
        k -= 1
    return k


@dataclass(eq=False)
class _Group:
    question_language: str
    answer_language: str
    indices: np.ndarray       # dataset rows of the group
    classes: np.ndarray       # local conflict-class id of each row (0 .. n_classes - 1)
    n_classes: int
    n_batches: int            # full duplicate-free batches per epoch
    capped: bool              # some conflict class is larger than n_batches

    @property
    def kind(self) -> str:
        return MONOLINGUAL if self.question_language == self.answer_language else CROSS_LINGUAL

    @property
    def name(self) -> str:
        return f"{self.question_language}-{self.answer_language}"

    def pack(self, rng: np.random.Generator, batch_size: int) -> np.ndarray:
        """A (n_batches, batch_size) array of dataset rows, no two of one conflict class per row."""
        k = self.n_batches
        order = np.lexsort((rng.random(len(self.indices)), rng.random(self.n_classes)[self.classes]))
        if self.capped:  # keep at most k pairs per class so striping cannot put two in one batch
            cls = self.classes[order]
            starts = np.r_[0, np.flatnonzero(cls[1:] != cls[:-1]) + 1]
            run_start = np.repeat(starts, np.diff(np.r_[starts, len(cls)]))
            order = order[np.arange(len(cls)) - run_start < k]
        laid_out = self.indices[order[:k * batch_size]]
        return laid_out.reshape(batch_size, k).T  # row j = positions j, j + k, j + 2k, ...


def batches_per_epoch(groups: Sequence["_Group"], language_weights: str = "size") -> dict[int, int]:
    """Batches each group contributes to an epoch, by position in ``groups`` (groups that fill no batch: 0).

    ``"size"``: all the group can fill (``n_batches``). ``"uniform"``: the same number for every
    group of a kind that fills at least one batch, the smallest such group's ``n_batches``.
    """
    check_language_weights(language_weights)
    if language_weights == "size":
        return {i: g.n_batches for i, g in enumerate(groups)}
    smallest = {}
    for g in groups:
        if g.n_batches > 0:
            smallest[g.kind] = min(smallest.get(g.kind, g.n_batches), g.n_batches)
    return {i: smallest[g.kind] if g.n_batches > 0 else 0 for i, g in enumerate(groups)}
