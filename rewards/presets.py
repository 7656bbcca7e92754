"""Reward presets: named recipes from the papers, plus a CPU-only default.

``r1t1`` (R1-T1, arXiv 2502.19735): ``0.2 * [format ok] + max(0, COMET)``, and 0
    when the format fails. Parts: ``format`` (1/0), ``comet`` (raw COMET,
    default Unbabel/wmt22-comet-da). The total is None only when the format
    holds and COMET could not score the sample.
``mt-r1-zero`` (MT-R1-Zero "Mix", arXiv 2504.10160), after ``compute_score`` in
    their ``verl/utils/reward_score/mt_score.py`` (github.com/fzp0424/MT-R1-Zero;
    reward_metric=Merge, reward_type=continuous, check_think=True, scale 100):
    format +1 / -1; answer ``BLEU/100 + COMETKiwi`` (CometKiwi's native 0-1
    scale, i.e. their score/100) when the format holds and the answer is not
    empty, else -2; total = format + answer. So a failed format totals -3 and an
    empty answer in a good format -1. Parts: ``format`` (+1/-1), ``bleu``
    (0-100), ``comet_kiwi`` (0-1, default Unbabel/wmt22-cometkiwi-da).
    Reproduced from their code:
    - BLEU is their ``compute_bleu``: ``sacrebleu.corpus_bleu([answer], [[ref]])``
      on one line, i.e. all four n-gram orders and no effective order (an
      answer under 4 tokens scores 0, where sentence BLEU with effective order
      gives a correct one 100), exp smoothing, no lowercasing, read back at 2
      decimals (they parse ``BLEU = 12.34`` out of the score's string).
    - COMETKiwi at 2 decimals on the 0-100 scale (their COMET-free worker's
      ``round(score * 100, 2)``), divided by 100.
    - An empty answer passes the format (their ``validate_response_structure``
      only counts and orders the four tags) and takes -2 on the answer.
    Departures, kept on purpose:
    - Tag: theirs ``<translate>``, ours ``<answer>``.
    - Format: ours is the strict form of :mod:`rewards.format` (text before
      ``<think>``, between the blocks or after ``</answer>`` fails); theirs
      needs each of ``<think> </think> <translate> </translate>`` exactly once
      and in order, and ignores any other text (their string is decoded with
      special tokens, so an end-of-turn token follows the answer). Cost: a
      completion with a remark after ``</answer>`` totals -3 here and
      ``1 + BLEU/100 + COMETKiwi`` there (about 1 to 3); the policy learns to
      stop at ``</answer>`` instead. Both fail missing, repeated or
      out-of-order tags (-3).
    - BLEU tokenizer: theirs is ``zh`` for a Chinese target, ``ja-mecab`` for
      Japanese, ``13a`` otherwise; ours is :func:`rewards.lexical.bleu_tokenizer`
      (the same for those, but also ``zh`` for Cantonese/Wu, ``ko-mecab`` for
      Korean, ``char`` for Thai, Khmer, Lao and Myanmar, ``char`` for Japanese
      without MeCab), so scores differ for those targets only.
    - A sample without a reference (they always have one): BLEU is None and the
      total uses COMETKiwi alone; None when neither scored it.
``chrf-format`` (this product's CPU default, no model needed):
    ``0.2 + 0.01 * chrF`` when the format holds, 0 when it fails (as R1-T1),
    plus ``copy_guard + lang_guard + length_guard`` (each 0 or -1). chrF/100
    keeps the metric on the scale R1-T1 uses for COMET; the format term pays
    0.2 as in R1-T1; a guard hit (-1) outweighs any chrF gain, so copying the
    source, answering in the wrong language or running away never pays. chrF is
    gated on the format because, scored on a lenient parse, a mis-tagged
    completion (``...</think><answer>draft</think><answer>final</answer>``)
    earned *more* chrF than a clean one (chrF weights recall twice), and the toy
    GRPO runs learned to write such completions.

``bleu-format``: chrf-format with sentence BLEU in place of chrF.
``chrf-format-coverage``: chrf-format plus ``COVERAGE_WEIGHT`` x the reasoning's source
    coverage (rewards/reasoning.py) when the format holds: a reward on the reasoning as
    well as the answer.

Every preset takes ``comet_model``, ``comet_batch_size``, ``comet_gpus`` (None =
the COMET reward's default) so the trainer can pass its config through.
"""
from __future__ import annotations

from functools import partial

from rewards.base import PARSED, RewardBreakdown, batch_size, parses
from rewards.combine import Combination, Part
from rewards.format import format_reward
from rewards.guards import copy_guard, lang_guard, length_guard
from rewards.lexical import bleu, chrf
from rewards.reasoning import source_coverage


def _comet_kwargs(comet_model, comet_batch_size, comet_gpus) -> dict:
    kwargs = {"model": comet_model, "batch_size": comet_batch_size, "gpus": comet_gpus}
    return {k: v for k, v in kwargs.items() if v is not None}


def _metric_format(metric: str, fn, coverage_weight: float = 0.0) -> Combination:
    """``0.2 + 0.01 * metric`` (a 0-100 metric) when the strict format holds, else 0, plus the
    three guards; with ``coverage_weight``, plus that times the reasoning's source coverage
    (rewards/reasoning.py) when the format holds. The metric is gated on the format because a
    mis-tagged completion scored on a lenient parse earns more than a clean one."""
    guards = ("copy_guard", "lang_guard", "length_guard")

    def total(v: dict[str, list]) -> list[float | None]:
        out = []
        covered = v.get("source_coverage") or [None] * len(v["format"])
        for i, (m, fmt, cov) in enumerate(zip(v[metric], v["format"], covered)):
            penalty = sum(v[g][i] or 0.0 for g in guards)
            if not fmt:
                out.append(penalty)
            else:
                out.append(None if m is None else 0.2 * fmt + 0.01 * m + coverage_weight * (cov or 0.0) + penalty)
        return out

    parts = [Part(metric, 0.01, fn), Part("format", 0.2, format_reward), *(Part(g, 1.0, f) for g, f in
             zip(guards, (copy_guard, lang_guard, length_guard)))]
    if coverage_weight:
        parts.append(Part("source_coverage", coverage_weight, source_coverage))
    return Combination(parts, total_fn=total, name=f"{metric}-format" + ("-coverage" if coverage_weight else ""))


