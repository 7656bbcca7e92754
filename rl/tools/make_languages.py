"""Regenerate rl/core/flores_languages.tsv, the FLORES-101 / FLORES-200 language list that
rl/core/languages.py loads (run: ``python -m rl.tools.make_languages``; needs transformers and pycountry).

Why a generated file and not a runtime lookup: the product must work offline and
``langcodes`` is not a dependency; pycountry (names, ISO 639-1) is installed but not
a declared dependency, so it is used here, once, and the result ships as data.

Sources, in order of authority:
* FLORES-200 codes: ``FAIRSEQ_LANGUAGE_CODES`` in transformers' NLLB tokenizer (the
  202 NLLB codes, which are FLORES-200's), plus FLORES-200's two evaluation-only files
  (``arb_Latn``, ``min_Arab``) and its ``sat_Olck`` file, which NLLB calls ``sat_Beng``
  (kept as an alias) -- 204 codes, as listed in FLORES-200's README.
* FLORES-101 codes: the 102 file codes of the FLORES-101 release (its README's table);
  where FLORES-200 relabelled a language (``ara`` -> ``arb_Arab``, ``zho_simpl`` ->
  ``zho_Hans``) the map says so, otherwise the code is the FLORES-200 code's ISO 639-3 part.
* Names and ISO 639-1 codes: pycountry (ISO 639-3); parentheses dropped ("Nepali
  (individual language)" -> "Nepali"), the script added for languages FLORES has in two.
* Macrolanguages: the individual language that FLORES-200 uses for a macrolanguage gets
  the macrolanguage's codes (``npi_Deva`` answers "nep" and "ne"), per SIL's ISO 639-3
  macrolanguage table; only the member FLORES uses by default, so "fa" means Western Persian
  (pes_Arab), not Dari (prs_Arab).
rl/core/languages.py's curated entries (display names, NTREX codes) override these rows.
"""
from __future__ import annotations

import re
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "core" / "flores_languages.tsv"

FLORES200_EXTRA = ("arb_Latn", "min_Arab", "sat_Olck")
NLLB_RENAMED = {"sat_Beng": "sat_Olck"}  # NLLB's token vs FLORES-200's file name

FLORES101 = (
    "afr amh ara hye asm ast azj bel ben bos bul mya cat ceb zho_simpl zho_trad hrv ces dan nld eng est tgl fin "
    "fra ful glg lug kat deu ell guj hau heb hin hun isl ibo ind gle ita jpn jav kea kam kan kaz khm kor kir lao "
    "lav lin lit luo ltz mkd msa mal mlt mri mar mon npi nso nob nya oci ory orm pus fas pol por pan ron rus srp "
    "sna snd slk slv som ckb spa swh swe tgk tam tel tha tur ukr umb urd uzb vie cym wol xho yor zul"
).split()
FLORES101_RELABELLED = {"ara": "arb_Arab", "fas": "pes_Arab", "ful": "fuv_Latn", "lav": "lvs_Latn",
                        "mon": "khk_Cyrl", "msa": "zsm_Latn", "orm": "gaz_Latn", "pus": "pbt_Arab",
                        "uzb": "uzn_Latn", "zho_simpl": "zho_Hans", "zho_trad": "zho_Hant"}

# individual language FLORES-200 uses -> its macrolanguage (SIL ISO 639-3 macrolanguage table)
MACRO = {"arb": "ara", "zsm": "msa", "swh": "swa", "pes": "fas", "npi": "nep", "khk": "mon", "plt": "mlg",
         "gaz": "orm", "ory": "ori", "pbt": "pus", "quy": "que", "uzn": "uzb", "lvs": "lav", "als": "sqi",
         "azj": "aze", "kmr": "kur", "ydd": "yid", "ayr": "aym", "fuv": "ful", "nob": "nor"}
# a language FLORES has in several scripts: the script its bare codes ("zho", "zh", "kas") mean
DEFAULT_SCRIPT = {"zho": "zho_Hans", "arb": "arb_Arab", "kas": "kas_Arab"}
SCRIPT_VARIANT = {"Hans": "Simplified", "Hant": "Traditional"}  # pycountry calls both "Han (... variant)"
NAME_MISSING = {"ajp": "South Levantine Arabic"}  # retired from ISO 639-3 (merged into apc), so not in pycountry


def flores200_codes() -> list[str]:
    from transformers.models.nllb.tokenization_nllb import FAIRSEQ_LANGUAGE_CODES

    codes = {NLLB_RENAMED.get(c, c) for c in FAIRSEQ_LANGUAGE_CODES} | set(FLORES200_EXTRA)
    return sorted(codes)


def _clean(name: str) -> str:
    return re.sub(r"\s*\([^)]*\)", "", name).strip()


def rows() -> list[tuple[str, str, str, str, str]]:
    """(flores200, flores101, iso1, name, aliases) per FLORES-200 code."""
    import pycountry

    codes = flores200_codes()
    f101 = {FLORES101_RELABELLED.get(c, ""): c for c in FLORES101}
    by_base: dict[str, list[str]] = {}
    for code in codes:
        by_base.setdefault(code.split("_")[0], []).append(code)
    out = []
    for code in codes:
        base, script = code.split("_")
        default = len(by_base[base]) == 1 or DEFAULT_SCRIPT.get(base) == code
        rec = pycountry.languages.get(alpha_3=base)
        name = _clean(rec.name) if rec else NAME_MISSING[base]
        if len(by_base[base]) > 1:
            name += f" ({SCRIPT_VARIANT.get(script) or _clean(pycountry.scripts.get(alpha_4=script).name) + ' script'})"
        macro = pycountry.languages.get(alpha_3=MACRO[base]) if base in MACRO else None
        iso1 = getattr(rec, "alpha_2", None) or getattr(macro, "alpha_2", None)
        flores101 = f101.get(code) or (base if base in FLORES101 and default else "")
        aliases = [a for a in (base, MACRO.get(base)) if a and a != flores101] if default else []
        if default and getattr(macro, "alpha_2", None) not in (None, iso1):
            aliases.append(macro.alpha_2)  # nob_Latn has its own "nb", and answers Norwegian's "no" too
        aliases += [k for k, v in NLLB_RENAMED.items() if v == code]
        out.append((code, flores101, iso1 if default and iso1 else "", name, " ".join(aliases)))
    return out


def check(table: list[tuple[str, str, str, str, str]]) -> None:
    """Every FLORES-101 code placed, and no key claimed twice (the loader would refuse it)."""
    placed = {r[1] for r in table}
    missing = [c for c in FLORES101 if c not in placed]
    if missing:
        raise SystemExit(f"FLORES-101 codes with no FLORES-200 language: {missing}")
    seen: dict[str, str] = {}
    for code, f101, iso1, name, aliases in table:
        for key in {code, f101, iso1, name, *aliases.split()} - {""}:
            if seen.setdefault(key.lower(), code) != code:
                raise SystemExit(f"key {key!r} claimed by {seen[key.lower()]} and {code}")


def main() -> None:
    table = rows()
    check(table)
    header = ("# FLORES-200 languages with their FLORES-101, ISO 639-1 and other accepted codes.\n"
              "# GENERATED by `python -m rl.tools.make_languages` (sources: see rl/tools/make_languages.py); do not edit.\n"
              "# flores101 empty: not in FLORES-101. aliases: space-separated.\n"
              "flores200\tflores101\tiso1\tname\taliases\n")
    OUT.write_text(header + "".join("\t".join(r) + "\n" for r in table), encoding="utf-8")
    print(f"wrote {len(table)} languages to {OUT}")


if __name__ == "__main__":
    main()
