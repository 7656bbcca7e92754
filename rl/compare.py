"""Entry: compare evaluations or runs side by side; the work is in rl/eval/compare.py.

    python -m rl.compare runs/eval-base runs/my-run/eval [--out runs/compare] [--metrics chrf++,bleu]
"""
import sys
from pathlib import Path

if __package__ in (None, ""):  # `python rl/compare.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rl.eval.compare import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
