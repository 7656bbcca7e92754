"""Fixes: rl/sft.py saves checkpoints and resumes like GRPO training. ``--resume``
continues the last complete checkpoint (not step 0) with the run's own config.yaml and
refuses experiment changes; a finished run's adapter/ is not replaced; Ctrl-C saves a
checkpoint, writes no adapter/ and exits 130. One short toy SFT (6 steps of 16 examples)
is trained three times: interrupted after step 3, resumed, and uninterrupted."""
from __future__ import annotations

import argparse
import json
import os
import signal
from pathlib import Path

import pytest
from transformers import TrainerCallback

from rl.core.config import ConfigError, add_config_args, load_config, parse_cli
from rl.core.runs import EXIT_INTERRUPTED, write_resolved_config
from rl.learn.sft import SFTInterrupted, resumed_sft_config, run_sft
from rl.learn.sft import main as sft_main

REPO = Path(__file__).resolve().parent.parent
TOY = str(REPO / "configs" / "toy.yaml")


@pytest.fixture(scope="module")
def cot_subset(toy_world, tmp_path_factory) -> Path:
    """The toy world's first 128 CoT examples: 6 steps of 16 need no more, and
    tokenizing all 8,000 would take most of the test's time."""
    lines = toy_world.cot_sft_jsonl.read_text(encoding="utf-8").splitlines(keepends=True)[:128]
    path = tmp_path_factory.mktemp("cot") / "cot.jsonl"
    path.write_text("".join(lines), encoding="utf-8")
    return path


def toy_sft_config(out: Path, data: Path, *extra: str):
    return load_config(TOY, ["--output_dir", str(out), "--sft.data_path", str(data), "--sft.max_steps", "6",
                             "--sft.save_steps", "2", "--sft.run_name", "sft", *extra])


def adapter_weights(adapter_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(adapter_dir / "adapter_model.safetensors"))


class CtrlCAt(TrainerCallback):
    """Sends this process SIGINT (as Ctrl-C does) while step ``step`` runs."""

    def __init__(self, step: int):
        self.step = step

    def on_step_begin(self, args, state, control, **kw):
        if state.global_step == self.step - 1:
            os.kill(os.getpid(), signal.SIGINT)


class StepsRun(TrainerCallback):
    """Records the global step at the start of each step this run trains."""

    def __init__(self):
        self.started: list[int] = []

    def on_step_begin(self, args, state, control, **kw):
        self.started.append(state.global_step)


def test_interrupted_sft_resumes_from_its_checkpoint_like_an_uninterrupted_run(cot_subset, tmp_path):
    import torch

    cfg = toy_sft_config(tmp_path / "a", cot_subset)
    run_dir = tmp_path / "a" / "sft"
    # the handler before the run: Python's default, or SIG_IGN when pytest runs in the background (`cmd &`)
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(SFTInterrupted, match="after step 3 of 6"):
        run_sft(cfg, callbacks=[CtrlCAt(3)])
    assert signal.getsignal(signal.SIGINT) is before  # the handler is put back
    assert (run_dir / "checkpoints" / "checkpoint-2").is_dir()  # sft.save_steps
    assert (run_dir / "checkpoints" / "checkpoint-3" / "trainer_state.json").is_file()  # saved on Ctrl-C
    assert not (run_dir / "adapter").exists()

    steps = StepsRun()
    adapter = run_sft(toy_sft_config(tmp_path / "a", cot_subset), resume=True, callbacks=[steps])
    assert steps.started == [3, 4, 5]  # continued after the checkpoint, not from step 0
    assert json.loads((run_dir / "sft_summary.json").read_text())["resumed_from_step"] == 3
    assert json.loads((run_dir / "checkpoints" / "checkpoint-6" / "trainer_state.json").read_text())["global_step"] == 6

    straight = run_sft(toy_sft_config(tmp_path / "b", cot_subset))
    resumed, expected = adapter_weights(adapter), adapter_weights(straight)
    assert resumed.keys() == expected.keys() and resumed
    for name, tensor in expected.items():
        torch.testing.assert_close(resumed[name], tensor, rtol=1e-5, atol=1e-6, msg=name)
    assert any(t.abs().sum() > 0 for n, t in expected.items() if "lora_B" in n)  # it did train


