"""Interactive multilingual search: type a question, see what two models retrieve, and in which languages.

The pool is a LAReQA multilingual pool (XQuAD-R: 11 languages, MLQA-R: 7): every answer sentence in
every language, searched at once. A model with a strong language bias fills its top 10 with sentences
in the question's language; a language-agnostic one brings the right answer in many languages.

* :func:`compare_search` is the plain function (it runs under nbval): top ``k`` of several models side
  by side, with language, score and whether each hit is relevant (when the question's id is known);
* :class:`SearchSession` loads models, pools and their indexes once, on demand;
* :func:`search_widget` wraps a session in ipywidgets (JupyterLab and Colab): a question box,
  example questions, two model choices and a pool choice;
* :func:`find_models` lists the zero-shot model and every finished training run of a profile.

The search itself is :class:`hybrid_utils.search.PoolSearch` (a faiss index over the pool's
embeddings): ``PoolSearch(model, dataset, languages=None, kind="exact").search(question, k=10,
question_id=None)`` returns a DataFrame ``rank, score, language, sentence, candidate_id, relevant``.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from .profiles import Profile, get_profile

__all__ = ["POOLS", "SHOWN_COLUMNS", "compare_search", "side_by_side", "find_models", "example_questions",
           "SearchSession", "search_widget"]

POOLS = ("xquad-r", "mlqa-r")
#: the columns of each model's hits shown side by side
SHOWN_COLUMNS = ("language", "score", "relevant", "sentence")


def _pool_search_class():
    """:class:`hybrid_utils.search.PoolSearch`, with a clear message when that module is missing."""
    try:
        from .search import PoolSearch
    except ImportError as err:  # pragma: no cover - the module ships with the package
        raise ImportError("hybrid_utils.search (PoolSearch) is needed for the search: update the package "
                          "(pip install -e . from the repository)") from err
    return PoolSearch


def side_by_side(hits: Mapping[str, pd.DataFrame], columns: Sequence[str] = SHOWN_COLUMNS) -> pd.DataFrame:
    """One table of several models' hits: index ``rank``, columns ``(model, field)``.

    Args:
        hits: ``{model name: DataFrame from PoolSearch.search}``.
        columns: the fields to keep of each model's hits.
    """
    if not hits:
        raise ValueError("no results to compare: give at least one model")
    parts = {name: frame.set_index("rank")[[c for c in columns if c in frame]] for name, frame in hits.items()}
    return pd.concat(parts, axis=1, names=["model", "field"])


def compare_search(models: Mapping[str, Any], dataset, question: str, k: int = 10, question_id: str | None = None,
                   languages: Sequence[str] | None = None) -> pd.DataFrame:
    """The top ``k`` candidates of the multilingual pool for ``question``, for each model side by side.

    Args:
        models: ``{name: SentenceTransformer}``, e.g. ``{"zero-shot": ..., "hybrid": ...}``.
        dataset: the pool, a :class:`~hybrid_utils.data.LAReQADataset` (all its candidates, all languages).
        question: the question text, in any language.
        k: how many hits per model.
        question_id: the id of a question of ``dataset`` (its translations share it): marks the relevant hits.
        languages: restrict the pool to these languages (default: all).

    Returns:
        DataFrame indexed by rank, columns ``(model, language | score | relevant | sentence)``.
    """
    if not models:
        raise ValueError("no models given: pass {name: model}, e.g. {'zero-shot': load_encoder('bundled')}")
    if not str(question).strip():
        raise ValueError("the question is empty: type a question")
    pool_search = _pool_search_class()
    hits = {name: pool_search(model, dataset, languages=languages).search(question, k=k, question_id=question_id)
            for name, model in models.items()}
    return side_by_side(hits)


def find_models(profile: Profile | str | None = None, model: str = "bundled") -> dict[str, str]:
    """``{label: model name or run folder}``: the zero-shot model, then every finished run of ``profile``.

    Runs are looked for in ``<runs_dir>/<model slug>/`` (and one level below, e.g. the lambda sweep); the label
    is the run folder's path below that, e.g. ``hybrid-mlqa-r-seed1``.
    """
    from .experiments import is_finished_run
    from .results import model_slug

    profile = profile if isinstance(profile, Profile) else get_profile(profile)
    found = {"zero-shot": model}
    root = Path(profile.runs_dir) / model_slug(model)
    if root.is_dir():
        candidates = sorted(root.glob("*")) + sorted(root.glob("*/*"))
        for folder in candidates:
            if folder.is_dir() and is_finished_run(folder):
                found[folder.relative_to(root).as_posix()] = str(folder)
    return found


def example_questions(dataset, language: str = "en", n: int = 8, seed: int = 0) -> list[tuple[str, str]]:
    """``[(question text, question id)]``: ``n`` questions of ``dataset`` in ``language``, drawn with ``seed``."""
    import random

    rows = [(text, qid) for text, qid, lang in zip(dataset.questions["text"], dataset.questions["id"],
                                                     dataset.questions["language"]) if lang == language]
    if not rows:
        raise ValueError(f"no question in {language!r}: the pool has {list(dataset.languages)}")
    return random.Random(seed).sample(rows, min(n, len(rows)))


class SearchSession:
    """Models, pools and pool indexes, each built once and only when first needed.

    Args:
        models: ``{label: model name, run folder or loaded SentenceTransformer}`` (e.g. :func:`find_models`).
        profile: decides the pools' size (the profile's ``limit_questions`` and ``eval_languages``, as in
            evaluation); default: the current profile.
    """

    def __init__(self, models: Mapping[str, Any], profile: Profile | str | None = None) -> None:
        if not models:
            raise ValueError("no models to search with: pass {label: model name or run folder}")
        self.profile = profile if isinstance(profile, Profile) else get_profile(profile)
        self.models = dict(models)
        self._loaded: dict[str, Any] = {}
        self._pools: dict[str, Any] = {}
        self._searchers: dict[tuple[str, str], Any] = {}

    def model(self, label: str):
        """The loaded model of ``label``."""
        if label not in self.models:
            raise KeyError(f"unknown model {label!r}: choose one of {list(self.models)}")
        if label not in self._loaded:
            value = self.models[label]
            if isinstance(value, (str, Path)):
                from .encoder import load_encoder

                value = load_encoder(str(value))
            self._loaded[label] = value
        return self._loaded[label]

    def pool(self, name: str):
        """The LAReQA data set ``name`` at the profile's size."""
        if name not in self._pools:
            from .data import load_lareqa

            self._pools[name] = load_lareqa(name, languages=self.profile.eval_languages,
                                            limit_questions=self.profile.limit_questions)
        return self._pools[name]

    def searcher(self, label: str, pool: str):
        """The ``PoolSearch`` of model ``label`` over ``pool`` (the pool is encoded on first use)."""
        key = (label, pool)
        if key not in self._searchers:
            self._searchers[key] = _pool_search_class()(self.model(label), self.pool(pool))
        return self._searchers[key]

    def compare(self, question: str, labels: Sequence[str], pool: str = "xquad-r", k: int = 10,
                question_id: str | None = None) -> pd.DataFrame:
        """:func:`compare_search` with this session's cached indexes."""
        if not str(question).strip():
            raise ValueError("the question is empty: type a question")
        labels = list(dict.fromkeys(labels))
        return side_by_side({label: self.searcher(label, pool).search(question, k=k, question_id=question_id)
                             for label in labels})


