"""The PPO learner: a critic on the policy's own base, token-level GAE, clipped losses.

    python rl/train.py --config configs/toy-ppo.yaml        (grpo.algorithm: ppo)

TRL 1.16 has no PPOTrainer: it lived in ``trl.experimental.ppo`` up to 1.12 and was removed in
1.13, and even then it needed a reward *model* module and generated with transformers itself, so
it never fit our Ray/vLLM rollouts and function rewards. What TRL's GRPO machinery still does for
PPO is reused as is: the rollout_func path, the reward functions, the policy's and reference's
token logprobs, the importance-sampling correction, the Trainer loop (checkpoints, resume,
accumulation, ``num_iterations`` as PPO epochs) and everything rl/learn/grpo.py wires around it
(adapter sync, run dir, metrics, Ctrl-C). What is written here is what TRL no longer has:

* the critic (:class:`Critic`): a value head (one linear layer on the last hidden state) on the
  same frozen base, with its own LoRA adapter beside the policy's (PEFT multi-adapter: no second
  copy of the base weights), or on a separate frozen model of its own (``ppo.critic_model``);
  checkpointed with the policy and restored by ``--resume``;
* adaptive KL (:func:`adaptive_beta`, ``ppo.kl_target``): Ziegler et al.'s controller, which TRL
  dropped with its PPOTrainer;
* the advantages (:meth:`PPOLearner.prepare`): the sequence reward at the last token plus a
  per-token KL penalty ``-beta * (logp - ref_logp)`` (or KL in the loss, ``ppo.kl_in_reward``),
  GAE(gamma, lambda) (:func:`gae`), whitening;
* the loss (:meth:`PPOLearner.loss`): clipped policy surrogate + clipped value loss.

rl/learn/trl_bridge.py (RolloutPPOTrainer) hooks these into TRL; it alone touches TRL's privates.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import TrainerCallback

from rl.core.config import Config

CRITIC_ADAPTER = "critic"  # the critic's LoRA adapter name beside the policy's "default" (and TRL's "ref")
POLICY_ADAPTER = "default"
CRITIC_FILE = "ppo_critic.safetensors"  # in each checkpoint and the run dir: the critic's LoRA + value head
VALUE_HEAD_PREFIX = "value_head."


# ----------------------------------------------------------------------------- the math (pure functions)

def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation over completion tokens: (advantages, returns), both (B, T).

    ``rewards``, ``values``: (B, T) per token; ``mask``: 1 on a completion's tokens (right-padded).
    delta_t = r_t + gamma * V_{t+1} - V_t and A_t = delta_t + gamma * lam * A_{t+1}, where V and A
    past a completion's last token are 0 (the episode ends there); returns = A + V. Padding gets 0."""
    mask = mask.to(values.dtype)
    steps = rewards.shape[1]
    advantages = torch.zeros_like(values)
    next_value = torch.zeros_like(values[:, 0])
    next_advantage = torch.zeros_like(values[:, 0])
    for t in reversed(range(steps)):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        advantage = (delta + gamma * lam * next_advantage) * mask[:, t]
        advantages[:, t] = advantage
        next_value = values[:, t] * mask[:, t]
        next_advantage = advantage
    returns = (advantages + values) * mask
    return advantages, returns


def token_rewards(scores: torch.Tensor, mask: torch.Tensor, kl: torch.Tensor | None, beta: float) -> torch.Tensor:
    """(B, T) rewards: each completion's score at its last token, and ``-beta * kl`` at every token
    when ``kl`` (the per-token ``logp - ref_logp``) is given."""
    mask = mask.to(scores.dtype)
    rewards = torch.zeros_like(mask) if kl is None else -beta * kl * mask
    last = (mask.sum(1).long() - 1).clamp(min=0)
    rewards[torch.arange(len(scores)), last] += scores * (mask.sum(1) > 0)
    return rewards


Reduce = Callable[[torch.Tensor], torch.Tensor]  # sums a tensor over the learner processes


