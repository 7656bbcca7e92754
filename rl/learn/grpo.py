"""The GRPO learner: TRL's GRPOTrainer fed by the rollout pool.

TRL owns the math (group advantages, clipped surrogate, KL to the reference,
loss types, importance sampling). We own three hooks:

* ``rollout_func`` (rl/rollout/feed.py): sends each group of identical prompts to
  the pool as one request with ``n`` samples and returns token ids + the workers'
  logprobs; optionally generates the next step while the learner updates;
* the reward: one TRL reward function that runs our (possibly non-linear)
  reward spec and keeps its parts for logging;
* adapter sync: TRL calls the weight sync before generating whenever the
  optimizer step changed; we plug :class:`AdapterSync` in there so every new
  adapter version reaches every worker before the next generation, and TRL's
  importance-sampling correction uses the workers' logprobs.

rl/learn/trl_bridge.py holds the TRL subclass that wires these in (TRL's private
API stays there).
"""
from __future__ import annotations

import math
import os
import shutil
import signal
import time
import warnings
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import TrainerCallback
from transformers.trainer_callback import PrinterCallback

from rl.core import resolve
from rl.core.analytics import CotLabeler
from rl.core.config import Config, torch_dtype
from rl.core.parsing import parse_batch
from rl.core.ray_cluster import join_launch_cluster
from rl.core.prompts import full_completion, load_templates, prompt_for_example, uses_prefill
from rl.rollout.feed import RolloutFeed
from rl.core.runs import MetricsLog, last_checkpoint, plot_run, read_metrics, save_adapter, write_resolved_config
from rl.learn.sft import cold_start_adapter
from rl.learn.cpu_heap import keep_freed_memory
from rl.learn.trl_bridge import check_versions, score_only_completion_tokens_on_cpu

ADAPTER_VERSIONS_KEPT = 2
ROLLOUT_ADAPTER = "rollout_adapter"  # beside a checkpoint, with grpo.overlap_generation


class StepStats:
    """Per-step figures our hooks measure and the logging callback drains."""

    def __init__(self):
        self.restart_count: Callable[[], int] = lambda: 0  # the engine's worker restarts so far
        self._restarts_seen = 0
        self.reset()

    def watch_restarts(self, engine) -> None:
        """Report ``rollout/worker_restarts`` per step: the rise in the engine's running
        count (the Ray pool's dead or frozen workers; other backends have none)."""
        self.restart_count = lambda: getattr(engine, "worker_restarts", 0)
        self._restarts_seen = self.restart_count()  # a shared engine's earlier restarts are not this run's

    def reset(self):
        self.times: dict[str, float] = defaultdict(float)
        self.parts: dict[str, list[float]] = defaultdict(list)
        self.format_ok: list[bool] = []
        self.cot_labels: list[str] = []
        self.pushes = 0
        self.prefetch_misses = 0
        self.logp_gap = [0.0, 0]  # sum of |sampler - learner| token logprob gaps, tokens (measure_sampler_gap)

    def drain(self, labeler: CotLabeler) -> dict[str, float]:
        """The step's figures, then a fresh start. ``cot/<label>`` shares are over every
        completion, so they sum to 1 with ``cot/format_fail`` (broken format) beside the
        templates and ``other``."""
        out: dict[str, float] = {f"time/{k}": round(v, 4) for k, v in self.times.items()}
        for name, values in self.parts.items():
            vals = [v for v in values if v is not None and not math.isnan(v)]
            out[f"reward/{name}"] = sum(vals) / len(vals) if vals else float("nan")
        if self.format_ok:
            out["format_ok"] = sum(self.format_ok) / len(self.format_ok)
        if self.cot_labels:
            total = len(self.cot_labels)
            for name in labeler.labels:
                out[f"cot/{name}"] = self.cot_labels.count(name) / total
        if self.logp_gap[1]:
            out["sampler_logp_diff"] = self.logp_gap[0] / self.logp_gap[1]
        out["adapter_pushes"] = self.pushes
        out["rollout/prefetch_misses"] = self.prefetch_misses
        restarts = self.restart_count()
        out["rollout/worker_restarts"] = restarts - self._restarts_seen
        self._restarts_seen = restarts
        self.reset()
        return out


