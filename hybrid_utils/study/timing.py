"""Where the time of a study goes: seconds per stage, and ``timing.json`` (one entry per ``reproduce`` call)."""

from __future__ import annotations

import json
import os
import platform
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from ..profiles import Profile

__all__ = ["ReuseCounter", "StageTimer", "write_timing"]


@dataclass
class StageTimer:
    """Wall-clock seconds per stage, printed at the end of a study."""

    def __post_init__(self):
        self.seconds: "OrderedDict[str, float]" = OrderedDict()
        self.by_seed: dict[str, float] = {}

    def add(self, stage: str, seconds: float, seed: "int | str | None" = None) -> None:
        """Add ``seconds`` to ``stage`` (and to the seed's total: stages without a seed count for every seed)."""
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds
        key = "shared" if seed is None else ("lambda sweep" if seed == "sweep" else seed if isinstance(seed, str)
                                             else f"seed {seed}")
        self.by_seed[key] = self.by_seed.get(key, 0.0) + seconds

    def table(self) -> str:
        width = max([len(k) for k in self.seconds] + [5])
        lines = [f"{stage:<{width}}  {secs:8.1f} s" for stage, secs in self.seconds.items()]
        lines.append(f"{'total':<{width}}  {sum(self.seconds.values()):8.1f} s")
        return "\n".join(lines)


class ReuseCounter:
    """A progress log that passes every line on and counts the ``[skip]`` lines.

    :func:`~hybrid_utils.experiments.ensure_run` and :class:`~hybrid_utils.experiments.Evaluator` write one
    ``[skip]`` line for each run or evaluation that existed and was reused, so ``reused == 0`` at the end of a
    ``reproduce`` call means it computed everything itself (``from_scratch`` in ``timing.json``; the frozen-layer
    caches live in memory only, so a new process always starts them empty).
    """

    def __init__(self, log=print):
        self.log = log.log if isinstance(log, ReuseCounter) else log
        self.reused = 0

    def __call__(self, message) -> None:
        self.reused += "[skip]" in str(message)
        if self.log is not None:
            self.log(message)


def write_timing(timer: "StageTimer", results_dir: Path, profile: Profile, study: bool, seeds, protocols=(),
                 started: float | None = None, from_scratch: bool | None = None) -> Path:
    """Append this invocation's seconds per stage to ``timing.json`` (one entry per ``reproduce`` call).

    Entries of earlier calls are kept, so a study run as two processes side by side (``train_sets``)
    and a final tabulating call all show up; ``wall_clock`` is each call's start and end (Unix time);
    ``from_scratch`` is true when no run or evaluation was reused (:class:`ReuseCounter`).
    """
    import torch

    from ..encoder import native_bf16

    path = Path(results_dir) / "timing.json"
    try:
        previous = json.loads(path.read_text()).get("invocations", [])
    except (OSError, ValueError, AttributeError):
        previous = []
    entry = {"profile": profile.name, "study": bool(study), "from_scratch": from_scratch, "seeds": list(seeds),
             "protocols": [list(p) for p in protocols],
             "wall_clock": [round(started or time.time(), 1), round(time.time(), 1)],
             "total_seconds": round(sum(timer.seconds.values()), 1),
             "stages": {k: round(v, 1) for k, v in timer.seconds.items()},
             # "shared": zero-shot evaluations, summary, figures; "seed 1" + "shared" is what `reproduce` without
             # --study costs when nothing is cached yet (the first seed also pays for filling the layer caches)
             "seconds_by_seed": {k: round(v, 1) for k, v in timer.by_seed.items()},
             "machine": {"processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
                         "torch_threads": torch.get_num_threads(), "native_bf16": native_bf16("cpu"),
                         "cuda": torch.cuda.is_available()},
             "note": "stages skipped because their output existed count only the time to read it"}
    payload = {"invocations": previous + [entry]}
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path
