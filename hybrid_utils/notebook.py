"""What every notebook does first: pick the profile, fix seeds, make tables and figures readable.

It also holds the one setting every Colab badge and install cell uses, :data:`REPOSITORY_URL` (defined in
:mod:`hybrid_utils.repository`; ``tests/test_colab.py`` checks the notebooks and README against it), and,
on Colab, where there is no clone, fetches the committed ``results/`` the chapters read
(:mod:`hybrid_utils.committed_results`).
"""

from __future__ import annotations

import logging
import os
import random
import warnings

from .profiles import NOTEBOOK_SEED, PROFILE_ENV, STUDY_ENV, TRAIN_SETS_ENV, Profile, get_profile
# REPOSITORY_URL: the repository every Colab badge opens and every notebook's first cell installs from;
# REPOSITORY_BRANCH: the branch the badges open; DISTRIBUTION: the name the install cell installs.
from .repository import DISTRIBUTION, REPOSITORY_BRANCH, REPOSITORY_URL  # noqa: F401 (re-exported)


def colab_url(notebook_path: str) -> str:
    """The Colab address that opens ``notebook_path`` (relative to the repository root) from GitHub.

    Example: ``colab_url("notebooks/01_datasets.ipynb")``.
    """
    github_path = REPOSITORY_URL.removeprefix("https://github.com/")
    return f"https://colab.research.google.com/github/{github_path}/blob/{REPOSITORY_BRANCH}/{notebook_path}"


def colab_badge(notebook_path: str) -> str:
    """The Markdown "Open In Colab" badge of ``notebook_path`` (relative to the repository root)."""
    return (f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
            f"({colab_url(notebook_path)})")


def colab_install_spec() -> str:
    """What the first cell of every notebook pip-installs on Colab: the package straight from the repository."""
    return f"{DISTRIBUTION} @ git+{REPOSITORY_URL}"


def quiet_libraries() -> None:
    """Keep library chatter out of notebook outputs, so a student reads only what the chapter prints.

    transformers and datasets log at error level only (e.g. the trainer's "The tokenizer has new
    PAD/BOS/EOS tokens" notice, which concerns generation models, not a retriever), transformers'
    own progress bars ("Writing model shards" at every save) are off, and tqdm's harmless
    "IProgress not found" warning (text bars instead of widgets) is filtered. Training keeps its one progress bar (:class:`~hybrid_utils.callbacks.TrainingProgressCallback`)
    and encoding its bars; errors still show.
    """
    warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm without ipywidgets: text bars
    try:
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
    except ImportError:  # pragma: no cover - transformers is a dependency
        pass
    try:
        import datasets

        datasets.logging.set_verbosity_error()
        datasets.disable_progress_bars()  # "Map: 100%" bars of small in-memory transforms
    except ImportError:  # pragma: no cover - datasets is a dependency
        pass
    logging.getLogger("sentence_transformers").setLevel(logging.ERROR)


def study_requested() -> bool:
    """True when the notebook runs as part of ``reproduce --study --notebooks`` (``$HYBRID_STUDY`` = 1)."""
    return os.environ.get(STUDY_ENV, "") == "1"


def requested_train_sets() -> list[str] | None:
    """The training sets of ``reproduce --train-sets ... --notebooks`` (``$HYBRID_TRAIN_SETS``), else None: all."""
    value = os.environ.get(TRAIN_SETS_ENV, "")
    return [name for name in value.split(",") if name] or None

def setup(profile: str | None = None, seed: int = NOTEBOOK_SEED) -> Profile:
    """Choose the run profile (argument, else ``$HYBRID_PROFILE``, else gpu/cpu by hardware), seed, style.

    Also sets the figures' style (:func:`hybrid_utils.plots.set_style`) and quiets library logging
    (:func:`quiet_libraries`).

    Where there is no clone (Colab: the package is pip-installed) and the profile reads the committed study
    (:data:`~hybrid_utils.committed_results.COMMITTED_PROFILES`), it fetches the committed ``results/`` into
    the working folder (:func:`committed_results_note`).

    Returns the :class:`~hybrid_utils.profiles.Profile`; prints one line saying which it is.
    """
    import numpy as np
    import pandas as pd

    chosen = get_profile(profile)
    here = os.getcwd()
    in_book = os.path.basename(here) in ("notebooks", "solutions")
    if in_book and os.path.exists(os.path.join(here, "..", "pyproject.toml")):
        os.chdir("..")  # results/ and runs/ are relative to the repository root, as for the CLI
    os.environ[PROFILE_ENV] = chosen.name  # helpers called later see the same profile
    random.seed(seed)
    np.random.seed(seed)
    try:
        import torch
        torch.manual_seed(seed)
        device = "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:  # pragma: no cover - torch is a dependency
        device = "cpu"
    pd.set_option("display.precision", 3)
    pd.set_option("display.max_colwidth", 120)
    quiet_libraries()
    from .plots import set_style

    set_style()
    note = committed_results_note(chosen)
    print(f"profile: {chosen.name} | models: {', '.join(chosen.models)} | device: {device}{note}")
    return chosen


def in_checkout(folder: str = ".") -> bool:
    """True when ``folder`` is the root of a copy of the repository (its ``results/`` comes from git)."""
    return os.path.isfile(os.path.join(folder, "pyproject.toml")) and os.path.isdir(os.path.join(folder, "hybrid_utils"))


