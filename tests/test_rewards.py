"""Rewards without COMET: lexical metrics against sacrebleu, format, guards, registry, combinations.

Fast (no model, no Ray). COMET and the Ray actor are in test_rewards_comet.py.
"""
from __future__ import annotations

import math
import textwrap

import pytest
import sacrebleu

import rewards
from rewards import lexical
from rewards.format import format_reward
from rewards.guards import copy_guard, lang_guard, length_guard

SCRIPTS = {  # language -> sacrebleu's recommended BLEU tokenizer
    "deu_Latn": "13a", "zho_Hans": "zh", "jpn_Jpan": "ja-mecab", "kor_Hang": "ko-mecab",
    "tha_Thai": "char", "arb_Arab": "13a", "hin_Deva": "13a",
}
N_LINES = 40


def flores(data_dir, lang, split="devtest", n=N_LINES):
    path = data_dir / "flores200" / split / f"{lang}.{split}"
    return path.read_text(encoding="utf-8").splitlines()[:n]


def wrap(answer: str) -> str:
    return f"<think>Translate it step by step.</think><answer>{answer}</answer>"


def perturb(refs: list[str]) -> list[str]:
    """Realistic imperfect hypotheses: first half of line i joined to the second half of line i+1."""
    return [refs[i][: len(refs[i]) // 2] + refs[(i + 1) % len(refs)][len(refs[(i + 1) % len(refs)]) // 2:]
            for i in range(len(refs))]


# ------------------------------------------------------------------ lexical == sacrebleu


@pytest.mark.parametrize("lang", sorted(SCRIPTS))
def test_sentence_metrics_equal_sacrebleu(data_dir, lang):
    refs = flores(data_dir, lang)
    hyps = perturb(refs)
    cols = {"src_lang": ["eng_Latn"] * len(refs), "tgt_lang": [lang] * len(refs)}
    completions = [wrap(h) for h in hyps]
    got_chrf = lexical.chrf(refs, completions, refs, **cols)
    got_chrfpp = lexical.chrfpp(refs, completions, refs, **cols)
    got_bleu = lexical.bleu(refs, completions, refs, **cols)
    for i, (h, r) in enumerate(zip(hyps, refs)):
        assert got_chrf[i] == pytest.approx(sacrebleu.sentence_chrf(h, [r]).score, abs=1e-9)
        assert got_chrfpp[i] == pytest.approx(sacrebleu.sentence_chrf(h, [r], word_order=2).score, abs=1e-9)
        want = sacrebleu.sentence_bleu(h, [r], tokenize=SCRIPTS[lang]).score
        assert got_bleu[i] == pytest.approx(want, abs=1e-9), (lang, i)
    assert 0 < sum(got_chrf) / len(got_chrf) < 100  # the perturbation gives real, non-trivial scores


@pytest.mark.parametrize("lang", sorted(SCRIPTS))
def test_corpus_scores_equal_sacrebleu(data_dir, lang):
    refs = flores(data_dir, lang)
    hyps = perturb(refs)
    got = rewards.corpus_scores(hyps, refs, lang)
    assert got["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs], tokenize=SCRIPTS[lang]).score)
    assert got["chrf"] == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs]).score)
    assert got["chrfpp"] == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs], word_order=2).score)
    assert f"tok:{SCRIPTS[lang]}" in got["signatures"]["bleu"]
    assert "nw:2" in got["signatures"]["chrfpp"] and got["n"] == len(refs)


def test_bleu_tokenizer_by_code_scheme():
    assert [rewards.bleu_tokenizer(c) for c in ("zho_Hans", "zho_simpl", "zh", "yue_Hant")] == ["zh"] * 4
    assert rewards.bleu_tokenizer("jpn_Jpan") == rewards.bleu_tokenizer("ja") == "ja-mecab"
    assert rewards.bleu_tokenizer("kor_Hang") == rewards.bleu_tokenizer("kor") == "ko-mecab"
    assert [rewards.bleu_tokenizer(c) for c in ("deu_Latn", "toy_xx", None, "??")] == ["13a"] * 4


