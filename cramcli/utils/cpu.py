"""CPU training speed: keep freed memory in the process instead of handing it back to the kernel every step."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc mallopt parameters (malloc.h)


@functools.cache
def keep_freed_memory() -> bool:
    """glibc serves big blocks (activations, logits) with mmap and trims the heap on free, so every training
    step pays page faults and kernel zeroing for the same buffers again (~10 % of a CPU step). Serving them from
    the heap and never trimming it reuses the memory instead. Returns whether the setting took effect."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, 2**30))
    except (OSError, AttributeError):  # not glibc (e.g. musl): nothing to tune
        return False
