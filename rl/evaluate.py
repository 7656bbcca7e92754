"""Entry: evaluation on FLORES directions or the toy test set; the work is in rl/eval/evaluate.py.

    python -m rl.evaluate --adapter runs/toy-grpo --eval.limit 100
    python -m rl.evaluate --prompt.style direct --out runs/eval-base-direct
"""
import sys
from pathlib import Path

if __package__ in (None, ""):  # `python rl/evaluate.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rl.eval.evaluate import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
