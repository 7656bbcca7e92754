"""Entry: CoT synthesis for the cold start (a teacher writes R1-T1 CoT data); the work is in rl/coldstart/.

    python rl/synth.py --config configs/synth-toy.yaml [--dry-run] [--synth.k 8 ...]
    python rl/sft.py --config configs/toy.yaml --sft.data_path runs/synth-toy/cot.jsonl
"""
import os
import sys
from pathlib import Path

if __package__ in (None, ""):  # `python rl/synth.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rl.coldstart.synth import main  # noqa: E402
from rl.tools.plan import print_teacher_plan  # noqa: E402

if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main(plan=print_teacher_plan))
