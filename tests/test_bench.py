"""The benchmark entry points: `python -m rl.bench <name>` reaches each script's CLI.
(The benchmarks themselves are scripts that print ratios, not timed tests.)"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rl.bench import BENCHES


@pytest.mark.parametrize("name", sorted(BENCHES))
def test_bench_dispatcher_reaches_the_script(name):
    proc = subprocess.run([sys.executable, "-m", "rl.bench", name, "--help"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"usage: rl.bench {name}" in proc.stdout  # the script parsed its own arguments


def test_bench_dispatcher_lists_benchmarks_on_unknown_name():
    proc = subprocess.run([sys.executable, "-m", "rl.bench", "nope"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "rl.bench rollout" in proc.stdout


# ----------------------------------------------------------------------------- rl.bench step: workload, time split

def test_r1t1_workload_has_the_issue_s_shape(tmp_path):
    """~150-token prompts, 300 forced completion tokens, n = 8, the 24M model's LoRA; and a
    command-line override still wins over the workload's settings."""
    from transformers import AutoTokenizer

    from rl.bench.step import DEFAULT_CONFIG, workload_config
    from rl.core import resolve
    from rl.core.prompts import load_templates, prompt_for_example
    from rl.rollout import cpu_has_native_bf16

    cfg = workload_config(str(DEFAULT_CONFIG), "r1t1", ["--grpo.prompts_per_step", "2"], cache=tmp_path)
    assert (cfg.sampling.n, cfg.sampling.max_tokens, cfg.sampling.ignore_eos) == (8, 300, True)
    assert cfg.grpo.prompts_per_step == 2 and cfg.lora.r == 16
    assert cfg.grpo.gradient_accumulation_steps == 8  # micro-batches of 4 (R1T1_OVERRIDES: why)
    # the R1-T1 recipe's rollout and learner: compiled workers, bf16 where the CPU has it natively, the correction on
    dtype = "bfloat16" if cpu_has_native_bf16() else "float32"
    assert (cfg.rollout.dtype, cfg.model.dtype, cfg.rollout.enforce_eager) == (dtype, dtype, False)
    assert cfg.grpo.importance_sampling_correction
    fp32 = workload_config(str(DEFAULT_CONFIG), "r1t1", ["--rollout.dtype", "float32"], cache=tmp_path)
    assert (fp32.rollout.dtype, fp32.model.dtype) == ("float32", dtype)
    assert (Path(cfg.model.init_adapter) / "adapter_config.json").is_file()
    tokenizer = AutoTokenizer.from_pretrained(cfg.model.name_or_path)
    shape = json.loads((Path(cfg.model.name_or_path) / "config.json").read_text())
    assert (shape["hidden_size"], shape["num_hidden_layers"]) == (512, 6)  # the 24M shape, not the toy model
    templates = load_templates(cfg.prompt.templates_dir)
    lengths = [len(tokenizer(prompt_for_example(ex, tokenizer, cfg.prompt, templates, cfg.seed)[0],
                             add_special_tokens=False)["input_ids"]) for ex in resolve.train_examples(cfg)[:64]]
    assert 130 <= sum(lengths) / len(lengths) <= 180, lengths
    assert max(lengths) + cfg.sampling.max_tokens <= cfg.rollout.max_model_len
    toy = workload_config(str(DEFAULT_CONFIG), "toy", [])
    assert not getattr(toy.sampling, "ignore_eos", False) and toy.model.name_or_path == "toy"


def test_learner_clock_splits_a_grpo_step(tmp_path):
    """Two steps of a tiny TRL GRPOTrainer with a KL reference: every part of the learner is
    seen each step, and together they take less than the step."""
    import time

    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from helpers_models import build_tiny_qwen2
    from rl.bench.step import FAULT_KEYS, LEARNER_PARTS, LearnerClock

    model_dir = build_tiny_qwen2(tmp_path / "model")
    steps = []

    class StepTime(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.t = time.perf_counter()

        def on_step_end(self, *a, **k):
            steps.append(time.perf_counter() - self.t)

    args = GRPOConfig(output_dir=str(tmp_path / "out"), report_to=[], save_strategy="no", logging_steps=1,
                      disable_tqdm=True, per_device_train_batch_size=4, num_generations=2, max_completion_length=6,
                      beta=0.04, learning_rate=1e-3, max_steps=2, seed=0, use_cpu=True, remove_unused_columns=False,
                      dataloader_num_workers=0)
    trainer = GRPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32),
        reward_funcs=[lambda completions, **kw: [float(len(c)) for c in completions]], args=args,
        train_dataset=Dataset.from_list([{"prompt": f"say {w}"} for w in "abcd"]),
        processing_class=AutoTokenizer.from_pretrained(model_dir),
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    clock = LearnerClock()
    trainer.add_callback(StepTime())
    trainer.add_callback(clock)
    trainer.train()
    assert len(clock.steps) == len(steps) == 2
    for split, step in zip(clock.steps, steps):
        assert all(split[part] > 0 for part in LEARNER_PARTS), split
        assert sum(split.values()) < step, (split, step)
    assert set(clock.medians()) == set(LEARNER_PARTS)
    assert len(clock.fault_steps) == 2 and set(clock.fault_medians()) == set(FAULT_KEYS)
    assert all(isinstance(n, int) and n >= 0 for step in clock.fault_steps for n in step.values())


def test_rollout_feed_keeps_a_sampling_subclass_s_fields():
    """The r1t1 workload forces completion lengths with BenchSampling.ignore_eos: the feed's
    per-call copy (its n and seed) must keep the subclass and its field, or the workers
    stop at EOS again."""
    from types import SimpleNamespace

    from rl.bench.rollout import BenchSampling
    from rl.rollout.feed import RolloutFeed

    calls = []

    class Engine:
        def generate(self, token_ids, params):
            calls.append(params)
            return [object() for _ in token_ids]

    tokenizer = lambda text, add_special_tokens: {"input_ids": [len(text)]}  # noqa: E731
    feed = RolloutFeed(Engine(), tokenizer, BenchSampling(n=2, max_tokens=5, ignore_eos=True), seed=0,
                       stats=SimpleNamespace())
    feed._generate(["a", "a", "bb", "bb"], step=0, rank=0)
    assert len(calls) == 1 and isinstance(calls[0], BenchSampling)
    assert (calls[0].n, calls[0].max_tokens, calls[0].ignore_eos) == (2, 5, True) and calls[0].seed is not None
