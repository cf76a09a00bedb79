"""Minifying the single-file script's sources: docstrings, string-literal statements, comments and function
annotations removed (`ast` parse → strip → `ast.unparse`), then `python-minifier` (`compact_python`: local renaming,
literal hoisting). Used by pgolf.experiments.bundle; the records' wrapper (R0414: pyminify → lzma → b85) is the
starting point."""

from __future__ import annotations

import ast
import re
from typing import Mapping


def _strip_literal_statements(body: list[ast.stmt]) -> list[ast.stmt]:
    kept = [s for s in body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant)
                                    and isinstance(s.value.value, str))]
    return kept or [ast.Pass()]


class _StripAnnotations(ast.NodeTransformer):
    """Drop function argument/return annotations and annotated assignments inside functions (class bodies keep
    theirs: dataclass fields are annotations, and `typing.get_type_hints` reads the config sections')."""

    def _args(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> None:
        a = node.args
        for arg in (*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg):
            if arg is not None:
                arg.annotation = None

    def visit_FunctionDef(self, node):  # noqa: N802 (ast.NodeTransformer API)
        self._args(node)
        node.returns = None
        node.body = [self._local(s) for s in node.body]
        node.body = [s for s in node.body if s is not None] or [ast.Pass()]
        self.generic_visit(node)
        return node

    visit_AsyncFunctionDef = visit_FunctionDef

    def _local(self, stmt: ast.stmt) -> ast.stmt | None:
        if isinstance(stmt, ast.AnnAssign) and stmt.simple:
            if stmt.value is None:
                return None
            return ast.copy_location(ast.Assign(targets=[stmt.target], value=stmt.value), stmt)
        return stmt


def minify_tree(tree: ast.Module) -> ast.Module:
    """`minify_python` on a parsed module (in place)."""
    for node in ast.walk(tree):
        for field in ("body", "orelse", "finalbody"):
            body = getattr(node, field, None)
            if isinstance(body, list) and body and isinstance(body[0], ast.stmt):
                setattr(node, field, _strip_literal_statements(body))
    return ast.fix_missing_locations(_StripAnnotations().visit(tree))


def minify_python(source: str, filename: str = "<source>") -> str:
    """Docstrings and other string-literal statements removed, comments, formatting and function annotations
    dropped (`ast.unparse`)."""
    return ast.unparse(minify_tree(ast.parse(source, filename=filename))) + "\n"


def minify_file(relpath: str, text: str) -> str:
    if relpath.endswith(".py"):
        return minify_python(text, relpath)
    if relpath.endswith(".toml"):
        return "".join(line + "\n" for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#"))
    return text


def compact_python(source: str, filename: str = "<source>") -> str:
    """`python-minifier` on shaken, minified source: local names renamed, repeated literals hoisted, whitespace and
    redundant syntax removed. Semantics kept: module-level names (other modules import them), keyword-argument names
    (`inspect.signature` reads them), class-attribute annotations (dataclass fields, `typing.get_type_hints`) and
    asserts stay. Deterministic for one python-minifier version (a main dependency: `pgolf run` counts the bytes)."""
    import python_minifier as pm

    try:
        return pm.minify(source, filename=filename, rename_locals=True, rename_globals=False, hoist_literals=True,
                         remove_asserts=False, remove_debug=False, remove_literal_statements=True,
                         remove_annotations=pm.RemoveAnnotationsOptions(
                             remove_variable_annotations=True, remove_return_annotations=True,
                             remove_argument_annotations=True, remove_class_attribute_annotations=False)) + "\n"
    except Exception as e:  # python-minifier raises its own types on source it cannot handle
        raise ValueError(f"{filename}: python-minifier failed ({type(e).__name__}: {e})") from None


# ------------------------------------------------------------------------------------------------ check stripping

KEPT_RAISES = frozenset({
    # control flow or a run-time guard, not a check of the configuration or the inputs: never stripped
    "StopIteration", "StopAsyncIteration", "KeyboardInterrupt", "SystemExit", "GeneratorExit",
    "EvalTimeout", "TrainingDiverged", "NonFiniteState", "DiskFullError", "NotImplementedError",
})
"""Exceptions the script raises as the package does: iteration protocol, signals, the eval time limit
(eval/score.py), divergence (train/loop.py), a non-finite checkpoint, a full disk."""

_PURE_CALLS = frozenset({
    "isinstance", "issubclass", "len", "hasattr", "callable", "type", "all", "any", "min", "max", "sum", "abs",
    "int", "float", "str", "bool", "tuple", "list", "set", "frozenset", "sorted", "round", "repr", "range", "zip",
    "enumerate", "getattr", "id", "isfinite", "isnan", "isinf", "startswith", "endswith", "get", "keys", "values",
    "items", "is_file", "is_dir", "exists", "dim", "numel", "size", "isidentifier", "isdigit", "item", "count",
    "lower", "upper", "strip", "split", "issubset", "issuperset", "isdisjoint", "is_floating_point",
    "is_contiguous", "element_size", "nelement", "stride", "fields", "is_available", "is_initialized",
    "get_world_size", "get_rank", "log2", "prod", "ceil", "floor", "sqrt", "format", "join", "index",
    "asdict", "get_args", "get_origin",
})
"""Callee names (functions or methods) whose calls in a check's condition have no side effect."""

_PURE_NODES = (ast.Name, ast.Constant, ast.Attribute, ast.Compare, ast.BoolOp, ast.UnaryOp, ast.BinOp,
               ast.Subscript, ast.Slice, ast.Tuple, ast.List, ast.Set, ast.Dict, ast.JoinedStr, ast.FormattedValue,
               ast.GeneratorExp, ast.ListComp, ast.SetComp, ast.comprehension, ast.IfExp, ast.Starred, ast.keyword,
               ast.expr_context, ast.boolop, ast.cmpop, ast.unaryop, ast.operator)


def _pure(expr: ast.expr, pure: frozenset[str] = frozenset()) -> bool:
    """No side effect when evaluated (the calls it makes are `_PURE_CALLS` or the `pure` functions): a check's
    condition can go with it."""
    for n in ast.walk(expr):
        if isinstance(n, ast.Call):
            f = n.func
            name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None
            if name not in _PURE_CALLS and name not in pure:
                return False
        elif not isinstance(n, _PURE_NODES):
            return False
    return True


def _raise_name(stmt: ast.Raise) -> str | None:
    exc = stmt.exc.func if isinstance(stmt.exc, ast.Call) else stmt.exc
    return exc.id if isinstance(exc, ast.Name) else exc.attr if isinstance(exc, ast.Attribute) else None


def _strippable_raise(stmt: ast.stmt) -> bool:
    return isinstance(stmt, ast.Raise) and stmt.exc is not None and _raise_name(stmt) not in KEPT_RAISES


def pure_functions(trees: Mapping[str, ast.Module]) -> frozenset[str]:
    """Names of the module-level functions whose body is one `return <pure expression>` (fixpoint: they may call
    each other), every definition of the name such: calling them has no side effect."""
    defs: dict[str, list[ast.FunctionDef]] = {}
    for tree in trees.values():
        for fn in tree.body:
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                defs.setdefault(fn.name, []).append(fn)
    pure: frozenset[str] = frozenset()
    while True:
        new = frozenset(name for name, fns in defs.items() if all(
            isinstance(fn, ast.FunctionDef) and not fn.decorator_list and len(fn.body) == 1
            and isinstance(fn.body[0], ast.Return) and fn.body[0].value is not None
            and _pure(fn.body[0].value, pure) for fn in fns))
        if new == pure:
            return pure
        pure = new


def protected_functions(trees: Mapping[str, ast.Module], allow: frozenset[str] = frozenset()) -> set[str]:
    """Names of the functions whose raises may be control flow: called (transitively, by name) from the `try` body
    of a handler that does not re-raise (its last statement is not a `raise`). `allow`: functions whose absorbing
    handler only reports the error (pgolf.submission.main: message, exit status 2)."""
    defs: dict[str, list[ast.AST]] = {}
    roots: set[str] = set()
    for tree in trees.values():
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                defs.setdefault(fn.name, []).append(fn)
                if fn.name in allow:
                    continue
                for t in ast.walk(fn):
                    if isinstance(t, ast.Try) and any(not isinstance(h.body[-1], ast.Raise) for h in t.handlers):
                        roots |= _callees(t.body)
        for t in tree.body:  # module-level try (e.g. optional imports)
            if isinstance(t, ast.Try) and any(not isinstance(h.body[-1], ast.Raise) for h in t.handlers):
                roots |= _callees(t.body)
    seen: set[str] = set()
    stack = list(roots)
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        for fn in defs.get(name, ()):
            stack += _callees(fn.body)
    return seen


def _callees(body: list[ast.stmt]) -> set[str]:
    out: set[str] = set()
    for s in body:
        for n in ast.walk(s):
            if isinstance(n, ast.Call):
                f = n.func
                if isinstance(f, ast.Name):
                    out.add(f.id)
                elif isinstance(f, ast.Attribute):
                    out.add(f.attr)
            elif isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load):  # a function passed as a callback
                out.add(n.id)
    return out


_PLAIN_DUNDERS = frozenset({"__init__", "__post_init__", "__call__"})
"""Dunders stripped like any method; the others (__getattr__, __getitem__, __next__, __eq__, …) raise as part of a
protocol and keep their raises."""


class _StripChecks(ast.NodeTransformer):
    """See `strip_checks`."""

    def __init__(self, protected: set[str], pure: frozenset[str], empty: frozenset[str]):
        self.protected, self.pure, self.empty = protected, pure | empty, empty

    def visit_FunctionDef(self, node):  # noqa: N802 (ast.NodeTransformer API)
        if node.name in self.protected or (node.name.startswith("__") and node.name not in _PLAIN_DUNDERS):
            return node  # a dunder (__getattr__ → AttributeError, __next__ …) or a raise someone catches
        node.body = self._block(node.body) or [ast.Pass()]
        self._dce(node)
        return node

    def _dce(self, fn: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        """Dead code the stripping leaves, to a fixpoint: an assignment of a pure value to local names nothing
        reads, a `for` over a pure iterable with an empty body, an `if` with a pure test and empty branches, a
        statement that calls an `empty` function with pure arguments."""
        if any(isinstance(n, ast.Call) and getattr(n.func, "id", None) in ("locals", "vars", "exec", "eval")
               for n in ast.walk(fn)):
            return
        while True:
            loaded = {n.id for n in ast.walk(fn) if isinstance(n, ast.Name) and not isinstance(n.ctx, ast.Store)}
            loaded |= {x for n in ast.walk(fn) if isinstance(n, (ast.Global, ast.Nonlocal)) for x in n.names}
            local = {n.id for n in ast.walk(fn) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
            local |= {a.arg for n in ast.walk(fn) if isinstance(n, ast.arguments)
                      for a in (*n.posonlyargs, *n.args, *n.kwonlyargs, n.vararg, n.kwarg) if a is not None}
            changed: list[bool] = []
            fn.body = self._dead(fn.body, loaded, local, changed) or [ast.Pass()]
            if not changed:
                return

    def _dead(self, body: list[ast.stmt], loaded: set[str], local: set[str], changed: list[bool]) -> list[ast.stmt]:
        def names(t: ast.expr) -> list[str] | None:
            if isinstance(t, ast.Name):
                return [t.id]
            if isinstance(t, (ast.Tuple, ast.List)):
                parts = [names(e) for e in t.elts]
                return None if any(p is None for p in parts) else [x for p in parts for x in p]
            return None

        out: list[ast.stmt] = []
        for s in body:
            if isinstance(s, ast.Pass):
                continue
            if isinstance(s, ast.Assign) and _pure(s.value, self.pure):
                targets = [names(t) for t in s.targets]
                if all(t is not None for t in targets) and not {x for t in targets for x in t} & loaded:
                    changed.append(True)
                    continue
            if isinstance(s, ast.ImportFrom) and (s.module or "").startswith("pgolf") and not s.level:
                kept = [a for a in s.names if (a.asname or a.name) in loaded]
                if len(kept) < len(s.names):  # a name only a removed statement used (the shaking drops its def)
                    changed.append(True)
                    if not kept:
                        continue
                    s.names = kept
            if isinstance(s, ast.Expr):
                v = s.value
                if isinstance(v, ast.Constant) or (
                        isinstance(v, ast.Call) and isinstance(v.func, ast.Name) and v.func.id in self.empty
                        and v.func.id not in local and all(_pure(a, self.pure) for a in v.args)
                        and all(_pure(k.value, self.pure) for k in v.keywords)):
                    changed.append(True)
                    continue
            if isinstance(s, ast.For) and not s.orelse:
                s.body = self._dead(s.body, loaded, local, changed)
                tnames = names(s.target)
                if not s.body and _pure(s.iter, self.pure) and tnames is not None and not set(tnames) & loaded:
                    changed.append(True)
                    continue
                s.body = s.body or [ast.Pass()]
            elif isinstance(s, ast.If):
                s.body, s.orelse = self._dead(s.body, loaded, local, changed), self._dead(s.orelse, loaded, local,
                                                                                          changed)
                if not s.body and not s.orelse and _pure(s.test, self.pure):
                    changed.append(True)
                    continue
                s.body = s.body or [ast.Pass()]
            elif isinstance(s, (ast.While, ast.With)):
                s.body = self._dead(s.body, loaded, local, changed) or [ast.Pass()]
            out.append(s)
        return out

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Try(self, node):  # noqa: N802
        # raises in a try body may be caught by its handlers; handlers' own raises re-raise: keep both, but
        # functions defined inside are visited
        for n in [*node.body, *node.orelse, *node.finalbody, *(s for h in node.handlers for s in h.body)]:
            self.visit(n)
        return node

    visit_TryStar = visit_Try

    def _block(self, body: list[ast.stmt]) -> list[ast.stmt]:
        out: list[ast.stmt] = []
        for s in body:
            if isinstance(s, ast.Assert):
                continue
            if isinstance(s, ast.If) and _pure(s.test, self.pure):
                if all(_strippable_raise(b) for b in s.body):
                    out += self._block(s.orelse)
                    continue
                if s.orelse and all(_strippable_raise(b) for b in s.orelse):
                    out += self._block(s.body)
                    continue
            if (_strippable_raise(s) and isinstance(s.exc, ast.Call) and not s.exc.keywords
                    and (_raise_name(s) or "")[:1].isupper()):  # a class (a factory function returns one)
                s = ast.copy_location(ast.Raise(exc=s.exc.func, cause=None), s)
            elif isinstance(s, ast.Raise) and s.cause is not None and _strippable_raise(s):
                s.cause = None
            else:
                s = self.visit(s)
                for field in ("body", "orelse"):
                    sub = getattr(s, field, None)
                    if isinstance(sub, list) and sub and isinstance(sub[0], ast.stmt) and not isinstance(s, ast.Try):
                        setattr(s, field, self._block(sub) or ([ast.Pass()] if field == "body" else []))
            out.append(s)
        return out


def empty_functions(trees: Mapping[str, ast.Module]) -> frozenset[str]:
    """Names of the module-level functions whose body is `pass` (every definition of the name, undecorated): a
    statement calling one with pure arguments does nothing."""
    defs: dict[str, list[ast.stmt]] = {}
    for tree in trees.values():
        for fn in tree.body:
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                defs.setdefault(fn.name, []).append(fn)
    return frozenset(n for n, fns in defs.items() if all(
        isinstance(f, ast.FunctionDef) and not f.decorator_list and all(isinstance(b, ast.Pass) for b in f.body)
        for f in fns))


def strip_checks(tree: ast.Module, protected: set[str] = frozenset(), pure: frozenset[str] = frozenset(),
                 empty: frozenset[str] = frozenset()) -> ast.Module:
    """The script's checks removed, as `python -O` removes asserts (the package keeps every one): asserts dropped;
    an `if` whose condition has no side effect (`_pure`: `_PURE_CALLS` and the `pure` functions of
    `pure_functions`) and whose branch only raises → the other branch; every
    other `raise E(message...)` → `raise E` (no message, no cause). Not touched: raises of `KEPT_RAISES`, try
    bodies and handlers, protocol dunders (all but `_PLAIN_DUNDERS`), the `protected` functions (`protected_functions`: their raise may be
    caught and acted on), module-level statements but asserts. A configuration or input the package refuses is therefore not
    refused by the script: it runs on (or fails later, with a bare exception type). Then the dead code that
    leaves goes (`_StripChecks._dce`; `empty`: the functions of `empty_functions`, whose calls go). Idempotent."""
    body = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            node = _StripChecks(protected, pure, empty).visit(node)
        elif isinstance(node, ast.Assert):
            continue
        body.append(node)
    tree.body = body or [ast.Pass()]
    return ast.fix_missing_locations(tree)


# ------------------------------------------------------------------------------------------------ constant parameters

def _const(node: ast.expr) -> tuple[bool, object]:
    """(known, value) of an expression built from constants with `not`, `and`, `or` (short-circuit)."""
    if isinstance(node, ast.Constant):
        return True, node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        known, v = _const(node.operand)
        return known, (not v) if known else None
    if (isinstance(node, ast.Compare) and len(node.ops) == 1
            and isinstance(node.ops[0], (ast.Is, ast.IsNot, ast.Eq, ast.NotEq))):
        (lk, lv), (rk, rv) = _const(node.left), _const(node.comparators[0])
        if lk and rk:
            op = node.ops[0]
            return True, (lv is rv if isinstance(op, ast.Is) else lv is not rv if isinstance(op, ast.IsNot)
                          else lv == rv if isinstance(op, ast.Eq) else lv != rv)
        return False, None
    if isinstance(node, ast.BoolOp):
        for i, part in enumerate(node.values):
            known, v = _const(part)
            if not known:
                return False, None
            if (not v) if isinstance(node.op, ast.And) else bool(v):
                return True, v  # short-circuit: the rest is never evaluated
            if i == len(node.values) - 1:
                return True, v
    return False, None


class _Substitute(ast.NodeTransformer):
    def __init__(self, values: dict[str, object]):
        self.values = values

    def visit_Name(self, node):  # noqa: N802
        if isinstance(node.ctx, ast.Load) and node.id in self.values:
            return ast.copy_location(ast.Constant(self.values[node.id]), node)
        return node

    def _fold(self, body: list[ast.stmt]) -> list[ast.stmt]:
        out: list[ast.stmt] = []
        for s in body:
            s = self.visit(s)
            if isinstance(s, ast.If):
                known, v = _const(s.test)
                if known:
                    out += self._fold(s.body if v else s.orelse)
                    continue
            for field in ("body", "orelse", "finalbody"):
                sub = getattr(s, field, None)
                if isinstance(sub, list) and sub and isinstance(sub[0], ast.stmt):
                    setattr(s, field, self._fold(sub) or ([ast.Pass()] if field == "body" else []))
            if isinstance(s, ast.Try):
                for h in s.handlers:
                    h.body = self._fold(h.body) or [ast.Pass()]
            out.append(s)
        return out

    def visit_IfExp(self, node):  # noqa: N802
        self.generic_visit(node)
        known, v = _const(node.test)
        return (node.body if v else node.orelse) if known else node


_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef, ast.ListComp, ast.SetComp, ast.DictComp,
           ast.GeneratorExp)


def _scope_nodes(body: list[ast.AST]):
    """The nodes of one function scope (nested scopes not entered; a nested def's own node is yielded)."""
    stack = list(body)
    while stack:
        n = stack.pop()
        yield n
        if not isinstance(n, _SCOPES):
            stack.extend(ast.iter_child_nodes(n))
        elif isinstance(n, (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)):
            stack.append(n.generators[0].iter)  # evaluated in the enclosing scope


def _shadowed_names(tree: ast.Module) -> set[int]:
    """ids of the Name nodes that are a function's plain locals (a parameter or a name it assigns or defines, not
    declared global/nonlocal; a name it imports is not: that is the module-level function), in that function's own
    scope: they never mean a module-level function."""
    out: set[int] = set()
    for fn in ast.walk(tree):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        a = fn.args
        local = {x.arg for x in (*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg) if x is not None}
        nodes = list(_scope_nodes(fn.body))
        local |= {n.id for n in nodes if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
        local |= {n.name for n in nodes if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
        local -= {x for n in nodes if isinstance(n, (ast.Global, ast.Nonlocal)) for x in n.names}
        out |= {id(n) for n in nodes if isinstance(n, ast.Name) and n.id in local}
    return out


def fold_constant_parameters(trees: Mapping[str, ast.Module], entries: frozenset[str] = frozenset()) -> int:
    """Closed-world constant propagation of parameters (in place; → the number of parameters folded): a module-level,
    undecorated function whose name is only ever called directly (never an attribute, an alias, a value or a string)
    and never with *args/**kwargs, and a parameter with a constant default that every call leaves out or passes as
    that same constant, and the body never rebinds: the parameter's uses become the constant and the `if`s and
    conditional expressions they decide are folded (e.g. `resume`, `train_only`: the script's entry never passes
    them). `entries`: functions called from outside the sources (the script's `main`), never folded. Iterated: a
    folded body may make its own calls' arguments constant."""
    folded = 0
    while True:
        defs: dict[str, list[ast.FunctionDef]] = {}  # every binding of a name by def/class but methods
        for tree in trees.values():
            methods = {id(m) for c in ast.walk(tree) if isinstance(c, ast.ClassDef) for m in c.body}
            for n in ast.walk(tree):
                if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and id(n) not in methods:
                    defs.setdefault(n.name, []).append(n)
        calls: dict[str, list[ast.Call]] = {}
        other: set[str] = set()  # names used otherwise than as a direct call's callee
        for tree in trees.values():
            funcs = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
            docs = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr)}
            fields = {id(st.target) for c in ast.walk(tree) if isinstance(c, ast.ClassDef) for st in c.body
                      if isinstance(st, ast.AnnAssign)}  # a dataclass field binds a class attribute, not the name
            by_name = {id(x) for n in ast.walk(tree) if isinstance(n, ast.Call)
                       and getattr(n.func, "id", None) in ("getattr", "hasattr", "setattr", "delattr")
                       for x in n.args[1:2]}
            if any(isinstance(n, ast.Call) and getattr(n.func, "id", None) in ("globals", "eval", "exec")
                   for n in ast.walk(tree)):
                return folded  # names looked up at run time: fold nothing
            modules = {(x.asname or x.name).split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import)
                       for x in n.names}  # names bound to modules: `m.f` may be a module-level function
            shadowed = _shadowed_names(tree)
            for n in ast.walk(tree):
                if isinstance(n, ast.Call) and isinstance(n.func, ast.Name):
                    if id(n.func) not in shadowed:
                        calls.setdefault(n.func.id, []).append(n)
                elif isinstance(n, ast.Name) and id(n) not in funcs and id(n) not in fields and id(n) not in shadowed:
                    other.add(n.id)
                elif isinstance(n, ast.Attribute):
                    root = n
                    while isinstance(root, ast.Attribute):
                        root = root.value
                    if not isinstance(root, ast.Name) or root.id in modules:
                        other.add(n.attr)
                elif isinstance(n, ast.alias) and n.asname:
                    other.add(n.name)
                elif isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs and (
                        re.fullmatch(r"[\w.]+:\w+", n.value) or id(n) in by_name):  # "pkg.mod:name", getattr
                    other.update(re.findall(r"\w+", n.value))
        changed = False
        for tree in trees.values():
            for fn in tree.body:
                if not (isinstance(fn, ast.FunctionDef) and not fn.decorator_list and len(defs[fn.name]) == 1
                        and fn.name not in other and fn.name not in entries):
                    continue
                sites = calls.get(fn.name, [])
                if any(isinstance(a, ast.Starred) for c in sites for a in c.args) or any(
                        k.arg is None for c in sites for k in c.keywords):
                    continue
                a = fn.args
                positional = [*a.posonlyargs, *a.args]
                params = [(p, d, i) for i, (p, d) in enumerate(zip(positional[len(positional) - len(a.defaults):],
                                                                     a.defaults), len(positional) - len(a.defaults))]
                params += [(p, d, None) for p, d in zip(a.kwonlyargs, a.kw_defaults) if d is not None]
                stored = {n.id for n in ast.walk(fn) if isinstance(n, ast.Name) and not isinstance(n.ctx, ast.Load)}
                stored |= {x for n in ast.walk(fn) if isinstance(n, (ast.Global, ast.Nonlocal)) for x in n.names}
                own = {id(x) for x in (*positional, *a.kwonlyargs, a.vararg, a.kwarg) if x is not None}
                stored |= {n.arg for n in ast.walk(fn) if isinstance(n, ast.arg) and id(n) not in own}  # shadowed
                values: dict[str, object] = {}
                for p, d, i in params:
                    if not isinstance(d, ast.Constant) or p.arg in stored:
                        continue
                    ok = True
                    for c in sites:
                        given = [k.value for k in c.keywords if k.arg == p.arg]
                        if i is not None and i < len(c.args):
                            given.append(c.args[i])
                        if any(not (isinstance(g, ast.Constant) and type(g.value) is type(d.value)
                                    and g.value == d.value) for g in given):
                            ok = False
                            break
                    if ok and any(isinstance(n, ast.Name) and n.id == p.arg and isinstance(n.ctx, ast.Load)
                                  for n in ast.walk(fn)):
                        values[p.arg] = d.value
                if values:
                    sub = _Substitute(values)
                    fn.body = sub._fold(fn.body) or [ast.Pass()]
                    folded += len(values)
                    changed = True
        if not changed:
            return folded
