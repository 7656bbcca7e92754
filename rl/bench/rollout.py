"""Rollout throughput benchmark (issue 4): the Ray/vLLM pool against TRL's own
transformers-based generation path, plus the CPU's bf16 matmul peak measured in
the same run.

    python -m rl.bench rollout --workload shape
    python -m rl.bench rollout --workload realistic --model-dir DIR --adapter-dir DIR

(b) "shape": a random ~24M-parameter Qwen2, 64 prompts x 8 samples, fixed 128 new
tokens. (a) "realistic": the SFT'd toy model with its LoRA adapter, 64 training
prompts x 8 samples, up to 256 new tokens ending at EOS. The pool runs in bf16
only where the CPU computes bf16 natively (avx512_bf16/amx); elsewhere bf16 is
emulated and several times slower than fp32, so it runs in fp32 and says so.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

from rl.core.config import REPO_ROOT, RolloutConfig, SamplingConfig
from rl.tools.random_models import build_random_qwen2, save_random_lora

@dataclass
class BenchSampling(SamplingConfig):
    """SamplingConfig + ignore_eos (fixed-length completions for the shape workload)."""

    ignore_eos: bool = False


@dataclass
class Workload:
    name: str
    model_dir: str
    adapter_dir: str | None
    prompts: list[list[int]]
    sampling: BenchSampling
    lora_rank: int


def shape_workload(cache: Path, num_prompts: int, n: int, max_tokens: int) -> Workload:
    """(b): a random ~24M-parameter Qwen2 (hidden 512, 8 heads of 64, 6 layers), random
    prompts of 16-64 tokens, fixed-length completions, and a random r=16 adapter."""
    model_dir = cache / "shape-qwen2-24m"
    if not (model_dir / "config.json").exists():
        build_random_qwen2(model_dir, hidden_size=512, num_layers=6, num_heads=8, num_kv_heads=8,
                           intermediate_size=1536, vocab_size=8192)
    adapter_dir = cache / "shape-lora-r16"
    if not (adapter_dir / "adapter_config.json").exists():
        save_random_lora(model_dir, adapter_dir, r=16)
    rng = random.Random(0)
    vocab = json.loads((model_dir / "config.json").read_text())["vocab_size"]
    prompts = [[rng.randrange(3, vocab) for _ in range(rng.randint(16, 64))] for _ in range(num_prompts)]
    sampling = BenchSampling(n=n, temperature=1.0, top_p=1.0, top_k=-1, max_tokens=max_tokens, seed=0,
                             ignore_eos=True)
    return Workload("shape", str(model_dir), str(adapter_dir), prompts, sampling, 16)


def realistic_workload(config: str | None, model_dir: str | None, adapter_dir: str | None,
                       num_prompts: int, n: int, max_tokens: int) -> Workload:
    """(a): the (SFT'd) model with its adapter, training prompts of varied length
    rendered as training renders them, completions ending at EOS."""
    from transformers import AutoTokenizer

    from rl.core import resolve
    from rl.learn.sft import cold_start_adapter
    from rl.core.config import load_config
    from rl.core.prompts import load_templates, prompt_for_example

    cfg = load_config(config or str(REPO_ROOT / "configs" / "toy.yaml"))
    model_dir = model_dir or resolve.model_path(cfg)
    adapter_dir = adapter_dir or cold_start_adapter(cfg)
    if adapter_dir is None:
        raise SystemExit("realistic workload: pass --adapter-dir (or a config whose model.init_adapter names one)")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    templates = load_templates(cfg.prompt.templates_dir)
    own_data = Path(model_dir).parent / "train.jsonl"  # a toy world's model: use that world's sentences
    if own_data.is_file():
        from rl.core.data import load_jsonl

        examples = load_jsonl(own_data)[:num_prompts]
    else:
        examples = resolve.train_examples(cfg)[:num_prompts]
    texts = [prompt_for_example(ex, tokenizer, cfg.prompt, templates, seed=cfg.seed)[0] for ex in examples]
    prompts = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    s = cfg.sampling
    sampling = BenchSampling(n=n, temperature=s.temperature, top_p=s.top_p, top_k=s.top_k, max_tokens=max_tokens,
                             stop=list(s.stop), seed=0)
    rank = json.loads((Path(adapter_dir) / "adapter_config.json").read_text())["r"]
    return Workload("realistic", str(model_dir), str(adapter_dir), prompts, sampling, rank)


def matmul_peak(dtype_name: str, seconds: float = 3.0) -> float:
    """Best GFLOP/s of a square matmul on this CPU (all torch threads), size picked
    so that one product takes well under ``seconds``."""
    import torch

    dtype = getattr(torch, dtype_name)
    size = 2048
    while True:
        a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
        start = time.perf_counter()
        a @ b
        once = time.perf_counter() - start
        if once < seconds / 4 or size <= 256:
            break
        size //= 2
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        a @ b
        best = max(best, 2 * size**3 / (time.perf_counter() - start) / 1e9)
    return best


def param_count(model_dir: str) -> int:
    """Weights a token passes through (tied embeddings counted once): FLOPs/token ~ 2x this."""
    from safetensors import safe_open

    total = 0
    for f in Path(model_dir).glob("*.safetensors"):
        with safe_open(str(f), framework="pt") as st:
            for k in st.keys():
                total += math.prod(st.get_slice(k).get_shape())
    return total


def completion_tokens(results) -> int:
    return sum(len(c.token_ids) for r in results for c in r.completions)


def run_pool(w: Workload, rollout: RolloutConfig, with_adapter_too: bool) -> dict:
    from rl.rollout.pool import RolloutPool

    out: dict = {}
    start = time.perf_counter()
    pool = RolloutPool(w.model_dir, rollout, None, seed=0)
    out["pool_start_s"] = time.perf_counter() - start
    try:
        warm = dataclasses.replace(w.sampling, n=2, max_tokens=8)
        pool.generate(w.prompts[:2 * rollout.num_workers], warm)  # first batch pays one-off costs
        if w.adapter_dir and with_adapter_too:
            start = time.perf_counter()
            results = pool.generate(w.prompts, w.sampling)
            out["pool_no_adapter_s"] = time.perf_counter() - start
            out["pool_no_adapter_tok_s"] = completion_tokens(results) / out["pool_no_adapter_s"]
        if w.adapter_dir:
            syncs = []
            for version in range(1, 4):
                start = time.perf_counter()
                pool.set_adapter(w.adapter_dir, version)
                syncs.append(time.perf_counter() - start)
            out["sync_s"] = sorted(syncs)[1]
            pool.generate(w.prompts[:2 * rollout.num_workers], warm)
        start = time.perf_counter()
        results = pool.generate(w.prompts, w.sampling)
        out["pool_s"] = time.perf_counter() - start
        out["pool_tokens"] = completion_tokens(results)
        out["pool_tok_s"] = out["pool_tokens"] / out["pool_s"]
        out["pool_mean_len"] = out["pool_tokens"] / (len(w.prompts) * w.sampling.n)
    finally:
        pool.shutdown()
    return out


def run_trl_path(w: Workload, threads: int | None = None) -> dict:
    """TRL 1.16 GRPOTrainer's generation without vLLM (``_generate_single_turn``,
    regular path): the unwrapped (PEFT) model's ``generate`` on the whole batch, each
    prompt repeated n times, left-padded, with the GenerationConfig TRL builds;
    the model in float32, as TRL loads it on a CPU without bf16 flags."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    if threads:
        torch.set_num_threads(threads)
    tokenizer = AutoTokenizer.from_pretrained(w.model_dir)
    model = AutoModelForCausalLM.from_pretrained(w.model_dir, dtype=torch.float32)
    if w.adapter_dir:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, w.adapter_dir)
    model.eval()
    eos = model.generation_config.eos_token_id
    eos = [eos] if isinstance(eos, int) else list(eos)
    s = w.sampling
    gen_kwargs = dict(max_new_tokens=s.max_tokens, do_sample=True, pad_token_id=tokenizer.pad_token_id,
                      bos_token_id=tokenizer.bos_token_id, eos_token_id=eos, temperature=s.temperature,
                      top_p=s.top_p, top_k=s.top_k if s.top_k > 0 else 0, min_p=None, repetition_penalty=1.0,
                      cache_implementation=None)
    if s.ignore_eos:
        gen_kwargs["min_new_tokens"] = s.max_tokens
    config = GenerationConfig(**gen_kwargs, disable_compile=True)
    rows = [p for p in w.prompts for _ in range(s.n)]
    width = max(map(len, rows))
    ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(p)) + p for p in rows])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in rows])
    torch.manual_seed(0)
    with torch.no_grad():
        model.generate(input_ids=ids[:2], attention_mask=mask[:2], generation_config=GenerationConfig(
            **{**gen_kwargs, "max_new_tokens": 4, "min_new_tokens": None}, disable_compile=True))
        start = time.perf_counter()
        out = model.generate(input_ids=ids, attention_mask=mask, generation_config=config)
        elapsed = time.perf_counter() - start
    completion = out[:, width:]
    is_eos = torch.isin(completion, torch.tensor(eos))
    first = torch.where(is_eos.any(1), is_eos.int().argmax(1) + 1, torch.full((len(rows),), completion.shape[1]))
    tokens = int(first.sum())  # what TRL keeps: up to and including the first EOS
    return {"trl_s": elapsed, "trl_tokens": tokens, "trl_tok_s": tokens / elapsed, "torch_threads": torch.get_num_threads()}


