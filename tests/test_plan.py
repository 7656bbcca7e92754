"""rl/tools/plan.py (the --dry-run plan and memory estimate) and rl/bench/learner.py (the learner GPU check).

The memory test recomputes the estimate by hand from Qwen2.5-0.5B's config numbers; the
shape arithmetic is checked against Qwen's published parameter counts and against a
real transformers/PEFT model; the FLOP formula against torch's FLOP counter.
"""
from __future__ import annotations

import io
import re
import subprocess
import sys

import pytest

from rl.core.config import load_config
from rl.tools.plan import (
    ACTIVATION_FACTOR,
    COMET_WEIGHTS_GIB,
    CUDA_CONTEXT_GIB,
    GIB,
    KNOWN_SHAPES,
    LOGIT_BYTES,
    VLLM_LORA_SLOTS,
    VLLM_OVERHEAD_GIB,
    estimate_memory,
    known_shape,
    print_plan,
)
from tests.conftest import REPO_ROOT

QWEN_05B = KNOWN_SHAPES["Qwen/Qwen2.5-0.5B-Instruct"]


def data_overrides(data_dir) -> list[str]:
    return ["--data.path", str(data_dir / "ntrex128"), "--eval.data_dir", str(data_dir / "flores200")]


def plan_output(cfg) -> tuple[int, str]:
    out = io.StringIO()
    rc = print_plan(cfg, out=out)
    return rc, out.getvalue()


# ----------------------------------------------------------------------------- shapes

@pytest.mark.parametrize(
    "name, total_b, non_embedding_b",  # Qwen2.5 model cards: "Number of Parameters", "(Non-Embedding)"
    [("Qwen/Qwen2.5-0.5B-Instruct", 0.49, 0.36), ("Qwen/Qwen2.5-1.5B-Instruct", 1.54, 1.31),
     ("Qwen/Qwen2.5-3B-Instruct", 3.09, 2.77), ("Qwen/Qwen2.5-7B-Instruct", 7.61, 6.53)],
)
def test_builtin_shapes_match_published_parameter_counts(name, total_b, non_embedding_b):
    shape = KNOWN_SHAPES[name]
    assert abs(shape.params() / 1e9 - total_b) < 0.006
    assert abs(shape.body_params() / 1e9 - non_embedding_b) < 0.006
    assert known_shape(name.split("/")[1].lower().removesuffix("-instruct")) is shape


def test_shape_arithmetic_matches_a_real_model_and_peft():
    from peft import LoraConfig, get_peft_model

    from rl.bench.learner import SHAPES, build_model

    import torch

    shape = SHAPES["tiny"]
    model = build_model(shape, torch.float32, "cpu")
    assert sum(p.numel() for p in model.parameters()) == shape.params()
    targets = ["q_proj", "v_proj", "down_proj"]
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=targets, task_type="CAUSAL_LM"))
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    assert trainable == shape.lora_params(4, targets)[0]


def test_model_shape_reads_a_local_config_json(tmp_path):
    import json

    from rl.tools.plan import model_shape

    (tmp_path / "config.json").write_text(json.dumps({
        "model_type": "qwen2", "hidden_size": 896, "num_hidden_layers": 24, "num_attention_heads": 14,
        "num_key_value_heads": 2, "intermediate_size": 4864, "vocab_size": 151936, "tie_word_embeddings": True,
        "torch_dtype": "bfloat16"}))
    cfg = load_config(None, ["--model.name_or_path", str(tmp_path)])
    shape, source = model_shape(cfg)
    assert source == str(tmp_path / "config.json")
    assert shape.params() == QWEN_05B.params()


# ----------------------------------------------------------------------------- memory estimate

