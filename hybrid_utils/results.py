"""Reading the study's saved evaluation results (shared by :mod:`hybrid_utils.reproduce` and :mod:`hybrid_utils.plots`).

Results live at ``<results_dir>/<model>/<method>/<eval_on>.json`` for the untrained model and
``<results_dir>/<model>/<method>/<eval_on>-seed<k>.json`` for a trained one (one JSON per
evaluation, :func:`hybrid_utils.evaluation.save_result`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

__all__ = ["load_results", "load_seed_results", "result_name", "model_slug"]

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
