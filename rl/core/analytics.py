"""CoT analytics: which of the six expert templates does a rollout's reasoning resemble?

R1-T1 reports that the policy's CoT drifts from the cold-start templates during
RL ("self-evolving CoT"). We label each reasoning text with the nearest template
by weighted keyword overlap. A template's signature is its ``keywords`` (the step
vocabulary that tells its reasoning apart, e.g. "draft", "back" for a
back-translation check) and, weighing less, the words of its title, when-to-use
note, steps and the step labels of its worked example. Each weight is scaled by how
specific the word is to that template, and a word a reasoning uses as a step label
("Context: ...") counts more than one in running text: the labels name the steps a
reasoning takes. Reasoning that matches no signature well is labelled ``other``; a
completion that broke the strict format is ``format_fail``, whatever its reasoning.
"""
from __future__ import annotations

import math
import re
from collections import Counter

from rl.core.prompts import CotTemplate

OTHER = "other"
FORMAT_FAIL = "format_fail"  # a completion that broke the strict format: its reasoning is not labelled
KEYWORD_WEIGHT = 3.0  # a template's keyword against a word of its prose
STEP_LABEL_WEIGHT = 2.0  # a word labelling a step ("Draft: ...") against one in running text
_WORD = re.compile(r"[^\W\d_]{3,}", re.UNICODE)
# a word right before a colon, optionally with a parenthesis between: "Pivot (English):"
_STEP_LABEL = re.compile(r"([^\W\d_]{3,})\s*(?:\([^)]*\)\s*)?:", re.UNICODE)
_STOP = set("the and for with then into from that this are was its their them one each when use".split())


def _stem(word: str) -> str:
    """Lowercase, without a plural -s, so "idioms" in a reasoning meets "idiom" in a signature."""
    word = word.lower()
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


def _words(text: str) -> set[str]:
    return {w for w in (_stem(m) for m in _WORD.findall(text)) if w not in _STOP}


def _step_labels(text: str) -> set[str]:
    """Words that label a step ("Back: ...", "Overall meaning: ..."); they say what the step does."""
    return {_stem(m) for m in _STEP_LABEL.findall(text)}


def _signature(template: CotTemplate) -> dict[str, float]:
    """Raw weights of a template's words: its keywords above its prose (title, when to use,
    steps, and the step labels of its worked example). The example's other words are about
    its one sentence (a train, the snow), not the template, so they are left out."""
    prose = " ".join([template.name.replace("_", " "), template.title, template.when_to_use, *template.steps,
                      *_step_labels(template.example.get("think", ""))])
    raw = dict.fromkeys(_words(prose), 1.0)
    raw.update(dict.fromkeys(_words(" ".join(template.keywords)), KEYWORD_WEIGHT))
    return raw


def _specific(raw: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Scale each weight by how much more this template uses the word than the average
    template does (log ratio): a word every template uses alike weighs 0, a keyword of
    one template that others only mention in passing keeps most of its weight."""
    n = len(raw)
    totals = Counter()
    for words in raw.values():
        totals.update(words)
    weights = {}
    for name, words in raw.items():
        specific = {w: wt * math.log(n * wt / totals[w]) for w, wt in words.items()}
        weights[name] = {w: wt for w, wt in specific.items() if wt > 0}
    return weights


class CotLabeler:
    """Labels reasoning texts with the nearest template name, or ``other``.

    ``min_score``: the least overlap that names a template: one keyword reaches it,
    one word of a template's prose does not (log 6 < 3.0)."""

    def __init__(self, templates: dict[str, CotTemplate], min_score: float = 3.0):
        self.weights = _specific({name: _signature(t) for name, t in templates.items()})
        self.min_score = min_score

    def scores(self, think: str) -> dict[str, float]:
        """Overlap of ``think`` with each template's signature (step labels counting more)."""
        words, labels = _words(think), _step_labels(think)
        return {name: sum(wt * (STEP_LABEL_WEIGHT if w in labels else 1.0) for w, wt in weights.items() if w in words)
                for name, weights in self.weights.items()}

    @property
    def labels(self) -> list[str]:
        """Every label ``label_completion`` gives, in a fixed order (the ``cot/*`` metric keys)."""
        return [*sorted(self.weights), OTHER, FORMAT_FAIL]

    def label_completion(self, parsed) -> str:
        """``format_fail`` for a completion whose strict format failed (rl.core.parsing's ``ok``),
        else its reasoning's label: the lenient think of a broken completion would otherwise
        pass for a template or for ``other``, hiding format failures in the template shares."""
        return self.label(parsed.think) if parsed.ok else FORMAT_FAIL

    def label(self, think: str | None) -> str:
        if not think:
            return OTHER
        scores = self.scores(think)
        best = max(sorted(scores), key=scores.get, default=OTHER)
        return best if scores.get(best, 0.0) >= self.min_score else OTHER

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


def source_coverage(source: str, think: str | None, glossary: dict[str, set[str]] | None = None) -> float | None:
    """Share of the source's content words (3+ letters, not a stop word) that the
    reasoning quotes or glosses: a word counts when it, or its stem, appears in ``think``,
    or, given a ``glossary`` (source word or stem -> the words that translate it), when one
    of its glosses does. Thinking that never looks at its source (generic reasoning) scores
    near 0. Scripts written without spaces count each run of letters as one word. None: no
    content word."""
    content = [w for w in (m.lower() for m in _SOURCE_WORD.findall(source)) if len(w) >= 3 and w not in _STOP]
    if not content:
        return None
    forms, glossary = _forms(think or ""), glossary or {}

    def covered(word: str) -> bool:
        keys = {word, word.split("-", 1)[0]}
        return bool(keys & forms) or any(not forms.isdisjoint(glossary.get(k, ())) for k in keys)

    return sum(map(covered, content)) / len(content)
