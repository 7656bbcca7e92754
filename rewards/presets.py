"""Reward presets: named recipes from the papers, plus a CPU-only default.

``r1t1`` (R1-T1, arXiv 2502.19735): ``0.2 * [format ok] + max(0, COMET)``, and 0
    when the format fails. Parts: ``format`` (1/0), ``comet`` (raw COMET,
    default Unbabel/wmt22-comet-da). The total is None only when the format
    holds and COMET could not score the sample.
``mt-r1-zero`` (MT-R1-Zero "Mix", arXiv 2504.10160): format +1 / -1; answer
    reward ``BLEU/100 + COMETKiwi`` (CometKiwi's native 0-1 scale, i.e. the
    paper's COMETKiwi/100) when the format holds, -2 when it fails; total =
    format + answer (so a failed format totals -3). Parts: ``format`` (+1/-1),
    ``bleu`` (0-100), ``comet_kiwi`` (raw, default Unbabel/wmt22-cometkiwi-da).
    The paper's answer tag is ``<translate>``; here it is our ``<answer>``.
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

Every preset takes ``comet_model``, ``comet_batch_size``, ``comet_gpus`` (None =
the COMET reward's default) so the trainer can pass its config through.
"""
from __future__ import annotations

from functools import partial

from rewards.combine import Combination, Part
from rewards.format import format_reward
from rewards.guards import copy_guard, lang_guard, length_guard
from rewards.lexical import bleu, chrf


def _comet_kwargs(comet_model, comet_batch_size, comet_gpus) -> dict:
    kwargs = {"model": comet_model, "batch_size": comet_batch_size, "gpus": comet_gpus}
    return {k: v for k, v in kwargs.items() if v is not None}


def chrf_format(comet_model=None, comet_batch_size=None, comet_gpus=None) -> Combination:
    def total(v: dict[str, list]) -> list[float | None]:
        out = []
        for c, fmt, *guards in zip(v["chrf"], v["format"], v["copy_guard"], v["lang_guard"], v["length_guard"]):
            penalty = sum(g or 0.0 for g in guards)
            if not fmt:
                out.append(penalty)
            else:
                out.append(None if c is None else 0.2 * fmt + 0.01 * c + penalty)
        return out

    return Combination([
        Part("chrf", 0.01, chrf),
        Part("format", 0.2, format_reward),
        Part("copy_guard", 1.0, copy_guard),
        Part("lang_guard", 1.0, lang_guard),
        Part("length_guard", 1.0, length_guard),
    ], total_fn=total, name="chrf-format")


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


def mt_r1_zero(comet_model=None, comet_batch_size=None, comet_gpus=None) -> Combination:
    from rewards.comet import CometKiwiReward

    kiwi = CometKiwiReward(**_comet_kwargs(comet_model, comet_batch_size, comet_gpus))

    def total(v: dict[str, list]) -> list[float | None]:
        out = []
        for fmt, b, k in zip(v["format"], v["bleu"], v["comet_kiwi"]):
            if fmt < 0:
                out.append(fmt - 2.0)
            elif b is None and k is None:
                out.append(None)
            else:
                out.append(fmt + (b or 0.0) / 100.0 + (k or 0.0))
        return out

    return Combination([
        Part("format", 1.0, partial(format_reward, ok=1.0, fail=-1.0)),
        Part("bleu", 0.01, bleu),
        Part("comet_kiwi", 1.0, kiwi),
    ], total_fn=total, name="mt-r1-zero")


PRESETS = {"chrf-format": chrf_format, "r1t1": r1t1, "mt-r1-zero": mt_r1_zero}
