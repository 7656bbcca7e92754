"""Rewards for reasoning translation: one contract, a registry with plug-ins, presets and guards.

    import rewards
    reward = rewards.load("chrf-format")            # or "r1t1", ["chrf", {"name": "format", "weight": 0.2}], ...
    parts = reward.score(sources, completions, references, src_lang=[...], tgt_lang=[...])
    parts.total, parts.parts["chrf"]

See rewards/registry.py for spec forms (names, "module:function", dicts, lists,
entry points in the group ``r1t1.rewards``) and rewards/presets.py for presets.
Importing this package does not import torch or COMET; those load with the
COMET rewards.
"""
from rewards.base import Reward, RewardBreakdown
from rewards.combine import Combination, Part
from rewards.lexical import bleu_tokenizer, corpus_scores
from rewards.presets import PRESETS
from rewards.registry import (ENTRY_POINT_GROUP, RewardSpecError, check, check_from_config, known, load,
                              load_from_config, register)

__all__ = [
    "Reward", "RewardBreakdown", "Combination", "Part", "load", "load_from_config", "check", "check_from_config",
    "register", "known",
    "RewardSpecError", "ENTRY_POINT_GROUP", "PRESETS", "corpus_scores", "bleu_tokenizer",
]
