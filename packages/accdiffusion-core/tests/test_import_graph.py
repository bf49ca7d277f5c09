"""The core's modules import each other without a circle, lazy imports included."""

from __future__ import annotations

import ast
from pathlib import Path

import accdiffusion

ROOT = Path(accdiffusion.__file__).parent


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def import_graph() -> dict[str, set[str]]:
    """Module -> the core modules it imports relatively, at any depth of the
    file (imports inside functions count). The package's own ``__init__``
    (which loads names on first use) is left out."""
    mods = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        if not name:
            continue
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ImportFrom) or not node.level:
                continue
            base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
            target = ".".join(base + ([node.module] if node.module else []))
            candidates = [target] if node.module else []
            candidates += [f"{target}.{a.name}" if target else a.name for a in node.names]
            deps.update(c for c in candidates if c in mods and c and c != name)
        graph[name] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_cycle_finder_finds_a_planted_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_core_has_no_import_circle():
    graph = import_graph()
    assert "models.unet" in graph and "plugins" in graph["sampler"]  # the graph sees the package
    assert cycles(graph) == []


def test_the_model_package_and_the_stage_layer_import_nothing_above_them():
    graph = import_graph()
    above = {"plugins", "sampler", "api", "output", "cli", "ui", "batch", "loading", "builtins", "executor",
             "distributed", "preflight"}
    for name, deps in graph.items():
        if name.startswith("models") or name in ("registration", "hookspecs", "stages", "types", "images",
                                                  "configs", "attention", "structure"):
            assert not deps & above, f"{name} imports {sorted(deps & above)}"
