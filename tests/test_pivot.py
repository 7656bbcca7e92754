"""The toy pivot world (configs/toy_pivot.yaml): reasoning that pays. The base knows
English <-> Xish and English <-> Yish but never saw Xish <-> Yish; with the same base, the
same 500 pairs and the same SFT budget, the CoT model that translates through English beats
the model taught to translate directly, in both directions, with real translations."""
from __future__ import annotations

from pathlib import Path

import pytest

from rl.core.config import load_config

REPO = Path(__file__).resolve().parent.parent
PIVOT = str(REPO / "configs" / "toy_pivot.yaml")
# Held-out chrF (mean of toy_xx<->toy_yy, R1-T1 decoding) by which CoT SFT must beat direct SFT.
# Measured with configs/toy_pivot.yaml on a 2-core AVX-512 machine (2026-11-30, one torch thread
# per process), SFT seeds 0, 1, 2 of both arms: CoT SFT 96.82, 96.38, 95.88; direct SFT 74.71,
# 74.46, 75.35; gaps 22.11, 21.92, 20.53 (mean 21.52, sd 0.86). The margin is 7.6 sds below the
# mean gap, room for the other CPU kind's numerics, which move a run about as much as a seed does.
REASONING_MARGIN = 15.0
COT_MIN_BLEU = 30.0  # the bar for real translations


@pytest.fixture(scope="module")
def pivot_cfg(tmp_path_factory):
    return load_config(PIVOT, ["--output_dir", str(tmp_path_factory.mktemp("pivot"))])


@pytest.mark.slow
def test_reasoning_through_english_beats_direct_sft_on_the_same_pairs(pivot_cfg, tmp_path):
    from rl.core import resolve
    from rl.eval.evaluate import evaluate
    from rl.learn.sft import run_sft
    from rl.pipeline import direct_config
    from rl.rollout import make_rollout_engine

    cfg, direct = pivot_cfg, direct_config(pivot_cfg)
    assert direct.sft.max_steps == cfg.sft.max_steps and direct.toy == cfg.toy  # same budget, base and pairs
    cot_adapter, direct_adapter = run_sft(cfg), run_sft(direct)
    engine = make_rollout_engine(resolve.model_path(cfg), cfg.rollout, cfg.lora, seed=0)
    try:
        cot = evaluate(cfg, adapter=cot_adapter, out=tmp_path / "cot", engine=engine, progress=False)
        plain = evaluate(direct, adapter=direct_adapter, out=tmp_path / "direct", engine=engine, progress=False)
    finally:
        engine.shutdown()
    assert [d["direction"] for d in cot["directions"]] == ["toy_xx-toy_yy", "toy_yy-toy_xx"]
    for c, p in zip(cot["directions"], plain["directions"]):
        assert c["chrf"] > p["chrf"], (c["direction"], c["chrf"], p["chrf"])  # each direction
    gap = cot["averages"]["all"]["chrf"] - plain["averages"]["all"]["chrf"]
    assert gap > REASONING_MARGIN, (cot["averages"]["all"], plain["averages"]["all"])
    assert cot["averages"]["all"]["bleu"] >= COT_MIN_BLEU
    assert cot["averages"]["all"]["format_failure_rate"] < 0.1
