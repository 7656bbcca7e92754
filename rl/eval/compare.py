"""Side-by-side comparison of evaluations: one table and one plot.

    python -m rl.compare runs/r1t1-reward runs/chrf-reward [--out runs/compare] [--metrics chrf++,bleu]
    python -m rl.compare runs/eval-base runs/my-run/eval

Each argument is a results dir (from rl.evaluate), its results.json, or a run
dir (its eval/ results). Columns are labelled by the config keys that differ
between the runs (``reward.spec=r1t1`` vs ``reward.spec=chrf-format``), which is
how a reward-model plug-in experiment is read; the first entry is the reference
for the Δ columns.
"""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import Any

from rl.core.errors import UserError, run_cli
from rl.eval.report import GROUPS, METRICS, display_row, metric_value, plot_bars

IGNORED_KEYS = ("run_name", "output_dir", "eval.", "toy.cache_dir", "rollout.ray_address")
MISSING = object()


class CompareError(UserError, ValueError):
    """An argument is not a results dir, results.json or run dir with results."""


# ----------------------------------------------------------------------------- loading

def load_results(path: str | Path) -> tuple[str, dict]:
    """(name, results) from a results dir, a results.json or a run dir (runs/x/eval/results.json)."""
    p = Path(path)
    candidates = [p] if p.suffix == ".json" else [p / "results.json", p / "eval" / "results.json"]
    for file in candidates:
        if file.is_file():
            try:
                results = json.loads(file.read_text(encoding="utf-8"))
            except json.JSONDecodeError as e:
                raise CompareError(f"{file}: not valid JSON ({e})") from None
            if not isinstance(results, dict) or "directions" not in results or "settings" not in results:
                raise CompareError(f"{file}: not an rl.evaluate results.json (no 'directions'/'settings')")
            d = file.parent
            return (d.parent.name if d.name == "eval" else d.name), results
    found = sorted(p.glob("*/results.json")) if p.is_dir() else []
    hint = f"; it holds {', '.join(str(f.parent) for f in found)}: pass one of them" if found else ""
    raise CompareError(f"{p}: no results.json (looked in {', '.join(map(str, candidates))}){hint}")


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: obj}


def describe(results: dict) -> dict[str, Any]:
    """What distinguishes an evaluation: the adapter's training config, flattened, plus
    the evaluation's own model, adapter presence and decoding."""
    s = results["settings"]
    model = s.get("model_dir") or s.get("model")
    if model and Path(model).exists():  # one model spelled two ways is one model; label it by its last parts
        model = "/".join(Path(model).resolve().parts[-2:])
    desc = {"model": model, "adapter": "lora" if s.get("adapter") else "none",
            "prompt.style": (s.get("prompt") or {}).get("style", "cot")}
    desc.update({f"decoding.{k}": v for k, v in (s.get("decoding") or {}).items()})
    desc.update({"eval.split": s.get("split"), "eval.limit": s.get("limit")})
    for key, value in _flatten(results.get("run_config") or {}).items():
        if not key.startswith(IGNORED_KEYS):
            desc[key] = value
    return desc


def _short(value: Any, width: int = 40) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text if len(text) <= width else text[: width - 1] + "…"


def labels_for(entries: list[tuple[str, dict]]) -> tuple[list[str], list[str]]:
    """(labels, differing keys). A key differs when two entries that have it disagree;
    entries with nothing differing (or identical labels) fall back to their names."""
    descs = [describe(r) for _, r in entries]
    keys = sorted({k for d in descs for k in d})
    differing = []
    for k in keys:
        present = [json.dumps(d[k], sort_keys=True, default=str) for d in descs if k in d]
        if len(set(present)) > 1:
            differing.append(k)
    labels = []
    for (name, _), d in zip(entries, descs):
        parts = [f"{k}={_short(d[k])}" for k in differing if k in d]
        labels.append(", ".join(parts) if parts else name)
    if len(set(labels)) < len(labels):
        labels = [label if label == name else f"{label} ({name})" for label, (name, _) in zip(labels, entries)]
    return labels, differing


# ----------------------------------------------------------------------------- the table


def _row_keys(entries: list[tuple[str, dict]]) -> list[str]:
    rows = list(dict.fromkeys(r["direction"] for _, res in entries for r in res["directions"]))
    groups = [g for g in GROUPS if any(g in res.get("averages", {}) for _, res in entries)]
    return rows + [f"avg:{g}" for g in groups]


def _check_shared_directions(entries: list[tuple[str, dict]]) -> None:
    """Each entry must share a direction with the first (the Δ reference): with none
    in common every Δ is empty and the table silently compares nothing. Averages do
    not count: one group average over different directions is not comparable."""
    first_name, first = entries[0]
    first_dirs = {r["direction"] for r in first["directions"]}
    for i, (name, results) in enumerate(entries[1:], 2):
        dirs = {r["direction"] for r in results["directions"]}
        if not dirs & first_dirs:
            raise CompareError(f"entry {i} ({name}) and entry 1 ({first_name}) share no direction "
                               f"({name}: {_dirs(dirs)}; {first_name}: {_dirs(first_dirs)}); "
                               f"evaluate them on common directions")


