"""Every shipped recipe (configs/*.yaml) and accelerate config parses and validates.

Recipes name user data with placeholder paths (data/ntrex128, data/flores200, a CoT
JSONL) that load_config requires to exist, so the tests point them at the shared
data (--data-dir) and at a small CoT file, exactly as a user would with overrides.
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import yaml

from rl.core.config import load_config
from rl.tools.plan import print_plan
from tests.conftest import REPO_ROOT

RECIPES = sorted((REPO_ROOT / "configs").glob("*.yaml"))
ACCELERATE = sorted((REPO_ROOT / "configs" / "accelerate").glob("*.yaml"))
REAL = [p for p in RECIPES if "toy" not in p.name]
GRPO = [p for p in REAL if not p.name.startswith(("sft-", "synth-"))]  # synth-*: tests/test_synth.py
SFT = [p for p in REAL if p.name.startswith("sft-")]


@pytest.fixture(scope="module")
def cot_jsonl(tmp_path_factory) -> Path:
    """One valid CoT SFT line, so sft.data_path exists for validation."""
    path = tmp_path_factory.mktemp("cot") / "cot.jsonl"
    row = {"src_lang": "eng_Latn", "tgt_lang": "deu_Latn", "source": "Hello.", "reference": "Hallo.",
           "template": "hierarchical", "completion": "<think>greeting</think><answer>Hallo.</answer>"}
    path.write_text(json.dumps(row) + "\n", encoding="utf-8")
    return path


def overrides_for(path: Path, data_dir: Path, cot_jsonl: Path) -> list[str]:
    """Point a recipe's placeholder paths at real files."""
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    out = []
    data = raw.get("data", {})
    if data.get("source") == "ntrex":
        out += ["--data.path", str(data_dir / "ntrex128")]
    elif data.get("source") == "flores":
        out += ["--data.path", str(data_dir / "flores200")]
    if raw.get("eval", {}).get("data_source") == "flores" and raw["eval"].get("data_dir"):
        out += ["--eval.data_dir", str(data_dir / "flores200")]
    if raw.get("sft", {}).get("data_path"):
        out += ["--sft.data_path", str(cot_jsonl)]
    return out


def test_the_expected_recipes_ship():
    names = {p.name for p in RECIPES}
    assert {"toy.yaml", "toy_pivot.yaml", "r1t1-qwen2.5-7b.yaml", "small-qwen2.5-1.5b.yaml",
            "sft-r1t1-qwen2.5-7b.yaml", "sft-small-qwen2.5-1.5b.yaml"} <= names
    assert {p.name for p in ACCELERATE} >= {"single_gpu.yaml", "multi_gpu_ddp.yaml", "deepspeed_zero2.yaml"}


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipe_loads_and_validates(path, data_dir, cot_jsonl):
    cfg = load_config(path, overrides_for(path, data_dir, cot_jsonl))
    assert cfg.sampling.n >= 2 and cfg.grpo.prompts_per_step >= 1
    if path in REAL:
        assert "2502.19735" in path.read_text(encoding="utf-8")  # cites the R1-T1 paper
        assert cfg.model.dtype == "bfloat16"


@pytest.mark.parametrize("path", GRPO, ids=lambda p: p.name)
def test_grpo_recipe_has_the_r1t1_settings_and_passes_its_dry_run(path, data_dir, cot_jsonl):
    cfg = load_config(path, overrides_for(path, data_dir, cot_jsonl))
    # R1-T1 (arXiv:2502.19735): 8 samples at temperature 0.8, KL 0.001, <think> prefill, SFT cold start
    assert (cfg.sampling.n, cfg.sampling.temperature, cfg.grpo.beta) == (8, 0.8, 0.001)
    assert cfg.prompt.think_prefill and cfg.model.init_adapter == "auto"
    assert cfg.data.source == "ntrex" and cfg.eval.data_source == "flores" and cfg.eval.split == "devtest"
    assert cfg.lora.r <= cfg.rollout.max_lora_rank
    out = io.StringIO()
    rc = print_plan(cfg, out=out)
    assert rc == 0, out.getvalue()
    assert "prompts from ntrex" in out.getvalue() and "FLORES devtest segments" in out.getvalue()


def test_the_7b_ppo_recipe_is_the_grpo_one_with_a_critic_counted_in_the_dry_run(data_dir, cot_jsonl):
    """configs/ppo-r1t1-qwen2.5-7b.yaml: PPO, else the GRPO recipe's data, reward, rollouts and cold
    start; the dry run counts the critic (LoRA + optimizer state, activations) and it still fits."""
    from rl.tools.plan import estimate_memory, model_shape

    path = REPO_ROOT / "configs" / "ppo-r1t1-qwen2.5-7b.yaml"
    ppo = load_config(path, overrides_for(path, data_dir, cot_jsonl))
    grpo = load_config(REPO_ROOT / "configs" / "r1t1-qwen2.5-7b.yaml", overrides_for(path, data_dir, cot_jsonl))
    assert ppo.grpo.algorithm == "ppo" and grpo.grpo.algorithm == "grpo"
    for section in ("model", "lora", "data", "prompt", "sampling", "rollout", "reward", "sft", "eval", "hardware"):
        assert getattr(ppo, section) == getattr(grpo, section), section
    shape, _ = model_shape(ppo)
    learner = estimate_memory(ppo, shape, 80)["learner"]
    assert learner["critic"] > 0.5 and learner["critic_activations"] > 1.0  # GiB, 7B
    assert "critic" not in estimate_memory(grpo, shape, 80)["learner"]
    out = io.StringIO()
    assert print_plan(ppo, out=out) == 0, out.getvalue()
    assert "critic LoRA+head+grads+Adam" in out.getvalue() and "critic activations" in out.getvalue()


