"""The synthesis output: ``cot.jsonl`` (kept pairs, the rows rl/sft.py reads) and
``cot.rejected.jsonl`` (pairs no candidate passed), both append-only, so a crash loses at most
the batch in flight and a rerun continues: finished ids (in either file) are skipped, a last
line cut by the crash is truncated (it has no newline; the pair is done again), and nothing
already there is rewritten. The report is rebuilt from both files, so it covers every session."""
from __future__ import annotations

import json
import os
import statistics
from collections import Counter, defaultdict
from pathlib import Path

from rl.core.config import ConfigError
from rl.coldstart.filters import REASONS


def rejected_path(output: Path) -> Path:
    return output.with_name(output.stem + ".rejected.jsonl")


def report_path(output: Path) -> Path:
    return output.with_name(output.stem + ".report.json")


def repair(path: Path) -> int:
    """Truncate a last line without its newline (a write cut by a crash); returns the bytes removed."""
    if not path.is_file() or path.stat().st_size == 0:
        return 0
    with open(path, "rb+") as f:
        data = f.read()
        if data.endswith(b"\n"):
            return 0
        keep = data.rfind(b"\n") + 1
        f.truncate(keep)
    return len(data) - keep


def read_rows(path: Path) -> list[dict]:
    """Every row of an output file; a bad complete line is an error naming file:line (never rewritten)."""
    if not path.is_file():
        return []
    rows = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").split("\n"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}:{lineno}: not valid JSON ({exc.msg}); this file is only appended to, "
                              "so fix or remove the line, or write to another synth.output") from None
        if not isinstance(row, dict) or not isinstance(row.get("id"), str):
            raise ConfigError(f"{path}:{lineno}: expected a JSON object with a string 'id'")
        rows.append(row)
    return rows


def open_output(output: Path) -> tuple[set[str], dict[str, int]]:
    """Prepare both files for appending: repair cut last lines; return the finished ids and the
    bytes each repair removed (for the log)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    repaired = {str(p): n for p in (output, rejected_path(output)) if (n := repair(p))}
    done = {r["id"] for p in (output, rejected_path(output)) for r in read_rows(p)}
    return done, repaired


def append_rows(path: Path, rows: list[dict]) -> None:
    """One write per batch, flushed to disk: what is in the file is finished."""
    if not rows:
        return
    with open(path, "a", encoding="utf-8") as f:
        f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        f.flush()
        os.fsync(f.fileno())


def _stats(values: list[int]) -> dict:
    if not values:
        return {}
    ordered = sorted(values)
    return {"mean": round(statistics.fmean(values), 1), "median": statistics.median(values),
            "p95": ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], "max": ordered[-1]}


def build_report(output: Path) -> dict:
    """Acceptance per template and per direction, rejection reasons (per candidate, and the pairs no
    candidate passed), and the kept completions' lengths (words of reasoning, characters of answer)."""
    from rl.core.parsing import parse_completion

    kept, rejected = read_rows(output), read_rows(rejected_path(output))
    by_template: dict[str, Counter] = defaultdict(Counter)
    by_direction: dict[str, Counter] = defaultdict(Counter)
    reasons: Counter = Counter()
    for row, ok in [(r, True) for r in kept] + [(r, False) for r in rejected]:
        direction = f"{row.get('src_lang')}-{row.get('tgt_lang')}"
        for table, key in ((by_template, row.get("template")), (by_direction, direction)):
            table[key]["pairs"] += 1
            table[key]["kept"] += ok
        reasons.update((row.get("synth") or {}).get("rejected") or {})
    think_words, answer_chars = [], []
    for row in kept:
        parsed = parse_completion(row.get("completion"))
        if parsed.ok:
            think_words.append(len(parsed.think.split()))
            answer_chars.append(len(parsed.answer))

    def table(counts: dict[str, Counter]) -> dict:
        return {k: {"pairs": c["pairs"], "kept": c["kept"], "acceptance": round(c["kept"] / c["pairs"], 3)}
                for k, c in sorted(counts.items())}

    pairs = len(kept) + len(rejected)
    return {
        "output": str(output), "pairs": pairs, "kept": len(kept),
        "acceptance": round(len(kept) / pairs, 3) if pairs else None,
        "per_template": table(by_template), "per_direction": table(by_direction),
        "rejected_candidates": {r: reasons.get(r, 0) for r in REASONS},
        "pairs_without_candidate": len(rejected),
        "lengths": {"think_words": _stats(think_words), "answer_chars": _stats(answer_chars)},
    }


def format_report(report: dict) -> str:
    """The report as a few printed lines."""
    lines = [f"[synth] {report['kept']}/{report['pairs']} pairs kept (acceptance {report['acceptance']}) "
             f"-> {report['output']}"]
    for title, key in (("template", "per_template"), ("direction", "per_direction")):
        for name, row in report[key].items():
            lines.append(f"  {title:9} {name:30} {row['kept']:6}/{row['pairs']:<6} {row['acceptance']:.0%}")
    lines.append("  rejected candidates: " + ", ".join(f"{k} {v}" for k, v in report["rejected_candidates"].items()))
    for name, s in report["lengths"].items():
        if s:
            lines.append(f"  {name}: mean {s['mean']}, median {s['median']}, p95 {s['p95']}, max {s['max']}")
    return "\n".join(lines)


def write_report(output: Path) -> dict:
    report = build_report(output)
    report_path(output).write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
    return report
