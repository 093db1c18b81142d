"""The package's shape (issue 19), read from the source with :mod:`ast`, so nothing is imported or run.

* the teaching core (every module outside ``hybrid_utils/study/``) never imports the study machinery, not
  even inside a function; ``hybrid_utils/__main__.py``, the command line's entry point, is the one exception;
* no two modules of the package import each other, directly or through others (no import cycle);
* no function is longer than :data:`MAX_FUNCTION_LINES` lines and no module longer than :data:`MAX_MODULE_LINES`.

Each check is a function of source text, and the ``*_sees_*`` tests feed it a made-up offender, so a check
that could never fail would fail here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "hybrid_utils"
STUDY = "hybrid_utils.study"
#: The command line's entry point may start the study's command line.
ENTRY_POINT = "hybrid_utils.__main__"

#: Lines of a function's code; its docstring is not counted (the docstrings that explain why are wanted).
MAX_FUNCTION_LINES = 80
#: Lines of a module, everything counted.
MAX_MODULE_LINES = 500


def module_name(path: Path) -> str:
    """``hybrid_utils/study/plan.py`` -> ``hybrid_utils.study.plan`` (a package's ``__init__`` is the package)."""
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def imported_modules(source: str, name: str, package: bool = False) -> set[str]:
    """Every module named by an import anywhere in ``source`` (inside functions too), relative ones resolved.

    ``from x import y`` counts as importing ``x`` and, when ``x.y`` is a module, that too (the caller filters).
    """
    own_package = name.split(".") if package else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = own_package[:len(own_package) - node.level + 1]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def package_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def import_graph() -> dict[str, set[str]]:
    """``{module: the package's modules it imports}``."""
    modules = package_modules()
    return {name: {m for m in imported_modules(path.read_text(encoding="utf-8"), name, is_package(path))
                   if m in modules and m != name}
            for name, path in modules.items()}


def is_study(module: str) -> bool:
    return module == STUDY or module.startswith(STUDY + ".")


def study_imports_of_core(graph: dict[str, set[str]]) -> dict[str, list[str]]:
    """``{core module: the study modules it imports}`` for every core module that imports one."""
    return {name: sorted(m for m in imported if is_study(m))
            for name, imported in graph.items()
            if not is_study(name) and name != ENTRY_POINT and any(is_study(m) for m in imported)}


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    cycles.append(sorted(component))
    return cycles


def long_functions(source: str, limit: int = MAX_FUNCTION_LINES) -> list[tuple[str, int, int]]:
    """``(name, first line, lines of code)`` of every function (methods, nested ones) over ``limit`` lines.

    A function's lines run from its first statement after the docstring to its last line.
    """
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            has_docstring = (isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                             and isinstance(body[0].value.value, str))
            code = body[1:] if has_docstring else body
            if not code:
                continue
            lines = node.end_lineno - code[0].lineno + 1
            if lines > limit:
                found.append((node.name, node.lineno, lines))
    return found


# --------------------------------------------------------------------------- the checks see what they look for

def test_the_import_check_sees_an_import_inside_a_function():
    source = "import os\n\ndef run():\n    from .study.reproduce import reproduce\n    return reproduce\n"
    modules = {"hybrid_utils.widgets", "hybrid_utils.study.reproduce"}
    graph = {"hybrid_utils.widgets": imported_modules(source, "hybrid_utils.widgets") & modules,
             "hybrid_utils.study.reproduce": set()}
    assert study_imports_of_core(graph) == {"hybrid_utils.widgets": ["hybrid_utils.study.reproduce"]}


def test_the_import_check_resolves_relative_imports_from_the_study():
    imported = imported_modules("from ..data import load_lareqa\nfrom . import stats\n", "hybrid_utils.study.report")
    assert {"hybrid_utils.data", "hybrid_utils.study.stats"} <= imported


def test_the_cycle_check_sees_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert import_cycles(graph) == [["a", "b", "c"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []


def test_the_length_check_sees_a_long_function_but_not_its_docstring():
    docstring = '    """' + "\n".join(["why"] * 200) + '"""\n'
    short = "def short():\n" + docstring + "    return 1\n"
    long = "def long():\n" + "".join(f"    x{i} = {i}\n" for i in range(81))
    assert long_functions(short) == []
    assert long_functions(long) == [("long", 1, 81)]


# --------------------------------------------------------------------------- the package

def test_the_study_exists():
    assert (PACKAGE / "study" / "__init__.py").is_file()


def test_the_core_never_imports_the_study():
    offenders = study_imports_of_core(import_graph())
    assert not offenders, f"core modules that import hybrid_utils.study: {offenders}"


def test_no_import_cycle():
    cycles = import_cycles(import_graph())
    assert not cycles, f"import cycles: {cycles}"


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_long_module_or_function(path):
    source = path.read_text(encoding="utf-8")
    assert len(source.splitlines()) <= MAX_MODULE_LINES, f"{path.name} has {len(source.splitlines())} lines"
    assert long_functions(source) == [], f"functions over {MAX_FUNCTION_LINES} lines of code in {path.name}"


# --------------------------------------------------------------------------- the chapters' API

def top_level_names(path: Path) -> set[str]:
    """The names a module defines itself (functions, classes, assignments), not the ones it imports."""
    names = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
    return names


def test_every_api_name_comes_from_the_core_module_that_defines_it():
    import hybrid_utils

    for name, module in hybrid_utils.API.items():
        path = PACKAGE / f"{module}.py"
        assert path.is_file(), f"{name}: no core module {module}"
        assert name in top_level_names(path), f"{name} is not defined in hybrid_utils/{module}.py"
    for module in hybrid_utils.MODULES:
        assert (PACKAGE / f"{module}.py").is_file()


def test_the_chapters_api_imports():
    from hybrid_utils import HybridBatchSampler, evaluate_lareqa, load_lareqa
    import hybrid_utils as hu

    assert hu.load_lareqa is load_lareqa and hu.HybridBatchSampler is HybridBatchSampler
    assert hu.evaluate_lareqa is evaluate_lareqa
    assert hu.plots.__name__ == "hybrid_utils.plots"
    with pytest.raises(AttributeError):
        hu.no_such_name  # noqa: B018


def notebook_imports(path: Path) -> list[tuple[str, str]]:
    """``(module, name)`` of every ``from hybrid_utils... import name`` in the code cells of a notebook."""
    import json

    found = []
    for cell in json.loads(path.read_text(encoding="utf-8"))["cells"]:
        if cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"])
        # IPython's magics and shell escapes are not Python: an indented ``pass`` takes their place
        code = "\n".join(line[:len(line) - len(line.lstrip())] + "pass" if line.lstrip().startswith(("%", "!"))
                         else line for line in source.splitlines())
        for node in ast.walk(ast.parse(code)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("hybrid_utils"):
                found += [(node.module, alias.name) for alias in node.names]
    return found


def test_chapters_import_no_private_names():
    root = PACKAGE.parent
    notebooks = sorted((root / "notebooks").glob("*.ipynb")) + sorted((root / "solutions").glob("*.ipynb"))
    assert notebooks
    private = [(path.name, module, name) for path in notebooks for module, name in notebook_imports(path)
               if name.startswith("_")]
    assert not private


def test_a_chapter_that_calls_a_helper_reaching_the_run_folders_runs_in_the_smoke_group():
    """conftest puts a notebook in the smoke group (one worker, after the smoke study) when its code names a call of
    ``SMOKE_FOLDER_CALLS``; a tutorial helper that trains or reads runs and results must be one of them, or its
    chapter runs beside the smoke study in the other worker and both train the same run folder."""
    import inspect

    import conftest
    from hybrid_utils import tutorial

    reaching = ("ensure_run(", "ensure_result(", "load_seed_results(", "load_results(")
    helpers = {name for name, function in inspect.getmembers(tutorial, inspect.isfunction)
               if function.__module__ == tutorial.__name__ and any(c in inspect.getsource(function) for c in reaching)}
    assert {"chapter_runs", "chapter_evaluations", "lambda_sweep_runs"} <= helpers
    assert helpers <= set(conftest.SMOKE_FOLDER_CALLS)
    chapter_3 = PACKAGE.parent / "notebooks" / "03_fine_tuning.ipynb"
    assert conftest._notebook_group(chapter_3) is conftest.SMOKE_GROUP
