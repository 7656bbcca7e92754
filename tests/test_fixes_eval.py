"""Fixes: an adapter with NaN/inf weights is refused before generation, and an
evaluation split other than dev/devtest is refused (flag and config key)."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from helpers_models import build_tiny_qwen2, save_random_lora
from rl.core.config import ConfigError, load_config
from rl.eval.evaluate import EvalError, build_arg_parser, check_eval_adapter, check_finite_weights, config_from_args

REPO = Path(__file__).resolve().parent.parent
TOY = str(REPO / "configs" / "toy.yaml")


# ----------------------------------------------------------------------------- non-finite adapters

@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("nan-adapter")
    model = build_tiny_qwen2(root / "model")
    return model, save_random_lora(model, root / "adapter", r=4)


def poisoned_copy(adapter: Path, dst: Path, value: float) -> tuple[Path, str]:
    """The adapter with one weight set to ``value``; returns (dir, tensor name)."""
    import shutil

    from safetensors.torch import load_file, save_file

    shutil.copytree(adapter, dst)
    weights = load_file(str(dst / "adapter_model.safetensors"))
    key = sorted(k for k in weights if "lora_B" in k)[0]
    weights[key][0, 0] = value
    save_file(weights, str(dst / "adapter_model.safetensors"), metadata={"format": "pt"})
    return dst, key


def test_finite_adapter_passes(tiny):
    model, adapter = tiny
    check_finite_weights(adapter)
    assert check_eval_adapter(adapter, str(model))["r"] == 4


@pytest.mark.parametrize("value, word", [(math.nan, "NaN"), (math.inf, "inf"), (-math.inf, "inf")])
def test_non_finite_adapter_is_refused(tiny, tmp_path, value, word):
    model, adapter = tiny
    bad, key = poisoned_copy(adapter, tmp_path / "bad", value)
    for check in (lambda: check_finite_weights(bad), lambda: check_eval_adapter(bad, str(model))):
        with pytest.raises(EvalError) as info:
            check()
        msg = str(info.value)
        assert "non-finite" in msg and word in msg and key in msg and "adapter_model.safetensors" in msg


# ----------------------------------------------------------------------------- split

def eval_cfg(*argv: str):
    args, rest = build_arg_parser().parse_known_args(["--config", TOY, *argv])
    return config_from_args(args, rest)


@pytest.mark.parametrize("argv, key", [(["--split", "nonsense"], "eval.split"),
                                       (["--eval.split", "nonsense"], "eval.split"),
                                       (["--split", "test"], "eval.split")])
def test_unknown_split_is_refused(argv, key):
    with pytest.raises((ConfigError, EvalError)) as info:
        eval_cfg(*argv)
    assert key in str(info.value) and "devtest" in str(info.value)


def test_eval_split_key_is_checked_at_load():
    with pytest.raises(ConfigError, match=r"eval\.split must be one of \['dev', 'devtest'\], got 'nonsense'"):
        load_config(TOY, ["--eval.split", "nonsense"])


@pytest.mark.parametrize("split", ["dev", "devtest"])
def test_known_splits_pass(split):
    assert eval_cfg("--split", split).eval.split == split
    assert eval_cfg("--eval.split", split).eval.split == split
