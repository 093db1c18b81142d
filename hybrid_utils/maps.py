"""Embedding maps: do the answers of one question cluster by meaning or by language?

The same answer sentence exists in every language of XQuAD-R (a question id has one answer per
language). Embed the answers of a few hundred ids in all 11 languages, project them to 2-D and
colour the points by language: a model with a strong language bias shows one island per language;
a language-agnostic one mixes the colours, and the translations of one answer land together.

* :func:`answer_sample`: the answers of ``n_ids`` question ids in every language;
* :func:`embed_answers`: their embeddings under one model (``"passage"`` prompt, as in evaluation);
* :func:`project`: PCA or t-SNE (scikit-learn) to two dimensions;
* :func:`language_separation`: one number for "clusters by language" (silhouette by language), and
  :func:`nearest_neighbours`: is an answer's nearest neighbour its translation or a same-language sentence?
* :func:`embedding_maps` and :func:`plot_embedding_maps`: several models side by side, titled with
  the language-identification probe accuracy of the study (:func:`probe_accuracies`).

Example::

    sample = answer_sample(load_lareqa("xquad-r"), n_ids=300)
    frame = embedding_maps({"zero-shot": zero_shot, "hybrid": hybrid}, sample)
    plot_embedding_maps(frame, probe_accuracy=probe_accuracies("results"))
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from .profiles import DEFAULT_SEED

__all__ = ["answer_sample", "embed_answers", "project", "language_separation", "nearest_neighbours",
           "embedding_maps", "map_summary", "plot_embedding_maps", "probe_accuracies", "PROJECTIONS"]

PROJECTIONS = ("pca", "tsne")


def answer_sample(dataset, n_ids: int = 300, seed: int = 0, languages: Sequence[str] | None = None) -> pd.DataFrame:
    """The answer sentences of ``n_ids`` question ids that have a question in every language.

    Args:
        dataset: a :class:`~hybrid_utils.data.LAReQADataset` (XQuAD-R: every id is in all 11 languages).
        n_ids: how many question ids to draw (at most the number of ids complete in ``languages``).
        seed: the draw's seed.
        languages: the languages to keep (default: all of the dataset's).

    Returns:
        DataFrame with one row per (id, language): ``question_id, language, candidate_id, sentence``,
        ordered by id, then language.
    """
    languages = list(languages or dataset.languages)
    unknown = sorted(set(languages) - set(dataset.languages))
    if unknown:
        raise ValueError(f"languages {unknown} are not in the dataset; it has {list(dataset.languages)}")
    if n_ids < 1:
        raise ValueError(f"n_ids must be at least 1, got {n_ids}")
    questions = dataset.questions.select_columns(["id", "language", "answer_id"]).to_pandas()
    questions = questions[questions["language"].isin(languages)].drop_duplicates(["id", "language"])
    per_id = questions.groupby("id")["language"].nunique()
    complete = sorted(per_id.index[per_id == len(languages)])
    if not complete:
        raise ValueError(f"no question id has a question in all of {languages}: choose fewer languages")
    rng = np.random.default_rng(seed)
    chosen = set(rng.choice(complete, size=min(n_ids, len(complete)), replace=False).tolist())
    rows = questions[questions["id"].isin(chosen)].sort_values(["id", "language"])
    sentences = dict(zip(dataset.candidates["id"][:], dataset.candidates["sentence"][:]))
    return pd.DataFrame({"question_id": rows["id"].to_numpy(), "language": rows["language"].to_numpy(),
                         "candidate_id": rows["answer_id"].to_numpy(),
                         "sentence": [sentences[c] for c in rows["answer_id"]]}).reset_index(drop=True)


def embed_answers(model, sample: pd.DataFrame, batch_size: int = 64, show_progress_bar: bool = False) -> np.ndarray:
    """Unit-norm embeddings of ``sample["sentence"]`` with the ``"passage"`` prompt (as the evaluation embeds answers).

    Read from the embedding store when the evaluation (or an earlier map) already encoded them with this model.
    """
    from .encoder import encode_texts

    prompt = "passage" if "passage" in (getattr(model, "prompts", None) or {}) else None
    return encode_texts(model, list(sample["sentence"]), prompt, batch_size=batch_size,
                        show_progress_bar=show_progress_bar, store=True)


def project(embeddings: np.ndarray, method: str = "pca", seed: int = 0, perplexity: float = 30.0) -> np.ndarray:
    """Two-dimensional coordinates of ``embeddings`` (``n × dim``).

    Args:
        method: ``"pca"`` (linear: distances along the two main directions) or ``"tsne"``
            (neighbourhoods: who is close to whom; first reduced to 50 dimensions by PCA, as usual).
        seed: random state of t-SNE (and of randomized PCA).
        perplexity: t-SNE's neighbourhood size, lowered automatically for small samples.

    Returns:
        ``(n, 2)`` float array.
    """
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    x = np.asarray(embeddings, dtype=np.float32)
    if x.ndim != 2 or len(x) < 3:
        raise ValueError(f"need an (n >= 3) x dim array of embeddings, got shape {x.shape}")
    if method == "pca":
        return PCA(n_components=2, random_state=seed).fit_transform(x)
    if method == "tsne":
        if x.shape[1] > 50 and len(x) > 50:
            x = PCA(n_components=50, random_state=seed).fit_transform(x)
        perplexity = min(perplexity, (len(x) - 1) / 3)  # t-SNE needs perplexity < n
        return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)
    raise ValueError(f"unknown projection {method!r}: choose one of {PROJECTIONS}")


def language_separation(embeddings: np.ndarray, languages: Sequence[str]) -> float:
    """Silhouette score (cosine) of the points grouped by language: near 1 = one island per language, near 0 or
    below = languages mixed. Computed on the embeddings themselves, not on a 2-D projection."""
    from sklearn.metrics import silhouette_score

    if len(set(languages)) < 2:
        raise ValueError("need at least two languages to measure how they separate")
    return float(silhouette_score(np.asarray(embeddings), np.asarray(languages), metric="cosine"))


def nearest_neighbours(embeddings: np.ndarray, sample: pd.DataFrame) -> dict[str, float]:
    """Where each answer's nearest other answer (cosine) comes from.

    Returns:
        ``{"same_answer_other_language": share, "same_language_other_answer": share}``: the share of answers whose
        nearest neighbour is a translation of the same answer, and the share whose nearest neighbour is another
        answer in the same language. A language-agnostic space has a high first share, a language-biased one a
        high second.
    """
    x = np.asarray(embeddings, dtype=np.float32)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    similarity = x @ x.T
    np.fill_diagonal(similarity, -np.inf)
    nearest = similarity.argmax(axis=1)
    ids, languages = sample["question_id"].to_numpy(), sample["language"].to_numpy()
    same_answer = ids[nearest] == ids
    same_language = languages[nearest] == languages
    return {"same_answer_other_language": float(np.mean(same_answer & ~same_language)),
            "same_language_other_answer": float(np.mean(~same_answer & same_language))}


def embedding_maps(models: Mapping[str, Any], sample: pd.DataFrame, projections: Sequence[str] = PROJECTIONS,
                   seed: int = 0, batch_size: int = 64) -> pd.DataFrame:
    """Embed ``sample``'s answers with each model and project them.

    Args:
        models: ``{name: SentenceTransformer}``, e.g. ``{"zero-shot": ..., "hybrid": ..., "adversarial": ...}``.
        sample: from :func:`answer_sample`.
        projections: any of :data:`PROJECTIONS`.

    Returns:
        Long DataFrame ``model, projection, x, y, language, question_id, separation, same_answer_nn,
        same_language_nn``: the last three describe the model's embeddings themselves (the same on every row of
        the model): :func:`language_separation` and the two shares of :func:`nearest_neighbours`.
    """
    frames = []
    for name, model in models.items():
        embeddings = embed_answers(model, sample, batch_size=batch_size)
        separation = language_separation(embeddings, sample["language"])
        neighbours = nearest_neighbours(embeddings, sample)
        for method in projections:
            xy = project(embeddings, method, seed=seed)
            frames.append(pd.DataFrame({"model": name, "projection": method, "x": xy[:, 0], "y": xy[:, 1],
                                        "language": sample["language"].to_numpy(),
                                        "question_id": sample["question_id"].to_numpy(),
                                        "separation": separation,
                                        "same_answer_nn": neighbours["same_answer_other_language"],
                                        "same_language_nn": neighbours["same_language_other_answer"]}))
    return pd.concat(frames, ignore_index=True)


def map_summary(frame: pd.DataFrame, probe_accuracy: Mapping[str, float] | None = None) -> pd.DataFrame:
    """One row per model of :func:`embedding_maps`' numbers: language silhouette, nearest-neighbour shares, probe."""
    summary = frame.groupby("model", sort=False)[["separation", "same_answer_nn", "same_language_nn"]].first()
    summary.columns = ["language silhouette", "nearest = same answer, other language",
                       "nearest = other answer, same language"]
    if probe_accuracy:
        summary["language probe accuracy"] = [probe_accuracy.get(name, np.nan) for name in summary.index]
    return summary


