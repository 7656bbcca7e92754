"""CoT synthesis: the teacher (through the product's own rollout engines) answers each training
pair k times with its assigned template; the best candidate that passes rl.coldstart.filters is
appended to the output, with its template and scores. Everything about the teacher is checked
before any pair is sent: a missing model, adapter or a teacher that fails to load is a
:class:`SynthError` naming it, and the output files are not touched."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rl.core import resolve
from rl.core.config import Config, ConfigError, SamplingConfig, add_config_args, parse_cli
from rl.core.data import DataError, Example
from rl.core.prompts import full_completion
from rl.core.providers import is_provided
from rl.coldstart import store
from rl.coldstart.filters import judge
from rl.coldstart.prompts import assign_templates, synth_templates, teacher_prompt


class SynthError(ValueError):
    """The teacher (model, adapter, engine) is missing or cannot load."""


def output_path(cfg: Config) -> Path:
    return Path(cfg.synth.output or Path(cfg.output_dir) / (cfg.run_name or "synth") / "cot.jsonl")


def teacher_model_dir(cfg: Config) -> str:
    """The teacher's weights on disk (a provider's world is built on first use). A hub id must be
    in the Hugging Face cache already: a 70B download should be a deliberate step, not a side effect."""
    name = cfg.synth.teacher.model
    if not name:
        raise SynthError("synth.teacher.model is not set: name the teacher (a hub id, a local model directory, "
                         "or 'toy'), e.g. --synth.teacher.model Qwen/Qwen2.5-72B-Instruct")
    if is_provided(name):
        return str(resolve.world(cfg, name).model_dir)
    path = Path(name).expanduser()
    if (path / "config.json").is_file():
        return str(path)
    if name.startswith((".", "/", "~")) or path.exists():
        raise SynthError(f"synth.teacher.model: {name} is not a model directory (no config.json there)")
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(name, local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - not cached (or a bad id): one clear line
        raise SynthError(f"synth.teacher.model: {name!r} is neither a local model directory nor in the Hugging "
                         f"Face cache ({type(exc).__name__}); download it first: huggingface-cli download {name}") from None


def teacher_adapter(cfg: Config, model_dir: str) -> str | None:
    """The teacher's LoRA adapter, checked against the teacher (rank, shapes) before any engine starts."""
    from rl.rollout import AdapterError, check_adapter

    adapter = cfg.synth.teacher.adapter
    if adapter is None:
        return None
    if adapter == "auto":
        adapter = str(resolve.sft_adapter_dir(cfg))
    try:
        check_adapter(adapter, cfg.synth.teacher.rollout.max_lora_rank, model_dir)
    except AdapterError as exc:
        raise SynthError(f"synth.teacher.adapter: {exc}") from None
    return adapter


def start_teacher(cfg: Config, model_dir: str, adapter: str | None, engine=None):
    """The teacher engine (make_rollout_engine: Ray/vLLM pool, in-process vLLM or HF) with its
    adapter active; ``engine``: one already running on the same model (tests share one)."""
    from rl.rollout import make_rollout_engine

    t = cfg.synth.teacher
    try:
        if engine is None:
            engine = make_rollout_engine(model_dir, t.rollout, None, seed=cfg.seed)
        if adapter is not None:
            engine.set_adapter(adapter, version=0)
        else:
            engine.clear_adapter()
    except Exception as exc:  # noqa: BLE001 - vLLM/Ray/torch errors: say which teacher failed
        raise SynthError(f"teacher {t.model} ({model_dir}) failed to load on backend {t.rollout.backend}: "
                         f"{type(exc).__name__}: {exc}") from exc
    return engine


def teacher_sampling(cfg: Config) -> SamplingConfig:
    t = cfg.synth.teacher
    return SamplingConfig(n=cfg.synth.k, temperature=t.temperature, top_p=t.top_p, top_k=t.top_k,
                          max_tokens=t.max_tokens, seed=t.seed)


def check_synth(cfg: Config) -> None:
    """Settings errors that need no model."""
    s = cfg.synth
    if s.k < 1 or s.batch_size < 1:
        raise ConfigError(f"synth.k ({s.k}) and synth.batch_size ({s.batch_size}) must be >= 1")
    if s.teacher.rollout.max_model_len <= s.teacher.max_tokens:
        raise ConfigError(f"synth.teacher.rollout.max_model_len ({s.teacher.rollout.max_model_len}) must be larger "
                          f"than synth.teacher.max_tokens ({s.teacher.max_tokens})")
    import rewards

    try:
        rewards.check(s.reward, comet_model=s.comet_model)
    except rewards.RewardSpecError as exc:
        raise ConfigError(f"synth.reward: {exc}") from None


