"""The main job: the whole recipe in one command.

    python -m rl.pipeline [--config configs/toy_pivot.yaml] [--run-name NAME] [--section.key value ...]
    python -m rl.pipeline --sweep reward.spec=chrf-format,bleu-format --seeds 0,1,2   # an experiment

The default recipe is the toy pivot world (configs/toy_pivot.yaml), where translating through
English is what makes the new direction solvable: it shows what the product is for, reasoning
beating direct translation with the same pairs. configs/toy.yaml (the two-language world, where
the base already translates directly) is the recipe GRPO's learning test runs.

toy world (built if missing) -> cold-start CoT SFT and the direct-SFT baseline (each
if its adapter is missing) -> GRPO -> evaluation on the held-out set of the base model
translating directly, the direct-SFT adapter, the CoT-SFT adapter and the GRPO adapter
-> one side-by-side comparison, printed at the end. R1-T1 judges itself the same way:
reasoning + RL against plain SFT on the same pairs.

With ``--sweep KEY=V1,V2`` (repeatable: a grid) and/or ``--seeds``, the RL stage runs once per
arm, every arm from the same cold start, and the comparison ends with each arm's chrF over its
seeds (rl/core/sweep.py).
"""
from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

from rl.core.config import Config, add_config_args, load_config
from rl.core.sweep import Arm, arm_setting, make_arms, parse_seeds
from rl.core.errors import run_cli
from rl.core.runs import EXIT_INTERRUPTED, prepare_run_dir

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "toy_pivot.yaml"
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
    parser.add_argument("--sweep", action="append", default=[], metavar="KEY=V1,V2",
                        help="train one arm per value of a config key (repeat for a grid), e.g. "
                             "--sweep grpo.algorithm=grpo,ppo or --sweep reward.spec=chrf-format,my_pkg.rewards:mine")
    parser.add_argument("--seeds", default=None, metavar="S1,S2",
                        help="train every arm with each of these seeds (default: the config's seed)")
    args, overrides = parser.parse_known_args(argv)
    cfg = load_config(args.config, overrides)
    arms = make_arms(args.config, overrides, args.sweep, parse_seeds(args.seeds, cfg.seed)) \
        if args.sweep or args.seeds else None  # every arm's config checked before anything runs
    for arm, arm_cfg in arms or ():
        check_reward(arm_cfg, arm.label)
    cfg.run_name = args.run_name or f"{cfg.run_name or 'grpo'}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = prepare_run_dir(cfg.output_dir, cfg.run_name)

    from rl.core import resolve
    from rl.learn.sft import SFTInterrupted, cold_start_adapter

    start = time.perf_counter()
    model_dir = resolve.model_path(cfg)  # builds the toy world on first use
    try:
        sft_adapter = cold_start_adapter(cfg)  # trains the cold start on first use
        direct = None if args.no_direct else direct_config(cfg)
        direct_adapter = _direct_adapter(direct) if direct is not None and sft_adapter else None
    except SFTInterrupted as exc:  # no cold-start adapter: GRPO must not start
        print(f"{exc}\n[pipeline] stopped: SFT was interrupted, nothing was trained further", file=sys.stderr)
        return EXIT_INTERRUPTED

    trained = train_arms(cfg, run_dir, arms, sft_adapter) if arms else train_one(cfg, run_dir)
    if trained is None:
        return EXIT_INTERRUPTED
    evaluations = list(trained)
    if sft_adapter:
        evaluations.insert(0, ("cot-sft", cfg, sft_adapter))
    if direct is not None:
        evaluations[:0] = [("base-direct", direct, None)] + ([("direct-sft", direct, direct_adapter)] if direct_adapter else [])
    report = evaluate_all(model_dir, evaluations, run_dir / "eval", arms=[label for label, _, _ in trained] if arms else None)
    print(f"\n[pipeline] finished in {time.perf_counter() - start:.0f}s")
    print(f"  run        {run_dir}")
    print(f"  plots      {run_dir / 'plots'}")
    print(f"  report     {report}")
    return 0


def check_reward(cfg: Config, arm: str) -> None:
    """A swept reward spec that names nothing fails now, naming its arm, not after the arms before it."""
    import rewards

    try:
        rewards.check_from_config(cfg.reward)
    except rewards.RewardSpecError as exc:
        raise rewards.RewardSpecError(f"sweep arm '{arm}': reward.spec: {exc}") from None


def train_one(cfg: Config, run_dir: Path) -> list[tuple[str, Config, str]] | None:
    """The RL stage of the plain main job; None when it was interrupted."""
    from rl.learn import trainer_for

    summary = trainer_for(cfg)(cfg, run_dir)
    print(summary)
    if summary.interrupted:  # no final adapter: evaluating the checkpoint's would report a half-trained run
        print(f"[pipeline] stopped: training was interrupted, nothing was evaluated. Continue it with "
              f"`python rl/train.py --output_dir {cfg.output_dir} --run-name {cfg.run_name} --resume`", file=sys.stderr)
        return None
    return [(cfg.grpo.algorithm, cfg, str(run_dir / "adapter"))]  # "grpo" or "ppo"


