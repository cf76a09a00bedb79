"""Scopes and rewriting for pgolf.experiments.flatten: which binding each name of a module refers to, as
Python resolves it (function locals, class bodies, comprehensions, `global`/`nonlocal`), and each pgolf import
resolved to a name of the one namespace (`_Rewrite`)."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from typing import Any

from pgolf.experiments.modnames import from_module

PACKAGE = "pgolf"
_REF = re.compile(r"^(pgolf(?:\.\w+)+):(\w+)$")
_COMPS = (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)
_DEFS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


class FlattenError(ValueError):
    """A construct the one-namespace script cannot keep, with the file and line that uses it."""


def _pgolf_module(node: ast.Import | ast.ImportFrom, current: str, is_pkg: bool) -> list[tuple[str, ast.alias]]:
    """(absolute module, alias) of each pgolf name an import statement loads ([] for other packages)."""
    if isinstance(node, ast.Import):
        return [(a.name, a) for a in node.names if a.name.split(".")[0] == PACKAGE]
    mod = from_module(node, current, is_pkg)
    return [(mod, a) for a in node.names] if mod.split(".")[0] == PACKAGE else []


def _bindings(nodes: list[ast.AST]) -> tuple[set[str], set[str], set[str], list[ast.stmt]]:
    """(bound names, `global` names, `nonlocal` names, pgolf-free import statements excepted: the pgolf import
    statements) of the scope whose direct code is `nodes` (nested function/class bodies not entered)."""
    bound: set[str] = set()
    glob: set[str] = set()
    nonloc: set[str] = set()
    pg: list[ast.stmt] = []

    def walk(n: ast.AST) -> None:
        if isinstance(n, _DEFS):
            bound.add(n.name)
            for c in (*n.decorator_list, *(n.bases + [k.value for k in n.keywords] if isinstance(n, ast.ClassDef)
                                          else _outer_parts(n))):
                walk(c)
            return
        if isinstance(n, ast.Lambda):
            for c in _outer_parts(n):
                walk(c)
            return
        if isinstance(n, _COMPS):
            walk(n.generators[0].iter)
            bound.update(w.target.id for w in ast.walk(n) if isinstance(w, ast.NamedExpr))
            return
        if isinstance(n, ast.Name) and not isinstance(n.ctx, ast.Load):
            bound.add(n.id)
        elif isinstance(n, (ast.Import, ast.ImportFrom)):
            if any(a.name == "*" for a in n.names):
                pg.append(n)  # refused by the rewriter
                return
            if (isinstance(n, ast.ImportFrom) and (n.level or (n.module or "").split(".")[0] == PACKAGE)) or (
                    isinstance(n, ast.Import) and any(a.name.split(".")[0] == PACKAGE for a in n.names)):
                pg.append(n)
            else:
                bound.update(a.asname or a.name.split(".")[0] for a in n.names)
        elif isinstance(n, ast.ExceptHandler) and n.name:
            bound.add(n.name)
        elif isinstance(n, (ast.MatchAs, ast.MatchStar)) and n.name:
            bound.add(n.name)
        elif isinstance(n, ast.MatchMapping) and n.rest:
            bound.add(n.rest)
        elif isinstance(n, ast.Global):
            glob.update(n.names)
        elif isinstance(n, ast.Nonlocal):
            nonloc.update(n.names)
        for c in ast.iter_child_nodes(n):
            walk(c)

    for n in nodes:
        walk(n)
    return bound - glob, glob, nonloc, pg


def _outer_parts(fn: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> list[ast.AST]:
    """What a def evaluates in the enclosing scope: defaults and annotations."""
    a = fn.args
    out: list[ast.AST] = [*a.defaults, *(d for d in a.kw_defaults if d is not None)]
    out += [x.annotation for x in (*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg)
            if x is not None and x.annotation is not None]
    return out + ([fn.returns] if getattr(fn, "returns", None) is not None else [])


def _arg_names(a: ast.arguments) -> set[str]:
    return {x.arg for x in (*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg) if x is not None}


@dataclass
class _Scope:
    kind: str  # "module" | "function" | "class"
    parent: _Scope | None
    bound: set[str] = field(default_factory=set)
    glob: set[str] = field(default_factory=set)
    aliases: dict[str, tuple] = field(default_factory=dict)  # pgolf import aliases: ("mod", m) | ("ref", m, a)


def _alias_of(node: ast.stmt, mod: str, a: ast.alias, modules: set[str], out: dict[str, tuple], rel: str) -> None:
    if a.name == "*":
        raise FlattenError(f"{rel}:{node.lineno}: `from {mod} import *` cannot be flattened (name the imports)")
    if isinstance(node, ast.Import):
        out[a.asname or PACKAGE] = ("mod", a.name) if a.asname else ("mod", PACKAGE)
    elif f"{mod}.{a.name}" in modules:
        out[a.asname or a.name] = ("mod", f"{mod}.{a.name}")
    else:
        out[a.asname or a.name] = ("ref", mod, a.name)


class _Context:
    def __init__(self, mods: dict[str, Any], names: dict[tuple, str]):
        self.mods, self.names = mods, names
        self.free: set[str] = set()
        self.conflicts: set[tuple] = set()
        self.emitted: set[tuple] = set()

    def ident(self, m: Any, name: str) -> tuple:
        return m.shared[name] if name in m.shared else (m.name, name)

    def alias(self, t: tuple, where: str) -> tuple:
        if t[0] == "mod":
            return t if t[1] in self.mods else ("missing", t[1])
        return self.lookup(t[1], t[2], where)

    def lookup(self, mod: str, attr: str, where: str, depth: int = 0) -> tuple:
        """What `mod.attr` is in the one namespace: ("name", identity), ("mod", m), ("missing", m), ("const", v)
        or ("file",)."""
        m = self.mods.get(mod)
        if m is None:
            return ("missing", mod)
        if attr in m.aliases and depth < 50:
            t = m.aliases[attr]
            return t if t[0] == "mod" else self.lookup(t[1], t[2], where, depth + 1)
        if attr in m.bound:
            return ("name", self.ident(m, attr))
        if f"{mod}.{attr}" in self.mods:
            return ("mod", f"{mod}.{attr}")
        if attr in ("__file__", "__name__"):
            return ("file",) if attr == "__file__" else ("const", mod)
        raise FlattenError(f"{where}: module {mod} has no module-level name {attr!r} in this script")


class _Rewrite(ast.NodeTransformer):
    """One module's statements with every pgolf import resolved to a name of the one namespace."""

    def __init__(self, ctx: _Context, m: Any):
        self.ctx, self.m = ctx, m
        self.scope = _Scope("module", None, m.bound, set(), dict(m.aliases))

    def err(self, node: ast.AST, msg: str) -> FlattenError:
        return FlattenError(f"{self.m.rel}:{getattr(node, 'lineno', '?')}: {msg}")

    def where(self, node: ast.AST) -> str:
        return f"{self.m.rel}:{getattr(node, 'lineno', '?')}"

    def _chain(self) -> list[_Scope]:
        out, s = [], self.scope
        while s is not None:
            if s.kind != "class" or s is self.scope or s.parent is None:
                out.append(s)
            s = s.parent
        return out

    def resolve(self, name: str, node: ast.AST) -> tuple[tuple | None, bool]:
        """(target, or None for a local; whether an import alias gave it)."""
        for s in self._chain():
            if s.kind == "module" or name in s.glob:
                break
            if name in s.aliases:
                return self.ctx.alias(s.aliases[name], self.where(node)), True
            if name in s.bound:
                return None, False
        if name in self.m.aliases:
            return self.ctx.alias(self.m.aliases[name], self.where(node)), True
        if name in self.m.bound:
            return ("name", self.ctx.ident(self.m, name)), False
        if name == "__name__":
            return ("const", self.m.name), False
        self.ctx.free.add(name)
        return ("free", name), False

    def target(self, t: tuple, node: ast.AST, old: str | None, via_alias: bool) -> ast.expr:
        if t[0] == "name":
            new = self.ctx.names[t[1]]
            if (new != old or via_alias) and any(
                    new in s.bound or new in s.aliases and self.ctx.alias(s.aliases[new], self.where(node)) != t
                    for s in self._chain() if s.kind != "module"):
                self.ctx.conflicts.add(t[1])  # a local of that name would capture it: rename the global
            return ast.copy_location(ast.Name(new, ast.Load()), node)
        if t[0] == "const":
            return ast.copy_location(ast.Constant(t[1]), node)
        if t[0] == "file":
            return ast.copy_location(ast.Name("__file__", ast.Load()), node)
        if t[0] == "missing":  # an import of it became `raise ImportError` (_pg_import)
            return node
        raise self.err(node, f"uses the module {t[1]} as a value (getattr, passing or storing a module cannot be "
                             "flattened: import the names it needs)")

    def visit_Name(self, node: ast.Name) -> ast.expr:  # noqa: N802 (ast.NodeTransformer API)
        t, via_alias = self.resolve(node.id, node)
        if t is None or t[0] == "free":
            return node
        if not isinstance(node.ctx, ast.Load):
            if via_alias or t[0] != "name":
                raise self.err(node, f"rebinds the imported name {node.id!r}")
            node.id = self.ctx.names[t[1]]
            return node
        return self.target(t, node, node.id, via_alias)

    def visit_Attribute(self, node: ast.Attribute) -> ast.expr:  # noqa: N802
        chain, base = [], node
        while isinstance(base, ast.Attribute):
            chain.append(base)
            base = base.value
        if isinstance(base, ast.Name):
            t, _ = self.resolve(base.id, base)
            if t is not None and t[0] in ("mod", "missing"):
                for i, a in enumerate(reversed(chain)):
                    if t[0] == "missing":
                        return node
                    t = self.ctx.lookup(t[1], a.attr, self.where(a))
                    if t[0] == "mod":
                        continue
                    if a is node and not isinstance(node.ctx, ast.Load):
                        raise self.err(node, f"assigns {a.attr!r} of a module (module state cannot be flattened)")
                    new = self.target(t, a, None, True)
                    if a is node:
                        return new
                    chain[len(chain) - i - 2].value = new
                    return node
                raise self.err(node, "uses a module as a value")
        self.generic_visit(node)
        return node

    def visit_Constant(self, node: ast.Constant) -> ast.expr:  # noqa: N802
        m = _REF.match(node.value) if isinstance(node.value, str) else None
        if m and m.group(1) in self.ctx.mods:
            return self.target(self.ctx.lookup(m.group(1), m.group(2), self.where(node)), node, None, True)
        return node

    def visit_Global(self, node: ast.Global) -> ast.Global:  # noqa: N802
        for n in node.names:
            if n in self.m.aliases:
                raise self.err(node, f"declares the imported name {n!r} global")
        node.names = [self.ctx.names[self.ctx.ident(self.m, n)] if n in self.m.bound else n for n in node.names]
        return node

    def _pg_import(self, node: ast.Import | ast.ImportFrom) -> Any:
        for mod, a in _pgolf_module(node, self.m.name, self.m.rel.endswith("/__init__.py")):
            t = ("mod", a.name) if isinstance(node, ast.Import) else ("ref", mod, a.name)
            if a.name == "*":
                raise self.err(node, f"`from {mod} import *` cannot be flattened")
            target = a.name if isinstance(node, ast.Import) else mod
            if target not in self.ctx.mods:
                if self.scope.kind == "module":
                    raise self.err(node, f"imports {target}, which is not in this script, at module level")
                return ast.copy_location(ast.Raise(ast.Call(ast.Name("ImportError", ast.Load()),
                                                            [ast.Constant(target)], []), None), node)
            if t[0] == "ref" and f"{mod}.{a.name}" not in self.ctx.mods:
                self.ctx.lookup(mod, a.name, self.where(node))  # refuses a name the module does not have
        return None

    def _import(self, node: ast.Import | ast.ImportFrom) -> Any:
        if _pgolf_module(node, self.m.name, True) or (isinstance(node, ast.ImportFrom) and node.level):
            return self._pg_import(node)
        if self.scope.kind != "module":
            return node
        if any(a.name == "*" for a in node.names):
            raise self.err(node, "a star import at module level cannot be flattened")
        top = node in self.m.tree.body
        names = []
        for a in node.names:
            bound = a.asname or a.name.split(".")[0]
            key = self.ctx.ident(self.m, bound)
            new = self.ctx.names[key]
            if top and bound in self.m.shared:
                if (key, a.name) in self.ctx.emitted:
                    continue
                self.ctx.emitted.add((key, a.name))
            if new != bound:
                if isinstance(node, ast.Import) and not a.asname and "." in a.name:
                    raise self.err(node, f"`import {a.name}` binds {bound!r}, which another module also binds")
                a = ast.alias(a.name, new)
            names.append(a)
        if not names:
            return None
        node.names = names
        return node

    visit_Import = visit_ImportFrom = _import

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> ast.ExceptHandler:  # noqa: N802
        if node.name and self.scope.kind == "module" and node.name in self.m.bound:
            node.name = self.ctx.names[self.ctx.ident(self.m, node.name)]
        self.generic_visit(node)
        return node

    def _push(self, kind: str, body: list[ast.AST], extra: set[str] = frozenset()) -> None:
        bound, glob, nonloc, pg = _bindings(body)
        aliases: dict[str, tuple] = {}
        for n in pg:
            for mod, a in _pgolf_module(n, self.m.name, self.m.rel.endswith("/__init__.py")):
                _alias_of(n, mod, a, set(self.ctx.mods), aliases, self.m.rel)
        bound = (bound | set(extra) | nonloc) - glob
        if bound & set(aliases):
            raise self.err(body[0], f"rebinds the imported name {sorted(bound & set(aliases))[0]!r}")
        self.scope = _Scope(kind, self.scope, bound, glob, aliases)

    def _rename_def(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> None:
        if self.scope.kind == "module":
            node.name = self.ctx.names[self.ctx.ident(self.m, node.name)]

    def _outer(self, fn: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> None:
        a = fn.args
        a.defaults = [self.visit(d) for d in a.defaults]
        a.kw_defaults = [d if d is None else self.visit(d) for d in a.kw_defaults]
        for x in (*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg):
            if x is not None and x.annotation is not None:
                x.annotation = self.visit(x.annotation)
        if getattr(fn, "returns", None) is not None:
            fn.returns = self.visit(fn.returns)

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.FunctionDef:  # noqa: N802
        node.decorator_list = [self.visit(d) for d in node.decorator_list]
        self._outer(node)
        self._rename_def(node)
        self._push("function", node.body, _arg_names(node.args))
        node.body = _body([self.visit(s) for s in node.body])
        self.scope = self.scope.parent
        return node

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Lambda(self, node: ast.Lambda) -> ast.Lambda:  # noqa: N802
        self._outer(node)
        self._push("function", [node.body], _arg_names(node.args))
        node.body = self.visit(node.body)
        self.scope = self.scope.parent
        return node

    def visit_ClassDef(self, node: ast.ClassDef) -> ast.ClassDef:  # noqa: N802
        node.decorator_list = [self.visit(d) for d in node.decorator_list]
        node.bases = [self.visit(b) for b in node.bases]
        node.keywords = [self.visit(k) for k in node.keywords]
        self._rename_def(node)
        self._push("class", node.body)
        node.body = _body([self.visit(s) for s in node.body])
        self.scope = self.scope.parent
        return node

    def _comp(self, node: Any) -> Any:
        first = node.generators[0]
        first.iter = self.visit(first.iter)
        targets = {n.id for g in node.generators for n in ast.walk(g.target) if isinstance(n, ast.Name)}
        self.scope = _Scope("function", self.scope, targets)
        for i, g in enumerate(node.generators):
            g.target = self.visit(g.target)
            if i:
                g.iter = self.visit(g.iter)
            g.ifs = [self.visit(x) for x in g.ifs]
        for f in ("elt", "key", "value"):
            if hasattr(node, f):
                setattr(node, f, self.visit(getattr(node, f)))
        self.scope = self.scope.parent
        return node

    visit_ListComp = visit_SetComp = visit_GeneratorExp = visit_DictComp = _comp

    def generic_visit(self, node: ast.AST) -> ast.AST:
        super().generic_visit(node)
        if isinstance(getattr(node, "body", None), list) and not node.body:
            node.body = [ast.Pass()]
        return node


def _body(stmts: list[Any]) -> list[ast.stmt]:
    out: list[ast.stmt] = []
    for s in stmts:
        if isinstance(s, list):
            out += s
        elif s is not None:
            out.append(s)
    return out or [ast.Pass()]
