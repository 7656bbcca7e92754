"""Rewards on the reasoning, not the answer.

``source_coverage``: the share of the source's content words that the ``<think>`` block
quotes or glosses (rl.core.analytics.source_coverage, the figure rl.evaluate reports).
Hunyuan-MT found that answer-only rewards made its reasoning generic; this part pays
reasoning that works through the source. None when the completion has no think block
or the source no content word (the part is then left out of the total).
"""
from __future__ import annotations

from rewards.base import batch_size, parses
from rl.core.analytics import source_coverage as coverage


def source_coverage(sources, hypotheses, references, **columns) -> list[float | None]:
    batch_size(sources, hypotheses, references)
    return [None if not isinstance(h, str) or p.think is None else coverage(s, p.think)
            for s, h, p in zip(sources, hypotheses, parses(hypotheses, columns))]
