"""Language codes: one table that maps FLORES-200, FLORES-101, ISO 639-1 and NTREX
codes to each other and to the display name used in prompts.

Datasets, configs and papers name languages differently ("de", "deu", "deu_Latn";
NTREX's "zho-CN", FLORES+'s "cmn_Hans"). Everything inside the product uses the
canonical FLORES-200 code; this module is the only place that knows the others.

Every FLORES-200 language (204) is known: the list is generated once from the
FLORES-200 / FLORES-101 code lists (see rl/tools/make_languages.py) into
rl/core/flores_languages.tsv, which ships with the package. The curated entries below
override a generated row: they carry the prompt's display name and NTREX-128's own
file codes. Bare codes of a language FLORES has in two scripts mean the script it
uses by default ("zh" / "zho": zho_Hans; "ar": arb_Arab; "kas": kas_Arab); the others
("ace", "bjn", "knc", "min", "taq") are refused as ambiguous, naming both codes.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, replace
from pathlib import Path

from rl.core.errors import UserError


class UnknownLanguageError(UserError, ValueError):
    """A language code that no scheme in the table knows."""


@dataclass(frozen=True)
class Language:
    flores200: str  # canonical code, e.g. "deu_Latn"
    flores101: str  # e.g. "deu", "zho_simpl"; the FLORES-200 code where FLORES-101 lacks the language
    iso1: str | None  # e.g. "de"; None where ISO 639-1 has no code for the variety
    name: str  # display name for prompts, e.g. "German"
    ntrex: str | None = None  # NTREX-128 file code, e.g. "zho-CN"; None: not known (loaders try the ISO codes)
    aliases: tuple[str, ...] = ()  # other accepted spellings (FLORES+ relabels, macrolanguage codes)


def _lang(f200: str, f101: str, iso1: str | None, name: str, ntrex: str | None, *aliases: str) -> Language:
    return Language(f200, f101, iso1, name, ntrex, tuple(aliases))


def _toy(code: str, name: str) -> Language:
    return Language(code, code, code, name, code)


_CURATED: tuple[Language, ...] = (
    # The 26 languages of the shared FLORES-200 copy (all 21 of R1-T1's evaluation among them).
    _lang("eng_Latn", "eng", "en", "English", "eng"),
    _lang("deu_Latn", "deu", "de", "German", "deu"),
    _lang("fra_Latn", "fra", "fr", "French", "fra"),
    _lang("spa_Latn", "spa", "es", "Spanish", "spa"),
    _lang("ita_Latn", "ita", "it", "Italian", "ita"),
    _lang("por_Latn", "por", "pt", "Portuguese", "por"),
    _lang("nld_Latn", "nld", "nl", "Dutch", "nld"),
    _lang("pol_Latn", "pol", "pl", "Polish", "pol"),
    _lang("ces_Latn", "ces", "cs", "Czech", "ces"),
    _lang("rus_Cyrl", "rus", "ru", "Russian", "rus"),
    _lang("ukr_Cyrl", "ukr", "uk", "Ukrainian", "ukr"),
    _lang("ell_Grek", "ell", "el", "Greek", "ell"),
    _lang("tur_Latn", "tur", "tr", "Turkish", "tur"),
    _lang("arb_Arab", "ara", "ar", "Arabic", "arb"),
    _lang("zho_Hans", "zho_simpl", "zh", "Chinese (Simplified)", "zho-CN", "cmn_Hans", "zh-CN", "zh-Hans", "zho", "Chinese"),
    _lang("zho_Hant", "zho_trad", None, "Chinese (Traditional)", "zho-TW", "cmn_Hant", "zh-TW", "zh-Hant"),
    _lang("jpn_Jpan", "jpn", "ja", "Japanese", "jpn"),
    _lang("kor_Hang", "kor", "ko", "Korean", "kor"),
    _lang("tha_Thai", "tha", "th", "Thai", "tha"),
    _lang("vie_Latn", "vie", "vi", "Vietnamese", "vie"),
    _lang("ind_Latn", "ind", "id", "Indonesian", "ind"),
    _lang("zsm_Latn", "msa", "ms", "Malay", "msa", "zsm"),
    _lang("tgl_Latn", "tgl", "tl", "Tagalog", "fil", "fil_Latn", "Filipino"),
    _lang("hin_Deva", "hin", "hi", "Hindi", "hin"),
    _lang("swh_Latn", "swh", "sw", "Swahili", "swa"),
    _lang("yor_Latn", "yor", "yo", "Yoruba", "yor"),
    _lang("hau_Latn", "hau", "ha", "Hausa", "hau"),
    # A few more common ones, so real configs rarely hit a gap.
    _lang("ron_Latn", "ron", "ro", "Romanian", "ron"),
    _lang("hun_Latn", "hun", "hu", "Hungarian", "hun"),
    _lang("swe_Latn", "swe", "sv", "Swedish", "swe"),
    _lang("dan_Latn", "dan", "da", "Danish", "dan"),
    _lang("fin_Latn", "fin", "fi", "Finnish", "fin"),
    _lang("heb_Hebr", "heb", "he", "Hebrew", "heb"),
    _lang("pes_Arab", "fas", "fa", "Persian", "fas"),
    _lang("ben_Beng", "ben", "bn", "Bengali", "ben"),
    _lang("urd_Arab", "urd", "ur", "Urdu", "urd"),
    _lang("tam_Taml", "tam", "ta", "Tamil", "tam"),
    _lang("bul_Cyrl", "bul", "bg", "Bulgarian", "bul"),
    _lang("cat_Latn", "cat", "ca", "Catalan", "cat"),
    _lang("khm_Khmr", "khm", "km", "Khmer", "khm"),
    _lang("lao_Laoo", "lao", "lo", "Lao", "lao"),
    # The offline toy world (rl/tools/toy.py): the same code in every scheme.
    _toy("toy_en", "Toy English"),
    _toy("toy_xx", "Toy Xish"),
    _toy("toy_yy", "Toy Yish"),  # a pivot world's third language (toy.pivot_pairs)
    _toy("toy_zz", "Toy Zish"),  # a pivot world's unseen language (toy.unseen_language)
)

_TABLE = Path(__file__).with_name("flores_languages.tsv")


def _generated_rows() -> list[Language]:
    """The generated FLORES-200 table (rl/tools/make_languages.py writes it; header lines start with '#')."""
    rows = []
    for n, line in enumerate(_TABLE.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith(("#", "flores200\t")):
            continue
        fields = line.split("\t")
        if len(fields) != 5:
            raise RuntimeError(f"{_TABLE}:{n}: expected 5 tab-separated fields, got {len(fields)}")
        code, f101, iso1, name, aliases = fields
        rows.append(Language(code, f101 or code, iso1 or None, name, None, tuple(aliases.split())))
    return rows


def _all_languages() -> tuple[Language, ...]:
    """Curated entries (with the generated row's extra aliases, e.g. "pes"), then every other FLORES-200 language."""
    generated = {lang.flores200: lang for lang in _generated_rows()}
    out = []
    for lang in _CURATED:
        row = generated.pop(lang.flores200, None)
        if row is not None:
            known = {_norm(k) for k in (lang.flores200, lang.flores101, lang.iso1, lang.ntrex, lang.name, *lang.aliases) if k}
            extra = tuple(a for a in row.aliases if _norm(a) not in known)
            lang = replace(lang, aliases=lang.aliases + extra) if extra else lang
        out.append(lang)
    return tuple(out) + tuple(generated.values())


def _norm(code: str) -> str:
    return code.strip().lower().replace("-", "_")


LANGUAGES: tuple[Language, ...] = _all_languages()

# R1-T1's evaluation languages (FLORES-101 directions with English and Chinese).
R1T1_LANGUAGES: tuple[str, ...] = tuple(
    {lang.iso1: lang.flores200 for lang in LANGUAGES}[iso]
    for iso in "ar de es fr it ja ko pt ru th tr en zh nl pl ms id el cs vi tl".split()
)

PRESETS = ("r1t1",)


def _build_index() -> dict[str, Language]:
    index: dict[str, Language] = {}
    for lang in LANGUAGES:
        keys = {lang.flores200, lang.flores101, lang.name, *lang.aliases}
        keys |= {k for k in (lang.iso1, lang.ntrex) if k}
        for key in map(_norm, keys):
            other = index.setdefault(key, lang)
            if other is not lang:  # a table bug, caught at import time
                raise RuntimeError(f"language key {key!r} maps to both {other.flores200} and {lang.flores200}")
    return index


_INDEX = _build_index()


def _script_variants(code: str) -> list[str]:
    """FLORES-200 codes whose language part is ``code`` ("ace" -> ace_Arab, ace_Latn)."""
    return [lang.flores200 for lang in LANGUAGES if lang.flores200.split("_")[0].lower() == _norm(code)]


def resolve_language(code: str) -> Language:
    """Find a language by any of its codes or its display name, case-insensitively."""
    if not isinstance(code, str) or not code.strip():
        raise UnknownLanguageError(f"language code must be a non-empty string, got {code!r}")
    lang = _INDEX.get(_norm(code))
    if lang is None:
        variants = _script_variants(code)
        if len(variants) > 1:
            raise UnknownLanguageError(f"ambiguous language code {code!r}: FLORES-200 has it in several scripts "
                                       f"({', '.join(variants)}); name one")
        close = difflib.get_close_matches(_norm(code), list(_INDEX), n=8, cutoff=0.6)
        hints = list(dict.fromkeys(_INDEX[c].flores200 for c in close))[:4]
        hint = f"; did you mean {', '.join(hints)}?" if hints else ""
        raise UnknownLanguageError(
            f"unknown language code {code!r}{hint} (accepted: FLORES-200 like 'deu_Latn', "
            f"FLORES-101 like 'deu', ISO 639-1 like 'de', NTREX like 'zho-CN')"
        )
    return lang


def _preset(name: str) -> list[tuple[str, str]]:
    """r1t1: every R1-T1 language to and from English and Chinese."""
    pairs = []
    for hub in ("eng_Latn", "zho_Hans"):
        for lang in R1T1_LANGUAGES:
            if lang != hub:
                pairs += [(lang, hub), (hub, lang)]
    return pairs


def _parse_one(item: str) -> tuple[str, str]:
    """"SRC-TGT" where codes may themselves hold hyphens ("zho-CN-eng"): try every split."""
    text = item.strip()
    cuts = [i for i, ch in enumerate(text) if ch == "-"]
    if not cuts:
        raise ValueError(f"malformed direction {item!r}: expected SRC-TGT such as 'en-de' or 'eng_Latn-deu_Latn'")
    found = set()
    for i in cuts:
        src, tgt = text[:i], text[i + 1 :]
        if _norm(src) in _INDEX and _norm(tgt) in _INDEX:
            found.add((_INDEX[_norm(src)].flores200, _INDEX[_norm(tgt)].flores200))
    if not found:
        if len(cuts) == 1:  # let resolve_language name the unknown side, with suggestions
            try:
                resolve_language(text[: cuts[0]])
                resolve_language(text[cuts[0] + 1 :])
            except UnknownLanguageError as e:
                raise UnknownLanguageError(f"direction {item!r}: {e}") from None
        raise ValueError(f"malformed direction {item!r}: no split into two known language codes")
    if len(found) > 1:
        raise ValueError(f"ambiguous direction {item!r}: could mean any of {sorted(found)}")
    src, tgt = found.pop()
    if src == tgt:
        raise ValueError(f"direction {item!r} has the same source and target language ({src})")
    return src, tgt


def parse_directions(spec: str | list) -> list[tuple[str, str]]:
    """Turn "en-de,deu-eng", ["eng_Latn-deu_Latn", ("fr", "en")] or the preset "r1t1"
    into canonical (src, tgt) FLORES-200 pairs, in order, without duplicates."""
    if isinstance(spec, str):
        items: list = spec.split(",")
    elif isinstance(spec, (list, tuple)):
        items = list(spec)
    else:
        raise ValueError(f"directions must be a string or a list, got {type(spec).__name__}")
    pairs: list[tuple[str, str]] = []
    for item in items:
        if isinstance(item, (list, tuple)):
            if len(item) != 2:
                raise ValueError(f"malformed direction {item!r}: expected a (source, target) pair")
            src, tgt = (resolve_language(c).flores200 for c in item)
            if src == tgt:
                raise ValueError(f"direction {item!r} has the same source and target language ({src})")
            pairs.append((src, tgt))
        elif not isinstance(item, str) or not item.strip():
            raise ValueError(f"empty or non-string direction {item!r} in {spec!r}")
        elif item.strip().lower() in PRESETS:
            pairs += _preset(item.strip().lower())
        else:
            pairs.append(_parse_one(item))
    if not pairs:
        raise ValueError(f"no directions in {spec!r}")
    return list(dict.fromkeys(pairs))
