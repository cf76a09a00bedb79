"""Closed-world constant parameters for the single-file script: a parameter every direct call gives the same
constant (passed or left at its default) becomes that constant, and the branches it decides are folded (`fold_constant_parameters`).

    folded = fold_constant_parameters(trees, entries=frozenset({"main"}))
"""

from __future__ import annotations

import ast
import re
from typing import Mapping

_COMPARE = {ast.Is: lambda a, b: a is b, ast.IsNot: lambda a, b: a is not b, ast.Eq: lambda a, b: a == b,
            ast.NotEq: lambda a, b: a != b, ast.Lt: lambda a, b: a < b, ast.LtE: lambda a, b: a <= b,
            ast.Gt: lambda a, b: a > b, ast.GtE: lambda a, b: a >= b, ast.In: lambda a, b: a in b,
            ast.NotIn: lambda a, b: a not in b}


def _const(node: ast.expr) -> tuple[bool, object]:
    """(known, value) of an expression built from constants with `not`, `and`, `or` (short-circuit)."""
    if isinstance(node, ast.Constant):
        return True, node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        known, v = _const(node.operand)
        return known, (not v) if known else None
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        known, v = _const(node.operand)
        return (True, -v) if known and isinstance(v, (int, float)) and not isinstance(v, bool) else (False, None)
    if isinstance(node, ast.Tuple) and isinstance(node.ctx, ast.Load):
        parts = [_const(e) for e in node.elts]
        return (True, tuple(v for _, v in parts)) if all(k for k, _ in parts) else (False, None)
    if isinstance(node, ast.Compare) and all(type(op) in _COMPARE for op in node.ops):
        left = node.left  # a chain compares left to right and stops at the first false pair
        for op, right in zip(node.ops, node.comparators):
            (lk, lv), (rk, rv) = _const(left), _const(right)
            if not (lk and rk):
                return False, None
            try:
                if not _COMPARE[type(op)](lv, rv):
                    return True, False
            except TypeError:  # e.g. None < 1: left for run time
                return False, None
            left = right
        return True, True
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


_SIMPLE = (ast.Name, ast.Attribute, ast.Constant, ast.Compare, ast.UnaryOp, ast.BoolOp, ast.Load, ast.cmpop,
           ast.unaryop, ast.boolop)


def _test(expr: ast.expr) -> ast.expr:
    """`expr` as an `if`/conditional test (only its truth counts): in `a and b`, a constant true operand goes, and
    a constant false one after side-effect-free operands makes it False (`or` alike)."""
    if not isinstance(expr, ast.BoolOp):
        return expr
    conj = isinstance(expr.op, ast.And)
    parts = []
    for p in (_test(v) for v in expr.values):
        known, v = _const(p)
        if known and bool(v) == conj:
            continue  # `x and True` tests as `x`
        if known and all(isinstance(n, _SIMPLE) for q in parts for n in ast.walk(q)):
            return ast.copy_location(ast.Constant(not conj), expr)
        parts.append(p)
        if known:
            break  # the operands after a constant false (and) / true (or) never run
    if not parts:
        return ast.copy_location(ast.Constant(conj), expr)
    return parts[0] if len(parts) == 1 else ast.copy_location(ast.BoolOp(op=expr.op, values=parts), expr)


class _Substitute(ast.NodeTransformer):
    def __init__(self, values: dict[str, object]):
        self.values, self.count = values, 0

    def visit_Name(self, node):  # noqa: N802
        if isinstance(node.ctx, ast.Load) and node.id in self.values:
            self.count += 1
            return ast.copy_location(ast.Constant(self.values[node.id]), node)
        return node

    def _fold(self, body: list[ast.stmt]) -> list[ast.stmt]:
        out: list[ast.stmt] = []
        for s in body:
            s = self.visit(s)
            if isinstance(s, ast.If):
                s.test = _test(s.test)
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
        node.test = _test(node.test)
        known, v = _const(node.test)
        return (node.body if v else node.orelse) if known else node


def fold_constant_branches(tree: ast.Module) -> ast.Module:
    """Every `if` and conditional expression of `tree` (any depth) whose test is a constant (`_const`) replaced by
    the branch it takes, in place."""
    tree.body = _Substitute({})._fold(tree.body) or [ast.Pass()]
    return tree


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


