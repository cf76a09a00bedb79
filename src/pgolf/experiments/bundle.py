"""The single-file training script: what one configured run executes, in one standalone .py file.

    files = package_files()                  # {"pgolf/cli.py": "...", "pgolf/presets/cpu-smoke.toml": "...", ...}
    text = bundle_source(files, cfg)         # readable:  python train_gpt_readable.py [run] [--section.field VALUE ...]
    counted = counted_source(files, cfg)     # one namespace, minified, lzma|brotli, latin-1 self-extracting: counted
    measure_code_bytes(cfg)                  # len(counted): what `pgolf run` charges against the 16 MB cap

The challenge counts the code of `train_gpt.py` (the records' README rules). The script's entry is
`pgolf.submission` (the `run` verb only); the modules and definitions it carries are those the configured run
reaches (`pgolf.experiments.closure`: cut points per configuration, then tree shaking), with the configuration baked
in and its fields folded into the code (`pgolf.experiments.cfgfold`: the script's command line changes only
`LIVE_FIELDS`), constant parameters folded, the statements after a `return`/`raise` dropped, checks and every error
message stripped (`shaken_files`).

The counted form (`flat_source`, the file `pgolf bundle` / `pgolf submit` write as train_gpt.py and every
standalone test runs) is ONE module (`pgolf.experiments.flatten`): the shaken modules concatenated in import order,
every pgolf import replaced by a direct reference, colliding module-level names made unique, no import hook and no
file table; `if __name__ == "__main__": raise SystemExit(main())` ends it. It starts from the records' code wrapper
(R0405 lzma+b85; R0414 pyminify → lzma → b85 in an exec wrapper, 122,168 B of source counted as 27,610 B) and goes
further: docstrings, other string-literal statements, comments and function annotations removed (`ast` parse →
strip → `ast.unparse`), then `python-minifier` (`compact_python`: local and module-level renaming, no literal
hoisting, `FLAT_MINIFIER`; `main` and the names in class-body annotations keep theirs), compressed (by default the
shorter of raw LZMA2 preset 9e, as R0325, and brotli q11, as R0427: brotli today, ≈2 % shorter) and carried as a latin-1 str literal under a PEP 263 coding line
(`latin1_literal`: one source byte per compressed byte but ≈1 % of escapes, where base85 costs 25 %), decoded by
`exec(R.decompress('...'.encode('latin-1')))`. It is deterministic for a given source tree, configuration,
Python and python-minifier version. Run standalone, the script counts its own file (`FLAT_REPLACEMENTS`:
`script_code_bytes` is the size of `__file__`), so a run from the script charges the same code bytes as a run from
the package.

The readable form (`bundle_source`, train_gpt_readable.py) keeps the modules apart for tracebacks: their sources as
literals and a `sys.meta_path` finder placed first (pgolf.experiments.bootstrap) that serves them as the package
`pgolf`, with `__file__ = <script>/pgolf/<module>.py`; it carries the counted size (`PGOLF_COUNTED_BYTES`).

    python -m pytest tests/experiments/test_bundle.py -q
"""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path
from typing import Any, Mapping

from pgolf.experiments.counted import (  # noqa: F401 (re-exported: bench, tests, submit)
    COUNTED_CODECS, COUNTED_COOKIE, compress_payload, counted_codec, counted_script, latin1_literal, unwrap_counted,
    wrap_counted,
)
from pgolf.experiments.bootstrap import BOOTSTRAP, bootstrap_source  # noqa: F401 (re-exported: tests)
from pgolf.experiments.cfgfold import (  # noqa: F401 (re-exported)
    LIVE_FIELDS, SUBMISSION, VARYING_FIELDS, baked_dict, baked_submission,
)
from pgolf.experiments.modnames import from_module, module_name  # noqa: F401 (module_name: re-exported)
from pgolf.experiments.minify import (  # noqa: F401
    annotation_names, compact_python, minify_file, minify_python, minify_tree,
)

PACKAGE = "pgolf"
ENTRY_MODULE = "pgolf.cli"
RESOURCE_SUFFIXES = (".toml",)
"""Non-Python package files the bundle carries (pyproject package-data: presets/*.toml)."""


