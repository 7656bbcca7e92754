"""The scoring passes with each group's prompt run once (rl/learn/shared_prefix.py) give
TRL's own log-probs, and in the loss's pass its entropies and gradients: the same trainer
method, switched both ways, on a LoRA model with TRL's fused LM head, left-padded prompts
of different lengths and right-padded completions."""
from __future__ import annotations

from contextlib import nullcontext
from types import SimpleNamespace

import pytest
import torch

from helpers_models import build_tiny_qwen2, save_random_lora


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    root = tmp_path_factory.mktemp("shared-prefix")
    model_dir = build_tiny_qwen2(root / "model")
    adapter = save_random_lora(model_dir, root / "lora", r=8)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    add_fused_lm_head(model, temperature=0.7, outputs=("log_probs", "entropy"))  # as GRPOTrainer, before PEFT
    return PeftModel.from_pretrained(model, str(adapter)).eval()


def _trainer(share: bool):
    """The subclass's scoring method without building a trainer: it reads only these."""
    from rl.learn.trl_bridge import RolloutGRPOTrainer

    trainer = object.__new__(RolloutGRPOTrainer)
    trainer.accelerator = SimpleNamespace(autocast=nullcontext, is_main_process=True, num_processes=1)
    trainer._gap_inputs = trainer._is_inputs = None
    trainer.share_prompt_prefix = share
    trainer.share_prompt_prefix_in_loss = True
    return trainer


def _grpo_batch(prompt_lens=(5, 9, 7), n=4, completion_width=6, vocab=500, seed=0):
    """TRL's layout: groups of n identical left-padded prompts, then right-padded completions."""
    gen = torch.Generator().manual_seed(seed)
    width = max(prompt_lens)
    ids, mask = [], []
    for length in prompt_lens:
        prompt = torch.randint(3, vocab, (length,), generator=gen).tolist()
        for _ in range(n):
            done = int(torch.randint(1, completion_width + 1, (1,), generator=gen))
            completion = torch.randint(3, vocab, (completion_width,), generator=gen).tolist()
            ids.append([0] * (width - length) + prompt + completion)
            mask.append([0] * (width - length) + [1] * length + [1] * done + [0] * (completion_width - done))
    return torch.tensor(ids), torch.tensor(mask), completion_width


@pytest.mark.parametrize("batch_size", [None, 8, 4])
def test_shared_prompt_pass_gives_trl_s_logprobs(policy, batch_size):
    ids, mask, k = _grpo_batch()
    with torch.no_grad():
        theirs, _, _ = _trainer(False)._get_per_token_logps_and_entropies(policy, ids, mask, k, batch_size=batch_size)
        ours, entropy, aux = _trainer(True)._get_per_token_logps_and_entropies(policy, ids, mask, k,
                                                                              batch_size=batch_size)
    keep = mask[:, -k:].bool()
    assert ours.shape == theirs.shape and entropy is None and aux is None
    torch.testing.assert_close(ours[keep], theirs[keep], rtol=0, atol=1e-5)
    assert not torch.equal(theirs[keep], torch.zeros_like(theirs[keep]))


def test_shared_prompt_pass_runs_each_prompt_once(policy):
    """The saving itself: the prompt forward sees one row per group, not n."""
    from rl.learn.shared_prefix import shared_prefix_logps

    ids, mask, k = _grpo_batch(n=4)
    rows = []
    hook = policy.register_forward_pre_hook(lambda mod, args, kwargs: rows.append(kwargs["input_ids"].shape),
                                            with_kwargs=True)
    try:
        with torch.no_grad():
            shared_prefix_logps(policy, ids, mask, k)
    finally:
        hook.remove()
    width = ids.shape[1]
    assert rows == [(3, width - k - 1), (12, k + 1)]