class AdapterSync:
    """TRL's weight sync (rl/learn/trl_bridge.py): ``sync_weights()`` saves the
    policy's LoRA adapter and pushes it to every rollout worker (main process
    only; the others wait at the barrier, so nobody generates with a stale policy).
    With overlap, every process first waits for its generation in flight, which
    must finish on the version it started with."""

    def __init__(self, trainer, engine, sync_root: Path, stats: StepStats, feed: RolloutFeed):
        self.trainer, self.engine, self.sync_root, self.stats, self.feed = trainer, engine, sync_root, stats, feed
        self.last_pushed: Path | None = None
        self.push_first: Path | None = None  # resume with overlap: the adapter the next samples came from

    def sync_weights(self) -> None:
        acc = self.trainer.accelerator
        if self.feed.overlap:
            self.feed.wait_idle()
            acc.wait_for_everyone()
        start = time.perf_counter()
        if acc.is_main_process:
            # versions only grow on one engine (vLLM caches adapters by id), even across runs sharing it
            version = (self.engine.adapter_version or 0) + 1
            target = self.sync_root / f"v{version:06d}"
            if self.push_first is not None:
                shutil.copytree(self.push_first, target)
            else:
                save_adapter(acc.unwrap_model(self.trainer.model), target, model_card=False)
            self.engine.set_adapter(str(target), version)
            self.last_pushed = target
            for old in sorted(self.sync_root.glob("v*"))[:-ADAPTER_VERSIONS_KEPT]:
                shutil.rmtree(old, ignore_errors=True)
            self.stats.pushes += 1
        self.push_first = None
        acc.wait_for_everyone()
        self.stats.times["sync"] += time.perf_counter() - start


def measure_sampler_gap(stats: StepStats) -> Callable[[float, int], None]:
    """The trainer's ``on_logp_gap``: adds the |sampler - learner| logprob gaps over
    completion tokens (sum, tokens) to ``stats.logp_gap``, this process's share. The
    trainer measures them (rl/learn/trl_bridge.py) when TRL's importance-sampling
    correction, which logs its own, is off."""

    def record(total: float, tokens: int) -> None:
        stats.logp_gap[0] += total
        stats.logp_gap[1] += tokens

    return record


class NonFiniteRewardError(ValueError):
    """A reward (its total or a part) came out NaN or inf for a sample."""


def _check_finite(breakdown, sources) -> None:
    """Refuse NaN/inf before TRL sees it: a NaN reward turns the group's advantages
    into NaN (or TRL's nan-aware means hide it) and training goes on silently. Parts
    first: a bad part is the cause of a bad total, so name it."""
    for name, values in [*breakdown.parts.items(), ("total", breakdown.total)]:
        for i, v in enumerate(values):
            if v is not None and not math.isfinite(float(v)):
                src = sources[i] if i < len(sources) else None
                src = src if not isinstance(src, str) or len(src) <= 80 else src[:77] + "..."
                raise NonFiniteRewardError(
                    f"reward part {name!r} is {float(v)} for sample {i} of {len(values)} (source {src!r}); "
                    "a reward must return a finite float or None (None: the sample cannot be scored)"
                )


def make_reward_func(reward, think_prefill: bool, stats: StepStats, labeler: CotLabeler):
    """One TRL reward function running our reward spec; parts go to ``stats``.
    Each completion is parsed once (:func:`rl.core.parsing.parse_batch`, the prefill
    re-attached) and that parse goes to every reward part (column ``parsed``) and to the
    format/CoT stats, instead of each of them parsing it again.
    A NaN/inf total or part raises :class:`NonFiniteRewardError` (see ``_check_finite``)."""
    from rewards.base import PARSED, takes_column

    share_parse = takes_column(reward.score, PARSED)  # a reward object without **columns gets no parse

    def reward_fn(prompts, completions, completion_ids=None, **columns) -> list[float | None]:
        start = time.perf_counter()
        texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
        hyps = [full_completion(t, think_prefill) for t in texts]
        kwargs = {k: columns[k] for k in ("src_lang", "tgt_lang", "finish_reason") if k in columns}
        parsed = parse_batch(hyps)  # the step's one parse of each completion
        if share_parse:
            kwargs[PARSED] = parsed
        breakdown = reward.score(columns["source"], hyps, columns["reference"], **kwargs)
        _check_finite(breakdown, columns["source"])
        for name, values in breakdown.parts.items():
            stats.parts[name].extend(v for v in values if v is not None)
        # ok is the strict verdict; label_completion reads think only when ok (strict = lenient then)
        stats.format_ok.extend(p.ok for p in parsed)
        stats.cot_labels.extend(labeler.label_completion(p) for p in parsed)  # format_fail when not p.ok
        stats.times["reward"] += time.perf_counter() - start
        return [None if v is None else float(v) for v in breakdown.total]

    reward_fn.__name__ = "reward"
    return reward_fn


