"""Language codes as the rewards need them: one short key per language, and its script.

The trainer passes FLORES-200 codes (``deu_Latn``, ``zho_Hans``); users may
write FLORES-101 codes (``deu``, ``zho_simpl``), ISO 639-1 (``de``) or any other
form rl.core.languages accepts; it resolves them (every FLORES-101/200 language). The
rewards need two things per language: the script (the BLEU tokenizer follows it:
Han, Kana, Hangul and the scripts without spaces between words are special) and
candidate labels for the language-ID model (py3langid's labels are ISO 639-1
where one exists, else ISO 639-3). Toy codes (``toy_en``) map to None: callers
treat None as "no language-specific behaviour". A code rl.core.languages does not know
is kept as written when it looks like an ISO code ("fy"), so langid labels still work.
"""
from __future__ import annotations

import logging
import re
from functools import lru_cache

from rl.core.languages import Language, UnknownLanguageError, resolve_language

log = logging.getLogger("rewards")
_noticed: set[tuple[str, str]] = set()


def notice_once(topic: str, code: object, message: str, level: int = logging.WARNING) -> None:
    """Log ``message`` the first time (topic, code) is seen: a reward runs per batch, the notice once."""
    if (topic, str(code)) not in _noticed:
        _noticed.add((topic, str(code)))
        log.log(level, message)


@lru_cache(maxsize=4096)
def language(code: str | None) -> Language | None:
    """The table's language for ``code``; None for toy languages, None/empty and unknown codes.
    Cached: rewards ask per sample, and an unknown code's error would search for suggestions."""
    if not code or not isinstance(code, str):
        return None
    try:
        lang = resolve_language(code)
    except UnknownLanguageError:
        return None
    return None if lang.flores200.startswith("toy_") else lang


def is_toy(code: str | None) -> bool:
    return isinstance(code, str) and code.strip().lower().startswith("toy_")


def lang_key(code: str | None) -> str | None:
    """``deu_Latn`` / ``deu`` / ``de`` / ``zho_simpl`` -> ``de`` / ``zh``; ``ary_Arab`` -> ``ary``;
    None for toy codes and unknown ones that do not look like ISO codes."""
    lang = language(code)
    if lang is not None:
        return lang.iso1 or lang.flores200.split("_")[0]
    if isinstance(code, str) and not is_toy(code) and re.fullmatch(r"[a-z]{2,3}", code.strip().lower()):
        return code.strip().lower()
    return None


def key_candidates(code: str | None) -> list[str]:
    """Every short code the language answers to, most specific label first (for langid's label set)."""
    lang = language(code)
    if lang is None:
        key = lang_key(code)
        return [key] if key else []
    short = [lang.iso1, lang.flores200.split("_")[0], lang.flores101, *lang.aliases]
    return list(dict.fromkeys(c.lower() for c in short if c and re.fullmatch(r"[A-Za-z]{2,3}", c)))


def script(code: str | None) -> str | None:
    """ISO 15924 script of the language's FLORES-200 code (``Hans``, ``Thai``); None when unknown."""
    lang = language(code)
    return lang.flores200.split("_")[1] if lang is not None else None
