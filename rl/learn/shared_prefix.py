"""Log-probs of a GRPO batch with each group's shared prompt run once.

TRL scores a step's completions by running every (prompt + completion) row through
the model: a group's n rows repeat the same prompt n times. In the no-grad passes
(the reference pass for the KL term, the old-policy pass for the importance-sampling
correction) nothing but the log-probs is kept, so the prompt can run once per group
and its key/value cache be reused by the group's n completions. On an R1-T1-shaped
batch (prompt ~150 tokens, completion ~300, n = 8) that drops 7/8 of the prompt
positions: about 30% of the tokens of such a pass.

The numbers are TRL's (GRPOTrainer's per-token log-prob pass, which rl/learn/trl_bridge.py
hands to this module, with the fused LM head of ``trl.trainer.utils.add_fused_lm_head``):
same positions (0..T-1, as TRL's forward without ``position_ids``), same labels, same head.
Only the order of float additions differs, so they agree to float rounding
(tests/test_shared_prefix.py).
"""
from __future__ import annotations

from contextlib import nullcontext


def shared_prefix_logps(model, input_ids, attention_mask, logits_to_keep: int, batch_size: int | None = None,
                        autocast=nullcontext):
    """Per-token log-probs of the last ``logits_to_keep`` tokens of each row, as TRL's
    scoring pass returns them, or None when no two rows of a chunk share their prompt
    (the caller then runs TRL's own pass). Call under ``torch.no_grad()``.

    Rows are processed in chunks of ``batch_size`` rows (TRL's memory bound); within a
    chunk, rows whose prompt part (ids and mask, all but the last prompt token) is
    identical share one prompt forward. The last prompt token runs with each row, since
    it predicts the first completion token."""
    import torch

    rows, width = input_ids.shape
    prefix_len = width - logits_to_keep - 1  # the last prompt token goes with the completion
    if prefix_len < 1:
        return None
    batch_size = batch_size or rows
    plans = []
    for start in range(0, rows, batch_size):
        ids, mask = input_ids[start:start + batch_size], attention_mask[start:start + batch_size]
        key = torch.cat([ids[:, :prefix_len], mask[:, :prefix_len]], dim=1)
        unique, inverse = torch.unique(key, dim=0, return_inverse=True)
        if len(unique) == len(ids):
            return None  # a chunk shares nothing: TRL's own pass is as cheap
        plans.append((ids, mask, unique, inverse))
    chunks = []
    for ids, mask, unique, inverse in plans:
        with autocast():
            chunks.append(_score_chunk(model, ids, mask, unique[:, :prefix_len], unique[:, prefix_len:],
                                       inverse, prefix_len, logits_to_keep))
    return torch.cat(chunks, dim=0)


def _score_chunk(model, ids, mask, prefix_ids, prefix_mask, inverse, prefix_len: int, logits_to_keep: int):
    """One chunk: each distinct prompt once (cache kept), then every row's suffix on its
    prompt's cache, through TRL's fused LM head."""
    out = model(input_ids=prefix_ids, attention_mask=prefix_mask, use_cache=True, logits_to_keep=1)
    cache = out.past_key_values
    cache.reorder_cache(inverse)  # index_select per layer: row i gets its prompt's keys/values
    suffix = ids[:, prefix_len:]
    labels = suffix.masked_fill(mask[:, prefix_len:] == 0, -100)
    labels[:, :-logits_to_keep] = -100  # the prompt token is not scored (TRL: labels[:, :-k] = -100)
    scored = model(input_ids=suffix, attention_mask=mask, past_key_values=cache, labels=labels, fused_lm_head=True)
    return scored.log_probs[:, -logits_to_keep:]
