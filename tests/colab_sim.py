"""A Colab-like run of the chapters: the package installed from the repository, no clone, an empty working folder.

On Colab the first cell of every chapter runs ``pip install "hybrid-batch-tutorials @ git+<repository>"``: the
package is built from the repository and installed (not editable), and the notebook runs in ``/content``,
where there is no ``results/``, no ``runs/`` and no ``hybrid_utils/`` folder. This does the same, offline:

1. copies the repository's files as a clone would have them (``git ls-files``: committed and new, not ignored;
   edits not yet committed included) to a temporary folder;
2. creates a virtual environment with ``--system-site-packages`` (the dependencies come from the current
   environment, nothing is downloaded) and ``pip install --no-deps --no-build-isolation`` the copy into it:
   a built, non-editable install, checked to import ``hybrid_utils`` from the venv's ``site-packages``;
3. executes every chapter ``notebooks/0*.ipynb`` (``HYBRID_PROFILE=smoke``) with nbclient in a kernel of the
   venv's python, each copied alone into its own empty working folder (a fresh Colab runtime per notebook),
   and checks in that kernel that ``hybrid_utils`` came from the venv.

Run it from the repository root, e.g. ``python tests/colab_sim.py`` (every chapter) or
``python tests/colab_sim.py --only 03 05 --keep``; ``tests/test_colab_install.py`` runs it under pytest.
The converted bundled encoder is read from the usual cache (``~/.cache/hybrid_utils``) unless
``--fresh-cache`` (a Colab runtime converts it on first use, one more minute or two).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KERNEL_NAME = "colab-sim"
#: the probe cell run after each chapter, in the same kernel: where hybrid_utils was imported from
PROBE = ("import os, sys, hybrid_utils\n"
         "print('COLAB-SIM', repr(hybrid_utils.__file__), repr(sys.executable), repr(os.getcwd()))")
PROBE_LINE = re.compile(r"COLAB-SIM ('.*') ('.*') ('.*')")
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
#: environment variables a clean Colab runtime does not have, which would change what a chapter does
NOT_ON_COLAB = ("PYTHONPATH", "HYBRID_STUDY", "HYBRID_TRAIN_SETS", "HYBRID_RESULTS_URL", "JUPYTER_PATH", "HYBRID_SMOKE_DIR")


def children_cpu_seconds() -> float:
    """CPU seconds of this process's finished children (a kernel counts once it has exited)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class ChapterRun:
    chapter: str
    seconds: float
    cpu_seconds: float = 0.0  # the kernel's CPU time: what the chapter costs, whatever else runs on the machine
    error: str | None = None
    hybrid_utils_file: str | None = None
    executable: str | None = None
    cwd: str | None = None


def chapters(root: Path = ROOT, only=()) -> list[Path]:
    """``notebooks/0*.ipynb``, or those whose name starts with one of ``only`` (``["03", "05"]``)."""
    found = sorted((root / "notebooks").glob("0*.ipynb"))
    return [p for p in found if not only or any(p.name.startswith(prefix) for prefix in only)]


def copy_as_cloned(root: Path, dest: Path) -> Path:
    """The files a clone of ``root`` would have (tracked and new, not ignored, as they are now) in ``dest``."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                            check=True, capture_output=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        origin = root / name
        if origin.is_file():  # a tracked file deleted in the working tree is left out, as a commit would
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, dest / name)
    return dest


def make_venv(folder: Path) -> Path:
    """A venv that sees the current environment's packages (``--system-site-packages``); returns its python."""
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(folder)],
                   check=True)
    return folder / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def install(python: Path, source: Path, log=print) -> None:
    """``pip install --no-deps --no-build-isolation source``: built and installed, not editable."""
    command = [str(python), "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-cache-dir",
               "--disable-pip-version-check", "--no-input", "--quiet", str(source)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=source.parent)
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}")
    log(f"installed {source.name} into {python.parent.parent} (non-editable)")