def row_for(ex: Example, template: str, verdict, teacher: str) -> dict:
    """A kept pair as rl/sft.py reads it (load_cot_jsonl), with its template, scores and rejections."""
    row = {"id": ex.id, "src_lang": ex.src_lang, "tgt_lang": ex.tgt_lang, "source": ex.source,
           "reference": ex.reference or "", "template": template, "completion": verdict.completion}
    if ex.context:
        row["context"] = ex.context
    row["scores"] = {"reward": verdict.score, **{k: v for k, v in verdict.parts.items()}}
    row["synth"] = {"teacher": teacher, "candidates": verdict.candidates, "rejected": dict(verdict.rejected)}
    return row


def rejected_row(ex: Example, template: str, verdict, teacher: str) -> dict:
    return {"id": ex.id, "src_lang": ex.src_lang, "tgt_lang": ex.tgt_lang, "template": template,
            "synth": {"teacher": teacher, "candidates": verdict.candidates, "rejected": dict(verdict.rejected)}}


def run_synth(cfg: Config, engine=None, progress: bool = True) -> dict:
    """Synthesize CoT for the data section's pairs into synth.output; returns the report.
    ``engine``: a running engine on the teacher model (otherwise one is started and shut down)."""
    import rewards
    from tqdm.auto import tqdm
    from transformers import AutoTokenizer

    check_synth(cfg)
    templates = synth_templates(cfg)
    examples = resolve.train_examples(cfg, rl_split=False)  # CoT for SFT: never a world's RL split
    missing_ref = [ex.id for ex in examples if not ex.reference]
    if missing_ref:
        raise ConfigError(f"data: {len(missing_ref)} pair(s) have no reference (first: {missing_ref[0]}); "
                          "synthesis scores every candidate against its reference")
    plan = assign_templates(examples, list(templates))
    model_dir = teacher_model_dir(cfg)
    adapter = teacher_adapter(cfg, model_dir)
    reward = rewards.load(cfg.synth.reward, comet_model=cfg.synth.comet_model)
    tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=cfg.model.trust_remote_code)
    owned = engine is None
    engine = start_teacher(cfg, model_dir, adapter, engine)
    try:
        out = output_path(cfg)
        done, repaired = store.open_output(out)
        for path, n in repaired.items():
            print(f"[synth] {path}: removed a last line cut by a crash ({n} bytes); that pair is done again")
        todo = [(ex, t) for ex, t in zip(examples, plan) if ex.id not in done]
        print(f"[synth] {len(examples)} pairs, {len(examples) - len(todo)} done before, {len(todo)} to go; "
              f"teacher {cfg.synth.teacher.model}{' + ' + adapter if adapter else ''}, k={cfg.synth.k} -> {out}")
        _loop(cfg, engine, tokenizer, templates, reward, todo, out, tqdm(total=len(todo), unit="pair",
                                                                           disable=not progress))
    finally:
        if owned:
            engine.shutdown()
    report = store.write_report(out)
    print(store.format_report(report))
    return report


def _loop(cfg: Config, engine, tokenizer, templates, reward, todo, out: Path, bar) -> None:
    """Batch by batch: generate k candidates per pair, judge them, append the kept and the rejected."""
    sampling, prefill = teacher_sampling(cfg), cfg.prompt.think_prefill  # both prompt forms end with <think> then
    teacher = cfg.synth.teacher.model
    for start in range(0, len(todo), cfg.synth.batch_size):
        batch = todo[start:start + cfg.synth.batch_size]
        prompts = [teacher_prompt(cfg, tokenizer, ex, templates[t], templates) for ex, t in batch]
        results = engine.generate(prompts, sampling)
        texts = [[full_completion(c.text, prefill) for c in r.completions] for r in results]
        finishes = [[c.finish_reason for c in r.completions] for r in results]
        verdicts = judge([ex for ex, _ in batch], texts, cfg.synth, reward, finishes)
        kept = [row_for(ex, t, v, teacher) for (ex, t), v in zip(batch, verdicts) if v.completion]
        lost = [rejected_row(ex, t, v, teacher) for (ex, t), v in zip(batch, verdicts) if not v.completion]
        store.append_rows(out, kept)
        store.append_rows(store.rejected_path(out), lost)
        bar.update(len(batch))
        bar.set_postfix(kept=f"{len(kept)}/{len(batch)}")
    bar.close()


def main(argv: list[str] | None = None, plan=None) -> int:
    """``rl/synth.py``; ``plan``: the dry run's printer (rl.tools.plan.print_teacher_plan, passed in by the
    entry script: this layer does not import the tools)."""
    parser = argparse.ArgumentParser(description="Synthesize CoT SFT data with a teacher model (R1-T1 cold start).")
    add_config_args(parser)
    parser.add_argument("--dry-run", action="store_true",
                        help="check the teacher and print its memory per GPU and placement; load nothing")
    try:
        args, cfg = parse_cli(parser, argv)
        if args.dry_run:
            check_synth(cfg)
            if plan is None:
                raise ConfigError("--dry-run: no planner given (run rl/synth.py)")
            return plan(cfg)
        run_synth(cfg)
    except (ConfigError, DataError, SynthError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
