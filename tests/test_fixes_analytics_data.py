"""Fixes: the CoT labeler names the template a reasoning follows (toy CoTs and the
templates' own worked examples), format failures are their own ``cot/format_fail``
share, and FLORES-101's metadata beside dev/ and devtest/ gives context (a corpus
without any metadata warns once).

FLORES lines are copied at test time from the shared data into tmp_path:
FLORES-200, CC BY-SA 4.0, NLLB Team et al. 2022 (and Goyal et al. 2021, FLORES-101).
"""
from __future__ import annotations

import random
import warnings
from collections import Counter
from pathlib import Path

import pytest

import rl.core.data
from rl.core.analytics import FORMAT_FAIL, OTHER, CotLabeler, _step_labels
from rl.core.data import load_flores
from rl.core.parsing import parse_completion
from rl.core.prompts import TEMPLATE_NAMES, TEMPLATES_DIR, TemplateError, load_template, load_templates
from rl.tools.toy import SRC, TGT, make_documents, make_lexicon, make_think

TEMPLATES = load_templates()


@pytest.fixture(scope="module")
def labeler() -> CotLabeler:
    return CotLabeler(TEMPLATES)


def toy_cots(sentences: int = 30, seed: int = 0) -> list[tuple[str, str, str]]:
    """(template, direction source, think) for every template, both directions, each sentence."""
    rng = random.Random(seed)
    lex = make_lexicon(120, rng)
    cots = []
    for doc in make_documents(sentences, lex, rng, set()):
        for i, s in enumerate(doc):
            prev = doc[i - 1] if i else None
            cots += [(t, src, make_think(t, s, src, lex, prev, rng)) for src in (SRC, TGT) for t in TEMPLATE_NAMES]
    return cots


def test_the_six_templates_follow_r1t1s_released_chains():
    """6-7 steps each, as R1-T1's thought_chains; triangulating goes through an intermediate
    structure, not a pivot language (degenerate for x<->en); back-translation loops until
    aligned; every worked example takes each of its template's steps under a label."""
    assert sorted(TEMPLATES) == sorted(TEMPLATE_NAMES)
    for name, t in TEMPLATES.items():
        assert 6 <= len(t.steps) <= 7, (name, len(t.steps))
        assert len(_step_labels(t.example["think"])) >= len(t.steps), (name, _step_labels(t.example["think"]))
    assert TEMPLATES["triangulating"].pivot_language is None
    assert "intermediate structure" in " ".join(TEMPLATES["triangulating"].steps)
    assert "until" in TEMPLATES["back_translation"].steps[-1]


# ----------------------------------------------------------------------------- the labeler

@pytest.mark.parametrize("seed", [0, 1])
def test_labeler_names_the_template_of_toy_cots(labeler, seed):
    cots = toy_cots(seed=seed)
    assert len(cots) >= 300 and {(t, src) for t, src, _ in cots} == {(t, s) for t in TEMPLATE_NAMES for s in (SRC, TGT)}
    right = Counter(t for t, _, think in cots if labeler.label(think) == t)
    assert sum(right.values()) / len(cots) >= 0.9, right
    per_template = Counter(t for t, _, _ in cots)
    assert all(right[t] / per_template[t] >= 0.75 for t in TEMPLATE_NAMES), right  # none lost wholesale


def test_labeler_names_each_templates_worked_example(labeler):
    assert {name: labeler.label(t.example["think"]) for name, t in TEMPLATES.items()} == {n: n for n in TEMPLATES}


def test_labeler_leaves_generic_reasoning_as_other(labeler):
    for think in (None, "", "I will translate this sentence carefully into French.", "Okay, the answer is simple."):
        assert labeler.label(think) == OTHER
    # the worked examples' content words (a train, the snow) are no template's signature
    assert labeler.label("The train was two hours late because of the snow.") == OTHER


def test_labeler_without_templates_labels_everything_other():
    empty = CotLabeler({})
    assert empty.label("Draft: x. Back: y. Same.") == OTHER and empty.labels == [OTHER, FORMAT_FAIL]


def test_template_keywords_are_optional_and_checked(tmp_path):
    assert all(t.keywords for t in TEMPLATES.values())  # the shipped six carry their step vocabulary
    text = (TEMPLATES_DIR / "explanation.yaml").read_text(encoding="utf-8")
    plain = "\n".join(line for line in text.splitlines() if not line.startswith("keywords:"))
    (tmp_path / "plain.yaml").write_text(plain, encoding="utf-8")
    assert load_template(tmp_path / "plain.yaml").keywords == ()
    (tmp_path / "bad.yaml").write_text(plain + "\nkeywords: idiom\n", encoding="utf-8")
    with pytest.raises(TemplateError, match="keywords"):
        load_template(tmp_path / "bad.yaml")


