"""The alpha curve: hybrid batches at several probabilities of a monolingual batch, on one protocol.

The paper fixes ``alpha = 0.5`` ("stable between 0.4 and 0.6"). :func:`alpha_sweep` trains the
hybrid method at each ``alpha`` (default 0, 0.25, 0.5, 0.75, 1) on MLQA-R, evaluates on the full
XQuAD-R pools and writes ``alpha_sweep.csv`` (``alpha, seed, mono_map, cross_map,
multilingual_map, language_bias``); :func:`plot_alpha_sweep` draws the trade-off: monolingual
against multilingual mAP along ``alpha``, coloured by rank distance (language bias).

The ends are runs the study already has, reused rather than trained again, because they are
*identical* runs: ``HybridBatchSampler(alpha=1)`` yields exactly the batches of
``MonolingualBatchSampler`` and ``alpha=0`` those of ``CrossLingualBatchSampler`` for the same
seed (they are one class, see :mod:`hybrid_utils.samplers`; tested in
``tests/test_language_weights.py``), and nothing else in training depends on the method name
(``tests/test_alpha_sweep.py`` trains ``hybrid`` at ``alpha=1`` and gets the monolingual run's
losses step for step). Likewise ``alpha`` = the profile's own (0.5) is the study's hybrid run.
The other values train into ``<runs_dir>/<model>/alpha-sweep/`` and are evaluated into
``<results_dir>/alpha-sweep/``; like the rest of the study, finished runs and evaluations are skipped.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from ..profiles import Profile, get_profile
from ..experiments import Evaluator, ensure_run, result_path, run_dir
from .timing import StageTimer
from ..results import model_slug
from ..results import result_name

__all__ = ["ALPHA_SWEEP_COLUMNS", "DEFAULT_ALPHAS", "alpha_run", "alpha_sweep", "run_alpha_sweep", "summarize_alpha_sweep",
           "plot_alpha_sweep"]

ALPHA_SWEEP_COLUMNS = ["alpha", "seed", "mono_map", "cross_map", "multilingual_map", "language_bias"]
DEFAULT_ALPHAS = Profile.alpha_sweep  # one source: the profile field of the same name
#: the study run that *is* the hybrid run at these alphas (identical batches, see the module docstring)
_SAME_RUN = {0.0: "cross-lingual", 1.0: "monolingual"}


def alpha_run(profile: Profile, alpha: float, train_on: str = "mlqa-r", model: str | None = None,
              seed: int | None = None) -> tuple[str, dict, Path, Path]:
    """Where the hybrid run at ``alpha`` lives: ``(method, overrides, run folder, result file)``.

    ``alpha`` 0 / 1: the study's cross-lingual / monolingual run; the profile's own ``alpha``:
    the study's hybrid run; otherwise a hybrid run under ``alpha-sweep/``.
    """
    from ..config import PROTOCOLS

    alpha = _check_alpha(alpha)
    model = model or profile.models[0]
    seed = profile.seeds[0] if seed is None else int(seed)
    eval_on = PROTOCOLS[train_on]
    method = _SAME_RUN.get(alpha)
    if method is None and alpha == profile.alpha:
        method = "hybrid"
    if method is not None:
        return (method, {}, run_dir(profile, model, method, train_on, seed),
                result_path(profile, model, method, eval_on, seed))
    folder = Path(profile.runs_dir) / model_slug(model) / "alpha-sweep" / f"hybrid-{train_on}-alpha{alpha:g}-seed{seed}"
    out = Path(profile.results_dir) / "alpha-sweep" / model_slug(model) / f"alpha{alpha:g}" / result_name(eval_on, seed)
    return "hybrid", {"alpha": alpha, "output_dir": str(folder)}, folder, out


def _check_alpha(alpha) -> float:
    try:
        value = float(alpha)
    except (TypeError, ValueError):
        raise ValueError(f"alpha must be a number in [0, 1], got {alpha!r}") from None
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1] (probability of a monolingual batch), got {alpha!r}")
    return value


def alpha_sweep(profile: Profile | str | None = None, alphas=DEFAULT_ALPHAS, seeds=None, train_on: str = "mlqa-r",
                model: str | None = None, evaluate: Evaluator | None = None, timer: StageTimer | None = None,
                log=print, write: bool = True) -> pd.DataFrame:
    """Train (or reuse) the hybrid method at each ``alpha`` and seed, evaluate, write ``alpha_sweep.csv``.

    Args:
        profile: a :class:`~hybrid_utils.profiles.Profile` or its name (default: from the environment).
        alphas: probabilities of a monolingual batch, each in [0, 1].
        seeds: training seeds (default: the profile's ``study_seeds``, so the curve has a noise estimate).
        train_on: training set of the zero-shot protocol (default MLQA-R, evaluated on XQuAD-R).
        model: the base model (default: the profile's first).
        evaluate: an :class:`~hybrid_utils.experiments.Evaluator` to share (its caches) with a study.
        timer: a :class:`~hybrid_utils.study.reproduce.StageTimer` to add the sweep's seconds to.
        log: where progress lines go.
        write: write ``<results_dir>/alpha_sweep.csv`` (False for a part of the sweep, e.g. in an
            exercise, so that the table of the full sweep is not replaced).

    Returns:
        one row per (alpha, seed) with :data:`ALPHA_SWEEP_COLUMNS`, also written to
        ``<results_dir>/alpha_sweep.csv`` unless ``write`` is False.
    """
    from ..config import PROTOCOLS

    profile = profile if isinstance(profile, Profile) else get_profile(profile)
    if train_on not in PROTOCOLS:
        raise ValueError(f"train_on must be one of {sorted(PROTOCOLS)} (a zero-shot protocol), got {train_on!r}")
    values = sorted({_check_alpha(a) for a in alphas})
    if not values:
        raise ValueError("alphas is empty: give at least one probability of a monolingual batch, e.g. (0, 0.5, 1)")
    model = model or profile.models[0]
    evaluate = evaluate or Evaluator(profile, log)
    timer = timer or StageTimer()
    eval_on = PROTOCOLS[train_on]
    rows = []
    for seed in seeds or profile.study_seeds:
        for alpha in values:
            method, overrides, folder, out = alpha_run(profile, alpha, train_on, model, seed)
            reused = "" if method == "hybrid" and overrides else f" (the study's {method} run)"
            log(f"== alpha sweep: alpha {alpha:g} (seed {seed}){reused}")
            start = time.perf_counter()
            ensure_run(profile, method, train_on, model, log=log, seed=seed, **overrides)
            timer.add("train alpha sweep", time.perf_counter() - start, "alpha sweep")
            start = time.perf_counter()
            result = evaluate(str(folder), model, eval_on, out,
                              model_name=f"{model_slug(model)} + hybrid alpha {alpha:g} ({train_on}, seed {seed})")
            timer.add("evaluate alpha sweep", time.perf_counter() - start, "alpha sweep")
            rows.append({"alpha": alpha, "seed": int(seed),
                         **{k: result[k] for k in ALPHA_SWEEP_COLUMNS[2:]}})
    sweep = pd.DataFrame(rows, columns=ALPHA_SWEEP_COLUMNS)
    if write:
        Path(profile.results_dir).mkdir(parents=True, exist_ok=True)
        sweep.to_csv(Path(profile.results_dir) / "alpha_sweep.csv", index=False)
    return sweep


def run_alpha_sweep(profile: Profile | str | None = None, log=print) -> pd.DataFrame:
    """``reproduce --alpha-sweep``: :func:`alpha_sweep` at the profile's ``alpha_sweep`` values and
    ``alpha_sweep_seeds`` on its sweep protocol, then ``figures/alpha_sweep.png``."""
    import matplotlib.pyplot as plt

    profile = profile if isinstance(profile, Profile) else get_profile(profile)
    sweep = alpha_sweep(profile, alphas=profile.alpha_sweep, seeds=profile.alpha_sweep_seeds,
                        train_on=profile.sweep_train_on, log=log)
    ax = plot_alpha_sweep(sweep)
    figures = Path(profile.results_dir) / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    ax.figure.savefig(figures / "alpha_sweep.png", dpi=120, bbox_inches="tight")
    plt.close(ax.figure)
    log(summarize_alpha_sweep(sweep).round(3).to_string(index=False))
    return sweep


def summarize_alpha_sweep(sweep: pd.DataFrame) -> pd.DataFrame:
    """Mean and sd over seeds per ``alpha``: columns ``alpha``, ``seeds`` and ``<metric>_mean`` / ``<metric>_sd``."""
    missing = [c for c in ALPHA_SWEEP_COLUMNS if c not in sweep.columns]
    if missing:
        raise ValueError(f"an alpha sweep table needs the columns {ALPHA_SWEEP_COLUMNS}; missing {missing} "
                         f"(read it with pandas.read_csv('results/alpha_sweep.csv'))")
    from .stats import seed_means

    return seed_means(sweep, ["alpha"], ALPHA_SWEEP_COLUMNS[2:], sort=True)


def plot_alpha_sweep(sweep: pd.DataFrame, ax=None, cmap: str = "viridis_r"):
    """Monolingual against multilingual mAP along ``alpha`` (means over seeds, sd as error bars).

    Points are joined in order of ``alpha`` and labelled with it; their colour is the language
    bias (rank distance: lower is less biased). Returns the matplotlib Axes.
    """
    import matplotlib.pyplot as plt

    summary = summarize_alpha_sweep(sweep)
    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 4.2))
    x, y = summary["multilingual_map_mean"], summary["mono_map_mean"]
    ax.errorbar(x, y, xerr=summary["multilingual_map_sd"].fillna(0), yerr=summary["mono_map_sd"].fillna(0),
                fmt="none", ecolor="0.6", elinewidth=1, zorder=1)
    ax.plot(x, y, color="0.7", linewidth=1, zorder=1)
    points = ax.scatter(x, y, c=summary["language_bias_mean"], cmap=cmap, s=60, edgecolors="black", zorder=2)
    for alpha, xi, yi in zip(summary["alpha"], x, y):
        ax.annotate(f"α={alpha:g}", (xi, yi), textcoords="offset points", xytext=(6, 4), fontsize=9)
    ax.figure.colorbar(points, ax=ax, label="language bias (rank distance)")
    ax.set_xlabel("multilingual mAP")
    ax.set_ylabel("monolingual mAP")
    seeds = int(summary["seeds"].min())
    ax.set_title(f"Hybrid batches along α (P(monolingual batch)); {seeds} seed{'s' if seeds > 1 else ''} per point")
    return ax