# ------------------------------------------------------------------------------------------------ sources

def package_files(package_root: str | Path | None = None) -> dict[str, str]:
    """Package sources as {"pgolf/<relpath>": text}, sorted: the .py files and the RESOURCE_SUFFIXES files.

    `package_root=None`: the running pgolf — the embedded table when running from a bundle, else the package folder.
    A folder is read as the `pgolf` package whatever its name (tests build small fake packages).
    """
    if package_root is None:
        import pgolf

        embedded = getattr(getattr(pgolf, "__loader__", None), "bundle_files", None)
        if embedded is not None:
            return dict(sorted(embedded.items()))
        package_root = Path(pgolf.__file__).resolve().parent
    root = Path(package_root)
    if not root.is_dir():
        raise ValueError(f"package root {root} is not a directory")
    out: dict[str, str] = {}
    for p in sorted(root.rglob("*")):
        if not p.is_file() or "__pycache__" in p.parts or not (p.suffix == ".py" or p.suffix in RESOURCE_SUFFIXES):
            continue
        out[f"{PACKAGE}/{p.relative_to(root).as_posix()}"] = p.read_text(encoding="utf-8")
    if not any(k.endswith(".py") for k in out):
        raise ValueError(f"no .py files under {root}")
    return dict(sorted(out.items()))


def _imported_names(tree: ast.AST, current: str, is_pkg: bool) -> list[str]:
    """Every dotted name an import statement anywhere in the tree (function bodies included) may load."""
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = from_module(node, current, is_pkg)
            names.append(module)
            names += [f"{module}.{a.name}" for a in node.names if a.name != "*"]
    return names


def import_closure(files: Mapping[str, str], entries: tuple[str, ...] = (ENTRY_MODULE,)) -> list[str]:
    """Relpaths of the modules reachable from `entries` through pgolf imports (and their parent packages), sorted."""
    modules = {module_name(k): k for k in files if k.endswith(".py")}
    seen: set[str] = set()
    stack = list(entries)
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        if name not in modules:
            raise ValueError(f"module {name!r} is not in the package sources (have: {', '.join(sorted(modules))})")
        seen.add(name)
        parts = name.split(".")
        stack += [".".join(parts[:i]) for i in range(1, len(parts))]
        rel = modules[name]
        try:
            tree = ast.parse(files[rel], filename=rel)
        except SyntaxError as e:
            raise ValueError(f"{rel}: cannot parse ({e})") from None
        for dotted in _imported_names(tree, name, rel.endswith("/__init__.py")):
            if dotted != PACKAGE and not dotted.startswith(PACKAGE + "."):
                continue
            p = dotted.split(".")
            stack += [".".join(p[:i]) for i in range(1, len(p) + 1) if ".".join(p[:i]) in modules]
    return sorted(modules[n] for n in seen)


def bundle_files(files: Mapping[str, str], entries: tuple[str, ...] = (ENTRY_MODULE,)) -> dict[str, str]:
    """The files a bundle embeds: the import closure of `entries` plus every resource file."""
    keep = set(import_closure(files, entries)) | {k for k in files if not k.endswith(".py")}
    return {k: files[k] for k in sorted(keep)}


# ------------------------------------------------------------------------------------------------ the script

def _literal(text: str) -> str:
    """A triple-quoted literal of `text` that stays readable (only backslashes, quotes and CRs escaped)."""
    body = text.replace("\\", "\\\\").replace("'", "\\'").replace("\r", "\\r")
    lit = "'''" + body + "'''"
    if ast.literal_eval(lit) != text:  # cannot happen for str input; guards the escaping above
        raise ValueError("internal error: bundle literal does not round-trip")
    return lit


def default_config() -> Any:
    """The configuration a bundle is built for when none is given: the cpu-demo preset (the default `pgolf run`)."""
    from pgolf.config import build_config, load_preset

    return build_config([("preset cpu-demo", load_preset("cpu-demo"))])


