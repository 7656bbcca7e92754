"""The offline toy world (rl/tools/toy.py): deterministic bytes, a cache keyed by its
parameters, a language pair whose rules hold, data that the product's loaders and
parser accept, and a checkpoint that transformers and vLLM both load."""
from __future__ import annotations

import dataclasses
import json
import os
import random
import re

import pytest
import sacrebleu

from rl.core.config import ToyConfig
from rl.core.data import load_jsonl
from rl.core.parsing import parse_completion
from rl.core.prompts import TEMPLATE_NAMES, full_completion, render_completion, render_prompt
from rl.tools.toy import (
    Lexicon, Phrase, Sentence, build_toy_world, chat_messages, greedy_translate, init_unseen_embeddings, make_lexicon,
    make_textbook, make_think, make_stem_lexicon, plain_prompt, render_en, render_xx, render_yy, render_zz,
    split_dictionary_only,
    textbook_sequences, world_key,
)

SMALL = dict(train_sentences=300, test_sentences=30, pretrain_steps=15, vocab_words=60)


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# ----------------------------------------------------------------------------- build and cache
@pytest.fixture(scope="module")
def two_small_builds(tmp_path_factory):
    """The same small config built in two separate cache dirs."""
    worlds = []
    for name in ("a", "b"):
        cfg = ToyConfig(**SMALL, cache_dir=str(tmp_path_factory.mktemp(f"toy_{name}")))
        worlds.append(build_toy_world(cfg, progress=False))
    return worlds


def test_build_is_byte_identical(two_small_builds):
    a, b = two_small_builds
    assert a.root != b.root and a.root.name == b.root.name  # same key, different cache dirs
    files_a, files_b = a.manifest["files"], b.manifest["files"]
    assert files_a == files_b
    assert {"model/model.safetensors", "model/config.json", "model/tokenizer.json", "train.jsonl", "test.jsonl",
            "cot_sft.jsonl"} <= set(files_a)
    assert a.manifest_json.read_bytes() == b.manifest_json.read_bytes()


def test_cache_is_reused_and_keyed_by_parameters(two_small_builds, tmp_path):
    a, _ = two_small_builds
    before = {p: p.stat().st_mtime_ns for p in a.root.rglob("*")}
    again = build_toy_world(ToyConfig(**SMALL, cache_dir=str(a.root.parent)), progress=False)
    assert again.root == a.root
    assert {p: p.stat().st_mtime_ns for p in a.root.rglob("*")} == before  # nothing rebuilt
    assert not list(a.root.parent.glob("*.tmp-*"))  # no half-built world left behind
    base = ToyConfig(**SMALL)
    assert world_key(dataclasses.replace(base, cache_dir="elsewhere")) == world_key(base)
    for change in (dict(seed=1), dict(pretrain_steps=16), dict(hidden_size=256, num_heads=4)):
        assert world_key(dataclasses.replace(base, **change)) != world_key(base)


def test_relative_cache_dir_resolves_against_root(two_small_builds, tmp_path):
    a, _ = two_small_builds
    # A relative cache_dir under an explicit root: the world lands there (copy, not rebuild: same key).
    target = tmp_path / "cache" / a.root.name
    target.parent.mkdir()
    os.symlink(a.root, target)
    world = build_toy_world(ToyConfig(**SMALL, cache_dir="cache"), root=tmp_path, progress=False)
    assert world.root == target


def test_unseen_tokens_get_embeddings_like_the_trained_ones(two_small_builds):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    world = two_small_builds[0]
    tok = AutoTokenizer.from_pretrained(world.model_dir)
    weights = []
    for _ in range(2):
        model = AutoModelForCausalLM.from_pretrained(world.model_dir, dtype=torch.float32)
        emb = model.get_input_embeddings().weight
        tag = tok.convert_tokens_to_ids("<answer>")
        with torch.no_grad():
            emb[tag] = 0
        init_unseen_embeddings(model, tok, ("<answer>",), seed=3)
        weights.append(emb[tag].detach().clone())
    assert torch.equal(weights[0], weights[1])  # seeded
    others = torch.cat([emb[:tag], emb[tag + 1:]]).norm(dim=1)
    assert 0.3 * others.mean() < weights[0].norm() < 3 * others.mean()


