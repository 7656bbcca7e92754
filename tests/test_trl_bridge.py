"""rl/learn/trl_bridge.py, the one module that uses TRL's and transformers' private API:
(a) every private name it relies on exists in the installed TRL with the expected signature
(an upgrade that moves one fails here, naming it); (b) the start-up version check; (c) no
other module under rl/ touches those names; and the subclass itself, trained one step on a
tiny random model with a fake rollout (no engine): TRL calls our weight sync, and the
sampler/learner gap we measure equals TRL's own metric."""
from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
from transformers import TrainerCallback

from rl.learn import trl_bridge
from rl.learn.trl_bridge import (
    SKIP_VERSION_CHECK_ENV,
    STAGES,
    TESTED_VERSIONS,
    TRL_BATCH_KEYS,
    TRL_PRIVATE_ATTRIBUTES,
    TRL_PRIVATE_METHODS,
    TRL_VLLM_GENERATION_METHODS,
    VersionError,
    check_versions,
)

REPO = Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------------------- (a) TRL's private API

@pytest.fixture(scope="module")
def grpo_trainer_cls():
    from trl import GRPOTrainer

    return GRPOTrainer


@pytest.mark.parametrize("name", sorted(TRL_PRIVATE_METHODS))
def test_private_method_exists_with_expected_parameters(grpo_trainer_cls, name):
    method = getattr(grpo_trainer_cls, name, None)
    assert callable(method), f"trl.GRPOTrainer.{name} is gone: rl/learn/trl_bridge.py overrides or wraps it"
    params = list(inspect.signature(method).parameters)
    want = list(TRL_PRIVATE_METHODS[name])
    assert params[:len(want)] == want, f"trl.GRPOTrainer.{name}{inspect.signature(method)}: expected to start with {want}"


@pytest.mark.parametrize("name", TRL_VLLM_GENERATION_METHODS)
def test_vllm_generation_private_method_exists(name):
    from trl.generation.vllm_generation import VLLMGeneration

    assert callable(getattr(VLLMGeneration, name, None)), f"trl VLLMGeneration.{name} is gone (rl/learn/trl_bridge.py)"


def test_private_attributes_are_trl_s_own(grpo_trainer_cls):
    """The attributes the subclass sets are the ones TRL's __init__ sets (use_vllm branch)."""
    init = inspect.getsource(grpo_trainer_cls.__init__)
    for attr in TRL_PRIVATE_ATTRIBUTES:
        assert f"self.{attr} =" in init, f"trl.GRPOTrainer.__init__ no longer sets self.{attr}"


def test_rollout_generation_syncs_weights_through_vllm_generation(grpo_trainer_cls):
    """What RolloutGRPOTrainer relies on: with rollout_func, TRL's _generate calls
    vllm_generation.sync_weights() once per optimizer step when use_vllm is set."""
    src = inspect.getsource(grpo_trainer_cls._generate)
    for piece in ("self.rollout_func(prompts, self)", "self.use_vllm and self.state.global_step != self._last_loaded_step",
                  "self.vllm_generation.sync_weights()", "self._last_loaded_step = self.state.global_step"):
        assert piece in src, f"trl.GRPOTrainer._generate no longer has {piece!r}"


def test_importance_sampling_correction_is_gated_on_use_vllm(grpo_trainer_cls):
    src = inspect.getsource(grpo_trainer_cls._generate_and_score_completions)
    assert "self.use_vllm and self.vllm_importance_sampling_correction" in src


def test_loss_scores_through_the_wrapped_methods(grpo_trainer_cls):
    """The gap measurement: compute_loss -> _compute_loss -> _get_per_token_logps_and_entropies,
    and the batch keys it reads."""
    assert "self._compute_loss(model, inputs)" in inspect.getsource(grpo_trainer_cls.compute_loss)
    loss = inspect.getsource(grpo_trainer_cls._compute_loss)
    assert "self._get_per_token_logps_and_entropies(" in loss
    batch = inspect.getsource(grpo_trainer_cls._generate_and_score_completions)
    for key in TRL_BATCH_KEYS:
        assert f'"{key}"' in batch, f"TRL's batch has no {key!r} key any more"


def test_vllm_only_check_is_the_one_replicated(grpo_trainer_cls):
    """RolloutGRPOTrainer._check_vllm_settings repeats the use_vllm-only check of TRL's __init__."""
    assert 'self.loss_type == "vespo" and self.use_vllm and self.vllm_importance_sampling_correction' in (
        inspect.getsource(grpo_trainer_cls.__init__))


