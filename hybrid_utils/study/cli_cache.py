"""The ``cache`` command: where the disk caches are, how big, and ``--clear`` to delete them."""

from __future__ import annotations

import argparse


def add_cache_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``cache`` command."""
    parser = subparsers.add_parser(
        "cache", help="where the embedding and frozen-layer stores are and how big; --clear deletes them",
        description="The embedding store keeps every model's embeddings of the texts it encoded, and the "
                    "frozen-layer store the lower layers' output for the evaluation pools, on disk, so that "
                    "chapters and evaluations do not compute them again (hybrid_utils.plumbing.embedding_store, "
                    "hybrid_utils.plumbing.frozen_store). Their size limits are $HYBRID_EMBEDDING_CACHE_MB "
                    "(default 2000) and $HYBRID_FROZEN_CACHE_MB (default 3000); 0 turns a store off.")
    parser.add_argument("--clear", action="store_true", help="delete every stored embedding and frozen-layer state")
    parser.set_defaults(handler=run_cache)
    return parser


def run_cache(args: argparse.Namespace) -> int:
    """Handler of ``cache``: print each store's folder and size, or clear them."""
    from hybrid_utils.plumbing.embedding_store import EmbeddingStore
    from hybrid_utils.plumbing.frozen_store import FrozenLayerStore

    for name, store in (("embedding store", EmbeddingStore()), ("frozen-layer store", FrozenLayerStore())):
        if args.clear:
            print(f"deleted {store.clear() / 1e6:.1f} MB of the {name} in {store.root}")
        else:
            size = store.size_bytes() if store.root.exists() else 0
            print(f"{name}: {store.root}, {size / 1e6:.1f} MB of at most {store.max_bytes / 1e6:.0f} MB")
    return 0