def test_bad_model_shape_fails_clearly(tmp_path):
    with pytest.raises(ValueError, match=r"toy.hidden_size / toy.num_heads .* 64 / 2"):
        build_toy_world(ToyConfig(**{**SMALL, "hidden_size": 64, "num_heads": 2}, cache_dir=str(tmp_path)),
                        progress=False)
    with pytest.raises(ValueError, match="toy.vocab_words"):
        build_toy_world(ToyConfig(**{**SMALL, "vocab_words": 1000}, cache_dir=str(tmp_path)), progress=False)
    with pytest.raises(ValueError, match="toy.reasoning must be one of .* got 'drafts'"):
        build_toy_world(ToyConfig(**{**SMALL, "reasoning": "drafts"}, cache_dir=str(tmp_path)), progress=False)
    with pytest.raises(ValueError, match=r"toy.dictionary_only_words must be in \[0, 1\), got 1.0"):
        build_toy_world(ToyConfig(**{**SMALL, "dictionary_only_words": 1.0}, cache_dir=str(tmp_path)), progress=False)
    with pytest.raises(ValueError, match=r"toy.copy_drills must be in \[0, 1\), got -0.5"):
        build_toy_world(ToyConfig(**{**SMALL, "copy_drills": -0.5}, cache_dir=str(tmp_path)), progress=False)
    with pytest.raises(ValueError, match=r"toy.textbook_per_pair must be >= 0, got -1"):
        build_toy_world(ToyConfig(**{**SMALL, "textbook_per_pair": -1}, cache_dir=str(tmp_path)), progress=False)
    assert not list(tmp_path.iterdir())  # refused before any work


# ----------------------------------------------------------------------------- the language pair
LEX = Lexicon(nouns={"cat": "miro", "dog": "vana", "box": "zeka"}, verbs_t={"chase": "polu"},
              verbs_i={"cry": "dabi"}, adjs={"big": "tasu"}, advs={"quickly": "bise"})


def test_grammar_rules():
    s = Sentence(Phrase("cat", True, "big"), "chase", True, Phrase("dog", False, None), "quickly")
    assert render_en(s) == "the big cats quickly chased the dog"
    assert render_xx(s, LEX) == "miro-li tasu vana-ko bise polu-ta"  # SOV, adj after noun, suffixes
    s = Sentence(Phrase("box", False, None), "chase", False, Phrase("box", True, "big"), None)
    assert render_en(s) == "the box chases the big boxes"
    assert render_xx(s, LEX) == "zeka zeka-li-ko tasu polu-ru"
    s = Sentence(Phrase("dog", True, None), "cry", True, None, None)
    assert (render_en(s), render_xx(s, LEX)) == ("the dogs cried", "vana-li dabi-ta")


def test_toy_yish_grammar_and_stems():
    """The pivot world's third language: V Adv S O, adjective first, its own suffixes and stems."""
    lex = make_lexicon(120, random.Random(0))
    ylex = make_stem_lexicon(lex, random.Random(1))
    y = {en: ylex.xx(en) for en in ("cat", "big", "chase", "dog", "quickly", "cry")}
    s = Sentence(Phrase("cat", True, "big"), "chase", True, Phrase("dog", False, None), "quickly")
    assert render_yy(s, ylex) == f"{y['chase']}-ki {y['quickly']} {y['big']} {y['cat']}-ne {y['dog']}-po"
    s = Sentence(Phrase("dog", False, None), "cry", False, None, None)
    assert render_yy(s, ylex) == f"{y['cry']}-sa {y['dog']}"
    xx = {x for t in dataclasses.astuple(lex) for x in t.values()}
    yy = [x for t in dataclasses.astuple(ylex) for x in t.values()]
    assert len(yy) == len(set(yy)) == 120 and not xx & set(yy)
    assert [list(t) for t in dataclasses.astuple(ylex)] == [list(t) for t in dataclasses.astuple(lex)]


