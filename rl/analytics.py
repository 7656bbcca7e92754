"""CoT analytics: which of the six expert templates does a rollout's reasoning resemble?

R1-T1 reports that the policy's CoT drifts from the cold-start templates during
RL ("self-evolving CoT"). We label each reasoning text with the nearest template
by weighted keyword overlap: a template's signature is the words of its title,
steps and worked example, each weighted by how specific it is to that template
(inverse template frequency). Reasoning that matches no signature well is
labelled ``other``.
"""
from __future__ import annotations

import math
import re
from collections import Counter

from rl.prompts import CotTemplate

OTHER = "other"
_WORD = re.compile(r"[^\W\d_]{3,}", re.UNICODE)
_STOP = set("the and for with then into from that this are was its their them one each when use".split())


def _words(text: str) -> set[str]:
    return {w for w in (m.lower() for m in _WORD.findall(text)) if w not in _STOP}


class CotLabeler:
    """Labels reasoning texts with the nearest template name, or ``other``."""

    def __init__(self, templates: dict[str, CotTemplate], min_score: float = 0.15):
        vocab = {
            name: _words(" ".join([t.name.replace("_", " "), t.title, *t.steps, t.example.get("think", "")]))
            for name, t in templates.items()
        }
        df = Counter(w for words in vocab.values() for w in words)
        n = len(vocab)
        # words shared by every template carry no information (idf 0)
        self.weights = {name: {w: math.log(n / df[w]) for w in words if df[w] < n} for name, words in vocab.items()}
        self.min_score = min_score

    def label(self, think: str | None) -> str:
        if not think:
            return OTHER
        words = _words(think)
        best, best_score = OTHER, 0.0
        for name, weights in self.weights.items():
            total = sum(weights.values()) or 1.0
            # fraction of the template's specific signature present, favouring distinctive words
            score = sum(wt for w, wt in weights.items() if w in words) / math.sqrt(total)
            if score > best_score:
                best, best_score = name, score
        return best if best_score >= self.min_score else OTHER

    def distribution(self, thinks: list[str | None]) -> dict[str, float]:
        """Share of each label (every template name and ``other`` present, zeros included)."""
        counts = Counter(self.label(t) for t in thinks)
        total = max(1, len(thinks))
        return {name: counts.get(name, 0) / total for name in [*sorted(self.weights), OTHER]}


_SOURCE_WORD = re.compile(r"[^\W\d_]+(?:-[^\W\d_]+)*", re.UNICODE)


def _forms(text: str) -> set[str]:
    """Words of ``text``, lowercased, and their stems (the part before a hyphenated suffix)."""
    words = [w.lower() for w in _SOURCE_WORD.findall(text)]
    return set(words) | {w.split("-", 1)[0] for w in words}


def source_coverage(source: str, think: str | None) -> float | None:
    """Share of the source's content words (3+ letters, not a stop word) that the
    reasoning quotes or glosses: a word counts when it, or its stem, appears in ``think``.
    Thinking that never looks at its source (generic reasoning) scores near 0. Scripts
    written without spaces count each run of letters as one word. None: no content word."""
    content = [w for w in (m.lower() for m in _SOURCE_WORD.findall(source)) if len(w) >= 3 and w not in _STOP]
    if not content:
        return None
    forms = _forms(think or "")
    return sum(w in forms or w.split("-", 1)[0] in forms for w in content) / len(content)
