"""Parallel data: FLORES-200/-101 and NTREX-128 directories, JSONL, TSV and Hugging Face
datasets, all loaded into one :class:`Example` list with canonical FLORES-200 codes.

Every reader validates before anything trains: misaligned files, empty lines,
bytes that are not UTF-8 and missing language files raise :class:`DataError`
naming the file and the 1-based line (or the language and the path looked for),
so a bad corpus fails in the first second, not in step 300.
"""
from __future__ import annotations

import dataclasses
import json
import random
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from rl.core.languages import parse_directions, resolve_language
from rl.core.errors import UserError

SOURCES = ("flores", "ntrex", "jsonl", "tsv", "hf")


class DataError(UserError, ValueError):
    """A data file is missing, malformed or misaligned."""


@dataclass(frozen=True)
class Example:
    id: str
    src_lang: str  # canonical FLORES-200 code
    tgt_lang: str
    source: str
    reference: str | None
    context: str | None = None  # previous sentence of the same document, in the source language

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def read_text(path: Path) -> str:
    """A whole file, UTF-8 decoded strictly; bad bytes are a DataError naming the file and 1-based line."""
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise DataError(f"{path}:{line}: not valid UTF-8 ({e.reason} at byte {e.start})") from None


def read_lines(path: Path) -> list[str]:
    """One sentence per line, UTF-8 decoded strictly; CRLF and a BOM are tolerated, empty lines are not."""
    lines = read_text(path).removeprefix("\ufeff").split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline
    out = []
    for i, line in enumerate(lines, 1):
        line = line.strip()
        if not line:
            raise DataError(f"{path}:{i}: empty line")
        out.append(line)
    return out


def _check_aligned(columns: dict[Path, list[str]]) -> None:
    (first, n), *rest = ((p, len(v)) for p, v in columns.items())
    for path, m in rest:
        if m != n:
            short, line = (path, m + 1) if m < n else (first, n + 1)
            raise DataError(
                f"misaligned files: {first} has {n} lines but {path} has {m}; "
                f"{short} ends before line {line}"
            )


def _contexts(lines: list[str], doc_ids: list[str] | None) -> list[str | None]:
    if doc_ids is None:
        return [None] * len(lines)
    return [lines[i - 1] if i > 0 and doc_ids[i] == doc_ids[i - 1] else None for i in range(len(lines))]


def _read_doc_ids(path: Path, column: int, n: int, header: bool) -> list[str] | None:
    """Document ids per line, for context; None when the file is absent or does not fit."""
    try:
        rows = read_lines(path)[1 if header else 0 :] if path.is_file() else []
    except DataError:
        return None  # context is a nicety; a broken metadata file must not block the data itself
    ids = [(row.split("\t") + [""])[column] for row in rows]
    return ids if len(ids) == n else None


def _pairs(name: str, directions, file_of, doc_ids_of, limit: int | None) -> list[Example]:
    """Shared body of the directory loaders: read each language file once, check alignment, build examples."""
    cache: dict[str, list[str]] = {}
    doc_ids: dict[int, list[str] | None] = {}

    def lines(lang: str) -> list[str]:
        if lang not in cache:
            cache[lang] = read_lines(file_of(lang))
        return cache[lang]

    examples = []
    for src, tgt in parse_directions(directions):
        src_lines, tgt_lines = lines(src), lines(tgt)
        _check_aligned({file_of(src): src_lines, file_of(tgt): tgt_lines})
        if len(src_lines) not in doc_ids:
            doc_ids[len(src_lines)] = doc_ids_of(len(src_lines))
        ctx = _contexts(src_lines, doc_ids[len(src_lines)])
        for i in range(len(src_lines) if limit is None else min(limit, len(src_lines))):
            examples.append(Example(f"{name}.{i + 1:04d}.{src}-{tgt}", src, tgt, src_lines[i], tgt_lines[i], ctx[i]))
    return examples


def _file_codes(code: str) -> list[str]:
    """Names a FLORES file or hub config may carry: FLORES-200, FLORES+ relabels ("cmn_Hans"), FLORES-101."""
    lang = resolve_language(code)
    plus = [a for a in lang.aliases if re.fullmatch(r"[a-z]{3}_[A-Z][a-z]{3}", a)]
    return list(dict.fromkeys([lang.flores200, *plus, lang.flores101]))


