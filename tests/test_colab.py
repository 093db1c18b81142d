"""One setting, ``hybrid_utils.notebook.REPOSITORY_URL``, drives every Colab badge and install cell.

The first code cell of every notebook installs the package on Colab and does nothing elsewhere. It is
run here for real (after IPython turns its ``!pip`` line into Python), once without and once with a
stand-in ``google.colab`` module; the shell command is recorded, never executed.
"""
import json
import re
import sys
import tomllib
import types
from pathlib import Path

import pytest
from IPython.core.inputtransformer2 import TransformerManager

from hybrid_utils.notebook import (
    DISTRIBUTION, REPOSITORY_URL, colab_badge, colab_install_spec, colab_url,
)

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb")) + sorted((ROOT / "solutions").glob("*.ipynb"))
COLAB_LINK = re.compile(r"https://colab\.research\.google\.com/github/[^)\s\"']+")
GIT_INSTALL = re.compile(r"git\+(https://[^\s\"']+)")


def _cells(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def _source(cell: dict) -> str:
    return "".join(cell["source"])


def install_cell(path: Path) -> str:
    """The source of the notebook's first code cell."""
    return next(_source(c) for c in _cells(path) if c["cell_type"] == "code")


class RecordingShell:
    """Stands in for IPython's shell: records ``!command`` lines instead of running them."""

    def __init__(self):
        self.commands = []

    def system(self, command):
        self.commands.append(command)


def run_install_cell(source: str) -> list[str]:
    """Execute an install cell's code as IPython would; returns the shell commands it asked for."""
    shell = RecordingShell()
    code = TransformerManager().transform_cell(source)
    exec(compile(code, "<install cell>", "exec"), {"get_ipython": lambda: shell})
    return shell.commands


def test_the_setting_names_this_package():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["name"] == DISTRIBUTION
    assert REPOSITORY_URL.startswith("https://github.com/") and not REPOSITORY_URL.endswith("/")
    assert colab_install_spec() == f"{DISTRIBUTION} @ git+{REPOSITORY_URL}"
    assert colab_url("notebooks/01_datasets.ipynb") == (
        "https://colab.research.google.com/github/" + REPOSITORY_URL.removeprefix("https://github.com/")
        + "/blob/main/notebooks/01_datasets.ipynb")


def test_there_are_notebooks_to_check():
    assert len([p for p in NOTEBOOKS if p.parent.name == "notebooks"]) >= 5


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_badge_and_install_cell_use_the_setting(path):
    relative = path.relative_to(ROOT).as_posix()
    first_markdown = next(_source(c) for c in _cells(path) if c["cell_type"] == "markdown")
    assert colab_badge(relative) in first_markdown, f"{relative}: badge must be {colab_badge(relative)}"
    links = {link for cell in _cells(path) for link in COLAB_LINK.findall(_source(cell))}
    assert links == {colab_url(relative)}, f"{relative}: Colab links {links}"
    installs = GIT_INSTALL.findall(install_cell(path))
    assert installs == [REPOSITORY_URL], f"{relative}: the install cell must install from {REPOSITORY_URL}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_install_cell_is_a_no_op_locally_and_installs_on_colab(path, monkeypatch):
    source = install_cell(path)
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    assert run_install_cell(source) == []
    google = types.ModuleType("google")
    google.colab = types.ModuleType("google.colab")
    widget_managers = []
    google.colab.output = types.SimpleNamespace(enable_custom_widget_manager=lambda: widget_managers.append(True))
    monkeypatch.setitem(sys.modules, "google", google)
    monkeypatch.setitem(sys.modules, "google.colab", google.colab)
    commands = run_install_cell(source)
    assert len(commands) == 1 and commands[0].split()[:3] == ["pip", "-q", "install"]
    assert f'"{colab_install_spec()}"' in commands[0]
    if "search_widget" in path.read_text(encoding="utf-8"):  # Colab shows ipywidgets only with its widget manager on
        assert widget_managers == [True], f"{path.name}: the install cell must enable Colab's custom widget manager"


def test_readme_badges_use_the_setting():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    links = COLAB_LINK.findall(readme)
    assert len(links) >= 5
    for link in links:
        notebook = link.split("/blob/main/", 1)[-1]
        assert link == colab_url(notebook) and (ROOT / notebook).exists(), link
    assert {link.split("/blob/main/")[1] for link in links} >= {
        p.relative_to(ROOT).as_posix() for p in NOTEBOOKS if p.parent.name == "notebooks"}
