"""Fixes: Ctrl-C makes an interrupted run say so and exit 130 (no final adapter, the
pipeline evaluates nothing); --resume holds to the run's own config.yaml and refuses
command-line changes that would make it another experiment. No training runs here:
``rl.learn.grpo.train`` is replaced by fakes."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest

from rl.core.analytics import CotLabeler
from rl.core.config import ConfigError, load_config
from rl.learn.grpo import StepStats, _LoggingCallback
from rl.core.runs import EXIT_INTERRUPTED, TrainSummary, changed_keys, resume_config, write_resolved_config
from rl.train import main as train_main

REPO = Path(__file__).resolve().parent.parent
TOY = str(REPO / "configs" / "toy.yaml")


# ----------------------------------------------------------------------------- resume_config

def test_unchanged_config_resumes_as_saved():
    saved = load_config(TOY)
    merged = resume_config(saved, load_config(TOY))
    assert merged == saved and merged is not saved


def test_changed_reward_is_refused_naming_the_key_and_both_values():
    with pytest.raises(ConfigError) as info:
        resume_config(load_config(TOY), load_config(TOY, ["--reward.spec", "r1t1"]))
    message = str(info.value)
    assert "reward.spec: 'chrf-format' in the run, 'r1t1' now" in message


def test_every_refused_key_is_named_and_no_allowed_one():
    requested = load_config(TOY, ["--seed", "3", "--grpo.prompts_per_step", "8", "--model.init_adapter", TOY,
                                  "--rollout.dtype", "bfloat16", "--grpo.max_steps", "7"])
    with pytest.raises(ConfigError) as info:
        resume_config(load_config(TOY), requested)
    refused = str(info.value).split("On resume only these may change")[0]
    for key in ("seed", "grpo.prompts_per_step", "model.init_adapter", "rollout.dtype"):
        assert f"{key}:" in refused
    assert "grpo.max_steps:" not in refused


def test_save_steps_change_is_refused_on_resume():
    """transformers 5 reloads save_steps from the checkpoint's trainer_state.json on resume, so a
    new value would be silently ignored: refused instead, like any change that does not apply."""
    saved = load_config(TOY)
    with pytest.raises(ConfigError, match="grpo.save_steps"):
        resume_config(saved, load_config(TOY, ["--grpo.save_steps", "5"]))


def test_allowed_changes_are_applied_to_the_saved_config():
    saved = load_config(TOY, ["--grpo.max_steps", "20"])
    before = copy.deepcopy(saved)
    requested = load_config(TOY, [
        "--grpo.max_steps", "40", "--output_dir", "elsewhere", "--run_name", "other",
        "--rollout.ray_address", "auto", "--rollout.num_workers", "4", "--rollout.max_num_seqs", "64",
        "--rollout.enforce_eager", "false", "--rollout.cpu_kv_cache_gb", "8",
        "--hardware.gpu_memory_gb", "80", "--hardware.gpus_per_node", "8", "--eval.limit", "10",
    ])
    merged = resume_config(saved, requested)
    assert merged.grpo.max_steps == 40
    assert (merged.output_dir, merged.run_name) == ("elsewhere", "other")
    assert (merged.rollout.ray_address, merged.rollout.num_workers, merged.rollout.max_num_seqs) == ("auto", 4, 64)
    assert merged.rollout.enforce_eager is False and merged.rollout.cpu_kv_cache_gb == 8
    assert (merged.hardware.gpu_memory_gb, merged.hardware.gpus_per_node, merged.eval.limit) == (80.0, 8, 10)
    assert merged.reward == saved.reward and merged.grpo.learning_rate == saved.grpo.learning_rate
    assert saved == before  # the saved config itself is not touched


def test_changed_keys_compares_mappings_and_lists_whole():
    a = load_config(TOY, ["--prompt.template_weights", "{a: 1.0}"])
    b = load_config(TOY, ["--prompt.template_weights", "{a: 2.0}", "--reward.spec", "[chrf, format]"])
    assert changed_keys(a, b) == ["prompt.template_weights", "reward.spec"]


# ----------------------------------------------------------------------------- rl/train.py main

class FakeTrain:
    """Stands in for ``rl.learn.grpo.train``: records its calls, writes config.yaml and a
    metrics line as the real one does, and returns a TrainSummary."""

    def __init__(self, interrupted: bool = False):
        self.interrupted, self.calls = interrupted, []

    def __call__(self, cfg, run_dir, resume=False, engine=None, callbacks=()):
        self.calls.append((cfg, resume))
        write_resolved_config(cfg, run_dir)
        (run_dir / "metrics.jsonl").write_text('{"step": 1}\n')
        return TrainSummary("[train] fake summary", self.interrupted)


@pytest.fixture
def fake_train(monkeypatch):
    def install(interrupted: bool = False) -> FakeTrain:
        fake = FakeTrain(interrupted)
        monkeypatch.setattr("rl.learn.grpo.train", fake)
        return fake

    return install


def test_interrupted_run_exits_130(fake_train, tmp_path, capsys):
    fake_train(interrupted=True)
    assert train_main(["--config", TOY, "--output_dir", str(tmp_path), "--run-name", "r"]) == EXIT_INTERRUPTED == 130
    assert "fake summary" in capsys.readouterr().out


def test_finished_run_exits_0(fake_train, tmp_path):
    fake_train(interrupted=False)
    assert train_main(["--config", TOY, "--output_dir", str(tmp_path), "--run-name", "r"]) == 0


def test_readme_resume_continues_to_the_configs_max_steps(fake_train, tmp_path):
    """README: `--grpo.max_steps 20`, then the same command without it and with --resume:
    max_steps is a safe key, so the run continues to the toy config's 40."""
    fake = fake_train()
    base = ["--config", TOY, "--output_dir", str(tmp_path), "--run-name", "my-run"]
    assert train_main([*base, "--grpo.max_steps", "20"]) == 0
    assert train_main([*base, "--resume"]) == 0
    (first, _), (resumed, resume) = fake.calls
    assert first.grpo.max_steps == 20 and resume and resumed.grpo.max_steps == 40