def installed_location(python: Path, cwd: Path) -> dict:
    """Where the venv's python imports ``hybrid_utils`` from, its site-packages, and the install's direct_url."""
    code = ("import json, site, sys, hybrid_utils, importlib.metadata as m\n"
            "d = m.distribution('hybrid-batch-tutorials')\n"
            "print(json.dumps({'file': hybrid_utils.__file__, 'site_packages': site.getsitepackages(),"
            " 'prefix': sys.prefix, 'dist': str(d._path), 'direct_url': d.read_text('direct_url.json')}))")
    env = {k: v for k, v in os.environ.items() if k not in NOT_ON_COLAB}
    done = subprocess.run([str(python), "-c", code], cwd=cwd, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def check_install(python: Path, cwd: Path) -> dict:
    """Raise unless ``hybrid_utils`` and its distribution are the venv's own, non-editable install."""
    where = installed_location(python, cwd)
    venv = Path(where["prefix"]).resolve()
    problems = []
    if not Path(where["file"]).resolve().is_relative_to(venv):
        problems.append(f"hybrid_utils imported from {where['file']}, not from the venv {venv}")
    if "site-packages" not in Path(where["file"]).parts:
        problems.append(f"hybrid_utils imported from {where['file']}, not from a site-packages folder")
    if not Path(where["dist"]).resolve().is_relative_to(venv):
        problems.append(f"the distribution found first is {where['dist']}, outside the venv")
    if json.loads(where["direct_url"] or "{}").get("dir_info", {}).get("editable"):
        problems.append("the install is editable")
    if problems:
        raise AssertionError("; ".join(problems))
    return where


def kernel_manager(python: Path, folder: Path):
    """A kernel manager whose kernel is ``python`` (a kernelspec of its own, not the environment's python3)."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    spec = folder / KERNEL_NAME
    spec.mkdir(parents=True, exist_ok=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Colab simulation", "language": "python"}))
    return KernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(folder)]))


def kernel_env(profile: str = "smoke", cache: Path | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in NOT_ON_COLAB}
    env.update(HYBRID_PROFILE=profile, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               PYTHONUNBUFFERED="1")
    if cache is not None:
        env["HYBRID_UTILS_CACHE"] = str(cache)
    return env


def short_error(err: BaseException, lines: int = 40) -> str:
    text = ANSI.sub("", str(err)).strip().splitlines()
    return "\n".join(text[-lines:]) if len(text) > lines else "\n".join(text)


def run_chapter(python: Path, notebook: Path, work: Path, env: dict, kernels: Path, timeout: int = 1800) -> ChapterRun:
    """Execute ``notebook``, copied alone into the empty folder ``work``, in a kernel of ``python``.

    ``kernels`` is the folder for the kernelspec of ``python`` (outside ``work``).
    """
    import nbformat
    from nbclient import NotebookClient

    work.mkdir(parents=True, exist_ok=False)
    copy = work / notebook.name
    shutil.copy2(notebook, copy)
    nb = nbformat.read(copy, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(PROBE))
    km = kernel_manager(python, kernels)
    client = NotebookClient(nb, timeout=timeout, km=km, resources={"metadata": {"path": str(work)}})
    start, cpu_start = time.perf_counter(), children_cpu_seconds()
    run = ChapterRun(notebook.stem, 0.0)
    try:
        client.execute(env=env)
    except Exception as err:  # noqa: BLE001 - any failure of the chapter is the report
        run.error = short_error(err)
    finally:
        run.seconds = time.perf_counter() - start
        if km.has_kernel:  # a kernel manager passed in is not shut down by nbclient
            km.shutdown_kernel(now=True)
        run.cpu_seconds = children_cpu_seconds() - cpu_start
    nbformat.write(nb, work / f"executed_{notebook.name}")
    if run.error is None:
        outputs = "".join(o.get("text", "") for o in nb.cells[-1].get("outputs", []) if o.get("name") == "stdout")
        found = PROBE_LINE.search(outputs)
        if found is None:
            run.error = f"the probe cell printed no location: {outputs!r}"
        else:
            run.hybrid_utils_file, run.executable, run.cwd = (eval(g) for g in found.groups())  # noqa: S307 - repr()s
    return run


def check_chapter(run: ChapterRun, venv: Path, work: Path) -> str | None:
    """What is wrong with a chapter's run: its error, or a kernel that imported hybrid_utils from elsewhere."""
    if run.error:
        return run.error
    if not Path(run.hybrid_utils_file).resolve().is_relative_to(venv.resolve()):
        return f"the kernel imported hybrid_utils from {run.hybrid_utils_file}, not from the venv {venv}"
    if Path(run.cwd).resolve() != work.resolve():
        return f"the kernel ran in {run.cwd}, not in {work}"
    return None


class Simulation:
    """The venv with the built package, and a folder per chapter. ``with Simulation(...) as sim: sim.run(nb)``."""

    def __init__(self, root: Path = ROOT, work: Path | None = None, fresh_cache: bool = False, log=print):
        self.root, self.log, self.fresh_cache = Path(root), log, fresh_cache
        self.work = Path(work) if work else Path(tempfile.mkdtemp(prefix="colab-sim-"))
        self.keep = work is not None

    def __enter__(self):
        start = time.perf_counter()
        source = copy_as_cloned(self.root, self.work / "hybrid-batch-tutorials")
        self.venv = self.work / "venv"
        self.python = make_venv(self.venv)
        install(self.python, source, log=self.log)
        # the chapters of the same snapshot as the package (others may be editing the checkout meanwhile)
        self.notebooks = self.work / "notebooks"
        shutil.copytree(source / "notebooks", self.notebooks)
        shutil.rmtree(source)  # what remains of the repository is the installed package, as on Colab
        self.location = check_install(self.python, self.work)
        self.log(f"hybrid_utils imports from {self.location['file']}")
        self.env = kernel_env("smoke", self.work / "cache" if self.fresh_cache else None)
        self.setup_seconds = time.perf_counter() - start
        return self

    def __exit__(self, *exc):
        if not self.keep:
            shutil.rmtree(self.work, ignore_errors=True)

    def chapters(self, only=()) -> list[Path]:
        """The chapters copied with the package (``notebooks/0*.ipynb`` of the same snapshot)."""
        return chapters(self.work, only)

    def run(self, notebook: str | Path) -> ChapterRun:
        """Execute the snapshot's chapter of that name (``"03_fine_tuning"`` or a path whose name it is)."""
        notebook = self.notebooks / f"{Path(notebook).stem}.ipynb"
        folder = self.work / "content" / notebook.stem  # /content of a fresh runtime
        run = run_chapter(self.python, notebook, folder, self.env, kernels=self.work / "kernels")
        run.error = check_chapter(run, self.venv, folder)
        self.log(f"{run.chapter}: {run.seconds:.0f} s wall-clock, {run.cpu_seconds:.0f} s CPU"
                 + (f"\n  FAILED: {run.error}" if run.error else ""))
        return run


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=(), help="chapter prefixes, e.g. 03 05 (default: all)")
    parser.add_argument("--keep", metavar="FOLDER", help="work in FOLDER (must not exist) and keep it")
    parser.add_argument("--fresh-cache", action="store_true", help="convert the bundled encoder anew, as Colab does")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    log = functools.partial(print, flush=True)
    with Simulation(work=Path(args.keep) if args.keep else None, fresh_cache=args.fresh_cache, log=log) as sim:
        runs = [sim.run(path) for path in sim.chapters(args.only)]
        print(f"set-up (copy, venv, build and install): {sim.setup_seconds:.0f} s")
    failed = [r for r in runs if r.error]
    print(f"{len(runs) - len(failed)} of {len(runs)} chapters ran; total {time.perf_counter() - start:.0f} s "
          f"wall-clock, chapters' kernels {sum(r.cpu_seconds for r in runs):.0f} s CPU")
    for run in failed:
        print(f"FAILED {run.chapter}:\n{run.error}")
    return 1 if failed or not runs else 0


if __name__ == "__main__":
    sys.exit(main())
