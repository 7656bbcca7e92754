"""rl.eval.compare on real evaluations of two runs that differ only in their reward spec,
and on hand-made result sets where the expected labels are known exactly.

FLORES-200 lines are copied at test time into tmp_path (CC BY-SA 4.0; NLLB Team et al.
2022; Goyal et al. 2021)."""
from __future__ import annotations

import copy
import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from rl.eval.compare import CompareError, compare, compare_results, labels_for, load_results
from rl.eval.evaluate import evaluate
from test_evaluate import AnswerEngine, eval_config, make_run, mini_flores

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def two_runs(toy_world, data_dir, toy_vllm_engine, tmp_path_factory):
    """Two runs (random adapters) that differ in reward.spec, each evaluated into <run>/eval."""
    root = tmp_path_factory.mktemp("cmp")
    flores = mini_flores(data_dir, root / "flores", codes=("eng_Latn", "deu_Latn"), n=3)
    runs = []
    for seed, spec in ((1, "chrf-format"), (2, "r1t1")):
        run = make_run(root / f"run-{spec}", toy_world.model_dir, seed, spec, ["eng_Latn-deu_Latn"])
        cfg = eval_config(toy_world, flores, directions="eng_Latn-deu_Latn,toy_en-toy_xx", limit=3, max_tokens=32)
        evaluate(cfg, adapter=run, engine=AnswerEngine(toy_vllm_engine), progress=False)  # default out: <run>/eval
        runs.append(run)
    return runs


def test_compare_two_runs_labels_and_deltas(two_runs, tmp_path):
    cmp = compare(two_runs, out=tmp_path)
    assert cmp["labels"] == ["reward.spec=chrf-format", "reward.spec=r1t1"]
    assert "reward.spec" in cmp["keys"] and "run_name" not in cmp["keys"]
    a, b = (json.loads((run / "eval" / "results.json").read_text()) for run in two_runs)
    rows_a, rows_b = ({r["direction"]: r for r in x["directions"]} for x in (a, b))
    assert set(cmp["rows"]) == {"eng_Latn-deu_Latn", "toy_en-toy_xx", *(f"avg:{g}" for g in a["averages"])}
    for direction in rows_a:
        for metric in ("chrfpp", "bleu", "format_failure_rate"):
            want = rows_b[direction][metric] - rows_a[direction][metric]
            assert cmp["deltas"][1][direction][metric] == pytest.approx(want)
            assert cmp["rows"][direction][metric] == [rows_a[direction][metric], rows_b[direction][metric]]
    for group in a["averages"]:
        assert cmp["deltas"][1][f"avg:{group}"]["chrfpp"] == pytest.approx(
            b["averages"][group]["chrfpp"] - a["averages"][group]["chrfpp"])
    # the adapters differ, so the outputs (and at least one score) do too
    assert any(cmp["deltas"][1][d][m] != 0 for d in rows_a for m in ("chrfpp", "bleu"))

    with (tmp_path / "compare.csv").open(encoding="utf-8") as f:
        table = {r["row"]: r for r in csv.DictReader(f)}
    delta_col = "ΔchrF++ · reward.spec=r1t1"
    for direction in rows_a:
        assert float(table[direction][delta_col]) == pytest.approx(cmp["deltas"][1][direction]["chrfpp"])
    md = (tmp_path / "compare.md").read_text(encoding="utf-8")
    assert "chrF++ · reward.spec=chrf-format" in md and delta_col in md and "COMET" not in md.split("\n")[0]
    assert (tmp_path / "compare.png").read_bytes()[:4] == b"\x89PNG"


def test_compare_cli_prints_the_table(two_runs, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "rl.compare", *map(str, two_runs), "--out", str(tmp_path),
                           "--metrics", "chrfpp"], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "chrF++ · reward.spec=r1t1" in proc.stdout and "BLEU" not in proc.stdout
    bad = subprocess.run([sys.executable, "-m", "rl.compare", str(tmp_path / "nothing")], capture_output=True,
                         text=True, cwd=REPO, timeout=120)
    assert bad.returncode == 2 and "no results.json" in bad.stderr


# ----------------------------------------------------------------------------- hand-made result sets


def _results(chrfpp: dict[str, float], adapter: str | None, run_config: dict | None, temperature=0.1) -> dict:
    rows = [{"direction": d, "src": d.split("-")[0], "tgt": d.split("-")[1], "chrfpp": v, "bleu": v / 2,
             "comet": None, "format_failure_rate": 0.1, "n": 10} for d, v in chrfpp.items()]
    return {"settings": {"model": "m", "adapter": adapter, "split": "devtest", "limit": None,
                         "decoding": {"temperature": temperature, "top_p": 0.75}},
            "run_config": run_config, "directions": rows,
            "averages": {"all": {"n_directions": len(rows), "chrfpp": sum(chrfpp.values()) / len(rows),
                                 "bleu": sum(chrfpp.values()) / len(rows) / 2, "comet": None,
                                 "format_failure_rate": 0.1}}}


