"""Give the C heap's free pages back to the OS now and then (glibc ``malloc_trim``).

Why: a pair allocates and frees tens of MiB of NumPy / OpenCV / torch buffers of varying sizes, and
glibc keeps freed heap memory mapped, so a long-running process's RSS creeps up although nothing
leaks (the node's 30-minute soak: +100 MiB). Measured on the node's loop in one process (room
stream 320x240, map cap 30,000, offer + worker threads, three variants side by side): heap in use
flat at ~145 MiB in all; RSS over 350 pairs 604 -> 714 MiB untrimmed (rising in steps), a sawtooth
470-580 MiB when trimmed every 5 s, 464-471 MiB when trimmed every 1 s (~every pair). A trim costs
~13 ms plus re-faulting the pages it released (~7 % slower pairs when trimmed after every one), hence
the period. A lower mmap threshold (mallopt M_MMAP_THRESHOLD 256 KiB) also kept RSS flat but made
the loop ~50 % slower (measured, not used).

Hand-written: a ctypes call into glibc; no installed library wraps it. Elsewhere (musl, macOS) a no-op.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import time


def _malloc_trim():
    """glibc's ``int malloc_trim(size_t pad)``, or None where the C library has none."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        fn = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
    return fn


_TRIM = _malloc_trim()


def trim_available() -> bool:
    """True where the C library can trim its heap (glibc)."""
    return _TRIM is not None


def trim_now() -> bool:
    """Return the heap's free pages to the OS. True if memory was released."""
    return bool(_TRIM(0)) if _TRIM is not None else False


class HeapTrimmer:
    """Calls ``trim_now`` at most every ``period_s`` seconds (monotonic clock)."""

    def __init__(self) -> None:
        self._last_s = time.monotonic()

    def maybe_trim(self, period_s: float) -> float | None:
        """Trim if ``period_s`` (> 0) has passed since the last trim. Returns the seconds the trim
        took, or None when it did not run (too soon, ``period_s`` <= 0, or no glibc)."""
        now = time.monotonic()
        if _TRIM is None or period_s <= 0 or now - self._last_s < period_s:
            return None
        trim_now()
        self._last_s = time.monotonic()
        return self._last_s - now