def masked_moments(x: torch.Tensor, mask: torch.Tensor, reduce: Reduce) -> tuple[float, float, float]:
    """(count, mean, variance) of ``x`` over ``mask`` on every process together."""
    m = mask.to(x.dtype)
    totals = reduce(torch.stack([m.sum(), (x * m).sum(), (x * x * m).sum()]))
    count = float(totals[0])
    if count == 0:
        return 0.0, 0.0, 0.0
    mean = float(totals[1]) / count
    return count, mean, max(0.0, float(totals[2]) / count - mean * mean)


def whiten(x: torch.Tensor, mask: torch.Tensor, reduce: Reduce) -> torch.Tensor:
    """``x`` to mean 0, std 1 over ``mask`` (all processes), 0 elsewhere."""
    _, mean, var = masked_moments(x, mask, reduce)
    return (x - mean) / (var + 1e-8) ** 0.5 * mask.to(x.dtype)


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, reduce: Reduce) -> float:
    """1 - Var(returns - values) / Var(returns) over ``mask``: 1 for a critic that predicts the
    returns, 0 for one no better than their mean, below 0 for a worse one."""
    _, _, var_returns = masked_moments(returns, mask, reduce)
    _, _, var_error = masked_moments(returns - values, mask, reduce)
    return float("nan") if var_returns == 0 else 1.0 - var_error / var_returns


def clipped_policy_loss(logps, old_logps, advantages, epsilon_low: float, epsilon_high: float):
    """Per-token PPO surrogate max(-A r, -A clip(r)) and where the clip was the one taken."""
    ratio = torch.exp(logps - old_logps)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high)
    return torch.maximum(unclipped, clipped), (clipped > unclipped).float()


def clipped_value_loss(values, old_values, returns, cliprange_value: float):
    """Per-token 0.5 * max((V - R)^2, (V_clip - R)^2), V_clip kept within ``cliprange_value`` of
    the rollout's values; and where the clipped error was the one taken."""
    clipped_values = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)
    unclipped, clipped = (values - returns) ** 2, (clipped_values - returns) ** 2
    return 0.5 * torch.maximum(unclipped, clipped), (clipped > unclipped).float()


def adaptive_beta(beta: float, kl: float, target: float, completions: int, horizon: int) -> float:
    """The next KL coefficient of Ziegler et al. (2019)'s adaptive controller: the error
    ``kl / target - 1`` clipped to +-0.2, times ``completions / horizon``, scales ``beta``
    (``kl``: the step's mean per-completion KL to the reference)."""
    error = max(-0.2, min(0.2, kl / target - 1.0))
    return beta * (1.0 + error * completions / horizon)


# ----------------------------------------------------------------------------- the critic

