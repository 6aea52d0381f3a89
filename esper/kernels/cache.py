"""An in-memory LRU of loaded kernels, bounded in bytes, that counts what it does."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Generic, TypeVar

V = TypeVar("V")


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    evictions: int = 0
    bytes: int = 0
    entries: int = 0


class ByteLRU(Generic[V]):
    def __init__(self, capacity_bytes: int) -> None:
        if capacity_bytes < 0:
            raise ValueError(f"kernels.cache_bytes={capacity_bytes} must be non-negative")
        self.capacity = capacity_bytes
        self._items: OrderedDict[str, tuple[V, int]] = OrderedDict()
        self._lock = threading.Lock()
        self.stats = CacheStats()

    def get(self, key: str) -> V | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                self.stats.misses += 1
                return None
            self._items.move_to_end(key)
            self.stats.hits += 1
            return item[0]

    def put(self, key: str, value: V, size: int) -> None:
        """Insert, then evict least recently used entries until the bound holds (never the new
        entry: a kernel larger than the bound is still usable while it is in use)."""
        with self._lock:
            if key in self._items:
                self.stats.bytes -= self._items.pop(key)[1]
            self._items[key] = (value, size)
            self.stats.bytes += size
            while self.stats.bytes > self.capacity and len(self._items) > 1:
                _, (_, evicted) = self._items.popitem(last=False)
                self.stats.bytes -= evicted
                self.stats.evictions += 1
            self.stats.entries = len(self._items)

    def __contains__(self, key: str) -> bool:
        with self._lock:
            return key in self._items
