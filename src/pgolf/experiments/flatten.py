"""The counted script as one module namespace: the shaken modules concatenated in import order, every import
between them replaced by a direct reference (issue 14).

    flat = flatten(shaken)             # {"pgolf/x.py": source, ...} (pgolf.experiments.bundle)
    ast.unparse(flat.module())         # one module: no `import pgolf`, no import hook, no file table

- **Order**: a module comes after the modules its module-level code imports (and its parent packages), as Python
  would have run them; a function-level import is followed when it closes no cycle. A cycle through module-level
  imports is refused (`FlattenError`, file:line).
- **References**: `from pgolf.x import a [as b]`, `import pgolf.x [as m]` + `m.f` / `pgolf.x.f`, relative imports,
  imports inside function bodies and "pgolf.x:name" registry strings (eval/modes.py MODES) become the name `a`
  has in the one namespace. Scopes are Python's: a function's locals, a class body, a comprehension, `global` and
  `nonlocal` are resolved, so a local never captures a rewritten reference.
- **Names**: a module-level name keeps its name unless two modules bind it to different things or another module
  reads a builtin of that name; then it becomes `name_<module>`. The same stdlib import in several modules is one
  binding, imported once. `__name__` becomes the module's name as a constant (so `if __name__ == "__main__":` of a
  library module stays dead); `__file__` and `m.__file__` are the script's. `__all__` goes (nothing star-imports).
- **Refused** (`FlattenError` naming file:line), where one namespace cannot keep the meaning: a module object used
  as a value (`getattr(m, ...)`, passed, stored), `m.attr = ...`, rebinding an imported name, star imports, and an
  import of a pgolf module that is not in the script outside a function (inside one it becomes
  `raise ImportError(...)`, as the import hook answered). `if TYPE_CHECKING:` blocks go.
- **Shaking again** (`shake_flat`): with no module attribute left, a definition only an attribute of its name kept
  (`obj.step` vs a module's `def step`) goes, and so does a standard-library import nothing uses.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from typing import Mapping

from pgolf.experiments.flatscope import (  # noqa: F401 (FlattenError: the API)
    FlattenError, _alias_of, _bindings, _body, _Context, _pgolf_module, _REF, _Rewrite,
)
from pgolf.experiments.modnames import module_name


@dataclass
class _Module:
    name: str
    rel: str
    tree: ast.Module
    bound: set[str]
    aliases: dict[str, tuple]
    shared: dict[str, tuple]  # name → import key, for unconditional top-level imports of other packages
    deps: list[tuple[str, bool, int]]  # (module, module-level?, line)


@dataclass
class Flat:
    """The one-module script: `parts[rel]` are module `rel`'s statements, in `order`; `head` the __future__
    imports, `tail` the entry's call."""

    order: list[str]
    parts: dict[str, list[ast.stmt]]
    head: list[ast.stmt]
    tail: list[ast.stmt]
    names: dict[tuple, str]  # identity → its name in the one namespace

    def module(self) -> ast.Module:
        body = self.head + [s for r in self.order for s in self.parts[r] if not isinstance(s, ast.Pass)] + self.tail
        return ast.fix_missing_locations(ast.Module(body=body, type_ignores=[]))


def _import_key(node: ast.Import | ast.ImportFrom, a: ast.alias) -> tuple:
    """The identity of a name another package's import binds: the same in every module that imports it so."""
    if isinstance(node, ast.Import):
        return ("mod", a.name, a.asname) if a.asname else ("mod", a.name.split(".")[0], None)
    return ("from", node.module, a.name, a.asname)