def _started_run(tmp_path: Path, *files: str) -> Path:
    """A run dir as rl/sft.py leaves it: config.yaml plus ``files`` (relative paths)."""
    run_dir = tmp_path / "sft"
    run_dir.mkdir()
    write_resolved_config(load_config(TOY, ["--output_dir", str(tmp_path), "--sft.run_name", "sft"]), run_dir)
    for name in files:
        (run_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (run_dir / name).write_text("x")
    return run_dir


def test_resume_without_a_complete_checkpoint_is_a_clear_error(tmp_path, capsys):
    _started_run(tmp_path, "tensorboard/events.out", "checkpoints/checkpoint-2/adapter_model.safetensors")
    assert sft_main(["--config", TOY, "--output_dir", str(tmp_path), "--run-name", "sft", "--resume"]) == 2
    err = capsys.readouterr()
    assert "no complete checkpoint in" in err.err and "skipping incomplete checkpoint" in err.out


def test_resume_of_a_finished_run_keeps_its_adapter(tmp_path, capsys):
    run_dir = _started_run(tmp_path, "adapter/adapter_model.safetensors", "checkpoints/checkpoint-2/trainer_state.json",
                           "checkpoints/checkpoint-2/adapter_model.safetensors")
    assert sft_main(["--output_dir", str(tmp_path), "--run-name", "sft", "--resume"]) == 2
    assert "is finished (it has adapter/); --overwrite" in capsys.readouterr().err
    assert (run_dir / "adapter" / "adapter_model.safetensors").read_text() == "x"


@pytest.mark.parametrize("change", [["--sft.learning_rate", "0.01"], ["--sft.max_steps", "800"], ["--seed", "3"],
                                    ["--lora.r", "8"], ["--prompt.style", "direct"]])
@pytest.mark.parametrize("with_config", [True, False])
def test_resume_refuses_a_changed_experiment_key(tmp_path, capsys, change, with_config):
    _started_run(tmp_path, "checkpoints/checkpoint-2/trainer_state.json")
    argv = (["--config", TOY] if with_config else []) + ["--output_dir", str(tmp_path), "--run-name", "sft", "--resume"]
    assert sft_main(argv + change) == 2
    assert f"--resume would change what the run learns: {change[0][2:]}:" in capsys.readouterr().err


def test_resume_ignores_sections_sft_never_reads(tmp_path):
    _started_run(tmp_path)
    parser = argparse.ArgumentParser()
    add_config_args(parser)
    parser.add_argument("--run-name")
    parser.add_argument("--resume", action="store_true")
    argv = ["--config", TOY, "--output_dir", str(tmp_path), "--resume", "--sft.run_name", "sft",
            "--grpo.learning_rate", "0.1", "--reward.spec", "r1t1"]
    _, cfg = parse_cli(parser, argv)
    merged = resumed_sft_config(parser, argv, cfg)  # no ConfigError: GRPO's keys do not change the SFT run
    assert merged.sft == load_config(TOY, ["--sft.run_name", "sft"]).sft
    with pytest.raises(ConfigError):
        resumed_sft_config(parser, argv + ["--sft.batch_size", "4"], parse_cli(parser, argv + ["--sft.batch_size", "4"])[1])


def test_interrupted_sft_exits_130(monkeypatch, tmp_path, capsys):
    def interrupted(cfg, resume=False, overwrite=False):
        raise SFTInterrupted("[sft] interrupted (Ctrl-C) after step 3 of 6")

    monkeypatch.setattr("rl.learn.sft.run_sft", interrupted)
    assert sft_main(["--config", TOY, "--output_dir", str(tmp_path)]) == EXIT_INTERRUPTED
    assert "interrupted (Ctrl-C)" in capsys.readouterr().err


def test_sft_save_steps_must_be_positive():
    with pytest.raises(ConfigError, match="sft.save_steps must be >= 1"):
        load_config(TOY, ["--sft.save_steps", "0"])


def test_pipeline_stops_after_an_interrupted_sft(monkeypatch, tmp_path, capsys):
    from rl import pipeline
    from rl.core import resolve

    def interrupted(cfg):
        raise SFTInterrupted("[sft] interrupted (Ctrl-C) after step 3 of 400")

    def no_training(*a, **k):
        raise AssertionError("GRPO started without a cold-start adapter")

    monkeypatch.setattr(resolve, "model_path", lambda cfg: "model")
    monkeypatch.setattr("rl.learn.sft.cold_start_adapter", interrupted)
    monkeypatch.setattr("rl.learn.grpo.train", no_training)
    code = pipeline.main(["--config", TOY, "--output_dir", str(tmp_path), "--run-name", "p"])
    assert code == EXIT_INTERRUPTED
    assert "SFT was interrupted" in capsys.readouterr().err


def test_a_cold_start_from_another_toy_world_is_trained_again(toy_world, tmp_path, monkeypatch):
    """A toy world rebuilt by new code or config has a new tokenizer and weights: the "auto"
    cold-start adapter of the old one is trained again (the old run kept aside), not reused."""
    from rl.learn import sft

    cfg = load_config(TOY, ["--output_dir", str(tmp_path)])
    run = tmp_path / cfg.sft.run_name
    (run / "adapter").mkdir(parents=True)
    (run / "adapter" / "adapter_config.json").write_text("{}")
    calls = []
    monkeypatch.setattr(sft, "run_sft", lambda c, overwrite=False, **kw: calls.append(overwrite))

    sft.cold_start_adapter(cfg)  # no base recorded (a run from before base_model was written)
    (run / "sft_summary.json").write_text(json.dumps({"base_model": str(tmp_path / "old-world" / "model")}))
    sft.cold_start_adapter(cfg)
    assert calls == [True, True]
    (run / "sft_summary.json").write_text(json.dumps({"base_model": str(toy_world.model_dir)}))
    assert sft.cold_start_adapter(cfg) == str(run / "adapter") and len(calls) == 2  # the current world's: kept
