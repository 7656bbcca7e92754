"""What every rollout backend shares: the result types, the engine interface,
adapter validation (run before any worker swaps), and per-prompt seeds."""
from __future__ import annotations

import json
import numbers
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence

from rl.core.config import SamplingConfig, check_temperature
from rl.core.errors import UserError

# vLLM only accepts these LoRA ranks as max_lora_rank (vllm.config.lora.MaxLoRARanks).
VLLM_MAX_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")


@dataclass
class Completion:
    text: str
    token_ids: list[int]  # sampled tokens, EOS included when the model stopped on it
    logprobs: list[float]  # log p of each sampled token after temperature/top-k/top-p (TRL's convention)
    finish_reason: str  # "stop" (EOS or stop string) | "length" (hit max_tokens)


@dataclass
class PromptResult:
    prompt_token_ids: list[int]
    completions: list[Completion]  # sampling.n of them


class RolloutEngine(Protocol):
    """The interface the trainer and the evaluator use; every backend implements it."""

    def generate(self, prompts: Sequence[str] | Sequence[Sequence[int]], sampling: SamplingConfig) -> list[PromptResult]:
        """Chat-templated strings or token ids in; results in input order out."""

    def set_adapter(self, adapter_dir: str, version: int) -> None:
        """Validate ``adapter_dir`` and make it the policy of every later ``generate``."""

    def clear_adapter(self) -> None:
        """Generate with the base model again."""

    @property
    def adapter_version(self) -> int | None: ...

    def shutdown(self) -> None: ...


class AdapterError(UserError, ValueError):
    """A LoRA adapter directory that no worker should load."""


def lora_id(version: int) -> int:
    """vLLM LoRA ids must be >= 1; versions start at 0."""
    if version < 0:
        raise ValueError(f"adapter version must be >= 0, got {version}")
    return version + 1


def check_adapter(adapter_dir: str | Path, max_lora_rank: int | None, model_path: str | Path | None = None, *,
                  exact: bool = False, trust_remote_code: bool = False) -> dict:
    """The one adapter check. Reject an adapter before any worker swaps to it (or evaluation
    or training loads it): missing files, a rank the engines cannot hold (``max_lora_rank``;
    None: no limit), or weights shaped for another base model. The cheap form reads only
    the safetensors header and config.json (no torch: the dry run uses it); ``exact`` also
    fits every matrix to a meta-device model of ``model_path`` and refuses NaN/inf weights
    (evaluation). Returns the adapter's config."""
    d = Path(adapter_dir)
    if not d.is_dir():
        raise AdapterError(f"adapter directory not found: {d}")
    cfg_path = d / "adapter_config.json"
    if not cfg_path.is_file():
        raise AdapterError(f"{d}: no adapter_config.json (not a PEFT adapter directory)")
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise AdapterError(f"{cfg_path}: not valid JSON: {exc}") from exc
    if cfg.get("peft_type", "LORA") != "LORA":
        raise AdapterError(f"{cfg_path}: peft_type {cfg.get('peft_type')!r} is not LORA")
    ranks = [cfg.get("r"), *(cfg.get("rank_pattern") or {}).values()]
    if not all(isinstance(r, int) and r >= 1 for r in ranks):
        raise AdapterError(f"{cfg_path}: r must be a positive integer, got {cfg.get('r')!r}")
    if max_lora_rank is not None and max(ranks) > max_lora_rank:
        raise AdapterError(f"{cfg_path}: LoRA rank {max(ranks)} exceeds rollout.max_lora_rank={max_lora_rank}")
    weights = [d / name for name in WEIGHT_FILES if (d / name).is_file()]
    if not weights:
        raise AdapterError(f"{d}: no adapter weights ({' or '.join(WEIGHT_FILES)})")
    if exact:  # first: its mismatch message names the module, the cheap one only a dimension
        _check_fits_model(d, model_path, trust_remote_code)
    if weights[0].suffix == ".safetensors":
        _check_shapes(weights[0], Path(model_path) / "config.json" if model_path is not None else None, max_lora_rank)
    if exact:
        check_finite_weights(d)
    return cfg


