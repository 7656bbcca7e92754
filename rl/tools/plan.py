"""`rl/train.py --config X --dry-run`: check a run before it spends GPU hours.

Prints what runs where (learner processes, Ray, rollout workers and their GPU
fractions, the COMET actor), estimates the memory each GPU will hold from the
model's shape and the settings, refuses (non-zero exit, numbers shown) a layout
that cannot fit, refuses what the run's own start-up checks would refuse (the same
functions: reward spec, cold-start adapter, writable run dir), and warns about
settings known to waste a run. It reads only small files (config.json, data, an
adapter's safetensors header) and writes only an empty probe dir it removes: no
weights load, no Ray starts, and torch is imported only to detect a local GPU
when ``hardware.gpu_memory_gb`` is unset.

The estimate is arithmetic, not a measurement; every constant below says where
it comes from or that it was chosen here. All sizes are GiB (2**30 bytes).
"""
from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rl.core.config import Config

GIB = 2**30
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}

# Activation bytes per token, per hidden unit, per layer for a 16-bit forward kept
# for backward: 34 (Korthikanti et al. 2022, "Reducing Activation Recomputation in
# Large Transformer Models", eq. 2, without its 5*a*s/h attention-score term, which
# flash/SDPA attention kernels do not store). Scaled by dtype size / 2.
ACTIVATION_FACTOR = 34
# Logits: TRL keeps logits only for completion tokens; per element we count 8 bytes
# (16-bit logits, the temperature-scaled copy, fp32 log-softmax rows, the gradient;
# rounded up). Chosen here.
LOGIT_BYTES = 8
CUDA_CONTEXT_GIB = 0.5  # per process on a GPU: CUDA context + cuBLAS workspace (chosen here)
VLLM_OVERHEAD_GIB = 1.5  # vLLM beyond weights + KV: CUDA graphs, sampler, profiling peak (chosen here)
VLLM_LORA_SLOTS = 2  # adapter versions a worker holds at once (current + previous)
# COMET: wmt22-comet-da / wmt22-cometkiwi-da are XLM-R-large sized; their checkpoint
# is ~2.3 GB (2.16 GiB) of fp32 weights. At inference COMET keeps the hidden states of
# all 25 layers (its layer mix) for 3 segments (src, mt, ref) of ~128 tokens (chosen here).
# XCOMET-XXL (10.7B) and -XL (3.5B) parameters in fp32; others as wmt22-comet-da.
COMET_WEIGHTS_GIB = {"xxl": 10.7e9 * 4 / GIB, "xl": 3.5e9 * 4 / GIB, "default": 2.16}
COMET_LAYERS, COMET_HIDDEN, COMET_TOKENS = 25, 1024, 128
TIGHT = 0.90  # warn above this share of a GPU's memory
COT_MIN_TOKENS = 256  # a CoT + answer for one sentence rarely fits in less (R1-T1 format)
ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


# ----------------------------------------------------------------------------- model shapes

@dataclass(frozen=True)
class ModelShape:
    """The numbers of a decoder-only (Llama/Qwen2-style) config.json that size memory and FLOPs."""

    name: str
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool
    attention_bias: bool = True  # Qwen2 has q/k/v biases
    head_dim: int | None = None
    dtype_bytes: int = 2  # of the checkpoint (torch_dtype), for model.dtype=auto

    @property
    def head_size(self) -> int:
        return self.head_dim or self.hidden_size // self.num_heads

    def module_dims(self) -> dict[str, tuple[int, int]]:
        """(in, out) features of each linear layer in one decoder layer."""
        h, q, kv, i = self.hidden_size, self.num_heads * self.head_size, self.num_kv_heads * self.head_size, self.intermediate_size
        return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
                "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}

    def params(self) -> int:
        dims = self.module_dims()
        per_layer = sum(a * b for a, b in dims.values()) + 2 * self.hidden_size  # + two RMSNorms
        if self.attention_bias:
            per_layer += dims["q_proj"][1] + dims["k_proj"][1] + dims["v_proj"][1]
        embed = self.vocab_size * self.hidden_size
        head = 0 if self.tie_word_embeddings else embed
        return embed + self.num_layers * per_layer + self.hidden_size + head

    def body_params(self) -> int:
        """Parameters the decoder layers multiply with (no embedding table, no LM head)."""
        head = 0 if self.tie_word_embeddings else self.vocab_size * self.hidden_size
        return self.params() - self.vocab_size * self.hidden_size - head - self.hidden_size

    def lora_params(self, r: int, target_modules: list[str]) -> tuple[int, list[str]]:
        """LoRA A (r x in) + B (out x r) per targeted linear layer; returns (count, unknown names)."""
        dims = self.module_dims()
        names = list(ALL_LINEAR) if "all-linear" in target_modules else target_modules
        unknown = [m for m in names if m not in dims]
        per_layer = sum(r * (dims[m][0] + dims[m][1]) for m in names if m in dims)
        return self.num_layers * per_layer, unknown

    def kv_bytes_per_token(self, dtype_bytes: int) -> int:
        return 2 * self.num_layers * self.num_kv_heads * self.head_size * dtype_bytes

    @classmethod
    def from_config_dict(cls, d: dict[str, Any], name: str) -> "ModelShape":
        d = d.get("text_config", d) if "hidden_size" not in d else d
        try:
            heads = d["num_attention_heads"]
            return cls(
                name=name, hidden_size=d["hidden_size"], num_layers=d["num_hidden_layers"], num_heads=heads,
                num_kv_heads=d.get("num_key_value_heads") or heads, intermediate_size=d["intermediate_size"],
                vocab_size=d["vocab_size"], tie_word_embeddings=bool(d.get("tie_word_embeddings", False)),
                attention_bias=bool(d.get("attention_bias", d.get("model_type") == "qwen2")),
                head_dim=d.get("head_dim"),
                dtype_bytes=DTYPE_BYTES.get(str(d.get("torch_dtype") or d.get("dtype") or "bfloat16"), 2),
            )
        except KeyError as exc:
            raise ValueError(f"{name}: config.json lacks {exc.args[0]}; cannot size the model") from None


