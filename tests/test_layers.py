"""The layering of rl/ and rewards/ (README "Layout"): imports point down only, and no
module imports itself back through a cycle. Read from the source (ast), so lazy imports
inside functions count too."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# layer -> the layers it may import (besides itself). Entry scripts (rl/*.py) sit on top.
ALLOWED = {
    "rl.core": set(),
    "rewards": {"rl.core"},
    "rl.rollout": {"rl.core"},
    "rl.learn": {"rl.core", "rl.rollout", "rewards"},
    "rl.eval": {"rl.core", "rl.rollout", "rewards"},
    "rl.coldstart": {"rl.core", "rl.rollout", "rewards"},
    "rl.tools": {"rl.core", "rl.rollout", "rewards", "rl.learn", "rl.eval", "rl.coldstart"},
    "rl.bench": {"rl.core", "rl.rollout", "rewards", "rl.learn", "rl.eval", "rl.tools", "rl.coldstart"},
    "entry": {"rl.core", "rl.rollout", "rewards", "rl.learn", "rl.eval", "rl.tools", "rl.coldstart"},
}
LAYERS = sorted((k for k in ALLOWED if k != "entry"), key=len, reverse=True)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> str | None:
    for layer in LAYERS:
        if module == layer or module.startswith(layer + "."):
            return layer
    if module.startswith("rl.") and module.count(".") == 1:
        return "entry"  # rl/train.py, rl/sft.py, rl/evaluate.py, ...
    return None if module != "rl" else "rl.core"  # rl/__init__.py: a warnings filter, nothing else


def project_modules() -> dict[str, Path]:
    files = [*REPO.glob("rl/**/*.py"), *REPO.glob("rewards/**/*.py")]
    return {module_name(f): f for f in files}


def imports_of(path: Path, modules: dict[str, Path]) -> set[str]:
    """Project modules that ``path`` imports (``from rl.core import config`` -> rl.core.config)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                     for a in node.names]
        else:
            continue
        found.update(n for n in names if n in modules)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {m: imports_of(p, modules) - {m} for m, p in modules.items()}


def test_every_module_has_a_layer():
    assert [m for m in project_modules() if layer_of(m) is None] == []


def test_imports_point_down_only():
    bad = []
    for module, targets in import_graph().items():
        src = layer_of(module)
        for target in targets:
            dst = layer_of(target)
            if dst != src and dst not in ALLOWED[src] and target != "rl":
                bad.append(f"{module} ({src}) imports {target} ({dst})")
            if src == "entry" and dst == "entry":
                bad.append(f"entry script {module} imports entry script {target}")
    assert bad == [], "\n".join(sorted(bad))


def test_no_import_cycles():
    graph = import_graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [node, nxt]) if nxt in stack else f"{node} -> {nxt}")
            elif nxt not in state:
                visit(nxt, stack + [node])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    assert cycles == [], "\n".join(cycles)


@pytest.mark.parametrize("layer", ["rl.core", "rl.rollout", "rewards", "rl.learn", "rl.eval", "rl.coldstart"])
def test_training_path_never_imports_tools_or_benchmarks(layer):
    graph = import_graph()
    offenders = [f"{m} -> {t}" for m, ts in graph.items() if layer_of(m) == layer
                 for t in ts if layer_of(t) in ("rl.tools", "rl.bench", "entry")]
    assert offenders == []


def test_no_sys_path_edits_outside_entry_scripts():
    offenders = [m for m, p in project_modules().items()
                 if layer_of(m) != "entry" and "sys.path.insert" in p.read_text()]
    assert offenders == []


def _count(pattern: str) -> list[str]:
    import re

    rx = re.compile(pattern)
    return [f"{p.relative_to(REPO)}:{i}" for p in [*REPO.glob("rl/**/*.py"), *REPO.glob("rewards/**/*.py")]
            if layer_of(module_name(p)) != "rl.bench"
            for i, line in enumerate(p.read_text().splitlines(), 1) if rx.search(line)]


@pytest.mark.parametrize("what, pattern", [
    ("dtype map", r'"bfloat16": torch\.bfloat16'),
    ("adapter check", r"^def check_adapter\("),
    ("Ray bootstrap", r"^\s+ray\.init\("),
])
def test_knowledge_lives_once(what, pattern):
    """One dtype map, one adapter check, one Ray bootstrap (benchmarks may start their own cluster)."""
    found = _count(pattern)
    assert len(found) == (2 if what == "Ray bootstrap" else 1), f"{what}: {found}"  # ray.init: join or start, one function
