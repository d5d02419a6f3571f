"""Memory that a long extraction frees goes back to the system.

glibc's malloc raises its mmap threshold each time a large block (a decoded song, a batch of windows) is freed, up
to 32 MiB, so later blocks of that size come from the heap, whose freed pages the process keeps: measured on 60
real 4-minute songs (`python scripts/bench_extract.py --emotify rock --n 20 --minutes 4 --scale 3 --backbone
musicnn_msd`), the extraction's memory grew 1.115× from song 10 to song 60 with glibc's default and 1.035× with a
fixed 64 KiB threshold (`MALLOC_MMAP_THRESHOLD_=65536`), its peak fell from 1995 to 1802 MiB. A fixed threshold
keeps large blocks mapped on their own, returned to the system when freed. It costs inference ~0.6 ms of system
time per musicnn patch (1.5 %); the decoding workers, whose memory stayed flat, keep glibc's default.
"""

from __future__ import annotations

import ctypes
import functools
import sys

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
MMAP_THRESHOLD = 64 * 1024


@functools.cache
def return_freed_memory() -> bool:
    """Fix glibc's mmap threshold for this process (see the module docstring); False where there is no glibc.
    Process-wide, so done once: later calls (every Extractor) return the first answer. mallopt is looked up among
    the symbols the process already has (ctypes.util.find_library would start `ldconfig` on every call)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return bool(ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    except (OSError, AttributeError):  # another C library (musl has no mallopt)
        return False
