"""Lexical metrics through sacrebleu: sentence-level rewards for training, corpus-level for evaluation.

Sentence rewards return sacrebleu's own scale (0-100), so a logged ``chrf`` is
the number a user knows; presets divide by 100 through their weights.

BLEU's tokenizer follows the target language's script (the FLORES-200 code
says it): as sacrebleu recommends, ``zh`` for Chinese (Hans, Hant: Chinese and
Cantonese), ``ja-mecab`` for Japanese, ``ko-mecab`` for Korean; ``char`` for
Thai, Khmer, Lao, Myanmar (Burmese, Shan) and Tibetan (Tibetan, Dzongkha);
``13a`` otherwise. Those scripts put no spaces between words, so ``13a`` makes a few phrase-sized tokens of a sentence
and one changed character costs a whole phrase (on FLORES Thai lines, sentence
BLEU 30-81 with ``13a``, above 92 with ``char``). The name chosen is reported
as ``bleu_tokenizer`` and in the BLEU signature (``tok:char``). If MeCab is
not installed (``pip install "sacrebleu[ja,ko]"``) we fall back to ``char``
(ja) / ``13a`` (ko) with a logged notice, and the signature says so. A target
code no table knows gets ``13a`` with a one-time notice
(:func:`bleu_tokenizer_support` says per language what is used and why).
sacrebleu's flores101/flores200 SPM tokenizers download their model on first
use, so spBLEU here only takes a local SentencePiece model file
(``spm_model=path``); pieces are produced exactly as sacrebleu's TokenizerSPM
does and scored with ``tokenize="none"``.

Speed: one metric object per (metric, tokenizer) is reused (sacrebleu's
``sentence_chrf`` builds a new one per call: 1.6x slower), and identical
(hypothesis, reference) pairs in a batch (common in GRPO groups) are scored
once. A process pool was measured and dropped: on the 2-core CI machine it was
slower (spawn start-up, cores already busy with generation); rl/bench/rewards.py
prints the figures.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from functools import lru_cache

from sacrebleu.metrics import BLEU, CHRF

from rewards.base import answers, batch_size, column
from rewards.languages import is_toy, language, notice_once, script

log = logging.getLogger("rewards")

_SCRIPT_TOKENIZERS = {"Hans": "zh", "Hant": "zh", "Jpan": "ja-mecab", "Hang": "ko-mecab",
                      "Thai": "char", "Khmr": "char", "Laoo": "char", "Mymr": "char", "Tibt": "char"}
_MECAB_FALLBACK = {"ja-mecab": "char", "ko-mecab": "13a"}


@lru_cache(maxsize=4096)
def bleu_tokenizer_support(tgt_lang: str | None) -> tuple[str, str]:
    """(tokenizer sacrebleu should use, why) for a target language, before MeCab's availability is checked."""
    lang, scr = language(tgt_lang), script(tgt_lang)
    if lang is None:
        what = "no target language" if not tgt_lang else "toy language" if is_toy(tgt_lang) else "unknown language code"
        return "13a", f"{what} {tgt_lang!r}: 13a, the tokenizer for space-separated scripts"
    tok = _SCRIPT_TOKENIZERS.get(scr, "13a")
    if tok == "char":
        return tok, f"{lang.name} ({lang.flores200}): the {scr} script puts no spaces between words"
    if tok != "13a":
        return tok, f"{lang.name} ({lang.flores200}): sacrebleu's tokenizer for the {scr} script"
    return tok, f"{lang.name} ({lang.flores200}): words separated by spaces ({scr} script)"


def bleu_tokenizer(tgt_lang: str | None) -> str:
    """sacrebleu tokenizer name for a target language (any code rl.core.languages resolves); an unknown code
    gets 13a with a one-time notice."""
    wanted, why = bleu_tokenizer_support(tgt_lang)
    if tgt_lang and language(tgt_lang) is None and not is_toy(tgt_lang):
        notice_once("bleu_tokenizer", tgt_lang, f"BLEU tokenizer: {why}")
    return _available(wanted)


@lru_cache(maxsize=None)
def _available(tokenize: str) -> str:
    if tokenize not in _MECAB_FALLBACK:
        return tokenize
    try:
        BLEU(tokenize=tokenize)
    except (ImportError, RuntimeError) as exc:
        fallback = _MECAB_FALLBACK[tokenize]
        log.warning("BLEU tokenizer %s unavailable (%s); using %s. Install it with: pip install 'sacrebleu[ja,ko]'",
                    tokenize, exc, fallback)
        return fallback
    return tokenize


@lru_cache(maxsize=None)
def _metric(kind: str, tokenize: str = "13a"):
    if kind == "chrf":
        return CHRF()
    if kind == "chrfpp":
        return CHRF(word_order=2)
    if kind == "bleu":
        return BLEU(tokenize=tokenize, effective_order=True)  # effective order: sacrebleu's sentence_bleu default
    if kind == "bleu-noeff":
        return BLEU(tokenize=tokenize)  # all four orders, as corpus_bleu: under 4 tokens scores 0
    raise ValueError(f"unknown lexical metric {kind!r}")


@lru_cache(maxsize=4)
def _spm(path: str):
    import sentencepiece

    if not os.path.isfile(path):
        raise FileNotFoundError(f"SentencePiece model not found: {path} (spBLEU needs a local .model file)")
    return sentencepiece.SentencePieceProcessor(model_file=path)


def spm_pieces(text: str, spm_model: str) -> str:
    """What sacrebleu's TokenizerSPM produces, from a local model file (no download)."""
    return " ".join(_spm(str(spm_model)).encode(text, out_type=str))


