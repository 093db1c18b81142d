"""Monolingual retrieval beyond LAReQA, through mteb: BEIR, Natural Questions, MIRACL, or a local BEIR folder.

The research question is whether hybrid batches keep *monolingual* accuracy while gaining
cross-lingual retrieval. LAReQA alone cannot show a method that trades away English retrieval
on other domains, so :func:`benchmark` runs a model through `mteb <https://github.com/embeddings-benchmark/mteb>`_,
the library whose numbers the field compares against:

* hub tasks (:data:`HUB_TASKS`): ``NQHardNegatives`` (Natural Questions), the small BEIR sets
  ``SciFact``, ``NFCorpus``, ``ArguAna``, and ``MIRACLRetrievalHardNegatives`` (18 languages).
  The hard-negative variants keep NQ and MIRACL small enough for a Colab GPU; on a CPU pick
  the small BEIR sets (:data:`CPU_TASKS`). They need the Hugging Face Hub: offline each fails
  at once with :class:`HubDataUnavailableError`, naming the task and what to do.
* a local BEIR folder (``beir_folder``), e.g. XQuAD-R English from :func:`hybrid_utils.study.beir.export_beir`:
  the offline stand-in, run through the very same mteb evaluation.

Every result row is one (task, language subset) with nDCG@10, Recall@100, Recall@10 and MRR@10;
:func:`benchmark_models` runs several named models (zero-shot, each trained method) into one tidy
frame.

**Prompts.** mteb's metadata for ``intfloat/multilingual-e5-small`` gives the
:class:`~mteb.models.sentence_transformer_wrapper.SentenceTransformerEncoderWrapper` the prompts
``{"query": "query: ", "document": "passage: "}`` (mteb's prompt types are ``query`` and
``document``). :func:`mteb_model` mirrors that from the model's own prompts, so the bundled model
and the runs fine-tuned from it are evaluated exactly as mteb evaluates multilingual-e5-small.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

__all__ = ["HUB_TASKS", "CPU_TASKS", "METRICS", "HubDataUnavailableError", "mteb_prompts", "mteb_model",
           "benchmark", "benchmark_models", "results_frame", "save_benchmark"]

#: The hub tasks of the study: Natural Questions, three small BEIR sets, MIRACL (all mteb task names).
HUB_TASKS = ("NQHardNegatives", "SciFact", "NFCorpus", "ArguAna", "MIRACLRetrievalHardNegatives")
#: Hub tasks small enough for a CPU (a few thousand passages each).
CPU_TASKS = ("SciFact", "NFCorpus", "ArguAna")
#: The metrics kept per task and language (mteb's names).
METRICS = ("ndcg_at_10", "recall_at_100", "recall_at_10", "mrr_at_10")
ROW_COLUMNS = ["model", "task", "subset", "languages", "split", *METRICS]


class HubDataUnavailableError(ConnectionError):
    """A hub task's data cannot be fetched (offline, ``HF_HUB_OFFLINE=1``, or the Hub is unreachable)."""


def _hub_offline() -> bool:
    return any(os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}
               for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def _unavailable(task_name: str, reason: str) -> HubDataUnavailableError:
    return HubDataUnavailableError(
        f"mteb task {task_name} needs its data from the Hugging Face Hub, which is not reachable ({reason}). "
        "Run it online (unset HF_HUB_OFFLINE; the data is then cached under ~/.cache/huggingface), or evaluate "
        "a local BEIR folder instead: `python -m hybrid_utils export-beir xquad-r --language en --output DIR` "
        "then `benchmark --beir-folder DIR`.")


