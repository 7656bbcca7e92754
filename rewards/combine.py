"""Combinations: several named rewards scored together, reported part by part.

A :class:`Combination` is itself a reward (callable, same contract, returns the
total) and has ``.score(...) -> RewardBreakdown`` so training can log each part.

Linear total (the default): ``sum(weight * value)`` over the parts that scored
the sample; None parts are skipped, as TRL does across reward functions, and
the total is None only when every weighted part is None. Weight-0 parts are
computed and logged but do not count. Presets whose total is not linear pass
``total_fn(values) -> list`` and still expose their parts.
A part that is itself a combination contributes its total and adds its own
parts to the breakdown as ``"<part>/<subpart>"``.

Each completion is parsed once per ``score``: the caller's ``parsed`` column if it
passed one (the trainer does, and shares it with its stats), else parsed here; every
part that takes ``**columns`` (or a ``parsed`` keyword) gets it, nested combinations
included. A part with a fixed signature gets the columns it got before, without it.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rewards.base import PARSED, Reward, RewardBreakdown, RewardSpecError, batch_size, parses, takes_column

TotalFn = Callable[[dict[str, list]], list]


@dataclass
class Part:
    name: str
    weight: float
    fn: Reward


class Combination:
    def __init__(self, parts: Sequence[Part], total_fn: TotalFn | None = None, name: str = "combination"):
        names = [p.name for p in parts]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise RewardSpecError(f"reward parts must have distinct names; repeated: {dupes} (give one a 'label')")
        if not parts:
            raise RewardSpecError("a reward combination needs at least one part")
        self.parts = list(parts)
        self._takes_parsed = {p.name: takes_column(p.fn.score if hasattr(p.fn, "score") else p.fn, PARSED)
                              for p in self.parts}
        self.total_fn = total_fn
        self.name = name

    @property
    def weights(self) -> dict[str, float]:
        return {p.name: p.weight for p in self.parts}

    def score(self, sources, hypotheses, references, **columns) -> RewardBreakdown:
        n = batch_size(sources, hypotheses, references)
        plain = {k: v for k, v in columns.items() if k != PARSED}
        shared = {**plain, PARSED: parses(hypotheses, columns)} if any(self._takes_parsed.values()) else plain
        values: dict[str, list] = {}
        extra: dict[str, list] = {}
        for part in self.parts:
            cols = shared if self._takes_parsed[part.name] else plain
            try:
                if hasattr(part.fn, "score"):
                    sub = part.fn.score(sources, hypotheses, references, **cols)
                    result = sub.total
                    extra.update({f"{part.name}/{k}": v for k, v in sub.parts.items()})
                else:
                    result = part.fn(sources, hypotheses, references, **cols)
            except Exception as exc:
                raise RuntimeError(f"reward {part.name!r} failed on a batch of {n}: {type(exc).__name__}: {exc}") from exc
            values[part.name] = _checked(result, n, part.name)
        total = self.total_fn(values) if self.total_fn else self._linear(values, n)
        return RewardBreakdown(total=_checked(total, n, f"{self.name} total"), parts={**values, **extra})

    def _linear(self, values: dict[str, list], n: int) -> list[float | None]:
        total: list[float | None] = []
        for i in range(n):
            terms = [p.weight * values[p.name][i] for p in self.parts if p.weight and values[p.name][i] is not None]
            total.append(sum(terms) if terms else None)
        return total

    def __call__(self, sources, hypotheses, references, **columns) -> list[float | None]:
        return self.score(sources, hypotheses, references, **columns).total

    def __repr__(self) -> str:
        inner = ", ".join(f"{p.name}*{p.weight:g}" for p in self.parts)
        return f"Combination({self.name}: {inner}{', custom total' if self.total_fn else ''})"


def _checked(result, n: int, name: str) -> list[float | None]:
    """A reward's output as floats/None of the right length. A wrong length or a NaN is a
    bug in the reward: raise, naming it and the sample (None is how a reward says "cannot
    score this one"; a NaN turned into None would drop samples silently)."""
    if result is None or isinstance(result, (str, bytes)) or not hasattr(result, "__len__"):
        raise TypeError(f"reward {name!r} must return a list of float|None, got {type(result).__name__}")
    if len(result) != n:
        raise ValueError(f"reward {name!r} returned {len(result)} values for a batch of {n}")
    out: list[float | None] = []
    for i, v in enumerate(result):
        if v is None:
            out.append(None)
            continue
        try:
            v = float(v)
        except (TypeError, ValueError):
            raise TypeError(f"reward {name!r} returned {v!r}; values must be float or None") from None
        if math.isnan(v):
            raise ValueError(f"reward {name!r} returned NaN for sample {i} of {n}; return None for a sample "
                             "it cannot score")
        out.append(v)
    return out
