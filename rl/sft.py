"""Cold-start SFT: teach the six CoT templates and the R1-T1 output format with
TRL's SFTTrainer + LoRA, before GRPO starts from the resulting adapter.

    python rl/sft.py --config configs/toy.yaml [--sft.max_steps 100 ...]

CoT data is JSONL, one object per line: src_lang, tgt_lang, source, reference,
template (one of the six names), completion (``<think>...</think><answer>...</answer>``),
optional id and context. The prompt is built exactly as GRPO builds it, with
the example's own template, so the cold start and RL see the same prompts.

With ``prompt.style=direct`` the same file trains the direct-translation baseline:
plain prompts, the reference as the completion, the same pairs and step budget.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rl.config import Config, ConfigError, add_config_args, parse_cli  # noqa: E402
from rl.data import DataError  # noqa: E402
from rl.runs import RunDirError, prepare_run_dir, save_adapter, write_resolved_config  # noqa: E402

REQUIRED_KEYS = ("src_lang", "tgt_lang", "source", "reference", "template", "completion")


def load_cot_jsonl(path: str | Path, template_names: set[str]) -> list[dict]:
    """Read and validate CoT SFT data; errors name the file, line and key."""
    from rl.data import _lang_field, read_text
    from rl.parsing import parse_completion

    rows = []
    text = read_text(Path(path)).removeprefix("\ufeff")  # bytes that are not UTF-8: a DataError naming file:line
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
            _lang_field(row, key, f"{path}:{lineno}")
        if row["template"] not in template_names:
            raise ConfigError(f"{path}:{lineno}: template '{row['template']}' not in {sorted(template_names)}")
        parsed = parse_completion(row["completion"])
        if not parsed.ok:
            raise ConfigError(f"{path}:{lineno}: completion is not in the R1-T1 format: {parsed.error}")
        rows.append(row)
    if not rows:
        raise ConfigError(f"{path}: no CoT examples")
    return rows


def build_sft_dataset(cfg: Config, tokenizer, data_path: str | Path):
    from dataclasses import replace

    from datasets import Dataset

    from rl.data import Example
    from rl.prompts import load_templates, prompt_for_example

    templates = load_templates(cfg.prompt.templates_dir)
    records = []
    for i, row in enumerate(load_cot_jsonl(data_path, set(templates))):
        ex = Example(
            id=row.get("id", str(i)), src_lang=row["src_lang"], tgt_lang=row["tgt_lang"],
            source=row["source"], reference=row["reference"], context=row.get("context"),
        )
        if cfg.prompt.template_choice != "none":  # the prompt names the template the completion follows
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
    return Dataset.from_list(records)


def run_sft(cfg: Config, resume: bool = False, overwrite: bool = False) -> Path:
    """Train the cold-start adapter into runs/<sft.run_name>/adapter; returns that path."""
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from rl import inputs

    run_dir = prepare_run_dir(cfg.output_dir, cfg.sft.run_name, resume=resume, overwrite=overwrite)
    model_dir = inputs.model_path(cfg)
    data_path = cfg.sft.data_path
    if data_path is None:
        if cfg.model.name_or_path != "toy":
            raise ConfigError("sft.data_path is required unless the toy world supplies the CoT data")
        data_path = inputs.toy_world(cfg).cot_sft_jsonl
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    dataset = build_sft_dataset(cfg, tokenizer, data_path)
    write_resolved_config(cfg, run_dir)

    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "auto": "auto"}
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype[cfg.model.dtype])
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
        save_strategy="no",
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
    result = trainer.train()
    adapter_dir = run_dir / "adapter"
    save_adapter(trainer.model, adapter_dir)
    summary = {"train_loss": result.training_loss, "steps": result.global_step, "seconds": time.perf_counter() - start,
               "examples": len(dataset)}
    (run_dir / "sft_summary.json").write_text(json.dumps(summary, indent=2))
    print(f"[sft] {summary['steps']} steps, loss {summary['train_loss']:.3f}, {summary['seconds']:.0f}s -> {adapter_dir}")
    return adapter_dir


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
        run_sft(cfg, resume=args.resume, overwrite=args.overwrite)
    except (ConfigError, RunDirError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
