"""Rollouts: generate completions (token ids, sampled-token logprobs, text, finish
reason) with the current LoRA policy, fast and provably on-policy.

Backends behind one interface (:class:`RolloutEngine`):

- ``ray-vllm`` (default): a pool of Ray actors, one vLLM engine each (pool.py);
- ``vllm``: one vLLM engine, no Ray (vllm_engine.py);
- ``hf``: transformers ``generate`` + PEFT, where vLLM cannot run (hf_engine.py).

    engine = make_rollout_engine(model_dir, cfg.rollout, cfg.lora, seed=cfg.seed)
    engine.set_adapter("runs/x/adapter_sync/v000001", version=1)   # before the next generate
    results = engine.generate(chat_prompts_or_token_ids, cfg.sampling)
    engine.shutdown()
"""
from __future__ import annotations

import logging
import os

from rl.core.config import LoraSettings, RolloutConfig
from rl.core.ray_cluster import join_launch_cluster, launch_address_file, launch_name
from rl.rollout.base import (
    VLLM_MAX_LORA_RANKS, AdapterError, Completion, PromptResult, RolloutEngine, check_adapter,
)

__all__ = ["AdapterError", "Completion", "PromptResult", "RolloutEngine", "check_adapter",
           "connect_rollout_engine", "make_rollout_engine"]
log = logging.getLogger(__name__)


def check_rollout_config(rollout: RolloutConfig, lora: LoraSettings | None) -> None:
    """Settings errors that would otherwise surface deep inside vLLM or Ray."""
    if rollout.backend != "hf" and rollout.max_lora_rank not in VLLM_MAX_LORA_RANKS:
        raise ValueError(f"rollout.max_lora_rank={rollout.max_lora_rank}: vLLM accepts {list(VLLM_MAX_LORA_RANKS)}")
    if lora is not None and lora.r > rollout.max_lora_rank:
        raise ValueError(f"lora.r={lora.r} exceeds rollout.max_lora_rank={rollout.max_lora_rank}")
    if rollout.num_workers < 1 or rollout.max_failures < 0:
        raise ValueError("rollout.num_workers must be >= 1 and rollout.max_failures >= 0")
    if rollout.tensor_parallel_size < 1 or (rollout.tensor_parallel_size > 1 and rollout.backend != "vllm"):
        raise ValueError(f"rollout.tensor_parallel_size={rollout.tensor_parallel_size}: must be >= 1, and > 1 "
                         "needs rollout.backend: vllm (one in-process engine sharded over the GPUs)")
    if not rollout.generation_timeout_s > 0:
        raise ValueError(f"rollout.generation_timeout_s must be > 0 seconds, got {rollout.generation_timeout_s}")
    if rollout.dtype == "bfloat16" and not _has_gpu() and not cpu_has_native_bf16():
        log.warning("rollout.dtype=bfloat16 on a CPU without native bf16 (no avx512_bf16/amx): matmuls are "
                    "emulated and several times slower than float32; consider --rollout.dtype float32")


def make_rollout_engine(model_path: str, rollout: RolloutConfig, lora: LoraSettings | None = None,
                        seed: int = 0) -> RolloutEngine:
    check_rollout_config(rollout, lora)
    if rollout.backend == "ray-vllm":
        from rl.rollout.pool import RolloutPool

        return RolloutPool(model_path, rollout, lora, seed)
    if rollout.backend == "vllm":
        from rl.rollout.vllm_engine import VLLMEngine

        return VLLMEngine(model_path, rollout, lora, seed)
    if rollout.backend == "hf":
        from rl.rollout.hf_engine import HFEngine

        return HFEngine(model_path, rollout, lora, seed)
    raise ValueError(f"rollout.backend must be ray-vllm, vllm or hf, got {rollout.backend!r}")


def connect_rollout_engine(model_path: str, rollout: RolloutConfig, lora: LoraSettings | None = None,
                           seed: int = 0, create: bool = True) -> RolloutEngine:
    """One pool for all learner processes of an ``accelerate launch``: the process
    with ``create=True`` starts it, the others attach to its named actors. Only the
    creator should call ``set_adapter``; the others see its versions."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1 and create:
        return make_rollout_engine(model_path, rollout, lora, seed)
    if rollout.backend != "ray-vllm":
        raise ValueError(f"rollout.backend={rollout.backend} cannot be shared by {world} learner processes; "
                         "use ray-vllm")
    check_rollout_config(rollout, lora)
    from rl.rollout.pool import RolloutPool

    # All ranks join one cluster (rl/core/ray_cluster.py); train() usually joined it already.
    _, address_file = join_launch_cluster(rollout.ray_address, create)
    name = launch_name()
    if create:
        pool = RolloutPool(model_path, rollout, lora, seed, name=name)
        pool.cleanup_files += [address_file] if address_file else []
        return pool
    return RolloutPool.attach(name, model_path, rollout, address_file=launch_address_file())


def _has_gpu() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def cpu_has_native_bf16() -> bool:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return True  # unknown: do not warn
    return any(flag in flags.split() for flag in ("avx512_bf16", "amx_bf16"))
