"""Evaluation on FLORES directions (or the toy test set): one table per run.

    python -m rl.evaluate --adapter runs/toy-grpo --eval.limit 100
    python -m rl.evaluate --model Qwen/Qwen2.5-7B-Instruct --eval.data_dir flores200 \
        --eval.directions r1t1 --out runs/eval-base --eval.comet_model Unbabel/wmt22-comet-da
    python -m rl.evaluate --adapter runs/my-run --eval.data_dir flores200 --baseline runs/eval-base

Settings are the config's, as in training: ``--config FILE`` (default: the adapter's run
config.yaml, else the defaults) and ``--section.key value`` overrides; the eval section's
keys may be given bare (``--limit 100``). ``--model`` and ``--out`` are short for
``--model.name_or_path`` and ``--eval.out``.

Generation goes through the same rollout engine as training (one sample per
prompt, R1-T1's decoding defaults), prompts come from rl.core.prompts exactly as in
training, answers from the shared parser, scores from rewards/ -- so training
rewards and test scores can never disagree.

Everything that can be wrong with the inputs (languages, files, alignment, an
adapter for another model, prompts too long) is checked before any engine
starts. Each direction's generations are cached in ``<out>/generations/`` with a
hash of every setting that shapes them, so an interrupted evaluation resumes
where it stopped and a changed setting never reuses stale text.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

from rl.core import resolve
from rl.core.config import Config, SamplingConfig, add_config_args, load_config
from rl.core.data import Example, load_examples
from rl.core.errors import UserError, run_cli
from rl.core.languages import parse_directions
from rl.core.providers import is_provided, provider_of_language
from rl.eval.generation import (
    cache_path,
    decoding,
    fingerprint,
    generate_in_batches,
    library_versions,
    read_cache,
    stable_hash,
    write_cache,
)
from rl.eval.report import (
    averages,
    direction_name,
    markdown,
    mean_or_none,
    write_outputs,
)
from rl.eval.scoring import comet_check, comet_scores, score_direction

DEFAULT_HF_DATASET = "openlanguagedata/flores_plus"


class EvalError(UserError, ValueError):
    """Bad evaluation input, found before any generation."""


# ----------------------------------------------------------------------------- inputs


def resolve_adapter(path: str | Path) -> tuple[Path, Path | None]:
    """(adapter dir, run dir or None): a run dir gives its final ``adapter/``; an
    adapter dir inside a run dir (``runs/x/adapter``) still finds the run's config."""
    p = Path(path)
    if (p / "adapter_config.json").is_file():
        return p, (p.parent if (p.parent / "config.yaml").is_file() else None)
    if (p / "adapter" / "adapter_config.json").is_file():
        return p / "adapter", p
    if not p.exists():
        raise EvalError(f"--adapter {p}: no such directory")
    raise EvalError(
        f"--adapter {p}: neither a LoRA adapter (no adapter_config.json) nor a run dir with adapter/adapter_config.json"
    )


def check_eval_adapter(adapter: Path, model_dir: str, trust_remote_code: bool = False) -> dict[str, Any]:
    """The one adapter check (rl/rollout/base.py), in its exact form: every LoRA matrix fits
    ``model_dir``'s modules and no weight is NaN/inf. A different base name with matching
    shapes is only a note (paths move). Errors are EvalErrors: this is evaluate's input."""
    from rl.rollout.base import AdapterError
    from rl.rollout.base import check_adapter as check

    try:
        acfg = check(adapter, None, model_dir, exact=True, trust_remote_code=trust_remote_code)
    except AdapterError as e:
        raise EvalError(f"adapter {adapter}: {e}") from None
    base = acfg.get("base_model_name_or_path")
    if base and Path(str(base)).resolve() != Path(model_dir).resolve() and str(base) != str(model_dir):
        print(f"[eval] note: adapter was trained on {base}, evaluating on {model_dir} (shapes match)")
    return {"base_model_name_or_path": base, "r": acfg.get("r"), "target_modules": acfg.get("target_modules")}