# --------------------------------------------------------------------------- the model side
def mteb_prompts(model, name: str | None = None) -> dict[str, str] | None:
    """The mteb prompts (``{"query": ..., "document": ...}``) for a Sentence Transformers model.

    Taken from the model's own prompts (``"document"``, else ``"passage"``, for documents); a model
    without prompts gets those of its mteb metadata when ``name`` is a model mteb knows (e.g.
    ``intfloat/multilingual-e5-small``), else None (no prompt, as mteb does).
    """
    prompts = {key: value for key, value in (getattr(model, "prompts", None) or {}).items() if value}
    query, document = prompts.get("query"), prompts.get("document") or prompts.get("passage")
    if query or document:
        return {key: value for key, value in (("query", query), ("document", document)) if value}
    if name:
        import mteb

        try:
            meta = mteb.get_model_meta(name)
        except (KeyError, ValueError):
            return None
        known = (meta.loader_kwargs or {}).get("model_prompts")
        return dict(known) if known else None
    return None


def mteb_model(model, name: str | None = None):
    """Wrap a loaded Sentence Transformers model for ``mteb.evaluate``, with the prompts of :func:`mteb_prompts`.

    The wrapper leaves ``model.prompts`` as it was (mteb's own wrapper would replace them with its
    two keys, and the project's ``encode_texts(..., prompt_name="passage")`` needs ``"passage"``).
    """
    from mteb.models.sentence_transformer_wrapper import SentenceTransformerEncoderWrapper

    prompts = mteb_prompts(model, name)
    saved = dict(model.prompts or {})
    with warnings.catch_warnings():  # "prompts will be overwritten": intended, and undone below
        warnings.simplefilter("ignore")
        level = logging.getLogger("mteb").level
        logging.getLogger("mteb").setLevel(logging.ERROR)
        try:
            wrapped = SentenceTransformerEncoderWrapper(model, model_prompts=prompts)
        finally:
            logging.getLogger("mteb").setLevel(level)
            model.prompts = saved
    if name:
        wrapped.mteb_model_meta = wrapped.mteb_model_meta.model_copy(update={"name": _meta_name(name)})
    return wrapped


def _meta_name(name: str) -> str:
    # mteb expects "organisation/model"; a run folder or "bundled" becomes "local/<name>"
    return name if ("/" in name and not os.path.exists(name)) else f"local/{Path(name).name}"


