"""How the C allocator hands memory back to the system (glibc's ``mallopt``).

numpy's temporaries of a few hundred kilobytes to a few megabytes (a batch's columns, a
detector's windows) are the allocator's awkward size: by default glibc gives such a block back
to the system when it is freed (``munmap``, or trimming the top of the heap), so the next one of
its size starts again from untouched pages, and every 4 KiB page costs a fault and zeroing on
first write. In the detection child that was about 40 % of the anomaly detector's time. Keeping
freed memory (up to ``keep_mb`` at the heap's top; blocks below a quarter of that from the heap,
not ``mmap``) reuses warm pages instead, for a process's memory that stays at its high-water
mark plus at most ``keep_mb``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def keep_freed_memory(keep_mb: int) -> bool:
    """Tune glibc's allocator as above (``keep_mb`` 0: leave its defaults). False where it was
    not applied (not glibc, or refused)."""
    if keep_mb <= 0 or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    trim = keep_mb << 20
    # The mmap threshold's ceiling in glibc is 32 MiB on 64-bit systems.
    mmap = min(trim // 4, 32 << 20)
    return bool(mallopt(_M_MMAP_THRESHOLD, mmap)) and bool(mallopt(_M_TRIM_THRESHOLD, trim))
