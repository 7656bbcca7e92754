"""Which teacher candidate becomes SFT data. A candidate passes, in this order: it is not empty,
it is in the strict R1-T1 format (rl.core.parsing, the parser training and evaluation use), its
answer is not a copy of the source (rewards.guards.copy_guard, or identical), it is in the target
language (rewards.guards.lang_guard: langid), and its reward against the reference reaches
synth.threshold. The best passing candidate (highest reward) is kept; every rejection is
counted under its first failed check, for the report."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from rewards.guards import copy_guard, lang_guard
from rl.core.config import SynthConfig
from rl.core.data import Example
from rl.core.parsing import parse_completion

REASONS = ("empty", "format", "copied_source", "wrong_language", "below_threshold")


@dataclass
class Verdict:
    """One pair's outcome: the kept completion (None: every candidate failed) and why the others failed."""

    completion: str | None = None
    score: float | None = None
    parts: dict[str, float | None] = field(default_factory=dict)
    rejected: Counter = field(default_factory=Counter)  # reason -> candidates
    candidates: int = 0


def check_shape(text: str | None, finish_reason: str | None = None) -> tuple[str | None, str | None]:
    """(answer, None) for a well-formed candidate, else (None, "empty" | "format")."""
    if text is None or not text.strip():
        return None, "empty"
    parsed = parse_completion(text)
    if parsed.ok and finish_reason != "length":
        return parsed.answer, None
    if parsed.error in ("empty completion", "empty answer"):
        return None, "empty"
    return None, "format"


def judge(examples: list[Example], candidates: list[list[str]], synth: SynthConfig, reward,
          finish_reasons: list[list[str]] | None = None) -> list[Verdict]:
    """One Verdict per example. ``candidates[i]`` are the full completions (``<think>`` included)
    for ``examples[i]``; ``reward`` is a rewards.load Combination (scored in one batch)."""
    verdicts = [Verdict(candidates=len(c)) for c in candidates]
    flat: list[tuple[int, str, str]] = []  # (example index, completion, answer) still in the running
    for i, texts in enumerate(candidates):
        finishes = finish_reasons[i] if finish_reasons else [None] * len(texts)
        for text, finish in zip(texts, finishes):
            answer, reason = check_shape(text, finish)
            if reason:
                verdicts[i].rejected[reason] += 1
            else:
                flat.append((i, text.strip(), answer))
    flat = _guarded(flat, examples, synth, verdicts)
    if not flat:
        return verdicts
    exs = [examples[i] for i, _, _ in flat]
    scored = reward.score([e.source for e in exs], [t for _, t, _ in flat], [e.reference for e in exs],
                          src_lang=[e.src_lang for e in exs], tgt_lang=[e.tgt_lang for e in exs])
    for j, (i, text, _) in enumerate(flat):
        total = scored.total[j]
        if total is None or total < synth.threshold:
            verdicts[i].rejected["below_threshold"] += 1
        elif verdicts[i].score is None or total > verdicts[i].score:
            verdicts[i].completion, verdicts[i].score = text, float(total)
            verdicts[i].parts = {name: values[j] for name, values in scored.parts.items()}
    return verdicts


def _guarded(flat, examples: list[Example], synth: SynthConfig, verdicts: list[Verdict]):
    """Drop copies of the source and answers in another language, counting each."""
    if not flat:
        return flat
    exs = [examples[i] for i, _, _ in flat]
    texts = [t for _, t, _ in flat]
    copies = copy_guard([e.source for e in exs], texts, [e.reference for e in exs], threshold=synth.copy_threshold)
    wrong = (lang_guard([e.source for e in exs], texts, None, min_prob=synth.min_language_prob,
                        tgt_lang=[e.tgt_lang for e in exs]) if synth.check_language else [0.0] * len(flat))
    kept = []
    for (i, text, answer), copy, lang in zip(flat, copies, wrong):
        ex = examples[i]
        if _same(answer, ex.source) and not _same(answer, ex.reference) or (copy or 0.0) < 0:
            verdicts[i].rejected["copied_source"] += 1
        elif (lang or 0.0) < 0:
            verdicts[i].rejected["wrong_language"] += 1
        else:
            kept.append((i, text, answer))
    return kept


def _same(a: str | None, b: str | None) -> bool:
    return a is not None and b is not None and " ".join(a.split()) == " ".join(b.split())
