"""Test-wide settings; they reach the notebook kernels nbval starts, too."""
import os

# The notebooks run in the fast smoke profile under the tests, and never reach a model hub.
os.environ.setdefault("HYBRID_PROFILE", "smoke")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

#: ``tests/test_colab_install.py`` (marker ``colab``) builds the package into a fresh venv and runs every chapter
#: from an empty folder: about 17 CPU-minutes on 2 cores, too long for every test run. It runs when asked for:
#: ``python -m pytest -m colab tests/test_colab_install.py`` or ``HYBRID_COLAB_SIM=1``.
COLAB_SIM_ENV = "HYBRID_COLAB_SIM"


def pytest_collection_modifyitems(config, items):
    import pytest

    if os.environ.get(COLAB_SIM_ENV) == "1" or "colab" in (config.getoption("markexpr", "") or ""):
        return
    skip = pytest.mark.skip(reason=f"the Colab-like install takes long: run with -m colab or {COLAB_SIM_ENV}=1")
    for item in items:
        if "colab" in item.keywords:
            item.add_marker(skip)