def _check_fits_model(adapter: Path, model_dir: str | Path, trust_remote_code: bool) -> None:
    """Every LoRA matrix must fit the module it adapts, exactly: shapes from a weightless
    meta-device model of ``model_dir`` (a local dir or a cached hub id)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        mcfg = AutoConfig.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
    except Exception as e:  # noqa: BLE001 -- offline hub id, bad dir, ...
        raise AdapterError(f"model {model_dir}: cannot read its config ({type(e).__name__}: {e})") from None
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(mcfg, trust_remote_code=trust_remote_code)
    modules = dict(model.named_modules())
    params = {name: tuple(p.shape) for name, p in model.named_parameters()}
    problems = []
    for key, shape in sorted(_adapter_tensors(adapter).items()):
        name = key.removeprefix("base_model.model.")
        for part in ("lora_A", "lora_B"):
            if f".{part}." in name:
                module_name = name.split(f".{part}.")[0]
                module = modules.get(module_name)
                if module is None:
                    problems.append(f"{key}: the model has no module {module_name}")
                elif hasattr(module, "in_features"):
                    want = module.in_features if part == "lora_A" else module.out_features
                    got = shape[1] if part == "lora_A" else shape[0]
                    if got != want:
                        side = "in" if part == "lora_A" else "out"
                        problems.append(f"{key}: {side}_features {got}, but the model's {module_name} has {want}")
                break
        else:
            if "lora_" not in name and name in params and params[name] != shape:
                problems.append(f"{key}: shape {shape}, but the model's {name} is {params[name]}")
    if problems:
        base = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8")).get("base_model_name_or_path")
        raise AdapterError(
            f"does not fit model {model_dir} (trained on {base!r}): "
            + "; ".join(problems[:4]) + (f"; ... {len(problems) - 4} more" if len(problems) > 4 else "")
        )


def _adapter_tensors(adapter: Path) -> dict[str, tuple[int, ...]]:
    """Tensor shapes in the adapter's weights file, read without loading the weights."""
    st = adapter / "adapter_model.safetensors"
    if st.is_file():
        return {k: tuple(shape) for k, shape in read_shapes(st).items()}
    binary = adapter / "adapter_model.bin"
    if binary.is_file():
        import torch

        return {k: tuple(v.shape) for k, v in torch.load(binary, map_location="cpu", weights_only=True).items()}
    raise AdapterError(f"{adapter}: no adapter_model.safetensors or adapter_model.bin")


def check_finite_weights(adapter: Path) -> None:
    """Refuse an adapter with NaN/inf weights (a diverged run): vLLM serves it without
    complaint and the evaluation reads as a normal (bad) report instead of an error.
    Tensors are read one at a time, so a large adapter is never held whole."""
    import torch

    st, binary = adapter / "adapter_model.safetensors", adapter / "adapter_model.bin"
    if st.is_file():
        from safetensors import safe_open

        with safe_open(str(st), framework="pt") as f:
            tensors = ((k, f.get_tensor(k)) for k in f.keys())
            _refuse_non_finite(st, tensors)
    elif binary.is_file():
        _refuse_non_finite(binary, torch.load(binary, map_location="cpu", weights_only=True).items())


def _refuse_non_finite(file: Path, tensors) -> None:
    import torch

    for key, t in tensors:
        if not t.is_floating_point():
            continue
        finite = torch.isfinite(t)
        if not bool(finite.all()):
            nan, bad = int(torch.isnan(t).sum()), int((~finite).sum())
            raise AdapterError(
                f"{file}: tensor {key} has {bad} non-finite value(s) of {t.numel()} ({nan} NaN, "
                f"{bad - nan} inf); the adapter is broken (diverged training?), refusing to evaluate it"
            )


def read_shapes(weights: Path) -> dict[str, list[int]]:
    """Tensor shapes from a safetensors header, no weights read; a truncated or foreign file is an AdapterError.
    framework="numpy": shapes need no torch (the dry run imports none)."""
    from safetensors import safe_open

    try:
        with safe_open(str(weights), framework="numpy") as f:
            return {k: f.get_slice(k).get_shape() for k in f.keys()}
    except Exception as exc:  # a truncated or foreign file
        raise AdapterError(f"{weights}: unreadable safetensors file: {exc}") from exc