def test_missing_mecab_falls_back_with_a_notice(monkeypatch, caplog):
    real_bleu = lexical.BLEU

    def no_mecab(*args, tokenize=None, **kwargs):
        if tokenize in ("ja-mecab", "ko-mecab"):
            raise ImportError("No module named 'MeCab'")
        return real_bleu(*args, tokenize=tokenize, **kwargs)

    monkeypatch.setattr(lexical, "BLEU", no_mecab)
    lexical._available.cache_clear()
    try:
        with caplog.at_level("WARNING", logger="rewards"):
            assert rewards.bleu_tokenizer("jpn_Jpan") == "char"
            assert rewards.bleu_tokenizer("kor_Hang") == "13a"
        assert "ja-mecab unavailable" in caplog.text and "sacrebleu[ja,ko]" in caplog.text
    finally:
        lexical._available.cache_clear()


def test_tokenizer_choice_matters_for_chinese(data_dir):
    """Guards against silently scoring Chinese with 13a (which sees a whole sentence as one token)."""
    refs = flores(data_dir, "zho_Hans")
    hyps = perturb(refs)
    ours = rewards.corpus_scores(hyps, refs, "zho_Hans")["bleu"]
    assert ours != pytest.approx(sacrebleu.corpus_bleu(hyps, [refs], tokenize="13a").score)


def test_spbleu_uses_local_spm_model_like_sacrebleu(data_dir, tmp_path, monkeypatch):
    import sentencepiece as spm

    text = tmp_path / "train.txt"
    text.write_text("\n".join(flores(data_dir, "deu_Latn", "dev", 300) + flores(data_dir, "eng_Latn", "dev", 300)))
    spm.SentencePieceTrainer.train(input=str(text), model_prefix=str(tmp_path / "local"), vocab_size=400,
                                   minloglevel=2)
    model = tmp_path / "local.model"
    refs = flores(data_dir, "deu_Latn")
    hyps = perturb(refs)
    got = rewards.corpus_scores(hyps, refs, "deu_Latn", spm_model=str(model))
    # sacrebleu's own flores101 tokenizer, pointed at the same file through its model dir (no download)
    from sacrebleu.tokenizers import tokenizer_spm

    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "sacrebleu_tokenizer_spm.model").write_bytes(model.read_bytes())
    monkeypatch.setattr(tokenizer_spm, "SACREBLEU_DIR", str(tmp_path))
    want = sacrebleu.corpus_bleu(hyps, [refs], tokenize="flores101").score
    assert got["spbleu"] == pytest.approx(want)
    assert "tok:spm[local]" in got["signatures"]["spbleu"]
    sentence = lexical.bleu(None, [wrap(h) for h in hyps[:5]], refs[:5], tgt_lang="deu_Latn", spm_model=str(model))
    assert sentence == pytest.approx([sacrebleu.sentence_bleu(h, [r], tokenize="flores101").score
                                      for h, r in zip(hyps[:5], refs[:5])])
    with pytest.raises(FileNotFoundError, match="SentencePiece model not found"):
        rewards.corpus_scores(hyps, refs, "deu_Latn", spm_model=str(tmp_path / "missing.model"))


def test_duplicate_pairs_scored_once_give_same_values(data_dir):
    refs = flores(data_dir, "deu_Latn", n=4)
    group = [wrap(refs[0])] * 4 + [wrap(refs[1])] * 4  # a GRPO group often repeats samples
    got = lexical.chrf(None, group, [refs[0]] * 8, tgt_lang="deu_Latn")
    assert got[:4] == [100.0] * 4 and len(set(got[4:])) == 1 and got[4] < 100


def test_corpus_scores_rejects_misaligned_inputs():
    with pytest.raises(ValueError, match="2 hypotheses for 1 references"):
        rewards.corpus_scores(["a", "b"], ["a"], "deu_Latn")
    with pytest.raises(ValueError, match="reference 1 is None"):
        rewards.corpus_scores(["a", "b"], ["a", None], "deu_Latn")
    assert rewards.corpus_scores([None, "x"], ["a b", "x"], "deu_Latn")["chrf"] > 0  # None = empty translation