def committed_results_note(profile: Profile) -> str:
    """Fetch the committed ``results/`` where a chapter needs them and no clone has them; say so in a few words.

    Only for the profiles that read the committed study, only outside a copy of the repository (there a
    missing ``results/`` was removed on purpose, or ``git checkout results`` restores it) and only when the
    folder is missing (:func:`~hybrid_utils.committed_results.ensure_committed_results` never touches an
    existing one). Returns ``""`` when nothing was to do, else ``" | committed results: ..."`` for setup's line.
    """
    from .committed_results import (COMMITTED_FOLDER, COMMITTED_PROFILES, CommittedResultsUnavailable,
                                    ensure_committed_results)

    if profile.name not in COMMITTED_PROFILES or os.path.exists(COMMITTED_FOLDER) or in_checkout():
        return ""
    fetched = []
    try:
        ensure_committed_results(COMMITTED_FOLDER, log=fetched.append)
    except CommittedResultsUnavailable as err:
        return f" | committed results: {err}"
    return f" | {fetched[0]}" if fetched else ""


#: Where ``benchmarks/notebooks.py`` records how long each chapter took (:func:`chapter_cost` reads it).
NOTEBOOK_TIMES = "results/notebook_times.json"
#: How a chapter ran: reading the committed results, or computing everything they hold first.
COMMITTED, FROM_SCRATCH = "committed results", "from scratch"
#: An entry of ``notebook_times.json`` that is not a measurement: the gpu study's time on a Colab T4 from operation
#: counts at an assumed speed (``benchmarks/notebooks.py`` writes it; chapter lines label it as an estimate)
ESTIMATE, GPU_STUDY = "estimate", "gpu study"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} seconds"
    if seconds < 90 * 60:
        return f"{seconds / 60:.1f} minutes"
    return f"{seconds / 3600:.1f} hours"


def _latest(entries: list, chapter: str, profile: str, mode: str) -> dict | None:
    """The most recent successful measurement of ``chapter`` (a name or its number prefix) in ``profile``/``mode``."""
    found = [e for e in entries if isinstance(e, dict) and e.get("ok", True) and e.get("profile") == profile
             and e.get("mode", COMMITTED) == mode and isinstance(e.get("seconds"), (int, float))
             and (e.get("chapter") == chapter  # a number names the chapter, not its worked solutions
                  or (e.get("kind", "chapter") == "chapter" and str(e.get("chapter", "")).startswith(f"{chapter}_")))]
    return max(found, key=lambda e: str(e.get("date", ""))) if found else None


def _when(entry: dict) -> str:
    machine = entry.get("machine") or {}
    where = machine.get("gpu") or machine.get("cpu") or "unknown machine"
    return f"(measured {entry.get('date') or 'on an unknown date'}, {where})"


def _measured(entry: dict) -> str:
    return f"{_duration(entry['seconds'])} {_when(entry)}"


def chapter_cost(chapter: str, path: str | os.PathLike = NOTEBOOK_TIMES, profile: str = "cpu") -> str:
    """One line on what running ``chapter`` costs, from the measurements in ``results/notebook_times.json``.

    ``chapter`` is a notebook's name (``"03_fine_tuning"``, ``"notebooks/03_fine_tuning.ipynb"``) or number
    (``"03"``). The line says how long the chapter took in ``profile`` with the committed results (and whether in a
    fresh clone, without the runs of ``reproduce``) and from scratch, and on a Colab T4 (the ``gpu`` profile), each
    as measured by ``benchmarks/notebooks.py`` (date and machine named) or "not measured yet": no number is ever
    made up.
    """
    import json
    from pathlib import Path

    name = Path(str(chapter)).name.removesuffix(".ipynb")
    try:
        entries = json.loads(Path(path).read_text(encoding="utf-8")).get("measurements", [])
    except (OSError, ValueError, AttributeError):
        entries = []
    committed = _latest(entries, name, profile, COMMITTED)
    if committed is not None:
        machine = committed.get("machine") or {}
        cores = machine.get("cpu_count")
        on = f"{cores} {machine.get('precision', 'fp32')} cores" if cores else f"a {machine.get('precision', '')} CPU"
        where = " in a fresh clone (no runs)" if committed.get("fresh_clone") else ""
        first = (f"On {' '.join(on.split())} this chapter took {_duration(committed['seconds'])} with the committed "
                 f"results{where} {_when(committed)}")
    else:
        first = f"With the committed results ({profile} profile) this chapter's time is not measured yet"
    scratch = _latest(entries, name, profile, FROM_SCRATCH)
    gpu = _latest(entries, name, "gpu", COMMITTED) or _latest(entries, name, "gpu", FROM_SCRATCH)
    return (f"{first}; from scratch: {_measured(scratch) if scratch else 'not measured yet'}; "
            f"on a Colab T4 (gpu profile): {_measured(gpu) if gpu else 'not measured yet' + _t4_estimate(entries)}.")


def _t4_estimate(entries: list) -> str:
    """`` (an estimate, not a measurement: ...)`` from the gpu study's estimate entry, or ``""`` without one."""
    found = [e for e in entries if isinstance(e, dict) and e.get("mode") == ESTIMATE and e.get("chapter") == GPU_STUDY
             and isinstance(e.get("seconds"), (int, float))]
    if not found:
        return ""
    latest = max(found, key=lambda e: str(e.get("date", "")))
    return (f" (an estimate, not a measurement: the gpu profile's `reproduce`, whose runs and evaluations chapters 3 "
            f"to 5 make on a fresh Colab, about {_duration(latest['seconds'])} from operation counts at an assumed T4 "
            f"speed, as `python -m hybrid_utils reproduce --profile gpu --dry-run` prints it; chapter 4's λ sweep "
            f"comes on top)")
