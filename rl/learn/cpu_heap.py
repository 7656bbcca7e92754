"""Keep a CPU learner's freed memory for its next step (glibc's malloc).

A CPU learner step allocates the same few GB of activations every step and frees them
again. With glibc's defaults, blocks above a threshold (128 KiB, raised as big blocks are
freed, at most 32 MiB) are mmap-ed and given back on free, and the heap's free top is
given back above twice that threshold. The next step then faults every page in again:
on the r1t1 step workload (rl.bench step) the policy's scoring pass took 1.3-1.6 M page
faults per step (one micro-batch of 32), and faulting that much fresh memory in took
2.3 s on one core of this project's 2-core machines.

So no block is mmap-ed (``M_MMAP_MAX`` 0: glibc then serves every size from the heap) and
the heap's top is never trimmed: the next step reuses the freed blocks. The process keeps
its peak heap in exchange, as PyTorch's own GPU caching allocator does. (Allocations of
threads other than the main one come from glibc's per-thread arenas, which still mmap
what does not fit them.) Measured with rl.bench step, one run each, quiet AVX-512 machine:
- the previous setting, blocks up to 32 MiB kept (``M_MMAP_THRESHOLD`` at its ceiling), on
  the r1t1 workload in micro-batches of 4: scoring faults 635 k -> 180 k, learner 20.0 ->
  18.8 s/step; toy recipe 130 k -> 8 k, 1.11 -> 0.97 s/step; one micro-batch of 32 on r1t1:
  no change (its blocks are above 32 MiB: a micro-batch of 4 still mmap-ed its completion
  logits, 4 x 300 x 8192 floats = 39 MB);
- no mmap at all (this version), r1t1, micro-batches of 4: scoring faults 325 k -> 12,
  no-grad pass 70 k -> 0, learner 14.33 -> 13.70 s/step (2026-12-01).

Only glibc on Linux; elsewhere (musl, macOS) this does nothing. GPU runs do not need it:
their activations live in PyTorch's caching allocator.
"""
from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's <malloc.h>
NEVER_TRIM = 2**31 - 1  # mallopt takes an int

enabled = True  # the step benchmark turns it off to measure the difference


def keep_freed_memory() -> bool:
    """Set glibc's malloc to serve every block from its heap and keep freed ones for reuse;
    returns whether it took."""
    if not enabled or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, NEVER_TRIM))
