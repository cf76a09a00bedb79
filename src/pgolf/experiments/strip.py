"""Check stripping for the single-file script: asserts, `if <pure condition>: raise ...` and raise messages go, so
a valid run executes the same statements as in the package (like `python -O` for asserts); control-flow raises and
run-time guards stay (`KEPT_RAISES`), and so does every raise a `try` of the script may catch (`protected_functions`).

    tree = strip_checks(tree, protected_functions(trees), pure_functions(trees))
"""

from __future__ import annotations

import ast
from typing import Mapping


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
    "expected_tensors",  # pgolf.pack.validate: a meta-device GPT build (no memory, no RNG draw) for the checks
})
"""Callee names (functions or methods) whose calls in a check's condition have no side effect."""

_PURE_NODES = (ast.Name, ast.Constant, ast.Attribute, ast.Compare, ast.BoolOp, ast.UnaryOp, ast.BinOp,
               ast.Subscript, ast.Slice, ast.Tuple, ast.List, ast.Set, ast.Dict, ast.JoinedStr, ast.FormattedValue,
               ast.GeneratorExp, ast.ListComp, ast.SetComp, ast.DictComp, ast.comprehension, ast.IfExp, ast.Starred,
               ast.keyword, ast.expr_context, ast.boolop, ast.cmpop, ast.unaryop, ast.operator)


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
    handler only reports the error (pgolf.submission.main: message, exit status 2). A call through a module the
    source imports from another package (`torch.load(...)`) names no pgolf function."""
    defs: dict[str, list[tuple[ast.AST, frozenset[str]]]] = {}
    roots: set[str] = set()
    for tree in trees.values():
        external = frozenset((a.asname or a.name).split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import)
                             for a in n.names if not a.name.startswith("pgolf"))
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                defs.setdefault(fn.name, []).append((fn, external))
                if fn.name in allow:
                    continue
                for t in ast.walk(fn):
                    if isinstance(t, ast.Try) and any(not isinstance(h.body[-1], ast.Raise) for h in t.handlers):
                        roots |= _callees(t.body, external)
        for t in tree.body:  # module-level try (e.g. optional imports)
            if isinstance(t, ast.Try) and any(not isinstance(h.body[-1], ast.Raise) for h in t.handlers):
                roots |= _callees(t.body, external)
    seen: set[str] = set()
    stack = list(roots)
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        for fn, external in defs.get(name, ()):
            stack += _callees(fn.body, external)
    return seen


def _callees(body: list[ast.stmt], external: frozenset[str] = frozenset()) -> set[str]:
    out: set[str] = set()
    for s in body:
        for n in ast.walk(s):
            if isinstance(n, ast.Call):
                f = n.func
                if isinstance(f, ast.Name):
                    out.add(f.id)
                elif isinstance(f, ast.Attribute):
                    root = f.value
                    while isinstance(root, ast.Attribute):
                        root = root.value
                    if not (isinstance(root, ast.Name) and root.id in external):
                        out.add(f.attr)
            elif isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load):  # a function passed as a callback
                out.add(n.id)
    return out


_PLAIN_DUNDERS = frozenset({"__init__", "__post_init__", "__call__"})
"""Dunders stripped like any method; the others (__getattr__, __getitem__, __next__, __eq__, …) raise as part of a
protocol and keep their raises."""


_ADDERS = frozenset({"append", "extend", "add", "update"})
_FRESH = (ast.List, ast.Set, ast.Dict, ast.ListComp, ast.SetComp, ast.DictComp)


def _adds_to(s: ast.stmt, names: set[str] | None, pure: frozenset[str]) -> bool:
    """`s` is `name.append(<pure>)` (or extend/add/update) for one of `names` (None: any name)."""
    c = s.value if isinstance(s, ast.Expr) else None
    return (isinstance(c, ast.Call) and isinstance(c.func, ast.Attribute) and isinstance(c.func.value, ast.Name)
            and (names is None or c.func.value.id in names) and c.func.attr in _ADDERS and not c.keywords
            and all(_pure(a, pure) for a in c.args))


def _collected_only(fn: ast.AST, pure: frozenset[str]) -> set[str]:
    """Locals of `fn` that are only bound to a fresh container (`x = []`, pure contents) and only added to
    (`x.append(<pure>)` statements), nowhere else read, deleted or declared (any nested scope included): what is
    collected for an error message the stripping removed (`looked.append(f"...")`). Nothing observes them."""
    adds = {id(s.value.func.value) for s in ast.walk(fn) if isinstance(s, ast.Expr) and _adds_to(s, None, pure)}
    fresh = {id(t) for s in ast.walk(fn) if isinstance(s, ast.Assign) and len(s.targets) == 1
             and isinstance(s.value, _FRESH) and _pure(s.value, pure) for t in s.targets if isinstance(t, ast.Name)}
    ok: dict[str, bool] = {}
    for n in ast.walk(fn):
        if isinstance(n, ast.Name):
            ok[n.id] = ok.get(n.id, True) and (id(n) in fresh or id(n) in adds)
        elif isinstance(n, (ast.Global, ast.Nonlocal)):
            ok.update(dict.fromkeys(n.names, False))
        elif isinstance(n, ast.arg):
            ok[n.arg] = False
    added = {n.id for n in ast.walk(fn) if isinstance(n, ast.Name) and id(n) in adds}
    return {x for x, good in ok.items() if good and x in added}


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
        statement that calls an `empty` function with pure arguments, a local container only ever added to
        (`_collected_only`: the lines of a stripped message)."""
        if any(isinstance(n, ast.Call) and getattr(n.func, "id", None) in ("locals", "vars", "exec", "eval")
               for n in ast.walk(fn)):
            return
        while True:
            loaded = {n.id for n in ast.walk(fn) if isinstance(n, ast.Name) and not isinstance(n.ctx, ast.Store)}
            loaded |= {x for n in ast.walk(fn) if isinstance(n, (ast.Global, ast.Nonlocal)) for x in n.names}
            local = {n.id for n in ast.walk(fn) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
            local |= {a.arg for n in ast.walk(fn) if isinstance(n, ast.arguments)
                      for a in (*n.posonlyargs, *n.args, *n.kwonlyargs, n.vararg, n.kwarg) if a is not None}
            self.collected = _collected_only(fn, self.pure)
            loaded -= self.collected
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
                if _adds_to(s, self.collected, self.pure) or isinstance(v, ast.Constant) or (
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


def strip_messages(tree: ast.AST) -> int:
    """Every raise of a class outside `KEPT_RAISES` loses its message and cause, also where `strip_checks` keeps the
    raise (try bodies, handlers, protected functions): a handler that catches it acts on its type (pgolf reads no
    exception's message but to print it). Returns how many raises changed."""
    n = 0
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Raise) and _strippable_raise(node)):
            continue
        if isinstance(node.exc, ast.Call) and not node.exc.keywords and (_raise_name(node) or "")[:1].isupper():
            node.exc, n = node.exc.func, n + 1
        if node.cause is not None:
            node.cause, n = None, n + 1
    return n


