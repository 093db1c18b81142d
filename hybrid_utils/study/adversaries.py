"""Gradient reversal against a confusion loss, on held-out training questions (an exploration for the adversary).

At the study's ``lambda_max`` the reversal adversary fools its discriminator by making it *confidently wrong*
(its loss on the batch far above ln #languages): with one language per batch, reversal asks the encoder for the
wrong language, which still encodes one. :class:`~hybrid_utils.losses.AdversarialLoss` with
``adversary="confusion"`` (Tzeng et al., 2015) instead pushes the encoder towards a discriminator output that
is uniform over the languages. :func:`compare_adversaries` trains it at the same ``lambda_max`` and seeds as the
sweep's reversal runs (which it reuses) and measures both on held-out questions of the training set only, with a
freshly trained probe, never on the evaluation set. It writes ``adversary_comparison.csv``::

    python -m hybrid_utils.study.adversaries            # cpu profile: 3 new runs, about 15 minutes on 2 cores
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from ..experiments import ensure_run, sweep_dir
from ..profiles import Profile, get_profile

__all__ = ["ADVERSARIES", "adversary_dir", "compare_adversaries", "summarize_adversaries"]

#: the adversaries compared (``TrainConfig.adversary``); reversal is the study's, chosen a priori
ADVERSARIES = ("reversal", "confusion")
#: the columns of ``adversary_comparison.csv`` besides the held-out ``val_*`` ones
KEYS = ["adversary", "lambda_max", "seed", "discriminator_accuracy", "discriminator_loss"]


def adversary_dir(profile: Profile, model: str, adversary: str, lambda_max: float, seed: int) -> Path:
    """The run folder: the sweep's own run for reversal, a sibling folder for any other adversary."""
    folder = sweep_dir(profile, model, lambda_max, seed)
    return folder if adversary == "reversal" else folder.with_name(f"{adversary}-{folder.name}")


def compare_adversaries(profile: Profile | str | None = None, seeds=None, lambda_max: float | None = None,
                        log=print) -> pd.DataFrame:
    """Train (or reuse) each adversary of :data:`ADVERSARIES` at ``lambda_max`` (default: the profile's) and seed.

    Returns one row per adversary and seed (:data:`KEYS` and the held-out columns of
    :func:`~hybrid_utils.study.tuning.validation_row`), also written to ``<results_dir>/adversary_comparison.csv``
    after every run, so an interrupted call loses nothing.
    """
    from .tuning import discriminator_row, validation_row

    profile = profile if isinstance(profile, Profile) else get_profile(profile)
    lambda_max = float(profile.lambda_max if lambda_max is None else lambda_max)
    model, train_on = profile.models[0], profile.sweep_train_on
    out = Path(profile.results_dir) / "adversary_comparison.csv"
    rows = []
    for seed in seeds or profile.sweep_seeds:
        for adversary in ADVERSARIES:
            folder = adversary_dir(profile, model, adversary, lambda_max, seed)
            log(f"== {adversary} adversary, lambda_max {lambda_max:g} (seed {seed})")
            start = time.perf_counter()
            ensure_run(profile, "adversarial", train_on, model, log=log, seed=seed, lambda_max=lambda_max,
                       adversary=adversary, output_dir=str(folder))
            rows.append({"adversary": adversary, "lambda_max": lambda_max, "seed": seed,
                         **discriminator_row(folder), **validation_row(folder)})
            log(f"  {time.perf_counter() - start:.0f} s")
            out.parent.mkdir(parents=True, exist_ok=True)
            pd.DataFrame(rows).to_csv(out, index=False)
    return pd.DataFrame(rows)


def summarize_adversaries(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean and sd over seeds per adversary of the discriminator and the held-out measures."""
    measures = [c for c in frame.columns if c not in ("adversary", "lambda_max", "seed")]
    return frame.groupby("adversary", sort=False)[measures].agg(["mean", "std"])


if __name__ == "__main__":  # pragma: no cover - a long run
    import sys

    table = compare_adversaries(sys.argv[1] if len(sys.argv) > 1 else None)
    print(summarize_adversaries(table).round(3).T.to_string())