def test_a_pivot_world_pairs_xish_with_yish_and_reasons_through_english(tmp_path):
    """toy.pivot_pairs: SFT, RL and test pairs are Xish <-> Yish (a direction the base never saw);
    the CoT's thinking is the sentence in Toy English; the manifest probes all six directions."""
    world = build_toy_world(ToyConfig(**SMALL, pivot_pairs=20, rl_sentences=10, cache_dir=str(tmp_path)),
                            progress=False)
    train, test, rl, cot = (read_jsonl(p) for p in (world.train_jsonl, world.test_jsonl, world.rl_jsonl,
                                                    world.cot_sft_jsonl))
    assert (len(train), len(test), len(rl), len(cot)) == (40, 60, 20, 40)
    for rows in (train, test, rl, cot):
        assert {(r["src_lang"], r["tgt_lang"]) for r in rows} == {("toy_xx", "toy_yy"), ("toy_yy", "toy_xx")}
    grammar = json.loads(world.grammar_json.read_text())
    en_of = {v: k for t in grammar["lexicon"].values() for k, v in t.items()}
    for row in cot:
        think, answer = re.fullmatch(r"<think>Toy English: (.*)\.</think><answer>(.*)</answer>", row["completion"]).groups()
        xx = row["source"] if row["src_lang"] == "toy_xx" else row["reference"]
        assert answer == row["reference"] and row["template"] == "triangulating"
        for lemma in (en_of[w.split("-")[0]] for w in xx.split()):  # the same sentence in English
            assert any(w.startswith(lemma.removesuffix("y")) for w in think.split()), (lemma, think)
    sources = {r["source"] for r in train} | {r["source"] for r in test} | {r["source"] for r in rl}
    assert len(sources) == 2 * (20 + 30 + 10)  # disjoint splits
    assert set(world.manifest["pretrain"]["probe_chrf"]) == {
        "toy_en-toy_xx", "toy_xx-toy_en", "toy_en-toy_yy", "toy_yy-toy_en", "toy_xx-toy_yy", "toy_yy-toy_xx"}


def test_toy_zish_grammar_and_stems():
    """The unseen language: S V Adv O, adjective after noun, suffixes and stems of its own."""
    lex = make_lexicon(120, random.Random(0))
    ylex = make_stem_lexicon(lex, random.Random(1))
    zlex = make_stem_lexicon(lex, random.Random(2), ylex)
    z = {en: zlex.xx(en) for en in ("cat", "big", "chase", "dog", "quickly", "cry")}
    s = Sentence(Phrase("cat", True, "big"), "chase", True, Phrase("dog", False, None), "quickly")
    assert render_zz(s, zlex) == f"{z['cat']}-ma {z['big']} {z['chase']}-de {z['quickly']} {z['dog']}-gu"
    assert render_zz(Sentence(Phrase("dog", False, None), "cry", False, None, None), zlex) == f"{z['dog']} {z['cry']}-vo"
    stems = [{x for t in dataclasses.astuple(lx) for x in t.values()} for lx in (lex, ylex, zlex)]
    assert len(stems[2]) == 120 and not stems[2] & (stems[0] | stems[1])


def test_an_unseen_language_is_pretrained_with_english_and_tested_but_never_paired(tmp_path):
    """toy.unseen_language: Toy Zish joins pre-training (with English) and the test split (with
    Xish and Yish); SFT, RL and CoT records stay Xish <-> Yish, and the Xish <-> Yish test pairs
    are the pivot world's own."""
    params = dict(**SMALL, pivot_pairs=20, rl_sentences=10)
    pivot = build_toy_world(ToyConfig(**params, cache_dir=str(tmp_path / "a")), progress=False)
    world = build_toy_world(ToyConfig(**params, unseen_language=True, cache_dir=str(tmp_path / "b")), progress=False)
    xy = {("toy_xx", "toy_yy"), ("toy_yy", "toy_xx")}
    for path in ("train_jsonl", "rl_jsonl", "cot_sft_jsonl"):
        assert {(r["src_lang"], r["tgt_lang"]) for r in read_jsonl(getattr(world, path))} == xy
    test = read_jsonl(world.test_jsonl)
    assert {(r["src_lang"], r["tgt_lang"]) for r in test} == xy | {
        ("toy_xx", "toy_zz"), ("toy_zz", "toy_xx"), ("toy_yy", "toy_zz"), ("toy_zz", "toy_yy")}
    assert [r for r in test if (r["src_lang"], r["tgt_lang"]) in xy] == read_jsonl(pivot.test_jsonl)
    assert {"toy_en-toy_zz", "toy_zz-toy_en", "toy_xx-toy_zz"} <= set(world.manifest["pretrain"]["probe_chrf"])
    zish = world.glossary["toy_zz"]
    for r in test:
        if r["src_lang"] == "toy_zz":  # every Zish stem is in its own lexicon
            assert all(w.split("-")[0] in zish for w in r["source"].split())
    with pytest.raises(ValueError, match="toy.unseen_language needs a pivot world"):
        build_toy_world(ToyConfig(**SMALL, unseen_language=True, cache_dir=str(tmp_path / "c")), progress=False)