# ------------------------------------------------------------------ format


def test_format_reward_is_strict():
    good = "<think>plan</think><answer>Hallo</answer>"
    cases = [good, "  " + good + "\n", "<think>a</think><answer>Hallo", "Hallo", "", None,
             "<think>a<think>b</think></think><answer>x</answer>", "<answer>x</answer>",
             "<think>a</think><answer> </answer>", "<think>a</think>junk<answer>x</answer>"]
    assert format_reward(None, cases, None) == [1.0, 1.0] + [0.0] * 8
    assert format_reward(None, cases[:3], None, ok=1.0, fail=-1.0) == [1.0, 1.0, -1.0]


# ------------------------------------------------------------------ guards


def test_copy_and_wrong_language_score_below_real_translation(data_dir):
    reward = rewards.load("chrf-format")
    for src_lang, tgt_lang, other in [("eng_Latn", "deu_Latn", "fra_Latn"), ("eng_Latn", "zho_Hans", "jpn_Jpan"),
                                      ("deu_Latn", "spa_Latn", "por_Latn"), ("eng_Latn", "tha_Thai", "hin_Deva")]:
        src, ref, wrong = flores(data_dir, src_lang, n=12), flores(data_dir, tgt_lang, n=12), flores(data_dir, other, n=12)
        real = perturb(ref)  # an imperfect but real translation
        n = len(src)
        cols = {"src_lang": [src_lang] * n, "tgt_lang": [tgt_lang] * n}
        score = lambda answers: reward.score(src, [wrap(a) for a in answers], ref, **cols)
        real_s, copy_s, wrong_s = score(real), score(src), score(wrong)
        for i in range(n):
            assert copy_s.total[i] < real_s.total[i], (tgt_lang, i, "copy")
            assert wrong_s.total[i] < real_s.total[i], (tgt_lang, i, "wrong language")
        assert all(v == -1.0 for v in copy_s.parts["copy_guard"])
        assert all(v == -1.0 for v in wrong_s.parts["lang_guard"])
        assert real_s.parts["copy_guard"] == [0.0] * n and real_s.parts["lang_guard"] == [0.0] * n


def test_copy_guard_spares_close_languages_and_exact_references(data_dir):
    src, ref = flores(data_dir, "ind_Latn", n=30), flores(data_dir, "zsm_Latn", n=30)
    # a Malay translation of Indonesian (the reference minus its last character) is close to the source,
    # as close as the reference itself, yet not a copy
    assert copy_guard(src, [wrap(r[:-1]) for r in ref], ref) == [0.0] * 30
    assert copy_guard(["Paris"], [wrap("Paris")], ["Paris"]) == [0.0]  # identical to the reference: fine
    assert copy_guard(src, [wrap(s) for s in src], None) == [-1.0] * 30  # QE mode: threshold alone


def test_lang_guard_unknown_languages_and_short_answers_get_no_penalty():
    hyps = [wrap("the man walks the dog to the house")] * 3 + [wrap("OK 42")]
    got = lang_guard(None, hyps, None, tgt_lang=["toy_xx", "xyz_Abcd", None, "deu_Latn"])
    assert got == [0.0, 0.0, 0.0, 0.0]
    assert lang_guard(None, hyps[:1], None, tgt_lang="deu_Latn") == [-1.0]
    assert lang_guard(None, hyps[:1], None, tgt_lang="eng_Latn") == [0.0]


def test_length_guard_runaway_completions():
    src = ["A short sentence."] * 5
    hyps = [wrap("Ein kurzer Satz."), wrap("Ein kurzer Satz."), wrap("Satz " * 200), "<think>" + "hmm " * 500,
            wrap("Ein kurzer Satz.")]
    got = length_guard(src, hyps, None, finish_reason=[None, "length", None, None, "stop"],
                       truncated=[False, False, False, True, False])
    assert got == [0.0, -1.0, -1.0, -1.0, 0.0]
    assert length_guard(src[:1], [wrap("x") + "y" * 100], None, max_chars=50) == [-1.0]


