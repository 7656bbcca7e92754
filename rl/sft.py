"""Entry: cold-start SFT (TRL SFTTrainer + LoRA) on CoT translations; the work is in rl/learn/sft.py.

    python rl/sft.py --config configs/toy.yaml [--sft.max_steps 100 ...]
"""
import os
import sys
from pathlib import Path

if __package__ in (None, ""):  # `python rl/sft.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rl.learn.sft import main  # noqa: E402

if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