def load_flores(root, directions, split: str = "devtest", limit: int | None = None) -> list[Example]:
    """FLORES-200 / FLORES+ / FLORES-101 directory: ``<split>/<code>.<split>`` (or FLORES+'s
    ``<split>/<split>.<code>``), the code scheme found by which files exist."""
    root = Path(root)
    if not (root / split).is_dir():
        raise DataError(f"FLORES root {root} has no {split}/ directory")

    def file_of(code: str) -> Path:
        lang = resolve_language(code)
        tried = [root / split / name for c in _file_codes(code) for name in (f"{c}.{split}", f"{split}.{c}")]
        for path in tried:
            if path.is_file():
                return path
        raise DataError(
            f"FLORES: no {split} file for {lang.name} ({lang.flores200}); looked for " + ", ".join(map(str, tried))
        )

    metadata = _flores_metadata(root, split)
    doc_ids_of = (lambda n: _read_doc_ids(metadata, 0, n, True)) if metadata else (lambda n: None)
    examples = _pairs(f"flores.{split}", directions, file_of, doc_ids_of, limit)
    if metadata is None and examples:
        _warn_no_context_once(f"FLORES {root}: no metadata_{split}.tsv in {root / 'metadata'} or {root}; "
                              "examples get no previous-sentence context (context-aware prompts go without it)")
    return examples


def _flores_metadata(root: Path, split: str) -> Path | None:
    """The split's metadata TSV (column 0 is the source URL = the document, which gives the
    context): FLORES-200 keeps it in ``metadata/``, FLORES-101 beside ``dev/`` and ``devtest/``."""
    for path in (root / "metadata" / f"metadata_{split}.tsv", root / f"metadata_{split}.tsv"):
        if path.is_file():
            return path
    return None


_warned_no_context = False


def _warn_no_context_once(message: str) -> None:
    """Warn the first time a corpus has no document metadata: the context is then silently
    None for every example, which otherwise looks just like sentences that start a document.
    Once per process: loaders run per split and per evaluation, and one warning says it."""
    global _warned_no_context
    if not _warned_no_context:
        _warned_no_context = True
        warnings.warn(message, stacklevel=3)


def load_ntrex(root, directions, limit: int | None = None) -> list[Example]:
    """NTREX-128: English source ``newstest2019-src.eng.txt`` and references
    ``newstest2019-ref.<code>.txt``; any direction between languages present (all aligned)."""
    root = Path(root)

    def file_of(code: str) -> Path:
        lang = resolve_language(code)
        if lang.flores200 == "eng_Latn":
            tried = [root / "newstest2019-src.eng.txt"]
        else:  # NTREX's own code where the table knows it, else the ISO 639-3 codes NTREX mostly uses
            codes = [lang.ntrex] if lang.ntrex else [c for c in (lang.flores101, *lang.aliases) if re.fullmatch(r"[a-z]{3}", c)]
            tried = [root / f"newstest2019-ref.{c}.txt" for c in dict.fromkeys(codes)]
        for path in tried:
            if path.is_file():
                return path
        raise DataError(f"NTREX: no file for {lang.name} ({lang.flores200}); looked for "
                        + (", ".join(map(str, tried)) or "nothing (no ISO 639-3 code known)"))

    return _pairs("ntrex", directions, file_of, lambda n: _read_doc_ids(root / "DOCUMENT_IDS.tsv", 0, n, False), limit)


def lang_field(obj: dict, key: str, where: str) -> str:
    try:
        return resolve_language(obj[key]).flores200
    except (KeyError, ValueError) as e:
        raise DataError(f"{where}: bad or missing key {key!r} ({e})") from None


def load_jsonl(path, directions=None) -> list[Example]:
    """One JSON object per line: src_lang, tgt_lang, source, and optional reference, id, context.
    Other keys are ignored (the toy world's CoT files carry more)."""
    path = Path(path)
    wanted = set(parse_directions(directions)) if directions is not None else None
    examples = []
    for i, line in enumerate(read_lines(path), 1):
        where = f"{path}:{i}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{where}: invalid JSON ({e.msg})") from None
        if not isinstance(obj, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(obj).__name__}")
        src, tgt = lang_field(obj, "src_lang", where), lang_field(obj, "tgt_lang", where)
        for key, required in (("source", True), ("reference", False), ("context", False), ("id", False)):
            value = obj.get(key)
            if required and (not isinstance(value, str) or not value.strip()):
                raise DataError(f"{where}: key {key!r} must be a non-empty string, got {value!r}")
            if not required and value is not None and not isinstance(value, (str, int) if key == "id" else str):
                raise DataError(f"{where}: key {key!r} must be a string or null, got {value!r}")
        if wanted is None or (src, tgt) in wanted:
            ex_id = str(obj["id"]) if obj.get("id") is not None else f"{path.stem}.{i:04d}"
            examples.append(Example(ex_id, src, tgt, obj["source"], obj.get("reference"), obj.get("context")))
    return examples


