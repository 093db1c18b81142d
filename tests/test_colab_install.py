"""Every chapter runs as on Colab: the package built and installed (not editable), no clone, an empty folder.

The work is done by ``tests/colab_sim.py`` (see its docstring; ``python tests/colab_sim.py`` runs it alone):
a venv with ``--system-site-packages`` gets ``pip install --no-deps --no-build-isolation`` of a copy of the
repository, and each chapter is executed in the ``smoke`` profile, copied alone into an empty working folder,
by a kernel of that venv.

It takes long (every chapter trains and evaluates its own smoke runs from an empty folder: about 17 CPU-minutes,
33 minutes wall-clock on 2 busy cores), so ``conftest.py`` skips it unless asked for:
``python -m pytest -m colab -n 0 tests/test_colab_install.py`` (``-s`` prints each chapter's time) or
``HYBRID_COLAB_SIM=1``.
"""

from pathlib import Path

import pytest

from colab_sim import ROOT, Simulation, chapters

pytestmark = pytest.mark.colab

CHAPTERS = chapters(ROOT)


@pytest.fixture(scope="module")
def simulation(tmp_path_factory):
    with Simulation(ROOT, work=tmp_path_factory.mktemp("colab-sim"), log=lambda line: None) as sim:
        yield sim


def test_there_are_chapters():
    assert len(CHAPTERS) >= 7


def test_the_install_is_built_not_editable(simulation):
    where = simulation.location
    venv = simulation.venv.resolve()
    assert Path(where["file"]).resolve().is_relative_to(venv) and "site-packages" in Path(where["file"]).parts
    assert not Path(where["file"]).resolve().is_relative_to(ROOT)
    assert not list(venv.rglob("__editable__*")) and not list(venv.rglob("*.egg-link"))
    # the data the chapters load came with the package
    assert list((Path(where["file"]).parent / "data" / "lareqa" / "xquad-r").glob("*.json.xz"))


def test_the_snapshot_has_the_same_chapters(simulation):
    assert [p.name for p in simulation.chapters()] == [p.name for p in CHAPTERS]


@pytest.mark.parametrize("notebook", CHAPTERS, ids=lambda p: p.stem)
def test_the_chapter_runs_as_on_colab(simulation, notebook):
    run = simulation.run(notebook.stem)  # the copy taken with the package
    print(f"{run.chapter}: {run.seconds:.0f} s wall-clock, {run.cpu_seconds:.0f} s CPU (kernel)")  # shown with -s
    assert run.error is None, f"{run.chapter} failed in the Colab-like install:\n{run.error}"
