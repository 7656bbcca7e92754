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
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rewards.base import Reward, RewardBreakdown, RewardSpecError, batch_size

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
        self.total_fn = total_fn
        self.name = name

    @property
    def weights(self) -> dict[str, float]:
        return {p.name: p.weight for p in self.parts}

    def score(self, sources, hypotheses, references, **columns) -> RewardBreakdown:
        n = batch_size(sources, hypotheses, references)
        values: dict[str, list] = {}
        extra: dict[str, list] = {}
        for part in self.parts:
            try:
                if hasattr(part.fn, "score"):
                    sub = part.fn.score(sources, hypotheses, references, **columns)
                    result = sub.total
                    extra.update({f"{part.name}/{k}": v for k, v in sub.parts.items()})
                else:
                    result = part.fn(sources, hypotheses, references, **columns)
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