def test_source_coverage_counts_a_gloss_the_reasoning_names(tmp_path):
    """With the toy world's glossary, a pivot CoT's English counts for the source words it
    translates (any inflection); a reasoning about another sentence does not."""
    from rl.core.analytics import source_coverage

    world = build_toy_world(ToyConfig(**SMALL, pivot_pairs=20, cache_dir=str(tmp_path)), progress=False)
    glossary = world.glossary
    assert set(glossary) == {"toy_xx", "toy_yy"}
    rows = read_jsonl(world.cot_sft_jsonl)
    for row in rows:
        think = re.search(r"<think>(.*)</think>", row["completion"]).group(1)
        assert source_coverage(row["source"], think, glossary[row["src_lang"]]) == 1.0, row
        assert source_coverage(row["source"], think) == 0.0  # no source word is quoted
    other = [source_coverage(a["source"], re.search(r"<think>(.*)</think>", b["completion"]).group(1),
                             glossary[a["src_lang"]]) for a, b in zip(rows, rows[2:] + rows[:2])]
    assert sum(other) / len(other) < 0.5  # another sentence's English glosses few of this one's words


def test_lexicon_is_seeded_and_unambiguous():
    a, b = make_lexicon(120, random.Random(3)), make_lexicon(120, random.Random(3))
    assert a == b and a != make_lexicon(120, random.Random(4))
    stems = [x for t in dataclasses.astuple(a) for x in t.values()]
    assert len(stems) == len(set(stems)) == 120
    assert all(re.fullmatch(r"([bdgklmnprstvz][aeiou]){2,3}", x) for x in stems)
    with pytest.raises(ValueError, match="vocab_words"):
        make_lexicon(5, random.Random(0))


def test_reasoning_is_true_to_the_grammar():
    """Every reasoning glosses the whole source in source order, then takes its template's step."""
    s = Sentence(Phrase("cat", True, "big"), "chase", True, Phrase("dog", False, None), "quickly")
    prev = Sentence(Phrase("box", False, None), "chase", False, Phrase("cat", False, None), None)
    rng = random.Random(0)
    gloss = "Gloss: big = tasu, cats = miro-li, quickly = bise, chased = polu-ta, dog = vana-ko. "
    think = {t: make_think(t, s, "toy_en", LEX, prev, rng) for t in TEMPLATE_NAMES}
    assert all(t.startswith(gloss) for t in think.values())
    step = {t: v[len(gloss):] for t, v in think.items()}
    assert step["structural"] == "S: the big cats. V: quickly chased. O: the dog. Order: S O V, adjective after noun."
    assert step["hierarchical"] == "Core: miro-li vana-ko polu-ta. Add: tasu, bise."
    assert step["triangulating"] == "Structure: S cat-PL big | O dog-OBJ | A quickly | V chase-PAST."
    assert step["context_aware"] == "Context: cat = miro, the object before, is the subject now."
    assert step["explanation"] == "Meaning: several big cats chased one dog, quickly."
    back = {t: make_think(t, s, "toy_xx", LEX, prev, rng) for t in TEMPLATE_NAMES}
    xx_gloss = "Gloss: miro-li = cats, tasu = big, vana-ko = dog, bise = quickly, polu-ta = chased. "
    assert all(t.startswith(xx_gloss) for t in back.values())
    assert back["structural"].endswith("S: miro-li tasu. O: vana-ko. V: bise polu-ta. Order: S V O, adjective first.")
    assert back["hierarchical"].endswith("Core: the cats chased the dog. Add: big, quickly.")
    assert back["triangulating"].endswith("Structure: S big cat-PL | A quickly | V chase-PAST | O dog-OBJ.")
    assert back["context_aware"].endswith("Context: miro = cat, the object before, is the subject now.")
    seen = set()
    for _ in range(40):  # a flawed draft is caught by the round trip; a good one is kept
        bt = make_think("back_translation", s, "toy_en", LEX, None, rng)[len(gloss):]
        draft, backtr, verdict = re.fullmatch(r"Draft: (.*)\. Back: (.*)\. (Same|Fix: plural|Fix: past)\.?", bt).groups()
        assert backtr == {"Same": "the big cats quickly chased the dog", "Fix: plural": "the big cat quickly chased the dog",
                          "Fix: past": "the big cats quickly chase the dog"}[verdict]
        assert (draft == "miro-li tasu vana-ko bise polu-ta") == (verdict == "Same")
        seen.add(verdict)
    assert seen == {"Same", "Fix: plural", "Fix: past"}


