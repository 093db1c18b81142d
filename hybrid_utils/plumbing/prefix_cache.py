"""Reuse what frozen layers compute: encode an evaluation set once up to layer k, then only the top layers.

The CPU default of :mod:`hybrid_utils.training` freezes the word embeddings and the
lower transformer layers and trains only the top ones. Every model fine-tuned that way
shares the hidden states below the first trainable layer, so evaluating five methods on
the same 26,000 XQuAD-R texts repeats the same lower-layer work five times.
:class:`FrozenPrefixCache` computes those hidden states once and, for each model, runs
only its top layers, mean-pools and normalises, exactly as the sentence-transformers
pipeline (Transformer → mean Pooling → Normalize) would.

Before using the cache for a model it checks, tensor by tensor, that the model's
embeddings and lower layers equal those the cache was built with; a model that differs
(full fine-tuning, another base model) is encoded the normal way. Hand-written because
no library offers partial-network caching for sentence-transformers models.

The hidden states are also kept on disk (:class:`~hybrid_utils.plumbing.frozen_store.FrozenLayerStore`),
so a chapter that evaluates a new model on a pool an earlier process has seen runs only its top layers.

Example::

    >>> cache = FrozenPrefixCache(load_encoder("bundled"), num_frozen_layers=8)
    >>> result = evaluate_lareqa(trained, xquad, embeddings=cache.lareqa_embeddings(trained, xquad))
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..encoder import distinct_texts, inference_precision, longest_first, resolved_precision
from .embedding_store import state_digest
from .frozen_store import FrozenLayerStore


class _PassThroughEmbeddings(nn.Module):
    """Stands in for the embedding layer: hands the cached hidden states to the upper layers."""

    def forward(self, input_ids=None, inputs_embeds=None, **kwargs):
        return inputs_embeds


def _transformer(model):
    """The Hugging Face model inside a plain Transformer → mean Pooling → Normalize sentence-transformer."""
    modules = list(model.children())
    names = [type(m).__name__ for m in modules]
    if names[:2] != ["Transformer", "Pooling"] or not set(names[2:]) <= {"Normalize"}:
        raise ValueError(f"FrozenPrefixCache needs a Transformer → Pooling → Normalize model, got {names}")
    pooling = modules[1]
    mode = getattr(pooling, "pooling_mode", None) or ("mean" if getattr(pooling, "pooling_mode_mean_tokens", False) else None)
    if mode not in ("mean", "mean_tokens"):
        raise ValueError(f"FrozenPrefixCache supports mean pooling only, got {mode!r}")
    auto = modules[0].auto_model
    if not hasattr(auto, "embeddings") or not hasattr(getattr(auto, "encoder", None), "layer"):
        raise ValueError(f"FrozenPrefixCache needs a BERT-like model with .embeddings and .encoder.layer, "
                         f"got {type(auto).__name__}")
    return modules[0], auto


@contextlib.contextmanager
def _swapped(auto, layers: nn.ModuleList, embeddings: nn.Module | None = None):
    old_layers, old_embeddings = auto.encoder.layer, auto.embeddings
    auto.encoder.layer = layers
    if embeddings is not None:
        auto.embeddings = embeddings
    try:
        yield
    finally:
        auto.encoder.layer, auto.embeddings = old_layers, old_embeddings


def prefix_state(model, num_frozen_layers: int) -> dict[str, torch.Tensor]:
    """The parameters the cache depends on: embeddings and the lower ``num_frozen_layers`` layers."""
    _, auto = _transformer(model)
    state = {f"embeddings.{k}": v for k, v in auto.embeddings.state_dict().items()}
    for i in range(num_frozen_layers):
        state.update({f"layer{i}.{k}": v for k, v in auto.encoder.layer[i].state_dict().items()})
    return state


class FrozenPrefixCache:
    """Hidden states of a base model after its lower ``num_frozen_layers`` layers, per encoded text.

    Args:
        base_model: the untrained sentence-transformer whose lower layers the fine-tuned models kept.
        num_frozen_layers: how many transformer layers (from the bottom) are frozen.
        batch_size: texts per forward pass.
        precision: ``"fp32"``, ``"bf16"`` or ``"auto"`` (see :func:`hybrid_utils.encoder.inference_precision`).
        store: keep the states on disk too: True (default) in ``$HYBRID_UTILS_CACHE/frozen-layers``, a
            :class:`~hybrid_utils.plumbing.frozen_store.FrozenLayerStore` of its own, or False (memory only).
    """

    def __init__(self, base_model, num_frozen_layers: int, batch_size: int = 64, precision: str = "fp32",
                 store: FrozenLayerStore | bool = True):
        transformer, auto = _transformer(base_model)
        total = len(auto.encoder.layer)
        if not 0 < num_frozen_layers < total:
            raise ValueError(f"num_frozen_layers must be between 1 and {total - 1}, got {num_frozen_layers}")
        self.base_model = base_model
        self.num_frozen_layers = num_frozen_layers
        self.batch_size = batch_size
        self.precision = precision
        self._reference = {k: v.detach().clone() for k, v in prefix_state(base_model, num_frozen_layers).items()}
        self._entries: dict[tuple[str, str], tuple[list, np.ndarray, dict[str, int]]] = {}
        store = FrozenLayerStore() if store is True else (store or None)
        self.store = store if store is not None and store.enabled else None  # a limit of 0: memory only
        self._digest: str | None = None

    def store_key(self, texts: Sequence[str], prompt_name: str | None) -> str:
        """The store's key of ``texts``' states: a hash of everything they depend on (the weights, every byte)."""
        if self._digest is None:  # 0.54 s for multilingual-e5-small's embeddings (cProfile): once per cache
            self._digest = state_digest(self._reference)
        model = self.base_model
        tokenizer = getattr(model, "tokenizer", None)
        described = [self._digest, self.num_frozen_layers, type(tokenizer).__name__, len(tokenizer or ()),
                     (model.prompts or {}).get(prompt_name, "") if prompt_name else "", model.max_seq_length,
                     resolved_precision(self.precision, model.device), self.batch_size,
                     hashlib.blake2b("\x00".join(texts).encode(), digest_size=16).hexdigest()]
        return hashlib.blake2b(json.dumps(described).encode(), digest_size=12).hexdigest()

    def matches(self, model) -> bool:
        """True when ``model`` has exactly the embeddings and lower layers this cache was built from."""
        try:
            state = prefix_state(model, self.num_frozen_layers)
        except ValueError:
            return False
        return state.keys() == self._reference.keys() and all(
            torch.equal(state[k].detach().to(v.device), v) for k, v in self._reference.items())

    def _prefix(self, texts: Sequence[str], prompt_name: str | None, show_progress_bar: bool):
        key = (prompt_name or "", "\x00".join(texts))
        if key in self._entries:
            return self._entries[key]
        disk_key = self.store_key(texts, prompt_name) if self.store is not None else None
        stored = self.store.read(disk_key) if disk_key is not None else None
        if stored is not None:
            device = self.base_model.device
            batches, inverse, n_unique = stored
            self._entries[key] = ([(i, h.to(device), m.to(device)) for i, h, m in batches], inverse, n_unique)
            return self._entries[key]
        model = self.base_model
        _, auto = _transformer(model)
        prompt = (model.prompts or {}).get(prompt_name, "") if prompt_name else ""
        order_texts, inverse = distinct_texts(texts)
        order = longest_first(model, [prompt + t for t in order_texts])
        batches = []
        starts = range(0, len(order_texts), self.batch_size)
        if show_progress_bar:
            from tqdm.auto import tqdm
            starts = tqdm(starts, desc=f"Lower {self.num_frozen_layers} layers ({prompt_name})", unit="batch")
        device = model.device
        with torch.inference_mode(), inference_precision(self.precision, device), \
                _swapped(auto, auto.encoder.layer[: self.num_frozen_layers]):
            for start in starts:
                index = order[start: start + self.batch_size]
                features = model.tokenizer([prompt + order_texts[i] for i in index], padding=True, truncation=True,
                                           max_length=model.max_seq_length, return_tensors="pt").to(device)
                hidden = auto(**features).last_hidden_state
                batches.append((index, hidden, features["attention_mask"]))
        entry = (batches, inverse, len(order_texts))
        self._entries[key] = entry
        if disk_key is not None:
            self.store.write(disk_key, entry)
        return entry

    def encode(self, model, texts: Sequence[str], prompt_name: str | None, show_progress_bar: bool = True) -> np.ndarray:
        """L2-normalised float32 embeddings of ``texts`` by ``model``, reusing the cached lower layers.

        Falls back to a full encode when ``model`` does not share the cached layers.
        """
        texts = list(texts)
        if not self.matches(model):
            from ..encoder import encode_texts
            return encode_texts(model, texts, prompt_name, batch_size=self.batch_size,
                                show_progress_bar=show_progress_bar, precision=self.precision)
        batches, inverse, n_unique = self._prefix(texts, prompt_name, show_progress_bar)
        _, auto = _transformer(model)
        out = np.empty((n_unique, auto.config.hidden_size), dtype=np.float32)
        upper = auto.encoder.layer[self.num_frozen_layers:]
        iterator = batches
        if show_progress_bar:
            from tqdm.auto import tqdm
            iterator = tqdm(batches, desc=f"Top {len(upper)} layers ({prompt_name})", unit="batch")
        with torch.inference_mode(), inference_precision(self.precision, model.device), \
                _swapped(auto, upper, _PassThroughEmbeddings()):
            for index, hidden, mask in iterator:
                top = auto(inputs_embeds=hidden, attention_mask=mask).last_hidden_state
                weights = mask.unsqueeze(-1).to(top.dtype)
                pooled = (top * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
                out[index] = torch.nn.functional.normalize(pooled.float(), dim=-1).cpu().numpy()
        return out[inverse]

    def lareqa_embeddings(self, model, dataset, show_progress_bar: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """(question, candidate) embeddings of a LAReQA data set, for ``evaluate_lareqa(embeddings=...)``."""
        questions = self.encode(model, dataset.questions["text"], "query", show_progress_bar)
        candidates = self.encode(model, dataset.candidates["sentence"], "passage", show_progress_bar)
        return questions, candidates
