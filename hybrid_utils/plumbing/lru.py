"""Least recently used first: a registry for the objects a process keeps between calls, and a size limit for
the folders the disk caches keep between processes.

Three things are worth keeping for the life of a process but not without bound: parsed tokenizers
(:mod:`~hybrid_utils.plumbing.shared_tokenizer`), the lower layers' output for training
(:mod:`~hybrid_utils.plumbing.training_cache`) and for evaluation (:class:`~hybrid_utils.experiments.Evaluator`).
``functools.lru_cache`` does not fit them: the key (a hash of files, a weight fingerprint) is not the
arguments that build the value. Written by hand because the standard library has no get-or-build LRU mapping.

:class:`SizeLimitedFolder` keeps the embedding store (:mod:`~hybrid_utils.plumbing.embedding_store`) and the
frozen-layer store (:mod:`~hybrid_utils.plumbing.frozen_store`) under their size limits.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Generic, Hashable, TypeVar

__all__ = ["LRURegistry", "SizeLimitedFolder"]

V = TypeVar("V")


class LRURegistry(Generic[V]):
    """Keeps the ``size`` most recently used values; the least recently used one is dropped first.

    Example::

        >>> registry = LRURegistry(size=2)
        >>> registry.get("a", lambda: 1), registry.get("b", lambda: 2), registry.get("c", lambda: 3)
        (1, 2, 3)
        >>> "a" in registry, len(registry)
        (False, 2)
    """

    def __init__(self, size: int):
        if size < 1:
            raise ValueError(f"an LRU registry keeps at least one value, got size={size}")
        self.size = size
        self._values: "OrderedDict[Hashable, V]" = OrderedDict()

    def get(self, key: Hashable, build: Callable[[], V]) -> V:
        """The value of ``key``, built with ``build()`` (and the oldest value dropped) when it is not kept."""
        if key not in self._values:
            self._values[key] = build()
            while len(self._values) > self.size:
                self._values.popitem(last=False)
        self._values.move_to_end(key)
        return self._values[key]

    def __contains__(self, key: Hashable) -> bool:
        return key in self._values

    def __len__(self) -> int:
        return len(self._values)

    def clear(self) -> None:
        self._values.clear()


class SizeLimitedFolder:
    """A folder of entries, one sub-folder each, kept under a size limit: the least recently used go first.

    The base of the disk caches (the embedding store and the frozen-layer store); an entry counts as used when it
    is written or its folder's modification time is touched.

    Args:
        root: the folder.
        max_megabytes: the size limit; 0 keeps nothing (the cache is off).
    """

    def __init__(self, root: str | Path, max_megabytes: float):
        self.root = Path(root)
        self.max_bytes = int(max_megabytes * 1e6)

    @property
    def enabled(self) -> bool:
        """False when the size limit is 0: nothing is read or written."""
        return self.max_bytes > 0

    def size_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.root.glob("*/*") if f.is_file())

    def clear(self) -> int:
        """Delete every entry; returns the number of bytes freed."""
        size = self.size_bytes() if self.root.exists() else 0
        shutil.rmtree(self.root, ignore_errors=True)
        return size

    def publish(self, key: str, write_files: Callable[[Path], None]) -> None:
        """Write an entry: ``write_files(folder)`` fills a staging folder, which then replaces ``root/key`` at once
        (a reader sees the old entry or the new one, never half of one); then the size limit is kept.

        A full disk or a concurrent writer of the same entry loses this copy, never an earlier result.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=self.root, prefix=".writing-"))
        folder = self.root / key
        try:
            write_files(staging)
            shutil.rmtree(folder, ignore_errors=True)
            os.replace(staging, folder)
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
            return
        self.limit_size(keep=folder)

    def limit_size(self, keep: Path) -> None:
        """Delete the least recently used entries until the rest fit; never ``keep`` (the entry just written)."""
        entries = sorted((p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")),
                         key=lambda p: p.stat().st_mtime)  # ".writing-*": an entry being written
        sizes = {p: sum(f.stat().st_size for f in p.iterdir()) for p in entries}
        total = sum(sizes.values())
        for entry in entries:
            if total <= self.max_bytes:
                break
            if entry != keep:
                shutil.rmtree(entry, ignore_errors=True)
                total -= sizes[entry]