def _check_shapes(weights: Path, model_config: Path | None, max_lora_rank: int) -> None:
    """The weights file must read, and LoRA A/B shapes must fit the base model's linear
    layers (checkable when its config.json is on disk): a cheap, exact "same base model" test."""
    shapes = read_shapes(weights)
    mc = json.loads(model_config.read_text(encoding="utf-8")) if model_config and model_config.is_file() else {}
    mc = mc.get("text_config", mc)
    hidden, layers = mc.get("hidden_size"), mc.get("num_hidden_layers")
    heads = mc.get("num_attention_heads") or 1
    head_dim = mc.get("head_dim") or (hidden // heads if hidden else None)
    dims = {hidden, mc.get("intermediate_size"), heads * (head_dim or 0),
            (mc.get("num_key_value_heads") or heads) * (head_dim or 0)} - {None, 0}
    for key, shape in shapes.items():
        layer = re.search(r"\.layers\.(\d+)\.", key)
        if layer and layers is not None and int(layer.group(1)) >= layers:
            raise AdapterError(f"{weights}: {key} names layer {layer.group(1)}, the base model "
                               f"({model_config.parent}) has {layers} layers")
        if len(shape) != 2 or "lora_" not in key:
            continue
        rank, feature = (shape[0], shape[1]) if "lora_A" in key else (shape[1], shape[0])
        if max_lora_rank is not None and rank > max_lora_rank:
            raise AdapterError(f"{weights}: {key} has rank {rank} > rollout.max_lora_rank={max_lora_rank}")
        if dims and feature not in dims and "embed" not in key and "lm_head" not in key:
            raise AdapterError(f"{weights}: {key} has shape {list(shape)}, which fits no linear layer of the "
                               f"base model {model_config.parent} (dims {sorted(dims)}): adapter for another model?")


def read_adapter_files(adapter_dir: str | Path) -> dict[str, bytes]:
    """The files a worker needs, as bytes: workers on other machines get the
    adapter through Ray's object store, not a shared disk."""
    d = Path(adapter_dir)
    return {p.name: p.read_bytes() for p in [d / "adapter_config.json", *(d / n for n in WEIGHT_FILES)] if p.is_file()}


def request_seeds(seed: int | None, num_prompts: int, n: int) -> list[int | None]:
    """One seed per prompt, spaced by ``n`` (vLLM seeds the i-th of n samples with
    seed + i), so a prompt's samples do not depend on which worker or batch ran it."""
    if seed is None:
        return [None] * num_prompts
    return [seed + i * n for i in range(num_prompts)]


def tokenize_prompts(tokenizer, prompts: Sequence[str] | Sequence[Sequence[int]]) -> list[list[int]]:
    """Strings are already chat-templated: no special tokens are added."""
    out = []
    for i, p in enumerate(prompts):
        if isinstance(p, str):
            out.append(tokenizer(p, add_special_tokens=False)["input_ids"])
        elif not isinstance(p, (bytes, dict)) and all(isinstance(t, numbers.Integral) for t in p):
            out.append([int(t) for t in p])
        else:
            raise TypeError(f"prompt {i}: expected a string or a list of token ids, got {type(p).__name__}")
        if not out[-1]:
            raise ValueError(f"prompt {i} is empty")
    return out


def check_sampling(sampling: SamplingConfig) -> None:
    if sampling.n < 1 or sampling.max_tokens < 1:
        raise ValueError(f"sampling.n and sampling.max_tokens must be >= 1, got {sampling.n}, {sampling.max_tokens}")
    check_temperature(sampling.temperature, "sampling.temperature")  # a ConfigError, i.e. a ValueError


def check_init_adapter(cfg, adapter: str | Path) -> dict:
    """The cold-start adapter must load: a LoRA adapter whose weights file reads, whose rank the
    rollout engines hold and whose shapes fit the base model (when its config.json is on disk).
    Training calls this before PEFT loads it, the dry run instead; raises AdapterError naming the file."""
    from rl.core.resolve import model_config_dir

    return check_adapter(adapter, cfg.rollout.max_lora_rank, model_config_dir(cfg))
