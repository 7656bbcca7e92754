"""Issue 13, items 4 and 19: what the sampler's logprobs are under top-p (and why the
importance-sampling correction refuses it), and the per-step sampler/learner logprob gap
that catches a skipped adapter push.

Uses the session's toy world and its in-process vLLM engine (fp32, eager); the GRPO runs
are 3 steps of 4 prompts x 4 samples, from a fresh LoRA (no SFT), without a reference pass."""
from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from rl.core.config import ConfigError, SamplingConfig, load_config

REPO = Path(__file__).resolve().parent.parent
TOY = str(REPO / "configs" / "toy.yaml")


# ----------------------------------------------------------------------------- item 4: top-p logprobs

@torch.no_grad()
def _learner_view(model, results, sampling: SamplingConfig, top_p: float):
    """Per sampled token: (engine logprob, learner logprob = log_softmax(logits / T) over the full
    vocabulary as TRL scores it, log of the probability mass top-p keeps at that position)."""
    engine, learner, kept = [], [], []
    for r in results:
        for c in r.completions:
            ids = torch.tensor([r.prompt_token_ids + c.token_ids])
            logits = model(ids).logits[0, len(r.prompt_token_ids) - 1:-1].float() / sampling.temperature
            logp = torch.log_softmax(logits, -1)
            learner.append(logp.gather(-1, torch.tensor(c.token_ids)[:, None])[:, 0])
            # top-p keeps the most likely tokens until their mass reaches top_p (the one crossing it included)
            probs = logp.exp().sort(-1, descending=True).values
            before = probs.cumsum(-1) - probs
            kept.append(torch.where(before < top_p, probs, 0.0).sum(-1).log())
            engine.append(torch.tensor(c.logprobs))
    return torch.cat(engine), torch.cat(learner), torch.cat(kept)


