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


# ----------------------------------------------------------------------------- every FLORES language (issue 13.5)

from rl.tools import make_languages  # noqa: E402

NEW = {"amh_Ethi": ("am", "amh", "Amharic"), "mya_Mymr": ("my", "mya", "Burmese"), "npi_Deva": ("ne", "npi", "Nepali"),
       "zul_Latn": ("zu", "zul", "Zulu"), "ibo_Latn": ("ig", "ibo", "Igbo"), "yue_Hant": (None, "yue", "Yue Chinese")}


@pytest.mark.parametrize("code", sorted(NEW))
def test_flores_languages_beyond_the_curated_table(code):
    iso1, iso3, name = NEW[code]
    lang = resolve_language(code)
    assert (lang.flores200, lang.iso1, lang.name) == (code, iso1, name)
    for form in filter(None, (iso1, iso3, code.lower(), code.replace("_", "-"), name)):
        assert resolve_language(form) is lang
    assert parse_directions(f"{code}-eng_Latn, en-{iso3}") == [(code, "eng_Latn"), ("eng_Latn", code)]


def test_every_flores200_code_resolves_to_itself():
    """FLORES-200's 204 codes: NLLB's 202 (transformers' list, independent of our table) with sat_Beng
    renamed to the file code sat_Olck, plus arb_Latn and min_Arab."""
    from transformers.models.nllb.tokenization_nllb import FAIRSEQ_LANGUAGE_CODES

    codes = set(FAIRSEQ_LANGUAGE_CODES) - {"sat_Beng"} | {"sat_Olck", "arb_Latn", "min_Arab"}
    assert len(codes) == 204
    for code in codes:
        assert resolve_language(code).flores200 == code
    assert resolve_language("sat_Beng").flores200 == "sat_Olck"  # NLLB's name for the same language
    real = [lang.flores200 for lang in LANGUAGES if not lang.flores200.startswith("toy_")]
    assert sorted(real) == sorted(codes)


def test_every_flores101_code_resolves_and_round_trips():
    assert len(make_languages.FLORES101) == 102 == len(set(make_languages.FLORES101))
    for code in make_languages.FLORES101:
        assert resolve_language(code).flores101 == code
    assert resolve_language("ful").flores200 == "fuv_Latn" and resolve_language("uzb").flores200 == "uzn_Latn"


def test_ambiguous_defaults_are_kept():
    assert resolve_language("zh").flores200 == resolve_language("zho").flores200 == "zho_Hans"
    assert resolve_language("ar").flores200 == "arb_Arab"
    assert resolve_language("fa").flores200 == "pes_Arab"  # not Dari (prs_Arab)
    assert resolve_language("kas").flores200 == "kas_Arab"
    assert resolve_language("no").flores200 == resolve_language("nb").flores200 == "nob_Latn"


def test_language_in_two_scripts_without_default_is_refused_naming_both():
    with pytest.raises(UnknownLanguageError, match=r"'ace'.*ace_Arab, ace_Latn"):
        resolve_language("ace")
    with pytest.raises(UnknownLanguageError, match="ace-eng"):
        parse_directions("ace-eng")
    with pytest.raises(UnknownLanguageError, match="'amh_Latn'"):
        resolve_language("amh_Latn")


def test_generated_table_matches_its_generator():
    """rl/core/flores_languages.tsv is what `python -m rl.tools.make_languages` writes from its sources."""
    pytest.importorskip("pycountry")
    shipped = [line.split("\t") for line in make_languages.OUT.read_text(encoding="utf-8").splitlines()
               if line and not line.startswith(("#", "flores200\t"))]
    assert shipped == [list(row) for row in make_languages.rows()]


def test_ntrex_file_found_by_iso_code_for_a_generated_language(tmp_path):
    from rl.core.data import load_ntrex

    (tmp_path / "newstest2019-src.eng.txt").write_text("Hello.\nBye.\n", encoding="utf-8")
    (tmp_path / "newstest2019-ref.nep.txt").write_text("नमस्ते।\nबिदा।\n", encoding="utf-8")
    got = load_ntrex(tmp_path, "en-ne")
    assert [(e.src_lang, e.tgt_lang, e.reference) for e in got] == [("eng_Latn", "npi_Deva", "नमस्ते।"),
                                                                  ("eng_Latn", "npi_Deva", "बिदा।")]


# ----------------------------------------------------------------------------- what the rewards support per language


def test_bleu_tokenizer_by_script():
    from rewards.lexical import bleu_tokenizer, bleu_tokenizer_support

    assert [bleu_tokenizer(c) for c in ("mya_Mymr", "shn_Mymr", "bod_Tibt", "khm", "lo")] == ["char"] * 5
    assert [bleu_tokenizer(c) for c in ("yue_Hant", "zho_trad")] == ["zh", "zh"]
    assert [bleu_tokenizer(c) for c in ("amh_Ethi", "npi_Deva", "zul_Latn", "ibo_Latn")] == ["13a"] * 4
    tok, why = bleu_tokenizer_support("mya_Mymr")
    assert tok == "char" and "Burmese" in why and "no spaces" in why


def test_unknown_target_language_bleu_degrades_with_one_notice(monkeypatch, caplog):
    from rewards import languages as rlang
    from rewards.lexical import bleu

    monkeypatch.setattr(rlang, "_noticed", set())
    with caplog.at_level("WARNING", logger="rewards"):
        for _ in range(2):
            assert bleu(None, ["<answer>a b c d</answer>"], ["a b c d"], tgt_lang="xyz_Abcd") == [pytest.approx(100.0)]
    notices = [r.getMessage() for r in caplog.records if "xyz_Abcd" in r.getMessage()]
    assert len(notices) == 1 and "unknown language code" in notices[0] and "13a" in notices[0]


def test_lang_guard_support_per_language(monkeypatch, caplog):
    from rewards import languages as rlang
    from rewards.guards import lang_guard, lang_id_support

    assert lang_id_support("npi_Deva")[0] == "ne" and lang_id_support("zul_Latn")[0] == "zu"
    assert lang_id_support("kik_Latn")[0] == "kik"  # langid's label is ISO 639-3 where ISO 639-1 has one too
    assert lang_id_support("zho_Hant")[0] == "zh"
    assert lang_id_support("arb_Latn")[0] is None  # romanized Arabic: langid's 'ar' model learnt Arabic script
    label, why = lang_id_support("bam_Latn")
    assert label is None and "Bambara" in why and "no penalty" in why
    monkeypatch.setattr(rlang, "_noticed", set())
    english = "<answer>This sentence is plainly written in English, not in Bambara.</answer>"
    with caplog.at_level("WARNING", logger="rewards"):
        for _ in range(2):
            assert lang_guard(None, [english], None, tgt_lang="bam_Latn") == [0.0]
        assert lang_guard(None, [english], None, tgt_lang="zul_Latn") == [-1.0]
    notices = [r.getMessage() for r in caplog.records if "bam_Latn" in r.getMessage()]
    assert len(notices) == 1 and notices[0].startswith("lang_guard: Bambara")
