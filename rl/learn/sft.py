"""Cold-start SFT: teach the six CoT templates and the R1-T1 output format with
TRL's SFTTrainer + LoRA, before GRPO starts from the resulting adapter.

    python rl/sft.py --config configs/toy.yaml [--sft.max_steps 100 ...]

CoT data is JSONL, one object per line: src_lang, tgt_lang, source, reference,
template (one of the six names), completion (``<think>...</think><answer>...</answer>``),
optional id and context (rl/synth.py writes such files). R1-T1's released corpus (a JSON list of
instruction, input, source_lang, target_lang, target_text, thought_chains, output) is read as it is.
The prompt is built exactly as GRPO builds it, with the example's own template, so the cold
start and RL see the same prompts.

With ``prompt.style=direct`` the same file trains the direct-translation baseline:
plain prompts, the reference as the completion, the same pairs and step budget.

Runs resume like GRPO training (rl/train.py): a checkpoint every ``sft.save_steps``
steps; ``--resume`` continues the last complete one with the run's own config.yaml
(rl/core/runs.py: resume_config); Ctrl-C saves a checkpoint, writes no ``adapter/`` and
exits 130; a finished run's ``adapter/`` is only replaced with ``--overwrite``.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

from rl.core.config import Config, ConfigError, add_config_args, load_config, parse_cli, torch_dtype
from rl.core.errors import run_cli
from rl.core.providers import is_provided
from rl.core.runs import (
    EXIT_INTERRUPTED, RunDirError, last_checkpoint, prepare_run_dir, resume_config, save_adapter,
    write_resolved_config,
)

REQUIRED_KEYS = ("src_lang", "tgt_lang", "source", "reference", "template", "completion")


def load_cot_jsonl(path: str | Path, template_names: set[str]) -> list[dict]:
    """Read and validate CoT SFT data; errors name the file, line and key. R1-T1's released
    corpus (its data/CoT_data.json) is read too, and mapped to these rows: :func:`load_r1t1_cot`."""
    from rl.core.data import lang_field, read_text
    from rl.core.parsing import parse_completion

    rows = []
    text = read_text(Path(path)).removeprefix("\ufeff")  # bytes that are not UTF-8: a DataError naming file:line
    records = r1t1_records(text)
    if records is not None:
        return load_r1t1_cot(path, records)
    for lineno, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}:{lineno}: not valid JSON: {exc}") from exc
        if not isinstance(row, dict):
            raise ConfigError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
        missing = [k for k in REQUIRED_KEYS if not isinstance(row.get(k), str)]
        if missing:
            raise ConfigError(f"{path}:{lineno}: missing or non-string key(s) {missing}")
        for key in ("src_lang", "tgt_lang"):  # an unknown code would fail later, without file or line
            lang_field(row, key, f"{path}:{lineno}")
        if row["template"] not in template_names:
            raise ConfigError(f"{path}:{lineno}: template '{row['template']}' not in {sorted(template_names)}")
        parsed = parse_completion(row["completion"])
        if not parsed.ok:
            raise ConfigError(f"{path}:{lineno}: completion is not in the R1-T1 format: {parsed.error}")
        rows.append(row)
    if not rows:
        raise ConfigError(f"{path}: no CoT examples")
    return rows


R1T1_KEYS = ("input", "source_lang", "target_lang", "target_text", "output")  # + instruction, thought_chains


def r1t1_records(text: str) -> list | None:
    """The records of R1-T1's format, else None: a JSON list (its CoT_data.json), or JSONL whose first
    object has R1-T1's keys (``target_text``) rather than ours (``completion``). Anything else is read
    as our JSONL, whose reader names the bad line."""
    head = text.lstrip()
    try:
        if head.startswith("["):
            records = json.loads(head)
            return records if isinstance(records, list) else None
        first = json.loads(head.split("\n", 1)[0]) if head else None
        if isinstance(first, dict) and "completion" not in first and "target_text" in first:
            return [json.loads(line) for line in text.split("\n") if line.strip()]
    except json.JSONDecodeError:
        return None
    return None


def load_r1t1_cot(path: str | Path, records: list) -> list[dict]:
    """R1-T1's released CoT corpus (superboom/R1-T1 data/CoT_data.json) as our rows: source=input,
    reference=target_text, languages by name ("Chinese", "French") through rl.core.languages, and the
    completion from ``output``, which there holds the whole ``<think>...</think><answer>...</answer>``
    (whitespace around the tags is dropped). An ``output`` without tags is the bare translation: the
    completion is then ``thought_chains`` (the template's steps) as the reasoning + ``output`` as the answer.
    The corpus names no template (``thought_chains`` spells the steps out instead), so ``template`` is None
    and the prompt names none. Errors name the file and the 0-based record index."""
    from rl.core.languages import resolve_language
    from rl.core.parsing import TAGS, parse_completion

    rows = []
    for i, rec in enumerate(records):
        where = f"{path}: record {i}"
        if not isinstance(rec, dict):
            raise ConfigError(f"{where}: expected a JSON object, got {type(rec).__name__}")
        missing = [k for k in R1T1_KEYS if not isinstance(rec.get(k), str) or not rec[k].strip()]
        if missing:
            raise ConfigError(f"{where}: missing, empty or non-string key(s) {missing} (R1-T1 CoT corpus format)")
        langs = {}
        for key in ("source_lang", "target_lang"):
            try:
                langs[key] = resolve_language(rec[key]).flores200
            except ValueError as exc:
                raise ConfigError(f"{where}: {key} {rec[key]!r}: {exc}") from None
        output = rec["output"]
        parsed = parse_completion(output)
        if parsed.ok:
            completion = f"<think>{parsed.think}</think><answer>{parsed.answer}</answer>"
        elif not any(tag in output for tag in TAGS) and isinstance(rec.get("thought_chains"), str) and rec["thought_chains"].strip():
            completion = f"<think>{rec['thought_chains'].strip()}</think><answer>{output.strip()}</answer>"
        else:
            raise ConfigError(f"{where}: output is not in the R1-T1 format: {parsed.error}")
        rows.append({"id": str(rec.get("id", f"{Path(path).stem}.{i}")), "src_lang": langs["source_lang"],
                     "tgt_lang": langs["target_lang"], "source": rec["input"], "reference": rec["target_text"],
                     "template": None, "completion": completion})
    if not rows:
        raise ConfigError(f"{path}: no CoT examples")
    return rows


def build_sft_dataset(cfg: Config, tokenizer, data_path: str | Path, extra_pairs: str | Path | None = None):
    """Prompt/completion records of a CoT JSONL. ``extra_pairs`` (direct style only): a pairs
    JSONL whose references are added as completions, e.g. the toy world's RL split, so the
    direct baseline trains on every pair the CoT side sees."""
    from dataclasses import replace

    from datasets import Dataset

    from rl.core.data import Example, load_jsonl
    from rl.core.prompts import load_templates, prompt_for_example

    templates = load_templates(cfg.prompt.templates_dir)
    records = []
    for i, row in enumerate(load_cot_jsonl(data_path, set(templates))):
        ex = Example(
            id=row.get("id", str(i)), src_lang=row["src_lang"], tgt_lang=row["tgt_lang"],
            source=row["source"], reference=row["reference"], context=row.get("context"),
        )
        if row["template"] is None:  # R1-T1's corpus names none: neither does the prompt
            prompt, _ = prompt_for_example(ex, tokenizer, replace(cfg.prompt, template_choice="none"), templates, cfg.seed)
        elif cfg.prompt.template_choice != "none":  # the prompt names the template the completion follows
            prompt, _ = prompt_for_example(ex, tokenizer, replace(cfg.prompt, template_choice="fixed",
                                                                  template=row["template"]), templates, cfg.seed)
        else:
            prompt, _ = prompt_for_example(ex, tokenizer, cfg.prompt, templates, cfg.seed)
        completion = row["completion"]
        if cfg.prompt.style == "direct":  # the direct baseline: same pairs, the reference is the completion
            completion = row["reference"]
        elif cfg.prompt.think_prefill:  # the prompt already ends with "<think>"
            completion = completion.split("<think>", 1)[1]
        records.append({"prompt": prompt, "completion": completion + tokenizer.eos_token})
    if extra_pairs is not None:
        if cfg.prompt.style != "direct":
            raise ValueError("extra pairs have no reasoning to learn: only the direct style takes them")
        for ex in load_jsonl(extra_pairs):
            prompt, _ = prompt_for_example(ex, tokenizer, cfg.prompt, templates, cfg.seed)
            records.append({"prompt": prompt, "completion": ex.reference + tokenizer.eos_token})
    return Dataset.from_list(records)


class SFTInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped SFT before its last step, after saving a checkpoint: there is no
    final adapter/, so no caller may go on as if the cold start existed."""


def run_sft(cfg: Config, resume: bool = False, overwrite: bool = False, callbacks=()) -> Path:
    """Train the cold-start adapter into runs/<sft.run_name>/adapter; returns that path.
    ``resume``: continue the run's last complete checkpoint (pass the config
    ``resumed_sft_config`` gives). Raises SFTInterrupted after Ctrl-C.
    ``callbacks``: extra transformers ``TrainerCallback``s."""
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from rl.core import resolve

    from rl.learn.trl_bridge import check_versions

    check_versions()  # SFTTrainer is TRL's too: the same tested range
    run_dir = prepare_run_dir(cfg.output_dir, cfg.sft.run_name, resume=resume, overwrite=overwrite)
    checkpoint = sft_checkpoint_to_resume(run_dir) if resume else None
    model_dir = resolve.model_path(cfg)
    data_path, extra_pairs = cfg.sft.data_path, None
    if data_path is None:
        if not is_provided(cfg.model.name_or_path):
            raise ConfigError("sft.data_path is required unless a provider's world (e.g. the toy world) "
                              "supplies the CoT data")
        data_path = resolve.world(cfg, cfg.model.name_or_path).cot_sft_jsonl
        if cfg.prompt.style == "direct":  # the baseline also trains on the pairs GRPO samples, if the world has its own
            extra_pairs = resolve.rl_pairs(cfg)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    dataset = build_sft_dataset(cfg, tokenizer, data_path, extra_pairs)
    write_resolved_config(cfg, run_dir)

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch_dtype(cfg.model.dtype))
    s, lora = cfg.sft, cfg.lora
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(run_dir / "tensorboard")  # transformers 5 dropped logging_dir
    args = SFTConfig(
        output_dir=str(run_dir / "checkpoints"),
        report_to=["tensorboard"],
        learning_rate=s.learning_rate,
        num_train_epochs=s.num_train_epochs,
        max_steps=s.max_steps,
        per_device_train_batch_size=s.batch_size,
        gradient_accumulation_steps=s.gradient_accumulation_steps,
        max_length=s.max_length,
        completion_only_loss=True,
        logging_steps=10,
        save_strategy="steps",
        save_steps=s.save_steps,
        seed=cfg.seed,
        use_cpu=not torch.cuda.is_available(),
        bf16=cfg.model.dtype == "bfloat16" and torch.cuda.is_available(),
        lr_scheduler_type="cosine",
        warmup_steps=0.05,  # < 1: a fraction of the steps (transformers 5)
    )
    peft_config = LoraConfig(
        r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=lora.target_modules,
        task_type="CAUSAL_LM",
    )
    start = time.perf_counter()
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer, peft_config=peft_config)
    stop = _stop_on_ctrl_c()
    trainer.add_callback(stop)
    for callback in callbacks:
        trainer.add_callback(callback)
    previous = signal.signal(signal.SIGINT, stop.request_stop)
    try:
        result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    finally:
        signal.signal(signal.SIGINT, previous)
    if stop.requested and trainer.state.global_step < trainer.state.max_steps:
        raise SFTInterrupted(
            f"[sft] interrupted (Ctrl-C) after step {trainer.state.global_step} of {trainer.state.max_steps} -> {run_dir}; "
            f"no final adapter: `rl/sft.py --output_dir {cfg.output_dir} --run-name {cfg.sft.run_name} --resume` "
            f"continues from checkpoint-{trainer.state.global_step}")
    adapter_dir = run_dir / "adapter"
    save_adapter(trainer.model, adapter_dir)
    summary = {"train_loss": result.training_loss, "steps": result.global_step, "seconds": time.perf_counter() - start,
               "examples": len(dataset), "resumed_from_step": int(checkpoint.name.split("-")[-1]) if checkpoint else 0,
               "base_model": model_dir, "data": str(data_path), "extra_pairs": str(extra_pairs) if extra_pairs else None}
    (run_dir / "sft_summary.json").write_text(json.dumps(summary, indent=2))
    print(f"[sft] {summary['steps']} steps, loss {summary['train_loss']:.3f}, {summary['seconds']:.0f}s -> {adapter_dir}")
    return adapter_dir


