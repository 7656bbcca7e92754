"""Run directories: ``runs/<name>/`` with the resolved config, metrics.jsonl,
TensorBoard logs, adapter checkpoints and PNG plots.

A run directory is never silently overwritten: ``--resume`` continues it,
``--overwrite`` moves the old one aside (``<name>.old-<timestamp>``) rather than
deleting it, so nothing already written is lost.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from rl.config import Config, save_config


class RunDirError(RuntimeError):
    """The run directory exists (and neither --resume nor --overwrite was given), is not
    resumable, or its name is not a plain directory name."""


CHECKPOINT_FILES = ("trainer_state.json", "adapter_model.safetensors")  # Trainer writes the state last


def run_name(cfg: Config, default: str) -> str:
    return cfg.run_name or default


def prepare_run_dir(output_dir: str | Path, name: str, resume: bool = False, overwrite: bool = False) -> Path:
    """Create ``output_dir/name`` or, with resume, check it can be continued."""
    if resume and overwrite:
        raise RunDirError("--resume and --overwrite exclude each other")
    check_run_name(name)
    run_dir = Path(output_dir) / name
    if run_dir.exists() and any(run_dir.iterdir()):
        if resume:
            return run_dir
        if not _training_started(run_dir):
            print(f"[runs] reusing {run_dir}: no training output there (only config.yaml/empty dirs of a failed start)")
            return run_dir
        if not overwrite:
            raise RunDirError(
                f"run directory {run_dir} already exists; pass --resume to continue it, "
                f"--overwrite to start over (the old one is kept as {name}.old-<time>), or --run-name NEW"
            )
        aside = run_dir.with_name(f"{name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
        run_dir.rename(aside)
        print(f"[runs] moved the existing {run_dir} to {aside}")
    elif resume:
        raise RunDirError(f"--resume: run directory {run_dir} does not exist or is empty")
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def _training_started(run_dir: Path) -> bool:
    """A run exists once it wrote anything but its config: ``train()`` writes config.yaml
    (and makes empty dirs such as adapter_sync/) before the engine and trainer start, so a
    start-up failure (bad flag value, engine error) must not block the corrected command."""
    config = run_dir / "config.yaml"
    return any(p != config and (p.is_symlink() or not p.is_dir()) for p in run_dir.rglob("*"))


def check_run_name(name: str) -> None:
    """A run name is one plain directory under output_dir. ``.`` or ``..`` is
    output_dir itself (or its parent), so ``--overwrite`` would move every run
    aside; a ``/`` or leading ``.`` escapes it or hides the run."""
    if not isinstance(name, str) or name.strip() in ("", ".", ".."):
        raise RunDirError(f"run name {name!r} is not a directory name; pass --run-name NAME")
    if "/" in name or "\\" in name or name.startswith("."):
        raise RunDirError(f"run name {name!r} must not contain '/' or '\\' nor start with '.'; "
                          f"pass a plain name such as --run-name my-run")


def write_resolved_config(cfg: Config, run_dir: Path) -> None:
    save_config(cfg, run_dir / "config.yaml")


def last_checkpoint(run_dir: Path) -> Path | None:
    """Newest complete ``checkpoints/checkpoint-<step>`` (HF Trainer layout), or None.
    A crash while checkpointing (full disk, kill) leaves a partial directory that
    ``--resume`` would then crash on; those are skipped with a warning."""
    ckpts = sorted(
        (p for p in (run_dir / "checkpoints").glob("checkpoint-*") if p.name.split("-")[-1].isdigit()),
        key=lambda p: int(p.name.split("-")[-1]),
    )
    for ckpt in reversed(ckpts):
        missing = [f for f in CHECKPOINT_FILES if not (ckpt / f).is_file()]
        if not missing:
            return ckpt
        print(f"[runs] warning: skipping incomplete checkpoint {ckpt} (no {', '.join(missing)}; "
              f"interrupted while saving?)")
    return None


class MetricsLog:
    """Appends one JSON object per step to metrics.jsonl; on resume, drops lines past ``keep_until_step``."""

    def __init__(self, path: Path, keep_until_step: int | None = None):
        self.path = path
        if keep_until_step is not None and path.exists():
            kept = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= keep_until_step]
            path.write_text("".join(line + "\n" for line in kept))

    def write(self, record: dict[str, Any]) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def plot_run(run_dir: str | Path) -> list[Path]:
    """Write PNG curves of metrics.jsonl into ``run_dir/plots``; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    records = read_metrics(run_dir)
    if not records:
        return []
    out = run_dir / "plots"
    out.mkdir(exist_ok=True)
    steps = [r["step"] for r in records]
    written = []

    groups = {
        "reward.png": [k for k in records[-1] if k == "reward" or k.startswith("reward/")],
        "training.png": [k for k in ("kl", "entropy", "completion_length", "format_ok") if k in records[-1]],
        "time.png": [k for k in records[-1] if k.startswith("time/")],
        "cot_templates.png": [k for k in records[-1] if k.startswith("cot/")],
    }
    for filename, keys in groups.items():
        if not keys:
            continue
        fig, axes = plt.subplots(len(keys), 1, figsize=(7, 2.2 * len(keys)), sharex=True, squeeze=False)
        for ax, key in zip(axes[:, 0], keys):
            ax.plot(steps, [r.get(key) for r in records], marker=".", linewidth=1)
            ax.set_ylabel(key, fontsize=8)
            ax.grid(alpha=0.3)
        axes[-1, 0].set_xlabel("step")
        fig.suptitle(f"{run_dir.name}: {filename[:-4]}")
        fig.tight_layout()
        fig.savefig(out / filename, dpi=90)
        plt.close(fig)
        written.append(out / filename)
    return written


if __name__ == "__main__":  # python -m rl.runs RUN_DIR: redraw the plots on demand
    import sys

    for run in sys.argv[1:]:
        for file in plot_run(run):
            print(file)


def save_adapter(peft_model, path: str | Path) -> None:
    """Save only the policy's LoRA weights ("default"; not TRL's frozen "ref" copy).
    ``save_embedding_layers=False``: PEFT otherwise adds the full (tied) embedding
    and lm_head matrices for some models, which vLLM rejects as LoRA weights."""
    peft_model.save_pretrained(str(path), selected_adapters=["default"], save_embedding_layers=False)
