"""TRL's importance-sampling correction, computed in the loss's pass instead of a pass of its own.

TRL weighs each completion token by exp(policy - sampler), the policy's logprob over the
rollout engine's, truncated or masked at the clip bounds (``vllm_importance_sampling_*``).
For the policy's side it runs a no-grad pass over the whole batch before the step
(``old_per_token_logps``). When no optimizer step falls between that pass and the loss's
passes (one PPO-style iteration, generation aligned with the optimizer step: TRL's own
condition for leaving ``old_per_token_logps`` out), each micro-batch's loss pass computes the
same logprobs with the same weights, so the ratio can be taken there, detached: one forward
pass of the policy less per step, the same numbers to float rounding. rl/learn/trl_bridge.py
turns the pass off for the step and calls :class:`DeferredImportanceSampling` in each loss.

The ratio and its metrics are TRL 1.16's (grpo_trainer.py, ``_generate_and_score_completions``):
TRL has them inline only, so they are restated here; tests/test_trl_bridge.py checks that a
step gives TRL's ratio metrics and TRL's update.
"""
from __future__ import annotations

import math


def importance_sampling_ratio(policy_logps, sampling_logps, mask, mode: str, clip_min, clip_max):
    """TRL's ratio exp(policy - sampler) per token (``token_*`` modes) or per sequence
    (``sequence_*``), truncated to [clip_min, clip_max] or zeroed outside it. A token the
    engine could not score (NaN) counts as a zero difference, as in TRL."""
    import torch

    diff = torch.nan_to_num((policy_logps - sampling_logps) * mask, nan=0.0)
    if mode.startswith("sequence_"):
        diff = diff.sum(dim=-1, keepdim=True)
    ratio = torch.exp(diff)
    if mode.endswith("_truncate"):
        return torch.clamp(ratio, min=clip_min, max=clip_max)
    if mode.endswith("_mask"):
        low = -math.inf if clip_min is None else clip_min
        high = math.inf if clip_max is None else clip_max
        return ratio.masked_fill((ratio < low) | (ratio > high), 0.0)
    raise ValueError(f"unknown importance-sampling mode {mode!r}")


class DeferredImportanceSampling:
    """One generation batch's ratio, micro-batch by micro-batch, and TRL's metrics of it
    (``sampling/sampling_logp_difference/{mean,max}``, ``sampling/importance_sampling_ratio/
    {min,mean,max}``), reduced as TRL reduces them over the whole batch once its last
    micro-batch (``rows`` rows on this process) has been scored."""

    def __init__(self, rows: int, mode: str, clip_min, clip_max):
        self.rows_left, self.mode, self.clip_min, self.clip_max = rows, mode, clip_min, clip_max
        self.gaps, self.ratios = [], []

    def ratio_for(self, policy_logps, inputs):
        """The micro-batch's ratio from its loss pass's logprobs (detached), put into ``inputs``
        where TRL's loss reads it; returns the metrics when this was the batch's last micro-batch."""
        import torch

        policy_logps = policy_logps.detach()
        mask = inputs["completion_mask"]
        if "tool_mask" in inputs:
            mask = mask * inputs["tool_mask"]
        sampling = inputs["sampling_per_token_logps"]
        ratio = importance_sampling_ratio(policy_logps, sampling, mask, self.mode, self.clip_min, self.clip_max)
        inputs["importance_sampling_ratio"] = ratio
        keep = mask.bool()
        gap = (policy_logps - sampling).abs()
        self.gaps.append(gap[keep & ~torch.isnan(gap)])
        self.ratios.append(ratio.flatten() if self.mode.startswith("sequence_") else ratio[keep])
        self.rows_left -= policy_logps.size(0)
        return self.rows_left <= 0

    def metrics(self, gather) -> dict[str, float]:
        """TRL's five figures over the batch: this process's mean/min/max, then ``gather`` (all
        processes' values, as TRL's ``accelerator.gather``) and TRL's reduction across them."""
        import torch

        from trl.trainer.utils import nanmax, nanmin

        gaps, ratios = torch.cat(self.gaps), torch.cat(self.ratios)
        zero = torch.tensor(0.0, device=gaps.device)

        def local(values, reduce):
            return reduce(values) if values.numel() else zero

        return {
            "sampling/sampling_logp_difference/mean": gather(local(gaps, torch.mean)).mean().item(),
            "sampling/sampling_logp_difference/max": gather(local(gaps, torch.max)).max().item(),
            "sampling/importance_sampling_ratio/min": nanmin(gather(local(ratios, torch.min))).item(),
            "sampling/importance_sampling_ratio/mean": gather(local(ratios, torch.mean)).nanmean().item(),
            "sampling/importance_sampling_ratio/max": nanmax(gather(local(ratios, torch.max))).item(),
        }
