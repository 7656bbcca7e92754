"""The benchmark entry points: `python -m rl.bench <name>` reaches each script's CLI.
(The benchmarks themselves are scripts that print ratios, not timed tests.)"""
from __future__ import annotations

import subprocess
import sys

import pytest

from rl.bench import BENCHES


@pytest.mark.parametrize("name", sorted(BENCHES))
def test_bench_dispatcher_reaches_the_script(name):
    proc = subprocess.run([sys.executable, "-m", "rl.bench", name, "--help"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"usage: rl.bench {name}" in proc.stdout  # the script parsed its own arguments


def test_bench_dispatcher_lists_benchmarks_on_unknown_name():
    proc = subprocess.run([sys.executable, "-m", "rl.bench", "nope"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "rl.bench rollout" in proc.stdout
