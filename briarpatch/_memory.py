"""Keep freed memory in the process instead of handing it back to the system after every batch.

A training step or an embedding batch allocates activations of tens of megabytes and frees them
again. glibc's allocator serves blocks that large with ``mmap`` and returns them with ``munmap``
(and trims its heap when the top of it is free), so the next batch touches fresh pages and the
kernel zeroes every one of them: on 2 cores an evaluation spent 2 min 26 s in the kernel beside
7 min 29 s of its own work. With
``mmap`` off and the trim threshold at its maximum, freed blocks are reused as they are (what
jemalloc and tcmalloc do by default). Measured side by side: `docs/speed.md`, "Freed memory stays
in the process".
"""

from __future__ import annotations

import ctypes
import os
import platform

__all__ = ["keep_freed_memory"]

_M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's <malloc.h>
_M_MMAP_MAX = -4
_applied = False


def keep_freed_memory() -> bool:
    """Tell glibc's allocator to keep freed memory for reuse; ``True`` when it was set (now or
    before). Nothing happens off glibc, or when the user set the allocator's own environment
    variables (``MALLOC_*``, ``GLIBC_TUNABLES``): their settings win."""
    global _applied
    if _applied:
        return True
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    if any(k.startswith("MALLOC_") for k in os.environ) or "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # In this order: a trim threshold set alone also freezes glibc's adaptive mmap threshold at
    # 128 KiB, which made every large block a fresh mapping (3x slower, measured).
    _applied = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    return _applied