def script_files(files: Mapping[str, str], cfg: Any = None, *, minify: bool = False) -> dict[str, str]:
    """The files the script of `cfg` embeds: the closure of pgolf.submission for that configuration (shaken,
    `pgolf.experiments.closure`), optionally minified first (each file on its own: `flat_source` is the counted
    form)."""
    out = shaken_files(files, cfg, minify=minify)
    if not minify:
        return out
    return {k: compact_python(v, k) if k.endswith(".py") else minify_file(k, v) for k, v in out.items()}


def shaken_files(files: Mapping[str, str], cfg: Any = None, *, minify: bool = False) -> dict[str, str]:
    """`script_files` before python-minifier: baked, shaken (after `minify_tree` with `minify`), checks stripped."""
    from pgolf.experiments.closure import closure_plan, shake

    cfg = default_config() if cfg is None else cfg
    plan = closure_plan(cfg)
    files = {k: v for k, v in files.items() if k.endswith(".py")}  # no presets: the configuration is baked
    files[SUBMISSION] = baked_submission(files[SUBMISSION], cfg)
    return strip_script_checks(shake(files, plan, prepare=minify_tree if minify else None), plan, cfg)


FLAT_REPLACEMENTS = {
    ("pgolf/pack/budget.py", "script_code_bytes"): "def script_code_bytes():\n    import os\n"
                                                   "    return os.path.getsize(__file__)\n",
}
"""Functions the one-namespace script defines its own way: the package's `script_code_bytes` asks the readable
script's import hook for the size; the flat script is `__file__` itself."""


def flat_tree(files: Mapping[str, str], cfg: Any = None) -> Any:
    """The counted script of `cfg` as one module (`pgolf.experiments.flatten.Flat`), before python-minifier."""
    from pgolf.experiments.flatten import flatten, shake_flat
    from pgolf.experiments.strip import drop_empty_hooks, drop_unreachable

    shaken = shaken_files(files, cfg, minify=True)
    for (rel, name), src in FLAT_REPLACEMENTS.items():
        if rel in shaken:
            tree = ast.parse(shaken[rel])
            tree.body = [ast.parse(src).body[0] if isinstance(n, ast.FunctionDef) and n.name == name else n
                         for n in tree.body]
            shaken[rel] = ast.unparse(tree) + "\n"
    flat = flatten(shaken)
    for stmts in flat.parts.values():  # an import of a module left out became `raise ImportError`: what follows goes
        drop_unreachable(ast.Module(body=stmts, type_ignores=[]))
        drop_empty_hooks(stmts)
        _literal_fields_as_str(stmts)
    return shake_flat(flat)


def _literal_fields_as_str(stmts: list[ast.stmt]) -> None:
    """A class field annotated `Literal["a", "b", ...]` (only strings) is annotated `str` in the script: the
    choices are the package's validation (the script has none), and every reader of the annotation (the baked
    override parser, `pgolf.fields.parse_value` of a manifest) treats both as a str."""
    for c in (n for s in stmts for n in ast.walk(s) if isinstance(n, ast.ClassDef)):
        for st in c.body:
            a = st.annotation if isinstance(st, ast.AnnAssign) else None
            if (isinstance(a, ast.Subscript) and getattr(a.value, "id", getattr(a.value, "attr", None)) == "Literal"
                    and all(isinstance(e, ast.Constant) and isinstance(e.value, str)
                            for e in (a.slice.elts if isinstance(a.slice, ast.Tuple) else [a.slice]))):
                st.annotation = ast.Name("str", ast.Load())


BLOCK_INSTALLED = "__import__('sys').modules['pgolf'] = None"
"""The counted script's first statement (after `from __future__`). Every pgolf module it runs is in it, so an
import that reaches for one it left out (the `module:function` string of an eval mode it was not built with) fails
("No module named 'pgolf.eval'; 'pgolf' is not a package", or "import of pgolf halted" for a bare `import pgolf`)
instead of loading an installed pgolf of another version."""

FLAT_PRESERVED = ("main",)
"""Module-level names the counted script keeps (a driver calls `main(argv)`); python-minifier renames the rest."""


