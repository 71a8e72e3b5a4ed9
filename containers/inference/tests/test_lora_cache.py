"""ByteLru: eviction by bytes in least-recently-used order, pins, refusals, hit and miss counts."""

from __future__ import annotations

import threading

import pytest

from lora_server.lora_cache import ByteLru, CacheError, TooLarge


def test_evicts_least_recently_used_until_the_new_item_fits() -> None:
    cache: ByteLru[str, str] = ByteLru(100)
    evicted: list[str] = []
    for key in ("a", "b", "c"):
        cache.put(key, key.upper(), 30, on_evict=evicted.append)
    assert cache.get("a") == "A"  # a is now the most recently used: b goes first
    assert cache.put("d", "D", 50, on_evict=evicted.append) == ["b", "c"]
    assert evicted == ["B", "C"]
    assert cache.keys() == ["a", "d"]
    assert cache.used_bytes == 80


def test_no_eviction_while_it_fits() -> None:
    # Negative control of the above: exactly at capacity, nothing goes.
    cache: ByteLru[str, int] = ByteLru(90)
    for i, key in enumerate(("a", "b", "c")):
        assert cache.put(key, i, 30) == []
    assert cache.keys() == ["a", "b", "c"] and cache.used_bytes == 90


def test_counts_hits_and_misses() -> None:
    cache: ByteLru[str, int] = ByteLru(10)
    cache.put("a", 1, 1)
    assert cache.get("a") == 1 and cache.get("b") is None and cache.get("a") == 1
    assert (cache.hits, cache.misses) == (2, 1)
    assert "b" not in cache and (cache.hits, cache.misses) == (2, 1)  # `in` counts nothing


def test_an_item_bigger_than_the_cache_is_refused_with_its_size() -> None:
    cache: ByteLru[str, int] = ByteLru(100, name="disk LoRA cache")
    cache.put("a", 1, 60)
    with pytest.raises(TooLarge, match=r"disk LoRA cache: big is 101 bytes, more than the whole cache \(100 bytes\)"):
        cache.put("big", 2, 101)
    assert cache.keys() == ["a"]  # nothing was evicted for it
    cache.put("fits", 3, 100)  # the boundary: exactly the capacity is accepted
    assert cache.keys() == ["fits"]


def test_pinned_items_are_never_evicted() -> None:
    cache: ByteLru[str, int] = ByteLru(100)
    cache.put("old", 1, 50)
    cache.put("new", 2, 50)
    cache.pin(["old"])
    assert cache.put("third", 3, 50) == ["new"]  # skips the pinned least recently used one
    with pytest.raises(CacheError, match="no room for fourth .* 50 of its 100 bytes are held by requests in progress") as full:
        cache.put("fourth", 4, 60)
    assert not isinstance(full.value, TooLarge)  # retryable, unlike an item too large for the whole cache
    assert cache.keys() == ["old", "third"]  # the refused put changed nothing
    cache.unpin(["old"])
    assert cache.put("fourth", 4, 60) == ["old", "third"]


def test_pins_count_per_request() -> None:
    cache: ByteLru[str, int] = ByteLru(50)
    cache.put("a", 1, 50)
    cache.pin(["a"])
    cache.pin(["a"])
    cache.unpin(["a"])  # one request still holds it
    with pytest.raises(CacheError):
        cache.put("b", 2, 50)
    cache.unpin(["a"])
    assert cache.put("b", 2, 50) == ["a"]


def test_replacing_a_key_updates_its_size_and_evicts_the_old_value() -> None:
    cache: ByteLru[str, str] = ByteLru(100)
    gone: list[str] = []
    cache.put("a", "v1", 40, on_evict=gone.append)
    assert cache.put("a", "v2", 70, on_evict=gone.append) == []
    assert gone == ["v1"] and cache.used_bytes == 70 and cache.get("a") == "v2"


def test_remove_runs_on_evict() -> None:
    cache: ByteLru[str, str] = ByteLru(100)
    gone: list[str] = []
    cache.put("a", "A", 10, on_evict=gone.append)
    assert cache.remove("a") and not cache.remove("a")
    assert gone == ["A"] and cache.used_bytes == 0


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="capacity must be a positive number of bytes"):
        ByteLru(0)


def test_concurrent_puts_keep_the_byte_count_exact() -> None:
    cache: ByteLru[int, int] = ByteLru(1000)

    def fill(start: int) -> None:
        for i in range(start, start + 200):
            cache.put(i, i, 7)

    threads = [threading.Thread(target=fill, args=(n * 1000,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert cache.used_bytes == 7 * len(cache) <= 1000
    assert len(cache) == 1000 // 7