def test_prepare_inputs_shuffles_through_the_module_level_function(grpo_trainer_cls):
    """What RolloutGRPOTrainer._prepare_inputs relies on to keep groups whole: TRL's shuffle
    before the micro-batch split is the module-level name it swaps for the call."""
    from trl.trainer import grpo_trainer

    assert callable(getattr(grpo_trainer, "shuffle_sequence_dict", None))
    src = inspect.getsource(grpo_trainer_cls._prepare_inputs)
    assert "generation_batch = shuffle_sequence_dict(generation_batch)" in src
    assert "split_tensor_dict(generation_batch, self.args.steps_per_generation)" in src


def test_subclass_overrides_only_listed_private_methods(grpo_trainer_cls):
    cls = trl_bridge.RolloutGRPOTrainer
    assert issubclass(cls, grpo_trainer_cls)
    overridden = {n for n in vars(cls) if n.startswith("_") and not n.startswith("__") and hasattr(grpo_trainer_cls, n)}
    assert overridden <= set(TRL_PRIVATE_METHODS), overridden - set(TRL_PRIVATE_METHODS)


def test_ppo_subclass_overrides_only_listed_private_methods(grpo_trainer_cls):
    cls = trl_bridge.RolloutPPOTrainer
    assert issubclass(cls, trl_bridge.RolloutGRPOTrainer)
    overridden = {n for n in vars(cls) if n.startswith("_") and not n.startswith("__") and hasattr(grpo_trainer_cls, n)}
    assert overridden <= set(TRL_PRIVATE_METHODS), overridden - set(TRL_PRIVATE_METHODS)


def test_ppo_reads_trl_s_gathered_rewards_in_process_order(grpo_trainer_cls):
    """What RolloutPPOTrainer relies on: TRL scores through _calculate_rewards, whose rows are
    every process's completions in process order (TRL slices its advantages the same way)."""
    src = inspect.getsource(grpo_trainer_cls._generate_and_score_completions)
    for piece in ("rewards_per_func = self._calculate_rewards(inputs, prompts, completions, completion_ids_list)",
                  "self.accelerator.process_index * len(prompts)", "unscorable_mask = torch.isnan(rewards_per_func).all(dim=1)"):
        assert piece in src, f"trl.GRPOTrainer._generate_and_score_completions no longer has {piece!r}"
    assert "gather(" in inspect.getsource(grpo_trainer_cls._calculate_rewards)


def test_one_sample_per_prompt_config_is_refused_by_trl_alone_and_built_by_the_bridge(tmp_path):
    from trl import GRPOConfig

    kwargs = dict(output_dir=str(tmp_path), report_to=[], per_device_train_batch_size=4, use_cpu=True,
                  num_generations=1)
    with pytest.raises(ValueError, match="at least 2 generations"):
        GRPOConfig(**kwargs)
    config = trl_bridge.grpo_config(**kwargs)
    assert config.num_generations == 1 and config.generation_batch_size == 4
    odd = trl_bridge.grpo_config(**{**kwargs, "per_device_train_batch_size": 3})  # odd: no group of 2 divides it
    assert odd.num_generations == 1 and odd.generation_batch_size == 3
    with pytest.raises(ValueError, match="at least 2 completions"):
        trl_bridge.grpo_config(**{**kwargs, "per_device_train_batch_size": 1})


def test_benchmark_stages_exist(grpo_trainer_cls):
    for stage, name in STAGES.items():
        assert name in TRL_PRIVATE_METHODS and callable(getattr(grpo_trainer_cls, name, None)), (stage, name)


def test_use_triton_hook_exists_and_is_read_at_call_time():
    import trl.trainer.utils as trl_utils

    hook = getattr(trl_utils, "_use_triton", None)
    assert callable(hook), "trl.trainer.utils._use_triton is gone: score_only_completion_tokens_on_cpu patches it"
    assert list(inspect.signature(getattr(hook, "trl_original", hook)).parameters) == ["device"]
    assert "compact = _use_triton(" in inspect.getsource(trl_utils), (
        "trl.trainer.utils no longer calls _use_triton(...) at call time; the CPU patch would do nothing")


# ----------------------------------------------------------------------------- (b) versions

def test_installed_versions_pass():
    check_versions()