class Critic:
    """A value head on a PEFT model's last hidden state, trained through its own LoRA adapter
    (``CRITIC_ADAPTER``). Build it with :func:`shared_base_critic` (on the policy's PEFT model,
    beside the policy's adapter) or :func:`separate_critic` (on a model of its own).

    The head is registered inside the model it reads (so accelerate moves it, and for the shared
    base DDP reduces its gradients and the Trainer clips them) and kept in fp32. On the shared base,
    switching adapters with PEFT's ``set_adapter`` also sets requires_grad on the inactive adapter
    to False (and TRL's reference pass switches them too); :meth:`use` puts requires_grad back on
    every trainable critic and policy parameter, or their gradients would not accumulate in the
    backward pass. A separate critic is outside the Trainer's (DDP-wrapped) model:
    :class:`SeparateCriticGradients` reduces and clips its gradients."""

    def __init__(self, peft_model, separate: bool):
        self.model, self.separate = peft_model, separate
        self.checkpointing_kwargs: dict | None = None  # the Trainer's gradient_checkpointing_kwargs
        hidden = peft_model.get_base_model().config.get_text_config().hidden_size
        head = torch.nn.Linear(hidden, 1, dtype=torch.float32)
        torch.nn.init.zeros_(head.weight)  # V = 0 at the start: no made-up value before the critic learns
        torch.nn.init.zeros_(head.bias)
        head.to(next(peft_model.parameters()).device)
        peft_model.get_base_model().add_module("ppo_value_head", head)
        adapters = (f".{CRITIC_ADAPTER}.",) if separate else (f".{CRITIC_ADAPTER}.", f".{POLICY_ADAPTER}.")
        self.trainable = [p for n, p in peft_model.named_parameters()
                          if "lora_" in n and any(a in n for a in adapters)] + list(head.parameters())
        self.restore_grads()

    @property
    def head(self) -> torch.nn.Linear:
        return self.model.get_base_model().ppo_value_head

    def parameters(self) -> list[torch.nn.Parameter]:
        """The critic's own trainable parameters: its LoRA and the head (an optimizer group)."""
        return [p for n, p in self.model.named_parameters() if f".{CRITIC_ADAPTER}." in n] + list(self.head.parameters())

    def restore_grads(self) -> None:
        """requires_grad on every parameter the critic and the policy train (see the class doc)."""
        for p in self.trainable:
            p.requires_grad_(True)

    @contextlib.contextmanager
    def use(self):
        """The critic's adapter active inside, the policy's after (requires_grad kept on both);
        nothing to switch on a separate model."""
        if self.separate:
            yield
            return
        self.model.set_adapter(CRITIC_ADAPTER)
        self.restore_grads()
        try:
            yield
        finally:
            self.model.set_adapter(POLICY_ADAPTER)
            self.restore_grads()

    def values(self, model, prompt_ids, prompt_mask, completion_ids, completion_mask) -> torch.Tensor:
        """(B, T) values of the states before each completion token: the head on the last hidden
        state at the position that predicts the token. ``model`` is the trainer's (maybe DDP-
        wrapped) model, which a shared-base critic runs through, so the forward pass goes where
        the policy's does; only one position's logits are computed (``logits_to_keep=1``)."""
        from trl.models.utils import disable_gradient_checkpointing

        input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
        attention_mask = torch.cat([prompt_mask, completion_mask], dim=1)
        if self.separate:
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
            hidden = out.last_hidden_state[:, prompt_ids.shape[1] - 1:-1]
            return self.head(hidden.float()).squeeze(-1)
        # Not checkpointed: a checkpointed pass is recomputed in the backward pass with the adapter active
        # then, the policy's, so the critic's gradients would be the policy's activations' (shapes differ
        # when the ranks do). The policy's own pass keeps its checkpointing.
        with self.use(), disable_gradient_checkpointing(self.model, self.checkpointing_kwargs):
            out = model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True,
                        logits_to_keep=1, use_cache=False)
        hidden = out.hidden_states[-1][:, prompt_ids.shape[1] - 1:-1]
        return self.head(hidden.float()).squeeze(-1)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The critic's LoRA weights (PEFT's names) and the head's (``value_head.`` prefixed)."""
        from peft import get_peft_model_state_dict

        weights = dict(get_peft_model_state_dict(self.model, adapter_name=CRITIC_ADAPTER))
        weights.update({VALUE_HEAD_PREFIX + k: v for k, v in self.head.state_dict().items()})
        return {k: v.detach().cpu().contiguous() for k, v in weights.items()}

    def load_state_dict(self, weights: dict[str, torch.Tensor], where: str = "") -> None:
        from peft import set_peft_model_state_dict

        head = {k[len(VALUE_HEAD_PREFIX):]: v for k, v in weights.items() if k.startswith(VALUE_HEAD_PREFIX)}
        lora = {k: v for k, v in weights.items() if not k.startswith(VALUE_HEAD_PREFIX)}
        if not head:
            raise RuntimeError(f"{where}: no value head weights ({VALUE_HEAD_PREFIX}*) in the critic checkpoint")
        result = set_peft_model_state_dict(self.model, lora, adapter_name=CRITIC_ADAPTER)
        if result.unexpected_keys:
            raise RuntimeError(f"{where}: critic weights the model does not have: {result.unexpected_keys[:3]}")
        with torch.no_grad():
            self.head.load_state_dict(head)
        if not self.separate:
            self.model.set_adapter(POLICY_ADAPTER)
        self.restore_grads()