# ------------------------------------------------------------------ None / empty / odd inputs never raise

ODD = [None, "", "   ", "<think>", "<answer>", "</answer></think>", "no tags", "<think>x</think><answer></answer>",
       "<think>x</think><answer>\u0000\ufffd</answer>", wrap("🙂" * 50), wrap("Guten Tag.")]


@pytest.mark.parametrize("name", ["format", "chrf", "chrfpp", "bleu", "copy_guard", "lang_guard", "length_guard",
                                  "chrf-format"])
def test_odd_inputs_never_raise(name):
    reward = rewards.load(name)
    n = len(ODD)
    srcs = [None, "", "Good day."] * 3 + ["Good day.", None]
    refs_variants = [None, [None] * n, [""] * n, ["Guten Tag."] * n]
    for refs in refs_variants:
        for tgt in (["deu_Latn"] * n, ["toy_xx"] * n, [None] * n):
            out = reward(srcs, ODD, refs, src_lang=["eng_Latn"] * n, tgt_lang=tgt)
            assert len(out) == n
            assert all(v is None or (isinstance(v, float) and math.isfinite(v)) for v in out)
    empty = reward([], [], [], src_lang=[], tgt_lang=[])
    assert empty == []


def test_metrics_define_unscorable_and_answerless_samples():
    hyps = [wrap("Guten Tag."), "no tags", None, wrap("Guten Tag.")]
    refs = ["Guten Tag.", "Guten Tag.", "Guten Tag.", None]
    assert lexical.chrf(None, hyps, refs, tgt_lang="deu_Latn") == [100.0, 0.0, 0.0, None]
    assert lexical.bleu(None, hyps, None, tgt_lang="deu_Latn") == [None] * 4


# ------------------------------------------------------------------ registry, plug-ins, combinations

PLUGIN = textwrap.dedent('''
    def length_bonus(sources, hypotheses, references, *, scale=1.0, **columns):
        return [scale * len(h or "") for h in hypotheses]

    class Constant:
        def __init__(self, value=0.5):
            self.value = value
        def __call__(self, sources, hypotheses, references, **columns):
            return [self.value] * len(hypotheses)

    def no_columns(sources, hypotheses, references):
        return [0.0] * len(hypotheses)

    def too_few(hypotheses, **columns):
        return [0.0] * len(hypotheses)

    def wrong_length(sources, hypotheses, references, **columns):
        return [0.0]
''')


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    """A plug-in module plus an installed-looking distribution with entry points in group r1t1.rewards."""
    (tmp_path / "r1t1_test_plugin.py").write_text(PLUGIN)
    (tmp_path / "r1t1_test_plugin_broken.py").write_text("import no_such_module_anywhere\n")
    dist = tmp_path / "r1t1_test_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: r1t1-test-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[r1t1.rewards]\nplugin_length = r1t1_test_plugin:length_bonus\nplugin_const = r1t1_test_plugin:Constant\n"
        "plugin_broken = r1t1_test_plugin_broken:anything\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_load_by_name_path_dict_and_entry_point(plugin_dir):
    hyps, cols = ["abc", "abcdef"], {"src_lang": ["eng_Latn"] * 2, "tgt_lang": ["deu_Latn"] * 2}
    assert rewards.load("r1t1_test_plugin:length_bonus")(None, hyps, None, **cols) == [3.0, 6.0]
    assert "plugin_length" in rewards.known()["entry_points"]  # real importlib.metadata discovery
    assert rewards.load("plugin_length")(None, hyps, None, **cols) == [3.0, 6.0]
    assert rewards.load({"name": "plugin_const", "kwargs": {"value": 2.0}})(None, hyps, None, **cols) == [2.0, 2.0]
    combo = rewards.load([{"name": "plugin_length", "weight": 0.5, "kwargs": {"scale": 2.0}},
                          {"name": "r1t1_test_plugin:Constant", "weight": 2.0, "label": "const"},
                          {"name": "format", "weight": 0.0}])
    out = combo.score(None, hyps, None, **cols)
    assert out.parts == {"plugin_length": [6.0, 12.0], "const": [0.5, 0.5], "format": [0.0, 0.0]}
    assert out.total == [0.5 * 6 + 2 * 0.5, 0.5 * 12 + 2 * 0.5]
    assert combo(None, hyps, None, **cols) == out.total