def _tree_uses(tree: ast.Module) -> tuple[dict[str, list[ast.AST]], dict[str, list[ast.Call]], set[str], bool]:
    """One module's part of `fold_constant_parameters`' closed world: its module-level bindings by def/class (not
    methods), its direct calls by callee name, the names it uses otherwise than as a direct call's callee, and
    whether it looks names up at run time (globals/eval/exec)."""
    defs: dict[str, list[ast.AST]] = {}
    methods = {id(m) for c in ast.walk(tree) if isinstance(c, ast.ClassDef) for m in c.body}
    for n in ast.walk(tree):
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and id(n) not in methods:
            defs.setdefault(n.name, []).append(n)
    calls: dict[str, list[ast.Call]] = {}
    other: set[str] = set()
    funcs = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    docs = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr)}
    fields = {id(st.target) for c in ast.walk(tree) if isinstance(c, ast.ClassDef) for st in c.body
              if isinstance(st, ast.AnnAssign)}  # a dataclass field binds a class attribute, not the name
    by_name = {id(x) for n in ast.walk(tree) if isinstance(n, ast.Call)
               and getattr(n.func, "id", None) in ("getattr", "hasattr", "setattr", "delattr") for x in n.args[1:2]}
    dynamic = any(isinstance(n, ast.Call) and getattr(n.func, "id", None) in ("globals", "eval", "exec")
                  for n in ast.walk(tree))
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
    return defs, calls, other, dynamic


def fold_constant_parameters(trees: Mapping[str, ast.Module], entries: frozenset[str] = frozenset()) -> int:
    """Closed-world constant propagation of parameters (in place; → the number of parameters folded): a module-level,
    undecorated function whose name is only ever called directly (never an attribute, an alias, a value or a string)
    and never with *args/**kwargs, and a parameter that every call gives the same constant (passed, or left at a
    constant default), and the body never rebinds: the parameter's uses become the constant and the `if`s and
    conditional expressions they decide are folded (e.g. `resume`, `train_only`: the script's entry never passes
    them; a codec name every call passes once the configuration is folded). `entries`: functions called from outside the sources (the script's `main`), never folded. Iterated: a
    folded body may make its own calls' arguments constant."""
    folded = 0
    info: dict[str, tuple] = {}  # per tree: (defs, calls, other, dynamic); recomputed for the trees a round changed
    while True:
        for key, tree in trees.items():
            if key not in info:
                info[key] = _tree_uses(tree)
        if any(i[3] for i in info.values()):
            return folded  # names looked up at run time (globals/eval/exec): fold nothing
        defs: dict[str, list[ast.AST]] = {}
        calls: dict[str, list[ast.Call]] = {}
        other: set[str] = set()
        for d, c, o, _ in info.values():
            for k, v in d.items():
                defs.setdefault(k, []).extend(v)
            for k, v in c.items():
                calls.setdefault(k, []).extend(v)
            other |= o
        changed = False
        for key, tree in trees.items():
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
                defaults = [None] * (len(positional) - len(a.defaults)) + list(a.defaults)
                params = [(p, d, i) for i, (p, d) in enumerate(zip(positional, defaults))]
                params += [(p, d, None) for p, d in zip(a.kwonlyargs, a.kw_defaults)]
                stored = {n.id for n in ast.walk(fn) if isinstance(n, ast.Name) and not isinstance(n.ctx, ast.Load)}
                stored |= {x for n in ast.walk(fn) if isinstance(n, (ast.Global, ast.Nonlocal)) for x in n.names}
                own = {id(x) for x in (*positional, *a.kwonlyargs, a.vararg, a.kwarg) if x is not None}
                stored |= {n.arg for n in ast.walk(fn) if isinstance(n, ast.arg) and id(n) not in own}  # shadowed
                values: dict[str, object] = {}
                for p, d, i in params:
                    if p.arg in stored or not sites:
                        continue
                    seen = set()  # (type, value) of what each call gives the parameter
                    for c in sites:
                        given = [k.value for k in c.keywords if k.arg == p.arg]
                        if i is not None and i < len(c.args):
                            given.append(c.args[i])
                        for g in given or ([d] if d is not None else [ast.Name("?", ast.Load())]):
                            known, v = _const(g)
                            seen.add((type(v), v) if known and isinstance(v, _FOLDABLE) else None)
                    if len(seen) == 1 and None not in seen and any(
                            isinstance(n, ast.Name) and n.id == p.arg and isinstance(n.ctx, ast.Load)
                            for n in ast.walk(fn)):
                        values[p.arg] = next(iter(seen))[1]
                if values:
                    sub = _Substitute(values)
                    fn.body = sub._fold(fn.body) or [ast.Pass()]
                    folded += len(values)
                    changed = True
                    info.pop(key, None)
        if not changed:
            return folded


