"""Log-probs of a GRPO batch with each group's shared prompt run once.

TRL scores a step's completions by running every (prompt + completion) row through
the model: a group's n rows repeat the same prompt n times. Only the completion tokens
are scored, so the prompt can run once per group and its key/value cache be reused by
the group's rows. On an R1-T1-shaped batch (prompt ~150 tokens, completion ~300, n = 8)
that drops 7/8 of the prompt positions of a no-grad pass (the reference pass for the KL
term, the old-policy pass for the importance-sampling correction): about 30% of its tokens.

The loss's own pass can share too: with gradients on, each row's copy of the prompt's
keys/values is an ``index_select`` of the one prompt forward, so the rows' gradients
flow back into it and add up there, as they would over n separate prompt forwards.
Its saving depends on how many rows of one micro-batch share a prompt.

The numbers are TRL's (GRPOTrainer's per-token log-prob pass, which rl/learn/trl_bridge.py
hands to this module, with the fused LM head of ``trl.trainer.utils.add_fused_lm_head``):
same positions (0..T-1, as TRL's forward without ``position_ids``), same labels, same head.
Only the order of float additions differs, so they agree to float rounding
(tests/test_shared_prefix.py).
"""
from __future__ import annotations

from contextlib import nullcontext


def shared_prefix_logps(model, input_ids, attention_mask, logits_to_keep: int, batch_size: int | None = None,
                        autocast=nullcontext, compute_entropy: bool = False):
    """Per-token log-probs of the last ``logits_to_keep`` tokens of each row, as TRL's
    scoring pass returns them, or None when no two rows of a chunk share their prompt
    (the caller then runs TRL's own pass). With ``compute_entropy``, a pair (log-probs,
    entropies), as TRL's pass with that flag. Gradients flow when they are enabled.

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
    logps, entropies = [], []
    for ids, mask, unique, inverse in plans:
        with autocast():
            scored = _score_chunk(model, ids, mask, unique[:, :prefix_len], unique[:, prefix_len:], inverse,
                                  prefix_len)
        logps.append(scored.log_probs[:, -logits_to_keep:])
        if compute_entropy:
            entropies.append(scored.entropy[:, -logits_to_keep:])
    if compute_entropy:
        return torch.cat(logps, dim=0), torch.cat(entropies, dim=0)
    return torch.cat(logps, dim=0)


def _score_chunk(model, ids, mask, prefix_ids, prefix_mask, inverse, prefix_len: int):
    """One chunk: each distinct prompt once (cache kept), then every row's suffix on its
    prompt's cache, through TRL's fused LM head (its output: ``log_probs``, ``entropy``)."""
    out = model(input_ids=prefix_ids, attention_mask=prefix_mask, use_cache=True, logits_to_keep=1)
    cache = out.past_key_values
    cache.reorder_cache(inverse)  # index_select per layer: row i gets its prompt's keys/values
    suffix = ids[:, prefix_len:]
    labels = suffix.masked_fill(mask[:, prefix_len:] == 0, -100)
    labels[:, :1] = -100  # the last prompt token is not scored (TRL: labels[:, :-k] = -100)
    return model(input_ids=suffix, attention_mask=mask, past_key_values=cache, labels=labels, fused_lm_head=True)


def shuffle_whole_groups(batch: dict, group_size: int) -> dict:
    """TRL's shuffle of a generation batch before its split into micro-batches
    (``trl.trainer.utils.shuffle_sequence_dict``), moving each group's rows together, so
    that a micro-batch holds the rows of as few prompts as it can and the loss's pass
    shares them. The rows' order within a group is kept. Falls back to TRL's row shuffle
    when the batch is not laid out in whole groups of identical prompts."""
    import torch
    from trl.trainer.utils import shuffle_sequence_dict

    prompts = batch.get("prompt_ids")
    rows = len(prompts) if prompts is not None else 0
    if rows == 0 or group_size < 2 or rows % group_size:
        return shuffle_sequence_dict(batch)
    grouped = prompts.view(rows // group_size, group_size, -1)
    if not bool((grouped == grouped[:, :1]).all()):
        return shuffle_sequence_dict(batch)
    order = (torch.randperm(rows // group_size)[:, None] * group_size + torch.arange(group_size)).flatten()

    def permute(value):
        if value is None or (isinstance(value, torch.Tensor) and value.ndim == 0):
            return value
        if isinstance(value, torch.Tensor):
            return value[order]
        return [value[i] for i in order]

    return {key: permute(value) for key, value in batch.items()}
