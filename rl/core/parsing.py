"""The one parser of R1-T1 completions: ``<think>reasoning</think><answer>translation</answer>``.

Training rewards and evaluation both call :func:`parse_completion`, so what the
policy is rewarded for and what evaluation reports can never disagree.

strict  : exactly one think block, then exactly one answer block, nothing but
          whitespace around them; no nested or stray tags.
lenient : the last complete ``<answer>...</answer>`` wins (whatever came before);
          if there is none, an unterminated ``<answer>`` to the end of the text.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
TAGS = (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)
_STRICT = re.compile(r"^\s*<think>(?P<think>.*?)</think>\s*<answer>(?P<answer>.*?)</answer>\s*$", re.DOTALL)


@dataclass(frozen=True)
class ParsedCompletion:
    ok: bool  # the strict R1-T1 format holds
    think: str | None
    answer: str | None  # the translation (set in lenient mode even when ok is False)
    error: str | None  # why the strict format failed, for logs and the format-failure report


def parse_completion(text: str | None, strict: bool = True) -> ParsedCompletion:
    """Parse one completion; never raises. In lenient mode ``answer`` is recovered when possible."""
    if text is None:
        return ParsedCompletion(False, None, None, "empty completion")
    error = strict_format_error(text)
    if error is None:
        match = _STRICT.match(text)
        assert match is not None
        return ParsedCompletion(True, match["think"].strip(), match["answer"].strip(), None)
    if strict:
        return ParsedCompletion(False, None, None, error)
    return ParsedCompletion(False, _lenient_think(text), _lenient_answer(text), error)


def strict_format_error(text: str) -> str | None:
    """None when ``text`` is in the strict format, else a short reason."""
    if not text.strip():
        return "empty completion"
    counts = {tag: text.count(tag) for tag in TAGS}
    if counts[ANSWER_OPEN] == 0:
        return "no <answer> tag"
    if counts[ANSWER_CLOSE] == 0:
        return "unterminated <answer> (truncated?)"
    if counts[THINK_OPEN] == 0:
        return "no <think> block"
    if counts[THINK_CLOSE] == 0:
        return "unterminated <think>"
    if any(n > 1 for n in counts.values()):
        extra = [tag for tag, n in counts.items() if n > 1]
        return f"repeated or nested tags: {', '.join(extra)}"
    match = _STRICT.match(text)
    if match is None:
        return "tags out of order or text outside the think/answer blocks"
    if not match["answer"].strip():
        return "empty answer"
    return None


def _lenient_answer(text: str) -> str | None:
    """The last complete answer block wins: from the last ``<answer>`` that a
    ``</answer>`` follows to that closing tag. A regex match would start at the
    first ``<answer>`` and swallow an earlier, abandoned one (``<answer>a ... <answer>b</answer>``)."""
    last_close = text.rfind(ANSWER_CLOSE)
    start = text.rfind(ANSWER_OPEN, 0, last_close) if last_close >= 0 else -1
    if start >= 0:
        body = start + len(ANSWER_OPEN)
        answer = text[body:text.find(ANSWER_CLOSE, body)]
    elif ANSWER_OPEN in text:
        answer = text.rsplit(ANSWER_OPEN, 1)[1]
    else:
        return None
    for tag in TAGS:
        answer = answer.replace(tag, "")
    return answer.strip() or None


def _lenient_think(text: str) -> str | None:
    match = re.search(r"<think>(.*?)(</think>|<answer>|$)", text, flags=re.DOTALL)
    return match.group(1).strip() if match else None


def parse_direct(text: str | None) -> ParsedCompletion:
    """A direct translation (prompt.style=direct): the whole completion is the answer."""
    answer = (text or "").strip()
    return ParsedCompletion(bool(answer), None, answer or None, None if answer else "empty completion")


def parse_batch(texts) -> list[ParsedCompletion]:
    """Lenient parse of each completion, done once per batch and shared: it carries the strict
    verdict too (``ok`` and ``error`` are the strict parse's; ``think``/``answer`` equal the strict
    parse's whenever ``ok``), so the format reward, the metrics and the step stats all read it.
    A non-string entry parses as an empty completion."""
    return [parse_completion(t if isinstance(t, str) else None, strict=False) for t in texts]


def extract_answer(text: str | None) -> str | None:
    """The translation to score: lenient parse (metrics score what they can find)."""
    return parse_completion(text, strict=False).answer