def sft_checkpoint_to_resume(run_dir: Path) -> Path:
    """The checkpoint ``--resume`` continues. A finished run (adapter/ written) is not
    continued: that would replace its adapter, which only --overwrite may do."""
    if (run_dir / "adapter").exists():
        raise RunDirError(f"--resume: {run_dir} is finished (it has adapter/); --overwrite trains it again "
                          f"(the old run is moved aside), or --run-name NEW trains another")
    checkpoint = last_checkpoint(run_dir)
    if checkpoint is None:
        raise RunDirError(f"--resume: no complete checkpoint in {run_dir / 'checkpoints'} (SFT saves one every "
                          f"sft.save_steps steps); --overwrite starts the run again")
    print(f"[sft] resuming {run_dir} from {checkpoint.name}")
    return checkpoint


# Config sections SFT never reads: a change there does not change the SFT run, so --resume ignores it
SFT_UNREAD = ("run_name", "data", "sampling", "rollout", "reward", "grpo", "eval", "hardware", "synth")


def resumed_sft_config(parser: argparse.ArgumentParser, argv: list[str] | None, cfg: Config) -> Config:
    """--resume continues the SFT run's own experiment: its config.yaml with only the
    command line's safe changes (rl/core/runs.py: resume_config, as rl/train.py does for
    GRPO). Without --config, config.yaml is the base the overrides apply to."""
    run_dir = Path(cfg.output_dir) / cfg.sft.run_name
    saved_path = run_dir / "config.yaml"
    if not saved_path.is_file():  # no run there: run_sft says why it cannot resume
        return cfg
    saved = load_config(saved_path)
    args, overrides = parser.parse_known_args(argv)
    requested = cfg if args.config is not None else load_config(saved_path, overrides)
    requested.output_dir = saved.output_dir = cfg.output_dir  # the run dir found above, wherever it was written
    saved.sft.run_name = requested.sft.run_name = cfg.sft.run_name
    for section in SFT_UNREAD:
        setattr(saved, section, getattr(requested, section))
    return resume_config(saved, requested)


