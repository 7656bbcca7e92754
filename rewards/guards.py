"""Anti-hacking guards: penalties (``penalty`` when triggered, else 0.0) added to a combination.

Why they exist: a copy of the source scores well on COMET and, between close
languages, on chrF; an answer in the wrong language can still share names and
numbers with the reference; a runaway completion wastes the whole token budget.

* ``copy_guard``: the answer is too close to the source. Closeness is chrF of
  the answer against the source (0-100). It triggers when that is at least
  ``threshold`` AND exceeds the reference's own closeness to the source by
  ``margin`` (so close language pairs, where the true translation shares much
  with the source, are not punished), and the answer is not the reference.
  Without a reference only the threshold applies. Measured on FLORES devtest
  (300 lines): real translations reach chrF-to-source 27 (en-de) to 51
  (id-ms) on average, 85 at most; a copy scores 100.
* ``lang_guard``: py3langid (offline, model inside the package) gives the
  probability of the target language; below ``min_prob`` the answer is in the
  wrong language. Close variants that langid confuses count as the target
  (zh~wuu~yue, id~ms, ar~ary~arz, hr~bs~sr, no~nn). On FLORES devtest the
  target's probability was >= 0.15 on every real line (p1 >= 0.49) and
  <= 0.07 on every line of the other 25 languages, hence ``min_prob=0.1``.
  Answers with fewer than ``min_letters`` letters (names, numbers) and target
  languages langid does not know (toy languages, unknown codes, FLORES languages
  without a langid model, e.g. Bambara) get 0.0: no penalty, since we cannot tell;
  a real language without a model is named once in a logged notice.
  :func:`lang_id_support` says per language which label is used, or why none.
* ``length_guard``: runaway completions. Triggers when the rollout reports it
  was cut off (column ``finish_reason`` == "length" or ``truncated`` true), when
  the answer is longer than ``max_ratio`` x the longer of source and reference
  plus ``slack`` characters, or (if ``max_chars`` is set) the completion is.

Empty, None or answer-less completions get 0.0 from copy/lang guards (the
metrics already give them 0 and the format reward fails them).
"""
from __future__ import annotations

from functools import lru_cache

from sacrebleu.metrics import CHRF

from rewards.base import answers, batch_size, column, safe
from rewards.languages import is_toy, key_candidates, language, notice_once
from rl.core.languages import LANGUAGES

_CLOSE_VARIANTS = [{"zh", "wuu", "yue"}, {"id", "ms"}, {"ar", "ary", "arz"}, {"hr", "bs", "sr"}, {"no", "nn"}]


@lru_cache(maxsize=1)
def _chrf() -> CHRF:
    return CHRF()


def _closeness(text: str, source: str) -> float:
    return _chrf().sentence_score(text, [source]).score


def copy_guard(sources, hypotheses, references, *, threshold: float = 70.0, margin: float = 15.0,
               penalty: float = -1.0, **columns) -> list[float | None]:
    n = batch_size(sources, hypotheses, references)
    refs = list(references) if references is not None else [None] * n
    srcs = list(sources) if sources is not None else [None] * n
    seen: dict[tuple[str, str], float] = {}  # a GRPO group shares its source and reference

    def closeness(text, src):
        if (text, src) not in seen:
            seen[(text, src)] = _closeness(text, src)
        return seen[(text, src)]

    def one(ans, src, ref):
        if not ans or not isinstance(src, str) or not src.strip():
            return 0.0
        if isinstance(ref, str) and ans.strip() == ref.strip():
            return 0.0
        sim = closeness(ans, src)
        ref_sim = closeness(ref, src) if isinstance(ref, str) and ref.strip() else 0.0
        return penalty if sim >= threshold and sim >= ref_sim + margin else 0.0

    return [safe(one, a, s, r, name="copy_guard") for a, s, r in zip(answers(hypotheses, columns), srcs, refs)]


@lru_cache(maxsize=1)
def _identifier():
    from py3langid.langid import LanguageIdentifier, MODEL_FILE

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


_ONE_MODEL_SCRIPTS = {"Hans", "Hant"}  # script variants one langid model covers (Chinese's shared characters)


