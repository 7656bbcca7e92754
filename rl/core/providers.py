"""Model/data providers: names that stand for a model and its data instead of a hub id or a
path (today "toy", the offline toy world). The core reaches a provider only through the
import string registered here, the way rewards/registry.py names built-in rewards, so no
module of the training path imports the tools that implement one.

A provider module defines ``MAX_POSITIONS`` (the model's positions, known without building
it), ``built_model_dir(cfg)`` (where its model is or would be, building nothing) and
``world(cfg) -> World``, where a World has the paths ``model_dir``, ``train_jsonl``,
``test_jsonl`` and ``cot_sft_jsonl`` (built on first use, cached after), and optionally
``rl_pairs``: a JSONL of pairs for the RL stage alone, or None (rl/core/resolve.py: rl_pairs), and
``glossary``: per language, each source word -> the words that gloss it (rl.evaluate's source
coverage counts a word whose gloss the reasoning names)."""
from __future__ import annotations

import importlib
from types import ModuleType

PROVIDERS = {"toy": "rl.tools.toy"}
LANGUAGE_PREFIXES = {"toy_": "toy"}  # language codes only a provider's world has data for (toy_en, toy_xx)


def is_provided(name: str | None) -> bool:
    return name in PROVIDERS


def provider(name: str) -> ModuleType:
    """The module behind a provider name (imported on first use)."""
    return importlib.import_module(PROVIDERS[name])


def provider_of_language(code: str) -> str | None:
    """The provider whose world holds the test data of language ``code``, if any."""
    return next((name for prefix, name in LANGUAGE_PREFIXES.items() if code.startswith(prefix)), None)
