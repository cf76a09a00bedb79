"""The single-file bundle: static import closure, minification, the counted self-extracting form, standalone runs.

    python -m pytest tests/experiments/test_bundle.py -q
"""

from __future__ import annotations

import ast
import base64
import lzma
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pgolf.experiments.bundle import (
    bundle_source, counted_source, import_closure, minify_file, minify_python, module_name, package_files,
)

HIDE_AND_RUN = r'''
import importlib.util, json, os, runpy, sys
script, out, *argv = sys.argv[1:]
# make the installed (editable) pgolf unreachable: drop every sys.path entry that holds a pgolf package
sys.path[:] = [p for p in sys.path if not os.path.isdir(os.path.join(p or ".", "pgolf"))]
hidden = importlib.util.find_spec("pgolf") is None
runpy.run_path(script, run_name="pgolf_bundle")  # installs the meta-path finder; main() is not called
import pgolf.cli
rc = pgolf.cli.main(argv)
from pgolf.pack.budget import measure_code_bytes
mods = {n: m for n, m in sys.modules.items() if n.split(".")[0] == "pgolf"}
json.dump({"rc": rc, "hidden": hidden, "code_bytes": measure_code_bytes(),
           "origins": {n: getattr(m.__spec__, "origin", None) for n, m in mods.items()},
           "files": {n: getattr(m, "__file__", None) for n, m in mods.items()}}, open(out, "w"))
'''