def _script_variants(lang) -> list[str]:
    base = lang.flores200.split("_")[0]
    return [other.flores200 for other in LANGUAGES if other.flores200.split("_")[0] == base]


@lru_cache(maxsize=4096)
def lang_id_support(tgt_lang: str | None) -> tuple[str | None, str]:
    """(py3langid label for the target language or None, why): the first of the language's
    short codes (ISO 639-1, ISO 639-3, macrolanguage) that langid has a model for."""
    classes = set(_identifier().nb_classes)
    lang = language(tgt_lang)
    who = f"{lang.name} ({lang.flores200})" if lang else repr(tgt_lang)
    candidates = key_candidates(tgt_lang)
    if lang is not None and len(variants := _script_variants(lang)) > 1:
        owner = language(lang.flores200.split("_")[0])  # the variant the bare code means; None if none
        if owner is not lang and not {v.split("_")[1] for v in variants} <= _ONE_MODEL_SCRIPTS:
            return None, (f"{who}: FLORES has this language in {', '.join(variants)} and langid's model "
                          "does not say which script it learnt, so lang_guard gives no penalty for this target")
        if owner is not None and owner is not lang:  # zho_Hant: Chinese's model, as for zho_Hans
            candidates += key_candidates(owner.flores200)
    label = next((k for k in candidates if k in classes), None)
    if label is not None:
        return label, f"{who}: py3langid label {label!r}"
    if lang is None:
        what = "no target language" if not tgt_lang else "toy language" if is_toy(tgt_lang) else "unknown language code"
        return None, f"{what} {tgt_lang!r}: no language check, no penalty"
    return None, f"{who}: py3langid has no model for it, so lang_guard gives no penalty for this target"


def target_probability(text: str, tgt_lang: str | None) -> float | None:
    """langid's probability that ``text`` is in ``tgt_lang`` (close variants included); None if langid can't tell
    (a real language without a langid model is named once in a notice)."""
    key, why = lang_id_support(tgt_lang)
    ident = _identifier()
    if key is None:
        if tgt_lang and not is_toy(tgt_lang):
            notice_once("lang_guard", tgt_lang, f"lang_guard: {why}")
        return None
    group = next((g for g in _CLOSE_VARIANTS if key in g), {key})
    probs = dict(ident.rank(text))
    return sum(probs.get(k, 0.0) for k in group)


def lang_guard(sources, hypotheses, references, *, min_prob: float = 0.1, min_letters: int = 8,
               penalty: float = -1.0, **columns) -> list[float | None]:
    n = batch_size(sources, hypotheses, references)
    tgt = column(columns, "tgt_lang", n)
    seen: dict[tuple[str, str | None], float] = {}

    def one(ans, lang):
        if not ans or sum(ch.isalpha() for ch in ans) < min_letters:
            return 0.0
        if (ans, lang) not in seen:
            p = target_probability(ans, lang)
            seen[(ans, lang)] = 0.0 if p is None or p >= min_prob else penalty
        return seen[(ans, lang)]

    return [safe(one, a, t, name="lang_guard") for a, t in zip(answers(hypotheses, columns), tgt)]


def length_guard(sources, hypotheses, references, *, max_ratio: float = 4.0, slack: int = 40,
                 max_chars: int | None = None, penalty: float = -1.0, **columns) -> list[float | None]:
    n = batch_size(sources, hypotheses, references)
    refs = list(references) if references is not None else [None] * n
    srcs = list(sources) if sources is not None else [None] * n
    finish = column(columns, "finish_reason", n)
    truncated = column(columns, "truncated", n)

    def one(hyp, ans, src, ref, fin, trunc):
        if fin == "length" or trunc is True:
            return penalty
        if max_chars is not None and isinstance(hyp, str) and len(hyp) > max_chars:
            return penalty
        base = max(len(src) if isinstance(src, str) else 0, len(ref) if isinstance(ref, str) else 0)
        if ans and base and len(ans) > max_ratio * base + slack:
            return penalty
        return 0.0

    return [safe(one, h, a, s, r, f, t, name="length_guard")
            for h, a, s, r, f, t in zip(hypotheses, answers(hypotheses, columns), srcs, refs, finish, truncated)]