def _qwen(name, h, layers, heads, kv, inter, vocab, tie):
    return ModelShape(name, h, layers, heads, kv, inter, vocab, tie)


# The real config.json numbers of the Qwen2.5 instruct models, for machines without
# the hub: hidden, layers, heads, kv heads, intermediate, vocab, tied embeddings.
KNOWN_SHAPES: dict[str, ModelShape] = {
    s.name: s
    for s in (
        _qwen("Qwen/Qwen2.5-0.5B-Instruct", 896, 24, 14, 2, 4864, 151936, True),
        _qwen("Qwen/Qwen2.5-1.5B-Instruct", 1536, 28, 12, 2, 8960, 151936, True),
        _qwen("Qwen/Qwen2.5-3B-Instruct", 2048, 36, 16, 2, 11008, 151936, True),
        _qwen("Qwen/Qwen2.5-7B-Instruct", 3584, 28, 28, 4, 18944, 152064, False),
        _qwen("Qwen/Qwen2.5-72B-Instruct", 8192, 80, 64, 8, 29568, 152064, False),  # the synth-r1t1 teacher
    )
}


def known_shape(name: str) -> ModelShape | None:
    """Table lookup by hub id, case-insensitive, with or without the org and "-Instruct"."""
    def norm(s: str) -> str:
        return s.lower().rsplit("/", 1)[-1].removesuffix("-instruct")

    for key, shape in KNOWN_SHAPES.items():
        if norm(key) == norm(name):
            return shape
    return None


def model_shape(cfg: Config, name: str | None = None) -> tuple[ModelShape | None, str]:
    """The model's shape (or model ``name``'s, e.g. ppo.critic_model) and where it came from;
    never loads weights."""
    name = cfg.model.name_or_path if name is None else name
    if name == "toy":
        t = cfg.toy
        shape = ModelShape("toy", t.hidden_size, t.num_layers, t.num_heads, t.num_heads, t.intermediate_size,
                           t.tokenizer_vocab, True, dtype_bytes=4)
        return shape, "toy settings (toy.*)"
    local = Path(name).expanduser() / "config.json"
    if local.is_file():
        return ModelShape.from_config_dict(json.loads(local.read_text()), name), str(local)
    try:  # the Hugging Face cache, without touching the network (or importing transformers)
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(name, "config.json")
        if isinstance(cached, str) and Path(cached).is_file():
            return ModelShape.from_config_dict(json.loads(Path(cached).read_text()), name), f"HF cache ({cached})"
    except Exception:  # noqa: BLE001 - an odd cache or id just means "not cached"
        pass
    shape = known_shape(name)
    if shape is not None:
        return shape, "built-in table (rl/tools/plan.py KNOWN_SHAPES)"
    return None, "unknown (not a local dir, not in the HF cache, not in the built-in table)"


# ----------------------------------------------------------------------------- the estimate

def learner_processes(cfg: Config) -> int:
    """$WORLD_SIZE under accelerate launch, else hardware.learner_processes, else 1."""
    env = os.environ.get("WORLD_SIZE")
    if env and env.isdigit():
        return int(env)
    return cfg.hardware.learner_processes or 1


def reward_uses_comet(spec: Any) -> bool:
    """The r1t1 and mt-r1-zero presets use COMET(-Kiwi); any spec naming comet does too."""
    if isinstance(spec, str):
        return spec in ("r1t1", "mt-r1-zero") or "comet" in spec.lower()
    if isinstance(spec, dict):
        return reward_uses_comet(spec.get("name", ""))
    if isinstance(spec, (list, tuple)):
        return any(reward_uses_comet(s) for s in spec)
    return False


def adapter_rank(cfg: Config) -> int:
    """LoRA rank GRPO trains: the cold-start adapter's if it exists on disk, else lora.r."""
    path = cold_start_path(cfg)
    if path is not None and (path / "adapter_config.json").is_file():
        try:
            return int(json.loads((path / "adapter_config.json").read_text())["r"])
        except (KeyError, ValueError, TypeError):
            pass
    return cfg.lora.r


def cold_start_path(cfg: Config) -> Path | None:
    if cfg.model.init_adapter is None:
        return None
    if cfg.model.init_adapter == "auto":
        return Path(cfg.output_dir) / cfg.sft.run_name / "adapter"
    return Path(cfg.model.init_adapter)


def micro_batch(cfg: Config, processes: int) -> tuple[int, int]:
    """(sequences per forward/backward on one learner process, remainder of the split); PPO's
    mini-batches (ppo.minibatches) split the step's completions further."""
    completions = cfg.grpo.prompts_per_step * cfg.sampling.n
    minibatches = cfg.ppo.minibatches if cfg.grpo.algorithm == "ppo" else 1
    return divmod(completions, processes * cfg.grpo.gradient_accumulation_steps * minibatches)


