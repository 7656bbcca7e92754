"""The command lines: rl.evaluate takes the training CLI's ``--section.key`` overrides
(with --model/--out as short flags and the eval section's keys bare), and every entry
point turns a user error into one ``error:`` line and exit code 2, nothing else. Fast:
no engine, no model."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from rl.core.config import ConfigError, load_config
from rl.core.errors import EXIT_USER_ERROR, UserError, run_cli
from rl.eval.evaluate import build_arg_parser, config_from_args

REPO = Path(__file__).resolve().parent.parent
TOY = str(REPO / "configs" / "toy.yaml")


def eval_cfg(*argv: str):
    args, rest = build_arg_parser().parse_known_args(["--config", TOY, *argv])
    return config_from_args(args, rest)


# ----------------------------------------------------------------------------- rl.evaluate's settings

def test_evaluate_takes_section_overrides_and_short_flags(tmp_path):
    out = tmp_path / "eval #1: x"  # YAML would read '#' as a comment and ': ' as a mapping: taken as is
    cfg = eval_cfg("--eval.limit", "3", "--eval.temperature", "0.2", "--model", "toy", "--out", str(out),
                   "--rollout.backend", "hf", "--eval.directions", "toy_xx-toy_en", "--seed", "5")
    assert cfg.eval.limit == 3 and cfg.eval.temperature == 0.2 and cfg.model.name_or_path == "toy"
    assert cfg.eval.out == str(out) and cfg.rollout.backend == "hf" and cfg.seed == 5
    assert cfg.eval.directions == ["toy_xx-toy_en"]


def test_eval_keys_may_be_bare():
    """The old flags (--limit, --max-tokens, --top-p ...) are the eval section's keys, derived from the schema."""
    cfg = eval_cfg("--limit", "4", "--max-tokens", "32", "--top-p", "0.9", "--split", "dev")
    assert (cfg.eval.limit, cfg.eval.max_tokens, cfg.eval.top_p, cfg.eval.split) == (4, 32, 0.9, "dev")
    assert cfg.data.limit == load_config(TOY).data.limit  # not the training data's limit


@pytest.mark.parametrize("argv, words", [
    (["--eval.nonsense", "1"], ["unknown key(s) eval.nonsense", "known here:", "limit"]),
    (["--nonsense", "1"], ["unknown key(s) nonsense"]),
    (["--backend", "hf"], ["unknown key(s) backend"]),  # a rollout key: --rollout.backend
    (["--eval.limit", "abc"], ["eval.limit must be an integer, got str 'abc'"]),
    (["--eval.temperature", "-0.1"], ["eval.temperature must be >= 0"]),
    (["--split", "test"], ["eval.split must be one of ['dev', 'devtest'], got 'test'"]),
    (["--eval", "3"], ["toy.yaml: eval must be a mapping, got int"]),
])
def test_bad_evaluate_settings_are_config_errors(argv, words):
    with pytest.raises(ConfigError) as info:
        eval_cfg(*argv)
    assert all(w in str(info.value) for w in words), str(info.value)


def test_missing_flores_dir_is_refused_at_load(tmp_path):
    with pytest.raises(ConfigError, match=r"eval\.data_dir: FLORES directory not found: .*nowhere"):
        eval_cfg("--eval.data_dir", str(tmp_path / "nowhere"))


# ----------------------------------------------------------------------------- one user-error handler

def test_run_cli_turns_user_errors_into_one_line_and_passes_the_rest(capsys):
    @run_cli
    def bad(argv=None):
        raise UserError("the input is wrong")

    @run_cli
    def bug(argv=None):
        raise KeyError("a bug")

    assert bad() == EXIT_USER_ERROR == 2
    assert capsys.readouterr().err == "error: the input is wrong\n"
    with pytest.raises(KeyError):
        bug()


def test_error_classes_are_user_errors_and_keep_their_bases():
    from rewards import RewardSpecError
    from rewards.comet import CometModelError
    from rl.core.data import DataError
    from rl.core.languages import UnknownLanguageError
    from rl.core.prompts import TemplateError
    from rl.core.runs import RunDirError
    from rl.eval.compare import CompareError
    from rl.eval.evaluate import EvalError
    from rl.rollout import AdapterError

    for cls in (ConfigError, DataError, EvalError, CompareError, TemplateError, UnknownLanguageError,
                RewardSpecError, AdapterError):
        assert issubclass(cls, UserError) and issubclass(cls, ValueError), cls
    for cls in (RunDirError, CometModelError):
        assert issubclass(cls, UserError) and issubclass(cls, RuntimeError), cls


def entry_mains():
    from rl.eval import compare, evaluate
    from rl.learn import sft
    from rl import pipeline, train

    return {"train": train.main, "sft": sft.main, "evaluate": evaluate.main, "pipeline": pipeline.main,
            "compare": compare.main}


@pytest.mark.parametrize("entry", ["train", "sft", "evaluate", "pipeline"])
@pytest.mark.parametrize("argv, words", [
    (["--config", TOY, "--grpo.nonsense", "1"], "unknown key(s) grpo.nonsense"),
    (["--config", "no/such.yaml"], "config file not found: no/such.yaml"),
])
def test_every_entry_reports_a_user_error_in_one_line(capsys, entry, argv, words):
    rc = entry_mains()[entry](argv)
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and words in err and err.count("\n") == 1, err


def test_compare_reports_a_missing_results_dir_in_one_line(capsys, tmp_path):
    rc = entry_mains()["compare"]([str(tmp_path / "nowhere"), "--out", str(tmp_path / "cmp")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and "no results.json" in err and err.count("\n") == 1, err


def test_evaluate_script_exits_2_without_traceback():
    """The real command line, in its own process (flags after the overrides, as users type them)."""
    run = subprocess.run([sys.executable, "-m", "rl.evaluate", "--eval.nonsense", "1", "--out", "x"],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    assert run.returncode == 2 and run.stderr.startswith("error: ") and "eval.nonsense" in run.stderr
    assert "Traceback" not in run.stderr and run.stderr.count("\n") == 1, run.stderr
