"""Training: run-dir safety, early config errors, and real GRPO steps on the toy
world (Ray + vLLM rollouts, TRL GRPOTrainer, LoRA sync) with KL and resume."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from rl.config import load_config
from rl.runs import RunDirError, prepare_run_dir, read_metrics
from rl.train import main as train_main

REPO = Path(__file__).resolve().parent.parent
TOY = str(REPO / "configs" / "toy.yaml")


def toy_cfg(tmp: Path, *overrides: str):
    return load_config(TOY, ["--output_dir", str(tmp), *overrides])


def test_refuses_to_overwrite_a_run(tmp_path):
    run = prepare_run_dir(tmp_path, "r1")
    (run / "metrics.jsonl").write_text('{"step": 1}\n')
    with pytest.raises(RunDirError, match="already exists"):
        prepare_run_dir(tmp_path, "r1")
    # the CLI says so and exits 2 before any model is loaded
    assert train_main(["--config", TOY, "--output_dir", str(tmp_path), "--run-name", "r1"]) == 2
    moved = prepare_run_dir(tmp_path, "r1", overwrite=True)
    assert moved == run and not any(run.iterdir())
    kept = [p for p in tmp_path.iterdir() if p.name.startswith("r1.old-")]
    assert len(kept) == 1 and (kept[0] / "metrics.jsonl").read_text() == '{"step": 1}\n'


@pytest.mark.parametrize(
    "override, message",
    [
        (["--grpo.bta", "0.1"], "unknown key"),
        (["--grpo.beta", "high"], "grpo.beta must be a number"),
        (["--model.init_adapter", "/no/such/adapter"], "model.init_adapter"),
        (["--reward.spec", "no_such_reward"], "no_such_reward"),
    ],
)
def test_bad_config_fails_before_any_model_loads(tmp_path, capsys, monkeypatch, override, message):
    import transformers

    def refuse(*a, **k):
        raise AssertionError("a model was loaded before the config was rejected")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", refuse)
    start = time.perf_counter()
    code = train_main(["--config", TOY, "--output_dir", str(tmp_path), "--run-name", "bad", *override])
    assert code == 2
    assert time.perf_counter() - start < 30
    assert message in capsys.readouterr().err


# ----------------------------------------------------------------------------- real GRPO runs

@pytest.fixture(scope="module")
def grpo_base(tmp_path_factory, toy_world, toy_sft_adapter, ray_cluster):
    """Settings shared by the GRPO runs below: small batches, fp32 engine, seeded."""
    out = tmp_path_factory.mktemp("grpo")
    return out, [
        "--model.init_adapter", str(toy_sft_adapter),
        "--grpo.prompts_per_step", "4", "--sampling.n", "4", "--sampling.max_tokens", "64",
        "--rollout.dtype", "float32", "--grpo.save_steps", "2",
    ]


def run_grpo(out: Path, name: str, base: list[str], *extra: str, resume: bool = False, engine=None):
    from rl.grpo import train

    cfg = load_config(TOY, ["--output_dir", str(out), *base, *extra])
    cfg.run_name = name
    run_dir = prepare_run_dir(out, name, resume=resume)
    train(cfg, run_dir, resume=resume, engine=engine)
    return run_dir


@pytest.fixture(scope="module")
def shared_engine(grpo_base, toy_world):
    from rl.rollout import make_rollout_engine

    cfg = load_config(TOY, ["--rollout.dtype", "float32"])
    engine = make_rollout_engine(str(toy_world.model_dir), cfg.rollout, cfg.lora, seed=0)
    yield engine
    engine.shutdown()


@pytest.mark.slow
def test_grpo_steps_log_bounded_kl_and_push_one_adapter_per_step(grpo_base, shared_engine):
    out, base = grpo_base
    run = run_grpo(out, "kl", base, "--grpo.max_steps", "2", "--grpo.beta", "0.04", engine=shared_engine)
    records = read_metrics(run)
    assert [r["step"] for r in records] == [1, 2]
    assert all(0 <= r["kl"] < 1.0 for r in records)
    assert records[-1]["kl"] > 0  # after one update the policy has moved away from the reference
    for r in records:  # every part of the step is measured and logged
        assert {"reward", "format_ok", "time/generation", "time/reward", "time/sync", "time/learner"} <= set(r)
        assert r["adapter_pushes"] == 1  # one adapter push per optimizer step
    assert (run / "adapter" / "adapter_model.safetensors").exists()
    assert (run / "checkpoints" / "checkpoint-2").is_dir()
    assert (run / "plots" / "reward.png").exists()


@pytest.mark.slow
def test_beta_zero_runs_no_reference_pass(grpo_base, shared_engine):
    out, base = grpo_base
    run = run_grpo(out, "beta0", base, "--grpo.max_steps", "1", "--grpo.beta", "0", engine=shared_engine)
    (record,) = read_metrics(run)
    assert "kl" not in record  # TRL computes (and logs) KL only when it runs the reference pass
    cfg = json.loads(json.dumps(load_config(str(run / "config.yaml")).to_dict()))
    assert cfg["grpo"]["beta"] == 0.0
