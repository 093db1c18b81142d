"""Train only the top layers: the frozen lower layers run once per distinct training text, not once per step.

The CPU default of :mod:`hybrid_utils.training` freezes the embeddings and the lower
``12 - num_trainable_layers`` transformer layers. Their output for a given text never
changes while training, yet a plain training step recomputes it for every text of every
batch, and a text comes back many times: on MLQA-R a question is paired with its answer
in every language, so each text occurs in 2 to 7 pairs per epoch, and every method and
seed of the study trains on the same texts.

:class:`TrainingPrefixCache` stores, per distinct token sequence, the hidden states after
the last frozen layer (unpadded, float32) and replaces the forward pass of the model's
``Transformer`` module while attached: a step then runs only the trainable top layers.
Two more savings come with it:

* **no padding in the dense layers.** sentence-transformers merges the question and answer
  columns into one batch padded to the longest text, so a 20-token question is padded to
  the 64 tokens of the longest answer. The top layers here run their linear layers and
  LayerNorms on the packed real tokens only (``T`` rows instead of ``B x L``); only the
  attention itself, a few per cent of the work at these lengths, sees a padded
  ``(B, heads, L, L)`` block, through PyTorch's ``scaled_dot_product_attention``;
* **frozen layers without dropout.** The cached states are those of the frozen layers in
  eval mode. :func:`hybrid_utils.trainable.apply_trainable` keeps the frozen layers in eval
  mode on the uncached path too, so both paths compute the same function; with dropout
  off (``model.eval()``) they give the same loss and gradients (``tests/test_training_cache.py``).

The hidden states are kept in memory (about 0.4 GB for MLQA-R at ``max_seq_length=64``, 1.2 GB
for XQuAD-R) in a registry shared by every model of a process whose embeddings and frozen
layers are identical (checked by a fingerprint of those weights), so in one ``reproduce``
process all methods and seeds reuse them.

Hand-written because no library caches partial networks for training; the packed layer
forward follows ``transformers``' BERT layer (the same modules, called on packed tokens)
and falls back to the model's own padded forward for other layer types.

Example::

    cache = TrainingPrefixCache(model, num_frozen_layers=8)
    cache.warm({"query: ": questions, "passage: ": answers})   # optional: precompute in sorted batches
    with cache.attached():
        trainer.train()
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from typing import Iterable, Mapping

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .lru import LRURegistry
from .prefix_cache import _PassThroughEmbeddings, _swapped, _transformer

__all__ = ["TrainingPrefixCache", "prefix_fingerprint", "packed_layers_supported"]

#: hidden-state stores kept per process, keyed by (fingerprint, frozen layers); the oldest is dropped first
_REGISTRY: "LRURegistry[dict[bytes, Tensor]]" = LRURegistry(size=2)


def prefix_fingerprint(model, num_frozen_layers: int) -> str:
    """A short hash of the embeddings and lower ``num_frozen_layers`` layers (strided samples of every tensor)."""
    _, auto = _transformer(model)
    digest = hashlib.sha1()
    tensors = list(auto.embeddings.state_dict().items())
    for i in range(num_frozen_layers):
        tensors += [(f"{i}.{k}", v) for k, v in auto.encoder.layer[i].state_dict().items()]
    for name, tensor in tensors:
        flat = tensor.detach().reshape(-1)
        sample = flat[:: max(1, flat.numel() // 4096)].float().cpu().numpy()
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(sample.tobytes())
    return digest.hexdigest()[:16]


def packed_layers_supported(layers: Iterable[nn.Module]) -> bool:
    """True when every layer has the BERT / XLM-R layer structure the packed forward calls."""
    for layer in layers:
        attention = getattr(layer, "attention", None)
        self_attention = getattr(attention, "self", None)
        if self_attention is None or not all(hasattr(self_attention, n) for n in (
                "query", "key", "value", "num_attention_heads", "attention_head_size", "scaling")):
            return False
        if not all(hasattr(layer, n) for n in ("intermediate", "output")) or not hasattr(attention, "output"):
            return False
        if getattr(layer, "is_decoder", False) or getattr(self_attention, "is_causal", False):
            return False
        if getattr(layer, "chunk_size_feed_forward", 0):
            return False
    return True


def _packed_layer(layer: nn.Module, x: Tensor, index: Tensor, key_mask: Tensor, batch: int, length: int) -> Tensor:
    """One BERT layer on packed tokens ``x`` (``T x H``); attention on the padded ``batch x length`` grid.

    ``key_mask`` is additive (0 for real keys, -inf for padding), shape ``(batch, 1, 1, length)``.
    """
    sa = layer.attention.self
    heads, head_dim = sa.num_attention_heads, sa.attention_head_size
    hidden = x.shape[-1]

    def grid(t: Tensor) -> Tensor:  # packed (T, H) -> padded (B, heads, L, head_dim)
        padded = t.new_zeros(batch * length, t.shape[-1]).index_copy(0, index, t)
        return padded.view(batch, length, heads, head_dim).transpose(1, 2)

    dropout = sa.dropout.p if sa.training else 0.0
    query = grid(sa.query(x))
    # under autocast the projections are bf16 / fp16: the additive mask must have their dtype
    context = F.scaled_dot_product_attention(query, grid(sa.key(x)), grid(sa.value(x)),
                                             attn_mask=key_mask.to(query.dtype), dropout_p=dropout, scale=sa.scaling)
    context = context.transpose(1, 2).reshape(batch * length, hidden).index_select(0, index)
    attended = layer.attention.output(context, x)
    return layer.output(layer.intermediate(attended), attended)


class TrainingPrefixCache:
    """Hidden states after the frozen lower layers, per distinct training text, for top-layers-only steps.

    Args:
        model: the SentenceTransformer being trained (Transformer -> mean Pooling -> Normalize,
            BERT-like); its lower ``num_frozen_layers`` layers and embeddings must be frozen.
        num_frozen_layers: how many transformer layers from the bottom are frozen.
        batch_size: texts per forward pass when computing missing hidden states.
        packed: run the top layers on packed tokens (no padding in the dense layers); False
            uses the model's own padded forward on the cached states.
        shared: use the per-process registry, so that other models with the same frozen
            weights reuse the states (False: a private store).
    """

    def __init__(self, model, num_frozen_layers: int, batch_size: int = 64, packed: bool = True,
                 shared: bool = True) -> None:
        self.transformer, self.auto = _transformer(model)
        total = len(self.auto.encoder.layer)
        if not 0 < num_frozen_layers < total:
            raise ValueError(f"num_frozen_layers must be between 1 and {total - 1}, got {num_frozen_layers}")
        trainable_below = [n for n, p in self.auto.embeddings.named_parameters() if p.requires_grad]
        for i in range(num_frozen_layers):
            trainable_below += [f"layer{i}.{n}" for n, p in self.auto.encoder.layer[i].named_parameters()
                                if p.requires_grad]
        if trainable_below:
            raise ValueError(f"TrainingPrefixCache needs frozen embeddings and lower {num_frozen_layers} layers, "
                             f"but {trainable_below[:3]} ... require grad: call apply_trainable first")
        self.model = model
        self.num_frozen_layers = num_frozen_layers
        self.batch_size = batch_size
        self.upper = self.auto.encoder.layer[num_frozen_layers:]
        self.packed = bool(packed) and packed_layers_supported(self.upper)
        self.fingerprint = prefix_fingerprint(model, num_frozen_layers)
        key = (self.fingerprint, num_frozen_layers)
        self._store = _REGISTRY.get(key, dict) if shared else {}
        self.hits = self.misses = 0
        self.seconds_prefix = 0.0

    def __len__(self) -> int:
        return len(self._store)

    @property
    def stats(self) -> dict:
        """Cached texts, hits, misses and seconds spent computing the frozen layers."""
        return {"cached_texts": len(self._store), "hits": self.hits, "misses": self.misses,
                "seconds_prefix": round(self.seconds_prefix, 2), "packed": self.packed,
                "fingerprint": self.fingerprint}

    # ------------------------------------------------------------------ frozen layers
    @staticmethod
    def _keys(input_ids: Tensor, lengths: Tensor) -> list[bytes]:
        ids = input_ids.detach().cpu().numpy()
        return [ids[i, :n].tobytes() for i, n in enumerate(lengths.tolist())]

    def _compute(self, features: Mapping[str, Tensor], rows: list[int], keys: list[bytes], lengths: Tensor) -> None:
        """Run embeddings + frozen layers (eval mode, no grad) on ``rows`` of a batch and store them."""
        start = time.perf_counter()
        auto = self.auto
        was_training = auto.training
        auto.eval()
        try:
            for begin in range(0, len(rows), self.batch_size):
                part = rows[begin: begin + self.batch_size]
                width = int(lengths[part].max())
                inputs = {name: features[name][part, :width] for name in ("input_ids", "attention_mask",
                                                                         "token_type_ids") if name in features}
                with torch.no_grad(), _swapped(auto, auto.encoder.layer[: self.num_frozen_layers]):
                    hidden = auto(**inputs).last_hidden_state.float()
                for j, row in enumerate(part):
                    self._store[keys[row]] = hidden[j, : int(lengths[row])].detach().clone()
        finally:
            auto.train(was_training)
        self.misses += len(rows)
        self.seconds_prefix += time.perf_counter() - start

    def warm(self, texts_by_prompt: Mapping[str, Iterable[str]], show_progress_bar: bool = False) -> dict:
        """Compute the frozen layers for every text (``{prompt string: texts}``) that is not cached yet.

        Texts are tokenized exactly as the training collator does (``model.preprocess`` with the
        prompt and the model's current ``max_seq_length``) and processed longest first, so the
        batches carry little padding. Returns :attr:`stats`.
        """
        for prompt, texts in texts_by_prompt.items():
            texts = list(dict.fromkeys(texts))
            # longest first by characters: a cheap proxy that keeps batches of similar length
            texts.sort(key=len, reverse=True)
            starts = range(0, len(texts), self.batch_size)
            if show_progress_bar:
                from tqdm.auto import tqdm
                starts = tqdm(starts, desc=f"frozen layers ({prompt.strip() or 'no prompt'})", unit="batch")
            for begin in starts:
                features = self.model.preprocess(texts[begin: begin + self.batch_size], prompt=prompt or None)
                features = {k: v.to(self.model.device) for k, v in features.items() if isinstance(v, Tensor)}
                lengths = features["attention_mask"].sum(1)
                keys = self._keys(features["input_ids"], lengths)
                missing = [i for i, k in enumerate(keys) if k not in self._store]
                if missing:
                    self._compute(features, missing, keys, lengths)
        return self.stats

    # ------------------------------------------------------------------ the cached forward
    def _right_padded(self, mask: Tensor, lengths: Tensor) -> bool:
        positions = torch.arange(mask.shape[1], device=mask.device)[None, :] < lengths[:, None]
        return bool(torch.equal(positions, mask.bool()))

    def forward(self, features: dict, original, **kwargs) -> dict:
        """The Transformer module's forward with cached lower layers (``original`` when it cannot apply)."""
        if kwargs or "input_ids" not in features or "attention_mask" not in features or "inputs_embeds" in features:
            return original(features, **kwargs)
        input_ids, mask = features["input_ids"], features["attention_mask"]
        lengths = mask.sum(1)
        if not self._right_padded(mask, lengths) or int(lengths.min()) < 1:
            return original(features, **kwargs)
        keys = self._keys(input_ids, lengths)
        missing = [i for i, k in enumerate(keys) if k not in self._store]
        if missing:
            self._compute(features, missing, keys, lengths)
        self.hits += len(keys) - len(missing)
        batch, length = input_ids.shape
        width = int(lengths.max())
        device = input_ids.device
        packed = torch.cat([self._store[k] for k in keys]).to(device)
        valid = torch.arange(width, device=device)[None, :] < lengths[:, None]
        index = (torch.arange(batch, device=device)[:, None] * width
                 + torch.arange(width, device=device)[None, :])[valid]
        if self.packed:
            # an additive float mask: PyTorch's CPU attention is faster with it than with a boolean one
            key_mask = torch.zeros(valid.shape, dtype=packed.dtype, device=device).masked_fill(~valid, float("-inf"))
            key_mask = key_mask[:, None, None, :]
            hidden = packed
            for layer in self.upper:
                hidden = _packed_layer(layer, hidden, index, key_mask, batch, width)
            tokens = hidden.new_zeros(batch * width, hidden.shape[-1]).index_copy(0, index, hidden)
            tokens = tokens.view(batch, width, -1)
        else:
            grid = packed.new_zeros(batch * width, packed.shape[-1]).index_copy(0, index, packed)
            with _swapped(self.auto, self.upper, _PassThroughEmbeddings()):
                tokens = self.auto(inputs_embeds=grid.view(batch, width, -1),
                                   attention_mask=mask[:, :width]).last_hidden_state
        if width < length:  # keep the batch's shape for the pooling module
            tokens = F.pad(tokens, (0, 0, 0, length - width))
        features[self.transformer.module_output_name if hasattr(self.transformer, "module_output_name")
                 else "token_embeddings"] = tokens
        return features

    @contextlib.contextmanager
    def attached(self):
        """Route the model's Transformer module through the cache inside the block (the weights are untouched)."""
        module = self.transformer
        original = module.forward  # the bound class method

        def cached_forward(features, **kwargs):
            return self.forward(features, original, **kwargs)

        module.forward = cached_forward
        try:
            yield self
        finally:
            if module.__dict__.get("forward") is cached_forward:
                del module.forward