def flat_source(files: Mapping[str, str], cfg: Any = None, *, rename_globals: bool = True) -> str:
    """The counted script's source before compression: `flat_tree` through python-minifier, module-level names
    renamed too with `rename_globals` (every reference is in this one module)."""
    from pgolf.config import SECTIONS

    flat = flat_tree(files, cfg)
    tree = flat.module()
    first = next(i for i, n in enumerate(tree.body)
                 if not (isinstance(n, ast.ImportFrom) and n.module == "__future__"))  # those must stay first
    tree.body.insert(first, ast.parse(BLOCK_INSTALLED).body[0])
    sections = {flat.names.get((c.__module__, c.__name__)) for c in SECTIONS.values()}
    return compact_python(ast.unparse(tree), "<script>", rename_globals=rename_globals,
                          preserve_globals=FLAT_PRESERVED + annotation_names(tree, sections), **FLAT_MINIFIER)


FLAT_MINIFIER = {"hoist_literals": False, "prefer_single_line": True}
"""python-minifier options of the one-namespace script: literal hoisting costs ≈300 counted bytes there (raw LZMA2
encodes a repeated literal as a short match), one statement per line ≈50 more."""


ENTRY_FUNCTIONS = frozenset({"main"})
"""Functions the world outside the script's sources calls (the bootstrap, a driver: `pgolf.submission.main(argv)`):
`fold_constant_parameters` leaves their parameters alone."""
ERROR_REPORTERS = frozenset({"main"})
"""Functions whose catch-all handler only reports an error (pgolf.submission.main: one line, exit status 2): a raise
they catch is not control flow, so `strip_checks` may strip it."""


def strip_script_checks(shaken: Mapping[str, str], plan: Any, cfg: Any = None) -> dict[str, str]:
    """`strip_checks` on every shaken module (the protected functions computed over all of them), then shaken again:
    what only a check used (a message helper, a validator's imports) leaves the script."""
    from pgolf.experiments.closure import shake
    from pgolf.experiments.fold import fold_constant_locals, fold_constant_parameters
    from pgolf.experiments.strip import (
        drop_unreachable, empty_functions, protected_functions, pure_functions, strip_checks, strip_messages,
    )

    trees = {k: ast.parse(v, filename=k) for k, v in shaken.items() if k.endswith(".py")}
    if cfg is not None and any(k.endswith("submission.py") and "LIVE_FIELDS" in v for k, v in shaken.items()):
        from pgolf.experiments.cfgfold import fold_config_fields

        fold_config_fields(trees, cfg, LIVE_FIELDS)
    fold_constant_parameters(trees, ENTRY_FUNCTIONS)
    for t in trees.values():
        fold_constant_locals(t)  # what the folded parameters made constant
        drop_unreachable(t)
    protected, empty = protected_functions(trees, ERROR_REPORTERS), frozenset()
    for _ in range(4):  # until no function becomes empty (a validator's callers may empty in turn)
        pure = pure_functions(trees)
        trees = {k: strip_checks(t, protected, pure, empty) for k, t in trees.items()}
        if empty_functions(trees) == empty:
            break
        empty = empty_functions(trees)
    for t in trees.values():
        strip_messages(t)
    stripped = {k: ast.unparse(trees[k]) + "\n" if k in trees else v for k, v in shaken.items()}
    return shake(stripped, plan)


def bundle_source(files: Mapping[str, str], cfg: Any = None, *, minify: bool = False, preset: str | None = None,
                  counted_bytes: int | None = None) -> str:
    """The readable single-file script of `cfg` (default: the cpu-demo preset): the embedded sources as literals in
    front of the meta-path bootstrap; with `minify`, the counted form's source (`flat_source`). `preset`: the one its header's usage line names (the script
    itself defaults to cpu-demo, like `pgolf run`: the counted bytes must not depend on the preset's name)."""
    import pgolf

    chosen = script_files(files, cfg) if not minify else {}
    default = preset or "cpu-demo"
    head = ("#!/usr/bin/env python3\n"
            f"# pgolf {pgolf.__version__} single-file training script: {len(chosen)} embedded files "
            "(generated by pgolf.experiments.bundle; do not edit).\n"
            f"# Runs like `pgolf run`: python train_gpt.py [run] [--preset {default}] [--section.field VALUE ...]\n")
    if counted_bytes is not None:
        head += f"PGOLF_COUNTED_BYTES = {counted_bytes}  # the counted (minified, compressed) form's size\n"
    if minify:
        return flat_source(files, cfg)
    return head + script_text(chosen)


