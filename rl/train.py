"""GRPO or PPO training of a LoRA adapter with rollouts from the Ray/vLLM pool.

    accelerate launch rl/train.py --config configs/toy.yaml [--grpo.max_steps 20 ...]
    python rl/train.py --config configs/toy.yaml --run-name my-run [--resume | --overwrite | --dry-run]

TRL's GRPOTrainer does the GRPO math (advantages, clipping, KL, loss types,
importance sampling); this file wires it to our parts:
  config -> data -> prompts -> rollouts (rollout_func) -> rewards -> learner -> adapter sync.
``grpo.algorithm: ppo`` swaps the learner for PPO (rl/learn/ppo.py: a LoRA critic on the
same base, token-level GAE) and keeps every other part.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

if __package__ in (None, ""):  # `python rl/train.py` / `accelerate launch rl/train.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rl.core.config import Config, add_config_args, load_config, parse_cli  # noqa: E402
from rl.core.errors import run_cli  # noqa: E402
from rl.core.runs import EXIT_INTERRUPTED, prepare_run_dir, resume_config  # noqa: E402


def build_arg_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="GRPO or PPO (grpo.algorithm; TRL) + LoRA training for reasoning translation. "
        "Any other --section.key value pair overrides the config.",
    )
    add_config_args(parser)
    parser.add_argument("--run-name", default=None, help="runs/<name>/ (default: run_name from the config)")
    parser.add_argument("--resume", action="store_true", help="continue the run from its last checkpoint")
    parser.add_argument("--overwrite", action="store_true", help="start over; the old run dir is moved aside")
    parser.add_argument("--dry-run", action="store_true", help="validate, print the plan and memory estimate, exit")
    return parser


@run_cli
def main(argv: list[str] | None = None) -> int:
    parser = build_arg_parser()
    args, cfg = parse_cli(parser, argv)
    if args.run_name:
        cfg.run_name = args.run_name
    cfg.run_name = cfg.run_name or cfg.grpo.algorithm
    if args.dry_run:
        from rl.tools.plan import print_plan

        return print_plan(cfg)
    is_main = int(os.environ.get("RANK", "0")) == 0
    if is_main:
        run_dir = prepare_run_dir(cfg.output_dir, cfg.run_name, resume=args.resume, overwrite=args.overwrite)
    else:
        run_dir = Path(cfg.output_dir) / cfg.run_name
    if args.resume:  # every rank: rank 0's train() rewrites config.yaml only after a barrier
        cfg = _resumed_config(parser, argv, cfg, run_dir)

    from rl.learn import trainer_for

    summary = trainer_for(cfg)(cfg, run_dir, resume=args.resume)  # bad input: run_cli prints one line, no traceback
    if is_main:
        print(summary)
    return EXIT_INTERRUPTED if summary.interrupted else 0


def _resumed_config(parser: argparse.ArgumentParser, argv: list[str] | None, cfg: Config, run_dir: Path) -> Config:
    """--resume continues the run's own experiment: its config.yaml, with only the
    command line's safe changes (rl/core/runs.py: resume_config). Without --config that
    config.yaml is also the base the overrides apply to, so
    ``rl/train.py --run-name NAME --resume`` needs nothing else."""
    saved_path = run_dir / "config.yaml"
    if not saved_path.is_file():  # a start that failed before train() wrote it: nothing to hold to
        return cfg
    saved = load_config(saved_path)
    args, overrides = parser.parse_known_args(argv)
    requested = cfg
    if args.config is None:
        requested = load_config(saved_path, overrides)
        requested.run_name, requested.output_dir = cfg.run_name, cfg.output_dir  # the run dir found above
    return resume_config(saved, requested)


if __name__ == "__main__":
    sys.exit(main())
