"""Data loaders on the real shared files and on malformed copies of them.

Small excerpts are copied at test time from the shared data into tmp_path:
FLORES-200, CC BY-SA 4.0, NLLB Team et al. 2022 (and Goyal et al. 2021, FLORES-101);
NTREX-128, CC BY-SA 4.0, Federmann et al. 2022.
"""
from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest

from rl.core.data import (
    DataError,
    Example,
    load_examples,
    load_flores,
    load_hf,
    load_jsonl,
    load_ntrex,
    load_tsv,
    write_jsonl,
)
from rl.core.languages import parse_directions


def _lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def flores(data_dir) -> Path:
    return data_dir / "flores200"


@pytest.fixture(scope="module")
def ntrex(data_dir) -> Path:
    return data_dir / "ntrex128"


def _mini_flores(flores: Path, dst: Path, names: dict[str, str], n: int = 6) -> Path:
    """A small FLORES dir: {file code: FLORES-200 code of the real file to copy from}."""
    (dst / "devtest").mkdir(parents=True)
    for name, real in names.items():
        text = "\n".join(_lines(flores / "devtest" / f"{real}.devtest")[:n]) + "\n"
        (dst / "devtest" / name).write_text(text, encoding="utf-8")
    return dst


# ---------------------------------------------------------------- FLORES


def test_flores_real_alignment_and_context(flores):
    examples = load_flores(flores, "en-de")
    eng, deu = _lines(flores / "devtest/eng_Latn.devtest"), _lines(flores / "devtest/deu_Latn.devtest")
    assert len(examples) == len(eng) == 1012
    assert [e.source for e in examples] == eng and [e.reference for e in examples] == deu
    assert {(e.src_lang, e.tgt_lang) for e in examples} == {("eng_Latn", "deu_Latn")}
    assert len({e.id for e in examples}) == len(examples)
    # context: previous sentence when the metadata URL (the document) is the same
    urls = [row.split("\t")[0] for row in _lines(flores / "metadata/metadata_devtest.tsv")[1:]]
    for i, ex in enumerate(examples):
        same_doc = i > 0 and urls[i] == urls[i - 1]
        assert ex.context == (eng[i - 1] if same_doc else None)
    assert examples[0].context is None and any(e.context for e in examples)


def test_flores_dev_split_and_r1t1_limit(flores):
    assert len(load_flores(flores, "zh-th", split="dev")) == 997
    examples = load_flores(flores, "r1t1", limit=2)
    directions = parse_directions("r1t1")
    assert len(examples) == 2 * len(directions)
    assert [(e.src_lang, e.tgt_lang) for e in examples[::2]] == directions
    tha = _lines(flores / "devtest/tha_Thai.devtest")
    zh_th = [e for e in examples if (e.src_lang, e.tgt_lang) == ("zho_Hans", "tha_Thai")]
    assert [e.reference for e in zh_th] == tha[:2]


def test_flores101_naming_gives_same_sentences(flores, tmp_path):
    root = _mini_flores(
        flores, tmp_path / "flores101",
        {"eng.devtest": "eng_Latn", "zho_simpl.devtest": "zho_Hans", "msa.devtest": "zsm_Latn"},
    )
    got = load_flores(root, "zh-en,en-ms")
    want = load_flores(flores, "zh-en,en-ms", limit=6)
    assert [(e.src_lang, e.tgt_lang, e.source, e.reference) for e in got] == [
        (e.src_lang, e.tgt_lang, e.source, e.reference) for e in want
    ]
    assert all(e.context is None for e in got)  # no metadata in this dir


def test_flores_plus_naming(flores, tmp_path):
    root = _mini_flores(flores, tmp_path / "floresp", {"devtest.eng_Latn": "eng_Latn", "devtest.cmn_Hans": "zho_Hans"})
    got = load_flores(root, "eng_Latn-zho_Hans")
    assert [e.reference for e in got] == _lines(flores / "devtest/zho_Hans.devtest")[:6]


def test_flores_missing_language_names_language_and_path(flores, tmp_path):
    root = _mini_flores(flores, tmp_path / "f", {"eng_Latn.devtest": "eng_Latn"})
    with pytest.raises(DataError) as info:
        load_flores(root, "en-fr")
    msg = str(info.value)
    assert "French" in msg and str(root / "devtest" / "fra_Latn.devtest") in msg and "fra.devtest" in msg
    with pytest.raises(DataError, match="no dev/ directory"):
        load_flores(root, "en-fr", split="dev")


def test_flores_misaligned(flores, tmp_path):
    root = _mini_flores(flores, tmp_path / "f", {"eng_Latn.devtest": "eng_Latn", "deu_Latn.devtest": "deu_Latn"})
    short = root / "devtest/deu_Latn.devtest"
    short.write_text("\n".join(_lines(short)[:4]) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match="misaligned") as info:
        load_flores(root, "en-de")
    assert str(short) in str(info.value) and "line 5" in str(info.value)