def test_resume_refuses_another_reward(fake_train, tmp_path, capsys):
    fake = fake_train()
    base = ["--config", TOY, "--output_dir", str(tmp_path), "--run-name", "my-run"]
    assert train_main(base) == 0
    capsys.readouterr()
    assert train_main([*base, "--resume", "--reward.spec", "r1t1"]) == 2
    assert "reward.spec" in capsys.readouterr().err
    assert len(fake.calls) == 1  # refused before training
    saved = load_config(tmp_path / "my-run" / "config.yaml")
    assert saved.reward.spec == "chrf-format"  # config.yaml not rewritten


def test_resume_without_config_starts_from_the_runs_config(fake_train, tmp_path):
    fake = fake_train()
    assert train_main(["--config", TOY, "--output_dir", str(tmp_path), "--run-name", "my-run", "--seed", "3",
                       "--grpo.max_steps", "20"]) == 0
    assert train_main(["--output_dir", str(tmp_path), "--run-name", "my-run", "--resume"]) == 0
    assert train_main(["--output_dir", str(tmp_path), "--run-name", "my-run", "--resume", "--grpo.max_steps", "30"]) == 0
    assert train_main(["--output_dir", str(tmp_path), "--run-name", "my-run", "--resume", "--seed", "4"]) == 2
    first, same, longer = (cfg for cfg, _ in fake.calls)
    assert same == first and same.seed == 3
    assert longer.grpo.max_steps == 30 and longer.seed == 3


# ----------------------------------------------------------------------------- summary and pipeline

def _logger(tmp_path: Path) -> _LoggingCallback:
    """A callback whose run logged steps 1 and 2 (written after it starts: a fresh run's log starts empty)."""
    logger = _LoggingCallback(load_config(TOY), tmp_path, StepStats(), CotLabeler({}), is_main=True, checkpoint=None)
    for step in (1, 2):
        logger.metrics.write({"step": step, "reward": 0.5})
    return logger


def test_interrupted_summary_points_at_the_checkpoint_not_an_adapter(tmp_path):
    summary = _logger(tmp_path).summary(tmp_path, interrupted=True)
    assert isinstance(summary, str) and summary.interrupted
    assert "interrupted" in summary and "after step 2 of 40" in summary and "--resume" in summary
    assert str(tmp_path / "checkpoints" / "checkpoint-2") in summary and "adapter     " not in summary


def test_finished_summary_names_the_adapter(tmp_path):
    summary = _logger(tmp_path).summary(tmp_path)
    assert not summary.interrupted and summary.startswith("[train] done: 2 steps")
    assert str(tmp_path / "adapter") in summary


@pytest.mark.parametrize("interrupted", [True, False])
def test_pipeline_stops_after_an_interrupted_training(monkeypatch, tmp_path, capsys, interrupted):
    from rl import pipeline
    from rl.core import resolve

    evaluated = []
    monkeypatch.setattr(resolve, "model_path", lambda cfg: "model")
    monkeypatch.setattr("rl.learn.sft.cold_start_adapter", lambda cfg: None)
    monkeypatch.setattr("rl.learn.grpo.train", FakeTrain(interrupted))
    monkeypatch.setattr(pipeline, "evaluate_all", lambda *a, **kw: evaluated.append(a) or tmp_path / "compare")
    code = pipeline.main(["--config", TOY, "--output_dir", str(tmp_path), "--run-name", "p", "--no-direct"])
    if interrupted:
        assert code == 130 and not evaluated
        err = capsys.readouterr().err
        assert "interrupted" in err and "--run-name p --resume" in err
    else:
        assert code == 0 and len(evaluated) == 1
