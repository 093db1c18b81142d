"""Search speed and recall: exact inner product (faiss IndexFlatIP) versus HNSW (IndexHNSWFlat).

Two corpora, both searched through :class:`hybrid_utils.search.SearchIndex`:

* the XQuAD-R multilingual pool (candidate sentences of all 11 languages), embedded with the
  bundled multilingual-e5-small, queried with XQuAD-R questions of all languages;
* a synthetic corpus of random unit vectors (dimension 384, 1,000,000 by default, built in chunks
  so memory stays at about corpus size x 1.6 for HNSW). By default they are drawn around 1,000
  random cluster centres, as real embeddings gather around topics; ``--clusters 0`` draws them
  uniformly on the sphere, where no vector has close neighbours and every graph index degrades
  (build and search slow down, recall drops). Queries are corpus vectors plus Gaussian noise,
  renormalised, so that each has a true neighbourhood to find.

Printed per corpus: build seconds, queries/s of exact and HNSW search, and HNSW recall@10, the
fraction of the exact top 10 that HNSW also returns. Speed is measured with ``--threads`` faiss
threads (default 1, so figures compare across machines; faiss uses every core otherwise).

Usage::

    python benchmarks/search.py                                  # full pool + 1M synthetic vectors
    python benchmarks/search.py --synthetic-size 200000 --pool-limit 3000
    python benchmarks/search.py --skip-pool --ef-search 64 128 256   # the recall / speed trade-off

Encoding the full pool (13,014 sentences) takes minutes on a CPU; ``--pool-limit`` samples fewer.
Building the HNSW graph is the slow part of the synthetic run: on one thread of a shared 2-core
machine (under ``nice``) 200,000 vectors took 983 s, and the build grows at least linearly with the
corpus, so 1M vectors take at least five times that there (not measured); give it ``--threads``
(faiss builds in parallel) or a smaller ``--synthetic-size``.

Measured on that machine (1 thread, ``nice -n 19`` beside a training job; ``--synthetic-size 200000
--pool-limit 3000 --queries 1000 --ef-search 64 128``):

=========================================  =========  ===============  ================================
corpus                                     exact q/s  HNSW q/s         HNSW recall@10 (efSearch 64/128)
=========================================  =========  ===============  ================================
XQuAD-R pool, 3,000 of 13,014 sentences    17,534     6,539 / 3,513    0.996 / 0.999
synthetic, 200,000 x 384, 1,000 clusters   289        1,232 / 636      1.000 / 1.000
=========================================  =========  ===============  ================================

Exact search wins on small pools; HNSW pays off as the corpus grows (4x faster at 200k, and exact
search slows linearly with size). On vectors uniform on the sphere (``--clusters 0``, 50,000 vectors,
query noise 1.0) HNSW recall@10 was only 0.52 / 0.64 / 0.92 at efSearch 64 / 128 / 512, and it was
slower than exact search: the worst case, not what real embeddings look like.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402


def unit_rows(matrix: np.ndarray) -> np.ndarray:
    """Normalise rows in place (float32), and return the matrix."""
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix


def synthetic_corpus(size: int, dim: int, n_queries: int, noise: float, clusters: int = 1000, spread: float = 1.0,
                     seed: int = 0, chunk: int = 100_000) -> tuple[np.ndarray, np.ndarray]:
    """Random unit vectors (built chunk by chunk, float32) and noisy copies of some of them as queries.

    With ``clusters > 0`` each vector is a random cluster centre plus Gaussian noise of norm about
    ``spread``, renormalised (like topics in a real corpus); ``clusters=0`` gives vectors uniform on
    the sphere, the worst case for any graph index (no neighbourhood structure at all).
    """
    rng = np.random.default_rng(seed)
    centres = unit_rows(rng.standard_normal((clusters, dim), dtype=np.float32)) if clusters > 0 else None
    corpus = np.empty((size, dim), dtype=np.float32)
    for start in range(0, size, chunk):
        n = min(chunk, size - start)
        block = rng.standard_normal((n, dim), dtype=np.float32)
        if centres is not None:
            block *= spread / np.sqrt(dim)
            block += centres[rng.integers(0, clusters, n)]
        corpus[start:start + n] = unit_rows(block)
    picked = rng.choice(size, n_queries, replace=False)
    queries = corpus[picked] + noise * rng.standard_normal((n_queries, dim), dtype=np.float32) / np.sqrt(dim)
    return corpus, unit_rows(queries.astype(np.float32))


def pool_corpus(n_queries: int, limit: int | None, batch_size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The XQuAD-R multilingual pool (all languages) and questions, embedded with the bundled model."""
    from hybrid_utils.data import load_lareqa
    from hybrid_utils.encoder import encode_texts, load_encoder

    data = load_lareqa("xquad-r")
    rng = np.random.default_rng(seed)
    sentences = data.candidates["sentence"]
    if limit is not None and limit < len(sentences):
        sentences = [sentences[i] for i in sorted(rng.choice(len(sentences), limit, replace=False))]
    questions = data.questions["text"]
    questions = [questions[i] for i in rng.choice(len(questions), min(n_queries, len(questions)), replace=False)]
    model = load_encoder("bundled", device="cpu")
    t0 = time.perf_counter()
    corpus = encode_texts(model, sentences, prompt_name="passage", batch_size=batch_size, show_progress_bar=False)
    queries = encode_texts(model, questions, prompt_name="query", batch_size=batch_size, show_progress_bar=False)
    print(f"  encoded {len(sentences):,} sentences + {len(questions):,} questions in {time.perf_counter() - t0:.0f} s")
    return corpus, queries


