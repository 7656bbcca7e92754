"""What an evaluation writes: direction names for tables, group averages, results.json /
.csv / .md and the bar plots; rl/eval/compare.py reads the same shapes back."""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from rl.core.languages import resolve_language

ENG, ZHO = "eng_Latn", "zho_Hans"


GROUPS = ("all", "x->en", "en->x", "x->zh", "zh->x", "seen", "unseen")


def direction_name(src: str, tgt: str) -> str:
    return f"{src}-{tgt}"


def _table_code(code: str) -> str:
    lang = resolve_language(code)
    return lang.iso1 if lang.iso1 and not code.startswith("toy_") else lang.flores200


def short_name(src: str, tgt: str) -> str:
    """'en→zh' for tables (ISO 639-1 where there is one, else the FLORES-200 code)."""
    return f"{_table_code(src)}→{_table_code(tgt)}"


def averages(rows: list[dict]) -> dict[str, dict]:
    """Macro averages over groups of directions (only groups that have members)."""
    members = {
        "all": rows,
        "x->en": [r for r in rows if r["tgt"] == ENG],
        "en->x": [r for r in rows if r["src"] == ENG],
        "x->zh": [r for r in rows if r["tgt"] == ZHO],
        "zh->x": [r for r in rows if r["src"] == ZHO],
        "seen": [r for r in rows if r.get("seen") is True],
        "unseen": [r for r in rows if r.get("seen") is False],
    }
    out = {}
    for group in GROUPS:
        rs = members[group]
        if rs:
            out[group] = {"n_directions": len(rs), **{k: mean_or_none(r.get(k) for r in rs) for k in SCORE_KEYS}}
    return out


CSV_FIELDS = ("direction", "kind", "src", "tgt", "n", "seen", "bleu", "bleu_tokenizer", "chrf", "chrfpp", "comet",
              "format_failure_rate", "no_answer_rate", "truncated_rate", "avg_completion_tokens", "source_coverage",
              "gen_seconds", "cached")


def _fmt(value: Any, scale: float = 1.0, digits: int = 2) -> str:
    return "–" if value is None else f"{value * scale:.{digits}f}"


def write_csv(results: dict, path: Path) -> None:
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for row in results["directions"]:
            writer.writerow({**row, "kind": "direction"})
        for group, avg in results["averages"].items():
            writer.writerow({**avg, "direction": f"avg:{group}", "kind": "average", "n": avg["n_directions"]})


def markdown(results: dict) -> str:
    """The paper table: per direction, then the group averages."""
    s = results["settings"]
    d = s["decoding"]
    has_comet = results["comet"]["model"] is not None and results["comet"]["skipped"] is None
    has_seen = any(r["seen"] is not None for r in results["directions"])
    what = s["model"] + (f" + {s['adapter']}" if s["adapter"] else "")
    data = "toy test set" if s["data_source"] == "toy" else f"FLORES {s['split']}"
    lines = [
        f"# Evaluation: {what}",
        "",
        f"{data}, {'first ' + str(s['limit']) if s['limit'] else 'all'} sentences per direction; one sample per "
        f"prompt (temperature {d['temperature']}, top-p {d['top_p']}, top-k {d['top_k']}, max {d['max_tokens']} "
        f"tokens). BLEU: sacrebleu, tokenizer per target language; chrF++: sacrebleu (word order 2); "
        + (f"COMET: {results['comet']['model']}." if has_comet else f"COMET: not computed ({results['comet']['skipped']}).")
        + (" Direct prompts (no reasoning): the whole completion is the translation; format fail: empty (%)."
           if s["prompt"].get("style") == "direct" else
           " Format fail: completions not in strict `<think>…</think><answer>…</answer>` form (%). Coverage: share of"
           " the source's content words the `<think>` block quotes or glosses (%)."),
        "",
    ]
    has_cov = any(r.get("source_coverage") is not None for r in results["directions"])
    head = ["Direction"] + (["Seen"] if has_seen else []) + ["BLEU", "chrF", "chrF++"] + (["COMET"] if has_comet else []) + [
        "Format fail %"] + (["Coverage %"] if has_cov else []) + ["N"]
    lines += ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    for r in results["directions"]:
        cells = [short_name(r["src"], r["tgt"])]
        cells += ["✓" if r["seen"] else "✗"] if has_seen else []
        cells += [_fmt(r["bleu"]), _fmt(r["chrf"]), _fmt(r["chrfpp"])] + ([_fmt(r["comet"], 100)] if has_comet else [])
        cells += [_fmt(r["format_failure_rate"], 100, 1)] + ([_fmt(r.get("source_coverage"), 100, 1)] if has_cov else [])
        cells += [str(r["n"])]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "| Average | Directions | BLEU | chrF | chrF++ |" + (" COMET |" if has_comet else "") + " Format fail % |",
              "|---|---:|---:|---:|---:|" + ("---:|" if has_comet else "") + "---:|"]
    for group, a in results["averages"].items():
        cells = [group, str(a["n_directions"]), _fmt(a["bleu"]), _fmt(a["chrf"]), _fmt(a["chrfpp"])]
        cells += [_fmt(a["comet"], 100)] if has_comet else []
        lines.append("| " + " | ".join(cells + [_fmt(a["format_failure_rate"], 100, 1)]) + " |")
    toks = sorted({(r["bleu_tokenizer"], resolve_language(r["tgt"]).name) for r in results["directions"]})
    lines += ["", "BLEU tokenizers: " + ", ".join(f"{name} `{tok}`" for tok, name in toks) + "."]
    if has_comet:
        lines.append("COMET ×100.")
    timed = [r for r in results["directions"] if r.get("sec_per_100") is not None]
    if timed:
        per100 = sum(r["sec_per_100"] for r in timed) / len(timed)
        lines.append(f"Generation: {per100:.1f} s per 100 sentences per direction on average "
                     f"({s['backend']} backend, {len(timed)} direction(s) generated in this run).")
    if has_seen:
        lines.append("Seen: both languages of the direction were in the adapter's training directions.")
    if results.get("baseline"):
        lines += ["", f"## Against the baseline {results['baseline']['results']}", "", results["baseline"]["table"]]
    return "\n".join(lines) + "\n"