def estimate_memory(cfg: Config, model_shape: ModelShape, gpu_memory_gb: float | None,
                    processes: int | None = None, critic_shape: ModelShape | None = None) -> dict[str, Any]:
    """Memory (GiB) of one learner process, one rollout worker and the COMET actor.

    Learner: weights (model.dtype) + LoRA in fp32 (PEFT keeps adapters in fp32 beside a
    16-bit base) + a frozen copy of the cold-start adapter when beta > 0 (TRL's "ref"
    adapter; without a cold start the reference is the adapter-disabled base: no extra
    weights) + fp32 gradients and Adam's two moments for the LoRA parameters (12 bytes
    each) + activations (micro-batch x sequence x hidden x layers x 34 bytes, or with
    gradient checkpointing only each layer's input plus one layer's full set) + logits
    for the completion tokens (micro-batch x max_tokens x vocab x 8 bytes) + CUDA context.
    PPO (grpo.algorithm: ppo) adds the critic: its LoRA (ppo.critic_lora_r) with fp32 gradients
    and Adam moments (16 bytes per parameter) and the value head, and the activations of its
    forward pass, never checkpointed (rl/learn/ppo.py: Critic.values) and alive beside the
    policy's until the one backward pass; no second copy of the base weights. With a separate
    critic model (ppo.critic_model, shape ``critic_shape``) its own weights (model.dtype) count too,
    and its LoRA and activations are sized on its shape.

    Rollout worker (vLLM): it claims gpu_memory_utilization x GPU memory whatever the
    model; that budget must hold weights (rollout.dtype) + LoRA slots + the KV cache of
    at least one max_model_len sequence + overhead. hf backend: weights + KV of its share
    of the step's sequences.

    COMET actor (only when the reward uses COMET and reward.comet_gpus > 0): weights +
    hidden states of all layers for one batch + CUDA context.
    """
    s = model_shape
    processes = processes or learner_processes(cfg)
    g, smp, ro = cfg.grpo, cfg.sampling, cfg.rollout
    wbytes = DTYPE_BYTES.get(cfg.model.dtype, s.dtype_bytes)
    params = s.params()
    r = adapter_rank(cfg)
    lora, unknown = s.lora_params(r, cfg.lora.target_modules)
    batch, _ = micro_batch(cfg, processes)
    batch = max(batch, 1)
    seq = g.max_prompt_length + smp.max_tokens
    tokens = batch * seq
    act_factor = ACTIVATION_FACTOR * wbytes / 2
    if g.gradient_checkpointing:
        activations = tokens * s.hidden_size * (s.num_layers * wbytes + act_factor)
    else:
        activations = tokens * s.hidden_size * s.num_layers * act_factor
    ref_copy = cfg.model.init_adapter is not None and g.beta > 0
    learner = {
        "weights": params * wbytes / GIB,
        "lora": lora * 4 / GIB,
        "lora_ref": lora * 4 / GIB if ref_copy else 0.0,
        "grads_adam": lora * 12 / GIB,
        "activations": activations / GIB,
        "logits": batch * smp.max_tokens * s.vocab_size * LOGIT_BYTES / GIB,
        "cuda_context": CUDA_CONTEXT_GIB,
    }
    if g.algorithm == "ppo":
        c = critic_shape or s
        if critic_shape is not None:
            learner["critic_weights"] = c.params() * wbytes / GIB
        critic_lora, _ = c.lora_params(cfg.ppo.critic_lora_r, cfg.lora.target_modules)
        learner["critic"] = (critic_lora + c.hidden_size + 1) * 16 / GIB
        learner["critic_activations"] = tokens * c.hidden_size * c.num_layers * act_factor / GIB
    learner["total"] = sum(learner.values())

    rbytes = DTYPE_BYTES.get(ro.dtype, s.dtype_bytes)
    kv_token = s.kv_bytes_per_token(rbytes)
    rweights = params * rbytes / GIB
    slots = VLLM_LORA_SLOTS * sum(ro.max_lora_rank * (a + b) for a, b in s.module_dims().values()) * s.num_layers
    slots_gib = slots * rbytes / GIB
    step_seqs = math.ceil(g.prompts_per_step * smp.n / max(ro.num_workers, 1))
    worker: dict[str, Any] = {"weights": rweights, "lora_slots": slots_gib, "kv_per_token_bytes": kv_token}
    if ro.backend == "hf":
        worker["kv_step"] = step_seqs * seq * kv_token / GIB
        worker["needed"] = worker["total"] = rweights + slots_gib + worker["kv_step"] + CUDA_CONTEXT_GIB
    else:
        worker["kv_min"] = ro.max_model_len * kv_token / GIB
        worker["overhead"] = VLLM_OVERHEAD_GIB
        worker["needed"] = rweights + slots_gib + worker["kv_min"] + VLLM_OVERHEAD_GIB
        if gpu_memory_gb is not None:
            worker["reserved"] = worker["total"] = ro.gpu_memory_utilization * gpu_memory_gb
            room = worker["reserved"] - rweights - slots_gib - VLLM_OVERHEAD_GIB
            worker["kv_tokens"] = max(0, int(room * GIB // kv_token))
            worker["kv_sequences"] = worker["kv_tokens"] // seq
        else:
            worker["total"] = worker["needed"]

    comet = None
    if reward_uses_comet(cfg.reward.spec):
        kind = _comet_kind(cfg.reward.comet_model)
        acts = cfg.reward.comet_batch_size * 3 * COMET_TOKENS * COMET_HIDDEN * COMET_LAYERS * 4 / GIB
        comet = {"weights": COMET_WEIGHTS_GIB[kind], "activations": acts, "cuda_context": CUDA_CONTEXT_GIB}
        comet["total"] = sum(comet.values())
    return {
        "learner": learner, "rollout_worker": worker, "comet": comet,
        "params": params, "lora_params": lora, "lora_rank": r, "unknown_lora_modules": unknown,
        "micro_batch": batch, "seq_len": seq, "step_sequences_per_worker": step_seqs,
    }


def _comet_kind(name: str | None) -> str:
    low = (name or "").lower()
    return "xxl" if "xxl" in low else "xl" if "-xl" in low or "_xl" in low else "default"


# ----------------------------------------------------------------------------- placement

@dataclass
class Gpu:
    label: str
    free: float = 1.0  # Ray's GPU share still unclaimed
    items: list[tuple[str, float]] = field(default_factory=list)

    @property
    def total(self) -> float:
        return sum(v for _, v in self.items)


def place(cfg: Config, mem: dict[str, Any], processes: int, gpus_per_node: int, ray_address: str | None):
    """Put learners and Ray actors on GPUs the way accelerate and Ray would.

    accelerate: rank r on node r // gpus_per_node, GPU r % gpus_per_node. Ray: a local
    cluster (started by rank 0) sees node 0's GPUs, which the learners also use; an
    external cluster's GPUs are assumed to be its own (start it on GPUs the learners
    don't use, see README "Scaling out"). Ray gives whole GPUs to requests >= 1 and
    packs fractions onto the fullest GPU that still has room.
    Returns (node GPUs in use, GPUs of an external Ray cluster, errors, actor placement lines).
    """
    errors: list[str] = []
    lines: list[str] = []
    nodes = max(1, math.ceil(processes / gpus_per_node))
    grid = [[Gpu(f"node {n} GPU {i}") for i in range(gpus_per_node)] for n in range(nodes)]
    for rank in range(processes):
        grid[rank // gpus_per_node][rank % gpus_per_node].items.append(("learner", mem["learner"]["total"]))
    external = ray_address is not None
    ray_gpus: list[Gpu] = [] if external else grid[0]

    actors: list[tuple[str, float, float]] = []  # (label, gpu share, GiB)
    ro = cfg.rollout
    if ro.backend == "vllm":
        grid[0][0].items.append(("vLLM engine (in rank 0)", mem["rollout_worker"]["total"]))
        lines.append("rollout     1 vLLM engine inside learner rank 0 (backend vllm, no Ray) -> node 0 GPU 0")
    elif ro.gpus_per_worker > 0:
        actors += [(f"rollout worker {i}", ro.gpus_per_worker, mem["rollout_worker"]["total"])
                   for i in range(ro.num_workers)]
    comet = mem.get("comet")
    if comet is not None and cfg.reward.comet_gpus > 0:
        actors.append(("COMET actor", cfg.reward.comet_gpus, comet["total"]))

    for label, share, gib in actors:
        if share > 1 and share != int(share):
            errors.append(f"{label}: Ray needs a whole number of GPUs above 1, got {share}")
            continue
        chosen = _ray_pick(ray_gpus, share, external)
        if chosen is None:
            need = sum(a[1] for a in actors)
            errors.append(
                f"Ray cannot place {label} ({share} GPU): the local cluster has {len(ray_gpus)} GPU(s) and the "
                f"actors ask for {need:g} in all; Ray would wait forever. Lower rollout.gpus_per_worker / "
                "reward.comet_gpus, or join a bigger cluster (rollout.ray_address)"
            )
            continue
        # vLLM claims gpu_memory_utilization of *each* GPU it spans; other actors split their total
        per_gpu = gib if label.startswith("rollout") and "reserved" in mem["rollout_worker"] else gib / len(chosen)
        for gpu in chosen:
            gpu.free -= min(share, 1.0)
            gpu.items.append((label.rsplit(" ", 1)[0] if label.startswith("rollout") else label, per_gpu))
        lines.append(f"{label:<18} {share:g} GPU -> {', '.join(g.label for g in chosen)}")
    node_gpus = [gpu for row in grid for gpu in row if gpu.items]
    return node_gpus, (ray_gpus if external else []), errors, lines


def _ray_pick(gpus: list[Gpu], share: float, grow: bool) -> list[Gpu] | None:
    eps = 1e-9
    if share >= 1:
        free = [g for g in gpus if g.free >= 1 - eps]
        while grow and len(free) < share:
            gpus.append(Gpu(f"Ray GPU {len(gpus)}"))
            free.append(gpus[-1])
        return free[: int(share)] if len(free) >= share else None
    fits = [g for g in gpus if g.free >= share - eps]
    if not fits:
        if not grow:
            return None
        gpus.append(Gpu(f"Ray GPU {len(gpus)}"))
        fits = [gpus[-1]]
    return [min(fits, key=lambda g: g.free)]  # best fit: pack, like Ray does with fractions


# ----------------------------------------------------------------------------- checks

def check_settings(cfg: Config, processes: int, model_known_real: bool) -> tuple[list[str], list[str]]:
    """(errors that would fail or waste the run, warnings about harmful settings)."""
    errors, warnings = [], []
    g, smp, ro = cfg.grpo, cfg.sampling, cfg.rollout
    if smp.n < 2 and g.algorithm == "grpo":  # PPO's critic is its baseline: any n
        errors.append(f"sampling.n={smp.n}: GRPO compares samples of one prompt; it needs n >= 2")
    if smp.temperature == 0 and smp.n > 1 and g.algorithm == "grpo":
        warnings.append(f"sampling.temperature=0 with n={smp.n}: all samples of a prompt are identical, "
                        "advantages are 0 and nothing is learned")
    per_device, rest = micro_batch(cfg, processes)
    if rest or per_device == 0:
        errors.append(
            f"grpo.prompts_per_step x sampling.n = {g.prompts_per_step * smp.n} completions do not split evenly "
            f"over {processes} learner process(es) x {g.gradient_accumulation_steps} accumulation steps"
        )
    if model_known_real and smp.max_tokens < COT_MIN_TOKENS:
        warnings.append(f"sampling.max_tokens={smp.max_tokens} is shorter than a typical CoT + answer "
                        f"(>= {COT_MIN_TOKENS}); truncated completions fail the format reward")
    if model_known_real and ro.backend != "hf" and ro.max_model_len < g.max_prompt_length + smp.max_tokens:
        warnings.append(f"rollout.max_model_len={ro.max_model_len} < grpo.max_prompt_length + sampling.max_tokens "
                        f"= {g.max_prompt_length + smp.max_tokens}: long prompts get cut short completions")
    rank = adapter_rank(cfg)
    if ro.backend != "hf" and rank > ro.max_lora_rank:
        errors.append(f"LoRA rank {rank} > rollout.max_lora_rank {ro.max_lora_rank}: vLLM rejects the adapter")
    if g.beta > 0 and g.loss_type in ("dapo", "dr_grpo") and g.algorithm == "grpo":  # PPO ignores loss_type
        warnings.append(f"grpo.beta={g.beta} with loss_type={g.loss_type}: the DAPO / Dr. GRPO recipes train "
                        "without a KL term (beta=0); allowed, but unusual")
    if g.num_iterations > 1 and not g.importance_sampling_correction:
        warnings.append("grpo.num_iterations > 1 without importance_sampling_correction: later iterations "
                        "train on stale samples uncorrected")
    if model_known_real and cfg.model.dtype == "float32":
        warnings.append("model.dtype=float32 for a real model doubles learner memory; bfloat16 is the norm on GPUs")
    path = cold_start_path(cfg)
    if path is not None and cfg.model.name_or_path != "toy" and not (path / "adapter_config.json").is_file():
        warnings.append(f"cold-start adapter {path} does not exist yet: run `python rl/sft.py` with the matching "
                        "SFT recipe first (training stops at start without it)")
    return errors, warnings


def count_examples(cfg: Config) -> tuple[list[str], list[str]]:
    """Read the training (and FLORES eval) data now, so a bad corpus fails here, not at step 300."""
    from rl.core.data import DataError

    info, errors = [], []
    if cfg.data.source in ("flores", "ntrex", "jsonl", "tsv"):
        from rl.core import resolve

        try:
            n = len(resolve.train_examples(cfg))
            steps = n / cfg.grpo.prompts_per_step
            info.append(f"train data  {n} prompts from {cfg.data.source} {cfg.data.path} "
                        f"({steps:.0f} steps per pass; grpo.max_steps={cfg.grpo.max_steps})")
        except (DataError, ValueError, OSError) as exc:
            errors.append(f"training data: {exc}")
    else:
        info.append(f"train data  {cfg.data.source} (read at start)")
    if cfg.eval.data_source == "flores" and cfg.eval.data_dir is not None:
        from rl.core import resolve

        try:
            n = len(resolve.eval_examples(cfg))
            info.append(f"eval data   {n} FLORES {cfg.eval.split} segments ({cfg.eval.data_dir})")
        except (DataError, ValueError, OSError) as exc:
            errors.append(f"eval data: {exc}")
    return info, errors


def check_start(cfg: Config) -> tuple[list[str], list[str]]:
    """(errors, notes) of the checks the run itself makes at start, made here with the same
    functions and nothing loaded: the TRL / transformers versions (rl/learn/trl_bridge.py:
    check_versions), the reward spec (rewards.check: names, kwargs, the COMET
    checkpoint found), the cold-start adapter (rl/rollout/base.py: check_init_adapter) and a
    writable run directory (rl/core/runs.py: check_writable)."""
    from rewards import RewardSpecError, check_from_config
    from rl.learn.trl_bridge import VersionError, check_versions
    from rl.rollout.base import check_init_adapter
    from rl.rollout.base import AdapterError
    from rl.core.runs import RunDirError, check_writable

    errors, notes = [], []
    try:
        check_versions()
    except VersionError as exc:
        errors.append(str(exc))
    try:
        notes += check_from_config(cfg.reward)
    except RewardSpecError as exc:
        errors.append(f"reward.spec {cfg.reward.spec!r}: {exc}")
    adapter = cold_start_path(cfg)
    if adapter is not None and adapter.exists():  # "auto" before its SFT run: check_settings warns
        try:
            check_init_adapter(cfg, adapter)
        except AdapterError as exc:
            errors.append(f"model.init_adapter: {exc}")
    try:
        check_writable(Path(cfg.output_dir) / (cfg.run_name or "grpo"))
    except RunDirError as exc:
        errors.append(str(exc))
    return [e.replace("\n", "\n    ") for e in errors], notes


def detect_gpus() -> tuple[float | None, int | None, str]:
    """(GiB per GPU, GPU count, name) of this machine, or Nones without CUDA."""
    try:
        import torch

        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            return props.total_memory / GIB, torch.cuda.device_count(), props.name
    except Exception:  # noqa: BLE001 - no torch / broken driver: plan for CPU
        pass
    return None, None, ""


# ----------------------------------------------------------------------------- printing

def _fmt_parts(d: dict[str, float], keys: list[tuple[str, str]]) -> str:
    return " + ".join(f"{label} {d[k]:.2f}" for k, label in keys if d.get(k))


def print_plan(cfg: Config, out=None) -> int:
    """Print the plan and the memory estimate; 0 if the run can start, 1 if it cannot fit or would fail."""
    out = out or sys.stdout
    say = lambda text="": print(text, file=out)  # noqa: E731
    hw = cfg.hardware
    processes = learner_processes(cfg)
    gpu_gib, gpus_per_node, source = hw.gpu_memory_gb, hw.gpus_per_node, "hardware.*"
    if gpu_gib is None:
        gpu_gib, detected, name = detect_gpus()
        gpus_per_node = gpus_per_node or detected
        source = f"detected: {detected} x {name}" if gpu_gib else "no GPU here and hardware.gpu_memory_gb unset"
    gpu_plan = gpu_gib is not None
    gpus_per_node = gpus_per_node or processes
    ray_address = cfg.rollout.ray_address or os.environ.get("RAY_ADDRESS")
    shape, shape_from = model_shape(cfg)
    real = cfg.model.name_or_path != "toy"
    errors, warnings = check_settings(cfg, processes, real)
    g, smp, ro = cfg.grpo, cfg.sampling, cfg.rollout

    say(f"Plan for run '{cfg.run_name or '(unnamed)'}' (dry run: nothing loaded, nothing started)")
    say(f"  model       {cfg.model.name_or_path}  dtype {cfg.model.dtype}; shape from {shape_from}")
    cold = cold_start_path(cfg)
    if cold is not None:
        state = "exists" if (cold / "adapter_config.json").is_file() else "missing"
        say(f"  cold start  {cold} ({state}); {g.algorithm.upper()} trains it further")
    batch, _ = micro_batch(cfg, processes)
    say(f"  step        {g.prompts_per_step} prompts x {smp.n} samples = {g.prompts_per_step * smp.n} completions; "
        f"{processes} learner process(es) x {g.gradient_accumulation_steps} accumulation x micro-batch {batch}")
    say(f"  sampling    temperature {smp.temperature}, top_p {smp.top_p}, max_tokens {smp.max_tokens}; "
        + (f"beta {g.beta} (TRL's k3 KL estimator), loss {g.loss_type}" if g.algorithm == "grpo" else
           f"PPO: beta {g.beta} (" + ("per-token penalty in the reward" if cfg.ppo.kl_in_reward else "k3 KL in the loss")
           + f"), GAE gamma {cfg.ppo.gamma} lambda {cfg.ppo.lam}, {g.num_iterations} epoch(s) x "
           f"{cfg.ppo.minibatches} mini-batch(es)"))
    say(f"  reward      {cfg.reward.spec}")
    info, data_errors = count_examples(cfg)
    errors += data_errors
    start_errors, notes = check_start(cfg)
    errors += start_errors
    warnings += notes
    for line in info:
        say(f"  {line}")
    hw_text = f"{gpus_per_node} GPU(s) per node x {gpu_gib:.1f} GiB ({source})" if gpu_plan else f"CPU ({source})"
    say(f"  hardware    {hw_text}")

    say("\nWhat runs where")
    nodes = max(1, math.ceil(processes / gpus_per_node))
    device = "GPU" if gpu_plan else "CPU"
    say(f"  learner     {processes} process(es) on {nodes} node(s) (accelerate launch; rank r -> node r//{gpus_per_node}, "
        f"{device} r%{gpus_per_node}): TRL GRPOTrainer + LoRA r={adapter_rank(cfg)}"
        + (f"; PPO critic: value head + LoRA r={cfg.ppo.critic_lora_r} on "
           + (f"its own model {cfg.ppo.critic_model}" if cfg.ppo.critic_model else "the same base")
           if g.algorithm == "ppo" else ""))
    if ro.backend == "vllm":
        say("  Ray         not used (rollout.backend=vllm: one engine inside rank 0)")
    else:
        where = f"join {ray_address}" if ray_address else "a local cluster started by rank 0 on node 0 (sees node 0's GPUs)"
        say(f"  Ray         {where}")
        gpu_text = f"{ro.gpus_per_worker:g} GPU" if ro.gpus_per_worker > 0 else f"{ro.cpus_per_worker:g} CPU, no GPU"
        say(f"  rollout     {ro.num_workers} {ro.backend} worker(s), {gpu_text} each, {ro.dtype}; adapter pushed "
            "by rank 0 after every optimizer step")
    if reward_uses_comet(cfg.reward.spec):
        where = f"{cfg.reward.comet_gpus:g} GPU" if cfg.reward.comet_gpus > 0 else "CPU (reward.comet_gpus=0)"
        say(f"  COMET       one Ray actor for all learner processes, on {where}, batch {cfg.reward.comet_batch_size}")
        if gpu_plan and cfg.reward.comet_gpus == 0:
            warnings.append("the reward uses COMET on CPU: XLM-R large scoring 8 samples x every prompt is slow; "
                            "give it a GPU share (reward.comet_gpus 0.1-0.3)")
    if gpu_plan and ro.backend == "ray-vllm" and ro.gpus_per_worker == 0:
        warnings.append("rollout.gpus_per_worker=0 on a GPU machine: Ray gives the workers no GPU and CUDA vLLM "
                        "cannot start (set a fraction, e.g. 0.3 to share a GPU with a learner)")

    if shape is None:
        warnings.append(f"model shape {shape_from}: no memory estimate; pass a local model dir to get one")
        return _finish(say, processes, gpu_plan, nodes, errors, warnings)

    critic_shape = None
    if g.algorithm == "ppo" and cfg.ppo.critic_model:
        critic_shape, critic_from = model_shape(cfg, cfg.ppo.critic_model)
        if critic_shape is None:
            warnings.append(f"ppo.critic_model shape {critic_from}: its weights are not in the memory estimate")
    mem = estimate_memory(cfg, shape, gpu_gib, processes, critic_shape)
    if mem["unknown_lora_modules"]:
        warnings.append(f"lora.target_modules {mem['unknown_lora_modules']} are not linear layers of this shape; "
                        "not counted")
    learner, worker, comet = mem["learner"], mem["rollout_worker"], mem["comet"]
    size = f"{mem['params'] / 1e9:.2f}B" if mem["params"] >= 1e8 else f"{mem['params'] / 1e6:.2f}M"
    say(f"\nMemory estimate (GiB; {size} params, LoRA {mem['lora_params'] / 1e6:.1f}M trainable, "
        f"micro-batch {mem['micro_batch']} x {mem['seq_len']} tokens)")
    say(f"  learner process   {learner['total']:6.2f} = " + _fmt_parts(learner, [
        ("weights", "weights"), ("lora", "LoRA"), ("lora_ref", "ref adapter"), ("grads_adam", "grads+Adam"),
        ("activations", "activations" + (" (checkpointed)" if g.gradient_checkpointing else "")),
        ("logits", "logits"), ("critic_weights", "critic model"), ("critic", "critic LoRA+head+grads+Adam"),
        ("critic_activations", "critic activations"), ("cuda_context", "CUDA context")]))
    if ro.backend == "hf":
        say(f"  hf worker         {worker['total']:6.2f} = weights {worker['weights']:.2f} + KV for "
            f"{mem['step_sequences_per_worker']} sequences {worker['kv_step']:.2f} + context {CUDA_CONTEXT_GIB}")
    elif "reserved" in worker:
        say(f"  vLLM worker       {worker['total']:6.2f} = rollout.gpu_memory_utilization {ro.gpu_memory_utilization} "
            f"x {gpu_gib:.1f}; it needs {worker['needed']:.2f} (weights {worker['weights']:.2f} + LoRA slots "
            f"{worker['lora_slots']:.2f} + KV of one {ro.max_model_len}-token sequence {worker['kv_min']:.2f} + "
            f"overhead {VLLM_OVERHEAD_GIB}); KV room {worker['kv_tokens']:,} tokens = {worker['kv_sequences']} "
            f"sequences of {mem['seq_len']} at once (a step sends {mem['step_sequences_per_worker']} per worker)")
        if worker["needed"] > worker["total"]:
            errors.append(
                f"vLLM worker: gpu_memory_utilization {ro.gpu_memory_utilization} x {gpu_gib:.1f} GiB = "
                f"{worker['total']:.2f} GiB cannot hold weights + one sequence's KV cache ({worker['needed']:.2f} GiB); "
                "raise rollout.gpu_memory_utilization or lower rollout.max_model_len"
            )
    else:
        say(f"  vLLM worker       {worker['total']:6.2f} = weights {worker['weights']:.2f} + LoRA slots "
            f"{worker['lora_slots']:.2f} + KV of one sequence {worker['kv_min']:.2f} + overhead {VLLM_OVERHEAD_GIB} "
            f"(minimum; on CPU the KV cache is rollout.cpu_kv_cache_gb={ro.cpu_kv_cache_gb})")
    if comet is not None:
        say(f"  COMET actor       {comet['total']:6.2f} = weights {comet['weights']:.2f} + activations "
            f"{comet['activations']:.2f} (batch {cfg.reward.comet_batch_size}) + CUDA context {CUDA_CONTEXT_GIB}")

    if gpu_plan:
        node_gpus, ray_gpus, place_errors, lines = place(cfg, mem, processes, gpus_per_node, ray_address)
        errors += place_errors
        say("\nPlacement (accelerate ranks, then Ray actors)")
        for line in lines:
            say(f"  {line}")
        say(f"\nPer GPU (of {gpu_gib:.1f} GiB)")
        for label, gpu in _group(node_gpus + ray_gpus):
            parts = " + ".join(f"{name} {gib:.2f}" for name, gib in gpu.items)
            share = gpu.total / gpu_gib
            verdict = "OK" if share <= TIGHT else "TIGHT" if share <= 1 else "DOES NOT FIT"
            say(f"  {label:<22} {gpu.total:6.2f} = {parts}  ({share:.0%}) {verdict}")
            if share > 1:
                errors.append(f"{label}: needs {gpu.total:.2f} GiB > {gpu_gib:.1f} GiB ({parts})")
            elif share > TIGHT:
                warnings.append(f"{label}: {gpu.total:.2f} of {gpu_gib:.1f} GiB ({share:.0%}); little room for "
                                "fragmentation and longer-than-planned sequences")
        if any(e.startswith(("node", "Ray GPU")) for e in errors):
            say("  to fit: raise grpo.gradient_accumulation_steps (smaller micro-batch), set "
                "grpo.gradient_checkpointing true, lower rollout.gpu_memory_utilization, or move rollout "
                "workers to their own GPUs (README: Scaling out)")
    else:
        say("  (no GPU: placement and fit not checked; set hardware.gpu_memory_gb to plan for a GPU machine)")
    return _finish(say, processes, gpu_plan, nodes, errors, warnings)


def _group(gpus: list[Gpu]) -> list[tuple[str, Gpu]]:
    """Merge runs of GPUs that hold the same things: "node 0 GPU 1-7"."""
    out: list[tuple[str, Gpu]] = []
    run: list[Gpu] = []

    def flush():
        if run:
            first, last = run[0].label, run[-1].label.rsplit(" ", 1)[-1]
            out.append((first if len(run) == 1 else f"{first}-{last}", run[0]))

    for gpu in gpus:
        same = run and [(n, round(v, 3)) for n, v in gpu.items] == [(n, round(v, 3)) for n, v in run[0].items] \
            and gpu.label.rsplit(" ", 1)[0] == run[0].label.rsplit(" ", 1)[0]
        if same:
            run.append(gpu)
        else:
            flush()
            run = [gpu]
    flush()
    return out


def _finish(say, processes: int, gpu_plan: bool, nodes: int, errors: list[str], warnings: list[str]) -> int:
    if warnings:
        say("\nWarnings")
        for w in warnings:
            say(f"  - {w}")
    if errors:
        say("\nREFUSED: this run would not fit or would fail")
        for e in errors:
            say(f"  - {e}")
        return 1
    if not gpu_plan:
        launch = "python" if processes == 1 else f"accelerate launch --multi_gpu --num_processes {processes}"  # --cpu: one process
    elif processes == 1:
        launch = "accelerate launch --config_file configs/accelerate/single_gpu.yaml"
    else:
        launch = f"accelerate launch --config_file configs/accelerate/multi_gpu_ddp.yaml --num_processes {processes}"
        if nodes > 1:
            launch += f" --num_machines {nodes} --machine_rank <this node> --main_process_ip <node 0>"
    say(f"\nOK. Launch with: {launch} rl/train.py --config <this recipe> [overrides]")
    return 0


# ----------------------------------------------------------------------------- the CoT teacher (rl/synth.py)

def estimate_teacher(cfg: Config, shape: ModelShape, gpu_memory_gb: float | None) -> dict[str, Any]:
    """Memory (GiB) of one GPU of the teacher's vLLM engine: tensor parallelism splits the weights,
    the LoRA slots and the KV heads evenly over synth.teacher.rollout.tensor_parallel_size GPUs;
    vLLM claims gpu_memory_utilization x GPU memory on each, which must hold its share of the
    weights + one max_model_len sequence's KV + overhead (as for a rollout worker)."""
    t = cfg.synth.teacher
    ro, tp = t.rollout, max(t.rollout.tensor_parallel_size, 1)
    rbytes = DTYPE_BYTES.get(ro.dtype, shape.dtype_bytes)
    slots = VLLM_LORA_SLOTS * sum(ro.max_lora_rank * (a + b) for a, b in shape.module_dims().values()) * shape.num_layers
    mem: dict[str, Any] = {
        "tp": tp, "weights": shape.params() * rbytes / GIB / tp, "lora_slots": slots * rbytes / GIB / tp,
        "kv_min": ro.max_model_len * shape.kv_bytes_per_token(rbytes) / tp / GIB, "overhead": VLLM_OVERHEAD_GIB,
    }
    mem["needed"] = mem["weights"] + mem["lora_slots"] + mem["kv_min"] + VLLM_OVERHEAD_GIB
    if gpu_memory_gb is not None:
        mem["reserved"] = ro.gpu_memory_utilization * gpu_memory_gb
        room = mem["reserved"] - mem["weights"] - mem["lora_slots"] - VLLM_OVERHEAD_GIB
        mem["kv_sequences"] = max(0, int(room / (mem["kv_min"] or 1)))
    return mem


def print_teacher_plan(cfg: Config, out=None) -> int:
    """`rl/synth.py --dry-run`: the teacher's memory per GPU and its tensor-parallel placement;
    0 if it fits, 1 if not (numbers shown). Loads nothing."""
    import copy

    out = out or sys.stdout
    say = lambda text="": print(text, file=out)  # noqa: E731
    t = cfg.synth.teacher
    if not t.model:
        say("REFUSED: synth.teacher.model is not set")
        return 1
    probe = copy.deepcopy(cfg)
    probe.model.name_or_path = t.model
    shape, shape_from = model_shape(probe)
    gpu_gib, gpus_per_node = cfg.hardware.gpu_memory_gb, cfg.hardware.gpus_per_node
    if gpu_gib is None:
        gpu_gib, detected, _ = detect_gpus()
        gpus_per_node = gpus_per_node or detected
    tp, errors = t.rollout.tensor_parallel_size, []
    say(f"Teacher plan (dry run: nothing loaded): {t.model} on backend {t.rollout.backend}, dtype {t.rollout.dtype}; "
        f"shape from {shape_from}")
    say(f"  candidates  k={cfg.synth.k} per pair, max_tokens {t.max_tokens}, temperature {t.temperature}; "
        f"adapter {t.adapter or 'none'}")
    if tp > 1 and t.rollout.backend != "vllm":
        errors.append(f"synth.teacher.rollout.tensor_parallel_size={tp} needs synth.teacher.rollout.backend: vllm")
    if gpus_per_node is not None and tp > gpus_per_node:
        errors.append(f"tensor_parallel_size={tp} needs {tp} GPUs on one node; hardware.gpus_per_node is {gpus_per_node}")
    if shape is None:
        say("  memory      unknown: the teacher's config.json is not on disk and not in the built-in table")
    else:
        if shape.num_heads % tp or shape.num_kv_heads % tp:
            errors.append(f"tensor_parallel_size={tp} does not divide the teacher's {shape.num_heads} attention / "
                          f"{shape.num_kv_heads} KV heads (vLLM shards heads evenly)")
        mem = estimate_teacher(cfg, shape, gpu_gib)
        say(f"  placement   one engine over {tp} GPU(s) of one node (vLLM tensor parallel); {shape.params() / 1e9:.1f}B "
            f"parameters")
        say(f"  per GPU     {_fmt_parts(mem, [('weights', 'weights'), ('lora_slots', 'LoRA slots'), ('kv_min', 'KV of one sequence'), ('overhead', 'overhead')])}"
            f" = {mem['needed']:.1f} GiB needed")
        if gpu_gib is None:
            say("  fit         not checked: no GPU here and hardware.gpu_memory_gb unset")
        else:
            say(f"  fit         vLLM claims {t.rollout.gpu_memory_utilization} x {gpu_gib:.0f} GiB = {mem['reserved']:.1f} "
                f"GiB per GPU; KV room for ~{mem['kv_sequences']} sequences of {t.rollout.max_model_len} tokens")
            if mem["needed"] > mem["reserved"]:
                errors.append(f"the teacher needs {mem['needed']:.1f} GiB per GPU but vLLM may use {mem['reserved']:.1f}: "
                              "raise synth.teacher.rollout.tensor_parallel_size or gpu_memory_utilization, or lower "
                              "max_model_len")
    for e in errors:
        say(f"REFUSED: {e}")
    if not errors:
        say("OK. Run: python rl/synth.py --config <this recipe>")
    return 1 if errors else 0
