"""Fixes: non-finite rewards raise, a failed start-up does not block the corrected
command, config limits (grpo.max_steps, rollout.max_model_len) are checked at load,
and the share of zero-signal prompt groups is logged per step."""
from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from rewards.base import RewardBreakdown
from rewards.combine import Combination, Part
from rl.core.analytics import CotLabeler
from rl.core.config import Config, ConfigError, build_dataclass, check_limits, load_config
from rl.learn.grpo import NonFiniteRewardError, StepStats, _LoggingCallback, make_reward_func
from rl.core.runs import RunDirError, prepare_run_dir, write_resolved_config

REPO = Path(__file__).resolve().parent.parent
TOY = str(REPO / "configs" / "toy.yaml")
SOURCES = ["the cat sees a dog", "a dog runs"]


# ----------------------------------------------------------------------------- non-finite rewards

class FakeReward:
    """Returns a fixed breakdown, as a Combination's ``.score`` does."""

    def __init__(self, total, parts):
        self.breakdown = RewardBreakdown(total=total, parts=parts)

    def score(self, sources, hypotheses, references, **columns):
        return self.breakdown


def call_reward(reward):
    fn = make_reward_func(reward, think_prefill=True, stats=StepStats(), labeler=CotLabeler({}))
    completions = ["t</think><answer>miro</answer>", "t</think><answer>dapu</answer>"]
    return fn(prompts=["p", "p"], completions=completions, source=SOURCES, reference=["r1", "r2"],
              src_lang=["toy_en"] * 2, tgt_lang=["toy_xx"] * 2)


@pytest.mark.parametrize("total, parts, part_name", [
    ([0.5, math.nan], {"chrf": [0.5, 0.1]}, "total"),
    ([0.5, 0.1], {"chrf": [0.5, math.nan]}, "chrf"),
    ([0.5, math.inf], {"chrf": [0.5, 0.1]}, "total"),
    ([0.5, 0.1], {"format": [0.5, -math.inf]}, "format"),
])
def test_non_finite_reward_raises_naming_part_and_sample(total, parts, part_name):
    with pytest.raises(NonFiniteRewardError) as info:
        call_reward(FakeReward(total, parts))
    msg = str(info.value)
    assert isinstance(info.value, ValueError)
    assert repr(part_name) in msg and "sample 1" in msg and repr(SOURCES[1]) in msg


def test_inf_from_a_real_combination_part_raises():
    def blows_up(sources, hypotheses, references, **columns):
        return [1.0, math.inf]

    with pytest.raises(NonFiniteRewardError, match="'blows_up'.*sample 1"):
        call_reward(Combination([Part("blows_up", 1.0, blows_up)]))


def test_finite_and_none_rewards_pass():
    assert call_reward(FakeReward([0.5, None], {"chrf": [0.5, None]})) == [0.5, None]


# ----------------------------------------------------------------------------- failed start-up

def test_config_only_run_dir_left_by_a_failed_start_is_reused(tmp_path):
    run = prepare_run_dir(tmp_path, "r1")
    write_resolved_config(load_config(TOY), run)  # what train() writes before the engine/trainer start
    (run / "adapter_sync").mkdir()
    (run / "checkpoints").mkdir()
    assert prepare_run_dir(tmp_path, "r1") == run  # the corrected command runs without --overwrite
    assert (run / "config.yaml").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["r1"]  # nothing moved aside


@pytest.mark.parametrize("started", ["metrics.jsonl", "checkpoints/checkpoint-1/trainer_state.json",
                                     "tensorboard/events.out", "adapter/adapter_config.json"])
def test_a_started_run_is_still_refused(tmp_path, started):
    run = prepare_run_dir(tmp_path, "r1")
    write_resolved_config(load_config(TOY), run)
    (run / started).parent.mkdir(parents=True, exist_ok=True)
    (run / started).write_text("{}\n")
    with pytest.raises(RunDirError, match="already exists"):
        prepare_run_dir(tmp_path, "r1")


# ----------------------------------------------------------------------------- config limits

@pytest.mark.parametrize("steps", ["-1", "0"])
def test_grpo_max_steps_must_be_positive(steps):
    with pytest.raises(ConfigError, match=r"grpo\.max_steps must be >= 1"):
        load_config(TOY, ["--grpo.max_steps", steps])
    with pytest.raises(ConfigError, match=r"grpo\.max_steps"):
        load_config(None, ["--grpo.max_steps", steps])


@pytest.mark.parametrize("model_len", ["128", "100"])
def test_max_model_len_must_exceed_max_tokens(model_len):
    with pytest.raises(ConfigError) as info:
        load_config(TOY, ["--sampling.max_tokens", "128", "--rollout.max_model_len", model_len])
    assert "rollout.max_model_len" in str(info.value) and "sampling.max_tokens" in str(info.value)


def test_shipped_limits_still_load():
    cfg = load_config(TOY, ["--grpo.max_steps", "1", "--sampling.max_tokens", "128", "--rollout.max_model_len", "129"])
    assert cfg.grpo.max_steps == 1
    load_config(None)
    for recipe in sorted((REPO / "configs").glob("*.yaml")):  # paths aside (tests/test_recipes.py), limits hold
        raw = yaml.safe_load(recipe.read_text(encoding="utf-8"))
        check_limits(build_dataclass(Config, raw, prefix="", where=str(recipe)), str(recipe))


# ----------------------------------------------------------------------------- zero-signal groups

def test_frac_reward_zero_std_is_logged(tmp_path):
    callback = _LoggingCallback(None, tmp_path, StepStats(), CotLabeler({}), is_main=True, checkpoint=None)
    logs = {"loss": 0.1, "reward": 0.5, "reward_std": 0.2, "frac_reward_zero_std": 0.25}
    callback.on_log(None, SimpleNamespace(global_step=3), None, logs=logs)
    record = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["step"] == 3 and record["frac_reward_zero_std"] == 0.25


def test_nan_from_a_real_combination_part_raises_naming_part_and_sample():
    def nan_second(sources, hypotheses, references, **columns):
        return [0.5, math.nan]

    with pytest.raises(ValueError, match=r"'nan_second' returned NaN for sample 1 of 2"):
        Combination([Part("nan_second", 1.0, nan_second)]).score(["a", "b"], ["x", "y"], ["r", "s"])