def script_text(chosen: Mapping[str, str], *, minify: bool = False) -> str:
    """The embedded-files table of `chosen` ({relpath: text}) followed by the bootstrap (minified with `minify`)."""
    table = "PGOLF_FILES = {\n" + "".join(f"{k!r}: {_literal(v)},\n" for k, v in chosen.items()) + "}\n"
    boot = bootstrap_source(any(not k.endswith(".py") for k in chosen))
    return table + (compact_python(minify_python(boot), "<bootstrap>") if minify else boot)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write `text` as UTF-8 (no newline translation) to a temporary file next to `path`, then rename it over."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    from pgolf.experiments.report import save_atomic  # lazy: measuring code bytes need not import the reports

    return save_atomic(Path(path), lambda f: f.write(data))


_COUNTED_CACHE: dict[tuple[str, str, str, str | None], bytes] = {}


def counted_source(files: Mapping[str, str], cfg: Any = None, codec: str = "auto",
                   preset: str | None = None) -> bytes:
    """Minified script of `cfg`, compressed with `codec`, wrapped (`wrap_counted`): the file whose length is the code
    bytes (bytes: the literal is latin-1).

    Cached per (sources, closure plan, codec, preset): `pgolf run` measures it once per quantization."""
    from pgolf.experiments.closure import closure_plan

    cfg = default_config() if cfg is None else cfg
    h = hashlib.sha256()
    for k, v in sorted(files.items()):
        h.update(k.encode() + b"\0" + v.encode("utf-8") + b"\0")
    key = (h.hexdigest(), closure_plan(cfg).key() + repr(baked_dict(cfg)), codec, preset)
    if key not in _COUNTED_CACHE:
        minified = bundle_source(files, cfg, minify=True, preset=preset).encode("utf-8")
        _COUNTED_CACHE[key] = counted_script(minified, codec)
    return _COUNTED_CACHE[key]


def measure_code_bytes(cfg: Any = None, package_root: str | Path | None = None, codec: str = "auto") -> int:
    """Bytes of the counted script of `cfg` (default: the cpu-demo preset). Inside a running script: its own size."""
    if package_root is None:
        import pgolf

        own = getattr(getattr(pgolf, "__loader__", None), "code_bytes", None)
        if own is not None:
            return int(own)
    return len(counted_source(package_files(package_root), cfg, codec))


def bundle_sizes(files: Mapping[str, str] | None = None, cfg: Any = None, codec: str = "auto",
                 preset: str | None = None) -> dict[str, int]:
    """Byte sizes: package sources of the embedded modules, the readable script, its minified form, the counted one."""
    files = package_files() if files is None else files
    chosen = script_files(files, cfg)
    used = {k: files[k] for k in chosen}
    counted = len(counted_source(files, cfg, codec, preset))
    readable = bundle_source(files, cfg, preset=preset, counted_bytes=counted).encode("utf-8")
    minified = bundle_source(files, cfg, minify=True, preset=preset).encode("utf-8")
    return {"files": len(chosen), "source_bytes": sum(len(v.encode("utf-8")) for v in used.values()),
            "bundle_bytes": len(readable), "minified_bytes": len(minified), "counted_bytes": counted}


def write_bundle(out_dir: str | Path, files: Mapping[str, str] | None = None, cfg: Any = None, codec: str = "auto",
                 counted_name: str = "train_gpt.py", readable_name: str = "train_gpt_readable.py",
                 preset: str | None = None) -> dict[str, Path]:
    """Write the counted script and the readable bundle into `out_dir` (atomically); → {"counted": p,
    "readable": p}."""
    files = package_files() if files is None else files
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = counted_source(files, cfg, codec, preset)
    counted = write_bytes_atomic(out / counted_name, data)
    readable = write_text_atomic(out / readable_name, bundle_source(files, cfg, preset=preset,
                                                                    counted_bytes=len(data)))
    return {"counted": counted, "readable": readable}