_TERMINATORS = (ast.Return, ast.Raise, ast.Continue, ast.Break)


def drop_unreachable(tree: ast.AST) -> int:
    """Statements after a `return`, `raise`, `continue` or `break` of the same block removed (they never run), in
    every block of `tree`; returns how many went. Folding leaves them: `if H is None: return A` with `H` folded to
    None is `return A` followed by the code for a Hessian, whose helpers then leave the script."""
    dropped = 0
    for node in ast.walk(tree):
        for name in ("body", "orelse", "finalbody"):
            block = getattr(node, name, None)
            if not (isinstance(block, list) and block and isinstance(block[0], ast.stmt)):
                continue
            end = next((i for i, s in enumerate(block) if isinstance(s, _TERMINATORS)), len(block) - 1) + 1
            dropped += len(block) - end
            del block[end:]
    return dropped


def drop_empty_hooks(stmts: list[ast.stmt]) -> int:
    """In one module's statements (in place): `def __post_init__(self): pass` of a class without bases goes (the
    dataclass then calls nothing, as before: the stripped validator did nothing). Returns how many went."""
    n = 0
    for c in (x for s in stmts for x in ast.walk(s) if isinstance(x, ast.ClassDef) and not x.bases):
        keep = [b for b in c.body if not (isinstance(b, ast.FunctionDef) and b.name == "__post_init__"
                                          and not b.decorator_list and all(isinstance(x, ast.Pass) for x in b.body))]
        n += len(c.body) - len(keep)
        c.body = keep or [ast.Pass()]
    return n


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
