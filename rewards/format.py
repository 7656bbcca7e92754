"""Format reward: the strict R1-T1 form, exactly one ``<think>`` block then one ``<answer>`` block.

Uses the one shared parser (:func:`rl.core.parsing.parse_completion`'s strict verdict, read from
the batch's shared ``parsed`` column when given), so the format-success rate that training logs
is the one evaluation reports.
Empty, None, tag-less, truncated (unterminated) and nested completions all fail.
"""
from __future__ import annotations

from rewards.base import batch_size, parses


def format_reward(sources, hypotheses, references, *, ok: float = 1.0, fail: float = 0.0,
                  **columns) -> list[float | None]:
    """``ok`` when the completion is in the strict format, else ``fail`` (MT-R1-Zero uses +1 / -1)."""
    batch_size(sources, hypotheses, references)
    return [ok if isinstance(h, str) and p.ok else fail for h, p in zip(hypotheses, parses(hypotheses, columns))]
