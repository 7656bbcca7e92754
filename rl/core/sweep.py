"""Experiments in one command: ``--sweep KEY=V1,V2`` over any config key (repeat it for a grid)
and ``--seeds 0,1,2``. This module turns those into arms, each a full config loaded and
validated up front, so a bad key or value fails before anything trains; rl/pipeline.py trains
and evaluates them.

Every arm starts from the same cold start, so keys that shape the cold start itself (the model,
its LoRA shape, the SFT stage, the toy world) cannot be swept: sweep those with separate runs.
"""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path

from rl.core.config import Config, ConfigError, load_config

# Sections (and keys) whose change would need another cold start than the one every arm shares.
COLD_START_KEYS = ("model.", "lora.", "sft.", "toy.", "output_dir", "run_name", "seed")


@dataclass(frozen=True)
class Arm:
    label: str  # "grpo.algorithm=ppo s1": what the comparison table calls it
    slug: str  # a run-dir-safe form of the label
    overrides: tuple[str, ...]  # the --key=value overrides on top of the pipeline's own
    seed: int


def split_values(text: str) -> list[str]:
    """``a,b`` -> [a, b]; commas inside brackets stay (``[en-de,de-en],[en-zh]`` is two values)."""
    values, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += {"[": 1, "]": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            values.append(text[start:i])
            start = i + 1
    values.append(text[start:])
    return [v.strip() for v in values]


def parse_sweep(spec: str) -> tuple[str, list[str]]:
    """``grpo.beta=0,0.04`` -> ("grpo.beta", ["0", "0.04"]) with a clear error for what is not."""
    key, sep, text = spec.partition("=")
    key = key.strip().lstrip("-")
    values = split_values(text) if sep else []
    if not key or not sep or not all(values):
        raise ConfigError(f"--sweep {spec!r}: expected KEY=V1,V2 (e.g. --sweep grpo.algorithm=grpo,ppo)")
    if any(key == k.rstrip(".") or (k.endswith(".") and key.startswith(k)) for k in COLD_START_KEYS):
        raise ConfigError(f"--sweep {key}: every arm starts from the same cold start, so {key} cannot be swept "
                          f"(keys under {', '.join(COLD_START_KEYS)}); run the variants as separate pipelines")
    if len(set(values)) != len(values):
        raise ConfigError(f"--sweep {key}: a value is given twice ({text})")
    return key, values


def parse_seeds(text: str | None, default: int) -> list[int]:
    if not text:
        return [default]
    try:
        seeds = [int(s) for s in split_values(text)]
    except ValueError:
        raise ConfigError(f"--seeds {text!r}: expected integers, e.g. --seeds 0,1,2") from None
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds {text!r}: a seed is given twice")
    return seeds


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:80]


def make_arms(config: str | Path | None, overrides: list[str], sweeps: list[str], seeds: list[int]
              ) -> list[tuple[Arm, Config]]:
    """The grid of every swept value x every seed, each with its config (loaded and validated
    now: an unknown key or a bad value is an error naming the arm before any training)."""
    axes = [parse_sweep(s) for s in sweeps]
    keys = [k for k, _ in axes]
    if len(set(keys)) != len(keys):
        raise ConfigError(f"--sweep: a key is swept twice ({', '.join(keys)}); give its values in one --sweep")
    arms = []
    for combo in itertools.product(*(values for _, values in axes)):
        setting = " ".join(f"{k}={v}" for k, v in zip(keys, combo))
        for seed in seeds:
            label = f"{setting} s{seed}".strip()
            extra = tuple(f"--{k}={v}" for k, v in zip(keys, combo)) + (f"--seed={seed}",)
            try:
                cfg = load_config(config, [*overrides, *extra])
            except ConfigError as exc:
                raise ConfigError(f"sweep arm '{label}': {exc}") from None
            arms.append((Arm(label, _slug(label.replace(" ", "-")), extra, seed), cfg))
    return arms


def arm_setting(label: str) -> str:
    """The label without its seed: the arms that differ only by seed share it."""
    return re.sub(r"\s*s-?\d+$", "", label) or "base"