def _stop_on_ctrl_c():
    """A TrainerCallback for Ctrl-C (SIGINT) during SFT, as GRPO training handles it:
    finish the step, save a checkpoint, stop; a second Ctrl-C stops at once.
    (transformers is imported here, not at module load: config errors stay fast.)"""
    from transformers import TrainerCallback

    class StopOnCtrlC(TrainerCallback):
        requested = False

        def request_stop(self, signum, frame):
            if self.requested:
                raise KeyboardInterrupt
            print("\n[sft] Ctrl-C: saving a checkpoint after this step, then stopping; --resume continues it "
                  "(Ctrl-C again to abort)", file=sys.stderr)
            self.requested = True

        def on_step_end(self, args, state, control, **kw):
            if self.requested:
                control.should_save = True
                control.should_training_stop = True

    return StopOnCtrlC()


def cold_start_adapter(cfg: Config) -> str | None:
    """``resolve.init_adapter``, but a missing "auto" adapter of a provider's model (the toy
    world) is trained here first, so the toy recipe runs GRPO with one command."""
    from rl.core import resolve

    if cfg.model.init_adapter == "auto" and is_provided(cfg.model.name_or_path):
        adapter = resolve.sft_adapter_dir(cfg)
        stale = _stale_base(cfg) if (adapter / "adapter_config.json").exists() else "missing"
        if stale:
            print(f"[train] cold-start adapter {adapter} is {stale}: running SFT first (an old run dir is kept aside)")
            run_sft(cfg, overwrite=True)  # an SFT dir without adapter is an interrupted run: kept aside
    return resolve.init_adapter(cfg)


