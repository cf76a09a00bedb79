"""glibc malloc settings for CPU training (issue 15): freed activations are kept for reuse, not handed back.

A training step allocates and frees the same large activations every step. glibc serves a block above its mmap
threshold (dynamic, at most 32 MiB by default) with its own mmap and unmaps it on free, and trims the heap top once
more than the trim threshold is free there, so every step faults those pages in again, each zero-filled by the
kernel: a plain record-11l loop at 8,192 tokens on one thread takes 316,357 (bf16) to 705,479 (fp32) minor page
faults per step. With the mmap threshold at 1 GiB and trimming off, the pages are reused (1 and 16,385) and that
loop's step is 7–8 % faster (BENCHMARKS.md, "The CPU training path's folds and the malloc setting": plain against
plain-malloc). The process keeps its high-water heap, which a training run reaches anyway (peak RSS +1–4 %).

`pgolf run` (the training loop) applies it once per process, in single-process CPU runs (a 2-process gloo run
once aborted at interpreter exit with it in force; not reproduced, so it stays off there until understood). A user's own malloc tuning (MALLOC_*_ variables or
glibc.malloc tunables in GLIBC_TUNABLES) is kept, and other C libraries are left alone.
"""

from __future__ import annotations

import ctypes
import os
import platform

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3  # glibc <malloc.h>
MMAP_THRESHOLD = 1 << 30
"""Blocks below 1 GiB come from the heap (the largest CPU activations are tens of MB); glibc versions that cap the
threshold at HEAP_MAX_SIZE / 2 get that cap (32 MiB)."""
TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int: "never" in practice
TOP_PAD = 64 << 20  # grow the heap in 64 MiB steps: fewer brk calls while the first steps reach the high-water mark
USER_VARS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")

_applied: bool | None = None


def retain_freed_memory(environ: dict[str, str] | None = None) -> bool:
    """Raise glibc's mmap threshold and turn heap trimming off for this process; True when in force.

    False (nothing changed) off glibc or where the environment already tunes malloc. Idempotent."""
    global _applied
    env = os.environ if environ is None else environ
    if any(v in env for v in USER_VARS) or "glibc.malloc." in env.get("GLIBC_TUNABLES", ""):
        return False
    if environ is None and _applied is not None:
        return _applied
    ok = False
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        try:
            mallopt = ctypes.CDLL(None).mallopt
        except (OSError, AttributeError):
            mallopt = None
        if mallopt is not None:
            mmap_ok = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) or mallopt(M_MMAP_THRESHOLD, 32 << 20)
            ok = bool(mmap_ok) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)) and bool(mallopt(M_TOP_PAD, TOP_PAD))
    if environ is None:
        _applied = ok
    return ok
