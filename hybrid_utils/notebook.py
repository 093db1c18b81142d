"""What every notebook does first: pick the profile, fix seeds, make tables and figures readable."""

from __future__ import annotations

import os
import random

from .profiles import PROFILE_ENV, STUDY_ENV, TRAIN_SETS_ENV, Profile, get_profile


def study_requested() -> bool:
    """True when the notebook runs as part of ``reproduce --study --notebooks`` (``$HYBRID_STUDY`` = 1)."""
    return os.environ.get(STUDY_ENV, "") == "1"


def requested_train_sets() -> list[str] | None:
    """The training sets of ``reproduce --train-sets ... --notebooks`` (``$HYBRID_TRAIN_SETS``), else None: all."""
    value = os.environ.get(TRAIN_SETS_ENV, "")
    return [name for name in value.split(",") if name] or None

def setup(profile: str | None = None, seed: int = 0) -> Profile:
    """Choose the run profile (argument, else ``$HYBRID_PROFILE``, else gpu/cpu by hardware), seed, style.

    Returns the :class:`~hybrid_utils.profiles.Profile`; prints one line saying which it is.
    """
    import numpy as np
    import pandas as pd

    chosen = get_profile(profile)
    here = os.getcwd()
    if os.path.basename(here) == "notebooks" and os.path.exists(os.path.join(here, "..", "pyproject.toml")):
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
    try:
        import matplotlib.pyplot as plt
        plt.rcParams.update({"figure.dpi": 100, "axes.spines.top": False, "axes.spines.right": False})
    except ImportError:  # pragma: no cover
        pass
    print(f"profile: {chosen.name} | models: {', '.join(chosen.models)} | device: {device}")
    return chosen
