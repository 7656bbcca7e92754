"""One parse per completion per step: the trainer's reward function parses each completion
once and shares the parse (column ``parsed``) with every reward part and the step stats;
the rewards and stats come out exactly as when each part parses for itself.
Fast: no engine, no COMET model (mt-r1-zero's COMETKiwi is a stub)."""
from __future__ import annotations

import sys
import types

import pytest

import rewards
import rl.core.parsing
from rewards.base import answers
from rewards.combine import Combination, Part
from rl.core.analytics import CotLabeler
from rl.core.parsing import parse_completion
from rl.core.prompts import load_templates
from rl.learn.grpo import StepStats, make_reward_func

SOURCE = "The cat sits on the mat today, and the dog sleeps by the door."
REF = "Die Katze sitzt heute auf der Matte, und der Hund schläft an der Tür."
THINK = "Context: a plain statement. Draft: Die Katze sitzt auf der Matte. Check: word order is fine."
GENERATED = [  # what the policy wrote after the prefilled <think>
    f"{THINK}</think><answer>Die Katze sitzt heute auf der Matte, und der Hund schläft.</answer>",
    f"{THINK}</think><answer>{SOURCE}</answer>",  # a copy of the source (copy/lang guards)
    f"{THINK}</think>Die Katze sitzt auf der Matte.",  # no answer block
    f"{THINK}</think><answer>draft</think><answer>Die Katze sitzt.</answer>",  # broken, lenient answer
    f"{THINK}</think><answer></answer>",  # empty answer (mt-r1-zero: format +1, answer -2)
    f"{THINK}</think><answer>Die Katze sitzt auf der",  # truncated
    f"{THINK}</think><answer>Die Katze sitzt auf der Matte.</answer> Hope this helps!",  # text after
    "",
]
N = len(GENERATED)
COLUMNS = dict(source=[SOURCE] * N, reference=[REF] * N, src_lang=["eng_Latn"] * N, tgt_lang=["deu_Latn"] * N,
               finish_reason=["stop"] * 5 + ["length"] + ["stop"] * 2)


class StubKiwi:
    """Stands in for rewards.comet.CometKiwiReward: same contract, a score from the answer's length."""

    def __init__(self, **kwargs):
        pass

    def __call__(self, sources, hypotheses, references, **columns):
        return [0.0 if not a else min(1.0, len(a) / 100) for a in answers(hypotheses, columns)]


@pytest.fixture
def counted(monkeypatch):
    """Counts every parse: ``parse_completion`` and ``strict_format_error`` (a parse of its own when
    called directly), patched in rl.core.parsing and in every loaded module that imported them by name."""
    calls = {"parse_completion": 0, "strict_format_error": 0}
    originals = {name: getattr(rl.core.parsing, name) for name in calls}

    def counting(name):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return originals[name](*args, **kwargs)
        return wrapper

    wrappers = {name: counting(name) for name in calls}
    ours = [m for key, m in list(sys.modules.items()) if key.split(".")[0] in ("rl", "rewards", __name__)]
    for module in ours:  # the project's modules only (others' lazy attributes would import on lookup)
        for name, original in originals.items():
            if vars(module).get(name) is original:
                monkeypatch.setattr(module, name, wrappers[name])
    return calls


@pytest.fixture
def stub_comet(monkeypatch):
    fake = types.ModuleType("rewards.comet")
    fake.CometKiwiReward = StubKiwi
    monkeypatch.setitem(sys.modules, "rewards.comet", fake)


def unshared(fn):
    """``fn`` behind a fixed signature: a part the combination cannot hand the shared parse
    (no ``**columns``), so it parses for itself, as every part did before sharing."""
    def part(sources, hypotheses, references, *, src_lang=None, tgt_lang=None, finish_reason=None):
        return fn(sources, hypotheses, references, src_lang=src_lang, tgt_lang=tgt_lang, finish_reason=finish_reason)
    return part


def without_sharing(reward: Combination) -> Combination:
    """The same reward with every part parsing for itself (nested combinations too)."""
    parts = [Part(p.name, p.weight, without_sharing(p.fn) if isinstance(p.fn, Combination) else unshared(p.fn))
             for p in reward.parts]
    return type(reward)(parts, total_fn=reward.total_fn, name=reward.name)


@pytest.mark.parametrize("spec", ["chrf-format", "mt-r1-zero", ["chrf", "format", "copy_guard", "chrf-format"]])
def test_reward_function_parses_each_completion_once(spec, counted, stub_comet):
    reward = rewards.load(spec)
    labeler = CotLabeler(load_templates())
    stats = StepStats()
    fn = make_reward_func(reward, think_prefill=True, stats=stats, labeler=labeler)
    totals = fn(prompts=["p"] * N, completions=GENERATED, **COLUMNS)
    assert counted == {"parse_completion": N, "strict_format_error": N}

    # the same rewards as with every part parsing for itself
    hyps = ["<think>" + g for g in GENERATED]
    kwargs = {k: COLUMNS[k] for k in ("src_lang", "tgt_lang", "finish_reason")}
    before = without_sharing(reward).score(COLUMNS["source"], hyps, COLUMNS["reference"], **kwargs)
    assert counted["parse_completion"] > 2 * N  # the baseline did parse again, part by part
    assert totals == before.total
    assert dict(stats.parts) == {k: [v for v in vals if v is not None] for k, vals in before.parts.items()}
    # and the same stats as the strict parse gave them
    strict = [parse_completion(h) for h in hyps]
    assert stats.format_ok == [p.ok for p in strict]
    assert stats.cot_labels == [labeler.label_completion(p) for p in strict]
    assert len(set(totals)) > 3 and len(set(stats.cot_labels)) > 1  # the batch tells the cases apart


def test_direct_score_parses_once_and_fixed_signature_parts_still_work(counted):
    seen = {}

    def named(sources, hypotheses, references, tgt_lang=None, parsed=None):
        seen["named"] = parsed
        return [1.0] * len(hypotheses)

    def fixed(sources, hypotheses, references, tgt_lang=None):
        seen["fixed"] = tgt_lang
        return [0.5] * len(hypotheses)

    combo = Combination([Part("chrf", 0.01, rewards.load("chrf")), Part("named", 1.0, named),
                         Part("fixed", 1.0, fixed)])
    hyps = ["<think>" + g for g in GENERATED]
    out = combo.score([SOURCE] * N, hyps, [REF] * N, tgt_lang="deu_Latn")
    assert counted["parse_completion"] == N
    assert [p.answer for p in seen["named"]] == [rl.core.parsing.extract_answer(h) for h in hyps]
    assert seen["fixed"] == "deu_Latn" and out.parts["fixed"] == [0.5] * N


def test_shared_column_of_wrong_length_is_refused():
    with pytest.raises(ValueError, match="'parsed' has 1 entries for a batch of 2"):
        rewards.load("format").score(["s", "s"], ["a", "b"], ["r", "r"], parsed=[parse_completion("a")])
