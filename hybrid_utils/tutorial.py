"""Small helpers the tutorial notebooks share, so that their code cells stay short.

Nothing here is needed for training or evaluation; each function turns library objects
(samplers, runs, data sets) into the small tables and figures a chapter shows.

* batches: :func:`batch_preview`, :func:`duplicates_per_batch`, :func:`alpha_sweep`,
  :func:`group_frequencies`, :func:`composition_matrix` (pairs per question and answer language);
* models and runs: :func:`answer_similarities`, :func:`evaluate_runs`, :func:`lambda_sweep_runs`,
  :func:`chapter_sized`, :func:`chapter_runs`, :func:`chapter_evaluations`;
* figures: :func:`plot_alpha_sweep`, :func:`plot_group_frequencies`,
  :func:`plot_discriminator_accuracy`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from .encoder import load_encoder
from .plots import _axes
from .batch_groups import CROSS_LINGUAL, MONOLINGUAL
from .samplers import HybridBatchSampler, _column

__all__ = [
    "batch_preview", "duplicates_per_batch", "alpha_sweep", "group_frequencies",
    "answer_similarities", "evaluate_runs", "lambda_sweep_runs", "chapter_sized", "chapter_runs",
    "chapter_evaluations", "CHAPTER_SIZED",
    "plot_alpha_sweep", "plot_group_frequencies", "plot_discriminator_accuracy",
]


# --------------------------------------------------------------------------- batches

def batch_preview(sampler: HybridBatchSampler, pairs: Any, batch: int = 0, rows: int = 3, width: int = 60,
                  epoch: int | None = None) -> pd.DataFrame:
    """The first ``rows`` pairs of batch number ``batch`` of a sampler's epoch, texts cut to ``width`` characters.

    Columns: ``question_language``, ``answer_language``, ``question``, ``answer``.
    """
    indices = sampler.batches(epoch)[batch][:rows]
    table = pairs.select(indices).to_pandas() if hasattr(pairs, "select") else pd.DataFrame(pairs).iloc[indices]
    table = table[["question_language", "answer_language", "question", "answer"]].reset_index(drop=True)
    for column in ("question", "answer"):
        table[column] = table[column].map(lambda t: t if len(t) <= width else t[: width - 1] + "…")
    return table


def duplicates_per_batch(source: Any, pairs: Any, epochs: Sequence[int] = (0,),
                         keys: Sequence[str] = ("question_id", "answer", "question")) -> pd.DataFrame:
    """How often a key value repeats inside one batch (0 means every batch is duplicate-free).

    ``source`` is a sampler (its batches of each of ``epochs`` are checked) or a plain list of
    batches (lists of row indices of ``pairs``). For every key column and epoch: ``batches``
    checked, ``batches_with_repeats`` and ``repeated_pairs`` (pairs whose value already occurred
    earlier in the same batch).
    """
    rows = []
    for key in keys:
        values = _column(pairs, key)
        for epoch in (epochs if isinstance(source, HybridBatchSampler) else ["-"]):
            batches = source.batches(epoch) if isinstance(source, HybridBatchSampler) else source
            repeats = [len(b) - len({values[i] for i in b}) for b in batches]
            rows.append({"key": key, "epoch": epoch, "batches": len(batches),
                         "batches_with_repeats": int(sum(r > 0 for r in repeats)),
                         "repeated_pairs": int(sum(repeats))})
    return pd.DataFrame(rows)


def alpha_sweep(pairs: Any, alphas: Sequence[float], batch_size: int, seed: int = 0,
                kind_sampling: str = "stratified") -> pd.DataFrame:
    """One epoch of a :class:`HybridBatchSampler` for each ``alpha``.

    Columns: ``alpha``, ``batches`` (steps per epoch), ``monolingual_fraction`` (realised share
    of monolingual batches), ``pairs_used`` (share of all pairs in the epoch's batches),
    ``monolingual_used`` / ``cross_lingual_used`` (share of the monolingual / cross-lingual
    pairs the epoch uses).
    """
    qx, ay = _column(pairs, "question_language"), _column(pairs, "answer_language")
    n_mono = sum(x == y for x, y in zip(qx, ay))
    n_cross = len(qx) - n_mono
    rows = []
    for alpha in alphas:
        sampler = HybridBatchSampler(pairs, batch_size=batch_size, seed=seed, alpha=float(alpha),
                                     kind_sampling=kind_sampling)
        frame = sampler.describe()
        kinds = frame["kind"].value_counts()
        rows.append({"alpha": float(alpha), "batches": len(frame),
                     "monolingual_fraction": frame.attrs["monolingual_fraction"],
                     "pairs_used": frame.attrs["pairs_used"] / frame.attrs["n_pairs"],
                     "monolingual_used": kinds.get(MONOLINGUAL, 0) * batch_size / n_mono if n_mono else 0.0,
                     "cross_lingual_used": kinds.get(CROSS_LINGUAL, 0) * batch_size / n_cross if n_cross else 0.0})
    return pd.DataFrame(rows)


def group_frequencies(sampler: HybridBatchSampler, epochs: Sequence[int] = range(10)) -> pd.DataFrame:
    """Target (size-proportional) against realised share of batches per language (pair).

    The realised share counts the batches of ``epochs`` (several epochs average out the
    random choice of which cross-lingual batches fill an epoch). One row per group:
    ``kind``, ``group`` (``"X-Y"``), ``pairs``, ``target``, ``realised``.
    """
    target = sampler.target_proportions()
    target["group"] = target["question_language"] + "-" + target["answer_language"]
    counts = pd.concat([sampler.describe(e) for e in epochs])
    counts = (counts["question_language"] + "-" + counts["answer_language"]).value_counts()
    target["realised"] = target["group"].map(counts).fillna(0) / counts.sum()
    return target[["kind", "group", "pairs", "target", "realised"]].reset_index(drop=True)


# --------------------------------------------------------------------------- models

def answer_similarities(models: Mapping[str, Any], dataset, languages: Sequence[str], question_language: str = "en",
                        n_questions: int = 20) -> pd.DataFrame:
    """Mean cosine similarity of a question to its own answer sentence in each of ``languages``.

    Uses the first ``n_questions`` question ids of ``dataset`` that exist in
    ``question_language`` and in every language of ``languages``; the question is encoded with
    the ``"query"`` prompt, the answers with ``"passage"``. ``models`` maps a row name to a
    SentenceTransformer or a run folder. One row per model, one column per answer language,
    plus ``n_questions``. The embeddings are read from the embedding store where the evaluation (or an earlier
    call) encoded these texts with the model.
    """
    from .encoder import encode_texts

    q = dataset.questions.to_pandas()
    text = {(r.id, r.language): r.text for r in q.itertuples()}
    answer_of = {(r.id, r.language): r.answer_id for r in q.itertuples()}
    needed = [question_language, *languages]
    ids = [i for i in dict.fromkeys(q["id"]) if all((i, lang) in text for lang in needed)][:n_questions]
    if not ids:
        raise ValueError(f"no question id of {dataset.name} exists in all of {needed}")
    questions = [text[(i, question_language)] for i in ids]
    answers = [dataset.candidate(answer_of[(i, lang)])["sentence"] for lang in languages for i in ids]
    rows = {}
    for name, model in models.items():
        if isinstance(model, (str, Path)):
            model = load_encoder(model)
        qe = encode_texts(model, questions, "query", show_progress_bar=False, store=True)
        ae = encode_texts(model, answers, "passage", show_progress_bar=False, store=True)
        ae = ae.reshape(len(languages), len(ids), -1)
        rows[name] = {lang: float((qe * ae[k]).sum(1).mean()) for k, lang in enumerate(languages)}
    table = pd.DataFrame(rows).T[list(languages)]
    table.columns.name = f"{question_language} question → answer in"
    table["n_questions"] = len(ids)
    return table


def evaluate_runs(runs: Mapping[str, str | Path], dataset, profile) -> pd.DataFrame:
    """Evaluate several models on one LAReQA data set, as ``reproduce`` does; one row per model.

    ``runs`` maps a row name to a run folder or a model name (``"bundled"`` for the untrained
    model). With the profile's ``trainable="cpu-default"`` every fine-tuned model shares the
    base model's lower layers, so a :class:`~hybrid_utils.plumbing.prefix_cache.FrozenPrefixCache`
    computes them once for all models. Columns: ``mono_map``, ``cross_map``,
    ``multilingual_map``, ``language_bias`` (see :func:`hybrid_utils.evaluation.evaluate_lareqa`).
    """
    from .experiments import Evaluator

    evaluator = Evaluator(profile, log=lambda *_: None)
    rows = {}
    for name, path in runs.items():
        result = evaluator.evaluate(str(path), dataset, model_name=str(name), show_progress_bar=False)
        rows[name] = {k: result[k] for k in ("mono_map", "cross_map", "multilingual_map", "language_bias")}
    return pd.DataFrame(rows).T


def lambda_sweep_runs(profile, lambdas: Sequence[float] | None = None, seed: int | None = None,
                      log=print, adversary: str | None = None, train: bool = True) -> dict[float, Path]:
    """Finished adversarial runs of the study's lambda sweep with one adversary (default: the profile's), one per
    ``lambda_max`` (trained now unless there).

    The same folders as ``reproduce --study`` (:func:`hybrid_utils.study.reproduce.lambda_sweep`): the run at the
    profile's own adversary and ``lambda_max`` is the study's adversarial run. Returns ``{lambda_max: run folder}``.
    ``train=False``: only the runs already there, none trained (a chapter that reads the study's sweep file needs
    no run, and a fresh clone has the file but not the runs).
    """
    from .experiments import ensure_run, is_finished_run, sweep_dir

    seed = profile.sweep_seeds[0] if seed is None else seed
    adversary = adversary or profile.adversary
    model, train_on = profile.models[0], profile.sweep_train_on
    runs = {}
    for value in lambdas or profile.lambda_sweep:
        value = float(value)
        folder = sweep_dir(profile, model, value, seed, adversary)
        if train:
            runs[value] = ensure_run(profile, "adversarial", train_on, model, log=log, seed=seed, lambda_max=value,
                                     adversary=adversary, output_dir=str(folder))
        elif is_finished_run(folder):
            runs[value] = folder
    return runs


#: the folder, below a profile's ``runs_dir``, of chapter-sized runs and their results (:func:`chapter_sized`)
CHAPTER_SIZED = "chapter-sized"


def chapter_sized(profile):
    """``profile`` scaled to a chapter: ``profile.chapter_steps`` steps per run, the first sweep seed, own folders.

    For a chapter that trains only to show the shape of a curve when the study's file is missing (chapter 4's
    lambda sweep from scratch) or its runs are (:func:`chapter_runs` in a fresh clone): every run, per training set
    and method too, takes ``chapter_steps`` steps, and runs and results go to ``<runs_dir>/chapter-sized/``, so the
    study's runs and ``results/`` are never replaced by shorter ones. Its numbers are not the study's, and neither
    is a choice made on them. ``profile`` unchanged when it has no ``chapter_steps``.
    """
    from dataclasses import replace

    steps = profile.chapter_steps
    if steps is None:
        return profile
    per_train_set = {name: {**values, "steps": steps,
                            "methods": {m: {**v, "steps": steps} for m, v in values.get("methods", {}).items()}}
                     for name, values in profile.per_train_set.items()}
    folder = Path(profile.runs_dir) / CHAPTER_SIZED
    return replace(profile, steps=steps, per_train_set=per_train_set, sweep_seeds=profile.sweep_seeds[:1],
                   runs_dir=str(folder / "runs"), results_dir=str(folder / "results"))


def chapter_runs(profile, methods: Sequence[str], train_on: str, model: str | None = None, seed: int | None = None,
                 log=print) -> tuple[dict[str, Path], Any]:
    """The finished runs a chapter shows, one per method, and the profile they were trained in.

    * The study's runs (the folders of ``reproduce``) when all of them are there; when the study's results of
      these methods are not there either (from scratch: the runs trained now are the ones ``reproduce`` and the
      later chapters evaluate); and inside ``reproduce --study --notebooks``.
    * Otherwise (the committed results are there, the runs are not: a fresh clone, or Colab after fetching the
      results), chapter-sized runs (:func:`chapter_sized`: ``profile.chapter_steps`` steps each, in folders of
      their own), so that a chapter that shows how training behaves takes minutes instead of training the study.
      The results the chapters read stay the study's.

    Returns ``({method: run folder}, run_profile)``: ``run_profile`` is ``profile`` or its chapter-sized copy,
    whose ``steps`` the runs took. ``log`` gets one line saying which it is.
    """
    from .config import PROTOCOLS
    from .experiments import ensure_run, is_finished_run, result_path, run_dir
    from .notebook import study_requested

    model = model or profile.models[0]
    seed = profile.seeds[0] if seed is None else seed
    study_runs = [run_dir(profile, model, method, train_on, seed) for method in methods]
    committed = all(result_path(profile, model, method, PROTOCOLS[train_on], seed).exists() for method in methods)
    sized = chapter_sized(profile)
    use_study = (all(is_finished_run(folder) for folder in study_runs) or not committed or study_requested()
                 or sized is profile)
    run_profile = profile if use_study else sized
    if use_study:
        log(f"the study's runs, in {profile.runs_dir}")
    else:
        study_steps = profile.training_defaults(train_on)["steps"]
        log(f"the study's runs are not in {profile.runs_dir}, its results are in {profile.results_dir} (a fresh "
            f"clone): chapter-sized runs of {sized.steps} steps each (the study's: {study_steps}), in "
            f"{sized.runs_dir}; `python -m hybrid_utils reproduce` trains the study's")
    runs = {method: ensure_run(run_profile, method, train_on, model, log=log, seed=seed) for method in methods}
    return runs, run_profile


def chapter_evaluations(profile, methods: Sequence[str], eval_on: str, model: str | None = None,
                        log=print) -> tuple[dict[str, list[dict]], Any]:
    """The evaluations of the study's models a chapter shows: ``{method: [result per seed]}``.

    * The study's evaluations (every seed saved in ``profile.results_dir``) when the first seed's are there (the
      committed results, or after ``reproduce``), read as they are (:func:`~hybrid_utils.experiments.ensure_result`),
      and inside ``reproduce --study --notebooks``, where a missing one is computed and saved.
    * Otherwise (from scratch) the profile's first-seed runs, evaluated on the first ``profile.chapter_questions``
      question ids of ``eval_on`` without post-processing, saved in a folder of their own below
      ``<runs_dir>/chapter-sized/``: minutes instead of the full set's, which chapter 5 evaluates for the study.
      Rank distances grow with the pool, so they are not comparable with the full set's.

    Returns the evaluations and the profile that made them (``profile`` or its chapter-sized copy, whose
    ``limit_questions`` says how many question ids). ``log`` gets one line saying which it is.
    """
    from dataclasses import replace

    from .experiments import Evaluator, ensure_result, result_path
    from .notebook import study_requested
    from .results import load_seed_results, model_slug

    model = model or profile.models[0]
    saved = all(result_path(profile, model, method, eval_on).exists() for method in methods)
    if saved or study_requested() or profile.chapter_questions is None:
        eval_profile = profile
        log(f"the study's evaluations, in {profile.results_dir}")
    else:
        count = min(profile.chapter_questions, profile.limit_questions or profile.chapter_questions)
        folder = Path(profile.runs_dir) / CHAPTER_SIZED / f"results-first-{count}-questions"
        eval_profile = replace(profile, limit_questions=count, postprocess=(), results_dir=str(folder))
        log(f"the study's evaluations are not in {profile.results_dir} (from scratch): its runs evaluated on the "
            f"first {count} question ids of {eval_on}, in {folder}; chapter 5 evaluates the full set")
    evaluator = Evaluator(eval_profile, log)
    for method in methods:
        ensure_result(eval_profile, method, eval_on, model=model, evaluator=evaluator, log=log)
    found = load_seed_results(eval_profile.results_dir)
    return {method: found[(model_slug(model), method, eval_on)] for method in methods}, eval_profile


# --------------------------------------------------------------------------- figures

def plot_alpha_sweep(sweep: pd.DataFrame, ax=None, title: str = "one epoch of hybrid batches"):
    """Realised monolingual fraction and shares of pairs used per epoch against ``alpha`` (from :func:`alpha_sweep`)."""
    ax = _axes(ax, (6, 3.5))
    ax.plot(sweep["alpha"], sweep["alpha"], color="0.7", ls=":", label="α (requested)")
    styles = [("monolingual_fraction", "realised share of monolingual batches", "o-"),
              ("pairs_used", "share of all pairs used", "s-"),
              ("monolingual_used", "share of monolingual pairs used", "^--"),
              ("cross_lingual_used", "share of cross-lingual pairs used", "v--")]
    for column, label, style in styles:
        ax.plot(sweep["alpha"], sweep[column], style, label=label, ms=4)
    ax.set_xlabel("α = P(monolingual batch)")
    ax.set_ylabel("share")
    ax.set_ylim(-0.03, 1.03)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.set_title(title)
    return ax


def plot_group_frequencies(freq: pd.DataFrame, ax=None, title: str = "batches per language (pair)"):
    """Bars: target against realised share of batches per group (from :func:`group_frequencies`)."""
    ax = _axes(ax, (max(6, 0.28 * len(freq)), 3.5))
    xs = np.arange(len(freq))
    ax.bar(xs - 0.2, freq["target"], 0.4, label="target (size-proportional)", color="#9ecae1")
    ax.bar(xs + 0.2, freq["realised"], 0.4, label="realised", color="#3182bd")
    ax.set_xticks(xs, freq["group"], rotation=90, fontsize=7)
    ax.set_ylabel("share of batches")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return ax


def plot_discriminator_accuracy(logs: Mapping[str, pd.DataFrame], ax=None, smooth: int = 5,
                                title: str = "language discriminator during training"):
    """Discriminator accuracy on held-out texts of every language per step (rolling mean) against chance.

    Falls back to the accuracy on the training batches for logs without the held-out measurement.
    """
    from .plots import plot_loss_curves

    column = "discriminator_heldout_accuracy" if all("discriminator_heldout_accuracy" in f for f in logs.values()) \
        else "discriminator_accuracy"
    ax = plot_loss_curves(logs, ax=ax, column=column, smooth=smooth, title=title)
    chances = [frame["discriminator_chance"].dropna() for frame in logs.values()]
    chances = [float(c.iloc[0]) for c in chances if len(c)]
    if chances:
        ax.axhline(chances[-1], color="k", ls="--", lw=1, label=f"chance = 1/{round(1 / chances[-1])}")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    return ax


# --------------------------------------------------------------------------- batches as a matrix

def composition_matrix(source: Any, dataset: Any = None, languages: Sequence[str] | None = None) -> pd.DataFrame:
    """Pairs per (question language X, answer language Y) in a set of batches, for heatmaps.

    Args:
        source: a sampler (its current epoch), a :meth:`HybridBatchSampler.describe` frame,
            or a list of batches (lists of row indices), which needs ``dataset``.
        dataset: the pairs the row indices point into (columns ``question_language`` and
            ``answer_language``); only for a list of batches.
        languages: row / column order (default: every language seen, sorted).

    Returns:
        a DataFrame, index = question language X, columns = answer language Y, values = pair counts.
    """
    if isinstance(source, HybridBatchSampler):
        source = source.describe()
    if isinstance(source, pd.DataFrame):
        missing = {"question_language", "answer_language", "size"} - set(source.columns)
        if missing:
            raise ValueError(f"a composition frame needs the columns question_language, answer_language and size "
                             f"(as made by sampler.describe()); missing {sorted(missing)}")
        xs, ys, weights = (source["question_language"].tolist(), source["answer_language"].tolist(),
                           source["size"].tolist())
    else:
        if dataset is None:
            raise ValueError("composition_matrix of a list of batches needs dataset=the pairs they index into")
        if isinstance(dataset, HybridBatchSampler):
            ql, al = dataset._question_language, dataset._answer_language
        else:
            ql, al = _column(dataset, "question_language"), _column(dataset, "answer_language")
        rows = [i for batch in source for i in batch]
        xs, ys, weights = [ql[i] for i in rows], [al[i] for i in rows], [1] * len(rows)
    counts = pd.DataFrame({"X": xs, "Y": ys, "n": weights}).pivot_table(
        index="X", columns="Y", values="n", aggfunc="sum", fill_value=0)
    order = list(languages) if languages is not None else sorted(set(xs) | set(ys))
    counts = counts.reindex(index=order, columns=order, fill_value=0).astype(int)
    counts.index.name, counts.columns.name = "question_language", "answer_language"
    return counts