def write_outputs(out: Path, results: dict, outputs: dict[str, list[dict]]) -> dict[str, str]:
    files = {"results.json": out / "results.json", "results.csv": out / "results.csv", "results.md": out / "results.md"}
    (out / "outputs").mkdir(parents=True, exist_ok=True)
    for name, rows in outputs.items():
        path = out / "outputs" / f"{name}.jsonl"
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        files[f"outputs/{name}"] = path
    results["files"] = {k: str(v.relative_to(out)) for k, v in files.items()}
    for name, path in plot_results(results, out / "plots").items():
        results["files"][name] = str(path.relative_to(out))
    (out / "results.json").write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    write_csv(results, out / "results.csv")
    (out / "results.md").write_text(markdown(results), encoding="utf-8")
    return results["files"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_bars(rows: list[str], series: list[tuple[str, list[float | None]]], metrics: list[str],
              path: Path, title: str) -> Path:
    """Grouped bars per row (direction or average), one colour per series, one panel per metric.
    ``series`` items are (label, values laid out metric-major: values[m * len(rows) + j])."""
    plt = _plt()
    n_rows, n_series = len(rows), max(1, len(series))
    fig, axes = plt.subplots(len(metrics), 1, figsize=(max(6.0, 0.5 * n_rows * max(1, n_series) + 2), 2.6 * len(metrics)),
                             squeeze=False)
    width = 0.8 / n_series
    for mi, (m, ax) in enumerate(zip(metrics, axes[:, 0])):
        name, scale = METRICS.get(m, (m, 1.0))
        for si, (label, values) in enumerate(series):
            ys = [(v * scale if v is not None else 0.0) for v in values[mi * n_rows:(mi + 1) * n_rows]]
            ax.bar([j + (si - (n_series - 1) / 2) * width for j in range(n_rows)], ys, width, label=label)
        first_avg = next((j for j, r in enumerate(rows) if r.startswith("avg:")), None)
        if first_avg:  # directions | averages
            ax.axvline(first_avg - 0.5, color="grey", linestyle="--", linewidth=0.8)
        ax.set_ylabel(name, fontsize=8)
        ax.axhline(0, color="black", linewidth=0.5)
        ax.set_xticks(range(n_rows))
        ax.set_xticklabels([display_row(r) for r in rows], rotation=45, ha="right", fontsize=7)
        ax.grid(axis="y", alpha=0.3)
    if n_series > 1 or series and series[0][0]:
        axes[0, 0].legend(fontsize=7, loc="best")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_results(results: dict, plots_dir: Path) -> dict[str, Path]:
    """One evaluation's plots: per-direction score bars, and Δ bars against its baseline."""
    rows = [r["direction"] for r in results["directions"]] + [f"avg:{g}" for g in results["averages"]]
    metrics = [m for m in METRICS if any(metric_value(results, row, m) is not None for row in rows)]
    values = [metric_value(results, row, m) for m in metrics for row in rows]
    files = {"plots/scores.png": plot_bars(rows, [("", values)], metrics, plots_dir / "scores.png",
                                           "scores per direction")}
    base = results.get("baseline")
    if base:
        drows = list(base["deltas"])
        dvals = [base["deltas"][row].get(m) for m in metrics for row in drows]
        files["plots/deltas.png"] = plot_bars(drows, [("", dvals)], metrics, plots_dir / "deltas.png",
                                              f"Δ against {base['results']}")
    return files


SCORE_KEYS = ("bleu", "chrf", "chrfpp", "comet", "format_failure_rate", "source_coverage")


def mean_or_none(values) -> float | None:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


METRICS = {  # key -> (display name, scale for display)
    "chrf": ("chrF", 1.0),
    "chrfpp": ("chrF++", 1.0),
    "bleu": ("BLEU", 1.0),
    "comet": ("COMET", 100.0),
    "format_failure_rate": ("Format fail %", 100.0),
    "source_coverage": ("Source coverage %", 100.0),
}


def metric_value(results: dict, row: str, metric: str) -> float | None:
    if row.startswith("avg:"):
        return (results.get("averages", {}).get(row[4:]) or {}).get(metric)
    for r in results["directions"]:
        if r["direction"] == row:
            return r.get(metric)
    return None


def display_row(row: str) -> str:
    if row.startswith("avg:"):
        return f"avg {row[4:]}"
    src, tgt = row.split("-", 1) if row.count("-") == 1 else (row, "")
    try:
        return short_name(src, tgt)
    except ValueError:
        return row
