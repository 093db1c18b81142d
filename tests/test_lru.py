"""The process-wide LRU registry behind the tokenizer, training and evaluation caches."""
import pytest

from hybrid_utils.plumbing.lru import LRURegistry


def test_builds_once_and_drops_the_least_recently_used():
    registry, built = LRURegistry(size=2), []

    def build(value):
        return lambda: built.append(value) or value

    assert registry.get("a", build(1)) == 1
    assert registry.get("b", build(2)) == 2
    assert registry.get("a", build(99)) == 1  # kept: not built again, and now the most recently used
    assert registry.get("c", build(3)) == 3  # drops "b", the least recently used
    assert built == [1, 2, 3]
    assert "a" in registry and "b" not in registry and len(registry) == 2
    registry.clear()
    assert len(registry) == 0


def test_a_registry_keeps_at_least_one_value():
    with pytest.raises(ValueError, match="at least one"):
        LRURegistry(size=0)