def _hits_html(table: pd.DataFrame) -> str:
    """The side-by-side table as HTML: one block per model, relevant hits highlighted."""
    blocks = []
    for label in dict.fromkeys(table.columns.get_level_values(0)):
        part = table[label]
        rows = []
        for rank, hit in part.iterrows():
            relevant = bool(hit.get("relevant", False))
            style = ' style="background:#d9f2d9"' if relevant else ""
            sentence = html.escape(str(hit.get("sentence", "")))
            rows.append(f"<tr{style}><td>{rank}</td><td>{html.escape(str(hit['language']))}</td>"
                        f"<td>{hit['score']:.3f}</td><td>{'✓' if relevant else ''}</td>"
                        f"<td style='text-align:left'>{sentence[:160]}{'…' if len(sentence) > 160 else ''}</td></tr>")
        languages = part["language"].value_counts().to_dict()
        summary = ", ".join(f"{lang} {count}" for lang, count in languages.items())
        blocks.append(f"<div style='flex:1;min-width:320px'><b>{html.escape(label)}</b>"
                      f"<div style='font-size:85%'>languages in the top {len(part)}: {html.escape(summary)}</div>"
                      "<table><tr><th>rank</th><th>lang</th><th>score</th><th>relevant</th><th>sentence</th></tr>"
                      + "".join(rows) + "</table></div>")
    return "<div style='display:flex;gap:16px;flex-wrap:wrap'>" + "".join(blocks) + "</div>"


def search_widget(models: Mapping[str, Any] | None = None, profile: Profile | str | None = None,
                  pools: Sequence[str] = POOLS, k: int = 10, session: SearchSession | None = None):
    """A search box over the multilingual pool, two models side by side (ipywidgets).

    Args:
        models: ``{label: model name, run folder or model}``; default :func:`find_models` of ``profile``.
        profile: the run profile (pool sizes, where runs are); default: the current one.
        pools: the pools to choose from.
        k: hits per model.
        session: reuse a :class:`SearchSession` (its loaded models and indexes).

    Returns:
        The ``ipywidgets.VBox``; display it (it is the cell's value in a notebook).
    """
    import ipywidgets as widgets

    session = session or SearchSession(models or find_models(profile), profile)
    labels = list(session.models)
    pool_choice = widgets.Dropdown(options=list(pools), value=pools[0], description="pool")
    model_a = widgets.Dropdown(options=labels, value=labels[0], description="model A")
    model_b = widgets.Dropdown(options=labels, value=labels[-1], description="model B")
    examples = widgets.Dropdown(description="example", layout=widgets.Layout(width="95%"))
    question = widgets.Text(placeholder="type a question in any language", description="question",
                            layout=widgets.Layout(width="95%"))
    button = widgets.Button(description="search", button_style="primary")
    status = widgets.HTML()
    output = widgets.HTML()
    state = {"question_id": None, "text": None}

    def load_examples(change=None):
        found = example_questions(session.pool(pool_choice.value), language="en")
        examples.options = [("(type your own)", None)] + [(text, (text, qid)) for text, qid in found]
        examples.value = None

    def pick_example(change):
        if change["new"]:
            text, qid = change["new"]
            state.update(question_id=qid, text=text)
            question.value = text

    def run_search(_=None):
        # a typed question has no id, so no hit can be marked relevant; an example question keeps its id
        question_id = state["question_id"] if question.value == state["text"] else None
        status.value = "<i>searching (the first search with a model encodes its pool once)…</i>"
        try:
            table = session.compare(question.value, [model_a.value, model_b.value], pool=pool_choice.value, k=k,
                                    question_id=question_id)
        except ValueError as err:
            status.value = f"<b>{html.escape(str(err))}</b>"
            return
        status.value = "" if question_id else "<i>your own question: relevance is unknown</i>"
        output.value = _hits_html(table)

    pool_choice.observe(load_examples, names="value")
    examples.observe(pick_example, names="value")
    button.on_click(run_search)
    load_examples()
    return widgets.VBox([widgets.HBox([pool_choice, model_a, model_b]), examples,
                         widgets.HBox([question, button]), status, output])