def _collect(rel: str, source: str, modules: set[str]) -> _Module:
    name, is_pkg = module_name(rel), rel.endswith("/__init__.py")
    tree = ast.parse(source, filename=rel)
    tree.body = [s for s in tree.body if not _type_checking_block(s) and not (
        isinstance(s, ast.ImportFrom) and s.module == "__future__") and not _dunder_all(s)]
    bound, _, _, pg = _bindings(tree.body)
    aliases: dict[str, tuple] = {}
    for node in pg:
        for mod, a in _pgolf_module(node, name, is_pkg):
            _alias_of(node, mod, a, modules, aliases, rel)
    clash = bound & set(aliases)
    if clash:
        raise FlattenError(f"{rel}: rebinds the imported name {sorted(clash)[0]!r} at module level")
    tops = [s for s in tree.body if isinstance(s, (ast.Import, ast.ImportFrom)) and s not in pg]
    other = _bindings([s for s in tree.body if s not in tops])[0]
    shared: dict[str, tuple] = {}
    for s in tops:
        for a in s.names:
            k, key = a.asname or a.name.split(".")[0], _import_key(s, a)
            shared[k] = key if shared.get(k, key) == key else ("clash",)
    shared = {k: v for k, v in shared.items() if k not in other and v != ("clash",)}
    deps: list[tuple[str, bool, int]] = []

    def walk(n: ast.AST, top: bool) -> None:
        if isinstance(n, (ast.Import, ast.ImportFrom)):
            for mod, a in _pgolf_module(n, name, is_pkg):
                target = mod if isinstance(n, ast.Import) else (
                    f"{mod}.{a.name}" if f"{mod}.{a.name}" in modules else mod)
                deps.append((target, top, n.lineno))
        elif isinstance(n, ast.Constant) and isinstance(n.value, str) and (m := _REF.match(n.value)):
            if m.group(1) in modules:
                deps.append((m.group(1), top, getattr(n, "lineno", 0)))
        for c in ast.iter_child_nodes(n):
            walk(c, top and not isinstance(c, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))
    walk(tree, True)
    return _Module(name, rel, tree, bound, aliases, shared, deps)


def _dunder_all(s: ast.stmt) -> bool:
    return isinstance(s, (ast.Assign, ast.AnnAssign, ast.AugAssign)) and any(
        getattr(t, "id", None) == "__all__" for t in (s.targets if isinstance(s, ast.Assign) else [s.target]))


def _type_checking_block(s: ast.stmt) -> bool:
    t = getattr(s, "test", None)
    return isinstance(s, ast.If) and not s.orelse and (
        getattr(t, "id", None) == "TYPE_CHECKING" or getattr(t, "attr", None) == "TYPE_CHECKING")


def _order(mods: dict[str, _Module], entry: str) -> list[str]:
    """Modules in the order Python would finish running them from `entry` (see the module docstring)."""
    state: dict[str, str] = {}
    order: list[str] = []

    def visit(name: str, hard: bool, where: str) -> None:
        if state.get(name) == "done" or name not in mods:
            return
        if state.get(name) == "active":
            if hard:
                raise FlattenError(f"{where}: import cycle through module-level imports ({name})")
            return
        state[name] = "active"
        parts = name.split(".")
        for i in range(1, len(parts)):
            visit(".".join(parts[:i]), False, where)
        m = mods[name]
        for dep, top, line in sorted(m.deps, key=lambda d: not d[1]):
            visit(dep, top, f"{m.rel}:{line}")
        state[name] = "done"
        order.append(name)

    for name in [entry, *sorted(mods)]:
        visit(name, True, name)
    return order


def flatten(sources: Mapping[str, str], entry: str = "pgolf.submission", main: str = "main") -> Flat:
    """`sources` ({"pgolf/x.py": text}) as one module whose last statement runs `entry`'s `main` as `__main__`."""
    py = {k: v for k, v in sources.items() if k.endswith(".py")}
    names_of = {module_name(k): k for k in py}
    if entry not in names_of:
        raise FlattenError(f"entry module {entry!r} is not in the sources")
    forced: set[tuple] = set()
    reserved: set[str] = set()
    for _ in range(6):
        mods = {module_name(k): _collect(k, v, set(names_of)) for k, v in py.items()}
        order = _order(mods, entry)
        names = _names(mods, [entry, *order], forced, reserved)
        ctx = _Context(mods, names)
        parts = {}
        for name in order:
            m = mods[name]
            parts[m.rel] = _body([_Rewrite(ctx, m).visit(s) for s in m.tree.body])
        clash = {i for i, n in names.items() if n in ctx.free} - forced
        if not ctx.conflicts - forced and not clash:
            break
        forced |= ctx.conflicts | clash
        reserved |= ctx.free
    else:
        raise FlattenError("internal error: flat names do not settle")
    if main not in mods[entry].bound:
        raise FlattenError(f"{names_of[entry]}: no module-level {main!r} to run")
    head = [ast.ImportFrom("__future__", [ast.alias("annotations")], 0)] if any(
        isinstance(s, ast.ImportFrom) and s.module == "__future__" for v in py.values()
        for s in ast.parse(v).body[:3]) else []
    run = ast.Call(ast.Name(names[ctx.ident(mods[entry], main)], ast.Load()), [], [])
    tail = [ast.If(ast.Compare(ast.Name("__name__", ast.Load()), [ast.Eq()], [ast.Constant("__main__")]),
                   [ast.Raise(ast.Call(ast.Name("SystemExit", ast.Load()), [run], []), None)], [])]
    return Flat([names_of[n] for n in order], parts, head, tail, names)


