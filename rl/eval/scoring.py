"""Scoring one evaluation: sentence and corpus metrics per direction (sacrebleu), source
coverage of the reasoning, and COMET through the rewards package."""
from __future__ import annotations

from rl.core.config import Config
from rl.eval.report import mean_or_none


def score_direction(records: list[dict], tgt: str, prompt_cfg,
                    glossary: dict[str, set[str]] | None = None) -> tuple[dict, list[dict]]:
    """Parse every completion (strict for the format rate, lenient for the answer; a direct
    completion is all answer) and score the corpus with rewards' metrics; returns (row,
    per-sentence rows). ``glossary``: the source language's words -> their glosses, when the
    data has one (the toy world), for source coverage."""
    from rewards.lexical import corpus_scores
    from rl.core.analytics import source_coverage
    from rl.core.parsing import parse_completion, parse_direct
    from rl.core.prompts import full_completion, uses_prefill

    outputs = []
    for r in records:
        text = full_completion(r["completion"], uses_prefill(prompt_cfg))
        # one lenient parse: its ok/error are the strict format's, its answer and think the lenient ones
        parsed = parse_direct(text) if prompt_cfg.style == "direct" else parse_completion(text, strict=False)
        outputs.append({**r, "full_completion": text, "answer": parsed.answer, "hypothesis": parsed.answer or "",
                        "format_ok": parsed.ok, "format_error": parsed.error,
                        "source_coverage": None if parsed.think is None else source_coverage(r["source"], parsed.think, glossary)})
    hyps, refs = [o["hypothesis"] for o in outputs], [o["reference"] for o in outputs]
    scores = corpus_scores(hyps, refs, tgt)
    n = len(outputs)
    row = {
        **scores,
        "n": n,
        "format_failure_rate": sum(not o["format_ok"] for o in outputs) / n,
        "no_answer_rate": sum(o["answer"] is None for o in outputs) / n,
        "truncated_rate": sum(o.get("finish_reason") == "length" for o in outputs) / n,
        "avg_completion_tokens": sum(o.get("completion_tokens", 0) for o in outputs) / n,
        # share of the source's content words the <think> block quotes or glosses (None: direct)
        "source_coverage": mean_or_none(o["source_coverage"] for o in outputs) if prompt_cfg.style == "cot" else None,
    }
    return row, outputs


def comet_check(model: str | None) -> str | None:
    """Before generation: why COMET will be skipped (None = it will run)."""
    if not model:
        return "no COMET model given (eval.comet_model)"
    try:
        from rewards.comet import resolve_checkpoint

        resolve_checkpoint(model)
    except Exception as e:  # noqa: BLE001 -- offline hub id, missing package, bad path: skip, say why
        return f"COMET model {model!r} unavailable: {type(e).__name__}: {str(e).splitlines()[0]}"
    return None


def comet_scores(cfg: Config, outputs: dict[str, list[dict]]) -> tuple[dict[str, list] | None, str | None]:
    """Segment COMET per direction with the training reward's own scorer (in this process;
    no answer scores 0, as in training); (None, reason) when it cannot run."""
    reason = comet_check(cfg.eval.comet_model)
    if reason:
        return None, reason
    try:
        from rewards.comet import CometReward

        reward = CometReward(cfg.eval.comet_model, batch_size=cfg.reward.comet_batch_size, ray=False)
    except Exception as e:  # noqa: BLE001
        return None, f"COMET model {cfg.eval.comet_model!r} failed to load: {type(e).__name__}: {str(e).splitlines()[0]}"
    flat = [o for rows in outputs.values() for o in rows]
    scores = reward([o["source"] for o in flat], [o["full_completion"] for o in flat], [o["reference"] for o in flat])
    out, i = {}, 0
    for name, rows in outputs.items():
        out[name] = scores[i : i + len(rows)]
        i += len(rows)
    return out, None