def chrf_format(comet_model=None, comet_batch_size=None, comet_gpus=None) -> Combination:
    return _metric_format("chrf", chrf)


# chrf-format-coverage's weight: full coverage adds 0.1, what 10 chrF points add; the answer stays the main term
COVERAGE_WEIGHT = 0.1


def chrf_format_coverage(comet_model=None, comet_batch_size=None, comet_gpus=None) -> Combination:
    """chrf-format plus COVERAGE_WEIGHT x the reasoning's source coverage when the format holds:
    the optional reasoning reward of issue 14 (Hunyuan-MT: answer-only rewards make reasoning generic)."""
    return _metric_format("chrf", chrf, COVERAGE_WEIGHT)


def bleu_format(comet_model=None, comet_batch_size=None, comet_gpus=None) -> Combination:
    """chrf-format with sentence BLEU: the other CPU-only reward a reward experiment compares."""
    return _metric_format("bleu", bleu)


def r1t1(comet_model=None, comet_batch_size=None, comet_gpus=None) -> Combination:
    from rewards.comet import CometReward

    comet = CometReward(**_comet_kwargs(comet_model, comet_batch_size, comet_gpus))

    def total(v: dict[str, list]) -> list[float | None]:
        out = []
        for fmt, c in zip(v["format"], v["comet"]):
            if not fmt:
                out.append(0.0)
            else:
                out.append(None if c is None else 0.2 * fmt + max(0.0, c))
        return out

    return Combination([Part("format", 0.2, format_reward), Part("comet", 1.0, comet)], total_fn=total, name="r1t1")


class _MtR1Zero(Combination):
    """MT-R1-Zero's total also needs to know which answers are empty (-2 on the
    answer, format still +1), which the parts alone cannot say (BLEU and COMETKiwi
    score an empty answer 0, as they may score a real one)."""

    def score(self, sources, hypotheses, references, **columns) -> RewardBreakdown:
        parsed = parses(hypotheses, columns)  # parsed once here, shared with the parts
        answered = [bool(p.answer) for p in parsed]
        inner = Combination(self.parts, total_fn=partial(_mt_r1_zero_total, answered=answered), name=self.name)
        return inner.score(sources, hypotheses, references, **{**columns, PARSED: parsed})


def _mt_r1_zero_total(v: dict[str, list], answered: list[bool]) -> list[float | None]:
    """Their ``compute_score``: ``format_score + answer_score``, answer -2 unless
    the format holds and the answer is not empty."""
    out = []
    for fmt, b, k, has_answer in zip(v["format"], v["bleu"], v["comet_kiwi"], answered):
        if fmt < 0 or not has_answer:
            out.append(fmt - 2.0)
        elif b is None and k is None:
            out.append(None)
        else:
            out.append(fmt + (b or 0.0) / 100.0 + (k or 0.0))
    return out


def mt_r1_zero_format(sources, hypotheses, references, **columns) -> list[float | None]:
    """+1 / -1: our strict format, except that an empty answer passes (as in their
    ``validate_response_structure``); the total then takes -2 on the answer."""
    batch_size(sources, hypotheses, references)
    return [1.0 if isinstance(h, str) and p.error in (None, "empty answer") else -1.0
            for h, p in zip(hypotheses, parses(hypotheses, columns))]


def mt_r1_zero_bleu(sources, hypotheses, references, **columns) -> list[float | None]:
    """Their ``compute_bleu``: ``corpus_bleu`` of one line (no effective order), at 2 decimals."""
    scores = bleu(sources, hypotheses, references, effective_order=False, **columns)
    return [None if s is None else float(f"{s:.2f}") for s in scores]


def _kiwi_two_decimals(kiwi):
    """Their COMET-free worker keeps ``round(score * 100, 2)``; the preset divides by 100 again."""
    def comet_kiwi(sources, hypotheses, references, **columns) -> list[float | None]:
        return [None if s is None else round(float(s) * 100, 2) / 100
                for s in kiwi(sources, hypotheses, references, **columns)]

    comet_kiwi.scorer = kiwi
    return comet_kiwi


def mt_r1_zero(comet_model=None, comet_batch_size=None, comet_gpus=None) -> Combination:
    from rewards.comet import CometKiwiReward

    kiwi = CometKiwiReward(**_comet_kwargs(comet_model, comet_batch_size, comet_gpus))
    return _MtR1Zero([
        Part("format", 1.0, mt_r1_zero_format),
        Part("bleu", 0.01, mt_r1_zero_bleu),
        Part("comet_kiwi", 1.0, _kiwi_two_decimals(kiwi)),
    ], total_fn=_mt_r1_zero_total, name="mt-r1-zero")  # .score binds the total to the batch's empty answers


PRESETS = {"chrf-format": chrf_format, "chrf-format-coverage": chrf_format_coverage, "bleu-format": bleu_format, "r1t1": r1t1, "mt-r1-zero": mt_r1_zero}
# The registry name of the COMET reward each preset builds above, so ``rewards.check`` (the dry run)
# can check its model without building the preset.
PRESET_COMET = {"r1t1": "comet", "mt-r1-zero": "comet_kiwi"}
