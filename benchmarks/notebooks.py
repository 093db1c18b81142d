"""How long each chapter takes: every notebook executed in a fresh kernel, wall-clock seconds recorded.

Each chapter (``notebooks/0*.ipynb``; with ``--solutions`` also ``solutions/*.ipynb``) runs with papermill in a
new kernel, in the chosen profile (``$HYBRID_PROFILE``), from its own folder as Jupyter would run it
(``setup()`` then works from the repository root). The seconds, the date and the machine (CPU model, whether
it has AMX bf16 tiles, cores, torch threads, the precision the profile then uses) go to ``--out``, which
:func:`hybrid_utils.notebook.chapter_cost` reads for the line each chapter prints about its cost.

* By default (``"committed results"``) each chapter runs as in a fresh clone: in a temporary folder of its own
  that holds a copy of the committed ``results/`` (the files git tracks) and no ``runs/``, with the package
  cache (``$HYBRID_UTILS_CACHE``) as it is, so warm after a first run. Chapters that show training then train
  chapter-sized runs (:func:`hybrid_utils.tutorial.chapter_runs`), as they do for a new user; ``--in-checkout``
  runs them in the checkout instead, with whatever runs it holds (not a fresh clone's time).
* ``--write`` writes each executed notebook back in place (only when it ran without error), so the committed
  outputs and the recorded times come from one run; ``--keep-outputs DIR`` copies each executed notebook into
  ``DIR`` instead, in any mode (to read what a from-scratch run showed).
* ``--from-scratch`` runs the chapters, in book order, in a temporary folder with an empty ``results/``, no
  ``runs/`` and an empty package cache (``$HYBRID_UTILS_CACHE``: the converted model, the embedding and
  frozen-layer stores), as on a fresh clone on a new machine: everything the chapters read is computed first, the
  bundled model is converted by the first chapter that loads it. Not with ``--write``.

``seconds`` are wall-clock, which other processes on the machine stretch: the load average before and after
each chapter is recorded, and ``cpu_seconds``, the kernel's own CPU time, which they do not change much.
``slowest_cells`` names the cells that took longest, where a chapter's time goes.

    python benchmarks/notebooks.py                                   # every chapter, cpu profile
    python benchmarks/notebooks.py --only 03 05 --write              # two chapters, outputs written back
    python benchmarks/notebooks.py --profile smoke --only 01 --out /tmp/times.json

``--out`` (default ``results/notebook_times.json``) holds ``{"measurements": [...]}``, one entry per chapter,
profile and mode (``"committed results"`` or ``"from scratch"``), and the gpu study's estimated time on a Colab T4
(:func:`t4_estimate`, ``"mode": "estimate"``); a new measurement replaces the old one::

    {"chapter": "03_fine_tuning", "kind": "chapter", "profile": "cpu", "mode": "committed results",
     "seconds": 252.1, "cpu_seconds": 431.0, "ok": true, "error": null, "written": true, "date": "2026-12-06",
     "load_average": [1.9, 2.1], "fresh_clone": true,
     "machine": {"cpu": "AMD EPYC", "cpu_count": 2, "amx_bf16": false, "torch_threads": 2,
                 "precision": "fp32", "gpu": null}}
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # hybrid_utils from this checkout

from hybrid_utils.notebook import COMMITTED, ESTIMATE, FROM_SCRATCH, GPU_STUDY, NOTEBOOK_TIMES  # noqa: E402
from hybrid_utils.profiles import get_profile  # noqa: E402
from hybrid_utils.study.run_notebooks import notebook_environment  # noqa: E402


def notebooks(only=(), solutions: bool = False, root: Path = ROOT) -> list[Path]:
    """The chapters (and worked solutions) in book order, or those whose name starts with one of ``only``."""
    found = sorted((root / "notebooks").glob("0*.ipynb"))
    if solutions:
        found += sorted((root / "solutions").glob("*.ipynb"))
    return [p for p in found if not only or any(p.name.startswith(prefix) for prefix in only)]


def fresh_clone(folder: Path, root: Path = ROOT) -> Path:
    """``folder`` as a fresh clone looks to a chapter: the committed ``results/`` (the files git tracks, else the
    whole folder), no ``runs/``. Returns ``folder``."""
    try:
        tracked = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "results"], check=True,
                                 capture_output=True, text=True).stdout.split("\0")
    except (OSError, subprocess.CalledProcessError):
        tracked = []
    tracked = [name for name in tracked if name and (root / name).is_file()]
    if not tracked:
        shutil.copytree(root / "results", folder / "results")
    for name in tracked:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root / name, folder / name)
    return folder


def cpu_info() -> tuple[str, bool]:
    """The CPU's model name and whether it has AMX bf16 tiles (``lscpu``, else ``/proc/cpuinfo``)."""
    text = ""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        model, flags = fields.get("Model name", "").strip(), fields.get("Flags", "").split()
    except (OSError, subprocess.CalledProcessError):
        model, flags = "", []
    if not model or not flags:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
        for line in cpuinfo.splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and not model:
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = value.split()
    return model or platform.processor() or platform.machine(), "amx_bf16" in flags


