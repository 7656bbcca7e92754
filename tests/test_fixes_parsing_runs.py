"""Fixes: lenient answer extraction, run-name validation, partial checkpoints on resume,
and comparisons of evaluations that share no direction."""
from __future__ import annotations

import pytest

from rl.eval.compare import CompareError, compare_results
from rl.core.parsing import extract_answer, parse_completion
from rl.core.runs import RunDirError, last_checkpoint, prepare_run_dir


# ----------------------------------------------------------------------------- parsing

@pytest.mark.parametrize("text, answer", [
    ("<answer>a</think><answer>b</answer>", "b"),  # an abandoned answer before the last complete one
    ("<think>t</think><answer>a</answer><answer>b</answer>", "b"),
    ("<think>t</think><answer>x<answer>y</answer>", "y"),
    ("<think>t</think><answer>a</answer> then <answer>b", "a"),  # the unterminated trailer is not complete
    ("<think>t</think><answer>a</answer> x </answer>", "a"),
    ("<think>t</think><answer>only open", "only open"),
    ("x</answer> <answer>b", "b"),
    ("no tags", None),
])
def test_last_complete_answer_wins(text, answer):
    assert extract_answer(text) == answer
    assert parse_completion(text, strict=False).answer == answer


def test_strict_answer_unchanged():
    parsed = parse_completion("<think>t</think><answer> hallo </answer>")
    assert parsed.ok and parsed.answer == "hallo"


# ----------------------------------------------------------------------------- run names

@pytest.mark.parametrize("name", ["", " ", ".", "..", "a/b", "../x", "a\\b", ".hidden"])
def test_bad_run_names_are_refused(tmp_path, name):
    (tmp_path / "other-run").mkdir()
    (tmp_path / "other-run" / "metrics.jsonl").write_text("{}\n")
    with pytest.raises(RunDirError, match="run name") as exc:
        prepare_run_dir(tmp_path, name, overwrite=True)
    assert repr(name) in str(exc.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other-run"]  # nothing moved aside


def test_plain_run_names_still_work(tmp_path):
    assert prepare_run_dir(tmp_path, "r1.v2-x_y").is_dir()


# ----------------------------------------------------------------------------- checkpoints

def _checkpoint(run_dir, step: int, *files: str):
    ckpt = run_dir / "checkpoints" / f"checkpoint-{step}"
    ckpt.mkdir(parents=True)
    for f in files:
        (ckpt / f).write_text("x")
    return ckpt


def test_last_checkpoint_skips_partial_ones(tmp_path, capsys):
    complete = ("trainer_state.json", "adapter_model.safetensors")
    good = _checkpoint(tmp_path, 4, *complete)
    _checkpoint(tmp_path, 6, "adapter_model.safetensors", "optimizer.pt")  # crashed before trainer_state.json
    _checkpoint(tmp_path, 8)  # crashed at once: empty
    _checkpoint(tmp_path, 10, "trainer_state.json")  # no adapter weights
    assert last_checkpoint(tmp_path) == good
    err = capsys.readouterr().out
    for step in (6, 8, 10):
        assert f"checkpoint-{step}" in err and "incomplete" in err
    assert "checkpoint-4 " not in err


def test_last_checkpoint_none_when_all_partial(tmp_path, capsys):
    assert last_checkpoint(tmp_path) is None  # no checkpoints dir at all
    _checkpoint(tmp_path, 2, "optimizer.pt")
    assert last_checkpoint(tmp_path) is None
    assert "checkpoint-2" in capsys.readouterr().out


def test_last_checkpoint_picks_newest_complete(tmp_path):
    complete = ("trainer_state.json", "adapter_model.safetensors")
    _checkpoint(tmp_path, 2, *complete)
    newest = _checkpoint(tmp_path, 12, *complete)
    _checkpoint(tmp_path, 9, *complete)
    assert last_checkpoint(tmp_path) == newest


# ----------------------------------------------------------------------------- compare

def _results(directions: dict[str, float], averages: dict | None = None) -> dict:
    rows = [{"direction": d, "src": d.split("-")[0], "tgt": d.split("-")[1], "chrfpp": v, "n": 10}
            for d, v in directions.items()]
    return {"settings": {"model": "m", "adapter": None, "split": "devtest", "limit": None},
            "directions": rows, "averages": averages or {"all": {"n_directions": len(rows), "chrfpp": 40.0}}}


def test_compare_refuses_entries_without_a_shared_direction():
    de = _results({"eng_Latn-deu_Latn": 40.0})
    fr = _results({"eng_Latn-fra_Latn": 45.0})  # same "all" average row: averages do not count
    with pytest.raises(CompareError, match="share no direction") as exc:
        compare_results([("run-de", de), ("run-fr", fr)], metrics=["chrfpp"])
    assert "run-de" in str(exc.value) and "run-fr" in str(exc.value)
    assert "eng_Latn-fra_Latn" in str(exc.value)
    with pytest.raises(CompareError, match="entry 3 \\(empty\\)"):
        compare_results([("a", de), ("b", de), ("empty", _results({}))], metrics=["chrfpp"])


def test_compare_with_one_shared_direction_still_works():
    a = _results({"eng_Latn-deu_Latn": 40.0, "eng_Latn-fra_Latn": 30.0})
    b = _results({"eng_Latn-deu_Latn": 42.0, "eng_Latn-spa_Latn": 35.0})
    cmp = compare_results([("a", a), ("b", b)], metrics=["chrfpp"])
    assert cmp["deltas"][1]["eng_Latn-deu_Latn"]["chrfpp"] == pytest.approx(2.0)
    assert compare_results([("a", a)], metrics=["chrfpp"])["rows"]  # a single entry needs no partner