def test_reasoning_variants_end_with_the_whole_translation_as_a_draft():
    s = Sentence(Phrase("cat", True, "big"), "chase", True, Phrase("dog", False, None), "quickly")
    gloss = "Gloss: big = tasu, cats = miro-li, quickly = bise, chased = polu-ta, dog = vana-ko."
    draft = "Translation: miro-li tasu vana-ko bise polu-ta."
    assert make_think("hierarchical", s, "toy_en", LEX, None, random.Random(0), "gloss+draft") == f"{gloss} {draft}"
    assert make_think("hierarchical", s, "toy_en", LEX, None, random.Random(0), "templates+draft") == \
        f"{gloss} Core: miro-li vana-ko polu-ta. Add: tasu, bise. {draft}"
    assert make_think("explanation", s, "toy_xx", LEX, None, random.Random(0), "gloss+draft").endswith(
        "Translation: the big cats quickly chased the dog.")
    assert make_think("structural", s, "toy_en", LEX, None, random.Random(0), "interlinear") == \
        make_textbook(LEX, random.Random(1), 2, [s], interlinear=True)[1] == \
        f"Glossed Toy English: the big cats quickly chased the dog. {gloss} {draft}"


def test_dictionary_only_words_are_split_per_part_of_speech():
    lex = make_lexicon(120, random.Random(0))
    kept, held = split_dictionary_only(lex, 0.3, random.Random(1))
    for full, part in zip(dataclasses.astuple(lex), dataclasses.astuple(kept)):
        assert set(part) <= set(full) and len(part) >= 2
        assert len(full) - len(part) == min(round(len(full) * 0.3), len(full) - 2)
    assert set(held) == {w for t in dataclasses.astuple(lex) for w in t} - {w for t in dataclasses.astuple(kept) for w in t}
    assert split_dictionary_only(lex, 0.0, random.Random(1)) == (lex, [])


def test_a_world_with_dictionary_only_words_keeps_them_out_of_every_training_pair(tmp_path):
    cfg = ToyConfig(**SMALL, dictionary_only_words=0.3, gloss_as_answer=True, interlinear=True, reasoning="gloss+draft",
                    cache_dir=str(tmp_path))
    world = build_toy_world(cfg, progress=False)
    grammar = json.loads(world.grammar_json.read_text())
    held = set(grammar["dictionary_only"])
    stems = {grammar["lexicon"][table][w] for table in grammar["lexicon"] for w in grammar["lexicon"][table] if w in held}
    assert len(held) >= 10

    def xx_stems(rows):
        return {w.split("-")[0] for r in rows for w in (r["reference"] if r["tgt_lang"] == "toy_xx" else r["source"]).split()}

    train, test = read_jsonl(world.train_jsonl), read_jsonl(world.test_jsonl)
    assert not xx_stems(train) & stems  # in no training pair
    assert xx_stems(test) & stems  # but test sentences use them
    assert all("Translation: " in r["completion"] for r in read_jsonl(world.cot_sft_jsonl))
    probe = world.manifest["pretrain"]
    assert set(probe["gloss_probe_chrf"]) == {"toy_en", "toy_xx"} and set(probe["probe_chrf"]) == {"toy_en-toy_xx", "toy_xx-toy_en"}