def machine(profile) -> dict:
    import torch

    cpu, amx = cpu_info()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    precision = {"fp32": "fp32", "bf16": "bf16"}.get(profile.precision) or ("bf16" if amx else "fp32")
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "amx_bf16": amx, "torch_threads": torch.get_num_threads(),
            "precision": "gpu" if gpu else precision, "gpu": gpu}


def execute(path: Path, profile: str, cwd: Path, output: Path, timeout: int) -> str | None:
    """Run ``path`` in a fresh kernel (papermill) into ``output``; the error as text, None when it ran."""
    import papermill

    try:
        with notebook_environment(profile):  # the kernel inherits it; the notebook keeps PROFILE = None
            papermill.execute_notebook(str(path), str(output), cwd=str(cwd), progress_bar=False,
                                       execution_timeout=timeout)
        return None
    except Exception as err:  # noqa: BLE001 - a failed chapter is recorded, the others still run
        return f"{type(err).__name__}: {err}".strip()[-2000:]


def children_cpu_seconds() -> float:
    """CPU seconds of this process's finished children: the kernels, counted once they have exited."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def slowest_cells(executed: Path, count: int = 5) -> list[dict]:
    """The ``count`` code cells that took longest (papermill's per-cell duration) and their first line."""
    import nbformat

    if not executed.exists():
        return []
    cells = [{"cell": index, "seconds": round(cell.metadata.get("papermill", {}).get("duration") or 0.0, 1),
              "first_line": cell.source.strip().splitlines()[0][:80] if cell.source.strip() else ""}
             for index, cell in enumerate(nbformat.read(executed, as_version=4).cells) if cell.cell_type == "code"]
    return sorted(cells, key=lambda cell: -cell["seconds"])[:count]


def measure(path: Path, profile, mode: str, cwd: Path, write: bool, timeout: int, info: dict,
            fresh_clone: bool = False, keep: Path | None = None) -> dict:
    with tempfile.TemporaryDirectory(prefix="notebook-times-") as tmp:
        output = Path(tmp) / path.name
        load_before = os.getloadavg()[0]
        start, cpu_start = time.perf_counter(), children_cpu_seconds()
        error = execute(path, profile.name, cwd, output, timeout)
        seconds, cpu_seconds = time.perf_counter() - start, children_cpu_seconds() - cpu_start
        written = bool(write and error is None)
        if written:
            shutil.copyfile(output, path)
        if keep is not None and output.exists():  # to read the outputs of a run that --write may not write back
            keep.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(output, keep / path.name)
        slowest = slowest_cells(output)
    return {"chapter": path.stem, "kind": "solution" if path.parent.name == "solutions" else "chapter",
            "profile": profile.name, "mode": mode, "seconds": round(seconds, 1), "cpu_seconds": round(cpu_seconds, 1),
            "ok": error is None,
            "error": error, "written": written, "date": datetime.date.today().isoformat(),
            "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)], "slowest_cells": slowest,
            "machine": info, **({"fresh_clone": fresh_clone} if mode == COMMITTED else {})}


def t4_estimate() -> dict:
    """The gpu profile's ``reproduce`` on a Colab T4, *estimated* (no GPU here): ``reproduce --dry-run``'s figure.

    :func:`hybrid_utils.study.plan.assumed_seconds` of everything ``reproduce`` trains and evaluates from empty
    folders (operation counts at an assumed T4 speed; set-up and downloads not counted). Recorded with
    ``"mode": "estimate"`` so that no chapter reports it as measured; a real measurement replaces it in the lines.
    """
    from dataclasses import replace

    from hybrid_utils.study.plan import assumed_seconds, plan_study

    with tempfile.TemporaryDirectory(prefix="t4-estimate-") as empty:
        gpu = replace(get_profile("gpu"), results_dir=str(Path(empty) / "results"), runs_dir=str(Path(empty) / "runs"))
        estimate = assumed_seconds(plan_study(gpu))
    return {"chapter": GPU_STUDY, "kind": "estimate", "profile": "gpu", "mode": ESTIMATE,
            "seconds": round(estimate.total_seconds, 1), "source": estimate.source, "ok": True,
            "date": datetime.date.today().isoformat(), "machine": {"gpu": "Colab T4 (assumed, not measured)"}}


def record(out: Path, entries: list[dict]) -> None:
    """Merge ``entries`` into ``out``: a new measurement replaces the one of the same chapter, profile and mode."""
    try:
        previous = json.loads(out.read_text(encoding="utf-8")).get("measurements", [])
    except (OSError, ValueError, AttributeError):
        previous = []
    key = lambda e: (e.get("chapter"), e.get("profile"), e.get("mode"))  # noqa: E731
    new = {key(e) for e in entries}
    kept = [e for e in previous if key(e) not in new]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"measurements": kept + entries}, indent=2) + "\n", encoding="utf-8")


