"""Resolve what a config names into things on disk: the model directory, the
examples, the cold-start adapter. "toy" names resolve to the offline toy world,
which is built on first use."""
from __future__ import annotations

from pathlib import Path

from rl.config import Config, ConfigError
from rl.data import Example, load_examples, load_jsonl
from rl.languages import parse_directions


def toy_world(cfg: Config):
    from rl.toy import build_toy_world

    return build_toy_world(cfg.toy)


def model_path(cfg: Config) -> str:
    """A local dir or hub id for the base model; builds the toy world for "toy"."""
    if cfg.model.name_or_path == "toy":
        return str(toy_world(cfg).model_dir)
    return cfg.model.name_or_path


def train_examples(cfg: Config) -> list[Example]:
    data = cfg.data
    directions = parse_directions(data.directions)
    if data.source == "toy":
        examples = load_jsonl(toy_world(cfg).train_jsonl, directions=directions)
        if data.limit:
            examples = _first_per_direction(examples, data.limit)
    else:
        examples = load_examples(data.source, data.path, directions, split=data.split, limit=data.limit)
    if not examples:
        raise ConfigError(f"data: no training examples for directions {data.directions} from {data.source}")
    return examples


def eval_examples(cfg: Config) -> list[Example]:
    ev = cfg.eval
    directions = parse_directions(ev.directions)
    if ev.data_source == "toy":
        examples = load_jsonl(toy_world(cfg).test_jsonl, directions=directions)
        return _first_per_direction(examples, ev.limit) if ev.limit else examples
    if ev.data_source == "flores" and ev.data_dir is None:
        raise ConfigError("eval.data_dir is required for eval.data_source=flores")
    return load_examples(ev.data_source, ev.data_dir, directions, split=ev.split, limit=ev.limit)


def sft_adapter_dir(cfg: Config) -> Path:
    return Path(cfg.output_dir) / cfg.sft.run_name / "adapter"


def init_adapter(cfg: Config) -> str | None:
    """The cold-start adapter GRPO starts from; "auto" = the SFT run's adapter,
    trained first (toy world only) when it does not exist yet."""
    if cfg.model.init_adapter is None:
        return None
    if cfg.model.init_adapter != "auto":
        return cfg.model.init_adapter
    path = sft_adapter_dir(cfg)
    if not (path / "adapter_config.json").exists():
        if cfg.model.name_or_path != "toy":
            raise ConfigError(
                f"model.init_adapter=auto but {path} has no adapter; run rl/sft.py with this config first "
                "or set model.init_adapter to an adapter directory"
            )
        from rl.sft import run_sft

        print(f"[train] cold-start adapter {path} is missing: running SFT first")
        run_sft(cfg, overwrite=True)  # an SFT dir without adapter is an interrupted run: kept aside
    return str(path)


def model_config_dir(cfg: Config) -> Path | None:
    """The directory that holds the base model's config.json if it is on disk already (a local
    dir, the built toy world, the Hugging Face cache); None otherwise. Builds and downloads nothing."""
    name = cfg.model.name_or_path
    if name == "toy":
        from rl.toy import world_key

        cache = Path(cfg.toy.cache_dir).expanduser()
        found = (cache if cache.is_absolute() else Path.cwd() / cache) / world_key(cfg.toy) / "model"
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


def check_init_adapter(cfg: Config, adapter: str | Path) -> dict:
    """The cold-start adapter must load: a LoRA adapter whose weights file reads, whose rank the
    rollout engines hold and whose shapes fit the base model (when its config.json is on disk).
    Training calls this before PEFT loads it, the dry run instead; raises AdapterError naming the file."""
    from rl.rollout.base import check_adapter

    return check_adapter(adapter, cfg.rollout.max_lora_rank, model_config_dir(cfg))


def _first_per_direction(examples: list[Example], limit: int) -> list[Example]:
    seen: dict[tuple[str, str], int] = {}
    kept = []
    for ex in examples:
        key = (ex.src_lang, ex.tgt_lang)
        if seen.get(key, 0) < limit:
            kept.append(ex)
            seen[key] = seen.get(key, 0) + 1
    return kept