# ----------------------------------------------------------------------------- format failures

def test_a_broken_completion_is_format_fail_not_its_reasoning(labeler):
    think = TEMPLATES["back_translation"].example["think"]
    good, broken = parse_completion(f"<think>{think}</think><answer>x</answer>"), parse_completion(f"<think>{think}</think>x")
    assert labeler.label_completion(good) == "back_translation"
    assert not broken.ok and labeler.label_completion(broken) == FORMAT_FAIL


def test_drain_shares_cover_every_completion_format_fail_included(labeler):
    from rl.learn.grpo import StepStats

    stats = StepStats()
    stats.cot_labels = ["structural", "structural", OTHER, FORMAT_FAIL, FORMAT_FAIL, "hierarchical", FORMAT_FAIL, OTHER]
    stats.format_ok = [label != FORMAT_FAIL for label in stats.cot_labels]
    out = stats.drain(labeler)
    shares = {k: v for k, v in out.items() if k.startswith("cot/")}
    assert set(shares) == {f"cot/{name}" for name in [*TEMPLATE_NAMES, OTHER, FORMAT_FAIL]}
    assert shares["cot/format_fail"] == pytest.approx(3 / 8) == pytest.approx(1 - out["format_ok"])
    assert (shares["cot/structural"], shares["cot/other"], shares["cot/hierarchical"]) == (2 / 8, 2 / 8, 1 / 8)
    assert sum(shares.values()) == pytest.approx(1.0)
    assert not any(k.startswith("cot/") for k in stats.drain(labeler))  # drained: the next step starts afresh


def test_reward_function_counts_broken_completions_as_format_fail(labeler):
    from rewards.base import RewardBreakdown
    from rl.learn.grpo import StepStats, make_reward_func

    class Fixed:
        def score(self, sources, hypotheses, references, **columns):
            return RewardBreakdown(total=[0.5] * len(hypotheses), parts={})

    think = TEMPLATES["back_translation"].example["think"]
    stats = StepStats()
    fn = make_reward_func(Fixed(), think_prefill=True, stats=stats, labeler=labeler)
    fn(prompts=["p"] * 3, completions=[f"{think}</think><answer>a</answer>", f"{think}</think>a", ""],
       source=["s"] * 3, reference=["r"] * 3)
    assert stats.cot_labels == ["back_translation", FORMAT_FAIL, FORMAT_FAIL]
    out = stats.drain(labeler)
    assert out["cot/format_fail"] == pytest.approx(2 / 3) and out["cot/other"] == 0.0


# ----------------------------------------------------------------------------- FLORES-101 metadata

def _lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def flores(data_dir) -> Path:
    return data_dir / "flores200"


def _flores101(flores: Path, dst: Path, n: int = 6, metadata: bool = True) -> Path:
    """FLORES-101's layout: ``devtest/<101 code>.devtest`` and ``metadata_devtest.tsv`` beside it."""
    (dst / "devtest").mkdir(parents=True)
    for name, real in {"eng.devtest": "eng_Latn", "zho_simpl.devtest": "zho_Hans"}.items():
        text = "\n".join(_lines(flores / "devtest" / f"{real}.devtest")[:n]) + "\n"
        (dst / "devtest" / name).write_text(text, encoding="utf-8")
    if metadata:  # header + one row per sentence
        rows = _lines(flores / "metadata" / "metadata_devtest.tsv")[: n + 1]
        (dst / "metadata_devtest.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return dst


def test_flores101_metadata_beside_the_splits_gives_context(flores, tmp_path):
    root = _flores101(flores, tmp_path / "flores101_dataset")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # metadata found: no warning
        got = load_flores(root, "en-zh,zh-en")
    want = load_flores(flores, "en-zh,zh-en", limit=6)  # FLORES-200 layout: metadata/metadata_devtest.tsv
    assert [(e.source, e.reference, e.context) for e in got] == [(e.source, e.reference, e.context) for e in want]
    assert any(e.context for e in got) and got[0].context is None


def test_flores_without_metadata_warns_once(flores, tmp_path, monkeypatch):
    monkeypatch.setattr(rl.core.data, "_warned_no_context", False)
    root = _flores101(flores, tmp_path / "bare", metadata=False)
    with pytest.warns(UserWarning, match="metadata_devtest.tsv") as caught:
        got = load_flores(root, "en-zh")
    assert len(caught) == 1 and all(e.context is None for e in got)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_flores(root, "zh-en")  # once per process
