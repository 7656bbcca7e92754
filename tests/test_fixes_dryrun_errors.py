"""Fixes: the dry run refuses what the run itself would refuse (unknown reward, missing COMET
model, mismatched or corrupt init adapter, read-only output dir, negative temperature), with
the same checks; and these inputs give one clear error line instead of a traceback: COMET
missing through the r1t1 preset, corrupt adapter weights, invalid UTF-8 or an unknown
language in SFT data (file and line named)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from helpers_models import build_random_qwen2, build_tiny_qwen2, save_random_lora
from rl.core.config import ConfigError, load_config

REPO = Path(__file__).resolve().parent.parent
TOY = str(REPO / "configs" / "toy.yaml")


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """A tiny base model, an adapter for it, one for another shape, and a truncated copy."""
    root = tmp_path_factory.mktemp("dryrun")
    model = build_tiny_qwen2(root / "model")
    other = build_random_qwen2(root / "other", hidden_size=192, num_layers=2, num_heads=3, num_kv_heads=3,
                               intermediate_size=384, vocab_size=512)
    good = save_random_lora(model, root / "good", r=4)
    truncated = Path(shutil.copytree(good, root / "truncated"))
    weights = truncated / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    return {"model": model, "good": good, "other": save_random_lora(other, root / "other_adapter", r=4),
            "truncated": truncated}


def dry_run(capsys, models, tmp_path, *overrides: str) -> tuple[int, str]:
    """``rl/train.py --dry-run`` on the tiny model; (exit code, stdout + stderr)."""
    from rl.train import main

    rc = main(["--config", TOY, "--dry-run", "--output_dir", str(tmp_path / "runs"),
               "--model.name_or_path", str(models["model"]), "--model.init_adapter", "null", *overrides])
    out = capsys.readouterr()
    return rc, out.out + out.err


def test_dry_run_passes_a_good_setup(capsys, models, tmp_path):
    rc, out = dry_run(capsys, models, tmp_path, "--model.init_adapter", str(models["good"]))
    assert rc == 0, out


# ----------------------------------------------------------------------------- reward

def test_dry_run_refuses_unknown_reward(capsys, models, tmp_path):
    rc, out = dry_run(capsys, models, tmp_path, "--reward.spec", "no_such_reward")
    assert rc == 1
    assert "REFUSED" in out and "reward.spec 'no_such_reward': unknown reward 'no_such_reward'" in out


def test_dry_run_refuses_missing_comet_model(capsys, models, tmp_path, monkeypatch):
    missing = tmp_path / "no-comet"
    rc, out = dry_run(capsys, models, tmp_path, "--reward.spec", "r1t1", "--reward.comet_model", str(missing))
    assert rc == 1
    assert "reward.spec 'r1t1'" in out and f"COMET model '{missing}': no such file or directory" in out
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a hub id that is not cached, offline: the run cannot get it
    rc, out = dry_run(capsys, models, tmp_path, "--reward.spec", "r1t1", "--reward.comet_model", "Unbabel/no-such-comet")
    assert rc == 1 and "COMET model 'Unbabel/no-such-comet' is not available offline" in out


def test_dry_run_notes_comet_model_to_download(capsys, models, tmp_path, monkeypatch):
    """Online, an uncached hub model is downloaded at start: a note, not a refusal, and no download now."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    rc, out = dry_run(capsys, models, tmp_path, "--reward.spec", "r1t1", "--reward.comet_model", "Unbabel/no-such-comet")
    assert rc == 0, out
    assert "'Unbabel/no-such-comet' is not in the Hugging Face cache yet; the run downloads it at start" in out


def test_missing_comet_through_r1t1_preset_is_a_reward_spec_error(tmp_path):
    """The real run's reward load: a RewardSpecError (a user error: one line), not a traceback."""
    import rewards
    from rl.core.errors import UserError

    missing = tmp_path / "no-comet"
    with pytest.raises(rewards.RewardSpecError, match=f"reward 'r1t1' failed: CometModelError: COMET model '{missing}'"):
        rewards.load("r1t1", comet_model=str(missing))
    assert issubclass(rewards.RewardSpecError, UserError)


# ----------------------------------------------------------------------------- init adapter

@pytest.mark.parametrize("which, words", [("other", "fits no linear layer of the base model"),
                                          ("truncated", "unreadable safetensors file")])
def test_dry_run_refuses_bad_init_adapter(capsys, models, tmp_path, which, words):
    rc, out = dry_run(capsys, models, tmp_path, "--model.init_adapter", str(models[which]))
    assert rc == 1
    assert f"model.init_adapter: {models[which] / 'adapter_model.safetensors'}" in out and words in out