def _dirs(directions: set[str], width: int = 4) -> str:
    shown = sorted(directions)
    return (", ".join(shown[:width]) + (f", … ({len(shown)} in all)" if len(shown) > width else "")) or "none"


def compare_results(entries: list[tuple[str, dict]], metrics: list[str] | None = None,
                    labels: list[str] | None = None) -> dict:
    """The comparison as data: labels, rows {row: {metric: [value per entry]}}, deltas
    per entry against the first ({row: {metric: Δ}}; None for the first), markdown, csv rows.
    ``labels`` name the columns instead of the config keys that differ."""
    if not entries:
        raise CompareError("nothing to compare")
    if labels is not None and len(labels) != len(entries):
        raise CompareError(f"{len(labels)} label(s) for {len(entries)} results")
    _check_shared_directions(entries)
    if metrics is None:
        metrics = [m for m in METRICS if any(metric_value(r, row, m) is not None
                                             for _, r in entries for row in _row_keys(entries))]
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise CompareError(f"unknown metric(s) {unknown}; choose from {', '.join(METRICS)}")
    labels, keys = (labels, []) if labels is not None else labels_for(entries)
    row_keys = _row_keys(entries)
    table = {row: {m: [metric_value(r, row, m) for _, r in entries] for m in metrics} for row in row_keys}
    deltas: list[dict | None] = [None]
    for i in range(1, len(entries)):
        deltas.append({row: {m: (None if vals[m][i] is None or vals[m][0] is None else vals[m][i] - vals[m][0])
                             for m in metrics} for row, vals in table.items()})

    header, csv_rows = ["Direction"], []
    for m in metrics:
        header += [f"{METRICS[m][0]} · {label}" for label in labels]
        header += [f"Δ{METRICS[m][0]} · {label}" for label in labels[1:]]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for row, vals in table.items():
        cells, flat = [display_row(row)], {"row": row}
        for m in metrics:
            name, scale = METRICS[m]
            for label, v in zip(labels, vals[m]):
                cells.append("–" if v is None else f"{v * scale:.2f}")
                flat[f"{name} · {label}"] = v
            for i, label in enumerate(labels[1:], 1):
                d = deltas[i][row][m]
                cells.append("–" if d is None else f"{d * scale:+.2f}")
                flat[f"Δ{name} · {label}"] = d
        lines.append("| " + " | ".join(cells) + " |")
        csv_rows.append(flat)
    legend = [f"- **{label}**: {name}" for label, (name, _) in zip(labels, entries)]
    md = "\n".join(lines) + "\n\nColumns (Δ against the first):\n" + "\n".join(legend) + "\n"
    return {"labels": labels, "keys": keys, "names": [n for n, _ in entries], "metrics": metrics,
            "rows": table, "deltas": deltas, "markdown": md, "csv_rows": csv_rows,
            "csv_fields": ["row", *[h for h in header[1:]]]}


# ----------------------------------------------------------------------------- plots


# ----------------------------------------------------------------------------- entry points

def compare(paths: list[str | Path], out: str | Path | None = None, metrics: list[str] | None = None,
            labels: list[str] | None = None) -> dict:
    """Load, tabulate, and (with ``out``) write compare.{md,csv,json,png}; returns :func:`compare_results`."""
    entries = [load_results(p) for p in paths]
    cmp = compare_results(entries, metrics, labels)
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "compare.md").write_text(cmp["markdown"], encoding="utf-8")
        with (out / "compare.csv").open("w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=cmp["csv_fields"])
            writer.writeheader()
            writer.writerows(cmp["csv_rows"])
        summary = {k: cmp[k] for k in ("labels", "keys", "names", "metrics", "rows", "deltas")}
        summary["sources"] = [str(p) for p in paths]
        (out / "compare.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        plot_compare(cmp, out / "compare.png")
        cmp["files"] = {name: str(out / name) for name in ("compare.md", "compare.csv", "compare.json", "compare.png")}
    return cmp


@run_cli
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Compare evaluations or runs side by side (one table, one plot).")
    p.add_argument("paths", nargs="+", help="results dirs, results.json files or run dirs")
    p.add_argument("--out", default="runs/compare", help="where compare.{md,csv,json,png} go (default runs/compare)")
    p.add_argument("--metrics", help=f"comma list from {', '.join(METRICS)} (default: all present)")
    p.add_argument("--labels", help="comma list of column labels, one per path (default: the config keys that differ)")
    args = p.parse_args(argv)
    metrics = [m.strip() for m in args.metrics.split(",")] if args.metrics else None
    labels = [x.strip() for x in args.labels.split(",")] if args.labels else None
    cmp = compare(args.paths, args.out, metrics, labels)
    print(cmp["markdown"])
    print(f"[compare] wrote {args.out}/compare.{{md,csv,json,png}}")
    return 0


def plot_compare(cmp: dict, path: Path) -> Path:
    rows, metrics = list(cmp["rows"]), cmp["metrics"]
    series = [(label, [cmp["rows"][row][m][i] for m in metrics for row in rows]) for i, label in enumerate(cmp["labels"])]
    return plot_bars(rows, series, metrics, path, "comparison")