def test_flores_empty_line(flores, tmp_path):
    root = _mini_flores(flores, tmp_path / "f", {"eng.devtest": "eng_Latn", "deu.devtest": "deu_Latn"})
    path = root / "devtest/deu.devtest"
    lines = _lines(path)
    lines[2] = "   "
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=f"{path}:3: empty line"):
        load_flores(root, "en-de")


def test_flores_bad_bytes(flores, tmp_path):
    root = _mini_flores(flores, tmp_path / "f", {"eng_Latn.devtest": "eng_Latn", "deu_Latn.devtest": "deu_Latn"})
    path = root / "devtest/eng_Latn.devtest"
    raw = path.read_bytes().split(b"\n")
    raw[3] = raw[3][:10] + b"\xff\xfe" + raw[3][10:]
    path.write_bytes(b"\n".join(raw))
    with pytest.raises(DataError, match=f"{path}:4: not valid UTF-8"):
        load_flores(root, "de-en")


# ---------------------------------------------------------------- NTREX


def test_ntrex_directions_and_context(ntrex):
    eng = _lines(ntrex / "newstest2019-src.eng.txt")
    deu = _lines(ntrex / "newstest2019-ref.deu.txt")
    zho = _lines(ntrex / "newstest2019-ref.zho-CN.txt")
    en_de = load_ntrex(ntrex, "en-de")
    assert len(en_de) == len(eng) == 1997
    assert [e.source for e in en_de] == eng and [e.reference for e in en_de] == deu
    assert not any("\r" in e.source or "\r" in e.reference for e in en_de)  # the files are CRLF
    de_en = load_ntrex(ntrex, "deu_Latn-eng_Latn", limit=5)
    assert [(e.source, e.reference) for e in de_en] == list(zip(deu[:5], eng[:5]))
    de_zh = load_ntrex(ntrex, "de-zh", limit=5)
    assert [(e.source, e.reference) for e in de_zh] == list(zip(deu[:5], zho[:5]))
    docs = _lines(ntrex / "DOCUMENT_IDS.tsv")
    for i, ex in enumerate(en_de):
        assert ex.context == (eng[i - 1] if i > 0 and docs[i] == docs[i - 1] else None)
    assert sum(e.context is None for e in en_de) == len(set(docs))  # one doc start each (docs are contiguous)


def test_ntrex_codes_that_differ(ntrex):
    examples = load_ntrex(ntrex, "en-ms,en-tl,en-sw,en-ar", limit=1)
    refs = [_lines(ntrex / f"newstest2019-ref.{c}.txt")[0] for c in ("msa", "fil", "swa", "arb")]
    assert [e.reference for e in examples] == refs


def test_ntrex_missing_language(ntrex):
    with pytest.raises(DataError) as info:
        load_ntrex(ntrex, "en-hau")
    assert "Hausa" in str(info.value) and "newstest2019-ref.hau.txt" in str(info.value)


def test_ntrex_misaligned(ntrex, tmp_path):
    eng = _lines(ntrex / "newstest2019-src.eng.txt")[:5]
    (tmp_path / "newstest2019-src.eng.txt").write_text("\r\n".join(eng) + "\r\n", encoding="utf-8")
    ref = tmp_path / "newstest2019-ref.fra.txt"
    ref.write_text("\n".join(_lines(ntrex / "newstest2019-ref.fra.txt")[:6]) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match="misaligned") as info:
        load_ntrex(tmp_path, "en-fr")
    assert str(tmp_path / "newstest2019-src.eng.txt") in str(info.value) and "line 6" in str(info.value)
    ref.write_text("\n".join(_lines(ntrex / "newstest2019-ref.fra.txt")[:5]) + "\n", encoding="utf-8")
    fixed = load_ntrex(tmp_path, "fr-en")
    assert [e.reference for e in fixed] == eng  # CRLF stripped
    assert all(e.context is None for e in fixed)  # no DOCUMENT_IDS.tsv here


# ---------------------------------------------------------------- JSONL / TSV


def test_jsonl_roundtrip_and_filter(tmp_path):
    examples = [
        Example("a", "eng_Latn", "deu_Latn", "Hello.", "Hallo.", None),
        Example("b", "deu_Latn", "eng_Latn", "Ja — wirklich.", None, "Vorher."),
        Example("c", "toy_en", "toy_xx", "the cat", "xa kat"),
    ]
    path = write_jsonl(examples, tmp_path / "sub" / "d.jsonl")
    assert "—" in path.read_text(encoding="utf-8")  # written as UTF-8, not \u escapes
    assert load_jsonl(path) == examples
    assert load_jsonl(path, "de-en") == [examples[1]]
    # codes in any scheme are canonicalised; missing id gets a stable one
    path.write_text(json.dumps({"src_lang": "en", "tgt_lang": "zh-CN", "source": "Hi"}) + "\n", encoding="utf-8")
    (ex,) = load_jsonl(path)
    assert (ex.src_lang, ex.tgt_lang, ex.reference, ex.id) == ("eng_Latn", "zho_Hans", None, "d.0001")


