"""Module names of the package's files and of import statements, shared by the bundler's closure
(pgolf.experiments.bundle) and the one-namespace flattening (pgolf.experiments.flatscope)."""

from __future__ import annotations

import ast


def module_name(relpath: str) -> str:
    """"pgolf/a/__init__.py" → "pgolf.a"; "pgolf/a/b.py" → "pgolf.a.b"."""
    parts = relpath[:-3].split("/")
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def from_module(node: ast.ImportFrom, current: str, is_pkg: bool) -> str:
    """The absolute module a `from … import` in module `current` reads (a relative level resolved against it)."""
    if not node.level:
        return node.module or ""
    parts = current.split(".")
    base = parts[: len(parts) - (not is_pkg) - (node.level - 1)]  # the package itself, then one up per extra dot
    return ".".join(base + ([node.module] if node.module else []))
