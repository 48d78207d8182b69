"""heap: trimming gives a fragmented heap's free pages back to the OS (glibc), at most once a period."""
import time

import numpy as np
import psutil
import pytest

from noposplat_ros import heap

pytestmark = pytest.mark.skipif(not heap.trim_available(), reason="no glibc malloc_trim on this platform")


def _rss_mib() -> float:
    return psutil.Process().memory_info().rss / 2**20


def test_trim_releases_the_free_pages_of_a_fragmented_heap():
    heap.trim_now()
    # 96 KiB blocks come from the heap (below glibc's 128 KiB mmap threshold); freeing every other one
    # leaves holes that free() keeps mapped: RSS stays up until a trim
    blocks = [np.ones(96 * 1024, dtype=np.uint8) for _ in range(1200)]  # ~113 MiB touched
    del blocks[::2]
    before = _rss_mib()
    released = heap.trim_now()
    after = _rss_mib()
    assert released
    assert before - after > 30, f"RSS {before:.0f} -> {after:.0f} MiB: the ~56 MiB of holes were not released"
    assert all(int(b[0]) == 1 and int(b[-1]) == 1 for b in blocks)  # the live blocks are intact


def test_trimmer_runs_at_most_once_per_period():
    t = heap.HeapTrimmer()
    assert t.maybe_trim(3600.0) is None  # the period counts from construction
    assert t.maybe_trim(0.0) is None  # 0 = never
    time.sleep(0.06)
    dt = t.maybe_trim(0.05)
    assert dt is not None and dt >= 0
    assert t.maybe_trim(0.05) is None  # just trimmed