@pytest.mark.parametrize(
    "line, match",
    [
        ('{"src_lang": "en", "tgt_lang": "de", "source": "x"', "invalid JSON"),
        ('["en", "de"]', "expected a JSON object"),
        ('{"tgt_lang": "de", "source": "x"}', "'src_lang'"),
        ('{"src_lang": "en", "tgt_lang": "xx_Nope", "source": "x"}', "'tgt_lang'"),
        ('{"src_lang": "en", "tgt_lang": "de"}', "'source'"),
        ('{"src_lang": "en", "tgt_lang": "de", "source": "x", "reference": 3}', "'reference'"),
        ("", "empty line"),
    ],
)
def test_jsonl_errors_name_file_line_key(tmp_path, line, match):
    good = json.dumps({"src_lang": "en", "tgt_lang": "de", "source": "a", "reference": "b"})
    path = tmp_path / "bad.jsonl"
    path.write_text(f"{good}\n{line}\n{good}\n", encoding="utf-8")
    with pytest.raises(DataError, match=match) as info:
        load_jsonl(path)
    assert f"{path}:2" in str(info.value)


def test_tsv(tmp_path):
    path = tmp_path / "p.tsv"
    path.write_text("Hello.\tHallo.\r\nGood night.\tGute Nacht.\n", encoding="utf-8")
    examples = load_tsv(path, "en-de")
    assert [(e.source, e.reference, e.src_lang, e.tgt_lang) for e in examples] == [
        ("Hello.", "Hallo.", "eng_Latn", "deu_Latn"),
        ("Good night.", "Gute Nacht.", "eng_Latn", "deu_Latn"),
    ]
    path.write_text("Hello.\tHallo.\nno tab here\n", encoding="utf-8")
    with pytest.raises(DataError, match=f"{path}:2: expected two"):
        load_tsv(path, "en-de")
    with pytest.raises(DataError, match="one direction"):
        load_tsv(path, "en-de,de-en")


# ---------------------------------------------------------------- HF (offline: a stand-in `datasets`)


def test_hf_loader_with_fake_datasets(monkeypatch):
    calls = []

    class FakeDS(list):
        column_names = ["id", "text"]

    def load_dataset(dataset_id, config, split):
        calls.append((dataset_id, config, split))
        if config == "zho_Hans":  # FLORES+ relabelled it cmn_Hans
            raise ValueError("BuilderConfig 'zho_Hans' not found")
        return FakeDS({"id": i, "text": f"{config} {i} "} for i in range(4))

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    examples = load_hf("openlanguagedata/flores_plus", "en-zh,zh-en", "devtest", limit=3)
    assert [(e.source, e.reference) for e in examples[:3]] == [(f"eng_Latn {i}", f"cmn_Hans {i}") for i in range(3)]
    assert len(examples) == 6 and examples[3].src_lang == "zho_Hans"
    assert calls == [(d, c, "devtest") for d, c in [("openlanguagedata/flores_plus", "eng_Latn"),
                                                     ("openlanguagedata/flores_plus", "zho_Hans"),
                                                     ("openlanguagedata/flores_plus", "cmn_Hans")]]


def test_hf_offline_error_is_clear(monkeypatch):
    def load_dataset(*args, **kwargs):
        raise ConnectionError("Couldn't reach the Hugging Face Hub")

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    with pytest.raises(DataError, match=r"could not load German.*offline.*ConnectionError"):
        load_examples("hf", "some/flores", "de-en", split="dev")


# ---------------------------------------------------------------- dispatch


def test_load_examples_dispatch(data_dir, tmp_path):
    fl = load_examples("flores", data_dir / "flores200", ["en-de", "de-fr"], split="devtest", limit=3)
    assert len(fl) == 6
    nt = load_examples("ntrex", data_dir / "ntrex128", "en-ja", limit=4)
    assert len(nt) == 4 and nt[0].tgt_lang == "jpn_Jpan"
    path = write_jsonl(fl, tmp_path / "fl.jsonl")
    per_dir = load_examples("jsonl", path, ["en-de", "de-fr"], limit=2)
    assert [e.id for e in per_dir] == [e.id for e in fl[:2] + fl[3:5]]
    shuffled = load_examples("flores", data_dir / "flores200", "en-de", limit=50, seed=1)
    again = load_examples("flores", data_dir / "flores200", "en-de", limit=50, seed=1)
    plain = load_examples("flores", data_dir / "flores200", "en-de", limit=50)
    assert shuffled == again and shuffled != plain and sorted(shuffled, key=lambda e: e.id) == plain


@pytest.mark.parametrize(
    "source, path, limit, match",
    [
        ("toy", None, None, "rl.tools.toy"),
        ("csv", "x", None, "unknown data source"),
        ("flores", None, None, "needs a path"),
        ("flores", "/nonexistent/flores", None, "does not exist"),
        ("flores", "/tmp", 0, "limit"),
    ],
)
def test_load_examples_errors(source, path, limit, match):
    with pytest.raises(DataError, match=match):
        load_examples(source, path, "en-de", limit=limit)


def test_no_examples_after_filter(tmp_path):
    path = write_jsonl([Example("a", "eng_Latn", "deu_Latn", "x", "y")], tmp_path / "d.jsonl")
    with pytest.raises(DataError, match="no examples"):
        load_examples("jsonl", path, "fr-en")