def shared_base_critic(peft_model, r: int, alpha: int, target_modules: list[str] | None, dropout: float = 0.0
                       ) -> Critic:
    """The critic on the policy's PEFT model: its own LoRA adapter beside the policy's (no second
    copy of the base weights); the policy's adapter stays the active one."""
    from peft import LoraConfig

    policy = peft_model.peft_config[POLICY_ADAPTER]
    peft_model.add_adapter(CRITIC_ADAPTER, LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules or policy.target_modules,
        task_type="CAUSAL_LM"))
    peft_model.set_adapter(POLICY_ADAPTER)
    return Critic(peft_model, separate=False)


def separate_critic(model_dir: str, policy_tokenizer, dtype, r: int, alpha: int, target_modules: list[str] | None,
                    dropout: float, device, trust_remote_code: bool = False) -> Critic:
    """The critic on a model of its own (``ppo.critic_model``): its body (no LM head), frozen, with
    a LoRA adapter and the value head. It reads the policy's token ids, so a model whose tokenizer
    maps tokens otherwise is refused before it is trained on ids it would misread."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModel, AutoTokenizer

    from rl.core.config import ConfigError

    if AutoTokenizer.from_pretrained(model_dir).get_vocab() != policy_tokenizer.get_vocab():
        raise ConfigError(f"ppo.critic_model: {model_dir} has another tokenizer than the policy's; the critic reads "
                          "the policy's token ids, so it needs the same tokenizer (a model of the same family)")
    body = AutoModel.from_pretrained(model_dir, dtype=dtype, trust_remote_code=trust_remote_code)
    lora = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules or None,
                      task_type="FEATURE_EXTRACTION")
    return Critic(get_peft_model(body, lora, adapter_name=CRITIC_ADAPTER).to(device), separate=True)


# ----------------------------------------------------------------------------- the learner TRL calls

class PPOLearner:
    """What rl/learn/trl_bridge.py's RolloutPPOTrainer calls: :meth:`attach` once the policy is a
    PEFT model, :meth:`prepare` on each generated batch, :meth:`loss` on each micro-batch.

    ``beta`` is the KL coefficient of the generation being prepared and the next: grpo.beta, or
    with ``ppo.kl_target`` the adaptive controller's, moved by each :meth:`prepare` (and kept in
    checkpoints: CriticCheckpoint); ``generation_beta`` the one the current generation uses."""

    def __init__(self, cfg: Config):
        self.cfg, self.settings, self.grpo, self.lora = cfg, cfg.ppo, cfg.grpo, cfg.lora
        self.critic: Critic | None = None
        self.beta = self.generation_beta = cfg.grpo.beta

    def callbacks(self, checkpoint: Path | None) -> list[TrainerCallback]:
        """The Trainer callbacks PPO needs: the critic (and the adaptive beta) saved with each
        checkpoint, and loaded back from ``checkpoint`` (the one being resumed, if any); a separate
        critic's gradients reduced over the learner processes and clipped."""
        own = [SeparateCriticGradients(self)] if self.settings.critic_model else []
        return [CriticCheckpoint(self, checkpoint), *own]

    @property
    def critic_learning_rate(self) -> float:
        return self.settings.critic_learning_rate or self.grpo.learning_rate

    def attach(self, peft_model, tokenizer, checkpointing_kwargs: dict | None = None) -> Critic:
        """Adds the critic (its adapter and value head) to the policy's PEFT model, or loads the
        separate critic model (``ppo.critic_model``) onto the policy's device."""
        s = self.settings
        if s.critic_model:
            from rl.core import resolve
            from rl.core.config import torch_dtype

            self.critic = separate_critic(
                resolve.model_path(self.cfg, s.critic_model), tokenizer, torch_dtype(self.cfg.model.dtype),
                s.critic_lora_r, s.critic_lora_alpha, self.lora.target_modules, self.lora.dropout,
                next(peft_model.parameters()).device, self.cfg.model.trust_remote_code)
        else:
            self.critic = shared_base_critic(peft_model, s.critic_lora_r, s.critic_lora_alpha,
                                             self.lora.target_modules, self.lora.dropout)
        self.critic.checkpointing_kwargs = checkpointing_kwargs
        return self.critic

    def prepare(self, model, batch: dict, scores: torch.Tensor, scored: torch.Tensor, reduce: Reduce
                ) -> dict[str, float]:
        """Adds ``advantages``, ``returns``, ``old_values`` and ``value_mask`` (B, T) to the batch;
        returns the step's PPO figures. ``scores``: each completion's reward; ``scored``: False
        where no reward function could score it (no advantage, no value target, as TRL's NaN
        rewards). ``batch["old_per_token_logps"]``: the sampling policy's logprobs."""
        s = self.settings
        mask = batch["completion_mask"].float()
        value_mask = mask * scored.float().unsqueeze(1)
        with torch.no_grad():
            values = self.critic.values(model, batch["prompt_ids"], batch["prompt_mask"], batch["completion_ids"],
                                        batch["completion_mask"]) * mask
        ref = batch.get("ref_per_token_logps")
        kl = None if ref is None else (batch["old_per_token_logps"] - ref) * mask
        beta = self.generation_beta = self.beta
        rewards = token_rewards(torch.nan_to_num(scores.float()) * scored.float(), mask,
                                kl if s.kl_in_reward else None, beta)
        advantages, returns = gae(rewards, values, value_mask, s.gamma, s.lam)
        _, adv_mean, adv_var = masked_moments(advantages, value_mask, reduce)
        figures = {
            "value_mean": masked_moments(values, value_mask, reduce)[1],
            "return_mean": masked_moments(returns, value_mask, reduce)[1],
            "explained_variance": explained_variance(values, returns, value_mask, reduce),
            "advantage_mean": adv_mean,
            "advantage_std": adv_var ** 0.5,
        }
        if kl is not None:
            figures["kl_penalty"] = masked_moments(kl, mask, reduce)[1]  # mean logp - ref_logp of the samples
        figures["beta"] = beta
        if s.kl_target is not None and kl is not None:
            totals = reduce(torch.stack([kl.sum(), torch.tensor(float(len(kl)), device=kl.device)]))
            completions = int(totals[1])
            figures["kl_sequence"] = float(totals[0]) / max(completions, 1)
            self.beta = adaptive_beta(beta, figures["kl_sequence"], s.kl_target, completions, s.kl_horizon)
        if s.whiten_advantages:
            advantages = whiten(advantages, value_mask, reduce)
        batch.update(advantages=advantages, returns=returns, old_values=values, value_mask=value_mask)
        return figures

    def loss(self, model, inputs: dict, logps: torch.Tensor, reduce: Reduce,
             importance_ratio: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """The micro-batch's summed (not yet normalised) token loss: clipped policy surrogate
        (times TRL's importance-sampling ratio when given), plus the KL term when it is not in the
        reward, plus ``vf_coef`` x the clipped value loss; and its figures (all processes)."""
        s, eps = self.settings, self.grpo.epsilon
        mask = inputs["completion_mask"].float()
        value_mask = inputs["value_mask"]
        policy, policy_clipped = clipped_policy_loss(logps, inputs["old_per_token_logps"], inputs["advantages"], eps, eps)
        if importance_ratio is not None:
            policy = policy * importance_ratio
        figures = {}
        ref = inputs.get("ref_per_token_logps")
        if ref is not None:  # k3, as TRL's GRPO: "kl" means the same in both algorithms' metrics
            kl = torch.exp(ref - logps) - (ref - logps) - 1
            figures["kl"] = masked_moments(kl.detach(), mask, reduce)[1]
            if not s.kl_in_reward:
                policy = policy + self.generation_beta * kl
        values = self.critic.values(model, inputs["prompt_ids"], inputs["prompt_mask"], inputs["completion_ids"],
                                    inputs["completion_mask"])
        value, value_clipped = clipped_value_loss(values, inputs["old_values"], inputs["returns"], s.cliprange_value)
        loss = (policy * mask).sum() + s.vf_coef * (value * value_mask).sum()
        figures.update({
            "policy_loss": masked_moments(policy.detach(), mask, reduce)[1],
            "value_loss": masked_moments(value.detach(), value_mask, reduce)[1],
            "policy_clipfrac": masked_moments(policy_clipped, mask, reduce)[1],
            "value_clipfrac": masked_moments(value_clipped, value_mask, reduce)[1],
        })
        return loss, figures


# ----------------------------------------------------------------------------- checkpoints and training

class CriticCheckpoint(TrainerCallback):
    """The critic's LoRA and value head in every checkpoint (:data:`CRITIC_FILE`), with the KL
    coefficient of the next generation in its metadata (adaptive KL moves it), loaded back when
    resuming. The Trainer saves only the policy's PEFT adapters and restores the optimizer and
    scheduler (the critic's group included) itself; the head is no PEFT weight and a separate
    critic no part of the policy, so they would be lost. ``on_train_begin`` runs after the
    Trainer's own loading, before any generation."""

    def __init__(self, learner: PPOLearner, checkpoint: Path | None):
        self.learner, self.checkpoint = learner, checkpoint

    def on_save(self, args, state, control, **kw):
        if state.is_world_process_zero:
            self.save(Path(args.output_dir) / f"checkpoint-{state.global_step}" / CRITIC_FILE)

    def on_train_end(self, args, state, control, **kw):
        """The critic as training left it, beside the run's adapter/ (``<run dir>/ppo_critic.safetensors``;
        after Ctrl-C, as the checkpoint's)."""
        if state.is_world_process_zero:
            self.save(Path(args.output_dir).parent / CRITIC_FILE)

    def save(self, path: Path) -> None:
        from safetensors.torch import save_file

        save_file(self.learner.critic.state_dict(), str(path), metadata={"beta": repr(self.learner.beta)})

    def on_train_begin(self, args, state, control, **kw):
        from safetensors import safe_open
        from safetensors.torch import load_file

        if self.checkpoint is None:
            return
        path = self.checkpoint / CRITIC_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path}: this checkpoint has no critic; was the run trained with grpo.algorithm: "
                                    "grpo? --resume continues a run with its own algorithm")
        device = next(self.learner.critic.head.parameters()).device
        weights = {k: v.to(device) for k, v in load_file(str(path)).items()}
        self.learner.critic.load_state_dict(weights, where=str(path))
        with safe_open(str(path), "pt") as saved:
            beta = (saved.metadata() or {}).get("beta")
        if beta is not None:
            self.learner.beta = float(beta)


class SeparateCriticGradients(TrainerCallback):
    """A separate critic (``ppo.critic_model``) is outside the Trainer's model, so neither DDP
    nor the Trainer's clipping reaches its gradients: before each optimizer step they are
    averaged over the learner processes and clipped to ``max_grad_norm`` here."""

    def __init__(self, learner: PPOLearner):
        self.learner = learner

    def on_pre_optimizer_step(self, args, state, control, **kw):
        import torch.distributed as dist

        params = self.learner.critic.parameters()
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            for p in params:
                if p.grad is None:  # every process runs the critic, so this is only a step without its loss
                    p.grad = torch.zeros_like(p)
                dist.all_reduce(p.grad)
                p.grad /= dist.get_world_size()
        if args.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(params, args.max_grad_norm)


def train(cfg: Config, run_dir: Path, resume: bool = False, engine=None, callbacks=()):
    """Run PPO: rl/learn/grpo.py's ``train`` (rollouts, rewards, sync, run dir, metrics, Ctrl-C,
    resume) with the PPO trainer and its critic; returns the same summary."""
    from rl.learn import grpo

    return grpo.train(cfg, run_dir, resume=resume, engine=engine, callbacks=callbacks, learner=PPOLearner(cfg))
