"""Which of the model's parameters train: freezing lower layers, and drawing the top layers afresh.

The CPU default trains only the top transformer layers (:func:`apply_trainable`): the word embeddings hold 96M of
multilingual-e5-small's 118M parameters, and a frozen lower stack computes a fixed function of the text, which
the frozen-layer caches of :mod:`hybrid_utils.plumbing` then compute once per text. The positive control
re-initialises the top layers (:func:`reinitialise_top_layers`) so that the model has to learn retrieval from the
batches. :func:`hybrid_utils.training.build_training_run` applies both.
"""

from __future__ import annotations

import types

from torch import nn

from .config import TRAINABLE


def _layer_index(name: str) -> int | None:
    parts = name.split(".")
    for i, part in enumerate(parts[:-1]):
        if part in ("layer", "layers", "h", "block", "blocks") and parts[i + 1].isdigit():
            return int(parts[i + 1])
    return None


def apply_trainable(model, trainable: str = "cpu-default", num_trainable_layers: int = 4) -> dict:
    """Freeze parts of the model in place, and report what trains.

    * ``"full"``: everything trains;
    * ``"no-embeddings"``: the embedding layer (word, position, token-type embeddings and
      their LayerNorm) is frozen;
    * ``"cpu-default"``: the embedding layer and all but the top ``num_trainable_layers``
      transformer layers are frozen.

    An unused BERT pooler (sentence-transformers pools the token embeddings itself) is always
    frozen: it gets no gradient, which DistributedDataParallel would not accept.

    Returns:
        ``{"trainable_parameters", "total_parameters", "num_layers", "trained_layers"}``.
    """
    if trainable not in TRAINABLE:
        raise ValueError(f"unknown trainable={trainable!r}: choose one of {list(TRAINABLE)}")
    named = list(model.named_parameters())
    layers = sorted({i for n, _ in named if (i := _layer_index(n)) is not None})
    num_layers = (max(layers) + 1) if layers else 0
    if trainable == "cpu-default":
        if not 0 <= num_trainable_layers <= num_layers:
            raise ValueError(f"num_trainable_layers={num_trainable_layers} but the model has {num_layers} layers")
        first_trained = num_layers - num_trainable_layers
    else:
        first_trained = 0
    for name, p in named:
        layer = _layer_index(name)
        if ".pooler." in f".{name}":
            p.requires_grad = False
        elif "embeddings" in name.split(".") or ".embeddings." in f".{name}.":
            p.requires_grad = trainable == "full"
        elif layer is not None:
            p.requires_grad = layer >= first_trained
        else:  # e.g. a final LayerNorm or a Dense head: trained
            p.requires_grad = True
    if trainable == "cpu-default":
        _keep_in_eval_mode(model, first_trained)
    total = sum(p.numel() for _, p in named)
    n_train = sum(p.numel() for _, p in named if p.requires_grad)
    return {"trainable_parameters": n_train, "total_parameters": total, "num_layers": num_layers,
            "trained_layers": list(range(first_trained, num_layers))}


def reinitialise_top_layers(model, n: int, seed: int) -> list[int]:
    """Draw the weights of the top ``n`` transformer layers afresh, as BERT initialises them.

    Linear weights ~ N(0, ``initializer_range``) and zero biases, LayerNorms at weight 1 and bias 0 (written
    out here because ``transformers``' own ``_init_weights`` skips weights that were loaded from a checkpoint).
    The model then has to learn retrieval in those layers from the training batches, as a masked language model
    does; with a pretrained retriever such as multilingual-e5 the batches barely matter (the study's positive
    control, :mod:`hybrid_utils.study.positive_control`). Returns the indices of the re-initialised layers
    (none for ``n = 0``, the pretrained start).
    """
    import torch

    transformer = model[0].auto_model
    layers = transformer.encoder.layer
    if not 0 <= n <= len(layers):
        raise ValueError(f"reinit_top_layers={n} but the model has {len(layers)} layers")
    std = float(getattr(transformer.config, "initializer_range", 0.02))
    generator = torch.Generator().manual_seed(int(seed))
    chosen = list(range(len(layers) - n, len(layers)))
    with torch.no_grad():
        for index in chosen:
            for module in layers[index].modules():
                if isinstance(module, nn.Linear):
                    module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * std)
                    if module.bias is not None:
                        module.bias.zero_()
                elif isinstance(module, nn.LayerNorm):
                    module.weight.fill_(1.0)
                    module.bias.zero_()
    return chosen


def _eval_only_train(module, mode: bool = True):
    return nn.Module.train(module, False)


def _keep_in_eval_mode(model, first_trained: int) -> None:
    """The frozen embeddings and lower layers stay in eval mode (no dropout) whatever ``model.train()`` says.

    Frozen layers then compute a fixed function of the input, which is what lets
    :class:`~hybrid_utils.plumbing.training_cache.TrainingPrefixCache` compute them once per text; the
    uncached path does the same, so both train the same model.
    """
    for name, module in model.named_modules():
        parts = name.split(".")
        frozen = parts[-1] == "embeddings" or (len(parts) >= 2 and parts[-2] == "layer" and parts[-1].isdigit()
                                               and int(parts[-1]) < first_trained)
        if frozen:
            module.train = types.MethodType(_eval_only_train, module)
            nn.Module.train(module, False)