def train_arms(cfg: Config, run_dir: Path, arms: list[tuple[Arm, Config]], cold_start: str | None
               ) -> list[tuple[str, Config, str]] | None:
    """Each arm of a sweep from the same cold start (named by path, so no arm trains its own), in
    <run dir>/arms/<arm>/; None when one was interrupted (the arms before it are kept)."""
    from rl.learn import trainer_for

    print(f"[pipeline] sweep: {len(arms)} arms: " + "; ".join(arm.label for arm, _ in arms))
    trained = []
    for i, (arm, arm_cfg) in enumerate(arms, 1):
        arm_cfg.model.init_adapter = cold_start
        arm_cfg.output_dir, arm_cfg.run_name = str(run_dir / "arms"), arm.slug
        arm_dir = prepare_run_dir(arm_cfg.output_dir, arm.slug)
        print(f"\n[pipeline] arm {i}/{len(arms)}: {arm.label} -> {arm_dir}")
        summary = trainer_for(arm_cfg)(arm_cfg, arm_dir)  # an arm may sweep grpo.algorithm
        print(summary)
        if summary.interrupted:
            print(f"[pipeline] stopped in arm '{arm.label}': nothing was evaluated. Continue that arm with "
                  f"`python rl/train.py --output_dir {arm_cfg.output_dir} --run-name {arm.slug} --resume`",
                  file=sys.stderr)
            return None
        evaluated = copy.deepcopy(arm_cfg)
        evaluated.seed = cfg.seed  # every model decodes the held-out set alike; the seeds vary training
        trained.append((arm.label, evaluated, str(arm_dir / "adapter")))
    return trained


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


def evaluate_all(model_dir: str, evaluations: list[tuple[str, Config, str | None]], out: Path,
                 arms: list[str] | None = None) -> Path:
    """Evaluate each (label, config, adapter) on one shared engine, then compare them; with a
    sweep's ``arms`` (their labels), also their chrF over seeds."""
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
    if arms:
        table = over_seeds(cmp, arms)
        (out / "compare" / "sweep.md").write_text(table, encoding="utf-8")
        print(table)
    return out / "compare"


def over_seeds(cmp: dict, arms: list[str], baseline: str = "cot-sft") -> str:
    """Held-out chrF (mean of the directions) of each swept setting over its seeds: mean, sample
    standard deviation and every seed's value, and the gain over the cold start when it was
    evaluated. What a reward or algorithm experiment is read on."""
    import statistics

    labels, chrf = cmp["labels"], cmp["rows"]["avg:all"]["chrf"]
    base = chrf[labels.index(baseline)] if baseline in labels else None
    by_setting: dict[str, list[float]] = {}
    for label in arms:
        value = chrf[labels.index(label)]
        if value is not None:
            by_setting.setdefault(arm_setting(label), []).append(value)
    lines = [f"| arm | seeds | chrF mean | sd | per seed | gain over {baseline} |", "|---|---:|---:|---:|---|---:|"]
    for setting, values in by_setting.items():
        mean = statistics.fmean(values)
        sd = f"{statistics.stdev(values):.2f}" if len(values) > 1 else "–"
        gain = f"{mean - base:+.2f}" if base is not None else "–"
        lines.append(f"| {setting} | {len(values)} | {mean:.2f} | {sd} | {', '.join(f'{v:.2f}' for v in values)} | {gain} |")
    return "\n".join(lines) + "\n"


def side_by_side(cmp: dict) -> str:
    """One column per model, chrF / BLEU per direction and of the means (all; seen and unseen
    languages where both occur), then format failures and source coverage of the mean: the
    closing table of the main job (compare.md has every Δ)."""
    from rl.eval.report import display_row

    def cell(values: list, i: int, scale: float = 1.0) -> str:
        return "–" if values[i] is None else f"{values[i] * scale:.2f}"

    labels, rows = cmp["labels"], cmp["rows"]
    lines = ["| chrF / BLEU | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(labels)]
    means = {"avg:all"} | ({"avg:seen", "avg:unseen"} if "avg:unseen" in rows else set())  # x->en etc.: compare.md
    for row, vals in rows.items():
        if row.startswith("avg:") and row not in means:
            continue
        cells = [f"{cell(vals['chrf'], i)} / {cell(vals['bleu'], i)}" for i in range(len(labels))]
        lines.append(f"| {display_row(row)} | " + " | ".join(cells) + " |")
    mean = rows["avg:all"]
    for metric, name in (("format_failure_rate", "format failures %"), ("source_coverage", "source coverage %")):
        lines.append(f"| {name} | " + " | ".join(cell(mean[metric], i, 100) for i in range(len(labels))) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