def build_dataset(cfg: Config, tokenizer):
    from datasets import Dataset

    templates = load_templates(cfg.prompt.templates_dir)
    rows = []
    for ex in resolve.train_examples(cfg):
        prompt, template = prompt_for_example(ex, tokenizer, cfg.prompt, templates, cfg.seed)
        rows.append(
            {
                "prompt": prompt,
                "source": ex.source,
                "reference": ex.reference,
                "src_lang": ex.src_lang,
                "tgt_lang": ex.tgt_lang,
                "template": template or "none",
            }
        )
    return Dataset.from_list(rows), templates


def grpo_args(cfg: Config, run_dir: Path, num_processes: int):
    """TRL's config for the run. With PPO, ``ppo.minibatches`` splits each generation batch into
    that many optimizer steps (TRL's steps_per_generation), and one sample per prompt is allowed."""
    from trl import GRPOConfig

    from rl.learn.trl_bridge import grpo_config

    g, s = cfg.grpo, cfg.sampling
    make_config = grpo_config if g.algorithm == "ppo" else GRPOConfig  # GRPO keeps TRL's refusal of n=1
    minibatches = cfg.ppo.minibatches if g.algorithm == "ppo" else 1
    completions_per_step = g.prompts_per_step * s.n
    per_device, rest = divmod(completions_per_step, num_processes * g.gradient_accumulation_steps * minibatches)
    if rest or per_device == 0:
        split = f" x {minibatches} PPO mini-batches (ppo.minibatches)" if minibatches > 1 else ""
        raise ValueError(
            f"grpo.prompts_per_step ({g.prompts_per_step}) x sampling.n ({s.n}) = {completions_per_step} completions "
            f"must divide evenly over {num_processes} process(es) x {g.gradient_accumulation_steps} accumulation steps"
            + split
        )
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(run_dir / "tensorboard")  # transformers 5 dropped logging_dir
    return make_config(
        steps_per_generation=g.gradient_accumulation_steps * minibatches,
        output_dir=str(run_dir / "checkpoints"),
        report_to=["tensorboard"],
        learning_rate=g.learning_rate,
        warmup_steps=g.warmup_ratio,  # < 1: a fraction of the steps (transformers 5)
        lr_scheduler_type="constant_with_warmup" if g.warmup_ratio else "constant",
        per_device_train_batch_size=per_device,
        gradient_accumulation_steps=g.gradient_accumulation_steps,
        num_generations=s.n,
        max_completion_length=s.max_tokens,
        temperature=s.temperature,  # TRL scales logits by it when scoring; must match the sampler
        top_p=s.top_p,
        top_k=s.top_k if s.top_k > 0 else 0,
        beta=g.beta,
        loss_type=g.loss_type,
        epsilon=g.epsilon,
        scale_rewards=g.scale_rewards,
        num_iterations=g.num_iterations,
        vllm_importance_sampling_correction=g.importance_sampling_correction,
        vllm_importance_sampling_mode=g.importance_sampling_mode,
        vllm_importance_sampling_clip_max=g.importance_sampling_clip_max,
        mask_truncated_completions=g.mask_truncated_completions,
        max_steps=g.max_steps,
        save_steps=g.save_steps,
        save_strategy="steps",
        logging_steps=1,
        seed=cfg.seed,
        data_seed=cfg.data.shuffle_seed,
        bf16=cfg.model.dtype == "bfloat16" and torch.cuda.is_available(),
        gradient_checkpointing=g.gradient_checkpointing,
        remove_unused_columns=False,
        disable_tqdm=True,  # our callback draws one bar with reward and step time
        use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0,
        save_only_model=False,
    )


