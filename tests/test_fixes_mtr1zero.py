"""Fix: the ``mt-r1-zero`` preset against MT-R1-Zero's own reward.

Reference: github.com/fzp0424/MT-R1-Zero, ``verl/utils/reward_score/mt_score.py``:
``compute_score`` (reward_metric="Merge", reward_type="continuous", scale_factor=100,
check_think=True, format_reward=1), ``validate_response_structure``, ``extract_solution``
and ``compute_bleu``; the COMETKiwi score reaches it as ``round(score * 100, 2)`` from
their COMET-free worker (``DataParallelCOMETRefFree._forward_micro_batch``).
:func:`their_total` below writes that formula out (their ``<translate>`` tag read as
our ``<answer>``). COMETKiwi is a stub here: no model is loaded.
"""
from __future__ import annotations

import re
import sys
import types

import pytest
import sacrebleu

import rewards
import rewards.base
from rewards import lexical

KIWI = {  # answer -> stub COMETKiwi score (native 0-1); no answer -> 0.0 as rewards.comet does
    "Die Katze sitzt auf der Matte.": 0.83456,
    "Guten Tag": 0.71234,
    "我喜欢机器翻译。": 0.90009,
}


class StubKiwi:
    """Stands in for rewards.comet.CometKiwiReward: same call contract, fixed scores."""

    def __init__(self, **kwargs):
        self.kwargs = kwargs

    def __call__(self, sources, hypotheses, references, **columns):
        return [0.0 if not a else KIWI.get(a, 0.5) for a in rewards.base.answers(hypotheses)]


@pytest.fixture
def preset(monkeypatch):
    fake = types.ModuleType("rewards.comet")
    fake.CometKiwiReward = StubKiwi
    monkeypatch.setitem(sys.modules, "rewards.comet", fake)
    return rewards.load("mt-r1-zero")


def their_total(completion: str, ref: str, kiwi: float, tgt: str) -> float:
    """mt_score.py compute_score, Merge / continuous / scale 100 / check_think, written out."""
    # validate_response_structure: each tag exactly once, in order; other text is not looked at
    tags = ["<think>", "</think>", "<answer>", "</answer>"]
    ok = all(completion.count(t) == 1 for t in tags)
    pos = [completion.find(t) for t in tags]
    if pos[0] > pos[1] or pos[1] > pos[2] or pos[2] > pos[3]:
        ok = False
    format_score = 1 if ok else -1
    # extract_solution: last <translate>...</translate> match, stripped
    matches = list(re.finditer(r"<answer>(.*?)</answer>", completion, re.DOTALL))
    answer = matches[-1].group(1).strip() if matches else None
    if ok and answer:
        # compute_bleu: corpus_bleu of one line, tokenizer zh / ja-mecab / 13a, read back from the string
        tokenize = "zh" if tgt == "zh" else "ja-mecab" if tgt == "ja" else "13a"
        bleu_str = str(sacrebleu.corpus_bleu([answer], [[ref]], tokenize=tokenize))
        bleu = float(re.search(r"BLEU = (\d+\.\d+)", bleu_str).group(1))
        metric = round(float(kiwi) * 100, 2)
        answer_score = bleu / 100 + metric / 100
    else:
        answer_score = -2
    return format_score + answer_score


def think(answer: str) -> str:
    return f"<think>Word by word, then fix the order.</think><answer>{answer}</answer>"


REF_DE = "Die Katze sitzt heute auf der Matte."
CASES = [  # (name, completion, reference, our tgt_lang, their lg target)
    ("normal", think("Die Katze sitzt auf der Matte."), REF_DE, "deu_Latn", "de"),
    ("empty answer", think(""), REF_DE, "deu_Latn", "de"),
    ("blank answer", think("   "), REF_DE, "deu_Latn", "de"),
    ("2-token answer", think("Guten Tag"), "Guten Tag", "deu_Latn", "de"),
    ("missing tags", "Die Katze sitzt auf der Matte.", REF_DE, "deu_Latn", "de"),
    ("unterminated", "<think>x</think><answer>Die Katze sitzt", REF_DE, "deu_Latn", "de"),
    ("chinese", think("我喜欢机器翻译。"), "我爱机器翻译。", "zho_Hans", "zh"),
]