def recall_at_k(approx: np.ndarray, exact: np.ndarray) -> float:
    """Mean fraction of each exact top-k that the approximate top-k contains."""
    k = exact.shape[1]
    return float(np.mean([len(set(a) & set(e)) / k for a, e in zip(approx, exact)]))


def compare(name: str, corpus: np.ndarray, queries: np.ndarray, k: int, hnsw_m: int, ef_search: list[int],
            ef_construction: int) -> None:
    from hybrid_utils.search import SearchIndex

    print(f"{name}: {len(corpus):,} vectors x {corpus.shape[1]}, {len(queries):,} queries, k={k}")
    t0 = time.perf_counter()
    exact_index = SearchIndex(corpus, kind="exact")
    build_exact = time.perf_counter() - t0
    t0 = time.perf_counter()
    _, exact = exact_index.search(queries, k=k)
    exact_seconds = time.perf_counter() - t0
    print(f"  exact  build {build_exact:7.1f} s   {len(queries) / exact_seconds:10.1f} queries/s   recall@{k} 1.000")
    del exact_index
    t0 = time.perf_counter()
    hnsw = SearchIndex(corpus, kind="hnsw", hnsw_m=hnsw_m, ef_construction=ef_construction)
    build_hnsw = time.perf_counter() - t0
    for ef in ef_search:
        hnsw.index.hnsw.efSearch = ef
        t0 = time.perf_counter()
        _, approx = hnsw.search(queries, k=k)
        seconds = time.perf_counter() - t0
        print(f"  hnsw   build {build_hnsw:7.1f} s   {len(queries) / seconds:10.1f} queries/s   "
              f"recall@{k} {recall_at_k(approx, exact):.3f}   (M={hnsw_m}, efSearch={ef}, "
              f"efConstruction={ef_construction})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--synthetic-size", type=int, default=1_000_000, help="synthetic corpus size (default 1M)")
    parser.add_argument("--dim", type=int, default=384, help="synthetic dimension (default 384, as e5-small)")
    parser.add_argument("--clusters", type=int, default=1000,
                        help="cluster centres of the synthetic vectors (0: uniform on the sphere)")
    parser.add_argument("--noise", type=float, default=0.5,
                        help="query noise (relative to a unit vector's norm) for the synthetic queries")
    parser.add_argument("--queries", type=int, default=1000, help="queries per corpus (default 1000)")
    parser.add_argument("--pool-limit", type=int, default=None, help="sample this many pool sentences (default: all)")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--hnsw-m", type=int, default=32)
    parser.add_argument("--ef-search", type=int, nargs="+", default=[128])
    parser.add_argument("--ef-construction", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=64, help="encoding batch size")
    parser.add_argument("--threads", type=int, default=1, help="faiss / torch threads (default 1)")
    parser.add_argument("--skip-pool", action="store_true", help="only the synthetic corpus")
    parser.add_argument("--skip-synthetic", action="store_true", help="only the XQuAD-R pool")
    args = parser.parse_args(argv)

    import faiss
    import torch

    faiss.omp_set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    print(f"faiss {faiss.__version__}, {args.threads} thread(s)")
    if not args.skip_pool:
        corpus, queries = pool_corpus(args.queries, args.pool_limit, args.batch_size)
        compare("XQuAD-R multilingual pool (bundled model)", corpus, queries, args.k, args.hnsw_m, args.ef_search,
                args.ef_construction)
        del corpus, queries
    if not args.skip_synthetic:
        corpus, queries = synthetic_corpus(args.synthetic_size, args.dim, args.queries, args.noise, args.clusters)
        kind = f"{args.clusters} clusters" if args.clusters > 0 else "uniform on the sphere"
        compare(f"synthetic random unit vectors ({kind})", corpus, queries, args.k, args.hnsw_m, args.ef_search,
                args.ef_construction)
    return 0


if __name__ == "__main__":
    sys.exit(main())