def load_reward(cfg: Config, is_main: bool, own_cluster: bool = True):
    """The run's reward, loaded once this rank has joined the run's Ray cluster: a COMET reward
    starts (or finds) its scorer actor there, so all ranks share one actor in one cluster.
    Loaded first, each rank's COMET actor called a plain ``ray.init()``: separate local
    clusters, ``rollout.ray_address`` ignored, and ranks > 0 never found the rollout pool."""
    from rewards import load_from_config

    if own_cluster and cfg.rollout.backend == "ray-vllm":
        join_launch_cluster(cfg.rollout.ray_address, create=is_main)
    return load_from_config(cfg.reward)


def load_policy(cfg: Config, model_dir: str, adapter: str | None):
    """Base model + trainable LoRA: the cold-start adapter if given, else a fresh one (peft_config)."""
    from peft import LoraConfig, PeftModel
    from transformers import AutoModelForCausalLM

    from rl.rollout.base import check_init_adapter

    if adapter:
        check_init_adapter(cfg, adapter)  # a clear AdapterError before PEFT's traceback, before any weights load
    model = AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=torch_dtype(cfg.model.dtype), trust_remote_code=cfg.model.trust_remote_code
    )
    if adapter:
        return PeftModel.from_pretrained(model, adapter, is_trainable=True), None
    lora = cfg.lora
    peft_config = LoraConfig(
        r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=lora.target_modules,
        task_type="CAUSAL_LM",
    )
    return model, peft_config


def train(cfg: Config, run_dir: Path, resume: bool = False, engine=None, callbacks=(), learner=None) -> str:
    """Run GRPO (PPO with ``learner``); returns a printable summary (rl/core/runs.py: TrainSummary) whose ``interrupted``
    says Ctrl-C stopped it early: then the Ctrl-C checkpoint holds the run, ``--resume``
    continues it, and no final adapter/ is written (a half-trained one would pass for the
    result). ``run_dir`` exists (rl/core/runs.py made it).
    ``engine``: an already running rollout engine to use (and leave running), e.g. in tests.
    ``callbacks``: extra transformers ``TrainerCallback``s (trackers, early stopping, ...).
    ``learner``: PPO's (rl/learn/ppo.py: PPOLearner; rl.learn.ppo.train passes it), which runs
    the same trainer with a critic, GAE and PPO's losses in place of GRPO's."""
    if (learner is None) != (cfg.grpo.algorithm == "grpo"):
        raise ValueError(f"grpo.algorithm is {cfg.grpo.algorithm!r}: train it with rl.learn.{cfg.grpo.algorithm}.train "
                         "(rl/train.py picks the one the config names)")
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from accelerate import PartialState
    from transformers import AutoTokenizer

    from rl.learn import trl_bridge
    from rl.rollout import connect_rollout_engine

    check_versions()  # before anything loads
    import torch

    # The Trainer asks for the CPU when CUDA is absent (grpo_args' use_cpu); accelerate's shared
    # state is set up once, by its first user, and without cpu=True a gloo launch of N CPU processes
    # is taken for N single-process runs: every rank "main", no gradient all-reduce.
    state = PartialState(cpu=not torch.cuda.is_available())
    score_only_completion_tokens_on_cpu()  # no-op for CUDA tensors (TRL already does it there)
    if not torch.cuda.is_available():
        keep_freed_memory()  # each step reuses the last one's activations instead of faulting them in again
    reward = load_reward(cfg, state.is_main_process, own_cluster=engine is None)  # a bad spec fails before models load
    if state.is_main_process:
        model_dir = resolve.model_path(cfg)
        adapter = cold_start_adapter(cfg)  # trains the toy recipe's cold start on first use
    state.wait_for_everyone()
    if not state.is_main_process:
        model_dir, adapter = resolve.model_path(cfg), resolve.init_adapter(cfg)

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    dataset, templates = build_dataset(cfg, tokenizer)
    labeler = CotLabeler(templates)
    model, peft_config = load_policy(cfg, model_dir, adapter)

    checkpoint = last_checkpoint(run_dir) if resume else None
    if resume and checkpoint is None:
        print(f"[train] --resume: no checkpoint in {run_dir}/checkpoints yet; starting from step 0")
    if state.is_main_process:
        write_resolved_config(cfg, run_dir)
    sync_root = run_dir / "adapter_sync"
    sync_root.mkdir(parents=True, exist_ok=True)

    stats = StepStats()
    own_engine = engine is None
    if own_engine:
        engine = connect_rollout_engine(model_dir, cfg.rollout, cfg.lora, seed=cfg.seed, create=state.is_main_process)
    stats.watch_restarts(engine)
    feed = RolloutFeed(engine, tokenizer, cfg.sampling, cfg.seed, stats, overlap=cfg.grpo.overlap_generation)
    # PPO: the same trainer with a critic, GAE and PPO's losses (rl/learn/ppo.py)
    trainer_cls = trl_bridge.RolloutGRPOTrainer if learner is None else trl_bridge.RolloutPPOTrainer
    trainer = trainer_cls(
        model=model,
        reward_funcs=[make_reward_func(reward, uses_prefill(cfg.prompt), stats, labeler)],
        args=grpo_args(cfg, run_dir, state.num_processes),
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        rollout_func=feed,
        # TRL's pre-generation weight sync becomes our adapter push (see module doc)
        weight_sync=lambda t: AdapterSync(t, engine, sync_root, stats, feed),
        # with TRL's importance-sampling correction on, TRL logs the gap itself
        on_logp_gap=None if cfg.grpo.importance_sampling_correction else measure_sampler_gap(stats),
        **({} if learner is None else {"learner": learner}),
    )
    sync = trainer.weight_sync
    if feed.overlap:
        trainer.add_callback(_SaveRolloutAdapter(sync))
        if checkpoint is not None and (checkpoint / ROLLOUT_ADAPTER).is_dir():
            _resume_rollouts_one_version_behind(sync, feed, checkpoint / ROLLOUT_ADAPTER)

    logger = _LoggingCallback(cfg, run_dir, stats, labeler, state.is_main_process, checkpoint)
    trainer.add_callback(logger)
    if checkpoint is not None:
        trainer.add_callback(_RestorePolicyAdapter(trainer, checkpoint))
    for callback in learner.callbacks(checkpoint) if learner is not None else ():
        trainer.add_callback(callback)  # PPO: the critic in every checkpoint, back on --resume
    for callback in callbacks:
        trainer.add_callback(callback)
    trainer.remove_callback(PrinterCallback)  # our bar and metrics.jsonl replace the raw log dicts
    previous = signal.signal(signal.SIGINT, logger.request_stop)
    try:
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    finally:
        signal.signal(signal.SIGINT, previous)
        feed.close()  # a prefetch for a step that will not run: let it finish before anything shuts down
    interrupted = logger.stop_requested and trainer.state.global_step < trainer.state.max_steps
    if state.is_main_process:
        if not interrupted:
            save_adapter(trainer.accelerator.unwrap_model(trainer.model), run_dir / "adapter")
        plot_run(run_dir)
    state.wait_for_everyone()
    if state.is_main_process and own_engine:
        engine.shutdown()
    return logger.summary(run_dir, interrupted)


