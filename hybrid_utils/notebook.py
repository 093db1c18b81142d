"""What every notebook does first: pick the profile, fix seeds, make tables and figures readable.

It also holds the one setting every Colab badge and install cell uses, :data:`REPOSITORY_URL`
(``tests/test_colab.py`` checks the notebooks and README against it).
"""

from __future__ import annotations

import logging
import os
import random
import warnings

from .profiles import PROFILE_ENV, STUDY_ENV, TRAIN_SETS_ENV, Profile, get_profile

#: The repository every Colab badge opens and every notebook's first cell installs from.
REPOSITORY_URL = "https://github.com/hybrid-batch-tutorials/hybrid-batch-tutorials"
#: The branch the badges open.
REPOSITORY_BRANCH = "main"
#: The package's distribution name (pyproject.toml), as the install cell names it.
DISTRIBUTION = "hybrid-batch-tutorials"


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

def setup(profile: str | None = None, seed: int = 0) -> Profile:
    """Choose the run profile (argument, else ``$HYBRID_PROFILE``, else gpu/cpu by hardware), seed, style.

    Also sets the figures' style (:func:`hybrid_utils.plots.set_style`) and quiets library logging
    (:func:`quiet_libraries`).

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
    print(f"profile: {chosen.name} | models: {', '.join(chosen.models)} | device: {device}")
    return chosen