def check_finite_weights(adapter: Path) -> None:
    """rl/rollout/base.py's NaN/inf check, as an EvalError."""
    from rl.rollout.base import AdapterError
    from rl.rollout.base import check_finite_weights as check

    try:
        check(adapter)
    except AdapterError as e:
        raise EvalError(f"adapter {adapter}: {e}") from None


def load_directions(cfg: Config) -> dict[tuple[str, str], list[Example]]:
    """Examples per direction, in the order asked. Toy-language directions come from
    the toy world's test set; the others from FLORES (eval.data_dir) or the HF hub."""
    ev = cfg.eval
    try:
        directions = parse_directions(ev.directions)
    except ValueError as e:
        raise EvalError(f"eval.directions: {e}") from None
    providers = {d: {provider_of_language(c) for c in d} for d in directions}
    mixed = [d for d, names in providers.items() if len(names) > 1]
    if mixed:
        kinds = " and a ".join(sorted(name or "real" for name in providers[mixed[0]]))  # "real and a toy"
        raise EvalError(f"eval.directions: {direction_name(*mixed[0])} mixes a {kinds} language")
    real = [d for d in directions if providers[d] == {None}]
    by_dir: dict[tuple[str, str], list[Example]] = {d: [] for d in directions}
    for name in sorted({n for names in providers.values() for n in names} - {None}):
        from rl.core.data import load_jsonl

        served = [d for d in directions if providers[d] == {name}]
        for ex in load_jsonl(resolve.world(cfg, name).test_jsonl, directions=served):
            if ev.limit is None or len(by_dir[(ex.src_lang, ex.tgt_lang)]) < ev.limit:
                by_dir[(ex.src_lang, ex.tgt_lang)].append(ex)
    if real:
        source, path = ev.data_source, ev.data_dir
        if is_provided(source):  # the default (toy) source cannot serve real languages: FLORES dir if given, else the hub
            source = "flores" if path else "hf"
        if source == "hf":
            path = path or DEFAULT_HF_DATASET
            print(f"[eval] no eval.data_dir: loading FLORES from the HF hub dataset {path} (needs network or cache)")
        elif path is None:
            raise EvalError("eval.data_source=flores needs eval.data_dir (a FLORES-101 or FLORES-200 directory)")
        if source == "flores" and (Path(path) / "flores200").is_dir() and not (Path(path) / ev.split).is_dir():
            path = str(Path(path) / "flores200")  # the shared data root holds flores200/
        for ex in load_examples(source, path, real, split=ev.split, limit=ev.limit):
            by_dir[(ex.src_lang, ex.tgt_lang)].append(ex)
    empty = [direction_name(*d) for d, exs in by_dir.items() if not exs]
    if empty:
        raise EvalError(f"no test sentences for direction(s) {', '.join(empty)}")
    return by_dir


def seen_languages(run_config: dict | None) -> set[str] | None:
    """Languages the adapter was trained on (its run's data.directions), or None when unknown."""
    if not run_config:
        return None
    try:
        pairs = parse_directions((run_config.get("data") or {}).get("directions") or [])
    except ValueError:
        return None
    return {c for pair in pairs for c in pair}










# ----------------------------------------------------------------------------- the evaluation

def default_out(cfg: Config, run_dir: Path | None) -> Path:
    if cfg.eval.out:
        return Path(cfg.eval.out)
    if run_dir is not None:
        return run_dir / "eval"
    return Path(cfg.output_dir) / "eval" / Path(cfg.model.name_or_path.rstrip("/")).name


@dataclasses.dataclass
class Plan:
    """Everything an evaluation needs, checked before any engine starts."""

    model_dir: str
    adapter_dir: Path | None
    adapter_info: dict | None
    run_dir: Path | None
    run_config: dict | None
    seen: set[str] | None
    sampling: SamplingConfig
    examples: dict[tuple[str, str], list[Example]]
    templates_used: dict[tuple[str, str], list[str | None]]
    token_ids: dict[tuple[str, str], list[list[int]]]
    hashes: dict[tuple[str, str], str]  # per direction: every setting that shapes its generations
    settings: dict[str, Any]


