"""Parse a tokenizer once per process: every run folder of one base model holds the same tokenizer files.

Loading a Sentence Transformers folder spends most of its time on the tokenizer: transformers reads the
17 MB ``tokenizer.json`` of multilingual-e5-small (250,002 pieces) with Python's ``json`` and builds the
Rust tokenizer from it, about 1.3 s of the 1.4 s a warm :func:`hybrid_utils.encoder.load_encoder` of a
run folder takes on 2 fp32 cores. Every run fine-tuned from one base model saves identical tokenizer
files, and a study, a chapter or the tests load dozens of runs in one process.

:func:`shared_tokenizers` makes the loads inside it parse each distinct set of tokenizer files once:
the first load is kept, and a later load of a folder whose tokenizer files have the same bytes (and the
same loading options) gets a deep copy of it that shares only the Rust tokenizer. Sharing that is safe:
transformers sets its truncation and padding on every call, and nothing else of it changes after
loading. Folders without a ``tokenizer.json`` (hub names, slow tokenizers) load the usual way.

Hand-written because neither transformers nor sentence-transformers caches tokenizers across loads;
it wraps the one call sentence-transformers makes (``AutoProcessor.from_pretrained`` in its
``Transformer`` module) and does nothing when a version of sentence-transformers loads differently.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import os
from pathlib import Path

from .lru import LRURegistry

__all__ = ["shared_tokenizers", "tokenizer_files_digest"]

#: the files that make a tokenizer (those present are hashed; tokenizer.json must be)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "sentencepiece.bpe.model", "vocab.txt", "chat_template.jinja")
#: parsed tokenizers kept per process, the least recently used dropped first (one per base model in practice)
_SHARED = LRURegistry(size=4)


def tokenizer_files_digest(folder: str | os.PathLike) -> str | None:
    """A hash of the tokenizer files in ``folder``; None when it has no ``tokenizer.json`` (nothing is shared)."""
    folder = Path(folder)
    if not (folder / "tokenizer.json").is_file():
        return None
    digest = hashlib.sha1()
    for name in TOKENIZER_FILES:
        path = folder / name
        if path.is_file():
            digest.update(name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def _copy_sharing_backend(tokenizer):
    """A deep copy of ``tokenizer`` whose Rust tokenizer is the same object (it is not copied, not parsed)."""
    backend = getattr(tokenizer, "_tokenizer", None)
    return copy.deepcopy(tokenizer, {id(backend): backend} if backend is not None else {})


class _SharingProcessorLoader:
    """Stands in for ``AutoProcessor`` while :func:`shared_tokenizers` is active."""

    def __init__(self, original):
        self.original = original

    def from_pretrained(self, name_or_path, *args, **kwargs):
        digest = tokenizer_files_digest(name_or_path) if os.path.isdir(str(name_or_path)) else None
        if digest is None or args:
            return self.original.from_pretrained(name_or_path, *args, **kwargs)
        key = (digest, repr(sorted(kwargs.items())))
        parsed = _SHARED.get(key, lambda: self.original.from_pretrained(name_or_path, **kwargs))
        return _copy_sharing_backend(parsed)

    def __getattr__(self, name):  # anything else sentence-transformers may ask of AutoProcessor
        return getattr(self.original, name)


@contextlib.contextmanager
def shared_tokenizers():
    """Within this block, Sentence Transformers loads of local folders share parsed tokenizers (module docstring)."""
    try:
        from sentence_transformers.base.modules import transformer as module
    except ImportError:  # another sentence-transformers layout: load the usual way
        yield
        return
    original = getattr(module, "AutoProcessor", None)
    if original is None or isinstance(original, _SharingProcessorLoader):
        yield
        return
    module.AutoProcessor = _SharingProcessorLoader(original)
    try:
        yield
    finally:
        module.AutoProcessor = original
