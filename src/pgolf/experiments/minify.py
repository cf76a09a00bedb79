"""Minifying the single-file script's sources: docstrings, string-literal statements, comments and function
annotations removed (`ast` parse → strip → `ast.unparse`), then `python-minifier` (`compact_python`: local renaming,
literal hoisting). Used by pgolf.experiments.bundle; the records' wrapper (R0414: pyminify → lzma → b85) is the
starting point."""

from __future__ import annotations

import ast


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


def compact_python(source: str, filename: str = "<source>", *, rename_globals: bool = False,
                   preserve_globals: tuple[str, ...] = (), hoist_literals: bool = True,
                   prefer_single_line: bool = False) -> str:
    """`python-minifier` on shaken, minified source: local names renamed, repeated literals hoisted, whitespace and
    redundant syntax removed; module-level names too with `rename_globals` (the one-namespace counted script, where
    no other module imports them; `preserve_globals` keep theirs); `hoist_literals=False, prefer_single_line=True` suit
    one large module (LZMA finds a repeated literal cheaper than a hoisted name). Semantics kept: keyword-argument names
    (`inspect.signature` reads them), class-attribute annotations (dataclass fields, `typing.get_type_hints`) and
    asserts stay. Deterministic for one python-minifier version (a main dependency: `pgolf run` counts the bytes)."""
    import python_minifier as pm

    try:
        return pm.minify(source, filename=filename, rename_locals=True, rename_globals=rename_globals,
                         preserve_globals=list(preserve_globals), hoist_literals=hoist_literals,
                         prefer_single_line=prefer_single_line,
                         remove_asserts=False, remove_debug=False, remove_literal_statements=True,
                         remove_annotations=pm.RemoveAnnotationsOptions(
                             remove_variable_annotations=True, remove_return_annotations=True,
                             remove_argument_annotations=True, remove_class_attribute_annotations=False)) + "\n"
    except Exception as e:  # python-minifier raises its own types on source it cannot handle
        raise ValueError(f"{filename}: python-minifier failed ({type(e).__name__}: {e})") from None


def annotation_names(tree: ast.Module, classes: set[str | None]) -> tuple[str, ...]:
    """Names in the field annotations of `classes` (the configuration sections), kept as written: the baked
    configuration's override parser (`pgolf.config.baked_config`) reads a field's type by its annotation string
    ("int", "bool", "tuple[float, ...]"). Other annotations are renamed with what they name (a dataclass resolves
    a string annotation in its module's namespace: the script's)."""
    return tuple(sorted({n.id for c in ast.walk(tree) if isinstance(c, ast.ClassDef) and c.name in classes
                         for s in c.body if isinstance(s, ast.AnnAssign) for n in ast.walk(s.annotation)
                         if isinstance(n, ast.Name)}))
