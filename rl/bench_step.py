"""Seconds per GRPO step: our path (Ray/vLLM rollouts + adapter sync) against a
plain TRL GRPOTrainer with its built-in transformers generation, on the same
model, cold-start adapter, prompts, batch, sampling settings and reward.

    python -m rl.bench step [--config configs/toy.yaml] [--steps 6] [--section.key value ...]

Both runs are measured in this process, one after the other; the first step of
each is a warm-up and is left out. The last line printed is the ratio.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from rl.config import add_config_args, parse_cli

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "toy.yaml"


def ours(cfg, steps: int, out: Path) -> dict:
    from rl.grpo import train
    from rl.runs import read_metrics

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
    from rl import inputs
    from rl.analytics import CotLabeler
    from rl.grpo import StepStats, build_dataset, grpo_args, load_policy, make_reward_func

    model_dir, adapter = inputs.model_path(cfg), inputs.init_adapter(cfg)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    dataset, templates = build_dataset(cfg, tokenizer)
    model, peft_config = load_policy(cfg, model_dir, adapter)
    stats = StepStats()
    args = grpo_args(cfg, out / "bench-trl", 1)
    args.max_steps, args.save_strategy, args.report_to = steps, "no", []
    reward_fn = make_reward_func(load_from_config(cfg.reward), cfg.prompt.think_prefill, stats, CotLabeler(templates))
    trainer = GRPOTrainer(model=model, reward_funcs=[reward_fn], args=args, train_dataset=dataset,
                          processing_class=tokenizer, peft_config=peft_config)
    times, lengths = [], []

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
    return {"step": statistics.median(times[1:]), "completion_length": statistics.mean(lengths[1:] or lengths)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    parser.set_defaults(config=str(DEFAULT_CONFIG))
    parser.add_argument("--steps", type=int, default=6)
    args, cfg = parse_cli(parser, argv)
    # fp32 generation on both sides keeps the comparison about the engines, not the dtype
    with tempfile.TemporaryDirectory(prefix="bench-step-") as tmp:
        a = ours(cfg, args.steps, Path(tmp))
        args2, cfg2 = parse_cli(parser, argv)
        b = plain_trl(cfg2, args.steps, Path(tmp))
    print(f"batch: {cfg.grpo.prompts_per_step} prompts x {cfg.sampling.n} samples, max {cfg.sampling.max_tokens} new tokens")
    print(f"ours      : {a['step']:.2f} s/step (generation {a['generation']:.2f}, reward {a['reward']:.2f}, "
          f"sync {a['sync']:.2f}, learner {a['learner']:.2f}); mean completion {a['completion_length']:.1f} tokens")
    print(f"plain TRL : {b['step']:.2f} s/step; mean completion {b['completion_length']:.1f} tokens")
    print(f"speedup (plain TRL s/step / ours s/step): {b['step'] / a['step']:.2f}x")
    return 0


if __name__ == "__main__":
    main()
