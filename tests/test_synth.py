"""CoT synthesis (rl/synth.py, rl/coldstart/) and R1-T1's corpus format in rl/sft.py.

Most tests feed hand-made candidates through the filter, or run the synthesis loop with a
scripted engine on the toy world's pairs; one runs the real toy teacher (vLLM + the SFT adapter)."""
from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path

import pytest

import rewards
from rl.core.config import ConfigError, SynthConfig, load_config
from rl.core.data import Example
from rl.coldstart import store
from rl.coldstart.filters import judge
from rl.coldstart.prompts import assign_templates, synth_templates, teacher_messages
from rl.coldstart.synth import SynthError, run_synth
from rl.core.prompts import load_templates
from rl.learn.sft import load_cot_jsonl
from rl.rollout import Completion, PromptResult
from tests.conftest import REPO_ROOT

DE = Example("de-1", "eng_Latn", "deu_Latn", "The old bridge was closed after the storm.",
             "Die alte Brücke wurde nach dem Sturm gesperrt.")


def cot(answer: str, think: str = "reasoning about the sentence") -> str:
    return f"<think>{think}</think><answer>{answer}</answer>"


# ----------------------------------------------------------------------------- the filter

def test_judge_keeps_the_best_candidate_that_passes():
    reward = rewards.load("chrf")
    good, better = cot("Die alte Brücke wurde gesperrt."), cot("Die alte Brücke wurde nach dem Sturm gesperrt.")
    (v,) = judge([DE], [[good, better]], SynthConfig(threshold=30.0), reward)
    assert v.completion == better and v.score == pytest.approx(100.0) and v.rejected == Counter()
    assert v.parts["chrf"] == pytest.approx(100.0)


def test_judge_rejects_each_bad_candidate_under_its_reason():
    reward = rewards.load("chrf")
    bad = {
        "empty": "   ",
        "format": "Die alte Brücke wurde gesperrt.",  # no tags
        "copied_source": cot(DE.source),
        "wrong_language": cot("The ancient bridge got shut down once the big storm had passed by."),
        "below_threshold": cot("Ein Hund läuft schnell über die grüne Wiese im Park."),
    }
    (v,) = judge([DE], [list(bad.values())], SynthConfig(threshold=50.0), reward)
    assert v.completion is None and v.candidates == 5
    assert v.rejected == Counter({reason: 1 for reason in bad})
    (v,) = judge([DE], [[cot("<answer>x")]], SynthConfig(), reward)  # nested tags: malformed
    assert v.rejected == Counter(format=1)
    (v,) = judge([DE], [[cot("")]], SynthConfig(), reward)
    assert v.rejected == Counter(empty=1)
    # a candidate cut off at max_tokens is not kept even if its tags happen to close
    (v,) = judge([DE], [[cot(DE.reference)]], SynthConfig(), reward, finish_reasons=[["length"]])
    assert v.rejected == Counter(format=1)


def test_language_check_can_be_switched_off():
    english = cot("The ancient bridge got shut down once the big storm had passed by.")
    (v,) = judge([DE], [[english]], SynthConfig(threshold=0.0, check_language=False), rewards.load("chrf"))
    assert v.completion == english


# ----------------------------------------------------------------------------- templates

def test_templates_are_assigned_round_robin_per_direction():
    names = sorted(load_templates())
    exs = [Example(f"a{i}", "eng_Latn", "deu_Latn", "s", "r") for i in range(12)]
    exs += [Example(f"b{i}", "deu_Latn", "eng_Latn", "s", "r") for i in range(7)]
    plan = assign_templates(exs, names)
    assert Counter(plan[:12]) == Counter({n: 2 for n in names})
    assert plan[12:] == names + names[:1]  # each direction starts at the first template


def test_teacher_prompt_holds_the_template_in_full_and_the_reference_by_choice():
    template = load_templates()["back_translation"]
    text = teacher_messages(DE, template, show_reference=True)[1]["content"]
    assert template.title in text and all(step in text for step in template.steps)
    assert template.example["think"] in text and template.example["answer"] in text
    assert DE.source in text and "German" in text and DE.reference in text
    assert DE.reference not in teacher_messages(DE, template, show_reference=False)[1]["content"]


def test_unknown_template_names_are_refused():
    cfg = load_config(None, ["--synth.templates", "[hierarchical, nonsense]"])
    with pytest.raises(ConfigError, match="nonsense"):
        synth_templates(cfg)


# ----------------------------------------------------------------------------- the loop, scripted

