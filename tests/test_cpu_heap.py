"""rl/learn/cpu_heap.py: freed blocks stay on the heap, so a step's allocations do not fault again."""
import subprocess
import sys

import pytest

# Six blocks of argv[2] MiB live at once, freed together, six times over (a learner step's shape in
# small): the page faults of the last three rounds.
ROUNDS = """
import resource, sys
import torch
from rl.learn.cpu_heap import keep_freed_memory
took = keep_freed_memory() if sys.argv[1] == "keep" else None
faults = []
for _ in range(6):
    start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    blocks = [torch.ones(int(sys.argv[2]) * 1024 * 1024 // 4) for _ in range(6)]
    del blocks
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start)
print(took, sum(faults[3:]))
"""


def pages_per_round(mib: int) -> int:
    return 6 * mib * 1024 * 1024 // 4096


def rounds(mode: str, mib: int) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", ROUNDS, mode, str(mib)], capture_output=True, text=True, check=True)
    took, faults = out.stdout.split()
    return took, int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
@pytest.mark.parametrize("mib", [20, 40])
def test_freed_blocks_are_reused_without_page_faults(mib):
    """Kept, the rounds settle on the heap by the third, blocks above glibc's 32 MiB mmap
    ceiling too (an r1t1 micro-batch's completion logits are 39 MB)."""
    took, faults = rounds("keep", mib)
    assert took == "True"
    assert faults < 0.05 * pages_per_round(mib), faults


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_blocks_above_the_mmap_ceiling_fault_every_round_with_glibc_defaults():
    """The control for 40 MiB: glibc mmaps every block above 32 MiB and unmaps it on free,
    whatever its threshold, so each round faults all of them in again. (20 MiB blocks are no
    reliable control: with the defaults some processes settle them on the heap by round 3 or
    4, others fault them every round.)"""
    took, faults = rounds("defaults", 40)
    assert took == "None"
    assert faults > 0.9 * 3 * pages_per_round(40), faults
