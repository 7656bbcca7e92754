"""Fix: rollout.max_model_len may not exceed the model's own positions (a local
model directory's config.json max_position_embeddings, or the toy model's 1024)."""
from __future__ import annotations

import json

import pytest

from rl.core.config import Config, ConfigError, check_limits, load_config


def model_dir(tmp_path, **hf):
    d = tmp_path / "model"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(hf), encoding="utf-8")
    return d


def cfg_for(name: str, model_len: int) -> Config:
    cfg = Config()
    cfg.model.name_or_path = name
    cfg.rollout.max_model_len = model_len
    return cfg


def test_local_dir_above_positions_is_refused_at_load(tmp_path):
    d = model_dir(tmp_path, max_position_embeddings=512)
    with pytest.raises(ConfigError) as info:
        load_config(None, ["--model.name_or_path", str(d), "--rollout.max_model_len", "1024"])
    text = str(info.value)
    assert "rollout.max_model_len (1024)" in text and "512" in text and str(d / "config.json") in text


def test_local_dir_within_positions_loads(tmp_path):
    d = model_dir(tmp_path, max_position_embeddings=512)
    check_limits(cfg_for(str(d), 512), "test")
    cfg = load_config(None, ["--model.name_or_path", str(d), "--rollout.max_model_len", "400"])
    assert cfg.rollout.max_model_len == 400


def test_rope_scaling_factor_extends_positions(tmp_path):
    d = model_dir(tmp_path, max_position_embeddings=512, rope_scaling={"type": "yarn", "factor": 4.0})
    check_limits(cfg_for(str(d), 2048), "test")
    with pytest.raises(ConfigError, match="2048 positions"):
        check_limits(cfg_for(str(d), 2049), "test")


def test_toy_model_has_1024_positions():
    check_limits(cfg_for("toy", 1024), "test")
    with pytest.raises(ConfigError, match=r"1024 positions \(the toy model"):
        check_limits(cfg_for("toy", 2048), "test")


def test_hub_ids_and_unreadable_configs_are_skipped(tmp_path):
    check_limits(cfg_for("Qwen/Qwen2.5-7B-Instruct", 10**6), "test")  # not looked up
    no_config = tmp_path / "bare"
    no_config.mkdir()
    check_limits(cfg_for(str(no_config), 10**6), "test")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json", encoding="utf-8")
    check_limits(cfg_for(str(broken), 10**6), "test")
    check_limits(cfg_for(str(model_dir(tmp_path, hidden_size=8)), 10**6), "test")  # no such key