@pytest.mark.parametrize("spec, message", [
    ("no_such_reward", r"unknown reward 'no_such_reward'\. Known rewards: bleu, chrf.*presets: bleu-format, chrf-format"),
    ("no_such_module_xyz:fn", r"cannot import module 'no_such_module_xyz'"),
    ("r1t1_test_plugin:missing", r"has no attribute 'missing'"),
    ("plugin_broken", r"entry point 'r1t1_test_plugin_broken:anything'.*failed to import.*no_such_module_anywhere"),
    ("r1t1_test_plugin:no_columns", r"takes no \*\*columns"),
    ("r1t1_test_plugin:too_few", r"does not match fn\(sources, hypotheses, references, \*\*columns\)"),
    ({"name": "chrf", "kwargs": {"scale": 2}}, r"unknown kwargs \['scale'\]"),
    ({"name": "plugin_const", "kwargs": {"nope": 1}}, r"Constant\(\.\.\.\) does not accept"),
    ({"name": "chrf", "weight": "heavy"}, r"weight must be a number"),
    ({"name": "chrf", "wieght": 1}, r"unknown: \['wieght'\]"),
    (["chrf", "chrf"], r"repeated: \['chrf'\].*label"),
    ([], r"empty reward list"),
    (42, r"a reward spec is a name"),
])
def test_bad_specs_fail_at_load_with_clear_message(plugin_dir, spec, message):
    with pytest.raises(rewards.RewardSpecError, match=message):
        rewards.load(spec)


def test_broken_reward_output_fails_loudly_with_its_name(plugin_dir):
    combo = rewards.load(["r1t1_test_plugin:wrong_length", "chrf"])
    with pytest.raises(ValueError, match="wrong_length' returned 1 values for a batch of 2"):
        combo(None, ["a", "b"], ["a", "b"], src_lang=["x"] * 2, tgt_lang=["x"] * 2)


def test_linear_total_skips_none_parts_like_trl():
    combo = rewards.load([{"name": "chrf", "weight": 0.01}, {"name": "format", "weight": 0.2}])
    out = combo.score(None, [wrap("Hallo Welt"), "junk"], [None, "Hallo Welt"], tgt_lang="deu_Latn")
    assert out.parts["chrf"] == [None, 0.0]
    assert out.total == [pytest.approx(0.2), 0.0]
    only_metric = rewards.load("chrf")
    assert only_metric(None, [wrap("x")], [None], tgt_lang="deu_Latn") == [None]


def test_presets_nest_inside_lists_and_expose_parts():
    combo = rewards.load(["chrf-format", {"name": "bleu", "weight": 0.0}])
    de = "Guten Tag, wie geht es Ihnen heute?"
    out = combo.score(["Good day, how are you today?"], [wrap(de)], [de], src_lang="eng_Latn", tgt_lang="deu_Latn")
    assert {"chrf-format", "bleu", "chrf-format/chrf", "chrf-format/format", "chrf-format/lang_guard"} <= set(out.parts)
    assert out.total == out.parts["chrf-format"]
    assert out.total[0] == pytest.approx(0.01 * 100 + 0.2)


def test_register_decorator_and_load_from_config():
    from rl.core.config import RewardConfig

    @rewards.register("test_always_one")
    def always_one(sources, hypotheses, references, **columns):
        return [1.0] * len(hypotheses)

    assert rewards.load("test_always_one")(None, ["a"], None, tgt_lang="x") == [1.0]
    cfg = RewardConfig(spec=["test_always_one", {"name": "format", "weight": 0.5}])
    assert rewards.load_from_config(cfg)(None, ["a"], None, tgt_lang="x") == [1.0]
    with pytest.raises(rewards.RewardSpecError, match="preset name"):
        rewards.register("r1t1", always_one)