@pytest.mark.parametrize("name, completion, ref, tgt, their_tgt", CASES, ids=[c[0] for c in CASES])
def test_total_equals_their_formula(preset, name, completion, ref, tgt, their_tgt):
    out = preset.score(["source"], [completion], [ref], src_lang="eng_Latn", tgt_lang=tgt)
    answer = rewards.base.answers([completion])[0]
    want = their_total(completion, ref, KIWI.get(answer, 0.5) if answer else 0.0, their_tgt)
    assert out.total[0] == pytest.approx(want, abs=1e-9)


def test_known_values(preset):
    cols = {"src_lang": "eng_Latn", "tgt_lang": "deu_Latn"}
    empty = preset.score(["s"], [think("")], [REF_DE], **cols)
    assert empty.parts["format"] == [1.0] and empty.total == [-1.0]  # format passes, answer -2 (was -3)
    short = preset.score(["s"], [think("Guten Tag")], ["Guten Tag"], **cols)
    assert short.parts["bleu"] == [0.0]  # all four orders count: under 4 tokens is 0 (was 100)
    assert short.total[0] == pytest.approx(1 + 0.0 + 0.7123)
    assert preset(["s"], ["no tags at all"], [REF_DE], **cols) == [-3.0]
    normal = preset.score(["s"], [think("Die Katze sitzt auf der Matte.")], [REF_DE], **cols)
    assert normal.parts["comet_kiwi"] == [pytest.approx(0.8346)]  # their 2 decimals on the 0-100 scale
    assert normal.parts["bleu"][0] == round(normal.parts["bleu"][0], 2)


def test_trailing_remark_is_the_documented_departure(preset):
    """Their check ignores text outside the tags; our strict format fails it."""
    completion = think("Die Katze sitzt auf der Matte.") + " I hope this helps!"
    theirs = their_total(completion, REF_DE, KIWI["Die Katze sitzt auf der Matte."], "de")
    assert theirs > 1.0  # 1 + BLEU/100 + COMETKiwi there
    out = preset.score(["s"], [completion], [REF_DE], src_lang="eng_Latn", tgt_lang="deu_Latn")
    assert out.parts["format"] == [-1.0] and out.total == [-3.0]  # here


def test_empty_answer_total_holds_when_the_preset_is_nested(preset):
    combo = rewards.load(["mt-r1-zero", {"name": "chrf", "weight": 0.0}])
    out = combo.score(["s", "s"], [think(""), "junk"], [REF_DE] * 2, src_lang="eng_Latn", tgt_lang="deu_Latn")
    assert out.parts["mt-r1-zero"] == [-1.0, -3.0] and out.total == [-1.0, -3.0]


def test_bleu_effective_order_flag_matches_sacrebleu():
    hyps, refs = ["Guten Tag", "Die Katze sitzt auf der Matte."], ["Guten Tag", REF_DE]
    wrapped = [think(h) for h in hyps]
    plain = lexical.bleu(None, wrapped, refs, tgt_lang="deu_Latn", effective_order=False)
    assert plain == [pytest.approx(sacrebleu.corpus_bleu([h], [[r]]).score) for h, r in zip(hyps, refs)]
    assert plain[0] == 0.0
    default = lexical.bleu(None, wrapped, refs, tgt_lang="deu_Latn")
    assert default == [pytest.approx(sacrebleu.sentence_bleu(h, [r]).score) for h, r in zip(hyps, refs)]
    assert default[0] == pytest.approx(100.0)
    assert lexical.bleu(None, [think("")], ["x"], tgt_lang="deu_Latn", effective_order=False) == [0.0]
    # the Thai char tokenizer is kept for the variant too
    th = "สุนัขจิ้งจอกกระโดด"
    assert lexical.bleu(None, [think(th)], [th], tgt_lang="tha_Thai", effective_order=False) == [pytest.approx(100.0)]