def test_memory_estimate_for_qwen25_05b_by_hand():
    cfg = load_config(None, [
        "--model.name_or_path", "Qwen/Qwen2.5-0.5B-Instruct", "--model.dtype", "bfloat16",
        "--lora.r", "16", "--grpo.beta", "0", "--grpo.prompts_per_step", "8", "--sampling.n", "8",
        "--grpo.gradient_accumulation_steps", "4", "--grpo.max_prompt_length", "256", "--sampling.max_tokens", "512",
        "--rollout.dtype", "bfloat16", "--rollout.gpu_memory_utilization", "0.3", "--rollout.max_model_len", "1024",
        "--rollout.max_lora_rank", "16", "--reward.spec", "r1t1", "--reward.comet_batch_size", "64",
    ])
    mem = estimate_memory(cfg, QWEN_05B, gpu_memory_gb=80, processes=1)

    # Qwen2.5-0.5B config.json: hidden 896, 24 layers, 14 heads, 2 KV heads (head dim 64), MLP 4864, vocab 151936, tied
    h, layers, q, kv, inter, vocab = 896, 24, 14 * 64, 2 * 64, 4864, 151936
    per_layer = (h * q + q) + 2 * (h * kv + kv) + q * h + 3 * h * inter + 2 * h  # q/k/v with bias, o, MLP, 2 norms
    params = vocab * h + layers * per_layer + h  # embedding (tied head) + final norm
    assert mem["params"] == params == 494_032_768
    lora_per_layer = 16 * ((h + q) + 2 * (h + kv) + (q + h) + 2 * (h + inter) + (inter + h))
    lora = layers * lora_per_layer
    assert mem["lora_params"] == lora

    batch, seq = 8 * 8 // 4, 256 + 512  # 64 completions over 4 accumulation steps; prompt + completion
    assert (mem["micro_batch"], mem["seq_len"]) == (batch, seq)
    learner = mem["learner"]
    expected = {
        "weights": params * 2 / GIB,
        "lora": lora * 4 / GIB,
        "lora_ref": 0.0,  # no cold-start adapter: the reference is the adapter-disabled base
        "grads_adam": lora * 12 / GIB,
        "activations": batch * seq * h * layers * 34 / GIB,
        "logits": batch * 512 * vocab * 8 / GIB,
        "cuda_context": 0.5,
    }
    assert (ACTIVATION_FACTOR, LOGIT_BYTES, CUDA_CONTEXT_GIB) == (34, 8, 0.5)
    for key, value in expected.items():
        assert learner[key] == pytest.approx(value), key
    assert learner["total"] == pytest.approx(sum(expected.values()))
    assert 18 < learner["total"] < 20  # 0.92 weights + 8.37 activations + 9.27 logits + small parts

    worker = mem["rollout_worker"]
    kv_token = 2 * layers * kv * 2  # K and V, every layer, bf16
    slots = VLLM_LORA_SLOTS * 16 * (lora_per_layer // 16) * layers * 2
    assert worker["reserved"] == worker["total"] == pytest.approx(0.3 * 80)
    assert worker["kv_min"] == pytest.approx(1024 * kv_token / GIB)
    assert worker["needed"] == pytest.approx(params * 2 / GIB + slots / GIB + 1024 * kv_token / GIB + VLLM_OVERHEAD_GIB)
    room = 0.3 * 80 - params * 2 / GIB - slots / GIB - VLLM_OVERHEAD_GIB
    assert worker["kv_tokens"] == int(room * GIB // kv_token)
    assert worker["kv_sequences"] == worker["kv_tokens"] // seq

    comet = mem["comet"]
    assert comet["weights"] == COMET_WEIGHTS_GIB["default"]
    assert comet["activations"] == pytest.approx(64 * 3 * 128 * 1024 * 25 * 4 / GIB)
    assert comet["total"] == pytest.approx(comet["weights"] + comet["activations"] + 0.5)


def test_cold_start_adds_a_frozen_reference_adapter_and_checkpointing_shrinks_activations():
    base = ["--model.name_or_path", "Qwen/Qwen2.5-0.5B-Instruct", "--model.dtype", "bfloat16"]
    plain = estimate_memory(load_config(None, base + ["--grpo.beta", "0.001"]), QWEN_05B, 80, processes=1)
    cold = estimate_memory(load_config(None, base + ["--grpo.beta", "0.001", "--model.init_adapter", "auto"]),
                           QWEN_05B, 80, processes=1)
    assert plain["learner"]["lora_ref"] == 0.0
    assert cold["learner"]["lora"] > 0
    assert cold["learner"]["lora_ref"] == pytest.approx(cold["learner"]["lora"])
    ckpt = estimate_memory(load_config(None, base + ["--grpo.gradient_checkpointing", "true"]), QWEN_05B, 80, 1)
    assert ckpt["learner"]["activations"] < plain["learner"]["activations"] / 5


# ----------------------------------------------------------------------------- refusals and warnings

def test_refuses_a_layout_that_cannot_fit_and_shows_the_numbers(data_dir):
    cfg = load_config(REPO_ROOT / "configs/small-qwen2.5-1.5b.yaml",
                      data_overrides(data_dir) + ["--hardware.gpu_memory_gb", "8"])
    rc, out = plan_output(cfg)
    assert rc == 1
    assert "REFUSED" in out and "DOES NOT FIT" in out
    mem = estimate_memory(cfg, KNOWN_SHAPES["Qwen/Qwen2.5-1.5B-Instruct"], 8, processes=1)
    total = mem["learner"]["total"] + mem["rollout_worker"]["total"]
    assert f"needs {total:.2f} GiB > 8.0 GiB" in out
    # vLLM's share (0.38 x 8 GiB) cannot even hold the 1.5B weights plus one sequence
    assert f"= {0.38 * 8:.2f} GiB cannot hold weights" in out


def test_the_same_recipe_fits_its_24gb_target(data_dir):
    cfg = load_config(REPO_ROOT / "configs/small-qwen2.5-1.5b.yaml", data_overrides(data_dir))
    rc, out = plan_output(cfg)
    assert rc == 0, out
    assert re.search(r"node 0 GPU 0 +\d+\.\d\d = learner [\d.]+ \+ rollout worker [\d.]+ +\(\d+%\) OK", out)


def test_refuses_actors_ray_cannot_place():
    cfg = load_config(None, ["--model.name_or_path", "Qwen/Qwen2.5-0.5B-Instruct", "--model.dtype", "bfloat16",
                             "--hardware.gpu_memory_gb", "80", "--hardware.gpus_per_node", "1",
                             "--rollout.num_workers", "2", "--rollout.gpus_per_worker", "0.6"])
    rc, out = plan_output(cfg)
    assert rc == 1
    assert "Ray cannot place rollout worker 1 (0.6 GPU)" in out


def test_separate_ray_cluster_gets_its_own_gpus():
    cfg = load_config(None, ["--model.name_or_path", "Qwen/Qwen2.5-0.5B-Instruct", "--model.dtype", "bfloat16",
                             "--hardware.gpu_memory_gb", "80", "--hardware.gpus_per_node", "2",
                             "--hardware.learner_processes", "2", "--rollout.ray_address", "10.0.0.1:6379",
                             "--rollout.num_workers", "2", "--rollout.gpus_per_worker", "1",
                             "--rollout.gpu_memory_utilization", "0.3"])
    rc, out = plan_output(cfg)
    assert rc == 0, out
    assert "join 10.0.0.1:6379" in out
    assert re.search(r"node 0 GPU 0-1 +[\d.]+ = learner [\d.]+ +\(\d+%\) OK", out)  # learners alone
    assert re.search(r"Ray GPU 0-1 +24\.00 = rollout worker 24\.00 +\(30%\) OK", out)  # 0.3 x 80, one each


def test_warns_and_errors_on_harmful_settings():
    cfg = load_config(None, ["--model.name_or_path", "Qwen/Qwen2.5-0.5B-Instruct", "--model.dtype", "bfloat16",
                             "--sampling.temperature", "0", "--sampling.n", "8", "--sampling.max_tokens", "128",
                             "--grpo.prompts_per_step", "3", "--hardware.learner_processes", "2", "--grpo.gradient_accumulation_steps", "5",
                             "--lora.r", "32", "--rollout.max_lora_rank", "16"])
    rc, out = plan_output(cfg)
    assert rc == 1
    assert "temperature=0 with n=8" in out
    assert "max_tokens=128 is shorter than a typical CoT" in out
    assert "24 completions do not split evenly over 2 learner process(es) x 5 accumulation steps" in out
    assert "LoRA rank 32 > rollout.max_lora_rank 16" in out


# ----------------------------------------------------------------------------- the CLI

def test_dry_run_of_the_7b_recipe_is_fast_and_loads_nothing(data_dir):
    """Runs rl/train.py as __main__ in a fresh interpreter, then reports which heavy modules got imported.
    Fast means none is: a wall-clock bound only measured how busy the shared test machine was."""
    argv = ["rl/train.py", "--config", "configs/r1t1-qwen2.5-7b.yaml", "--dry-run", *data_overrides(data_dir)]
    probe = (
        "import runpy, sys\n"
        f"sys.argv = {argv!r}\n"
        "try:\n    runpy.run_path('rl/train.py', run_name='__main__')\n"
        "except SystemExit as e:\n    rc = e.code\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'vllm', 'ray', 'trl') if m in sys.modules)\n"
        "print('HEAVY_MODULES', heavy)\n"
        "sys.exit(rc)\n"
    )
    proc = subprocess.run([sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "What runs where" in out and "Per GPU (of 80.0 GiB)" in out
    assert "8 ray-vllm worker(s), 0.6 GPU each" in out and "COMET actor        0.3 GPU -> node 0 GPU 0" in out
    assert "HEAVY_MODULES []" in out  # no torch: no weights were loaded, no Ray started


def test_dry_run_reports_a_config_error_without_planning():
    proc = subprocess.run([sys.executable, "rl/train.py", "--config", "configs/r1t1-qwen2.5-7b.yaml", "--dry-run",
                           "--data.path", "/nonexistent/ntrex"], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    assert "data.path: path not found: /nonexistent/ntrex" in proc.stderr


# ----------------------------------------------------------------------------- the learner bench

def test_update_flop_formula_matches_torch_flop_counter():
    import torch
    from peft import LoraConfig, get_peft_model
    from torch.utils.flop_counter import FlopCounterMode

    from rl.bench.learner import SHAPES, build_model, update_flops

    shape = SHAPES["tiny"]
    model = build_model(shape, torch.float32, "cpu")
    model.config._attn_implementation = "eager"  # matmuls the counter sees (SDPA's CPU kernel is not counted)
    model = get_peft_model(model, LoraConfig(r=1, target_modules=list(shape.module_dims()), task_type="CAUSAL_LM"))
    batch, seq, completion = 2, 48, 16
    ids = torch.randint(2, shape.vocab_size, (batch, seq))
    with FlopCounterMode(display=False) as counter:
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), logits_to_keep=completion).logits
        logits.log_softmax(-1).sum().backward()
    formula = update_flops(shape, [seq] * batch, [completion] * batch)
    assert counter.get_total_flops() == pytest.approx(formula, rel=0.05)


@pytest.mark.slow
def test_learner_bench_runs_on_a_tiny_shape():
    proc = subprocess.run([sys.executable, "-m", "rl.bench.learner", "--shape", "tiny", "--steps", "1", "--warmup", "1"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    step = re.search(r"step ([\d.]+)s = generation ([\d.]+)s \+ scoring/ref ([\d.]+)s \+ update ([\d.]+)s", out)
    assert step, out
    total, gen, score, update = map(float, step.groups())
    assert gen > 0 and update > 0 and gen + score + update == pytest.approx(total, abs=0.02)
    tokens = re.search(r"tokens/s: generation ([\d,]+) \(new tokens\), update ([\d,]+)", out)
    assert tokens and all(float(t.replace(",", "")) > 0 for t in tokens.groups())
    mfu = re.search(r"MFU ([\d.]+)%", out)
    assert mfu and 0 < float(mfu.group(1)) < 100
    assert "(4 sequences per step)" in out  # 2 prompts x 2 samples
