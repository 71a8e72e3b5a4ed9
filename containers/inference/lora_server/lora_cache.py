"""A least-recently-used cache bounded by bytes, the shape of every LoRA cache tier (disk, host, GPU).

Thread-safe: the disk tier is used by concurrent requests outside the GPU lock. Keys pinned by a
request in progress are never evicted, so a request never loses a LoRA it is about to use.
"""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class CacheError(Exception):
    """An item the cache cannot hold now: no room left beside the items pinned by requests in progress."""


class TooLarge(CacheError):
    """An item bigger than the whole cache: it can never be held."""


@dataclass
class _Entry(Generic[V]):
    value: V
    nbytes: int
    on_evict: Callable[[V], None] | None


class ByteLru(Generic[K, V]):
    """Holds at most `capacity_bytes` of items; `put` evicts the least recently used unpinned ones."""

    def __init__(self, capacity_bytes: int, name: str = "cache") -> None:
        if capacity_bytes <= 0:
            raise ValueError(f"{name}: capacity must be a positive number of bytes, got {capacity_bytes}")
        self.capacity_bytes = capacity_bytes
        self.name = name
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[K, _Entry[V]] = OrderedDict()  # least recently used first
        self._pins: Counter[K] = Counter()
        self._used = 0
        self._lock = threading.RLock()

    @property
    def used_bytes(self) -> int:
        return self._used

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        """Whether `key` is held, without counting a hit or a miss or refreshing it."""
        return key in self._entries

    def keys(self) -> list[K]:
        """The keys held, least recently used first."""
        with self._lock:
            return list(self._entries)

    def get(self, key: K) -> V | None:
        """The value of `key` (now the most recently used), or None; counts a hit or a miss."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self.misses += 1
                return None
            self.hits += 1
            self._entries.move_to_end(key)
            return entry.value

    def put(self, key: K, value: V, nbytes: int, on_evict: Callable[[V], None] | None = None) -> list[K]:
        """Adds (or replaces) `key`, evicting least recently used unpinned items until it fits.

        Returns the evicted keys; each evicted item's `on_evict` runs after the cache's lock is released.
        Raises CacheError, changing nothing, when the item cannot fit.
        """
        if nbytes < 0:
            raise ValueError(f"{self.name}: nbytes must be >= 0, got {nbytes}")
        if nbytes > self.capacity_bytes:
            raise TooLarge(
                f"{self.name}: {key} is {nbytes} bytes, more than the whole cache ({self.capacity_bytes} bytes); "
                "raise the cache size"
            )
        with self._lock:
            replaced = self._entries.pop(key, None)
            if replaced is not None:
                self._used -= replaced.nbytes
            victims = self._victims(nbytes)
            if victims is None:
                if replaced is not None:  # put it back as it was: a refused put changes nothing
                    self._entries[key] = replaced
                    self._used += replaced.nbytes
                pinned = sum(self._entries[k].nbytes for k in self._pins if k in self._entries)
                raise CacheError(
                    f"{self.name}: no room for {key} ({nbytes} bytes): {pinned} of its {self.capacity_bytes} bytes "
                    "are held by requests in progress; retry shortly, or raise the cache size"
                )
            evicted = [(k, self._entries.pop(k)) for k in victims]
            self._used -= sum(entry.nbytes for _, entry in evicted)
            self._entries[key] = _Entry(value, nbytes, on_evict)
            self._used += nbytes
        if replaced is not None and replaced.value is not value:
            evicted.append((key, replaced))
        for _, entry in evicted:
            if entry.on_evict is not None:
                entry.on_evict(entry.value)
        return [k for k, _ in evicted if k != key]

    def _victims(self, nbytes: int) -> list[K] | None:
        """The least recently used unpinned keys whose removal makes room for `nbytes`; None if that is not enough."""
        free = self.capacity_bytes - self._used
        victims: list[K] = []
        for key, entry in self._entries.items():
            if free >= nbytes:
                break
            if self._pins[key] == 0:
                victims.append(key)
                free += entry.nbytes
        return victims if free >= nbytes else None

    def held_bytes(self, keys: Iterable[K]) -> int:
        """The bytes of those of `keys` held now (each counted once)."""
        with self._lock:
            return sum(self._entries[k].nbytes for k in set(keys) if k in self._entries)

    def remove(self, key: K) -> bool:
        """Drops `key` (running its on_evict); False if it was not held. Pinned keys are dropped too: the caller asked."""
        with self._lock:
            entry = self._entries.pop(key, None)
            if entry is None:
                return False
            self._used -= entry.nbytes
        if entry.on_evict is not None:
            entry.on_evict(entry.value)
        return True

    def pin(self, keys: Iterable[K]) -> None:
        """Protects `keys` from eviction until as many `unpin`s; a key may be pinned before it is held."""
        with self._lock:
            self._pins.update(keys)

    def unpin(self, keys: Iterable[K]) -> None:
        with self._lock:
            self._pins.subtract(keys)
            self._pins = +self._pins  # drop the zero and negative counts
