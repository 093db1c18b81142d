"""Test-wide settings; they reach the notebook kernels nbval starts, too."""
import os

# The notebooks run in the fast smoke profile under the tests, and never reach a model hub.
os.environ.setdefault("HYBRID_PROFILE", "smoke")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