def _stale_base(cfg: Config) -> str | None:
    """Why a provider's SFT adapter does not fit the provider's current model, or None.

    A provider rebuilds its world when its code or config changes (the toy world's cache key),
    with a new tokenizer and weights: an adapter trained on the old world would load without
    error and produce nonsense. run_sft records the base model dir it trained on."""
    from rl.core import resolve

    summary = resolve.sft_adapter_dir(cfg).parent / "sft_summary.json"
    try:
        base = json.loads(summary.read_text(encoding="utf-8")).get("base_model")
    except (OSError, ValueError):
        base = None
    if base is None:
        return f"of unknown origin ({summary} names no base_model)"
    current = resolve.model_path(cfg)
    return None if Path(base).resolve() == Path(current).resolve() else f"trained on another base ({base}, now {current})"


@run_cli
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Cold-start SFT (TRL SFTTrainer + LoRA) on CoT translations.")
    add_config_args(parser)
    parser.add_argument("--run-name", default=None, help="runs/<name>/ (default: sft.run_name)")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--overwrite", action="store_true")
    try:
        args, cfg = parse_cli(parser, argv)
        if args.run_name:
            cfg.sft.run_name = args.run_name
        if args.resume:
            cfg = resumed_sft_config(parser, argv, cfg)
        run_sft(cfg, resume=args.resume, overwrite=args.overwrite)
    except SFTInterrupted as exc:
        print(exc, file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0