def plan(cfg: Config, adapter: str | Path | None = None) -> Plan:
    """Resolve and check the inputs (languages, files, alignment, adapter vs model,
    prompt lengths) and build every prompt exactly as training does."""
    from transformers import AutoTokenizer

    from rl.core.prompts import load_templates, prompt_for_example

    adapter_dir, run_dir, run_config = None, None, None
    if adapter is not None:
        adapter_dir, run_dir = resolve_adapter(adapter)
        if run_dir is not None:
            import yaml

            run_config = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
    examples = load_directions(cfg)
    model_dir = resolve.model_path(cfg)
    adapter_info = check_eval_adapter(adapter_dir, model_dir, cfg.model.trust_remote_code) if adapter_dir else None
    seen = seen_languages(run_config)
    sampling = decoding(cfg)
    tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=cfg.model.trust_remote_code)
    templates = load_templates(cfg.prompt.templates_dir)
    prompts = {d: [prompt_for_example(ex, tokenizer, cfg.prompt, templates, seed=cfg.seed) for ex in exs]
               for d, exs in examples.items()}
    token_ids = {d: [tokenizer(p, add_special_tokens=False)["input_ids"] for p, _ in ps] for d, ps in prompts.items()}
    limit = cfg.rollout.max_model_len
    for d, ids in token_ids.items():
        longest = max(range(len(ids)), key=lambda i: len(ids[i]))
        if len(ids[longest]) + sampling.max_tokens > limit:
            raise EvalError(
                f"{direction_name(*d)}: the prompt of {examples[d][longest].id} has {len(ids[longest])} tokens; "
                f"with max_tokens {sampling.max_tokens} it exceeds rollout.max_model_len {limit} "
                "(raise --rollout.max_model_len or lower --eval.max_tokens)"
            )
    settings = {
        "model": cfg.model.name_or_path,
        "model_dir": str(model_dir),
        "adapter": str(adapter_dir) if adapter_dir else None,
        "adapter_info": adapter_info,
        "run_dir": str(run_dir) if run_dir else None,
        "data_source": cfg.eval.data_source,
        "data_dir": cfg.eval.data_dir,
        "split": cfg.eval.split,
        "limit": cfg.eval.limit,
        "directions": [direction_name(*d) for d in examples],
        "decoding": dataclasses.asdict(sampling),
        "prompt": dataclasses.asdict(cfg.prompt),
        "backend": cfg.rollout.backend,
        "rollout_dtype": cfg.rollout.dtype,
        "seed": cfg.seed,
        "comet_model": cfg.eval.comet_model,
        "seen_languages": sorted(seen) if seen is not None else None,
    }
    identity = {
        "model": fingerprint(model_dir, content=False),
        "adapter": fingerprint(adapter_dir, content=True) if adapter_dir else None,
        "decoding": settings["decoding"], "backend": settings["backend"], "dtype": settings["rollout_dtype"],
    }
    settings["adapter_fingerprint"] = identity["adapter"]
    hashes = {d: stable_hash({**identity, "prompts": stable_hash([p for p, _ in prompts[d]])}) for d in examples}
    settings["settings_hash"] = stable_hash(sorted(hashes.values()))
    return Plan(str(model_dir), adapter_dir, adapter_info, run_dir, run_config, seen, sampling, examples,
                {d: [t for _, t in ps] for d, ps in prompts.items()}, token_ids, hashes, settings)


