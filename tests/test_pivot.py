"""The toy pivot world (configs/toy_pivot.yaml): reasoning and RL that pay. The base knows
English <-> Xish and English <-> Yish but never saw Xish <-> Yish. With the same base, the
same pairs and the same SFT budget, the CoT model that translates through English, after
GRPO, beats the model taught to translate directly, and GRPO beats its own CoT-SFT start on
every seed, with real translations."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest

from rl.core.config import load_config

REPO = Path(__file__).resolve().parent.parent
PIVOT = str(REPO / "configs" / "toy_pivot.yaml")
# Held-out chrF, mean of toy_xx<->toy_yy, R1-T1 decoding. Measured with configs/toy_pivot.yaml
# (150 SFT pairs, GRPO 80 steps) on a 2-core AVX-512 machine (2026-11-30, one torch thread per
# process). SFT seeds 0, 1, 2 of both arms: CoT SFT 81.12, 79.11, 83.22; direct SFT 73.14,
# 55.40, 64.75 (sd 8.9: direct SFT is the noisy arm). GRPO seeds 0, 1, 2 from the seed-0 cold
# start: 88.61, 88.26, 88.36 (sd 0.18; step 80 of 160-step runs, the learning rate is constant).
# The base itself varies more than a seed: a world of another toy.seed (another lexicon,
# sentences and base, as the other CPU kind's numerics build another base) gave, SFT seed 0 and
# GRPO seed 0: toy.seed 1, direct SFT 76.84, CoT SFT 77.45, GRPO 79.89; toy.seed 2, 53.86, 70.12,
# 75.66 (toy.seed 1, GRPO seed 1: 79.80; SFT seed 1: direct 73.55, CoT 67.92, so a weak
# world's outcome depends on the SFT seed too). GRPO's gain over CoT SFT was +7.5, +2.4 and
# +5.5 over the three worlds, and over direct SFT +15.5, +3.1 and +21.8 (SFT seed 0 and GRPO
# seeds 0 and 1, where measured). Direct SFT is averaged over DIRECT_SEEDS (25 s each) to tame
# its spread: over seeds 0 and 1, GRPO's lead is +24.2 (toy.seed 0) and +4.7 (toy.seed 1). The
# margins hold in all three worlds: RL_MARGIN (GRPO's mean over LEARNING_SEEDS minus CoT SFT)
# is 1.0, still 5 GRPO-seed sds above no gain; DIRECT_MARGIN (GRPO's mean minus direct SFT's)
# is 0: GRPO must beat it. Per direction the gap can be thin (into Yish 93.4 against 91.4 in
# the seed-0 world), so only the mean is asserted.
LEARNING_SEEDS = (0, 1)
DIRECT_SEEDS = (0, 1)
RL_MARGIN = 1.0
DIRECT_MARGIN = 0.0
MIN_BLEU = 30.0  # the bar for real translations
# The bar for reasoning about the source: the share of the source's words whose Toy
# English gloss (or the word itself) the thinking names. Measured 0.98-0.99 after GRPO (seeds 0-2)
# and 0.98 after CoT SFT (seeds 0-2); another test sentence's thinking scores 0.03-0.12 on the same source.
MIN_COVERAGE = 0.8


@pytest.fixture(scope="module")
def pivot_cfg(tmp_path_factory):
    return load_config(PIVOT, ["--output_dir", str(tmp_path_factory.mktemp("pivot"))])


@pytest.mark.slow
def test_reasoning_and_grpo_beat_direct_sft_on_the_same_pairs(pivot_cfg, tmp_path):
    from rl.core import resolve
    from rl.core.runs import read_metrics
    from rl.eval.evaluate import evaluate
    from rl.learn.sft import run_sft
    from rl.pipeline import direct_config
    from rl.rollout import make_rollout_engine
    from tests.test_train import run_grpo

    cfg, direct = pivot_cfg, direct_config(pivot_cfg)
    assert direct.sft.max_steps == cfg.sft.max_steps and direct.toy == cfg.toy  # same budget, base and pairs
    cot_adapter = run_sft(cfg)
    direct_adapters = []
    for seed in DIRECT_SEEDS:
        seeded = copy.deepcopy(direct)
        seeded.seed, seeded.sft.run_name = seed, f"{direct.sft.run_name}-{seed}"
        direct_adapters.append(run_sft(seeded))
    engine = make_rollout_engine(resolve.model_path(cfg), cfg.rollout, cfg.lora, seed=0)
    try:
        cot = evaluate(cfg, adapter=cot_adapter, out=tmp_path / "cot", engine=engine, progress=False)
        plain = [evaluate(direct, adapter=a, out=tmp_path / f"direct-{i}", engine=engine, progress=False)
                 for i, a in enumerate(direct_adapters)]
        grpo = []
        for seed in LEARNING_SEEDS:
            run = run_grpo(tmp_path, f"grpo-{seed}", ["--model.init_adapter", str(cot_adapter), "--seed", str(seed)],
                           engine=engine, config=PIVOT)
            assert len(read_metrics(run)) == cfg.grpo.max_steps
            grpo.append(evaluate(cfg, adapter=run, out=tmp_path / f"eval-grpo-{seed}", engine=engine, progress=False))
    finally:
        engine.shutdown()

    def chrf(results) -> float:
        return results["averages"]["all"]["chrf"]

    mean_grpo = sum(chrf(g) for g in grpo) / len(grpo)
    mean_direct = sum(chrf(p) for p in plain) / len(plain)
    figures = {"cot": chrf(cot), "direct": [chrf(p) for p in plain], "grpo": [chrf(g) for g in grpo]}
    assert [d["direction"] for d in cot["directions"]] == ["toy_xx-toy_yy", "toy_yy-toy_xx"]
    for g in grpo:
        assert chrf(g) > chrf(cot), figures  # every seed gains over its cold start
        assert g["averages"]["all"]["bleu"] >= MIN_BLEU, g["averages"]["all"]
        assert g["averages"]["all"]["format_failure_rate"] < 0.1, g["averages"]["all"]
        assert g["averages"]["all"]["source_coverage"] >= MIN_COVERAGE, g["averages"]["all"]  # thinking about the source
    assert mean_grpo - chrf(cot) > RL_MARGIN, figures
    assert mean_grpo - mean_direct > DIRECT_MARGIN, figures
    assert cot["averages"]["all"]["format_failure_rate"] < 0.1