def test_chrf_format_pays_nothing_for_a_broken_format():
    """A mis-tagged completion's lenient answer can out-score a clean one on chrF
    (chrF weights recall twice): chrf-format must not pay it, as R1-T1 pays 0."""
    reward = rewards.load("chrf-format")
    src, ref = "Die große Katze jagte gestern schnell den kleinen Hund.", "The big cat quickly chased the small dog yesterday."
    clean = "<think>Subject, verb, object.</think><answer>The big cat chased the small dog.</answer>"
    broken = f"<think>Draft.</think><answer>The big cat</think><answer>{ref} The big cat quickly chased the dog.</answer>"
    cols = {"src_lang": ["deu_Latn"] * 2, "tgt_lang": ["eng_Latn"] * 2}
    out = reward.score([src] * 2, [clean, broken], [ref] * 2, **cols)
    assert out.parts["format"] == [1.0, 0.0]
    assert out.parts["chrf"][1] > out.parts["chrf"][0]  # the hole: more chrF for the broken one
    assert out.total[0] == pytest.approx(0.2 + 0.01 * out.parts["chrf"][0])
    assert out.total[1] == 0.0  # but it earns nothing


def test_bleu_format_is_chrf_format_with_sentence_bleu():
    """The preset a reward experiment compares chrf-format with: 0.2 + 0.01*BLEU when the strict
    format holds, 0 plus the guards when it does not."""
    from rewards.lexical import bleu

    ref = ["the big cats chased the small dog yesterday"]
    good, broken = "<think>t</think><answer>the big cats chased the dog yesterday</answer>", "the big cats chased"
    reward = rewards.load("bleu-format")
    out = reward.score(["src"], [good], ref, src_lang=["eng_Latn"], tgt_lang=["eng_Latn"])
    b = bleu(["src"], [good], ref, tgt_lang=["eng_Latn"])[0]
    assert 0 < b < 100 and set(out.parts) >= {"bleu", "format", "copy_guard"}
    assert out.total[0] == pytest.approx(0.2 + 0.01 * b + sum(out.parts[g][0] or 0 for g in ("copy_guard", "lang_guard", "length_guard")))
    assert reward.score(["src"], [broken], ref, src_lang=["eng_Latn"], tgt_lang=["eng_Latn"]).total[0] <= 0


def test_source_coverage_pays_reasoning_that_works_through_the_source():
    """rewards/reasoning.py: the share of the source's content words the think block quotes or
    glosses; None without a think block. chrf-format-coverage adds 0.1 x that to chrf-format's
    total when the format holds, and nothing when it fails."""
    from rewards.reasoning import source_coverage

    src = ["the girls paint the roads"]
    glossing = "<think>girls -> sele-li; paint -> peboto; roads -> tomu-ru</think><answer>sele-li tomu-ru peboto</answer>"
    generic = "<think>Translate carefully and check the grammar.</think><answer>sele-li tomu-ru peboto</answer>"
    half = "<think>girls -> sele-li; paint: a verb</think><answer>sele-li tomu-ru peboto</answer>"
    got = source_coverage(src * 4, [glossing, generic, half, "sele-li tomu-ru"], [None] * 4)
    assert got[:3] == [1.0, 0.0, pytest.approx(2 / 3)] and got[3] is None
    ref, langs = ["sele-li peboto-li-ko tomu-ru"], dict(src_lang=["eng_Latn"], tgt_lang=["eng_Latn"])
    plain, covered = rewards.load("chrf-format"), rewards.load("chrf-format-coverage")
    for text, coverage in ((glossing, 1.0), (generic, 0.0), (half, 2 / 3)):
        want = plain.score(src, [text], ref, **langs).total[0]
        out = covered.score(src, [text], ref, **langs)
        assert out.total[0] == pytest.approx(want + 0.1 * coverage), text
        assert out.parts["source_coverage"][0] == pytest.approx(coverage)
    broken = "<think>girls roads paint</think> sele-li"
    assert covered.score(src, [broken], ref, **langs).total[0] == plain.score(src, [broken], ref, **langs).total[0]