def test_an_rl_split_adds_unseen_pairs_over_the_whole_lexicon_and_changes_nothing_else(tmp_path):
    """toy.rl_sentences: pairs for GRPO alone, drawn over the whole lexicon (dictionary-only words
    too), disjoint from every other split; every other file is the world without the split."""
    common = dict(**SMALL, dictionary_only_words=0.3, cache_dir=str(tmp_path))
    plain = build_toy_world(ToyConfig(**common), progress=False)
    split = build_toy_world(ToyConfig(**common, rl_sentences=40), progress=False)
    assert plain.rl_pairs is None and split.rl_pairs == split.rl_jsonl and plain.root != split.root
    files = dict(split.manifest["files"])
    assert files.pop("rl.jsonl") and files == plain.manifest["files"]
    rl = read_jsonl(split.rl_jsonl)
    assert len(rl) == 80 == split.manifest["sizes"]["rl_records"] and plain.manifest["sizes"]["rl_records"] == 0
    assert all(r["id"].startswith("toy-rl-") for r in rl)

    def en(rows):
        return {r["source"] for r in rows if r["src_lang"] == "toy_en"}

    assert len(en(rl)) == 40 and not en(rl) & (en(read_jsonl(split.train_jsonl)) | en(read_jsonl(split.test_jsonl)))
    grammar = json.loads(split.grammar_json.read_text())
    held = {grammar["lexicon"][t][w] for t in grammar["lexicon"] for w in grammar["lexicon"][t]
            if w in grammar["dictionary_only"]}
    assert {w.split("-")[0] for r in rl if r["tgt_lang"] == "toy_xx" for w in r["reference"].split()} & held
    with pytest.raises(ValueError, match="toy.rl_sentences"):
        build_toy_world(ToyConfig(**{**common, "rl_sentences": -1}), progress=False)


def test_gloss_as_answer_puts_the_answer_at_the_gloss(toy_world):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(toy_world.model_dir)
    docs = ["Glossed Toy English: the big cats. Gloss: big = tasu, cats = miro-li.", "Toy Xish grammar: S O V.",
            "Toy English: the big cats. Again: the big cats."]
    for gloss_as_answer in (False, True):
        (glossed, start), (rule, rule_start), (repeat, repeat_start) = textbook_sequences(tok, docs, gloss_as_answer)
        assert glossed[-1] == rule[-1] == tok.eos_token_id and rule_start == len(rule)  # a rule is context only
        assert tok.decode(glossed[start:-1]) == (" big = tasu, cats = miro-li." if gloss_as_answer else "")
        assert tok.decode(repeat[repeat_start:-1]) == (" the big cats." if gloss_as_answer else "")


def test_textbook_holds_grammar_glossaries_and_glossed_sentences():
    s = Sentence(Phrase("cat", True, "big"), "chase", True, Phrase("dog", False, None), "quickly")
    docs = make_textbook(LEX, random.Random(0), 64, [s])
    glossed = [d for d in docs if d.startswith("Glossed ")]
    assert docs[0].startswith("Toy Xish grammar") and 24 <= len(glossed) <= 40
    assert set(glossed) == {
        "Glossed Toy English: the big cats quickly chased the dog. Gloss: big = tasu, cats = miro-li, quickly = bise, "
        "chased = polu-ta, dog = vana-ko.",
        "Glossed Toy Xish: miro-li tasu vana-ko bise polu-ta. Gloss: miro-li = cats, tasu = big, vana-ko = dog, "
        "bise = quickly, polu-ta = chased."}
    assert not [d for d in make_textbook(LEX, random.Random(0), 64) if d.startswith("Glossed ")]
    other = Sentence(Phrase("box", False, None), "cry", False, None, None)
    docs = make_textbook(LEX, random.Random(0), 64, [s], gloss_only=[other], interlinear=True)
    assert {d for d in docs if d.startswith("Glossed ")} == {  # interlinear: a translation after a parallel sentence only
        "Glossed Toy English: the big cats quickly chased the dog. Gloss: big = tasu, cats = miro-li, quickly = bise, "
        "chased = polu-ta, dog = vana-ko. Translation: miro-li tasu vana-ko bise polu-ta.",
        "Glossed Toy Xish: miro-li tasu vana-ko bise polu-ta. Gloss: miro-li = cats, tasu = big, vana-ko = dog, "
        "bise = quickly, polu-ta = chased. Translation: the big cats quickly chased the dog.",
        "Glossed Toy English: the box cries. Gloss: box = zeka, cries = dabi-ru.",
        "Glossed Toy Xish: zeka dabi-ru. Gloss: zeka = box, dabi-ru = cries."}
    repeats = [d for d in make_textbook(LEX, random.Random(0), 64, [s], repeats=True) if " Again: " in d]
    assert len(repeats) == 8 and set(repeats) <= {  # one document in eight: copy practice
        "Toy English: the big cats quickly chased the dog. Again: the big cats quickly chased the dog.",
        "Toy Xish: miro-li tasu vana-ko bise polu-ta. Again: miro-li tasu vana-ko bise polu-ta."}
    docs = make_textbook(LEX, random.Random(0), 400, [s], gloss_only=[other], copy_drills=0.5)
    drills = [d for d in docs if " words: " in d]
    assert 150 <= len(drills) <= 200  # half of the 350 documents that are not grammar rules
    forms = {"Toy English": {"the", "big", "cats", "quickly", "chased", "dog", "box", "cries"},
             "Toy Xish": {"miro-li", "tasu", "vana-ko", "bise", "polu-ta", "zeka", "dabi-ru"}}
    for drill in drills:  # a random list of the pair's word forms, then the same list again
        lang, _, rest = drill.partition(" words: ")
        words, _, copy = rest.partition(". Again: ")
        assert copy == words + "." and 3 <= len(words.split()) <= 9 and set(words.split()) <= forms[lang]
    assert {d.partition(" words: ")[0] for d in drills} == set(forms)
    assert make_textbook(LEX, random.Random(0), 64, [s]) == make_textbook(LEX, random.Random(0), 64, [s], copy_drills=0)