def test_labels_and_missing_cells():
    base = _results({"eng_Latn-deu_Latn": 40.0}, None, None)
    run = _results({"eng_Latn-deu_Latn": 45.0, "eng_Latn-fra_Latn": 50.0}, "a/adapter",
                   {"run_name": "x", "reward": {"spec": "r1t1"}, "grpo": {"beta": 0.04}})
    labels, keys = labels_for([("base", base), ("x", run)])
    assert labels == ["adapter=none", "adapter=lora"] and keys == ["adapter"]  # run-only keys do not differ

    other = copy.deepcopy(run)
    other["run_config"]["grpo"]["beta"] = 0.0
    other["settings"]["decoding"]["temperature"] = 0.7
    labels, _ = labels_for([("x", run), ("y", other)])
    assert labels == ["decoding.temperature=0.1, grpo.beta=0.04", "decoding.temperature=0.7, grpo.beta=0.0"]

    same, _ = labels_for([("x", run), ("y", copy.deepcopy(run))])
    assert same == ["x", "y"]  # nothing differs: names

    cmp = compare_results([("base", base), ("x", run)], metrics=["chrfpp"])
    assert cmp["deltas"][1]["eng_Latn-deu_Latn"]["chrfpp"] == pytest.approx(5.0)
    assert cmp["rows"]["eng_Latn-fra_Latn"]["chrfpp"] == [None, 50.0]
    assert cmp["deltas"][1]["eng_Latn-fra_Latn"]["chrfpp"] is None
    assert "| en→fr | – | 50.00 | – |" in cmp["markdown"]
    with pytest.raises(CompareError, match="unknown metric"):
        compare_results([("base", base)], metrics=["meteor"])


def test_load_results_errors(tmp_path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "results.json").write_text("{}")
    with pytest.raises(CompareError, match="not an rl.evaluate results.json"):
        load_results(tmp_path / "bad")
    with pytest.raises(CompareError, match="no results.json"):
        load_results(tmp_path / "empty")


def test_main_job_closing_table_has_one_column_per_model():
    from rl.eval.compare import compare_results
    from rl.pipeline import PIPELINE_METRICS, side_by_side

    def results(chrf: float, coverage: float | None) -> dict:
        rows = [{"direction": d, "src": d.split("-")[0], "tgt": d.split("-")[1], "chrf": chrf + k, "bleu": chrf / 2,
                 "format_failure_rate": 0.05, "source_coverage": coverage} for k, d in enumerate(("toy_en-toy_xx", "toy_xx-toy_en"))]
        mean = {"chrf": chrf + 0.5, "bleu": chrf / 2, "format_failure_rate": 0.05, "source_coverage": coverage}
        return {"directions": rows, "averages": {"all": mean}, "settings": {"model": "m", "decoding": {}}}

    cmp = compare_results([("a", results(90.0, None)), ("b", results(40.0, 0.3))], PIPELINE_METRICS, ["direct", "cot"])
    table = side_by_side(cmp).splitlines()
    assert table[0] == "| chrF / BLEU | direct | cot |"
    assert table[2] == "| toy_en→toy_xx | 90.00 / 45.00 | 40.00 / 20.00 |"
    assert table[4] == "| avg all | 90.50 / 45.00 | 40.50 / 20.00 |"
    assert table[-1] == "| source coverage % | – | 30.00 |" and table[-2] == "| format failures % | 5.00 | 5.00 |"
    assert len(table) == 7  # no seen / unseen means when every language was seen


def test_main_job_closing_table_splits_seen_and_unseen_languages():
    """With an unseen language among the directions (configs/toy_pivot_unseen.yaml), the table
    gives the means of the seen and the unseen directions too (R1-T1's split)."""
    from rl.eval.compare import compare_results
    from rl.pipeline import PIPELINE_METRICS, side_by_side

    def results(chrf: float) -> dict:
        rows = [{"direction": d, "src": d.split("-")[0], "tgt": d.split("-")[1], "chrf": chrf + k, "bleu": chrf,
                 "format_failure_rate": 0.0, "source_coverage": None, "seen": k == 0}
                for k, d in enumerate(("toy_xx-toy_yy", "toy_xx-toy_zz"))]
        averages = {group: {"chrf": chrf + k, "bleu": chrf, "format_failure_rate": 0.0, "source_coverage": None}
                    for k, group in ((0.5, "all"), (0, "seen"), (1, "unseen"))}
        return {"directions": rows, "averages": averages, "settings": {"model": "m", "decoding": {}}}

    table = side_by_side(compare_results([("a", results(50.0)), ("b", results(80.0))], PIPELINE_METRICS,
                                         ["direct", "cot"])).splitlines()
    assert table[4:7] == ["| avg all | 50.50 / 50.00 | 80.50 / 80.00 |", "| avg seen | 50.00 / 50.00 | 80.00 / 80.00 |",
                          "| avg unseen | 51.00 / 50.00 | 81.00 / 80.00 |"]