# --------------------------------------------------------------------------- the task side
def _hub_tasks(names: Sequence[str], languages: Sequence[str] | None):
    """The mteb task objects of ``names``, checked for reachable data before anything is encoded."""
    import mteb

    unknown = []
    tasks = []
    for name in names:
        try:
            tasks.append(mteb.get_task(name))
        except KeyError:
            unknown.append(name)
    if unknown:
        raise ValueError(f"unknown mteb task(s) {unknown}: use mteb task names such as {list(HUB_TASKS)} "
                         "(mteb.get_tasks(task_types=['Retrieval']) lists all)")
    if languages:
        for i, task in enumerate(tasks):
            if task.metadata.is_multilingual:
                subsets = [s for s in task.hf_subsets if s in set(languages)]
                if not subsets:
                    raise ValueError(f"{task.metadata.name} has no subset for languages {list(languages)} "
                                     f"(it has {list(task.hf_subsets)})")
                tasks[i] = task.filter_languages(None, hf_subsets=subsets)
    return tasks


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face Hub's host accepts a connection within ``timeout`` seconds.

    Asked before a hub task loads its data: without it, an offline machine without ``HF_HUB_OFFLINE=1``
    waits through five retries of ``huggingface_hub`` (about 25 s per task) before failing.
    """
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout=timeout).close()
    except OSError:
        return False
    return True


def _load(task) -> None:
    """Load a task's data; a hub that cannot be reached becomes :class:`HubDataUnavailableError`.

    Offline (``HF_HUB_OFFLINE=1``) the datasets library refuses at once unless the data is cached;
    without it, :func:`hub_reachable` is asked first, except for a local BEIR folder (:func:`beir_task`), which
    needs no hub. Either way this fails in seconds, before any
    model is loaded.
    """
    from .beir import LOCAL_REVISION

    local = (task.metadata.dataset or {}).get("revision") == LOCAL_REVISION  # beir_task: a folder on disk
    if not local and not _hub_offline() and not hub_reachable():
        raise _unavailable(task.metadata.name, "the Hub did not answer within 3 s; if the data is already cached, "
                                               "set HF_HUB_OFFLINE=1 to use the cache")
    try:
        task.load_data()
    except (ConnectionError, OSError, TimeoutError) as err:
        reason = "HF_HUB_OFFLINE=1 is set" if _hub_offline() else "no connection"
        raise _unavailable(task.metadata.name, f"{reason}; {type(err).__name__}: {err}") from err


# --------------------------------------------------------------------------- running and tabulating
class _datasets_progress:
    """Show or hide the ``datasets`` progress bars for a block, then restore the previous setting."""

    def __init__(self, show: bool) -> None:
        self.show = show

    def __enter__(self):
        import datasets

        self.before = datasets.is_progress_bar_enabled()
        (datasets.enable_progress_bars if self.show else datasets.disable_progress_bars)()

    def __exit__(self, *exc):
        import datasets

        (datasets.enable_progress_bars if self.before else datasets.disable_progress_bars)()


def _rows(model_label: str, model_result) -> list[dict[str, Any]]:
    rows = []
    for task_result in model_result.task_results:
        for split, per_subset in task_result.scores.items():
            for scores in per_subset:
                row = {"model": model_label, "task": task_result.task_name, "subset": scores.get("hf_subset"),
                       "languages": ",".join(scores.get("languages") or []), "split": split}
                row.update({metric: float(scores[metric]) for metric in METRICS})
                rows.append(row)
    return rows


def benchmark(model_name_or_path: str = "bundled", tasks: Sequence[str] | None = None, beir_folder=None,
              languages: Sequence[str] | None = None, output=None, batch_size: int = 32, model=None,
              show_progress_bar: bool = False) -> dict[str, Any]:
    """Evaluate a model on mteb retrieval tasks and/or a local BEIR folder.

    Args:
        model_name_or_path: ``"bundled"``, a run folder or a Hub name (see
            :func:`hybrid_utils.encoder.load_encoder`); also the model's label in the results.
        tasks: mteb task names (default: :data:`HUB_TASKS` when no ``beir_folder`` is given, else none).
        beir_folder: a local BEIR folder, evaluated as one more task (see :func:`hybrid_utils.study.beir.beir_task`).
        languages: keep only these subsets of multilingual tasks (MIRACL: ``"en"``, ``"de"``, ...).
        output: write the result as JSON there, and the rows as CSV next to it (same name, ``.csv``).
        batch_size: encoding batch size.
        model: an already loaded model (then ``model_name_or_path`` is only its label).
        show_progress_bar: show mteb's encoding progress.

    Returns:
        ``{"model", "tasks", "rows": [{model, task, subset, languages, split, ndcg_at_10,
        recall_at_100, recall_at_10, mrr_at_10}], "mteb_version"}``; with a BEIR folder and no
        hub task, also that folder's ``ndcg_at_10``, ``recall_at_10``, ``recall_at_100`` and
        ``mrr_at_10`` at the top level.

    Raises:
        HubDataUnavailableError: a hub task's data is not reachable (before any encoding).
    """
    import mteb

    from .beir import beir_task

    if tasks is None and beir_folder is None:
        tasks = HUB_TASKS
    task_objects = _hub_tasks(list(tasks or []), languages)
    if beir_folder is not None:
        task_objects.append(beir_task(beir_folder))
    for task in task_objects:  # every hub download before the model, so a failure costs nothing
        _load(task)
    if model is None:
        from ..encoder import load_encoder

        model = load_encoder(model_name_or_path)
    label = str(model_name_or_path)
    with _datasets_progress(show_progress_bar):  # mteb's corpus preprocessing bars, in notebooks too
        result = mteb.evaluate(mteb_model(model, label), task_objects, cache=None,
                               show_progress_bar=show_progress_bar,
                               encode_kwargs={"batch_size": batch_size, "show_progress_bar": show_progress_bar})
    rows = _rows(label, result)
    out: dict[str, Any] = {"model": label, "tasks": [t.metadata.name for t in task_objects], "rows": rows,
                           "metrics": list(METRICS), "mteb_version": mteb.__version__}
    if beir_folder is not None and len(rows) == 1:
        out.update({metric: rows[0][metric] for metric in ("ndcg_at_10", "recall_at_10", "recall_at_100",
                                                           "mrr_at_10")})
        out["beir_folder"] = str(beir_folder)
    if output is not None:
        save_benchmark(out, output)
    return out


def results_frame(result: Mapping[str, Any]):
    """The rows of a :func:`benchmark` result as a tidy :class:`pandas.DataFrame` (one row per task and subset)."""
    import pandas as pd

    return pd.DataFrame(list(result["rows"]), columns=ROW_COLUMNS)


def save_benchmark(result: Mapping[str, Any], output) -> Path:
    """Write a :func:`benchmark` result to ``output`` (JSON) and its rows to the same name with ``.csv``."""
    path = Path(output).expanduser()
    if path.is_dir():
        raise ValueError(f"output {path} is a folder; give a file name such as {path / 'benchmark.json'}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    results_frame(result).to_csv(path.with_suffix(".csv"), index=False)
    return path


def benchmark_models(models: Mapping[str, str], tasks: Sequence[str] | None = None, beir_folder=None,
                     languages: Sequence[str] | None = None, output_dir=None, batch_size: int = 32):
    """Run :func:`benchmark` for several named models into one tidy frame.

    Args:
        models: ``{method label: model}``, e.g. ``{"zero-shot": "bundled",
            "hybrid": "runs/cpu/.../hybrid-mlqa-r-seed1"}``.
        tasks, beir_folder, languages, batch_size: as in :func:`benchmark`.
        output_dir: write ``<label>.json`` / ``.csv`` per model and ``benchmarks.csv`` for all there.

    Returns:
        a frame with a ``method`` column followed by :func:`results_frame`'s columns.
    """
    import pandas as pd

    frames = []
    for label, name in models.items():
        output = Path(output_dir) / f"{label}.json" if output_dir is not None else None
        frame = results_frame(benchmark(name, tasks=tasks, beir_folder=beir_folder, languages=languages,
                                        output=output, batch_size=batch_size))
        frames.append(frame.assign(method=label))
    table = pd.concat(frames, ignore_index=True)[["method", *ROW_COLUMNS]]
    if output_dir is not None:
        table.to_csv(Path(output_dir) / "benchmarks.csv", index=False)
    return table


def benchmark_study(profile=None, tasks: Sequence[str] | None = None, beir_folder=None, log=print):
    """``reproduce --benchmarks``: zero-shot and every method of the study (first seed, each protocol) through ``tasks``.

    ``tasks`` default to :data:`HUB_TASKS` on a GPU profile and :data:`CPU_TASKS` otherwise; hub tasks
    need internet (offline they stop at once with :class:`HubDataUnavailableError`). Writes
    ``<results_dir>/benchmarks/study.csv`` (one row per method, training set, task and language).
    """
    import pandas as pd

    from ..profiles import Profile, get_profile
    from ..config import ZERO_SHOT
    from ..experiments import is_finished_run, run_dir

    profile = profile if isinstance(profile, Profile) else get_profile(profile)
    if tasks is None and beir_folder is None:
        tasks = HUB_TASKS if profile.name.startswith("gpu") else CPU_TASKS
    frames = []
    for model in profile.models:
        for train_on, _ in profile.protocols:
            models = {ZERO_SHOT: model} if not frames else {}
            for method in profile.methods:
                folder = run_dir(profile, model, method, train_on, profile.seeds[0])
                if is_finished_run(folder):
                    models[method] = str(folder)
            log(f"== benchmarks ({', '.join(tasks or [])}{' + ' + str(beir_folder) if beir_folder else ''}): "
                f"{', '.join(models)} trained on {train_on}")
            frame = benchmark_models(models, tasks=tasks, beir_folder=beir_folder)
            frame.insert(1, "train_on", ["-" if m == ZERO_SHOT else train_on for m in frame["method"]])
            frames.append(frame)
    table = pd.concat(frames, ignore_index=True)
    out = Path(profile.results_dir) / "benchmarks" / "study.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    log(f"benchmarks -> {out}")
    return table