def generate(cfg: Config, p: Plan, out: Path, engine: Any = None, progress: bool = True):
    """Generations per direction, from the cache where the settings hash matches, else
    from the engine (ours, or the one given); each direction is cached when it finishes.
    Returns ({direction: records}, {direction: seconds, None when cached})."""
    from tqdm.auto import tqdm

    records: dict[tuple[str, str], list[dict]] = {}
    timing: dict[tuple[str, str], float | None] = {}
    for d, exs in p.examples.items():
        cached = read_cache(cache_path(out, d), p.hashes[d], [ex.id for ex in exs])
        if cached is not None:
            records[d], timing[d] = cached, None
            print(f"[eval] {direction_name(*d)}: {len(cached)} generations from the cache")
    todo = [d for d in p.examples if d not in records]
    if not todo:
        return records, timing
    own_engine = engine is None
    if own_engine:
        from rl.rollout import make_rollout_engine
        from rl.rollout.base import VLLM_MAX_LORA_RANKS

        rollout = cfg.rollout
        rank = (p.adapter_info or {}).get("r") or 0
        if rank > rollout.max_lora_rank:  # the engine must hold this adapter: the next rank vLLM accepts
            fits = [r for r in VLLM_MAX_LORA_RANKS if r >= rank]
            rollout = dataclasses.replace(rollout, max_lora_rank=fits[0] if fits else rank)
        engine = make_rollout_engine(p.model_dir, rollout, None, seed=cfg.seed)
    try:
        if p.adapter_dir is not None:  # a version id from the adapter's bytes: a changed adapter is reloaded
            engine.set_adapter(str(p.adapter_dir), int(p.settings["adapter_fingerprint"][:7], 16))
        else:
            engine.clear_adapter()
        bar = tqdm(total=sum(len(p.examples[d]) for d in todo), unit="sent", disable=not progress)
        for i, d in enumerate(todo, 1):
            bar.set_description(f"{direction_name(*d)} ({i}/{len(todo)})")
            start = time.perf_counter()
            results = generate_in_batches(engine, p.token_ids[d], p.sampling, max(1, cfg.eval.batch_size), bar)
            timing[d] = time.perf_counter() - start
            records[d] = [
                {"id": ex.id, "src_lang": ex.src_lang, "tgt_lang": ex.tgt_lang, "source": ex.source,
                 "reference": ex.reference, "template": tpl, "completion": res.completions[0].text,
                 "finish_reason": res.completions[0].finish_reason,
                 "completion_tokens": len(res.completions[0].token_ids)}
                for ex, tpl, res in zip(p.examples[d], p.templates_used[d], results)
            ]
            write_cache(cache_path(out, d), p.hashes[d], records[d])
        bar.close()
    finally:
        if own_engine:
            engine.shutdown()
    return records, timing


def source_glossary(cfg: Config, lang: str) -> dict[str, set[str]] | None:
    """The glossary of ``lang``'s words when its data's provider has one (the toy world), else None."""
    name = provider_of_language(lang)
    return getattr(resolve.world(cfg, name), "glossary", {}).get(lang) if name else None


def score(cfg: Config, p: Plan, records: dict, timing: dict) -> tuple[list[dict], dict[str, list[dict]], str | None]:
    """(rows per direction, per-sentence outputs per direction, why COMET was skipped or None)."""
    rows, outputs = [], {}
    for d in p.examples:
        name = direction_name(*d)
        if any(r["reference"] is None for r in records[d]):
            raise EvalError(f"{name}: some test sentences have no reference")
        row, outs = score_direction(records[d], d[1], cfg.prompt, source_glossary(cfg, d[0]))
        seen = None if p.seen is None else (d[0] in p.seen and d[1] in p.seen)
        rows.append({"direction": name, "src": d[0], "tgt": d[1], "seen": seen, **row, "comet": None,
                     "gen_seconds": timing[d], "cached": timing[d] is None,
                     "sec_per_100": None if timing[d] is None else 100 * timing[d] / len(records[d])})
        outputs[name] = outs
    comet, skipped = comet_scores(cfg, outputs)
    if skipped:
        print(f"[eval] notice: COMET skipped: {skipped}")
        return rows, outputs, skipped
    for row in rows:
        segs = comet[row["direction"]]
        row["comet"] = mean_or_none(segs)
        for o, s in zip(outputs[row["direction"]], segs):
            o["comet"] = s
    return rows, outputs, None