def test_tested_ranges_match_pyproject():
    text = (REPO / "pyproject.toml").read_text()
    assert '"trl==1.16.0"' in text and TESTED_VERSIONS["trl"] == ">=1.16.0,<1.17"
    assert f'"transformers{TESTED_VERSIONS["transformers"]}"' in text


@pytest.mark.parametrize("package,fake", [("trl", "1.17.0"), ("transformers", "5.20.0"), ("transformers", "4.57.1")])
def test_out_of_range_version_is_refused_with_a_clear_message(monkeypatch, package, fake):
    monkeypatch.delenv(SKIP_VERSION_CHECK_ENV, raising=False)
    real = trl_bridge._installed_version
    monkeypatch.setattr(trl_bridge, "_installed_version", lambda p: fake if p == package else real(p))
    with pytest.raises(VersionError) as err:
        check_versions()
    msg = str(err.value)
    for piece in (package, fake, TESTED_VERSIONS[package], f"{SKIP_VERSION_CHECK_ENV}=1"):
        assert piece in msg, (piece, msg)
    monkeypatch.setenv(SKIP_VERSION_CHECK_ENV, "1")
    check_versions()  # the override


def test_missing_package_is_refused(monkeypatch):
    monkeypatch.delenv(SKIP_VERSION_CHECK_ENV, raising=False)
    monkeypatch.setattr(trl_bridge, "_installed_version", lambda p: None if p == "trl" else "5.19.0")
    with pytest.raises(VersionError, match="trl is not installed"):
        check_versions()


def test_dry_run_reports_the_version_error(monkeypatch):
    from rl.core.config import load_config
    from rl.tools.plan import check_start

    monkeypatch.delenv(SKIP_VERSION_CHECK_ENV, raising=False)
    monkeypatch.setattr(trl_bridge, "_installed_version", lambda p: "9.0.0")
    errors, _ = check_start(load_config(REPO / "configs" / "toy.yaml", []))
    assert any("trl 9.0.0 is installed" in e for e in errors), errors