def _score_pairs(kind: str, tokenize: str, pairs: list[tuple[str, str]]) -> list[float]:
    metric = _metric(kind, tokenize)
    if kind == "bleu-noeff":  # corpus_score of one line: sentence_score would warn on every call without eff. order
        return [metric.corpus_score([h], [[r]]).score for h, r in pairs]
    return [metric.sentence_score(h, [r]).score for h, r in pairs]


def _score_unique(kind: str, tokenize: str, pairs: list[tuple[str, str]]) -> list[float]:
    unique = list(dict.fromkeys(pairs))
    scored = dict(zip(unique, _score_pairs(kind, tokenize, unique)))
    return [scored[p] for p in pairs]


def _sentence_metric(kind: str, sources, hypotheses, references, *,
                     spm_model: str | None = None, **columns) -> list[float | None]:
    """Score each extracted answer against its reference. No answer -> 0.0; no reference -> None."""
    n = batch_size(sources, hypotheses, references)
    refs = list(references) if references is not None else [None] * n
    tgt = column(columns, "tgt_lang", n)
    out: list[float | None] = [None] * n
    groups: dict[str, list[int]] = {}
    hyp_text = answers(hypotheses, columns)
    for i, ans in enumerate(hyp_text):
        if not isinstance(refs[i], str) or not refs[i].strip():
            continue  # not scorable without a reference
        if not ans:
            out[i] = 0.0  # empty, tag-less or answer-less completion: defined as zero
            continue
        is_bleu = kind.startswith("bleu")
        tok = "none" if (is_bleu and spm_model) else (bleu_tokenizer(tgt[i]) if is_bleu else "13a")
        groups.setdefault(tok, []).append(i)
    for tok, idx in groups.items():
        pairs = [(hyp_text[i], refs[i]) for i in idx]
        if spm_model and kind.startswith("bleu"):
            pairs = [(spm_pieces(h, spm_model), spm_pieces(r, spm_model)) for h, r in pairs]
        try:
            scores = _score_unique(kind, tok, pairs)
        except Exception as exc:  # fall back to one at a time so one odd sample costs only itself
            log.warning("%s: batch scoring failed (%s); scoring samples one by one", kind, exc)
            scores = [_one(kind, tok, p) for p in pairs]
        for i, s in zip(idx, scores):
            out[i] = s
    return out


def _one(kind: str, tok: str, pair: tuple[str, str]) -> float | None:
    try:
        return _score_pairs(kind, tok, [pair])[0]
    except Exception as exc:
        log.warning("%s: sample not scorable (%s)", kind, exc)
        return None


def chrf(sources, hypotheses, references, **columns) -> list[float | None]:
    """Sentence chrF (sacrebleu defaults: char order 6, beta 2), 0-100."""
    return _sentence_metric("chrf", sources, hypotheses, references, **columns)


def chrfpp(sources, hypotheses, references, **columns) -> list[float | None]:
    """Sentence chrF++ (word order 2), 0-100."""
    return _sentence_metric("chrfpp", sources, hypotheses, references, **columns)


def bleu(sources, hypotheses, references, *, spm_model: str | None = None, effective_order: bool = True,
         **columns) -> list[float | None]:
    """Sentence BLEU, 0-100, tokenizer by ``tgt_lang``; spBLEU with a local ``spm_model``.

    ``effective_order=True`` (sacrebleu's ``sentence_bleu`` default) drops n-gram
    orders the hypothesis is too short to have, so a correct 1-3 token answer
    scores 100. ``False`` is ``sacrebleu.corpus_bleu([hyp], [[ref]])``: all four
    orders always count, so an answer under 4 tokens scores 0 (MT-R1-Zero's reward).
    """
    kind = "bleu" if effective_order else "bleu-noeff"
    return _sentence_metric(kind, sources, hypotheses, references, spm_model=spm_model, **columns)


def corpus_scores(hypotheses: Sequence[str | None], references: Sequence[str], tgt_lang: str | None = None,
                  spm_model: str | None = None) -> dict:
    """Corpus BLEU, chrF and chrF++ with their sacrebleu signatures (and spBLEU given a local SPM model).

    ``hypotheses`` are translations (run :func:`rl.core.parsing.extract_answer` on
    completions first); a None hypothesis counts as an empty translation.
    """
    if len(hypotheses) != len(references):
        raise ValueError(f"corpus_scores: {len(hypotheses)} hypotheses for {len(references)} references")
    for i, ref in enumerate(references):
        if not isinstance(ref, str):
            raise ValueError(f"corpus_scores: reference {i} is {ref!r}, not a string")
    hyps = [h if isinstance(h, str) else "" for h in hypotheses]
    refs = [list(references)]
    tokenize = bleu_tokenizer(tgt_lang)
    metrics = {"bleu": BLEU(tokenize=tokenize), "chrf": CHRF(), "chrfpp": CHRF(word_order=2)}
    result: dict = {"n": len(hyps), "bleu_tokenizer": tokenize, "signatures": {}}
    for name, metric in metrics.items():
        result[name] = metric.corpus_score(hyps, refs).score
        result["signatures"][name] = str(metric.get_signature())
    if spm_model:
        metric = BLEU(tokenize="none")
        pieces = [spm_pieces(h, spm_model) for h in hyps]
        result["spbleu"] = metric.corpus_score(pieces, [[spm_pieces(r, spm_model) for r in references]]).score
        name = os.path.splitext(os.path.basename(str(spm_model)))[0]
        result["signatures"]["spbleu"] = str(metric.get_signature()).replace("tok:none", f"tok:spm[{name}]")
    return result