def evaluate(
    cfg: Config,
    adapter: str | Path | None = None,
    out: str | Path | None = None,
    *,
    baseline: str | Path | None = None,
    engine: Any = None,
    progress: bool = True,
) -> dict:
    """Evaluate ``cfg.model`` (+ ``adapter``: an adapter dir or a run dir) on ``cfg.eval``;
    writes results.{json,csv,md}, outputs/, generations/ and plots/ under ``out`` and
    returns the results dict. ``engine`` reuses a running rollout engine (not shut down)."""
    p = plan(cfg, adapter)
    if baseline is not None and not (Path(baseline) / "results.json").is_file():
        raise EvalError(f"--baseline {baseline}: no results.json there")
    comet_skip = comet_check(cfg.eval.comet_model)
    if comet_skip:
        print(f"[eval] notice: COMET will be skipped: {comet_skip}")
    out = Path(out) if out is not None else default_out(cfg, p.run_dir)
    out.mkdir(parents=True, exist_ok=True)

    records, timing = generate(cfg, p, out, engine, progress)
    rows, outputs, skipped = score(cfg, p, records, timing)
    results = {
        "settings": p.settings,
        "versions": library_versions(),
        "run_config": p.run_config,
        "comet": {"model": cfg.eval.comet_model, "skipped": skipped},
        "directions": rows,
        "averages": averages(rows),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    if baseline is not None:
        from rl.eval.compare import compare_results, load_results

        cmp = compare_results([load_results(baseline), ("this run", results)])
        results["baseline"] = {"results": str(baseline), "deltas": cmp["deltas"][1], "table": cmp["markdown"]}
    write_outputs(out, results, outputs)
    print(markdown(results))
    print(f"[eval] wrote {out}/results.{{json,csv,md}}, outputs/, plots/")
    return results


# ----------------------------------------------------------------------------- CLI

def build_arg_parser() -> argparse.ArgumentParser:
    """The evaluation's own options; the settings are the config's (``--config`` and
    ``--section.key value`` overrides, as in training), with eval's keys also bare."""
    p = argparse.ArgumentParser(
        description="Evaluate a model (+ LoRA adapter) on FLORES directions or the toy test set. Settings are "
        "config keys: --config FILE, then --section.key value overrides as in training (e.g. --eval.limit 100, "
        "--eval.directions r1t1, --eval.data_dir flores200, --rollout.backend hf, --seed 1); the eval section's "
        "keys may be given bare (--limit 100 = --eval.limit 100).")
    add_config_args(p)
    p.add_argument("--model", help='model.name_or_path: hub id or local dir; "toy" = the toy world\'s model')
    p.add_argument("--adapter", help="a LoRA adapter dir, or a run dir (its adapter/ and config.yaml are used)")
    p.add_argument("--out", help="eval.out: output directory (default: <run dir>/eval or runs/eval/<model>)")
    p.add_argument("--baseline", help="a results dir to report deltas against (e.g. the base model's)")
    p.add_argument("--no-progress", action="store_true")
    return p


# the short flags that are config keys: flag -> its key (argparse's dest names the flag)
ALIASES = {"model": "model.name_or_path", "out": "eval.out"}


def config_from_args(args: argparse.Namespace, rest: list[str]) -> Config:
    """--config, else the adapter's run config.yaml, else defaults; then the overrides
    (``rest``, and --model/--out as their keys), validated by load_config like training's."""
    path = args.config
    if path is None and args.adapter:
        _, run_dir = resolve_adapter(args.adapter)
        if run_dir is not None:
            path = run_dir / "config.yaml"
    aliases = [x for flag, key in ALIASES.items() if getattr(args, flag) is not None
               for x in (f"--{key}", json.dumps(str(getattr(args, flag))))]  # quoted: taken as is
    return load_config(path, [*rest, *aliases], scope="eval")


@run_cli
def main(argv: list[str] | None = None) -> int:
    parser = build_arg_parser()
    args, rest = parser.parse_known_args(argv)
    cfg = config_from_args(args, rest)
    evaluate(cfg, args.adapter, cfg.eval.out, baseline=args.baseline, progress=not args.no_progress)
    return 0