class ScriptedEngine:
    """Answers each prompt with the reference of the toy pair whose source it contains, after a wrong
    candidate; counts the prompts it saw (the RolloutEngine interface, no model)."""

    def __init__(self, pairs: list[Example]):
        self.pairs, self.prompts, self.adapter = pairs, [], "unset"

    def generate(self, prompts, sampling):
        out = []
        for prompt in prompts:
            self.prompts.append(prompt)
            ex = max((e for e in self.pairs if e.source in prompt), key=lambda e: len(e.source))
            texts = ["no tags at all", f"a gloss</think><answer>{ex.reference}</answer>"][:sampling.n]
            out.append(PromptResult([1], [Completion(t, [1], [0.0], "stop") for t in texts]))
        return out

    def set_adapter(self, adapter_dir, version):
        self.adapter = adapter_dir

    def clear_adapter(self):
        self.adapter = None

    def shutdown(self):
        pass


def toy_synth_config(tmp_path: Path, *extra: str):
    return load_config(REPO_ROOT / "configs" / "synth-toy.yaml", [
        "--toy.cache_dir", str(REPO_ROOT / ".toy_cache"), "--output_dir", str(tmp_path),
        "--synth.teacher.adapter", "null", "--synth.k", "2", "--synth.batch_size", "2", *extra])


def test_synthesis_writes_sft_rows_with_template_scores_and_a_report(toy_world, tmp_path):
    from rl.core import resolve

    cfg = toy_synth_config(tmp_path, "--data.limit", "3")
    engine = ScriptedEngine(resolve.train_examples(cfg))
    report = run_synth(cfg, engine=engine, progress=False)
    out = tmp_path / "synth-toy" / "cot.jsonl"
    rows = load_cot_jsonl(out, set(load_templates()))
    assert len(rows) == 6 and engine.adapter is None
    assert all(r["scores"]["reward"] == pytest.approx(100.0) and r["synth"]["rejected"] == {"format": 1} for r in rows)
    assert [r["template"] for r in rows if r["src_lang"] == "toy_en"] == sorted(load_templates())[:3]
    saved = json.loads(store.report_path(out).read_text())
    assert saved == report and report["kept"] == 6 and report["acceptance"] == 1.0
    assert report["rejected_candidates"]["format"] == 6 and set(report["per_direction"]) == {
        "toy_en-toy_xx", "toy_xx-toy_en"}
    assert report["per_template"]["back_translation"] == {"pairs": 2, "kept": 2, "acceptance": 1.0}
    assert report["lengths"]["think_words"]["max"] == 2


def test_resume_appends_skips_finished_ids_and_repairs_a_cut_last_line(toy_world, tmp_path):
    from rl.core import resolve

    cfg = toy_synth_config(tmp_path, "--data.limit", "2")
    engine = ScriptedEngine(resolve.train_examples(toy_synth_config(tmp_path, "--data.limit", "4")))
    run_synth(cfg, engine=engine, progress=False)
    out = tmp_path / "synth-toy" / "cot.jsonl"
    lines = out.read_text(encoding="utf-8").splitlines(keepends=True)
    assert len(lines) == 4
    cut = "".join(lines[:3]) + lines[3][:25]  # the crash cut the fourth row mid-write
    out.write_text(cut, encoding="utf-8")
    engine.prompts.clear()
    run_synth(toy_synth_config(tmp_path, "--data.limit", "4"), engine=engine, progress=False)
    text = out.read_text(encoding="utf-8")
    assert text.startswith("".join(lines[:3]))  # never rewritten
    ids = [json.loads(line)["id"] for line in text.splitlines()]
    assert len(ids) == len(set(ids)) == 8
    assert len(engine.prompts) == 5  # 4 new pairs + the cut one; the 3 finished were skipped
    run_synth(toy_synth_config(tmp_path, "--data.limit", "4"), engine=engine, progress=False)
    assert out.read_text(encoding="utf-8") == text  # all finished: nothing asked, nothing written


def test_sft_trains_on_synthesized_data_by_one_switch(toy_world, tmp_path):
    """The main job's switch: sft.data_path pointing at the synthesis output is all rl/sft.py needs."""
    from rl.core import resolve
    from rl.learn.sft import run_sft

    cfg = toy_synth_config(tmp_path, "--data.limit", "4")
    run_synth(cfg, engine=ScriptedEngine(resolve.train_examples(cfg)), progress=False)
    sft_cfg = load_config(REPO_ROOT / "configs" / "toy.yaml", [
        "--toy.cache_dir", str(REPO_ROOT / ".toy_cache"), "--output_dir", str(tmp_path),
        "--sft.data_path", str(tmp_path / "synth-toy" / "cot.jsonl"), "--sft.run_name", "toy-sft-synth",
        "--sft.max_steps", "2", "--sft.batch_size", "4"])
    adapter = run_sft(sft_cfg)
    summary = json.loads((adapter.parent / "sft_summary.json").read_text())
    assert (adapter / "adapter_config.json").is_file() and summary["examples"] == 8 and summary["steps"] == 2


