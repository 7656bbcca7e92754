"""Experiments in one command (rl/core/sweep.py, rl/pipeline.py --sweep/--seeds): every arm's
config is built and checked before anything trains, keys that would need another cold start are
refused, and the closing table reads each arm's chrF over its seeds."""
from __future__ import annotations

from pathlib import Path

import pytest

from rl.core.config import ConfigError
from rl.core.sweep import arm_setting, make_arms, parse_seeds, parse_sweep, split_values
from rl.pipeline import over_seeds

TOY = Path(__file__).resolve().parent.parent / "configs" / "toy.yaml"


def test_values_split_on_top_level_commas_only():
    assert split_values("grpo,ppo") == ["grpo", "ppo"]
    assert split_values("[toy_en-toy_xx,toy_xx-toy_en],[toy_en-toy_xx]") == [
        "[toy_en-toy_xx,toy_xx-toy_en]", "[toy_en-toy_xx]"]
    assert parse_sweep("--grpo.beta=0,0.04") == ("grpo.beta", ["0", "0.04"])


@pytest.mark.parametrize("spec, message", [
    ("grpo.beta", "expected KEY=V1,V2"),
    ("grpo.beta=0,", "expected KEY=V1,V2"),
    ("=1,2", "expected KEY=V1,V2"),
    ("grpo.beta=0,0", "given twice"),
    ("lora.r=8,16", "same cold start"),
    ("sft.learning_rate=1e-4,2e-4", "same cold start"),
    ("model.name_or_path=a,b", "same cold start"),
    ("seed=0,1", "same cold start"),  # seeds go through --seeds
])
def test_bad_sweeps_are_refused_with_the_reason(spec, message):
    with pytest.raises(ConfigError, match=message):
        parse_sweep(spec)


def test_the_grid_is_every_value_by_every_seed_each_config_checked():
    arms = make_arms(TOY, ["--grpo.max_steps", "3"], ["reward.spec=chrf-format,bleu-format", "grpo.beta=0,0.04"],
                     parse_seeds("0,1", default=0))
    assert len(arms) == 2 * 2 * 2
    labels = [arm.label for arm, _ in arms]
    assert labels[0] == "reward.spec=chrf-format grpo.beta=0 s0" and len(set(labels)) == 8
    assert len({arm.slug for arm, _ in arms}) == 8 and all("/" not in arm.slug and " " not in arm.slug for arm, _ in arms)
    arm, cfg = arms[-1]
    assert (cfg.reward.spec, cfg.grpo.beta, cfg.seed, cfg.grpo.max_steps) == ("bleu-format", 0.04, 1, 3)
    assert arm_setting(arm.label) == "reward.spec=bleu-format grpo.beta=0.04"
    # seeds alone: one arm per seed
    assert [a.label for a, _ in make_arms(TOY, [], [], [3, 4])] == ["s3", "s4"]


def test_a_bad_key_or_value_names_its_arm_before_anything_runs():
    with pytest.raises(ConfigError, match="sweep arm 'grpo.nope=1 s0'.*grpo.nope"):
        make_arms(TOY, [], ["grpo.nope=1,2"], [0])
    with pytest.raises(ConfigError, match="sweep arm 'grpo.beta=abc s0'"):
        make_arms(TOY, [], ["grpo.beta=abc,0.1"], [0])
    with pytest.raises(ConfigError, match="swept twice"):
        make_arms(TOY, [], ["grpo.beta=0,1", "grpo.beta=2,3"], [0])
    with pytest.raises(ConfigError, match="--seeds"):
        parse_seeds("0,x", default=0)


def test_the_closing_table_gives_each_arm_its_mean_sd_and_gain_over_the_cold_start():
    labels = ["cot-sft", "reward.spec=a s0", "reward.spec=a s1", "reward.spec=b s0", "reward.spec=b s1"]
    cmp = {"labels": labels, "rows": {"avg:all": {"chrf": [40.0, 50.0, 54.0, 41.0, None]}}}
    table = over_seeds(cmp, labels[1:])
    assert "| reward.spec=a | 2 | 52.00 | 2.83 | 50.00, 54.00 | +12.00 |" in table
    assert "| reward.spec=b | 1 | 41.00 | – | 41.00 | +1.00 |" in table  # a failed evaluation is left out, not zero


def test_the_pipeline_refuses_a_bad_sweep_before_any_work(tmp_path, capsys):
    from rl.pipeline import main

    assert main(["--output_dir", str(tmp_path), "--sweep", "lora.r=8,16"]) == 2
    assert "same cold start" in capsys.readouterr().err
    assert main(["--output_dir", str(tmp_path), "--sweep", "reward.spec=chrf-format,nope-format"]) == 2
    assert "sweep arm 'reward.spec=nope-format s0': reward.spec: unknown reward" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # no run dir, no world, no SFT