def probe_accuracies(results_dir: str | Path = "results", model: str = "multilingual-e5-small",
                     eval_on: str = "xquad-r", seed: int = DEFAULT_SEED) -> dict[str, float]:
    """``{method: language-identification probe accuracy}`` from the study's evaluation JSONs.

    Reads ``<results_dir>/<model>/<method>/<eval_on>-seed<seed>.json`` (``<eval_on>.json`` for zero-shot);
    methods without a result, or whose result has no probe, are left out.
    """
    found = {}
    for folder in sorted(Path(results_dir, model).glob("*")):
        for name in (f"{eval_on}-seed{seed}.json", f"{eval_on}.json"):
            path = folder / name
            if path.is_file():
                accuracy = json.loads(path.read_text()).get("probe_accuracy")
                if accuracy is not None:
                    found[folder.name] = float(accuracy)
                break
    return found


def plot_embedding_maps(frame: pd.DataFrame, probe_accuracy: Mapping[str, float] | None = None,
                        point_size: float = 8, height: float = 3.6):
    """A grid of maps, one column per model and one row per projection, points coloured by language.

    Args:
        frame: from :func:`embedding_maps`.
        probe_accuracy: ``{model name: accuracy}`` (e.g. :func:`probe_accuracies`); shown in the titles when given.

    Returns:
        The matplotlib ``Figure``.
    """
    models = list(dict.fromkeys(frame["model"]))
    projections = list(dict.fromkeys(frame["projection"]))
    languages = sorted(frame["language"].unique())
    palette = dict(zip(languages, sns.color_palette("tab10" if len(languages) <= 10 else "husl", len(languages))))
    fig, axes = plt.subplots(len(projections), len(models), figsize=(height * len(models), height * len(projections)),
                             squeeze=False)
    for row, method in enumerate(projections):
        for col, name in enumerate(models):
            ax = axes[row][col]
            part = frame[(frame["model"] == name) & (frame["projection"] == method)]
            sns.scatterplot(part, x="x", y="y", hue="language", hue_order=languages, palette=palette, s=point_size,
                            linewidth=0, alpha=0.8, legend=(row == 0 and col == len(models) - 1), ax=ax)
            title = f"{name} · {method.upper() if method == 'pca' else 't-SNE'}"
            if row == 0:
                title += f"\nlanguage silhouette {part['separation'].iloc[0]:.2f}"
                if probe_accuracy and name in probe_accuracy:
                    title += f" · probe {probe_accuracy[name]:.2f}"
            ax.set_title(title, fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel("")
            ax.set_ylabel("")
    legend = axes[0][-1].get_legend()
    if legend is not None:
        sns.move_legend(axes[0][-1], "upper left", bbox_to_anchor=(1.02, 1.0), title="language", markerscale=2)
    fig.tight_layout()
    return fig
