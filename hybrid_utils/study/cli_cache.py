"""The ``cache`` command: where the embedding store is, how big, and ``--clear`` to delete it."""

from __future__ import annotations

import argparse


def add_cache_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``cache`` command."""
    parser = subparsers.add_parser(
        "cache", help="where the embedding store is and how big; --clear deletes it",
        description="The embedding store keeps every model's embeddings of the texts it encoded, on disk, so that "
                    "chapters and evaluations do not encode them again (hybrid_utils.plumbing.embedding_store). "
                    "Its size limit is $HYBRID_EMBEDDING_CACHE_MB (default 2000, 0 turns it off).")
    parser.add_argument("--clear", action="store_true", help="delete every stored embedding")
    parser.set_defaults(handler=run_cache)
    return parser


def run_cache(args: argparse.Namespace) -> int:
    """Handler of ``cache``: print the store's folder and size, or clear it."""
    from hybrid_utils.plumbing.embedding_store import EmbeddingStore

    store = EmbeddingStore()
    if args.clear:
        print(f"deleted {store.clear() / 1e6:.1f} MB of stored embeddings in {store.root}")
    else:
        size = store.size_bytes() if store.root.exists() else 0
        print(f"embedding store: {store.root}, {size / 1e6:.1f} MB of at most {store.max_bytes / 1e6:.0f} MB")
    return 0
