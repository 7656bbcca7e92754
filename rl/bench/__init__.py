"""Benchmarks: scripts that print ratios against a baseline measured in the same run.

    python -m rl.bench rollout [--workload a|b|both]   # Ray/vLLM pool vs TRL's transformers generation
    python -m rl.bench step [--workload toy|r1t1]      # our GRPO step vs plain TRL GRPOTrainer (+ learner split)
    python -m rl.bench rewards                         # chrF / BLEU / COMET scoring throughput
    python -m rl.bench learner [--shape ...]           # learner tokens/s and MFU (GPU check)
"""
from __future__ import annotations

import runpy
import sys

BENCHES = {
    "rollout": "rl.bench.rollout",
    "step": "rl.bench.step",
    "rewards": "rl.bench.rewards",
    "learner": "rl.bench.learner",
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in BENCHES:
        print(__doc__)
        return 2
    name, rest = argv[0], argv[1:]
    sys.argv = [f"rl.bench {name}", *rest]
    runpy.run_module(BENCHES[name], run_name="__main__")
    return 0