def bench_rollout(workload: str = "shape", *, model_dir: str | None = None, adapter_dir: str | None = None,
                  config: str | None = None, num_workers: int = 2, dtype: str | None = None,
                  num_prompts: int = 64, n: int = 8, max_tokens: int | None = None, enforce_eager: bool = False,
                  skip_trl: bool = False, trl_threads: int | None = None, cache_dir: str | None = None,
                  cpus_per_worker: int | None = None, max_num_seqs: int | None = None) -> dict:
    """Run one workload ("shape" = b, "realistic" = a); print and return the figures."""
    from rl.rollout import cpu_has_native_bf16

    workload = {"a": "realistic", "b": "shape"}.get(workload, workload)
    cache = Path(cache_dir or REPO_ROOT / "runs" / "bench")
    cache.mkdir(parents=True, exist_ok=True)
    if workload == "shape":
        w = shape_workload(cache, num_prompts, n, max_tokens or 128)
    elif workload == "realistic":
        w = realistic_workload(config, model_dir, adapter_dir, num_prompts, n, max_tokens or 256)
    else:
        raise SystemExit(f"unknown workload {workload!r}: shape or realistic")
    if dtype is None:  # bf16 only where the CPU computes it natively
        dtype = "bfloat16" if cpu_has_native_bf16() else "float32"
    cpus = os.cpu_count() or 1
    rank = next(r for r in (8, 16, 32, 64, 128, 256) if r >= w.lora_rank)
    longest = max(map(len, w.prompts)) + w.sampling.max_tokens
    threads = cpus_per_worker or max(1, cpus // num_workers)
    batch = max_num_seqs or -(-len(w.prompts) * w.sampling.n // num_workers)  # default: a worker's whole share at once
    rollout = RolloutConfig(num_workers=num_workers, cpus_per_worker=threads, dtype=dtype,
                            max_model_len=max(512, longest), max_lora_rank=rank, enforce_eager=enforce_eager,
                            cpu_kv_cache_gb=3, max_num_seqs=batch)
    res: dict = {"workload": w.name, "model_dir": w.model_dir, "adapter_dir": w.adapter_dir,
                 "prompts": len(w.prompts), "n": w.sampling.n, "max_tokens": w.sampling.max_tokens,
                 "pool_dtype": dtype, "num_workers": num_workers, "cpus": cpus, "params": param_count(w.model_dir),
                 "threads_per_worker": threads, "max_num_seqs": batch, "enforce_eager": enforce_eager}
    print(f"[bench rollout] workload {w.name}: {len(w.prompts)} prompts x {w.sampling.n} samples, "
          f"{'fixed' if w.sampling.ignore_eos else 'up to'} {w.sampling.max_tokens} new tokens, "
          f"{res['params'] / 1e6:.1f}M params, adapter {w.adapter_dir}", flush=True)
    res["native_bf16"] = cpu_has_native_bf16()
    res["fp32_peak_gflops"] = matmul_peak("float32")
    res["bf16_peak_gflops"] = matmul_peak("bfloat16")
    print(f"[bench rollout] matmul peak: fp32 {res['fp32_peak_gflops']:.1f} GFLOP/s, "
          f"bf16 {res['bf16_peak_gflops']:.1f} GFLOP/s (native bf16: {cpu_has_native_bf16()})", flush=True)
    res.update(run_pool(w, rollout, with_adapter_too=(w.name == "shape")))
    flops = 2 * res["params"] * res["pool_tok_s"] / 1e9
    res["pool_pct_bf16_peak"] = 100 * flops / res["bf16_peak_gflops"]
    res["pool_pct_dtype_peak"] = 100 * flops / res[("bf16" if dtype == "bfloat16" else "fp32") + "_peak_gflops"]
    if "sync_s" in res:
        res["sync_share_of_step"] = res["sync_s"] / (res["sync_s"] + res["pool_s"])
    report_pool(res)
    if not skip_trl:
        res.update(run_trl_path(w, trl_threads))
        res["ratio"] = res["pool_tok_s"] / res["trl_tok_s"]
        report_trl(res)
    return res


P = "[bench rollout]"


def report_pool(r: dict) -> None:
    p = P
    print(f"{p} pool ({r['num_workers']} Ray/vLLM workers x {r['threads_per_worker']} thread(s), {r['pool_dtype']}, "
          f"max_num_seqs {r['max_num_seqs']}{', eager' if r['enforce_eager'] else ''}): {r['pool_tok_s']:,.0f} tok/s "
          f"({r['pool_tokens']} tokens in {r['pool_s']:.1f} s, mean length {r['pool_mean_len']:.0f}; "
          f"engine start {r['pool_start_s']:.0f} s)")
    if "pool_no_adapter_tok_s" in r:
        print(f"{p} pool without adapter: {r['pool_no_adapter_tok_s']:,.0f} tok/s (LoRA costs "
              f"{100 * (1 - r['pool_tok_s'] / r['pool_no_adapter_tok_s']):.0f}%)")
    if r["pool_dtype"] == "bfloat16" or r["native_bf16"]:
        print(f"{p} pool: {r['pool_pct_dtype_peak']:.0f}% of the {r['pool_dtype']} matmul peak, "
              f"{r['pool_pct_bf16_peak']:.0f}% of the bf16 peak (2 FLOPs/param/token)")
    else:  # emulated bf16 is orders of magnitude slower: a share of it means nothing
        print(f"{p} pool: {r['pool_pct_dtype_peak']:.0f}% of the {r['pool_dtype']} matmul peak (2 FLOPs/param/token); "
              f"no native bf16 on this CPU (bf16 matmul {r['bf16_peak_gflops']:.1f} GFLOP/s)")
    if "sync_s" in r:
        print(f"{p} adapter sync: {r['sync_s'] * 1e3:.0f} ms = {100 * r['sync_share_of_step']:.1f}% of "
              "(sync + generation)", flush=True)


def report_trl(r: dict) -> None:
    p = P
    if "trl_tok_s" in r:  # the last line is the ratio
        print(f"{p} TRL transformers path (fp32 generate, {r['torch_threads']} threads): {r['trl_tok_s']:,.0f} tok/s "
              f"({r['trl_tokens']} tokens in {r['trl_s']:.1f} s)")
        print(f"{p} ratio pool / TRL on {r['workload']}: {r['ratio']:.2f}x")


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", choices=["both", "shape", "realistic", "a", "b"], default="both",
                        help="both (default): shape (b), then realistic (a); a = realistic, b = shape")
    parser.add_argument("--model-dir", default=None, help="realistic: base model dir (default: the config's)")
    parser.add_argument("--adapter-dir", default=None, help="realistic: LoRA adapter (default: the config's cold start)")
    parser.add_argument("--config", default=None, help="realistic: config for data/prompts (default configs/toy.yaml)")
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--dtype", default=None, help="pool dtype (default: bfloat16 if the CPU has native bf16)")
    parser.add_argument("--num-prompts", type=int, default=64)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=None)
    parser.add_argument("--enforce-eager", action="store_true")
    parser.add_argument("--skip-trl", action="store_true")
    parser.add_argument("--trl-threads", type=int, default=None, help="torch threads for TRL's path (default: torch's)")
    parser.add_argument("--cache-dir", default=None, help="where the shape model is built (default runs/bench)")
    parser.add_argument("--cpus-per-worker", type=int, default=None,
                        help="threads per worker (default: the machine's cores / --num-workers)")
    parser.add_argument("--max-num-seqs", type=int, default=None,
                        help="sequences a worker decodes at once (default: its whole share of the batch)")
    a = parser.parse_args(argv)
    workloads = ["shape", "realistic"] if a.workload == "both" else [a.workload]  # bench_rollout maps a/b
    results = [
        bench_rollout(w, model_dir=a.model_dir, adapter_dir=a.adapter_dir, config=a.config,
                      num_workers=a.num_workers, dtype=a.dtype, num_prompts=a.num_prompts, n=a.n,
                      max_tokens=a.max_tokens, enforce_eager=a.enforce_eager, skip_trl=a.skip_trl,
                      trl_threads=a.trl_threads, cache_dir=a.cache_dir, cpus_per_worker=a.cpus_per_worker,
                      max_num_seqs=a.max_num_seqs)
        for w in workloads
    ]
    if len(results) > 1:  # a summary whose last line is the ratio on (a)
        shape, real = results
        peak = "bf16" if shape["pool_dtype"] == "bfloat16" or shape["native_bf16"] else shape["pool_dtype"]
        share = shape["pool_pct_bf16_peak"] if peak == "bf16" else shape["pool_pct_dtype_peak"]
        gflops = shape["bf16_peak_gflops"] if peak == "bf16" else shape["fp32_peak_gflops"]
        print(f"{P} summary: (b) shape {shape['pool_tok_s']:,.0f} tok/s = {share:.0f}% of the {peak} matmul peak "
              f"({gflops:.0f} GFLOP/s); (a) adapter sync "
              f"{100 * real.get('sync_share_of_step', float('nan')):.1f}% of (sync + generation)")
        if "ratio" in real:
            print(f"{P} ratio pool / TRL on (a) realistic: {real['ratio']:.2f}x")
    return results


if __name__ == "__main__":
    main()