def test_bridge_import_loads_neither_torch_nor_trl():
    """The dry run imports the bridge for check_versions; it must stay cheap."""
    import subprocess
    import sys

    code = ("import sys, rl.learn.trl_bridge as b; b.check_versions(); "
            "print(sorted(m for m in ('torch', 'trl', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


# ----------------------------------------------------------------------------- (c) no touches elsewhere

_NAMES = sorted({*TRL_PRIVATE_METHODS, *TRL_PRIVATE_ATTRIBUTES, *TRL_VLLM_GENERATION_METHODS, "_use_triton"}
                - {"_generate"})
_TOUCH = re.compile(
    r"\.(?:" + "|".join(_NAMES) + r")\b"  # attribute access (`_generate` too common: our own classes have one)
    r"|\btrainer\._[A-Za-z]\w*"  # any private attribute of a trainer
    r"|[\"'](?:" + "|".join([*_NAMES, "_generate"]) + r")[\"']"  # getattr/setattr by name
    r"|\buse_vllm\s*="  # GRPOConfig(use_vllm=...) or the flag flipped
)


def _touches(path: Path) -> list[str]:
    return [f"{path.relative_to(REPO)}:{i}: {line.strip()}"
            for i, line in enumerate(path.read_text().splitlines(), 1) if _TOUCH.search(line)]


def test_the_pattern_finds_the_bridge_s_own_touches():
    found = "\n".join(_touches(REPO / "rl" / "learn" / "trl_bridge.py"))
    for name in ("use_vllm", "vllm_generation", "_last_loaded_step", "_use_triton"):
        assert name in found, name


def test_no_module_outside_the_bridge_touches_trl_privates():
    bridge = REPO / "rl" / "learn" / "trl_bridge.py"
    bad = [t for f in sorted((REPO / "rl").rglob("*.py")) if f != bridge for t in _touches(f)]
    assert bad == [], "TRL private API used outside rl/learn/trl_bridge.py:\n" + "\n".join(bad)


# ----------------------------------------------------------------------------- the subclass, one step

class _FakeSync:
    def __init__(self, trainer):
        self.trainer, self.calls = trainer, []

    def sync_weights(self):
        self.calls.append(self.trainer.state.global_step)


def _train_one_step(tmp_path, model_dir, correction: bool, on_logp_gap=None, sampler_logps=((-1.0, -2.0, -3.0),),
                    callbacks=(), **args):
    """One GRPO step of RolloutGRPOTrainer on the fp32 model at ``model_dir``:
    2 prompts x 2 samples of 3 fixed tokens whose sampler logprobs are made up (row i:
    ``sampler_logps[i % len(sampler_logps)]``); returns (trainer, logged dicts, rollout calls)."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    calls, seen_logs = [], []

    def rollout(prompts, trainer):
        calls.append((trainer.state.global_step, list(trainer.weight_sync.calls)))
        ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        return {"prompt_ids": ids, "completion_ids": [[5, 6, 7] for _ in prompts],
                "logprobs": [list(sampler_logps[i % len(sampler_logps)]) for i in range(len(prompts))]}

    class Logs(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kw):
            seen_logs.append(dict(logs or {}))

    config = GRPOConfig(**{
        "output_dir": str(tmp_path / "out"), "report_to": [], "save_strategy": "no", "logging_steps": 1,
        "disable_tqdm": True, "per_device_train_batch_size": 4, "gradient_accumulation_steps": 1,
        "num_generations": 2, "max_completion_length": 8, "temperature": 1.0, "beta": 0.0, "learning_rate": 1e-3,
        "max_steps": 1, "seed": 0, "use_cpu": True, "remove_unused_columns": False, "dataloader_num_workers": 0,
        "vllm_importance_sampling_correction": correction, **args,
    })
    trainer = trl_bridge.RolloutGRPOTrainer(
        model=model, reward_funcs=[lambda completions, **kw: [float(i) for i in range(len(completions))]],
        args=config, train_dataset=Dataset.from_list([{"prompt": f"say {w}"} for w in ("a", "b")]),
        processing_class=tokenizer, rollout_func=rollout, weight_sync=_FakeSync, on_logp_gap=on_logp_gap,
    )
    for callback in (Logs(), *callbacks):
        trainer.add_callback(callback)
    trainer.train()
    return trainer, seen_logs, calls


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from helpers_models import build_tiny_qwen2

    return build_tiny_qwen2(tmp_path_factory.mktemp("tiny"))


def test_subclass_syncs_before_generating_and_measures_trl_s_gap(tmp_path, tiny_model):
    """TRL calls our sync once before the step's generation; with the correction on, TRL logs
    the gap; with it off, our measurement (from the loss's scoring pass) gives the same number;
    with it on and on_logp_gap given, ours reads TRL's old_per_token_logps and agrees too."""
    trainer, logs, calls = _train_one_step(tmp_path / "on", tiny_model, correction=True, on_logp_gap=None)
    assert trainer.use_vllm and trainer._last_loaded_step == 0
    assert isinstance(trainer.weight_sync, _FakeSync) and trainer.weight_sync.trainer is trainer
    assert calls == [(0, [0])]  # synced at step 0, before the rollout
    trl_gap = next(entry["sampling/sampling_logp_difference/mean"] for entry in logs
                   if "sampling/sampling_logp_difference/mean" in entry)
    assert trl_gap > 0.1

    for correction in (False, True):
        seen = []
        _train_one_step(tmp_path / f"gap-{correction}", tiny_model, correction=correction,
                        on_logp_gap=lambda total, tokens, seen=seen: seen.append((total, tokens)))
        assert len(seen) == 1 and seen[0][1] == 12, seen  # one loss, 4 completions x 3 tokens
        assert seen[0][0] / seen[0][1] == pytest.approx(trl_gap, rel=1e-4), (correction, seen, trl_gap)


def test_vespo_check_that_use_vllm_would_make_runs(tmp_path, tiny_model):
    with pytest.raises(ValueError, match="VESPO loss requires"):
        _train_one_step(tmp_path, tiny_model, correction=True, loss_type="vespo",
                        vllm_importance_sampling_mode="sequence_mask")


class _NoGradForwards(TrainerCallback):
    """Counts the policy's forward passes without gradients (TRL's no-grad scoring passes)."""

    def __init__(self):
        self.count = 0

    def on_train_begin(self, args, state, control, model=None, **kw):
        import torch

        def count(module, inputs, output):
            self.count += not torch.is_grad_enabled()

        model.register_forward_hook(count)


IS_METRICS = ("sampling/sampling_logp_difference/mean", "sampling/sampling_logp_difference/max",
              "sampling/importance_sampling_ratio/min", "sampling/importance_sampling_ratio/mean",
              "sampling/importance_sampling_ratio/max")


@pytest.mark.parametrize("mode", ["token_truncate", "token_mask", "sequence_truncate", "sequence_mask"])
def test_importance_sampling_ratio_from_the_loss_pass_gives_trl_s_step(tmp_path, tiny_model, monkeypatch, mode):
    """rl/learn/importance_sampling.py: with the ratio taken in each loss's pass (two micro-batches
    here), the step runs no no-grad pass of the policy, logs TRL's five ratio figures and makes
    TRL's update. The sampler's made-up logprobs (the tiny model gives these tokens about -9.7)
    put some tokens' and some rows' ratios above the clip (3.0), others below, so truncation
    and masking both act."""
    import torch
    from transformers import AutoModelForCausalLM

    runs = {}
    for defer in (False, True):
        monkeypatch.setattr(trl_bridge.RolloutGRPOTrainer, "defer_importance_sampling", defer)
        passes = _NoGradForwards()
        trainer, logs, _ = _train_one_step(
            tmp_path / str(defer), tiny_model, correction=True,
            sampler_logps=((-12.0, -9.5, -4.0), (-12.0, -9.5, -9.5)), callbacks=[passes],
            per_device_train_batch_size=2, gradient_accumulation_steps=2, vllm_importance_sampling_mode=mode)
        step = next(entry for entry in logs if "loss" in entry)
        runs[defer] = (passes.count, step, {n: p.detach().clone() for n, p in trainer.model.named_parameters()})
    (trl_passes, trl_logs, trl_params), (our_passes, our_logs, our_params) = runs[False], runs[True]
    assert trl_passes > 0 and our_passes == 0, (trl_passes, our_passes)
    ratio_min, ratio_max = trl_logs["sampling/importance_sampling_ratio/min"], trl_logs["sampling/importance_sampling_ratio/max"]
    clipped = ratio_min == 0.0 if mode.endswith("_mask") else ratio_max == pytest.approx(3.0)
    assert clipped and ratio_min < 1.0, trl_logs
    for name in IS_METRICS:
        assert our_logs[name] == pytest.approx(trl_logs[name], rel=1e-5, abs=1e-6), (name, our_logs, trl_logs)
    assert our_logs["loss"] == pytest.approx(trl_logs["loss"], rel=1e-5, abs=1e-7)
    start = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    moved = max(float((trl_params[n] - p).abs().max()) for n, p in start.named_parameters())
    apart = max(float((our_params[n] - trl_params[n]).abs().max()) for n in trl_params)
    assert moved > 0 and apart <= 1e-4 * moved, (apart, moved, {k: v for k, v in trl_logs.items() if "sampling/" in k})


def test_trl_weight_walk_times_trl_s_merge_walk_unmerge(tiny_model):
    """The step benchmark's lower bound of TRL's colocate weight sync runs TRL's own walk
    (no engine: its __init__ would start one): every base weight once, the LoRA merged
    during the walk and unmerged after it, so the policy is as it was."""
    import types

    import torch
    from accelerate import Accelerator
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    from trl.generation.vllm_generation import VLLMGeneration
    from trl.distributed import DistributedBackend

    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.5)  # non-zero, so that a merge left in place would show
    generation = VLLMGeneration.__new__(VLLMGeneration)  # the walk reads model and _dist only
    generation.model, generation.accelerator = model, Accelerator(cpu=True)
    generation._dist = DistributedBackend(generation.accelerator)
    ids = torch.tensor([[1, 5, 9, 2]])
    before = model(ids).logits
    seconds, parameters = trl_bridge.time_trl_weight_walk(types.SimpleNamespace(vllm_generation=generation), repeats=2)
    base = sum(p.numel() for n, p in model.named_parameters() if "lora_" not in n)
    assert parameters == base and seconds > 0
    torch.testing.assert_close(model(ids).logits, before)


def test_adapter_push_saves_what_peft_saves_without_the_model_card(tiny_model, tmp_path):
    """The per-step push (save_adapter(..., model_card=False)) writes PEFT's own config and
    weights, byte for byte, and no README.md; the model's card method is PEFT's again after."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from rl.core.runs import save_adapter

    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    save_adapter(model, tmp_path / "full")
    save_adapter(model, tmp_path / "push", model_card=False)
    assert (tmp_path / "full" / "README.md").is_file()
    assert sorted(p.name for p in (tmp_path / "push").iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        assert (tmp_path / "push" / name).read_bytes() == (tmp_path / "full" / name).read_bytes()
    assert "create_or_update_model_card" not in vars(model)
    save_adapter(model, tmp_path / "again")
    assert (tmp_path / "again" / "README.md").is_file()
