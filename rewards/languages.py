"""Language codes as the rewards need them: one short key per language.

The trainer passes FLORES-200 codes (``deu_Latn``, ``zho_Hans``); users may
write FLORES-101 codes (``deu``, ``zho_simpl``) or ISO 639-1 (``de``). The
rewards need a single key per language for two things: the BLEU tokenizer
(zh / ja / ko are special) and the label set of the language-ID model
(py3langid's labels are ISO 639-1 where one exists, else ISO 639-3).
Toy codes (``toy_en``) and anything unknown map to None: callers treat None
as "no language-specific behaviour".
"""
from __future__ import annotations

# ISO 639-3 (and FLORES individual-language codes) -> py3langid label.
# Individual languages that FLORES-200 uses in place of a macrolanguage
# (arb for Arabic, zsm for Malay, swh for Swahili, ...) map to the macro's label.
_ISO3_TO_KEY = {
    "afr": "af", "amh": "am", "ara": "ar", "arb": "ar", "asm": "as", "aze": "az", "azj": "az",
    "bel": "be", "bul": "bg", "ben": "bn", "bre": "br", "bos": "bs", "cat": "ca", "ces": "cs",
    "cym": "cy", "dan": "da", "deu": "de", "ell": "el", "eng": "en", "epo": "eo", "spa": "es",
    "est": "et", "ekk": "et", "eus": "eu", "fas": "fa", "pes": "fa", "prs": "fa", "fin": "fi",
    "fra": "fr", "fry": "fy", "gle": "ga", "gla": "gd", "glg": "gl", "guj": "gu", "hau": "ha",
    "heb": "he", "hin": "hi", "hrv": "hr", "hat": "ht", "hun": "hu", "hye": "hy", "ind": "id",
    "ibo": "ig", "isl": "is", "ita": "it", "jpn": "ja", "jav": "jv", "kat": "ka", "kaz": "kk",
    "khm": "km", "kan": "kn", "kor": "ko", "kur": "ku", "kmr": "ku", "kir": "ky", "lat": "la",
    "lug": "lg", "lin": "ln", "lao": "lo", "lit": "lt", "lav": "lv", "lvs": "lv", "mlg": "mg",
    "plt": "mg", "mkd": "mk", "mal": "ml", "mon": "mn", "khk": "mn", "mar": "mr", "msa": "ms",
    "zsm": "ms", "mya": "my", "nep": "ne", "npi": "ne", "nld": "nl", "nor": "no", "nob": "no",
    "orm": "om", "gaz": "om", "ori": "or", "ory": "or", "pan": "pa", "pus": "ps", "pbt": "ps",
    "pol": "pl", "por": "pt", "que": "qu", "quy": "qu", "ron": "ro", "rus": "ru", "san": "sa",
    "sin": "si", "slk": "sk", "slv": "sl", "som": "so", "sqi": "sq", "als": "sq", "srp": "sr",
    "swe": "sv", "swa": "sw", "swh": "sw", "tam": "ta", "tel": "te", "tha": "th", "tgl": "tl",
    "fil": "tl", "tur": "tr", "uig": "ug", "ukr": "uk", "urd": "ur", "uzb": "uz", "uzn": "uz",
    "vie": "vi", "xho": "xh", "yor": "yo", "zho": "zh", "cmn": "zh", "zul": "zu", "kin": "rw",
    "sme": "se", "sna": "sn", "sot": "st", "arg": "an", "fao": "fo", "ltz": "lb", "wln": "wa",
    "bak": "ba", "mlt": "mt", "nno": "nn", "oci": "oc", "tgk": "tg", "tuk": "tk", "tat": "tt",
    "vol": "vo", "dzo": "dz", "yue": "yue", "wuu": "wuu",
}
_ISO1 = set(_ISO3_TO_KEY.values())


def lang_key(code: str | None) -> str | None:
    """``deu_Latn`` / ``deu`` / ``de`` / ``zho_simpl`` -> ``de`` / ``zh``; None when unknown (toy codes too)."""
    if not code or not isinstance(code, str):
        return None
    base = code.strip().replace("-", "_").split("_")[0].lower()
    if base in _ISO3_TO_KEY:
        return _ISO3_TO_KEY[base]
    if base in _ISO1:
        return base
    return None