def table(entries: list[dict]) -> str:
    rows = [("notebook", "seconds", "minutes", "CPU seconds", "result")]
    rows += [(e["chapter"], f"{e['seconds']:.1f}", f"{e['seconds'] / 60:.1f}", f"{e['cpu_seconds']:.1f}",
              "ok" + (", written" if e["written"] else "") if e["ok"] else "FAILED") for e in entries]
    total = sum(e["seconds"] for e in entries)
    rows.append(("total", f"{total:.1f}", f"{total / 60:.1f}", f"{sum(e['cpu_seconds'] for e in entries):.1f}", ""))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i in (0, 4) else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in rows]
    return "\n".join(lines[:1] + ["  ".join("-" * w for w in widths)] + lines[1:])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu", help="the run profile (default: cpu)")
    parser.add_argument("--only", nargs="*", default=(), help="notebook name prefixes, e.g. 03 05 (default: all)")
    parser.add_argument("--solutions", action="store_true", help="the worked solutions too")
    parser.add_argument("--out", default=str(ROOT / NOTEBOOK_TIMES), help=f"the JSON file (default: {NOTEBOOK_TIMES})")
    parser.add_argument("--write", action="store_true", help="write each executed notebook back in place")
    parser.add_argument("--from-scratch", action="store_true", help="empty results/ and runs/ (temporary folder)")
    parser.add_argument("--in-checkout", action="store_true",
                        help="with the committed results: run in the checkout, with its runs/ (not a fresh clone)")
    parser.add_argument("--keep-outputs", metavar="DIR", type=Path,
                        help="copy each executed notebook into DIR (e.g. to read a from-scratch run's outputs)")
    parser.add_argument("--timeout", type=int, default=6 * 3600, help="seconds per cell (default: 6 hours)")
    args = parser.parse_args(argv)
    if args.write and args.from_scratch:
        parser.error("--write writes the outputs of the committed results' run; not with --from-scratch")
    profile = get_profile(args.profile)
    paths = notebooks(args.only, args.solutions)
    if not paths:
        parser.error(f"no notebook matches {args.only}")
    info = machine(profile)
    print(f"profile {profile.name}; {info['cpu']} ({info['cpu_count']} cores, AMX bf16: {info['amx_bf16']}, "
          f"torch threads {info['torch_threads']}, {info['precision']}); {len(paths)} notebooks", flush=True)
    entries = []
    with tempfile.TemporaryDirectory(prefix="from-scratch-") as scratch:
        if args.from_scratch:
            (Path(scratch) / "results").mkdir()  # present and empty: nothing is read, nothing is fetched
            os.environ["HYBRID_UTILS_CACHE"] = str(Path(scratch) / "cache")  # the kernels inherit it
        for number, path in enumerate(paths):
            if args.from_scratch:
                cwd = Path(scratch)  # one folder for all: the chapters, in book order, compute what the next read
            elif args.in_checkout:
                cwd = path.parent
            else:  # a fresh clone per chapter: nothing an earlier chapter trained is reused
                cwd = fresh_clone(Path(scratch) / f"clone-{number}")
            entry = measure(path, profile, FROM_SCRATCH if args.from_scratch else COMMITTED, cwd, args.write,
                            args.timeout, info, fresh_clone=not (args.from_scratch or args.in_checkout),
                            keep=args.keep_outputs)
            entries.append(entry)
            record(Path(args.out), [entry])  # after every chapter: an interrupted run keeps what it measured
            print(f"{entry['chapter']}: {entry['seconds']:.1f} s" + ("" if entry["ok"] else f"  FAILED: {entry['error']}"),
                  flush=True)
    estimate = t4_estimate()
    record(Path(args.out), [estimate])
    print(table(entries))
    print(f"{GPU_STUDY} on a Colab T4, estimated (not measured): {estimate['seconds'] / 3600:.1f} h ({estimate['source']})")
    print(f"written to {args.out}")
    return 0 if all(e["ok"] for e in entries) else 1


if __name__ == "__main__":
    sys.exit(main())