def _names(mods: dict[str, _Module], priority: list[str], forced: set[tuple], reserved: set[str]) -> dict:
    """Identity → name: its own unless another identity took it first, it is forced (a local would capture it,
    or a builtin of that name is read), then `name_<module>`."""
    out: dict[tuple, str] = {}
    taken: set[str] = set(reserved)
    by_name: dict[str, list[tuple]] = {}
    for mod in dict.fromkeys(priority):
        m = mods[mod]
        for n in sorted(m.bound):
            i = m.shared[n] if n in m.shared else (m.name, n)
            if i not in by_name.setdefault(n, []):
                by_name[n].append(i)
    for n, ids in by_name.items():
        for k, i in enumerate(ids):
            if k == 0 and i not in forced and n not in reserved:
                out[i] = n
                taken.add(n)
    for n, ids in by_name.items():
        for i in ids:
            if i in out:
                continue
            stem = f"{n}_{i[0].rsplit('.', 1)[-1]}" if i[0] not in ("mod", "from") else f"{n}_"
            new, c = stem, 1
            while new in taken or new in by_name:
                new, c = f"{stem}{c}", c + 1
            out[i] = new
            taken.add(new)
    return out


def shake_flat(flat: Flat) -> Flat:
    """`flat` without the module-level definitions nothing references by name. The per-module shaking
    (pgolf.experiments.closure) must keep a definition whenever an attribute of its name occurs (`m.f` may be it);
    in one namespace no module attribute is left, so only names and identifier-like strings keep one. Standard-library
    imports nothing uses go too."""
    from pgolf.experiments.closure import _defined_name

    def uses(node: ast.AST) -> set[str]:
        return {n.id if isinstance(n, ast.Name) else n.value for n in ast.walk(node) if isinstance(n, ast.Name) or (
            isinstance(n, ast.Constant) and isinstance(n.value, str) and n.value.isidentifier())}

    stmts = [(s, _defined_name(s), uses(s)) for s in (*flat.head, *[x for r in flat.order for x in flat.parts[r]],
                                                        *flat.tail)]
    used = set().union(*(u for _, name, u in stmts if name is None))
    kept: set[str] = set()
    while new := {name for _, name, _ in stmts if name and name in used} - kept:
        kept |= new
        used = used.union(*(u for _, name, u in stmts if name in new))
    parts = {r: [s for s in flat.parts[r] if _defined_name(s) in kept or _defined_name(s) is None]
             for r in flat.order}
    for r in flat.order:  # and a standard-library import whose names nothing uses (importing one has no effect)
        for s in parts[r]:
            if isinstance(s, (ast.Import, ast.ImportFrom)):
                std = {a.name: (a.name if isinstance(s, ast.Import) else s.module or "").split(".")[0]
                       in sys.stdlib_module_names for a in s.names}
                s.names = [a for a in s.names if (a.asname or a.name.split(".")[0]) in used or not std[a.name]]
        parts[r] = [s for s in parts[r] if not (isinstance(s, (ast.Import, ast.ImportFrom)) and not s.names
                                                or _unused_import_choice(s, used))]
    return Flat(flat.order, parts, flat.head, flat.tail, flat.names)


def _unused_import_choice(stmt: ast.stmt, used: set[str]) -> bool:
    """A module-level `if`/`try` that only chooses between imports (`if sys.version_info >= (3, 11): import tomllib
    else: import tomli as tomllib`) whose names nothing uses: it can go (its condition is a version check, a
    failed import its handler's alternative)."""
    if not isinstance(stmt, (ast.If, ast.Try)):
        return False
    blocks = [stmt.body, stmt.orelse] + ([h.body for h in stmt.handlers] + [stmt.finalbody]
                                         if isinstance(stmt, ast.Try) else [])
    leaves = [s for b in blocks for s in b]
    if not leaves or not all(isinstance(s, (ast.Import, ast.ImportFrom)) for s in leaves):
        return False
    if isinstance(stmt, ast.If) and not all(isinstance(n, (ast.Compare, ast.Attribute, ast.Name, ast.Constant,
                                                           ast.Tuple, ast.Load, ast.cmpop)) for n in ast.walk(stmt.test)):
        return False
    return not {a.asname or a.name.split(".")[0] for s in leaves for a in s.names} & used
