"""Language table and direction parsing."""
from __future__ import annotations

import pytest

from rl.core.languages import (
    LANGUAGES,
    R1T1_LANGUAGES,
    Language,
    UnknownLanguageError,
    parse_directions,
    resolve_language,
)

R1T1_ISO = "ar de es fr it ja ko pt ru th tr en zh nl pl ms id el cs vi tl".split()


def test_every_scheme_resolves_to_the_same_language():
    de = resolve_language("de")
    assert de == Language("deu_Latn", "deu", "de", "German", "deu")
    for code in ("deu", "deu_Latn", "DEU_LATN", "De", " de ", "German", "deu-Latn"):
        assert resolve_language(code) is de
    zh = resolve_language("zh")
    assert zh.name == "Chinese (Simplified)"
    for code in ("zho_simpl", "zho_Hans", "zho-CN", "zh-cn", "cmn_Hans"):
        assert resolve_language(code) is zh
    assert resolve_language("zho_trad").flores200 == "zho_Hant"
    # NTREX and FLORES-101 codes that differ from FLORES-200's
    assert resolve_language("arb").flores200 == resolve_language("ara").flores200 == "arb_Arab"
    assert resolve_language("msa").flores200 == resolve_language("ms").flores200 == "zsm_Latn"
    assert resolve_language("fil").flores200 == resolve_language("tl").flores200 == "tgl_Latn"
    assert resolve_language("swa").flores200 == resolve_language("swh").flores200 == "swh_Latn"


def test_covers_shared_flores_and_ntrex_files(data_dir):
    for path in (data_dir / "flores200" / "devtest").glob("*.devtest"):
        assert resolve_language(path.stem).flores200 == path.stem
    ntrex = sorted((data_dir / "ntrex128").glob("newstest2019-*.txt"))
    assert ntrex, "no NTREX files in the data dir"
    for path in ntrex:
        code = path.name.split(".")[1]
        assert resolve_language(code).ntrex == code


def test_toy_languages_same_code_everywhere():
    for code, name in (("toy_en", "Toy English"), ("toy_xx", "Toy Xish")):
        lang = resolve_language(code)
        assert (lang.flores200, lang.flores101, lang.iso1, lang.name) == (code, code, code, name)


def test_table_codes_are_unique():
    for field in ("flores200", "flores101"):
        values = [getattr(lang, field) for lang in LANGUAGES]
        assert len(values) == len(set(values)), field
    isos = [lang.iso1 for lang in LANGUAGES if lang.iso1]
    assert len(isos) == len(set(isos))


def test_unknown_language_names_code_and_suggests():
    with pytest.raises(UnknownLanguageError, match="deu_Latm") as info:
        resolve_language("deu_Latm")
    assert "deu_Latn" in str(info.value)
    assert isinstance(info.value, ValueError)
    with pytest.raises(UnknownLanguageError, match="klingon"):
        resolve_language("klingon")


def test_parse_directions_forms():
    assert parse_directions("en-de") == [("eng_Latn", "deu_Latn")]
    assert parse_directions("eng_Latn-deu_Latn, deu-eng") == [("eng_Latn", "deu_Latn"), ("deu_Latn", "eng_Latn")]
    assert parse_directions(["zho-CN-eng", ("fr", "ja")]) == [("zho_Hans", "eng_Latn"), ("fra_Latn", "jpn_Jpan")]
    assert parse_directions("en-de,en-de,eng-deu") == [("eng_Latn", "deu_Latn")]
    assert parse_directions("toy_en-toy_xx") == [("toy_en", "toy_xx")]


@pytest.mark.parametrize(
    "spec, match",
    [
        ("ende", "malformed"),
        ("en-de-fr", "malformed"),
        ("en-en", "same source and target"),
        ("eng-en", "same source and target"),
        ("en-klingon", "klingon"),
        ("", "empty"),
        ("en-de,,fr-en", "empty"),
        ([], "no directions"),
        ([("en", "de", "fr")], "malformed"),
    ],
)
def test_parse_directions_errors(spec, match):
    with pytest.raises(ValueError, match=match):
        parse_directions(spec)


def test_r1t1_preset():
    assert len(R1T1_LANGUAGES) == 21 == len(set(R1T1_LANGUAGES))
    assert {resolve_language(iso).flores200 for iso in R1T1_ISO} == set(R1T1_LANGUAGES)
    pairs = parse_directions("r1t1")
    assert len(pairs) == len(set(pairs))
    assert all(s != t for s, t in pairs)
    # Independent construction: every pair with English or Chinese on one side, both languages in the set.
    langs = set(R1T1_LANGUAGES)
    expected = {(s, t) for s in langs for t in langs if s != t and {"eng_Latn", "zho_Hans"} & {s, t}}
    assert set(pairs) == expected
    assert len(pairs) == 78  # 20*2 with English + 20*2 with Chinese - the 2 en<->zh counted twice
    assert ("deu_Latn", "eng_Latn") in pairs and ("zho_Hans", "tha_Thai") in pairs
    assert ("deu_Latn", "fra_Latn") not in pairs
    # combinable with other directions, duplicates dropped
    assert parse_directions(["R1T1", "en-de", "hi-en"]) == pairs + [("hin_Deva", "eng_Latn")]