def load_tsv(path, direction) -> list[Example]:
    """``source<TAB>reference`` per line, for one direction."""
    path = Path(path)
    pairs = parse_directions(direction)
    if len(pairs) != 1:
        raise DataError(f"{path}: a TSV file holds one direction, got {len(pairs)}: {pairs}")
    (src, tgt), examples = pairs[0], []
    for i, line in enumerate(read_lines(path), 1):
        cols = line.split("\t")
        if len(cols) != 2 or not cols[0].strip() or not cols[1].strip():
            raise DataError(f"{path}:{i}: expected two non-empty tab-separated columns, got {len(cols)}")
        examples.append(Example(f"{path.stem}.{i:04d}.{src}-{tgt}", src, tgt, cols[0].strip(), cols[1].strip()))
    return examples


def load_hf(dataset_id: str, directions, split: str = "devtest", limit: int | None = None) -> list[Example]:
    """A FLORES+-style hub dataset (one config per language, a ``text`` or ``sentence`` column).
    Needs network or a warm HF cache; failure is a DataError that says so."""
    try:
        import datasets  # lazy: heavy, and only this loader needs it
    except ImportError as e:
        raise DataError(f"data.source=hf needs the 'datasets' package ({e})") from None
    cache: dict[str, list[str]] = {}

    def lines(code: str) -> list[str]:
        lang = resolve_language(code)
        if lang.flores200 in cache:
            return cache[lang.flores200]
        errors = []
        for config in _file_codes(code):
            try:
                ds = datasets.load_dataset(dataset_id, config, split=split)
            except Exception as e:  # noqa: BLE001 -- offline, unknown config, ...: report all below
                errors.append(f"{config}: {type(e).__name__}: {e}")
                continue
            column = next((c for c in ("text", "sentence") if c in ds.column_names), None)
            if column is None:
                raise DataError(f"HF {dataset_id} [{config}/{split}]: no 'text' or 'sentence' column in {ds.column_names}")
            cache[lang.flores200] = [str(row[column]).strip() for row in ds]
            return cache[lang.flores200]
        raise DataError(
            f"HF dataset {dataset_id!r}: could not load {lang.name} split {split!r} "
            f"(offline? no such config?): " + "; ".join(errors)[:600]
        )

    examples = []
    for src, tgt in parse_directions(directions):
        src_lines, tgt_lines = lines(src), lines(tgt)
        if len(src_lines) != len(tgt_lines):
            raise DataError(f"HF {dataset_id}: {src} has {len(src_lines)} rows but {tgt} has {len(tgt_lines)}")
        for i in range(len(src_lines) if limit is None else min(limit, len(src_lines))):
            examples.append(Example(f"hf.{split}.{i + 1:04d}.{src}-{tgt}", src, tgt, src_lines[i], tgt_lines[i]))
    return examples


def first_n_per_direction(examples: Iterable[Example], limit: int | None) -> list[Example]:
    counts: dict[tuple[str, str], int] = {}
    out = []
    for ex in examples:
        key = (ex.src_lang, ex.tgt_lang)
        if limit is None or counts.get(key, 0) < limit:
            counts[key] = counts.get(key, 0) + 1
            out.append(ex)
    return out


def load_examples(
    source: str, path, directions, split: str = "devtest", limit: int | None = None, seed: int | None = None
) -> list[Example]:
    """Dispatch on ``data.source``. ``limit`` keeps the first N per direction (file order), so the
    chosen sentences never depend on ``seed``; a seed then shuffles the result deterministically."""
    if limit is not None and limit < 1:
        raise DataError(f"limit must be >= 1 or None, got {limit}")
    if source == "toy":
        raise DataError("data.source='toy' is built by rl.tools.toy, which writes the toy world's JSONL; load that file with source='jsonl'")
    if source not in SOURCES:
        raise DataError(f"unknown data source {source!r}; choose one of {', '.join(SOURCES)} (or 'toy' via rl.tools.toy)")
    if path is None:
        raise DataError(f"data source {source!r} needs a path (a directory, file or dataset id)")
    if source != "hf" and not Path(path).exists():
        raise DataError(f"data source {source!r}: {path} does not exist")
    if source == "flores":
        examples = load_flores(path, directions, split, limit)
    elif source == "ntrex":
        examples = load_ntrex(path, directions, limit)
    elif source == "jsonl":
        examples = first_n_per_direction(load_jsonl(path, directions), limit)
    elif source == "tsv":
        examples = first_n_per_direction(load_tsv(path, directions), limit)
    else:
        examples = load_hf(str(path), directions, split, limit)
    if not examples:
        raise DataError(f"no examples for directions {directions!r} in {source} data at {path}")
    if seed is not None:
        random.Random(seed).shuffle(examples)
    return examples


def write_jsonl(examples: Iterable[Example], path) -> Path:
    """The inverse of :func:`load_jsonl` (UTF-8, one object per line)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for ex in examples:
            f.write(json.dumps(ex.to_dict(), ensure_ascii=False) + "\n")
    return path