def test_source_coverage_counts_the_source_words_a_reasoning_quotes():
    from rl.core.analytics import source_coverage

    s = Sentence(Phrase("cat", True, "big"), "chase", True, Phrase("dog", False, None), "quickly")
    for src in ("toy_en", "toy_xx"):
        source = render_en(s) if src == "toy_en" else render_xx(s, LEX)
        assert source_coverage(source, make_think("explanation", s, src, LEX, None, random.Random(0))) == 1.0
    assert source_coverage("the big cats quickly chased the dog", "Meaning: something happened.") == 0.0
    assert source_coverage("the big cats quickly chased the dog", "big = tasu, cats = miro-li") == 0.4  # 2 of 5 ('the' is no content word)
    assert source_coverage("miro-li tasu", "miro = cat") == 0.5  # a stem counts; 'tasu' is not quoted
    assert source_coverage("the a", "x") is None


# ----------------------------------------------------------------------------- the default world
def test_data_files_load_and_parse(toy_world):
    manifest = toy_world.manifest
    train, test = load_jsonl(toy_world.train_jsonl), load_jsonl(toy_world.test_jsonl)
    assert len(train) == manifest["sizes"]["train_records"] and len(test) == manifest["sizes"]["test_records"]
    assert {(e.src_lang, e.tgt_lang) for e in train} == {("toy_en", "toy_xx"), ("toy_xx", "toy_en")}
    assert len(load_jsonl(toy_world.train_jsonl, ["toy_en-toy_xx"])) == len(train) // 2
    assert any(e.context for e in train) and any(not e.context for e in train)
    assert all(3 <= len(e.source.split()) <= 8 for e in train if e.src_lang == "toy_en")
    train_en = {e.source for e in train if e.src_lang == "toy_en"}
    assert not train_en & {e.source for e in test if e.src_lang == "toy_en"}  # held-out sentences
    assert len({e.id for e in train}) == len(train)

    cot = read_jsonl(toy_world.cot_sft_jsonl)
    assert len(load_jsonl(toy_world.cot_sft_jsonl)) == len(cot) == manifest["sizes"]["cot_records"]
    assert {c["template"] for c in cot} == set(TEMPLATE_NAMES)
    counts = [sum(c["template"] == t for c in cot) for t in TEMPLATE_NAMES]
    assert min(counts) > 0.7 * len(cot) / 6  # uniform
    for c in cot:
        parsed = parse_completion(c["completion"], strict=True)
        assert parsed.ok, (c["id"], parsed.error)
        assert parsed.answer == c["reference"]
        assert set(c) >= {"id", "src_lang", "tgt_lang", "source", "reference", "template", "completion"}