def _resume_rollouts_one_version_behind(sync: AdapterSync, feed: RolloutFeed, rollout_adapter: Path) -> None:
    """With overlap, a step's samples come from the adapter one step behind. A
    resumed run's first step therefore samples from the adapter saved beside the
    checkpoint, then pushes the checkpoint's policy before prefetching the next
    step: the same samples as an uninterrupted run."""
    sync.push_first = rollout_adapter
    pushed_policy = False

    def push_policy_once() -> None:
        nonlocal pushed_policy
        if not pushed_policy:
            pushed_policy = True
            sync.sync_weights()

    feed.before_prefetch = push_policy_once


class _SaveRolloutAdapter(TrainerCallback):
    """With overlap: beside each checkpoint, the adapter the in-flight samples
    come from (the last one pushed), so ``--resume`` can sample them again."""

    def __init__(self, sync: AdapterSync):
        self.sync = sync

    def on_save(self, args, state, control, **kw):
        if self.sync.last_pushed is not None and state.is_world_process_zero:
            target = Path(args.output_dir) / f"checkpoint-{state.global_step}" / ROLLOUT_ADAPTER
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(self.sync.last_pushed, target)


class _RestorePolicyAdapter(TrainerCallback):
    """Loads the policy adapter of the checkpoint being resumed. transformers 5.16's
    Trainer, given a PEFT checkpoint with sub-directory adapters (TRL's frozen "ref"
    copy), loads only those and never the policy saved at the checkpoint's root: a
    resumed run silently went on from the cold-start adapter (KL 0 at the next step).
    ``on_train_begin`` runs after the Trainer's own loading, before any generation."""

    def __init__(self, trainer, checkpoint: Path):
        self.trainer, self.checkpoint = trainer, checkpoint

    def on_train_begin(self, args, state, control, **kw):
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        weights = load_file(str(self.checkpoint / "adapter_model.safetensors"))
        model = self.trainer.accelerator.unwrap_model(self.trainer.model)
        result = set_peft_model_state_dict(model, weights, adapter_name="default")
        if result.unexpected_keys:
            raise RuntimeError(f"{self.checkpoint}: adapter weights the policy does not have: {result.unexpected_keys[:3]}")