def test_a_separate_critic_model_is_counted_by_its_own_shape(data_dir, cot_jsonl):
    """ppo.critic_model: the dry run adds the critic model's weights and sizes its LoRA and
    activations on its shape (Qwen2.5-1.5B's, from the built-in table), not the policy's."""
    from rl.tools.plan import estimate_memory, model_shape

    path = REPO_ROOT / "configs" / "ppo-r1t1-qwen2.5-7b.yaml"
    shared = load_config(path, overrides_for(path, data_dir, cot_jsonl))
    separate = load_config(path, [*overrides_for(path, data_dir, cot_jsonl), "--ppo.critic_model", "Qwen/Qwen2.5-1.5B"])
    shape, _ = model_shape(shared)
    critic_shape, where = model_shape(separate, "Qwen/Qwen2.5-1.5B")
    assert critic_shape is not None and critic_shape.hidden_size < shape.hidden_size, where
    one = estimate_memory(shared, shape, 80)["learner"]
    two = estimate_memory(separate, shape, 80, critic_shape=critic_shape)["learner"]
    assert "critic_weights" not in one
    assert two["critic_weights"] == pytest.approx(critic_shape.params() * 2 / 2**30)  # bf16
    assert two["critic_activations"] < one["critic_activations"]
    out = io.StringIO()
    assert print_plan(separate, out=out) == 0, out.getvalue()
    assert "critic model" in out.getvalue() and "its own model Qwen/Qwen2.5-1.5B" in out.getvalue()


def test_the_7b_recipe_uses_the_r1t1_reward():
    raw = yaml.safe_load((REPO_ROOT / "configs/r1t1-qwen2.5-7b.yaml").read_text())
    assert raw["reward"]["spec"] == "r1t1" and raw["reward"]["comet_gpus"] > 0
    small = yaml.safe_load((REPO_ROOT / "configs/small-qwen2.5-1.5b.yaml").read_text())
    assert small["reward"]["spec"] == "chrf-format" and small["hardware"]["gpu_memory_gb"] == 24


@pytest.mark.parametrize("path", GRPO, ids=lambda p: p.name)
def test_each_grpo_recipe_has_a_matching_sft_recipe(path, data_dir, cot_jsonl):
    """init_adapter=auto reads <output_dir>/<sft.run_name>/adapter: the SFT recipe must write exactly there,
    for the same base model, LoRA rank and prompt format."""
    grpo = load_config(path, overrides_for(path, data_dir, cot_jsonl))
    # a PPO recipe (ppo-<name>.yaml) starts from the GRPO recipe's cold start (sft-<name>.yaml)
    sft_path = path.parent / f"sft-{path.name.removeprefix('ppo-')}"
    assert sft_path in SFT, f"no SFT recipe {sft_path.name} for {path.name}"
    sft = load_config(sft_path, overrides_for(sft_path, data_dir, cot_jsonl))
    assert (sft.sft.run_name, sft.output_dir) == (grpo.sft.run_name, grpo.output_dir)
    assert sft.model.name_or_path == grpo.model.name_or_path
    assert (sft.lora.r, sft.lora.target_modules) == (grpo.lora.r, grpo.lora.target_modules)
    assert (sft.prompt.think_prefill, sft.prompt.templates_dir) == (grpo.prompt.think_prefill, grpo.prompt.templates_dir)


@pytest.mark.parametrize("path", SFT, ids=lambda p: p.name)
def test_sft_recipe_names_placeholder_cot_data_with_a_clear_error(path):
    from rl.core.config import ConfigError

    with pytest.raises(ConfigError, match=r"sft\.data_path: path not found: data/"):
        load_config(path)


@pytest.mark.parametrize("path", ACCELERATE, ids=lambda p: p.name)
def test_accelerate_config_is_valid_for_accelerate(path):
    """accelerate's own loader rejects unknown keys; DeepSpeed keys must be launch options it maps."""
    from accelerate.commands.config.config_args import ClusterConfig
    from accelerate.commands.launch import launch_command_parser

    cfg = ClusterConfig.from_yaml_file(str(path))
    assert cfg.mixed_precision == "bf16" and cfg.num_machines == 1 and not cfg.use_cpu
    options = {action.dest for action in launch_command_parser()._actions}
    assert set(cfg.deepspeed_config) <= options
    kind = {"single_gpu.yaml": "NO", "multi_gpu_ddp.yaml": "MULTI_GPU", "deepspeed_zero2.yaml": "DEEPSPEED"}
    if path.name in kind:
        assert cfg.distributed_type.value == kind[path.name]
    if path.name == "deepspeed_zero2.yaml":
        assert cfg.deepspeed_config["zero_stage"] == 2