def test_top_p_engine_logprobs_are_renormalised_over_the_kept_tokens(toy_world, toy_vllm_engine):
    """Measured here: with top_p=0.5 the engine's logprob of a sampled token is the learner's
    minus log(kept mass): the ratio TRL's correction would use is the kept mass (mean 0.66 on the
    toy model), not 1; with top_p=1 they agree to ~1e-6."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(toy_world.model_dir, dtype=torch.float32).eval()
    toy_vllm_engine.clear_adapter()
    prompts = [f"<|im_start|>user\nword {w} {w}<|im_end|>\n<|im_start|>assistant\n" for w in ("ka", "mo", "ti")]
    ratios = {}
    for top_p in (1.0, 0.5):
        sampling = SamplingConfig(n=4, temperature=1.5, top_p=top_p, max_tokens=24, seed=5)
        engine, learner, log_kept = _learner_view(model, toy_vllm_engine.generate(prompts, sampling), sampling, top_p)
        gap = engine - learner
        ratio = (learner - engine).exp()  # exp(learner - sampler): TRL's importance-sampling ratio
        ratios[top_p] = ratio
        print(f"top_p={top_p}: {gap.numel()} tokens, engine - learner logprob mean {gap.mean():.4f} "
              f"max {gap.max():.4f}; IS ratio mean {ratio.mean():.4f} min {ratio.min():.4f}; "
              f"kept mass mean {log_kept.exp().mean():.4f}")
        if top_p == 1.0:
            assert gap.abs().max() < 1e-4  # in sync, untruncated: the ratio is 1
        else:
            assert torch.allclose(gap, -log_kept, atol=1e-3)  # exactly the log of the kept mass
            assert ratio.mean() < 0.9 and (gap > 1e-3).float().mean() > 0.5  # most tokens down-weighted
    assert ratios[1.0].mean() == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("override", [["--sampling.top_p", "0.9"], ["--sampling.top_k", "50"]])
def test_top_p_or_top_k_with_the_importance_sampling_correction_is_refused(override):
    with pytest.raises(ConfigError, match="sampling.top_p=.*sampling.top_k=.*grpo.importance_sampling_correction"):
        load_config(TOY, [*override, "--grpo.importance_sampling_correction", "true"])
    # without the correction the engine's logprobs weigh nothing: allowed
    cfg = load_config(TOY, [*override, "--grpo.importance_sampling_correction", "false"])
    assert cfg.sampling.top_p < 1 or cfg.sampling.top_k > 0
    load_config(TOY, ["--grpo.importance_sampling_correction", "true"])  # untruncated: allowed


# ----------------------------------------------------------------------------- item 19: on-policy gap

def _short_grpo(out: Path, name: str, engine, *extra: str) -> list[dict]:
    from rl.learn.grpo import train
    from rl.core.runs import prepare_run_dir, read_metrics

    cfg = load_config(TOY, [
        "--output_dir", str(out), "--model.init_adapter", "null", "--rollout.backend", "vllm",
        "--grpo.prompts_per_step", "4", "--sampling.n", "4", "--sampling.max_tokens", "32",
        "--grpo.max_steps", "3", "--grpo.save_steps", "100", "--grpo.beta", "0",
        "--grpo.learning_rate", "5e-3", "--reward.spec", "test_fixes_onpolicy:length_reward", *extra])
    cfg.run_name = name
    run_dir = prepare_run_dir(out, name)
    train(cfg, run_dir, engine=engine)
    return read_metrics(run_dir)


def _skip_pushes_after_the_first(monkeypatch) -> list[int]:
    """Every adapter push after the first does nothing: the workers keep sampling from the
    adapter of step 1 while the learner moves on (an undelivered push)."""
    from rl.learn.grpo import AdapterSync

    push, calls = AdapterSync.sync_weights, []

    def first_only(self):
        calls.append(1)
        if len(calls) == 1:
            push(self)

    monkeypatch.setattr(AdapterSync, "sync_weights", first_only)
    return calls


@pytest.mark.parametrize("is_correction", ["false", "true"])  # our measurement / TRL's own metric
def test_a_skipped_adapter_push_is_caught(toy_world, toy_vllm_engine, tmp_path, monkeypatch, is_correction):
    extra = ["--grpo.importance_sampling_correction", is_correction]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        synced = _short_grpo(tmp_path, "synced", toy_vllm_engine, *extra)
    gaps = in_sync = [r["sampler_logp_diff"] for r in synced]
    print(f"IS correction {is_correction}: in sync, sampler_logp_diff per step {gaps}")
    assert len(gaps) == 3 and max(gaps) < 1e-4  # fp32 engine, same adapter
    assert [r["onpolicy_gap_over"] for r in synced] == [0, 0, 0]
    assert not [w for w in caught if "learner's policy" in str(w.message)]

    calls = _skip_pushes_after_the_first(monkeypatch)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        stale = _short_grpo(tmp_path, "stale", toy_vllm_engine, *extra)
    gaps = [r["sampler_logp_diff"] for r in stale]
    print(f"IS correction {is_correction}: pushes skipped from step 2, sampler_logp_diff per step {gaps}")
    assert len(calls) == 3  # TRL asked for a push every step
    # Step 1 was pushed; steps 2 and 3 sampled a stale adapter. Step 3's gap depends on the CPU kind
    # (how far Adam's second step takes the fresh adapter back): 0.46 at step 2 but 0.058-0.085 at
    # step 3 on an Intel AVX-512/AMX machine (2026-12-02), above grpo.onpolicy_gap_warn (0.1) elsewhere;
    # every stale step stays orders of magnitude above the in-sync gap (~1e-6).
    assert gaps[0] < 1e-4 and gaps[1] > 0.1
    assert min(gaps[1:]) > 1000 * max(in_sync)
    over = [r["onpolicy_gap_over"] for r in stale]
    assert over[:2] == [0, 1] and over[2] in (1, 2)  # step 2 counted; step 3 where its gap passes the threshold
    warned = [w for w in caught if "learner's policy" in str(w.message)]
    assert len(warned) == 1 and "step 2" in str(warned[0].message)  # once per run, at the first bad step


def length_reward(sources, hypotheses, references, **columns) -> list[float]:
    """Longer is better: a reward that differs within every group from the first step, so
    GRPO moves the fresh adapter (the toy base model, without SFT, scores 0 on chrF-format)."""
    return [len(h) / 100 for h in hypotheses]
