"""The main job: the whole recipe in one command.

    python -m rl.pipeline [--config configs/toy.yaml] [--run-name NAME] [--section.key value ...]

toy world (built if missing) -> cold-start SFT (if its adapter is missing) ->
GRPO -> evaluation of the SFT-only and the GRPO adapters on the held-out set ->
side-by-side comparison. Prints where the report and plots are.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from rl.config import ConfigError, add_config_args, parse_cli
from rl.runs import RunDirError, prepare_run_dir

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "toy.yaml"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    parser.set_defaults(config=str(DEFAULT_CONFIG))
    parser.add_argument("--run-name", default=None, help="default: <config run_name>-<timestamp>")
    try:
        args, cfg = parse_cli(parser, argv)
        cfg.run_name = args.run_name or f"{cfg.run_name or 'grpo'}-{time.strftime('%Y%m%d-%H%M%S')}"
        run_dir = prepare_run_dir(cfg.output_dir, cfg.run_name)
    except (ConfigError, RunDirError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    from rl import inputs
    from rl.compare import main as compare_main
    from rl.evaluate import main as evaluate_main
    from rl.grpo import train

    start = time.perf_counter()
    model_dir = inputs.model_path(cfg)  # builds the toy world on first use
    sft_adapter = inputs.init_adapter(cfg)  # trains the cold start on first use
    print(train(cfg, run_dir))

    evals = run_dir / "eval"
    common = ["--config", args.config, "--model", model_dir]
    passthrough = _eval_overrides(argv if argv is not None else sys.argv[1:])
    results = []
    for label, adapter in (("sft", sft_adapter), ("grpo", str(run_dir / "adapter"))):
        if adapter is None:
            continue
        out = evals / label
        if evaluate_main([*common, "--adapter", adapter, "--out", str(out), *passthrough]) != 0:
            return 2
        results.append(str(out))
    if compare_main([*results, "--out", str(evals / "compare")]) != 0:
        return 2
    print(f"\n[pipeline] finished in {time.perf_counter() - start:.0f}s")
    print(f"  run        {run_dir}")
    print(f"  plots      {run_dir / 'plots'}")
    print(f"  report     {evals / 'compare'}")
    return 0


def _eval_overrides(argv: list[str]) -> list[str]:
    """The ``--eval.key value`` pairs of the command line, passed on to rl.evaluate."""
    out, i = [], 0
    while i < len(argv):
        if argv[i].startswith("--eval."):
            take = 1 if "=" in argv[i] else 2
            out += argv[i : i + take]
            i += take
        else:
            i += 1
    return out


if __name__ == "__main__":
    sys.exit(main())
