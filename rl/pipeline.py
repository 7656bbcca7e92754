"""The main job: the whole recipe in one command.

    python -m rl.pipeline [--config configs/toy.yaml] [--run-name NAME] [--section.key value ...]

toy world (built if missing) -> cold-start CoT SFT and the direct-SFT baseline (each
if its adapter is missing) -> GRPO -> evaluation on the held-out set of the base model
translating directly, the direct-SFT adapter, the CoT-SFT adapter and the GRPO adapter
-> one side-by-side comparison, printed at the end. R1-T1 judges itself the same way:
reasoning + RL against plain SFT on the same pairs.
"""
from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

from rl.core.config import Config, add_config_args, parse_cli
from rl.core.errors import run_cli
from rl.core.runs import EXIT_INTERRUPTED, prepare_run_dir

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "toy.yaml"
PIPELINE_METRICS = ["chrf", "bleu", "format_failure_rate", "source_coverage"]  # R1-T1's gains are read on chrF
DIRECT_SUFFIX = "-direct"  # runs/<sft.run_name>-direct: the direct-SFT baseline's adapter


def direct_config(cfg: Config) -> Config:
    """The same config asking for direct translations (no CoT), and its own SFT run."""
    direct = copy.deepcopy(cfg)
    direct.prompt.style = "direct"
    direct.sft.run_name = cfg.sft.run_name + DIRECT_SUFFIX
    return direct


@run_cli
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    parser.set_defaults(config=str(DEFAULT_CONFIG))
    parser.add_argument("--run-name", default=None, help="default: <config run_name>-<timestamp>")
    parser.add_argument("--no-direct", action="store_true", help="skip the direct-translation baselines")
    args, cfg = parse_cli(parser, argv)
    cfg.run_name = args.run_name or f"{cfg.run_name or 'grpo'}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = prepare_run_dir(cfg.output_dir, cfg.run_name)

    from rl.core import resolve
    from rl.learn import grpo, ppo
    from rl.learn.sft import SFTInterrupted, cold_start_adapter

    train = ppo.train if cfg.grpo.algorithm == "ppo" else grpo.train  # grpo.algorithm picks the learner

    start = time.perf_counter()
    model_dir = resolve.model_path(cfg)  # builds the toy world on first use
    try:
        sft_adapter = cold_start_adapter(cfg)  # trains the cold start on first use
        direct = None if args.no_direct else direct_config(cfg)
        direct_adapter = _direct_adapter(direct) if direct is not None and sft_adapter else None
    except SFTInterrupted as exc:  # no cold-start adapter: GRPO must not start
        print(f"{exc}\n[pipeline] stopped: SFT was interrupted, nothing was trained further", file=sys.stderr)
        return EXIT_INTERRUPTED
    summary = train(cfg, run_dir)
    print(summary)
    if summary.interrupted:  # no final adapter: evaluating the checkpoint's would report a half-trained run
        print(f"[pipeline] stopped: GRPO was interrupted, nothing was evaluated. Continue it with "
              f"`python rl/train.py --output_dir {cfg.output_dir} --run-name {cfg.run_name} --resume`", file=sys.stderr)
        return EXIT_INTERRUPTED

    evaluations = [(cfg.grpo.algorithm, cfg, str(run_dir / "adapter"))]  # "grpo" or "ppo"
    if sft_adapter:
        evaluations.insert(0, ("cot-sft", cfg, sft_adapter))
    if direct is not None:
        evaluations[:0] = [("base-direct", direct, None)] + ([("direct-sft", direct, direct_adapter)] if direct_adapter else [])
    report = evaluate_all(model_dir, evaluations, run_dir / "eval")
    print(f"\n[pipeline] finished in {time.perf_counter() - start:.0f}s")
    print(f"  run        {run_dir}")
    print(f"  plots      {run_dir / 'plots'}")
    print(f"  report     {report}")
    return 0


def _direct_adapter(direct: Config) -> str | None:
    """The direct-SFT baseline's adapter: trained here for the toy world (as the CoT cold
    start is), else used when ``rl/sft.py --prompt.style direct`` has made it."""
    from rl.core import resolve
    from rl.learn.sft import cold_start_adapter

    if direct.model.init_adapter != "auto":  # a cold start named by path has no direct twin to find
        print("[pipeline] notice: model.init_adapter names an adapter, so there is no direct-SFT baseline to compare")
        return None
    if direct.model.name_or_path == "toy" or (resolve.sft_adapter_dir(direct) / "adapter_config.json").is_file():
        return cold_start_adapter(direct)
    print(f"[pipeline] notice: no direct-SFT adapter at {resolve.sft_adapter_dir(direct)}; train one with "
          f"`rl/sft.py --config X --prompt.style direct --sft.run_name {direct.sft.run_name}` to compare against it")
    return None


def evaluate_all(model_dir: str, evaluations: list[tuple[str, Config, str | None]], out: Path) -> Path:
    """Evaluate each (label, config, adapter) on one shared engine, then compare them."""
    from rl.eval.compare import compare
    from rl.eval.evaluate import evaluate
    from rl.rollout import make_rollout_engine

    first = evaluations[0][1]
    engine = make_rollout_engine(model_dir, first.rollout, first.lora, seed=first.seed)
    try:
        paths = []
        for label, cfg, adapter in evaluations:
            print(f"\n[pipeline] evaluating {label}")
            evaluate(cfg, adapter=adapter, out=out / label, engine=engine, progress=True)
            paths.append(out / label)
    finally:
        engine.shutdown()
    cmp = compare(paths, out / "compare", metrics=PIPELINE_METRICS, labels=[label for label, _, _ in evaluations])
    print("\n" + side_by_side(cmp))
    return out / "compare"


def side_by_side(cmp: dict) -> str:
    """One column per model, chrF / BLEU per direction, then format failures and source
    coverage of the mean: the closing table of the main job (compare.md has every Δ)."""
    from rl.eval.report import display_row

    def cell(values: list, i: int, scale: float = 1.0) -> str:
        return "–" if values[i] is None else f"{values[i] * scale:.2f}"

    labels, rows = cmp["labels"], cmp["rows"]
    lines = ["| chrF / BLEU | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(labels)]
    for row, vals in rows.items():
        if row.startswith("avg:") and row != "avg:all":
            continue
        cells = [f"{cell(vals['chrf'], i)} / {cell(vals['bleu'], i)}" for i in range(len(labels))]
        lines.append(f"| {display_row(row)} | " + " | ".join(cells) + " |")
    mean = rows["avg:all"]
    for metric, name in (("format_failure_rate", "format failures %"), ("source_coverage", "source coverage %")):
        lines.append(f"| {name} | " + " | ".join(cell(mean[metric], i, 100) for i in range(len(labels))) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
