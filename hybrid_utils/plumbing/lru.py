"""A small least-recently-used registry for the objects a process keeps between calls.

Three things are worth keeping for the life of a process but not without bound: parsed tokenizers
(:mod:`~hybrid_utils.plumbing.shared_tokenizer`), the lower layers' output for training
(:mod:`~hybrid_utils.plumbing.training_cache`) and for evaluation (:class:`~hybrid_utils.experiments.Evaluator`).
``functools.lru_cache`` does not fit them: the key (a hash of files, a weight fingerprint) is not the
arguments that build the value. Written by hand because the standard library has no get-or-build LRU mapping.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Generic, Hashable, TypeVar

__all__ = ["LRURegistry"]

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
