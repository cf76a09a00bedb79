"""The import graph of src/pgolf has a declared layer order and no cycles (issue 14).

Every module's imports are read from its source (ast: module-level *and* function-level imports, relative imports
resolved), so a lazy import cannot hide an upward edge or a cycle. Layers, bottom to top:

    0  data, model, train, and the shared utilities (pgolf, log, io, progress, fields: config value parsing/ranges)
    1  quant        (above model: QAT and the Hessian collector hook model modules)
    2  pack         (above quant: the container stores QuantizedState)
    3  eval         (above pack: scores an artifact)
    4  run, cli, config (RunConfig gathers every stage's config), overrides, submission, experiments, data.cli
       (the top: the verbs, the single-file script's entry and their tooling)

A module may import its own layer or a lower one, never a higher one; within a layer there may be no cycle.

    python -m pytest tests/test_layers.py -q
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = SRC / "pgolf"

LAYERS: tuple[tuple[int, tuple[str, ...]], ...] = (
    # (layer, module-name prefixes); the longest matching prefix wins
    (0, ("pgolf", "pgolf.log", "pgolf.io", "pgolf.progress", "pgolf.fields", "pgolf.data", "pgolf.model",
         "pgolf.train")),
    (1, ("pgolf.quant",)),
    (2, ("pgolf.pack",)),
    (3, ("pgolf.eval",)),
    (4, ("pgolf.run", "pgolf.cli", "pgolf.commands", "pgolf.config", "pgolf.overrides", "pgolf.submission",
         "pgolf.experiments", "pgolf.data.cli", "pgolf.presets", "pgolf.record_env")),
)
LAYER_NAMES = {0: "data/model/train", 1: "quant", 2: "pack", 3: "eval", 4: "run/cli/experiments"}

# Known edges in other areas, under repair when this test landed (issue 14). Each entry is (importer, imported);
# an entry here is a bug to fix, not a permission: delete it with the fix, and the test then guards the fix.
ALLOWED_UPWARD: frozenset[tuple[str, str]] = frozenset()
ALLOWED_CYCLE_EDGES: frozenset[tuple[str, str]] = frozenset()  # one edge per cycle (a DFS back edge)


def module_files() -> dict[str, Path]:
    out = {}
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(SRC).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def layer_of(module: str) -> int:
    best, layer = -1, None
    for lvl, prefixes in LAYERS:
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best:
                best, layer = len(p), lvl
    assert layer is not None, f"module {module} has no declared layer; add it to LAYERS in tests/test_layers.py"
    return layer


def imports_of(module: str, path: Path, known: set[str]) -> set[str]:
    """pgolf modules imported anywhere in `path` (resolved to the deepest known module)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_pkg = path.name == "__init__.py"
    base = module.split(".") if is_pkg else module.split(".")[:-1]
    found: set[str] = set()

    def resolve(name: str) -> str | None:
        parts = name.split(".")
        while parts:
            cand = ".".join(parts)
            if cand in known:
                return cand
            parts.pop()
        return None

    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                root = ".".join(base[: len(base) - node.level + 1])
                mod = f"{root}.{node.module}" if node.module else root
            else:
                mod = node.module or ""
            names = [f"{mod}.{a.name}" for a in node.names] + [mod]
        for n in names:
            if n == "pgolf" or n.startswith("pgolf."):
                r = resolve(n)
                if r is not None and r != module:
                    found.add(r)
    # `from pgolf.x import y` names both pgolf.x.y and the package pgolf.x: the edge is to the submodule, so a
    # package is dropped when one of its submodules is imported too
    return {m for m in found if not any(o.startswith(m + ".") for o in found)}


@functools.lru_cache(maxsize=1)
def _graph() -> dict[str, frozenset[str]]:
    files = module_files()
    known = set(files)
    return {m: frozenset(imports_of(m, p, known)) for m, p in files.items()}


def import_graph() -> dict[str, set[str]]:
    return {m: set(d) for m, d in _graph().items()}




def test_every_module_has_a_layer():
    for m in module_files():
        layer_of(m)


def test_no_module_imports_a_higher_layer():
    bad = []
    for m, deps in sorted(import_graph().items()):
        for d in sorted(deps):
            if layer_of(d) > layer_of(m) and (m, d) not in ALLOWED_UPWARD:
                bad.append(f"{m} ({LAYER_NAMES[layer_of(m)]}) imports {d} ({LAYER_NAMES[layer_of(d)]})")
    assert not bad, "upward imports:\n" + "\n".join(bad)


def test_no_import_cycles():
    graph = {m: {d for d in deps if (m, d) not in ALLOWED_CYCLE_EDGES} for m, deps in import_graph().items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    import sys

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(graph):
        if v not in index:
            strong(v)
    assert not cycles, "import cycles:\n" + "\n".join(" ↔ ".join(c) for c in cycles)


def test_the_checker_sees_lazy_and_relative_imports(tmp_path):
    """A function-level import is an edge (a lazy import cannot hide a cycle)."""
    src = "def f():\n    from pgolf.quant.apply import quantize_state_dict\n    from . import gptq\n"
    path = tmp_path / "x.py"
    path.write_text(src)
    got = imports_of("pgolf.quant.lqer", path, {"pgolf", "pgolf.quant", "pgolf.quant.apply", "pgolf.quant.gptq",
                                                "pgolf.quant.lqer"})
    assert got == {"pgolf.quant.apply", "pgolf.quant.gptq"}


@pytest.mark.parametrize("module,layer", [("pgolf.quant.fit", 1), ("pgolf.pack.fit", 2), ("pgolf.data.cli", 4),
                                          ("pgolf.data.loader", 0), ("pgolf", 0)])
def test_declared_layers(module, layer):
    assert layer_of(module) == layer


def test_allow_lists_hold_only_edges_that_exist():
    """An allow-list entry whose import is gone must be deleted, so the list only ever shrinks."""
    graph = import_graph()
    stale = [e for e in ALLOWED_UPWARD | ALLOWED_CYCLE_EDGES if e[1] not in graph.get(e[0], set())]
    assert not stale, f"remove these fixed edges from tests/test_layers.py: {sorted(stale)}"


def test_quant_and_pack_are_clean():
    """The quant stage imports nothing above it and pack imports no tooling (issue 14's budget fit / budget.py)."""
    graph = import_graph()
    for m, deps in graph.items():
        if m.startswith("pgolf.quant"):
            assert all(layer_of(d) <= 1 for d in deps), (m, sorted(d for d in deps if layer_of(d) > 1))
        if m.startswith("pgolf.pack"):
            assert not any(d.startswith(("pgolf.experiments", "pgolf.eval", "pgolf.run", "pgolf.cli")) for d in deps), m


def test_no_source_file_is_over_400_lines():
    """Issue 14: small files with one job; a file past 400 lines is split, not grown."""
    long = {str(p.relative_to(SRC)): n for p in PKG.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 400}
    assert not long, f"over 400 lines: {long}"