def test_loss_pass_shares_with_trl_s_logprobs_entropies_and_gradients(policy):
    """The loss's pass (gradients on, entropies asked, as GRPOTrainer._compute_loss calls it):
    the LoRA gradients of a loss over the scored tokens match TRL's pass, so the prompt's
    gradient reaches it through every row's copy of its keys/values."""
    ids, mask, k = _grpo_batch(n=3)
    keep = mask[:, -k:].bool()
    lora = [p for name, p in policy.named_parameters() if "lora_" in name]
    assert lora
    for p in lora:
        p.requires_grad_(True)  # the fixture loads the adapter frozen
    results = []
    for share in (False, True):
        policy.zero_grad()
        logps, entropy, _ = _trainer(share)._get_per_token_logps_and_entropies(policy, ids, mask, k,
                                                                               compute_entropy=True)
        weights = torch.linspace(0.5, 1.5, logps.numel()).view_as(logps)  # a loss that weighs every token
        ((logps * weights)[keep].sum() + entropy[keep].sum()).backward()
        results.append((logps.detach(), entropy.detach(), [p.grad.clone() for p in lora]))
    (theirs, their_entropy, their_grads), (ours, our_entropy, our_grads) = results
    torch.testing.assert_close(ours[keep], theirs[keep], rtol=0, atol=1e-5)
    torch.testing.assert_close(our_entropy[keep], their_entropy[keep], rtol=0, atol=1e-5)
    for mine, want in zip(our_grads, their_grads):  # float rounding: summed in another order
        assert (mine - want).norm() <= 1e-4 * want.norm() + 1e-6, (mine - want).norm() / want.norm()
    assert any(g.abs().sum() > 0 for g in their_grads)
    policy.zero_grad(set_to_none=True)
    for p in lora:
        p.requires_grad_(False)


def test_falls_back_to_trl_s_pass_when_nothing_is_shared_or_sharing_cannot_run(policy):
    from rl.learn.shared_prefix import shared_prefix_logps

    ids, mask, k = _grpo_batch(n=1)
    with torch.no_grad():
        assert shared_prefix_logps(policy, ids, mask, k) is None
    ids, mask, k = _grpo_batch(n=2)
    trainer = _trainer(True)
    assert trainer._shared_prefix_logps(policy, ids, mask, k) is not None  # the loss's pass, one process
    trainer.accelerator.num_processes = 2  # DDP/DeepSpeed: one forward per backward
    assert trainer._shared_prefix_logps(policy, ids, mask, k) is None
    with torch.no_grad():
        assert trainer._shared_prefix_logps(policy, ids, mask, k) is not None  # no-grad passes share anyway
    trainer.accelerator.num_processes = 1
    trainer.share_prompt_prefix_in_loss = False
    assert trainer._shared_prefix_logps(policy, ids, mask, k) is None
    with torch.no_grad():
        assert trainer._shared_prefix_logps(policy, ids, mask, k, compute_aux_loss=True) is None
        assert trainer._shared_prefix_logps(policy, ids, mask, k, pixel_values=torch.zeros(1)) is None
        assert trainer._shared_prefix_logps(policy, ids, mask, k) is not None
        policy.train()
        policy.gradient_checkpointing_enable()  # training mode: transformers would return no cache
        try:
            assert trainer._shared_prefix_logps(policy, ids, mask, k) is None
        finally:
            policy.gradient_checkpointing_disable()
            policy.eval()
        assert trainer._shared_prefix_logps(policy, ids, mask, k) is not None
        trainer.share_prompt_prefix = False
        assert trainer._shared_prefix_logps(policy, ids, mask, k) is None


def test_shuffle_moves_whole_groups_and_falls_back_to_trl_s():
    from rl.learn.shared_prefix import shuffle_whole_groups

    prompts = torch.arange(4).repeat_interleave(3)[:, None].expand(12, 5).clone()  # 4 groups of 3 rows
    batch = {"prompt_ids": prompts, "row": torch.arange(12), "text": [f"t{i}" for i in range(12)],
             "num_items_in_batch": torch.tensor(7), "extra": None}
    torch.manual_seed(0)
    orders = set()
    for _ in range(10):
        out = shuffle_whole_groups(batch, group_size=3)
        rows = out["row"].view(4, 3)
        assert (rows == rows[:, :1] + torch.arange(3)).all()  # each group whole, in its own order
        assert (out["prompt_ids"][:, 0] == out["row"] // 3).all() and out["text"] == [f"t{i}" for i in out["row"]]
        assert out["num_items_in_batch"] == 7 and out["extra"] is None
        orders.add(tuple(rows[:, 0].tolist()))
    assert len(orders) > 1  # groups do move
    mixed = dict(batch, prompt_ids=torch.arange(12)[:, None].expand(12, 5).clone())  # not laid out in groups
    rows = shuffle_whole_groups(mixed, group_size=3)["row"].view(4, 3)
    assert not (rows == rows[:, :1] + torch.arange(3)).all()  # TRL's row shuffle (seeded: not whole groups)
