"""Seconds per GRPO step: our path (rl/learn/grpo.py: Ray/vLLM rollouts, adapter sync,
and on CPU the compact LM-head scoring of rl/learn/trl_bridge.py) against a plain TRL
GRPOTrainer with its built-in transformers generation, on the same model,
cold-start adapter, prompts, batch, sampling settings and reward.

    python -m rl.bench step [--config configs/toy.yaml] [--steps 8] [--rounds 2] [--section.key value ...]

The runs are measured in this process, one after the other (ours, plain TRL, and
again per round); the first step of each is a warm-up and is left out. The last
line printed is the ratio of the medians.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from rl.core.config import add_config_args, parse_cli

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "toy.yaml"


def ours(cfg, steps: int, out: Path) -> dict:
    from rl.learn.sft import cold_start_adapter
    from rl.learn.grpo import train
    from rl.core.runs import read_metrics

    cfg.model.init_adapter = cold_start_adapter(cfg)  # before output_dir moves: the same adapter as plain TRL's
    cfg.grpo.max_steps, cfg.grpo.save_steps, cfg.run_name, cfg.output_dir = steps, 10**6, "bench-ours", str(out)
    (out / "bench-ours").mkdir(parents=True)
    train(cfg, out / "bench-ours")
    records = read_metrics(out / "bench-ours")[1:]
    return {
        "step": statistics.median(r["time/step"] for r in records),
        **{k: statistics.median(r.get(f"time/{k}", 0.0) for r in records) for k in ("generation", "reward", "sync", "learner")},
        "completion_length": statistics.mean(r["completion_length"] for r in records),
    }


def plain_trl(cfg, steps: int, out: Path) -> dict:
    """TRL's own loop: GRPOTrainer without rollout_func generates with model.generate."""
    from transformers import AutoTokenizer, TrainerCallback
    from trl import GRPOTrainer

    from rewards import load_from_config
    from rl.core import resolve
    from rl.learn.sft import cold_start_adapter
    from rl.core.analytics import CotLabeler
    from rl.learn.grpo import StepStats, build_dataset, grpo_args, load_policy, make_reward_func
    from rl.learn.trl_bridge import score_only_completion_tokens_on_cpu, wrap_stage

    score_only_completion_tokens_on_cpu(enable=False)  # TRL as shipped (our run patched it in this process)
    model_dir, adapter = resolve.model_path(cfg), cold_start_adapter(cfg)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    dataset, templates = build_dataset(cfg, tokenizer)
    model, peft_config = load_policy(cfg, model_dir, adapter)
    stats = StepStats()
    args = grpo_args(cfg, out / "bench-trl", 1)
    args.max_steps, args.save_strategy, args.report_to = steps, "no", []
    reward_fn = make_reward_func(load_from_config(cfg.reward), cfg.prompt.think_prefill, stats, CotLabeler(templates))
    trainer = GRPOTrainer(model=model, reward_funcs=[reward_fn], args=args, train_dataset=dataset,
                          processing_class=tokenizer, peft_config=peft_config)
    times, lengths, generation = [], [], []

    def timed(generate):  # TRL's transformers generation of one step's completions
        def timed_generate(*args, **kwargs):
            start = time.perf_counter()
            result = generate(*args, **kwargs)
            generation.append(time.perf_counter() - start)
            return result

        return timed_generate

    wrap_stage(trainer, "generate", timed)

    class Timer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.t = time.perf_counter()

        def on_step_end(self, *a, **k):
            times.append(time.perf_counter() - self.t)

        def on_log(self, args, state, control, logs=None, **k):
            if logs and "completions/mean_length" in logs:
                lengths.append(logs["completions/mean_length"])

    trainer.add_callback(Timer())
    trainer.train()
    return {"step": statistics.median(times[1:]), "generation": statistics.median(generation[1:]),
            "completion_length": statistics.mean(lengths[1:] or lengths)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    parser.set_defaults(config=str(DEFAULT_CONFIG))
    parser.add_argument("--steps", type=int, default=8, help="steps per run; the first is a warm-up")
    parser.add_argument("--rounds", type=int, default=1,
                        help="alternate ours / plain TRL this many times (this machine's step times vary by ~15%%)")
    args, cfg = parse_cli(parser, argv)
    rows: list[tuple[str, dict]] = []
    with tempfile.TemporaryDirectory(prefix="bench-step-") as tmp:
        for r in range(args.rounds):
            rows.append(("ours", ours(parse_cli(parser, argv)[1], args.steps, Path(tmp) / f"ours-{r}")))
            rows.append(("plain TRL", plain_trl(parse_cli(parser, argv)[1], args.steps, Path(tmp) / f"trl-{r}")))
    print(f"batch: {cfg.grpo.prompts_per_step} prompts x {cfg.sampling.n} samples, max {cfg.sampling.max_tokens} new "
          f"tokens; median of steps 2-{args.steps}; importance-sampling correction "
          f"{'on' if cfg.grpo.importance_sampling_correction else 'off'} (plain TRL has none)")
    for name, m in rows:
        split = (f"generation {m['generation']:.2f}, reward {m['reward']:.2f}, sync {m['sync']:.2f}, learner {m['learner']:.2f}"
                 if name == "ours" else f"generation {m['generation']:.2f}, rest {m['step'] - m['generation']:.2f}")
        print(f"{name:<10}: {m['step']:.2f} s/step ({split}); mean completion {m['completion_length']:.1f} tokens")
    ours_s = statistics.median(m["step"] for name, m in rows if name == "ours")
    trl_s = statistics.median(m["step"] for name, m in rows if name == "plain TRL")
    print(f"speedup (plain TRL s/step / ours s/step, medians over {args.rounds} round(s)): {trl_s / ours_s:.2f}x")
    return 0


if __name__ == "__main__":
    main()
