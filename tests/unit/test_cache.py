from __future__ import annotations

import pytest

from esper.kernels import ByteLRU


def test_lru_is_bounded_in_bytes_and_counts() -> None:
    cache: ByteLRU[str] = ByteLRU(capacity_bytes=100)
    cache.put("a", "A", 40)
    cache.put("b", "B", 40)
    assert cache.get("a") == "A"  # a is now the most recent
    cache.put("c", "C", 40)  # 120 > 100: evicts b, the least recently used
    assert "b" not in cache and cache.get("a") == "A" and cache.get("c") == "C"
    assert cache.get("b") is None
    stats = cache.stats
    assert (stats.hits, stats.misses, stats.evictions, stats.bytes, stats.entries) == (
        3,
        1,
        1,
        80,
        2,
    )


def test_an_entry_larger_than_the_bound_stays_until_the_next() -> None:
    cache: ByteLRU[int] = ByteLRU(capacity_bytes=10)
    cache.put("big", 1, 50)
    assert cache.get("big") == 1
    cache.put("small", 2, 5)
    assert "big" not in cache and cache.stats.evictions == 1


def test_negative_bound_is_refused_with_its_key() -> None:
    with pytest.raises(ValueError, match="kernels.cache_bytes=-1"):
        ByteLRU(-1)
