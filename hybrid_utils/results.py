"""Evaluation results as files: saving one, reading them back, summarising one in a few lines.

A result is the dict of :func:`hybrid_utils.evaluation.evaluate_lareqa`. The study's results live at ``<results_dir>/<model>/<method>/<eval_on>.json`` for the untrained model and
``<results_dir>/<model>/<method>/<eval_on>-seed<k>.json`` for a trained one (one JSON per
evaluation, :func:`save_result`).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from .metrics import RECALL_CUTOFFS

__all__ = ["load_results", "load_seed_results", "result_name", "model_slug", "save_result", "load_result", "summarize"]

_SEEDED = re.compile(r"^(?P<eval_on>.+)-seed(?P<seed>\d+)$")


def model_slug(model: str) -> str:
    """A folder name for a model name or path (``bundled`` → ``multilingual-e5-small``)."""
    return "multilingual-e5-small" if model == "bundled" else Path(model.rstrip("/")).name


def result_name(eval_on: str, seed: int | None) -> str:
    """The file name of one evaluation: ``xquad-r.json`` (no seed) or ``xquad-r-seed2.json``."""
    return f"{eval_on}.json" if seed is None else f"{eval_on}-seed{int(seed)}.json"


def load_seed_results(results_dir: str | Path = "results") -> dict:
    """Every evaluation JSON below ``results_dir``: ``{(model, method, eval_on): [result, ...]}`` ordered by seed.

    Each result gets a ``seed`` key (None for the untrained model).
    """
    found: dict[tuple, list] = {}
    for path in sorted(Path(results_dir).glob("*/*/*.json")):
        match = _SEEDED.match(path.stem)
        eval_on, seed = (match["eval_on"], int(match["seed"])) if match else (path.stem, None)
        result = json.loads(path.read_text())
        result["seed"] = seed
        found.setdefault((path.parent.parent.name, path.parent.name, eval_on), []).append(result)
    return {key: sorted(values, key=lambda r: (r["seed"] is not None, r["seed"] or 0)) for key, values in found.items()}


def load_results(results_dir: str | Path = "results") -> dict:
    """One evaluation per (model, method, eval_on): the untrained model's, or the lowest seed's.

    ``{(model, method, eval_on): result}``; :func:`load_seed_results` has every seed.
    """
    return {key: values[0] for key, values in load_seed_results(results_dir).items()}


# --------------------------------------------------------------------------- one result file

#: Per-entry tables whose lists :func:`save_result` writes one per line (also inside ``postprocess`` variants).
_COMPACT_TABLES = ("per_question", "per_query")


def _mark_tables(block: Any, prefix: str, marks: dict) -> Any:
    """``block`` with each list of its :data:`_COMPACT_TABLES` replaced by a placeholder string kept in ``marks``."""
    if not isinstance(block, dict):
        return block
    out = dict(block)
    for table in _COMPACT_TABLES:
        if isinstance(block.get(table), dict):
            out[table] = {}
            for key, values in block[table].items():
                mark = f"@@{prefix}{table}:{key}@@"
                marks[mark] = values
                out[table][key] = mark
    return out


def _dumps(result: dict) -> str:
    """``result`` as indented JSON, each ``per_question`` / ``per_query`` list on a single line (keeps the file small).

    The tables of the post-processed variants (``result["postprocess"][name]``) are compacted too.
    """
    marks: dict[str, Any] = {}
    marked = _mark_tables(result, "", marks)
    if isinstance(marked, dict) and isinstance(marked.get("postprocess"), dict):
        marked["postprocess"] = {name: _mark_tables(variant, f"{name}/", marks)
                                 for name, variant in marked["postprocess"].items()}
    text = json.dumps(marked, indent=2, ensure_ascii=False, allow_nan=False)
    for mark, values in marks.items():
        value = json.dumps(values, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        text = text.replace(json.dumps(mark, ensure_ascii=False), value, 1)
    return text


def save_result(result: dict, path: str | os.PathLike) -> Path:
    """Write ``result`` as JSON to ``path`` atomically, creating parent folders.

    The JSON is indented, except that each list of ``per_question`` and ``per_query`` (also those of the
    ``postprocess`` variants) is written on one line.

    The JSON is serialised first and written to a temporary file next to ``path``,
    which then replaces ``path`` in one rename: an existing result is never left
    half-written or destroyed if anything fails.

    Returns:
        pathlib.Path: ``path``.
    """
    path = Path(path).expanduser()
    text = _dumps(result)  # fails before touching the disk
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def load_result(path: str | os.PathLike) -> dict:
    """Read a result written by :func:`save_result`."""
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


# --------------------------------------------------------------------------- a readable summary

def _fmt(value: float | None, scale: float = 100.0, digits: int = 1) -> str:
    return "-" if value is None else f"{value * scale:.{digits}f}"


def summarize(result: dict) -> str:
    """A readable multi-line summary of an :func:`~hybrid_utils.evaluation.evaluate_lareqa` result.

    Shows mono-, cross- and multilingual mAP (macro, with the micro averages), the
    language bias, timings, and a compact table of mAP x 100 with question languages X
    as rows and pool languages Y as columns, followed by each row's multilingual mAP
    and mean rank distance.
    """
    n = result.get("n_settings", {})
    lines = [
        f"LAReQA {result.get('dataset', '?')} | model: {result.get('model', '?')} | "
        f"{result.get('n_questions', '?')} questions, {result.get('n_candidates', '?')} candidates, "
        f"{len(result.get('languages', []))} languages, candidates encoded as {result.get('candidate_text', '?')}",
        f"mAP x100  mono {_fmt(result.get('mono_map'), digits=2)} (micro {_fmt(result.get('mono_map_micro'), digits=2)},"
        f" {n.get('mono', '?')} settings) | cross {_fmt(result.get('cross_map'), digits=2)} "
        f"(micro {_fmt(result.get('cross_map_micro'), digits=2)}, {n.get('cross', '?')} settings) | "
        f"multilingual {_fmt(result.get('multilingual_map'), digits=2)} "
        f"(micro {_fmt(result.get('multilingual_map_micro'), digits=2)})",
        f"language bias (mean rank distance, lower is better): {_fmt(result.get('language_bias'), 1.0)} "
        f"(micro {_fmt(result.get('language_bias_micro'), 1.0)})",
    ]
    recall = [f"R@{k} mono {_fmt(result[f'recall_at_{k}'].get('mono'), digits=2)} / cross "
              f"{_fmt(result[f'recall_at_{k}'].get('cross'), digits=2)} / multilingual "
              f"{_fmt(result[f'recall_at_{k}'].get('multilingual'), digits=2)}"
              for k in RECALL_CUTOFFS if isinstance(result.get(f"recall_at_{k}"), dict)]
    if recall:
        lines.append("recall x100  " + " | ".join(recall))
    if n.get("skipped"):
        lines.append(f"skipped settings without questions: {n['skipped']}")
    if "seconds_encoding" in result:
        lines.append(f"time: encoding {result['seconds_encoding']:.1f} s, scoring {result['seconds_scoring']:.1f} s")
    langs = result.get("languages", [])
    pair = result.get("pair_map", {})
    if langs and pair:
        lines.append("mAP x100, question language (rows) x pool language (columns):")
        width = 6
        lines.append("X\\Y".ljust(4) + "".join(lang.rjust(width) for lang in langs) + " | " + "multi".rjust(width)
                     + "bias".rjust(width + 2))
        for x in langs:
            row = pair.get(x, {})
            lines.append(x.ljust(4) + "".join(_fmt(row.get(y)).rjust(width) for y in langs) + " | "
                         + _fmt(result.get("multilingual_map_by_language", {}).get(x)).rjust(width)
                         + _fmt(result.get("language_bias_by_language", {}).get(x), 1.0).rjust(width + 2))
    return "\n".join(lines)