def test_pairs_without_a_passing_candidate_are_recorded_and_not_redone(toy_world, tmp_path):
    from rl.core import resolve

    cfg = toy_synth_config(tmp_path, "--data.limit", "1", "--synth.k", "1")  # only the malformed candidate
    engine = ScriptedEngine(resolve.train_examples(cfg))
    report = run_synth(cfg, engine=engine, progress=False)
    assert report["kept"] == 0 and report["pairs_without_candidate"] == 2
    assert report["rejected_candidates"]["format"] == 2
    engine.prompts.clear()
    run_synth(cfg, engine=engine, progress=False)
    assert engine.prompts == []


def test_a_missing_teacher_is_a_clear_error_before_any_work(toy_world, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "synth-toy"
    for value, match in (("null", "synth.teacher.model is not set"),
                         (str(tmp_path / "nowhere"), "not a model directory"),
                         ("nobody/NoSuchModel-70B", "neither a local model directory nor in the Hugging Face cache")):
        with pytest.raises(SynthError, match=match):
            run_synth(toy_synth_config(tmp_path, "--synth.teacher.model", value), engine=ScriptedEngine([]))
    with pytest.raises(SynthError, match="synth.teacher.adapter"):
        run_synth(toy_synth_config(tmp_path, "--synth.teacher.adapter", str(tmp_path)), engine=ScriptedEngine([]))
    assert not out.exists()


def test_a_teacher_that_fails_to_load_is_named(toy_world, tmp_path):
    class Broken(ScriptedEngine):
        def clear_adapter(self):
            raise RuntimeError("CUDA out of memory")

    with pytest.raises(SynthError, match="teacher toy .* failed to load .*CUDA out of memory"):
        run_synth(toy_synth_config(tmp_path), engine=Broken([]))
    assert not (tmp_path / "synth-toy").exists()


def test_the_main_entry_reports_errors_with_exit_2(capsys):
    from rl.coldstart.synth import main

    assert main(["--synth.k", "0"]) == 2
    assert "synth.k" in capsys.readouterr().err


# ----------------------------------------------------------------------------- recipes and the dry run

def test_the_70b_teacher_recipe_passes_its_dry_run_and_tp1_is_refused():
    from rl.tools.plan import print_teacher_plan

    path = REPO_ROOT / "configs" / "synth-r1t1-qwen2.5-72b.yaml"
    cfg = load_config(path, ["--data.source", "toy"])  # data.path is a placeholder
    out = io.StringIO()
    assert print_teacher_plan(cfg, out=out) == 0, out.getvalue()
    assert "over 4 GPU(s)" in out.getvalue() and "72.7B" in out.getvalue()
    cfg.synth.teacher.rollout.tensor_parallel_size = 1
    out = io.StringIO()
    assert print_teacher_plan(cfg, out=out) == 1
    assert "needs 1" in out.getvalue() and "tensor_parallel_size" in out.getvalue()
    cfg.synth.teacher.rollout.tensor_parallel_size = 16
    out = io.StringIO()
    assert print_teacher_plan(cfg, out=out) == 1 and "needs 16 GPUs on one node" in out.getvalue()


# ----------------------------------------------------------------------------- R1-T1's corpus

R1T1_RECORDS = [
    {"instruction": "... Translate the following sentence from Chinese to French and explain your reasoning:",
     "input": "特别委员会下一届会议将是有益的。", "source_lang": "Chinese", "target_lang": "French",
     "target_text": "Il serait utile que le Comité spécial se réunisse.",
     "thought_chains": "1. Analyze the structure.\n2. Translate.",
     "output": "<think>I analyze the Chinese sentence.</think>  \n\n<answer>  \nIl serait utile que le Comité spécial "
               "se réunisse.\n</answer>  "},
    {"instruction": "...", "input": "The cat sleeps.", "source_lang": "English", "target_lang": "German",
     "target_text": "Die Katze schläft.", "thought_chains": "1. Find the subject.\n2. Translate.",
     "output": "Die Katze schläft."},
]


@pytest.mark.parametrize("form", ["json", "jsonl"])
def test_sft_reads_r1t1_cot_corpus(tmp_path, form):
    path = tmp_path / f"CoT_data.{form}"
    text = (json.dumps(R1T1_RECORDS, ensure_ascii=False, indent=2) if form == "json"
            else "\n".join(json.dumps(r, ensure_ascii=False) for r in R1T1_RECORDS))
    path.write_text(text, encoding="utf-8")
    first, second = load_cot_jsonl(path, set(load_templates()))
    assert (first["src_lang"], first["tgt_lang"], second["src_lang"], second["tgt_lang"]) == (
        "zho_Hans", "fra_Latn", "eng_Latn", "deu_Latn")
    assert first["source"] == R1T1_RECORDS[0]["input"] and first["reference"] == R1T1_RECORDS[0]["target_text"]
    assert first["completion"] == ("<think>I analyze the Chinese sentence.</think><answer>Il serait utile que le "
                                   "Comité spécial se réunisse.</answer>")
    assert second["completion"] == "<think>1. Find the subject.\n2. Translate.</think><answer>Die Katze schläft.</answer>"
    assert first["template"] is None and second["template"] is None


def test_r1t1_corpus_errors_name_the_file_and_record(tmp_path):
    path = tmp_path / "CoT_data.json"
    bad = [R1T1_RECORDS[0], {**R1T1_RECORDS[1], "target_lang": "Klingon"}]
    path.write_text(json.dumps(bad), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"CoT_data.json: record 1: target_lang 'Klingon'"):
        load_cot_jsonl(path, set(load_templates()))
    path.write_text(json.dumps([{**R1T1_RECORDS[0], "output": "<think>unfinished"}]), encoding="utf-8")
    with pytest.raises(ConfigError, match="record 0: output is not in the R1-T1 format"):
        load_cot_jsonl(path, set(load_templates()))
    path.write_text(json.dumps([{k: v for k, v in R1T1_RECORDS[0].items() if k != "target_text"}]), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"record 0: missing.*target_text"):
        load_cot_jsonl(path, set(load_templates()))


def test_sft_prompts_for_r1t1_rows_name_no_template(toy_world, tmp_path):
    from transformers import AutoTokenizer

    from rl.learn.sft import build_sft_dataset

    path = tmp_path / "CoT_data.json"
    path.write_text(json.dumps(R1T1_RECORDS, ensure_ascii=False), encoding="utf-8")
    cfg = load_config(None, ["--prompt.template_choice", "uniform"])
    data = build_sft_dataset(cfg, AutoTokenizer.from_pretrained(toy_world.model_dir), path)
    assert len(data) == 2 and not any(t.title in data[0]["prompt"] for t in load_templates().values())
    assert data[1]["completion"].startswith("1. Find the subject.")


# ----------------------------------------------------------------------------- the real toy teacher

def test_toy_teacher_synthesizes_cot_that_sft_loads(toy_vllm_engine, toy_sft_adapter, tmp_path):
    """End to end on CPU: the toy base model + its cold-start adapter (the teacher) writes CoT for a
    few toy pairs through the shared vLLM engine; the output is valid SFT data."""
    cfg = toy_synth_config(tmp_path, "--data.limit", "3", "--synth.teacher.adapter", str(toy_sft_adapter),
                           "--synth.batch_size", "8", "--synth.threshold", "20")
    report = run_synth(cfg, engine=toy_vllm_engine, progress=False)
    out = tmp_path / "synth-toy" / "cot.jsonl"
    assert report["pairs"] == 6 and report["kept"] >= 3, report
    rows = load_cot_jsonl(out, set(load_templates()))
    assert len(rows) == report["kept"] and all(r["synth"]["teacher"] == "toy" for r in rows)
    assert cfg.synth.k == 2 and all(r["synth"]["candidates"] == 2 for r in rows)


# ----------------------------------------------------------------------------- config and engine settings

def test_synth_section_is_validated_and_never_blocks_a_resume():
    from rl.core.runs import resume_config

    with pytest.raises(ConfigError, match="synth.teacher.nonsense"):
        load_config(None, ["--synth.teacher.nonsense", "1"])
    saved = load_config(None)
    requested = load_config(None, ["--synth.teacher.model", "Qwen/Qwen2.5-72B-Instruct", "--synth.k", "8"])
    assert resume_config(saved, requested).synth.k == 8  # only rl/synth.py reads it


def test_tensor_parallel_teacher_settings_reach_vllm_and_need_the_vllm_backend():
    from rl.core.config import RolloutConfig
    from rl.rollout import check_rollout_config
    from rl.rollout.vllm_engine import engine_kwargs

    with pytest.raises(ValueError, match="tensor_parallel_size=4.*backend: vllm"):
        check_rollout_config(RolloutConfig(backend="ray-vllm", tensor_parallel_size=4), None)
    check_rollout_config(RolloutConfig(backend="vllm", tensor_parallel_size=4), None)
    kw = engine_kwargs("m", RolloutConfig(backend="vllm", tensor_parallel_size=4), seed=0)
    assert (kw["tensor_parallel_size"], kw["distributed_executor_backend"]) == (4, "mp")
    kw = engine_kwargs("m", RolloutConfig(backend="vllm"), seed=0)
    assert (kw["tensor_parallel_size"], kw["distributed_executor_backend"]) == (1, "uni")