def test_training_start_refuses_corrupt_adapter_before_loading(models):
    """load_policy (the real run) checks the adapter with the dry run's function: AdapterError, no PEFT traceback."""
    from rl.learn.grpo import load_policy
    from rl.rollout import AdapterError

    cfg = load_config(TOY, ["--model.name_or_path", str(models["model"]), "--model.init_adapter",
                            str(models["truncated"])])
    with pytest.raises(AdapterError, match="adapter_model.safetensors: unreadable safetensors file"):
        load_policy(cfg, str(models["model"]), str(models["truncated"]))
    with pytest.raises(AdapterError, match="fits no linear layer"):
        load_policy(cfg, str(models["model"]), str(models["other"]))


def test_evaluate_refuses_corrupt_adapter(models):
    from rl.eval.evaluate import EvalError, check_eval_adapter

    with pytest.raises(EvalError, match=f"adapter {models['truncated']}: .*unreadable safetensors file"):
        check_eval_adapter(models["truncated"], str(models["model"]))


# ----------------------------------------------------------------------------- output dir

def test_read_only_output_dir_is_refused(tmp_path):
    """Dry run (exit 1) and real start (exit 2) alike. Root writes through permission bits, so as
    root the commands run as nobody; a probe write, not a permission-bit test, decides."""
    prefix = []
    if os.geteuid() == 0:
        if not shutil.which("setpriv"):
            pytest.skip("running as root without setpriv: cannot make a directory read-only")
        prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    ro = Path(tempfile.mkdtemp(prefix="r1t1-ro-"))
    try:
        ro.chmod(0o555)
        env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1", "HOME": str(ro)}
        base = [*prefix, sys.executable, str(REPO / "rl" / "train.py"), "--config", TOY, "--output_dir", str(ro)]
        for extra, code in ((["--dry-run"], 1), ([], 2)):
            proc = subprocess.run([*base, *extra], capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
            out = proc.stdout + proc.stderr
            assert proc.returncode == code, out
            assert f"output_dir: cannot write {ro / 'toy-grpo'}: {ro} is not writable" in out
            assert "Traceback" not in out
        assert list(ro.iterdir()) == []  # the probe left nothing behind
    finally:
        ro.chmod(0o755)
        shutil.rmtree(ro)


# ----------------------------------------------------------------------------- temperature

def test_negative_temperature_fails_at_config_load(capsys, models, tmp_path):
    from rl.core.config import SamplingConfig
    from rl.eval.evaluate import build_arg_parser, config_from_args
    from rl.rollout.base import check_sampling

    for key in ("sampling.temperature", "eval.temperature"):
        with pytest.raises(ConfigError, match=f"{key} must be >= 0"):
            load_config(TOY, [f"--{key}", "-0.5"])
    rc, out = dry_run(capsys, models, tmp_path, "--sampling.temperature", "-1")
    assert rc == 2 and "sampling.temperature must be >= 0 (0 = greedy), got -1.0" in out
    args, rest = build_arg_parser().parse_known_args(["--config", TOY, "--temperature", "-0.1"])
    with pytest.raises(ConfigError, match="eval.temperature must be >= 0"):
        config_from_args(args, rest)
    with pytest.raises(ValueError, match="sampling.temperature must be >= 0"):  # the engines' own check, same function
        check_sampling(SamplingConfig(temperature=-1.0))


# ----------------------------------------------------------------------------- SFT data

def cot_row(**changes) -> str:
    row = {"src_lang": "eng_Latn", "tgt_lang": "deu_Latn", "source": "Hello.", "reference": "Hallo.",
           "template": "hierarchical", "completion": "<think>Greeting.</think><answer>Hallo.</answer>"}
    return json.dumps({**row, **changes}, ensure_ascii=False) + "\n"


@pytest.mark.parametrize("bad_line, words", [
    (b'{"src_lang": "eng_Latn", "source": "caf\xe9"}\n', "not valid UTF-8"),
    (cot_row(tgt_lang="xx_Nope").encode(), "bad or missing key 'tgt_lang' (unknown language code 'xx_Nope'"),
])
def test_sft_bad_data_names_file_and_line(capsys, models, tmp_path, bad_line, words):
    from rl.learn.sft import main

    data = tmp_path / "cot.jsonl"
    data.write_bytes(cot_row().encode() + cot_row().encode() + bad_line + cot_row().encode())
    rc = main(["--config", TOY, "--output_dir", str(tmp_path / "runs"), "--model.name_or_path", str(models["model"]),
               "--sft.data_path", str(data), "--sft.max_steps", "1"])
    err = capsys.readouterr().err
    assert rc == 2
    assert f"error: {data}:3: {words}" in err and "Traceback" not in err
