"""Search a pool of candidate sentences with faiss: exact inner product, or HNSW for very large corpora.

The evaluation code ranks a whole pool with one matrix product, which is exact and fast enough
for LAReQA (13k candidates). Serving a retriever, or searching millions of passages, needs an
index: :class:`SearchIndex` wraps `faiss <https://github.com/facebookresearch/faiss>`_ with

* ``kind="exact"``: :class:`faiss.IndexFlatIP`, brute-force inner product. With unit-norm
  embeddings (what :func:`hybrid_utils.encoder.encode_texts` returns) inner product is cosine
  similarity, so the ranking is the one the evaluation uses. Right up to about a million passages.
* ``kind="hnsw"``: :class:`faiss.IndexHNSWFlat` with ``METRIC_INNER_PRODUCT``, a graph index that
  visits a small part of the corpus per query. It is approximate: ``ef_search`` trades speed for
  recall. Worth it past about a million passages, where exact search costs more per query than
  the encoder; ``benchmarks/search.py`` measures both (queries/s, recall@10 against exact).

:class:`PoolSearch` and :func:`search_pool` put a LAReQA data set behind such an index: encode the
candidate sentences once (prompt ``"passage"``), then type a question in any language and see the
top-k sentences, their language, and whether they answer a given question id.

Encoding a large corpus is the slow part, not the search. Sentence Transformers encodes on several
processes or GPUs with ``model.encode(texts, device=["cuda:0", "cuda:1"])`` (or a list of
``"cpu"`` entries), see :meth:`~sentence_transformers.SentenceTransformer.encode`; pass the
resulting (unit-norm, float32) embeddings to :class:`SearchIndex` directly.

Example::

    from hybrid_utils.data import load_lareqa
    from hybrid_utils.encoder import load_encoder
    from hybrid_utils.search import PoolSearch

    searcher = PoolSearch(load_encoder("bundled"), load_lareqa("xquad-r", languages=["en", "de"]))
    searcher.search("Wie viele Menschen leben in Berlin?", k=5)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from sentence_transformers import SentenceTransformer

    from .data import LAReQADataset

__all__ = ["INDEX_KINDS", "SearchIndex", "encode_pool", "PoolSearch", "search_pool"]

#: The kinds of :class:`SearchIndex`.
INDEX_KINDS = ("exact", "hnsw")

RESULT_COLUMNS = ["rank", "score", "language", "sentence", "candidate_id", "relevant"]


def _as_matrix(vectors, name: str, dim: int | None = None) -> np.ndarray:
    """``vectors`` as a C-contiguous float32 ``(n, dim)`` array (faiss needs exactly that)."""
    array = np.asarray(vectors, dtype=np.float32)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (n, dim), got shape {array.shape}")
    if dim is not None and array.shape[1] != dim:
        raise ValueError(f"{name} have dimension {array.shape[1]} but the index holds {dim}-dimensional "
                         "embeddings: encode them with the same model as the corpus")
    return np.ascontiguousarray(array)


class SearchIndex:
    """Top-k inner-product search over a fixed set of embeddings (a faiss index).

    Use ``kind="exact"`` (the default) unless the corpus is past about a million passages: exact
    search is then the bottleneck and ``kind="hnsw"`` answers far faster at a small recall cost
    (see ``benchmarks/search.py`` for both on this machine).

    Args:
        embeddings: ``(n, dim)`` corpus embeddings; unit-norm rows make inner product = cosine.
        kind: ``"exact"`` (:class:`faiss.IndexFlatIP`) or ``"hnsw"`` (:class:`faiss.IndexHNSWFlat`).
        hnsw_m: HNSW neighbours per node (more: better recall, more memory, slower build).
        ef_search: HNSW candidates kept while searching (more: better recall, slower queries).
        ef_construction: HNSW candidates kept while building (more: better graph, slower build).

    Attributes:
        index: the faiss index; ``ntotal`` vectors of dimension ``dim``.
    """

    def __init__(self, embeddings: np.ndarray, kind: str = "exact", hnsw_m: int = 32, ef_search: int = 128,
                 ef_construction: int = 200) -> None:
        import faiss

        if kind not in INDEX_KINDS:
            raise ValueError(f"kind must be one of {INDEX_KINDS}, got {kind!r}")
        vectors = _as_matrix(embeddings, "embeddings")
        if len(vectors) == 0:
            raise ValueError("embeddings is empty: a search index needs at least one vector")
        for name, value in (("hnsw_m", hnsw_m), ("ef_search", ef_search), ("ef_construction", ef_construction)):
            if int(value) < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.kind, self.dim = kind, int(vectors.shape[1])
        if kind == "exact":
            self.index = faiss.IndexFlatIP(self.dim)
        else:
            self.index = faiss.IndexHNSWFlat(self.dim, int(hnsw_m), faiss.METRIC_INNER_PRODUCT)
            self.index.hnsw.efConstruction = int(ef_construction)
            self.index.hnsw.efSearch = int(ef_search)
        self.index.add(vectors)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def __repr__(self) -> str:
        return f"SearchIndex(kind={self.kind!r}, vectors={len(self)}, dim={self.dim})"

    def search(self, queries: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` corpus rows with the highest inner product for each query.

        Args:
            queries: ``(m, dim)`` query embeddings (or one ``(dim,)`` vector).
            k: results per query, at most the corpus size.

        Returns:
            ``(scores, indices)``: two ``(m, k)`` arrays, best first; ``indices`` are corpus row numbers.
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        if k > len(self):
            raise ValueError(f"k={k} is larger than the corpus ({len(self)} vectors): ask for at most {len(self)}")
        scores, indices = self.index.search(_as_matrix(queries, "queries", self.dim), int(k))
        return scores, indices


def encode_pool(model: "SentenceTransformer", dataset: "LAReQADataset", languages: Sequence[str] | None = None,
                batch_size: int = 64, show_progress_bar: bool = False) -> tuple[np.ndarray, "pd.DataFrame"]:
    """Embed the candidate sentences of a LAReQA data set (prompt ``"passage"``).

    Sentences this model has encoded before (the evaluation encodes the whole pool) are read from the embedding
    store on disk (:class:`~hybrid_utils.plumbing.embedding_store.EmbeddingStore`), not encoded again.

    Args:
        model: a Sentence Transformers model with a ``"passage"`` prompt (e.g. ``load_encoder("bundled")``).
        dataset: a loaded LAReQA data set.
        languages: keep only candidates in these languages (default: every language of ``dataset``).
        batch_size: encoding batch size.
        show_progress_bar: show the encoding progress bar.

    Returns:
        ``(embeddings, candidates)``: ``(n, dim)`` unit-norm float32 embeddings and a frame with one
        row per embedding: ``candidate_id``, ``language``, ``sentence``, ``paragraph_id`` and
        ``question_ids`` (the ids of the questions it answers; empty for most sentences).
    """
    import pandas as pd

    from .encoder import encode_texts

    frame = dataset.candidates.select_columns(["id", "language", "sentence", "paragraph_id"]).to_pandas()
    frame = frame.rename(columns={"id": "candidate_id"})
    if languages is not None:
        unknown = sorted(set(languages) - set(dataset.languages))
        if unknown:
            raise ValueError(f"languages {unknown} are not in {dataset.name} (it has {list(dataset.languages)})")
        frame = frame[frame["language"].isin(list(languages))].reset_index(drop=True)
    if frame.empty:
        raise ValueError(f"no candidate sentences to encode in {dataset.name} for languages {languages}")
    answered: dict[str, list[str]] = {}
    for qid, relevant in zip(dataset.questions["id"], dataset.questions["relevant_ids"]):
        for cid in relevant:
            ids = answered.setdefault(cid, [])
            if qid not in ids:
                ids.append(qid)
    frame["question_ids"] = pd.Series([answered.get(cid, []) for cid in frame["candidate_id"]], dtype=object)
    embeddings = encode_texts(model, frame["sentence"].tolist(), prompt_name="passage", batch_size=batch_size,
                              show_progress_bar=show_progress_bar, store=True)
    return embeddings, frame


class PoolSearch:
    """Type a question, get the best candidate sentences of a LAReQA pool.

    The pool is encoded once, when the object is built; each :meth:`search` encodes one question
    (prompt ``"query"``) and searches a :class:`SearchIndex`.

    Args:
        model: the encoder (``load_encoder("bundled")``, a run folder loaded with it, ...).
        dataset: the LAReQA data set whose candidate sentences form the pool.
        languages: restrict the pool to these languages (default: all of ``dataset``).
        kind: ``"exact"`` or ``"hnsw"`` (see :class:`SearchIndex`).
        batch_size: encoding batch size for the pool.
    """

    def __init__(self, model: "SentenceTransformer", dataset: "LAReQADataset", languages: Sequence[str] | None = None,
                 kind: str = "exact", batch_size: int = 64) -> None:
        self.model, self.dataset = model, dataset
        self.embeddings, self.candidates = encode_pool(model, dataset, languages=languages, batch_size=batch_size)
        self.index = SearchIndex(self.embeddings, kind=kind)
        self._question_ids = set(dataset.questions["id"])

    def __len__(self) -> int:
        return len(self.candidates)

    def __repr__(self) -> str:
        languages = sorted(set(self.candidates["language"]))
        return f"PoolSearch({self.dataset.name!r}, candidates={len(self)}, languages={languages}, kind={self.index.kind!r})"

    def search(self, question: str, k: int = 10, question_id: str | None = None) -> "pd.DataFrame":
        """The ``k`` best candidate sentences for ``question``.

        Args:
            question: the question text, in any language.
            k: how many results (at most the pool size).
            question_id: a question id of the data set: marks the sentences that answer it
                (in any language) as ``relevant``. None: every row is ``relevant=False``.

        Returns:
            a frame with columns ``rank`` (1 = best), ``score`` (cosine similarity), ``language``,
            ``sentence``, ``candidate_id`` and ``relevant``.
        """
        import pandas as pd

        from .encoder import encode_texts

        if not isinstance(question, str) or not question.strip():
            raise ValueError("question must be a non-empty string")
        if question_id is not None and question_id not in self._question_ids:
            raise ValueError(f"question_id {question_id!r} is not a question of {self.dataset.name}: "
                             "pass an id from dataset.questions['id'], or None")
        query = encode_texts(self.model, [question], prompt_name="query", show_progress_bar=False)
        if isinstance(k, int) and not isinstance(k, bool) and k > len(self):
            k = len(self)  # a small pool (a few languages, a subset) simply returns all of it
        scores, indices = self.index.search(query, k=k)
        rows = self.candidates.iloc[indices[0]]
        relevant = [question_id is not None and question_id in ids for ids in rows["question_ids"]]
        return pd.DataFrame({"rank": np.arange(1, len(rows) + 1), "score": scores[0].astype(float),
                             "language": rows["language"].to_numpy(), "sentence": rows["sentence"].to_numpy(),
                             "candidate_id": rows["candidate_id"].to_numpy(), "relevant": relevant},
                            columns=RESULT_COLUMNS)


def search_pool(model: "SentenceTransformer", dataset: "LAReQADataset", question: str, k: int = 10,
                question_id: str | None = None, languages: Sequence[str] | None = None) -> "pd.DataFrame":
    """One search over a LAReQA pool: :class:`PoolSearch` built and queried once.

    Encodes the whole pool on every call; build a :class:`PoolSearch` to ask several questions.
    Arguments and result as in :meth:`PoolSearch.search`.
    """
    return PoolSearch(model, dataset, languages=languages).search(question, k=k, question_id=question_id)
