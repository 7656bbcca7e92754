"""Run directories: ``runs/<name>/`` with the resolved config, metrics.jsonl,
TensorBoard logs, adapter checkpoints and PNG plots.

A run directory is never silently overwritten: ``--resume`` continues it,
``--overwrite`` moves the old one aside (``<name>.old-<timestamp>``) rather than
deleting it, so nothing already written is lost.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from rl.core.config import Config, ConfigError, save_config
from rl.core.errors import UserError


class RunDirError(UserError, RuntimeError):
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
    check_writable(run_dir)
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


def check_writable(run_dir: str | Path) -> None:
    """A run must be able to write its directory: create (and remove) a probe directory in the
    nearest existing one of ``run_dir`` and its parents. A real write, not a permission-bit test,
    so read-only mounts fail too, for root as for anyone. The dry run calls this as well."""
    run_dir = Path(run_dir).expanduser()
    existing = run_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise RunDirError(f"output_dir: cannot create {run_dir}: {existing} is not a directory")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".write-probe-", dir=existing))
    except OSError as exc:
        raise RunDirError(f"output_dir: cannot write {run_dir}: {existing} is not writable ({exc.strerror}); "
                          "choose another --output_dir") from None


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


# Keys a resumed run may take from the command line: where and how long it runs, not
# what it learns. Placement and engine knobs (the pool, its memory, eager mode), the
# machine it is planned for, evaluation settings (training never reads them), COMET's
# batch/GPU placement, gradient checkpointing (same numbers, less memory), how long
# it trains and how often it saves, and when the on-policy check warns. "x.*" allows every key of section x.
RESUME_SAFE_KEYS = (
    "run_name", "output_dir",
    "grpo.max_steps", "grpo.gradient_checkpointing", "grpo.onpolicy_gap_warn",  # not save_steps: transformers keeps the checkpoint's
    "rollout.ray_address", "rollout.num_workers", "rollout.max_num_seqs", "rollout.enforce_eager",
    "rollout.cpu_kv_cache_gb", "rollout.gpus_per_worker", "rollout.cpus_per_worker",
    "rollout.gpu_memory_utilization", "rollout.max_failures", "rollout.generation_timeout_s",
    "reward.comet_batch_size", "reward.comet_gpus",
    "hardware.*", "eval.*", "synth.*",  # synth: only rl/synth.py reads it
)


def resume_config(saved: Config, requested: Config) -> Config:
    """The config a ``--resume`` continues with: the run's own (``saved``, its
    config.yaml) with the command line's changes to RESUME_SAFE_KEYS applied. Any other
    change (reward, init adapter, batch size, seed, ...) would silently make the
    checkpoint's run a different experiment, so it raises ConfigError naming each key."""
    changed = changed_keys(saved, requested)
    refused = [key for key in changed if not _resume_safe(key)]
    if refused:
        details = "; ".join(f"{key}: {_value(saved, key)!r} in the run, {_value(requested, key)!r} now" for key in refused)
        raise ConfigError(
            f"--resume would change what the run learns: {details}. Resume with the run's own values "
            f"(drop those overrides, or leave out --config: the run's config.yaml is then the base), or start "
            f"a new run (--run-name NEW, or --overwrite). On resume only these may change: {', '.join(RESUME_SAFE_KEYS)}"
        )
    merged = copy.deepcopy(saved)
    for key in changed:
        _set_value(merged, key, copy.deepcopy(_value(requested, key)))
    return merged


def changed_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two configs (sections are recursed
    into; a dict- or list-valued key such as reward.spec is compared whole)."""
    keys = []
    for f in dataclasses.fields(old):
        a, b = getattr(old, f.name), getattr(new, f.name)
        if dataclasses.is_dataclass(a):
            keys += changed_keys(a, b, f"{prefix}{f.name}.")
        elif a != b:
            keys.append(prefix + f.name)
    return keys


def _resume_safe(key: str) -> bool:
    return key in RESUME_SAFE_KEYS or f"{key.split('.')[0]}.*" in RESUME_SAFE_KEYS


def _value(cfg: Any, key: str) -> Any:
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


def _set_value(cfg: Any, key: str, value: Any) -> None:
    *sections, name = key.split(".")
    setattr(_value(cfg, ".".join(sections)) if sections else cfg, name, value)


EXIT_INTERRUPTED = 130  # the shell's code for a process stopped by SIGINT (Ctrl-C)


class TrainSummary(str):
    """What ``rl.learn.grpo.train`` returns: the printable summary (a str, as before), and
    ``interrupted``: Ctrl-C stopped the run before its last step. There is then no
    final adapter/, only the checkpoint ``--resume`` continues, so a caller must not
    go on as if training had finished (rl/train.py and rl/pipeline.py exit 130)."""

    interrupted: bool

    def __new__(cls, text: str, interrupted: bool = False) -> TrainSummary:
        summary = super().__new__(cls, text)
        summary.interrupted = interrupted
        return summary


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


# PPO's learner figures (rl/learn/ppo.py), one panel each in plots/ppo.png when metrics.jsonl has them
PPO_PLOT_KEYS = ("value_loss", "explained_variance", "value_mean", "return_mean", "policy_clipfrac",
                 "value_clipfrac", "advantage_mean", "advantage_std", "kl_penalty", "kl_sequence", "beta")


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
        "ppo.png": [k for k in PPO_PLOT_KEYS if k in records[-1]],  # only PPO runs log these
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


if __name__ == "__main__":  # python -m rl.core.runs RUN_DIR: redraw the plots on demand
    import sys

    for run in sys.argv[1:]:
        for file in plot_run(run):
            print(file)


def save_adapter(peft_model, path: str | Path, *, model_card: bool = True) -> None:
    """Save only the policy's LoRA weights ("default"; not TRL's frozen "ref" copy).
    ``save_embedding_layers=False``: PEFT otherwise adds the full (tied) embedding
    and lm_head matrices for some models, which vLLM rejects as LoRA weights.
    ``model_card=False`` (the per-step push to the rollout workers, which read only the
    config and weights): no README.md. PEFT renders it from a Jinja template on every save:
    16 of a toy save's 22 ms in a profile, where the whole push (save, then two workers load) took 24."""
    if not model_card:
        peft_model.create_or_update_model_card = lambda output_dir: None  # shadows PEFT's method on this instance
    try:
        peft_model.save_pretrained(str(path), selected_adapters=["default"], save_embedding_layers=False)
    finally:
        if not model_card:
            del peft_model.create_or_update_model_card