def run_bundle_hidden(script: Path, argv: list[str], cwd: Path, out: Path) -> dict:
    """Run `script` with the pgolf package unreachable; → the driver's JSON (rc, origins, code_bytes)."""
    import json

    driver = cwd / "hide_and_run.py"
    driver.write_text(HIDE_AND_RUN)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # conftest runs torch on one thread
    proc = subprocess.run([sys.executable, str(driver), str(script), str(out), *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text())


def fake_package(root: Path) -> Path:
    pkg = root / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "presets").mkdir()
    (pkg / "__init__.py").write_text('"""fake pgolf."""\n__version__ = "0"\n')
    (pkg / "cli.py").write_text("from pgolf.a import A\n\ndef lazy():\n    from pgolf.sub import b\n    return b.B\n")
    (pkg / "a.py").write_text("from .sub.c import C  # relative\nA = C + 1\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "b.py").write_text("import pgolf.sub.c\nB = 2\n")
    (pkg / "sub" / "c.py").write_text("C = 3\n")
    (pkg / "unused.py").write_text("import torch\n")
    (pkg / "presets" / "x.toml").write_text("# comment\n[model]\nnum_layers = 2\n")
    (pkg / "notes.txt").write_text("not carried\n")
    (pkg / "__pycache__").mkdir()
    (pkg / "__pycache__" / "junk.py").write_text("ignored\n")
    return pkg


def test_closure_follows_module_level_lazy_and_relative_imports_only(tmp_path):
    files = package_files(fake_package(tmp_path))
    assert sorted(files) == ["pgolf/__init__.py", "pgolf/a.py", "pgolf/cli.py", "pgolf/presets/x.toml",
                             "pgolf/sub/__init__.py", "pgolf/sub/b.py", "pgolf/sub/c.py", "pgolf/unused.py"]
    assert import_closure(files) == ["pgolf/__init__.py", "pgolf/a.py", "pgolf/cli.py", "pgolf/sub/__init__.py",
                                     "pgolf/sub/b.py", "pgolf/sub/c.py"]
    assert module_name("pgolf/sub/__init__.py") == "pgolf.sub" and module_name("pgolf/sub/b.py") == "pgolf.sub.b"
    with pytest.raises(ValueError, match="'pgolf.nope' is not in the package sources"):
        import_closure(files, entries=("pgolf.nope",))


def test_real_closure_covers_every_lazy_import_of_the_cli():
    files = package_files()
    closure = set(import_closure(files))
    for rel in ("pgolf/cli.py", "pgolf/run.py", "pgolf/experiments/submit.py", "pgolf/experiments/bundle.py",
                "pgolf/eval/modes.py", "pgolf/quant/qat.py", "pgolf/data/cli.py"):
        assert rel in closure
    # every pgolf import anywhere in the closure resolves inside it (what the meta-path finder must serve)
    names = {module_name(r) for r in closure}
    for rel in closure:
        for node in ast.walk(ast.parse(files[rel])):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pgolf"):
                assert node.module in names, f"{rel}: {node.module}"


def test_minify_strips_docstrings_and_comments_keeps_behaviour_and_is_idempotent():
    src = ('"""Module doc."""\nimport math  # a comment\n\n\nclass K:\n    """Doc."""\n\n    x: int = 1\n'
           '    """Attribute doc."""\n\n\ndef f(v):\n    """Only a docstring."""\n\n\ndef g(v):\n    return math.sqrt(v)'
           '  # trailing\n')
    out = minify_python(src)
    assert '"""' not in out and "#" not in out and "doc" not in out.lower()
    ns: dict = {}
    exec(compile(out, "<min>", "exec"), ns)
    assert ns["f"](1) is None and ns["g"](9.0) == 3.0 and ns["K"].x == 1
    assert minify_python(out) == out
    assert minify_file("pgolf/presets/p.toml", "# c\n\n[a]\nb = 1  # kept\n") == "[a]\nb = 1  # kept\n"
    for rel, text in package_files().items():  # the real sources: idempotent, so a counted script measures itself
        once = minify_file(rel, text)
        assert minify_file(rel, once) == once, rel


def test_counted_script_is_the_compressed_minified_bundle_and_measure_code_bytes_counts_it(tmp_path):
    from pgolf.pack.budget import code_bundle, measure_code_bytes

    files = package_files()
    counted = counted_source(files)
    b85 = counted.split("b85decode('", 1)[1].split("')", 1)[0]
    payload = lzma.decompress(base64.b85decode(b85), format=lzma.FORMAT_RAW, filters=[{"id": lzma.FILTER_LZMA2}])
    assert payload.decode() == bundle_source(files, minify=True)
    assert measure_code_bytes() == len(counted.encode()) == len(code_bundle(counted=True))
    assert measure_code_bytes() < len(code_bundle()) / 3  # minified + compressed vs the readable bundle
    assert 0 < measure_code_bytes(codec="brotli") != measure_code_bytes()
    ast.parse(bundle_source(files))  # the readable bundle is valid Python


def test_bundle_runs_as_the_cli_without_the_package(tmp_path):
    """`python train_gpt.py presets` (the __main__ path) lists the embedded presets; with the package hidden, every
    pgolf module comes from the bundle and the counted script measures its own size."""
    files = package_files()
    readable = tmp_path / "train_gpt_readable.py"
    readable.write_text(bundle_source(files))
    counted = tmp_path / "train_gpt.py"
    counted.write_text(counted_source(files))
    proc = subprocess.run([sys.executable, str(readable), "presets"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "presets: cpu-demo, cpu-smoke" in proc.stdout and "--train.seed (int, default 1337)" in proc.stdout
    rep = run_bundle_hidden(counted, ["presets"], tmp_path, tmp_path / "out.json")
    assert rep["rc"] == 0 and rep["hidden"]
    assert rep["code_bytes"] == counted.stat().st_size
    assert {"pgolf", "pgolf.cli", "pgolf.config"} <= set(rep["origins"])
    for name, origin in rep["origins"].items():
        assert origin.startswith(str(counted) + os.sep), (name, origin)
        assert rep["files"][name] == origin


def test_bundle_verb_writes_both_scripts_and_reports_their_sizes(tmp_path, capsys):
    from pgolf.cli import main
    from pgolf.pack.budget import measure_code_bytes

    assert main(["bundle", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    counted, readable = tmp_path / "train_gpt.py", tmp_path / "train_gpt_readable.py"
    assert counted.stat().st_size == measure_code_bytes()
    assert f"counted (lzma + base85) {counted.stat().st_size:,} bytes" in out
    assert f"readable {readable.stat().st_size:,}" in out