def test_tokenizer_round_trips_and_knows_the_chat_format(toy_world):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(toy_world.model_dir)
    cot = read_jsonl(toy_world.cot_sft_jsonl)[:50]
    samples = [c["completion"] for c in cot] + [c["source"] for c in cot] + [
        "Unseen text: Grüße, 東京, emoji 🙂 and  double  spaces\n\ttabs.", "<think>x</think><answer>y</answer>"]
    for text in samples:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == text
    for t in ("<think>", "</think>", "<answer>", "</answer>", "<|im_start|>", "<|im_end|>", "<|endoftext|>"):
        assert len(tok(t, add_special_tokens=False)["input_ids"]) == 1, t
    ids = tok("<think>a</think><answer>b</answer><|im_end|>", add_special_tokens=False)["input_ids"]
    assert tok.decode(ids, skip_special_tokens=True) == "<think>a</think><answer>b</answer>"  # tags survive
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    assert 500 < len(tok) <= 4000
    # Toy Xish morphology is visible to the model: every suffix is a token of its own.
    for suffix in ("-li", "-ko", "-ta", "-ru"):
        assert tok.tokenize(f" zuzuzu{suffix}")[-1] == suffix

    # The SFT example is exactly what training renders: prompt with <think> prefilled + completion.
    c = next(c for c in cot if c.get("context"))
    prompt = render_prompt(tok, chat_messages(c, c["template"]), think_prefill=True)
    assert prompt.startswith("<|im_start|>system\n") and prompt.endswith("<|im_start|>assistant\n<think>")
    assert f"Context: {c['context']}" in prompt and c["source"] in prompt
    think = parse_completion(c["completion"]).think
    target = render_completion(think, c["reference"], think_prefill=True)
    assert full_completion(target) == c["completion"]


def test_transformers_loads_and_the_base_knows_the_pair_but_not_the_format(toy_world):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    manifest = toy_world.manifest
    model = AutoModelForCausalLM.from_pretrained(toy_world.model_dir, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(toy_world.model_dir)
    assert model.config.model_type == "qwen2" and model.config.tie_word_embeddings
    assert model.config.hidden_size // model.config.num_attention_heads >= 64
    assert sum(p.numel() for p in model.parameters()) == manifest["model"]["parameters"] < 5_000_000
    probe = [r for r in read_jsonl(toy_world.test_jsonl) if r["src_lang"] == "toy_en"][:50]
    hyps = greedy_translate(model, tok, probe)
    chrf = sacrebleu.corpus_chrf(hyps, [[r["reference"] for r in probe]]).score
    assert abs(chrf - manifest["pretrain"]["probe_chrf"]["toy_en-toy_xx"]) < 1.0  # the saved model is the trained one
    assert chrf > 80  # pre-trained until it knows the pair (2,000 steps: ~100 on both CPU kinds' builds seen)
    assert manifest["pretrain"]["final_loss"] < manifest["pretrain"]["first_loss"] / 3
    # The R1-T1 tags, never seen in pre-training, got embeddings on the scale of the trained ones.
    norms = model.get_input_embeddings().weight.norm(dim=1)
    tags = tok.convert_tokens_to_ids(["<think>", "</think>", "<answer>", "</answer>"])
    assert ((norms[tags] > 0.3 * norms.mean()) & (norms[tags] < 3 * norms.mean())).all()
    # The base was never shown the R1-T1 format: given the training prompt it does not close a think block.
    enc = tok(render_prompt(tok, chat_messages(probe[0], "structural")), return_tensors="pt",
              add_special_tokens=False)
    out = model.generate(**enc, max_new_tokens=24, do_sample=False)
    text = tok.decode(out[0, enc["input_ids"].shape[1]:])
    assert out.shape[1] > enc["input_ids"].shape[1] and "</think>" not in text


@pytest.mark.slow
def test_vllm_loads_and_matches_transformers(toy_world, monkeypatch):
    """vLLM (CPU, fp32) greedy output equals transformers' on plain prompts (~30 s engine start)."""
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from vllm import LLM, SamplingParams

    probe = [r for r in read_jsonl(toy_world.test_jsonl) if r["src_lang"] == "toy_en"][:8]
    tok = AutoTokenizer.from_pretrained(toy_world.model_dir)
    model = AutoModelForCausalLM.from_pretrained(toy_world.model_dir, dtype=torch.float32)
    expected = greedy_translate(model, tok, probe, batch_size=1)
    llm = LLM(model=str(toy_world.model_dir), dtype="float32", max_model_len=512, seed=0,
              enforce_eager=True)
    outs = llm.generate([plain_prompt(tok, r) for r in probe], SamplingParams(temperature=0.0, max_tokens=48))
    got = [o.outputs[0].text.strip() for o in outs]
    assert all(o.outputs[0].finish_reason == "stop" for o in outs)  # stops at <|im_end|>
    assert sum(g == e for g, e in zip(got, expected)) >= 7, list(zip(got, expected))
