"""The reward contract and the small helpers every reward family shares.

A reward is any callable

    fn(sources, hypotheses, references, **columns) -> list[float | None]

over one batch. ``hypotheses`` are the full completions as the model wrote
them (with a ``<think>`` prefill re-attached); metric rewards score the answer
that :func:`rl.core.parsing.extract_answer` finds in them. ``columns`` always carry
``src_lang`` and ``tgt_lang`` (FLORES-200 codes, or toy codes) and may carry
more (``finish_reason``, ``truncated``, ...). ``None`` in the output means
"this sample cannot be scored"; one bad sample never raises.

The column ``parsed`` (:data:`PARSED`), when present, holds each hypothesis's
:func:`rl.core.parsing.parse_batch` parse: a combination (or the trainer) parses a
batch once and hands it to every part that takes ``**columns``, so a step parses
each completion once. A reward reads it through :func:`parses` / :func:`answers`,
which parse the hypotheses themselves when the column is absent.
"""
from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from rl.core.errors import UserError
from rl.core.parsing import ParsedCompletion, parse_batch

log = logging.getLogger("rewards")

Scores = list  # list[float | None]
PARSED = "parsed"  # the shared-parse column (see the module docstring)


class Reward(Protocol):
    def __call__(self, sources: Sequence[str | None], hypotheses: Sequence[str | None],
                 references: Sequence[str | None] | None, **columns: Any) -> list[float | None]: ...


class RewardSpecError(UserError, ValueError):
    """A reward spec names nothing, fails to import, or has the wrong signature, arguments or parts."""


@dataclass
class RewardBreakdown:
    """What a combination returns from ``.score``: the total and each named part, per sample."""

    total: list[float | None]
    parts: dict[str, list[float | None]]


def column(columns: dict[str, Any], name: str, n: int, default: Any = None) -> list:
    """Column ``name`` as a list of length ``n``: missing -> ``[default]*n``, a scalar is broadcast.

    A list of the wrong length is a caller bug, not a bad sample, so it raises.
    """
    value = columns.get(name, default)
    if value is None or isinstance(value, (str, int, float, bool)):
        return [value] * n
    value = list(value)
    if len(value) != n:
        raise ValueError(f"reward column {name!r} has {len(value)} entries for a batch of {n}")
    return value


def batch_size(sources, hypotheses, references) -> int:
    """The batch length; references may be None (reference-free rewards)."""
    n = len(hypotheses)
    for name, seq in (("sources", sources), ("references", references)):
        if seq is not None and len(seq) != n:
            raise ValueError(f"reward got {len(seq)} {name} for {n} hypotheses")
    return n


def parses(hypotheses: Sequence[str | None], columns: dict[str, Any] | None = None) -> list[ParsedCompletion]:
    """Each hypothesis's lenient parse: the shared ``parsed`` column when ``columns`` has one
    (so a batch is parsed once per step), else parsed here (a reward called on its own)."""
    shared = (columns or {}).get(PARSED)
    if shared is None:
        return parse_batch(hypotheses)
    shared = list(shared)
    if len(shared) != len(hypotheses):
        raise ValueError(f"reward column {PARSED!r} has {len(shared)} entries for a batch of {len(hypotheses)}")
    return shared


def answers(hypotheses: Sequence[str | None], columns: dict[str, Any] | None = None) -> list[str | None]:
    """The translation inside each completion (lenient parse); None when there is none.
    ``columns``: the reward's columns, whose shared ``parsed`` column is used when present."""
    return [p.answer for p in parses(hypotheses, columns)]


def takes_column(fn: Any, name: str) -> bool:
    """Whether ``fn`` can be called with the keyword ``name``: it has ``**columns`` or a parameter
    of that name. Columns the contract added later (``parsed``) go only to rewards that take them,
    so a hand-built part with a fixed signature keeps working; unknown signatures get none."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    by_keyword = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return any(p.kind is inspect.Parameter.VAR_KEYWORD or (p.name == name and p.kind in by_keyword) for p in params)


def safe(fn: Callable[..., float | None], *args: Any, name: str = "reward") -> float | None:
    """Call ``fn`` for one sample; a failure becomes None (logged), never an exception for the batch."""
    try:
        value = fn(*args)
    except Exception as exc:  # one bad sample must not stop training
        log.warning("%s: sample not scorable (%s: %s)", name, type(exc).__name__, exc)
        return None
    return None if value is None else float(value)
