"""Execute the chapters in place (papermill), so that they carry the outputs of a run of the study."""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from pathlib import Path

from ..profiles import PROFILE_ENV, STUDY_ENV, TRAIN_SETS_ENV, Profile, get_profile

__all__ = ["NOTEBOOKS", "execute_notebooks", "notebook_environment"]

NOTEBOOKS = ("01_datasets", "02_hybrid_batches", "03_fine_tuning", "04_adversarial_baseline", "05_evaluation",
             "06_beyond_lareqa", "07_explore")


@contextmanager
def notebook_environment(profile: str, study: bool = False, train_sets=None):
    """Within the block, a kernel started now inherits the profile, the study flag and the training sets.

    They reach the kernel through the environment rather than as an injected parameters cell, so a committed
    notebook keeps ``PROFILE = None`` and still runs in the smoke profile under the tests. The previous values
    come back afterwards.
    """
    values = {PROFILE_ENV: profile, STUDY_ENV: "1" if study else "0", TRAIN_SETS_ENV: ",".join(train_sets or [])}
    previous = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def execute_notebooks(profile: Profile | str | None = None, notebooks_dir: str | Path = "notebooks", log=print,
                      study: bool = False, train_sets=None, names=None) -> None:
    """Execute the notebooks in place with papermill, so that they carry the outputs of this run."""
    import papermill

    profile = profile if isinstance(profile, Profile) else get_profile(profile)
    folder = Path(notebooks_dir)
    for name in names or NOTEBOOKS:
        path = folder / f"{name}.ipynb"
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: run from the repository root")
        log(f"== executing {path} (profile {profile.name})")
        start = time.perf_counter()
        with notebook_environment(profile.name, study, train_sets):
            papermill.execute_notebook(str(path), str(path), cwd=str(folder.resolve().parent), progress_bar=False)
        log(f"  {time.perf_counter() - start:.0f} s")
