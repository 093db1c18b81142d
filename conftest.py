"""Test-wide settings; they reach the notebook kernels nbval starts, too."""
import functools
import json
import os
import shutil
import tempfile

import pytest

# The notebooks run in the fast smoke profile under the tests, and never reach a model hub.
os.environ.setdefault("HYBRID_PROFILE", "smoke")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

#: One empty folder per test session holds every ``smoke`` run and result (hybrid_utils.profiles.SMOKE_DIR_ENV):
#: the smoke study is trained once (fixture ``smoke_study``) and the unit tests and the chapters under nbval reuse
#: its runs, as a reader's chapters reuse ``reproduce``'s. Nothing is left from an earlier session or code version.
SMOKE_DIR_ENV = "HYBRID_SMOKE_DIR"
_OWN_SMOKE_DIR = SMOKE_DIR_ENV not in os.environ
if _OWN_SMOKE_DIR:
    os.environ[SMOKE_DIR_ENV] = tempfile.mkdtemp(prefix="hybrid-smoke-")

#: Under pytest-xdist (``-n 2``, the test command's addopts) each worker computes with one thread: two workers with a
#: thread per core each oversubscribe 2 cores (measured slower than one process). The notebook kernels a worker
#: starts inherit it.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"

#: Tests that train into or read the session's smoke folder, and the chapters that reuse its runs, run in one
#: worker, one after the other (``--dist loadgroup``): two processes must never train the same run folder.
SMOKE_GROUP = pytest.mark.xdist_group("smoke-folder")
SMOKE_MODULES = ("test_reproduce.py", "test_alpha_sweep.py")
#: A notebook whose code calls none of these never reads or writes the smoke folder (runs, results): it runs in a
#: group of its own, beside the smoke group, so that the two workers share the work more evenly. A notebook that
#: reaches the folder some other way needs its call named here.
SMOKE_FOLDER_CALLS = ("ensure_run", "ensure_result", "lambda_sweep_runs", "run_dir", "runs_dir", "results_dir",
                      "reproduce", "load_results", "load_seed_results", "chapter_runs", "chapter_evaluations")


@functools.lru_cache(maxsize=None)  # once per notebook, not once per cell
def _notebook_group(path):
    """The xdist group of a notebook: the smoke group, or its own (one kernel runs all its cells, in one worker)."""
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    code = "\n".join("".join(cell["source"]) for cell in cells if cell["cell_type"] == "code")
    uses_folder = any(name in code for name in SMOKE_FOLDER_CALLS)
    return SMOKE_GROUP if uses_folder else pytest.mark.xdist_group(f"notebook-{path.stem}")

#: ``tests/test_colab_install.py`` (marker ``colab``) builds the package into a fresh venv and runs every chapter
#: from an empty folder: about 17 CPU-minutes on 2 cores, too long for every test run. It runs when asked for:
#: ``python -m pytest -m colab -n 0 tests/test_colab_install.py`` or ``HYBRID_COLAB_SIM=1`` (CI does, after the tests).
COLAB_SIM_ENV = "HYBRID_COLAB_SIM"


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own hook reads the groups (its plugin registers later)
def pytest_collection_modifyitems(config, items):
    for item in items:
        path = item.path
        if path.suffix == ".ipynb":
            item.add_marker(_notebook_group(path))
        elif path.name in SMOKE_MODULES or "smoke_study" in getattr(item, "fixturenames", ()):
            item.add_marker(SMOKE_GROUP)
    if os.environ.get(COLAB_SIM_ENV) == "1" or "colab" in (config.getoption("markexpr", "") or ""):
        return
    skip = pytest.mark.skip(reason=f"the Colab-like install takes long: run with -m colab or {COLAB_SIM_ENV}=1")
    for item in items:
        if "colab" in item.keywords:
            item.add_marker(skip)


def pytest_sessionfinish(session, exitstatus):
    if _OWN_SMOKE_DIR:
        shutil.rmtree(os.environ[SMOKE_DIR_ENV], ignore_errors=True)


@pytest.fixture(scope="session")
def smoke_study():
    """The committed-study path in miniature, once per session: 2 seeds per method, the lambda sweep, comparisons.

    ``(profile, summary, progress lines)`` of ``reproduce(smoke, methods=[monolingual, hybrid, adversarial],
    study=True)`` in the session's smoke folder; later tests and chapters reuse its runs.
    """
    from hybrid_utils.profiles import get_profile
    from hybrid_utils.study.reproduce import reproduce

    profile = get_profile("smoke")
    lines = []
    summary = reproduce(profile, methods=["monolingual", "hybrid", "adversarial"], study=True, log=lines.append)
    return profile, summary, lines