class OffPolicyWarning(UserWarning):
    """The samples of a step came from another policy than the learner's."""


def _gap_threshold(cfg: Config) -> float | None:
    """``grpo.onpolicy_gap_warn``, or None where a large gap is expected: overlapped generation
    samples one adapter version behind by design, and top-p/top-k logprobs are renormalised
    over the kept tokens (the gap then includes log of the kept mass; rl/core/config.py)."""
    s = cfg.sampling
    if cfg.grpo.overlap_generation or s.top_p < 1.0 or s.top_k > 0:
        return None
    return cfg.grpo.onpolicy_gap_warn


class _LoggingCallback(TrainerCallback):
    """metrics.jsonl + progress bar + Ctrl-C handling (save a checkpoint, stop cleanly)."""

    def __init__(self, cfg, run_dir: Path, stats: StepStats, labeler: CotLabeler, is_main: bool, checkpoint):
        self.cfg, self.run_dir, self.stats, self.labeler, self.is_main = cfg, run_dir, stats, labeler, is_main
        start_step = int(checkpoint.name.split("-")[-1]) if checkpoint else 0
        self.metrics = MetricsLog(run_dir / "metrics.jsonl", keep_until_step=start_step) if is_main else None
        self.stop_requested = False
        self.gap_warn = _gap_threshold(cfg) if cfg is not None else None
        self.gap_steps_over = 0  # steps whose sampler_logp_diff exceeded gap_warn, this session
        self.bar = None
        self.step_start = time.perf_counter()
        self.started = time.perf_counter()

    def request_stop(self, signum, frame):
        if self.stop_requested:  # second Ctrl-C: stop now
            raise KeyboardInterrupt
        print("\n[train] Ctrl-C: saving a checkpoint after this step, then stopping; --resume continues it "
              "(Ctrl-C again to abort)")
        self.stop_requested = True

    def on_train_begin(self, args, state, control, **kw):
        if self.is_main:
            from tqdm.auto import tqdm

            desc = self.cfg.grpo.algorithm.upper() if self.cfg is not None else "GRPO"
            self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc=desc, unit="step")
        self.step_start = time.perf_counter()

    def on_step_end(self, args, state, control, **kw):
        if self.stop_requested:
            control.should_save = True
            control.should_training_stop = True

    def on_log(self, args, state, control, logs=None, **kw):
        if not self.is_main or logs is None or "loss" not in logs:
            return
        step_time = time.perf_counter() - self.step_start
        self.step_start = time.perf_counter()
        ours = self.stats.drain(self.labeler)
        spent = sum(v for k, v in ours.items() if k.startswith("time/"))
        record = {
            "step": state.global_step,
            "reward": logs.get("reward"),
            "reward_std": logs.get("reward_std"),
            # share of prompt groups whose samples all scored the same: zero advantage, no GRPO signal
            "frac_reward_zero_std": logs.get("frac_reward_zero_std"),
            "kl": logs.get("kl"),
            "entropy": logs.get("entropy"),
            "loss": logs.get("loss"),
            "completion_length": logs.get("completions/mean_length"),
            "clipped_ratio": logs.get("completions/clipped_ratio"),
            # how far the samples' policy is from the learner's (fp32, in sync: ~1e-6; overlap: one step behind);
            # TRL's with the importance-sampling correction, else ours (measure_sampler_gap, in `ours`)
            "sampler_logp_diff": logs.get("sampling/sampling_logp_difference/mean"),
            "is_ratio_min": logs.get("sampling/importance_sampling_ratio/min"),
            "is_ratio_max": logs.get("sampling/importance_sampling_ratio/max"),
            # PPO (rl/learn/ppo.py): value_loss, explained_variance, value/return means, clip fractions, ...
            **{k[len("ppo/"):]: v for k, v in logs.items() if k.startswith("ppo/")},
            **ours,
            "time/learner": round(max(0.0, step_time - spent), 4),
            "time/step": round(step_time, 4),
            "learner_processes": getattr(args, "world_size", None),  # what the launch really started
        }
        record = {k: v for k, v in record.items() if v is not None}
        self.check_on_policy(record)
        self.metrics.write(record)
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)
            self.bar.set_postfix(reward=f"{record.get('reward', float('nan')):.3f}", s_per_step=f"{step_time:.1f}")

    def check_on_policy(self, record: dict) -> None:
        """Count the steps whose sampler/learner logprob gap is above ``grpo.onpolicy_gap_warn``
        (``record["onpolicy_gap_over"]``: the count so far) and warn at the first: samples that
        did not come from the learner's policy (a push skipped or not delivered) train on
        silently otherwise."""
        gap = record.get("sampler_logp_diff")
        if self.gap_warn is None or gap is None:
            return
        if gap > self.gap_warn:
            self.gap_steps_over += 1
            if self.gap_steps_over == 1:
                warnings.warn(
                    f"step {record['step']}: the rollout workers' logprobs differ from the learner's by {gap:.3g} "
                    f"nats per token on average (sampler_logp_diff > grpo.onpolicy_gap_warn={self.gap_warn}): the "
                    "samples did not come from the learner's policy (an adapter push skipped or not delivered, a "
                    "stale worker?). Warned once; metrics.jsonl counts such steps in onpolicy_gap_over",
                    OffPolicyWarning, stacklevel=2)
        record["onpolicy_gap_over"] = self.gap_steps_over

    def on_train_end(self, args, state, control, **kw):
        if self.bar is not None:
            self.bar.close()

    def summary(self, run_dir: Path, interrupted: bool = False) -> str:
        """The run in a few lines; after Ctrl-C (``interrupted``) it says so and points at
        the checkpoint instead of a final adapter, which was not written."""
        from rl.core.runs import TrainSummary

        records = read_metrics(run_dir)
        if not records:
            return TrainSummary(f"[train] no steps logged; run dir {run_dir}", interrupted)
        first, last = records[0], records[-1]
        k = max(1, min(5, len(records) // 4))
        avg = lambda key, rs: sum(r.get(key, 0.0) for r in rs) / len(rs)  # noqa: E731
        elapsed = f"{time.perf_counter() - self.started:.0f}s"
        if interrupted:
            checkpoint = run_dir / "checkpoints" / f"checkpoint-{last['step']}"  # saved at the stop (on_step_end)
            head = (f"[train] interrupted (Ctrl-C) after step {last['step']} of {self.cfg.grpo.max_steps} in {elapsed} "
                    f"-> {run_dir}; no final adapter: --resume continues from {checkpoint.name}")
            result = f"  checkpoint  {checkpoint}"
        else:
            head = f"[train] done: {last['step']} steps in {elapsed} -> {run_dir}"
            result = f"  adapter     {run_dir / 'adapter'}"
        lines = [
            head,
            f"  reward      first {k}: {avg('reward', records[:k]):.3f}   last {k}: {avg('reward', records[-k:]):.3f}",
            f"  format_ok   first: {first.get('format_ok', float('nan')):.2f}   last: {last.get('format_ok', float('nan')):.2f}",
            f"  kl (last)   {last.get('kl', 0.0):.4f}",
            *([f"  off-policy  {last['onpolicy_gap_over']} step(s) with sampler_logp_diff > "
               f"grpo.onpolicy_gap_warn={self.cfg.grpo.onpolicy_gap_warn}"] if last.get("onpolicy_gap_over") else []),
            "  time/step   " + ", ".join(
                f"{key[5:]} {avg(key, records):.2f}s" for key in ("time/generation", "time/reward", "time/learner", "time/sync")
                if key in last
            ),
            result,
            f"  plots       {run_dir / 'plots'}",
            f"  metrics     {run_dir / 'metrics.jsonl'}   (tensorboard --logdir {run_dir / 'tensorboard'})",
        ]
        return TrainSummary("\n".join(lines), interrupted)
