"""BLEU on scripts written without spaces between words (Thai, Khmer, Lao, Myanmar).

FLORES-200 lines (CC BY-SA 4.0; NLLB Team et al. 2022; Goyal et al. 2021) are read from the data dir."""
from __future__ import annotations

import pytest
import sacrebleu

import rewards
from rewards import lexical

N_LINES = 10


def thai_lines(data_dir) -> list[str]:
    path = data_dir / "flores200" / "devtest" / "tha_Thai.devtest"
    return path.read_text(encoding="utf-8").splitlines()[:N_LINES]


def one_char_changed(line: str) -> str:
    """The line with its middle non-space character replaced by another Thai letter."""
    i = len(line) // 2
    while line[i].isspace():
        i += 1
    return line[:i] + ("ข" if line[i] == "ก" else "ก") + line[i + 1:]


def test_one_changed_thai_character_costs_little_bleu(data_dir):
    refs = thai_lines(data_dir)
    hyps = [one_char_changed(r) for r in refs]
    cols = {"src_lang": ["eng_Latn"] * len(refs), "tgt_lang": ["tha_Thai"] * len(refs)}
    got = lexical.bleu(refs, [f"<think>t</think><answer>{h}</answer>" for h in hyps], refs, **cols)
    assert min(got) > 80, got
    # What 13a gave (it splits a Thai sentence into a few phrase-sized tokens): 30-81, mean ~56.
    old = [sacrebleu.sentence_bleu(h, [r], tokenize="13a").score for h, r in zip(hyps, refs)]
    assert sum(old) / len(old) < 70 and min(old) < 40, old
    assert sum(got) / len(got) > sum(old) / len(old) + 30


def test_unspaced_scripts_get_char_and_others_keep_theirs():
    for code in ("tha_Thai", "tha", "th", "khm_Khmr", "lao_Laoo", "mya_Mymr", "my"):
        assert rewards.bleu_tokenizer(code) == "char", code
    assert [rewards.bleu_tokenizer(c) for c in ("zho_Hans", "yue_Hant")] == ["zh", "zh"]
    assert [rewards.bleu_tokenizer(c) for c in ("deu_Latn", "arb_Arab", "hin_Deva", "vie_Latn", None)] == ["13a"] * 5


def test_corpus_scores_report_the_char_tokenizer(data_dir):
    refs = thai_lines(data_dir)
    hyps = [one_char_changed(r) for r in refs]
    got = rewards.corpus_scores(hyps, refs, "tha_Thai")
    assert got["bleu_tokenizer"] == "char" and "tok:char" in got["signatures"]["bleu"]
    assert got["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs], tokenize="char").score)