_FOLDABLE = (str, int, float, bool, type(None), tuple)
"""Values a folded parameter may take: immutable constants (a tuple of them from `_const`)."""


class _Locals(_Substitute):
    """Loads of `values`' names in one function scope (nested scopes not entered) → the constants."""

    def generic_visit(self, node):
        if isinstance(node, _SCOPES):
            return node
        return super().generic_visit(node)


def _guarded_constants(fn: ast.FunctionDef | ast.AsyncFunctionDef, nodes: list[ast.AST],
                       blocked: set[str]) -> dict[str, object]:
    """Locals bound to a constant by a statement of the function's own body (not in a branch or loop) whose every
    other binding sits in a branch that their constant closes (`lanes = None` … `if lanes is not None: lanes = …`):
    by induction the name never changes, so it is that constant."""
    parent = {id(c): n for n in nodes for c in ast.iter_child_nodes(n)}
    parent.update({id(s): fn for s in fn.body})
    out: dict[str, object] = {}
    for st in fn.body:
        if not (isinstance(st, ast.Assign) and len(st.targets) == 1 and isinstance(st.targets[0], ast.Name)):
            continue
        name = st.targets[0].id
        known, v = _const(st.value)
        if not known or name in blocked or name in out:
            continue
        others = [x for x in nodes if isinstance(x, ast.Name) and x.id == name and not isinstance(x.ctx, ast.Load)
                  and x is not st.targets[0]]
        if others and all(_closed(x, fn, parent, name, v) for x in others):
            out[name] = v
    return out


def _closed(node: ast.AST, fn: ast.AST, parent: dict[int, ast.AST], name: str, value: object) -> bool:
    """`node` sits in an `if` branch that `name == value` never takes."""
    child = node
    while child is not fn:
        up = parent.get(id(child))
        if up is None:
            return False
        if isinstance(up, ast.If) and child is not up.test:
            # a fresh copy to substitute into: a deepcopy would follow what earlier passes attach to the nodes
            test = _Substitute({name: value}).visit(ast.parse(ast.unparse(up.test), mode="eval").body)
            known, v = _const(_test(test))
            if known and bool(v) == (child in up.orelse):  # body under a false test, orelse under a true one
                return True
        child = up
    return False


def fold_constant_locals(tree: ast.Module) -> int:
    """A function's local bound once, by `name = <constant expression>` (`_const`, e.g. `0 <= -1 <= i` after
    configuration folding), and nowhere else (no other assignment, loop target, `del`, import, def, handler name,
    global/nonlocal, parameter, and no nested scope declaring it nonlocal): its loads in that scope become the constant
    (a load before the assignment raised UnboundLocalError); so does one bound to a constant in the function's own
    body whose other bindings all sit in branches that constant closes (`_guarded_constants`: `lanes = None` …
    `if lanes is not None: lanes = …`). Then the branches they decide fold, and again while that frees more (a
    folded branch may have held a local's other binding). In place; → how many loads."""
    n = 0
    for fn in [f for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))]:
        a = fn.args
        blocked = {x.arg for x in (*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg) if x is not None}
        nodes = list(_scope_nodes(fn.body))
        stores: dict[str, int] = {}
        for x in nodes:
            if isinstance(x, ast.Name) and not isinstance(x.ctx, ast.Load):
                stores[x.id] = stores.get(x.id, 0) + 1
            elif isinstance(x, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                blocked.add(x.name)
                blocked |= {v for y in ast.walk(x) if isinstance(y, ast.Nonlocal) for v in y.names}
            elif isinstance(x, (ast.Import, ast.ImportFrom)):
                blocked |= {(al.asname or al.name).split(".")[0] for al in x.names}
            elif isinstance(x, ast.ExceptHandler) and x.name:
                blocked.add(x.name)
            elif isinstance(x, (ast.Global, ast.Nonlocal)):
                blocked |= set(x.names)
        values: dict[str, object] = {}
        for x in nodes:
            if (isinstance(x, ast.Assign) and len(x.targets) == 1 and isinstance(x.targets[0], ast.Name)
                    and stores.get(x.targets[0].id) == 1 and x.targets[0].id not in blocked):
                known, v = _const(x.value)
                if known:
                    values[x.targets[0].id] = v
        values.update(_guarded_constants(fn, nodes, blocked | set(values)))
        if values:
            sub = _Locals(values)
            fn.body = [sub.visit(s) for s in fn.body]
            n += sub.count
    if n:
        fold_constant_branches(tree)
        n += fold_constant_locals(tree)  # a folded branch may have held a local's other binding
    return n
