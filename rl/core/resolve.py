"""Resolve what a config names into things on disk: the model directory, the
examples, the cold-start adapter. Provider names ("toy": rl/core/providers.py)
resolve to the provider's world, built on first use. Nothing here trains: a
missing cold-start adapter is rl/learn/sft.py's ``cold_start_adapter``."""
from __future__ import annotations

from pathlib import Path

from rl.core.config import Config, ConfigError
from rl.core.data import Example, load_examples, load_jsonl
from rl.core.languages import parse_directions
from rl.core.providers import is_provided, provider


def world(cfg: Config, name: str):
    """The world of provider ``name`` (e.g. the toy world for "toy"), built on first use."""
    return provider(name).world(cfg)


def model_path(cfg: Config, name: str | None = None) -> str:
    """A local dir or hub id for the base model (or the model ``name``, e.g. ppo.critic_model);
    a provider name gives its world's model."""
    name = cfg.model.name_or_path if name is None else name
    return str(world(cfg, name).model_dir) if is_provided(name) else name


def train_examples(cfg: Config, rl_split: bool = True) -> list[Example]:
    """The data section's pairs. From a provider's world with an RL split, that split (what GRPO
    samples) unless ``rl_split`` is False (cold-start synthesis writes CoT for the SFT pairs)."""
    data = cfg.data
    directions = parse_directions(data.directions)
    if is_provided(data.source):
        path = (rl_pairs(cfg) if rl_split else None) or world(cfg, data.source).train_jsonl
        examples = load_jsonl(path, directions=directions)
        if data.limit:
            examples = _first_per_direction(examples, data.limit)
    else:
        examples = load_examples(data.source, data.path, directions, split=data.split, limit=data.limit)
    if not examples:
        raise ConfigError(f"data: no training examples for directions {data.directions} from {data.source}")
    return examples


def rl_pairs(cfg: Config) -> Path | None:
    """The RL split of a provider's world (the toy world's ``toy.rl_sentences``), when the data
    comes from a world that has one: pairs no SFT saw, which GRPO samples instead of the
    training pairs and the direct-SFT baseline adds to its own (the same pairs as the RL side)."""
    if not is_provided(cfg.data.source):
        return None
    return getattr(world(cfg, cfg.data.source), "rl_pairs", None)


def eval_examples(cfg: Config) -> list[Example]:
    ev = cfg.eval
    directions = parse_directions(ev.directions)
    if is_provided(ev.data_source):
        examples = load_jsonl(world(cfg, ev.data_source).test_jsonl, directions=directions)
        return _first_per_direction(examples, ev.limit) if ev.limit else examples
    if ev.data_source == "flores" and ev.data_dir is None:
        raise ConfigError("eval.data_dir is required for eval.data_source=flores")
    return load_examples(ev.data_source, ev.data_dir, directions, split=ev.split, limit=ev.limit)


def sft_adapter_dir(cfg: Config) -> Path:
    return Path(cfg.output_dir) / cfg.sft.run_name / "adapter"


def init_adapter(cfg: Config) -> str | None:
    """The cold-start adapter GRPO starts from; "auto" = the SFT run's adapter, which must exist
    (rl/learn/sft.py's ``cold_start_adapter`` trains it first for a provider's model)."""
    if cfg.model.init_adapter is None:
        return None
    if cfg.model.init_adapter != "auto":
        return cfg.model.init_adapter
    path = sft_adapter_dir(cfg)
    if not (path / "adapter_config.json").exists():
        raise ConfigError(
            f"model.init_adapter=auto but {path} has no adapter; run rl/sft.py with this config first "
            "or set model.init_adapter to an adapter directory"
        )
    return str(path)


def model_config_dir(cfg: Config) -> Path | None:
    """The directory that holds the base model's config.json if it is on disk already (a local
    dir, the built toy world, the Hugging Face cache); None otherwise. Builds and downloads nothing."""
    name = cfg.model.name_or_path
    if is_provided(name):
        found = provider(name).built_model_dir(cfg)
    else:
        found = Path(name).expanduser()
        if not (found / "config.json").is_file():
            try:
                from huggingface_hub import try_to_load_from_cache

                cached = try_to_load_from_cache(name, "config.json")
            except Exception:  # noqa: BLE001 - an odd id or cache just means "not on disk"
                return None
            found = Path(cached).parent if isinstance(cached, str) else found
    return found if (found / "config.json").is_file() else None


def _first_per_direction(examples: list[Example], limit: int) -> list[Example]:
    seen: dict[tuple[str, str], int] = {}
    kept = []
    for ex in examples:
        key = (ex.src_lang, ex.tgt_lang)
        if seen.get(key, 0) < limit:
            kept.append(ex)
            seen[key] = seen.get(key, 0) + 1
    return kept
