"""The single-file bundle: static import closure, minification, the counted self-extracting form, standalone runs.

    python -m pytest tests/experiments/test_bundle.py -q
"""

from __future__ import annotations

import ast
import lzma
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pgolf.experiments.bundle import (
    bundle_source, counted_codec, counted_source, import_closure, latin1_literal, minify_file, minify_python, module_name,
    package_files, script_files, unwrap_counted, wrap_counted,
)

HIDE_AND_RUN = r'''
import importlib.util, json, os, runpy, sys
script, out, *argv = sys.argv[1:]
# make the installed (editable) pgolf unreachable: drop every sys.path entry that holds a pgolf package
if os.environ.get("HIDE_PGOLF", "1") == "1":
    sys.path[:] = [p for p in sys.path if not os.path.isdir(os.path.join(p or ".", "pgolf"))]
hidden = importlib.util.find_spec("pgolf") is None
sys.argv = [script, *argv]
try:  # as `python train_gpt.py ARGV`: the script runs main() and exits with its status
    runpy.run_path(script, run_name="__main__")
    rc = None
except SystemExit as e:
    rc = e.code
json.dump({"rc": rc, "hidden": hidden, "blocked": "pgolf" in sys.modules and sys.modules["pgolf"] is None,
           "pgolf_modules": sorted(n for n in sys.modules if n.split(".")[0] == "pgolf" and sys.modules[n] is not None),
           "meta_path": [type(f).__name__ for f in sys.meta_path]}, open(out, "w"))
'''


def run_bundle_hidden(script: Path, argv: list[str], cwd: Path, out: Path, *, hide: bool = True) -> dict:
    """Run `script` as `python script ARGV` with the pgolf package unreachable (`hide=False`: reachable); → the
    driver's JSON (rc, hidden, blocked: sys.modules['pgolf'] is None, the pgolf modules imported: none for the
    one-namespace script, the meta-path finders)."""
    import json

    driver = cwd / "hide_and_run.py"
    driver.write_text(HIDE_AND_RUN)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",  # conftest runs torch on one thread
           "HIDE_PGOLF": "1" if hide else "0"}
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


def _cfg(preset: str, *pairs: tuple[str, str]):
    from pgolf.config import build_config, load_preset, parse_overrides

    return build_config([("preset", load_preset(preset)), ("overrides", parse_overrides(list(pairs)))])


SOTA = ("quant.recipe", "sota-lqer"), ("pack.codec", "rans-ctx"), ("eval.mode", "ttt-phased")


def test_script_closure_follows_the_configuration_and_leaves_tooling_out():
    files = package_files()
    demo = script_files(files, _cfg("cpu-demo"))
    sota = script_files(files, _cfg("sota-sp8192", *SOTA))
    for chosen in (demo, sota):
        assert {"pgolf/submission.py", "pgolf/run.py", "pgolf/train/loop.py", "pgolf/pack/container.py"} <= set(chosen)
        assert not any(k.startswith(("pgolf/experiments/", "pgolf/cli.py", "pgolf/data/cli.py")) for k in chosen)
        # every module-level pgolf import of an embedded module resolves inside the script (what the finder serves)
        names = {module_name(r) for r in chosen if r.endswith(".py")}
        for rel, text in chosen.items():
            if rel.endswith(".py"):
                for node in ast.parse(text).body:
                    if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pgolf"):
                        assert node.module in names, f"{rel}: {node.module}"
    assert "pgolf/eval/lora.py" in sota and "pgolf/eval/lora.py" not in demo  # the eval mode's module only
    assert "pgolf/quant/hessian.py" in sota and "pgolf/quant/hessian.py" not in demo  # sota-lqer needs Hessians
    # data preparation is cut (the script reads a prepared dataset, and says how to make one), and what only it
    # called leaves
    assert "def prepare_default_dataset" in demo["pgolf/data/dataset.py"] and "pgolf data prepare --out DIR" in \
        demo["pgolf/data/dataset.py"] and "def prepare_corpus" not in demo["pgolf/data/corpus.py"]
    assert "def cmd_run" not in "".join(demo.values())
    # registry tables keep the configured recipe and its methods only
    assert "'int8-baseline': QuantRecipe" in demo["pgolf/quant/recipes.py"] and "'sota-lqer'" not in \
        demo["pgolf/quant/recipes.py"]
    assert "MethodSpec('int8_percentile'" in demo["pgolf/quant/methods.py"]
    assert "MethodSpec('sdclip_gptq'" not in demo["pgolf/quant/methods.py"]
    assert "MethodSpec('sdclip_gptq'" in sota["pgolf/quant/methods.py"]
    assert "'sota-lqer'" in sota["pgolf/quant/recipes.py"]
    # codec modules: the script decodes only the artifact it writes, in the configured codec
    plain = script_files(files, _cfg("cpu-demo", ("pack.codec", "brotli")))
    assert "pgolf/pack/entropy.py" in demo and "pgolf/pack/adaptive.py" in sota  # rans-ctx: the entropy coder
    assert not any(k.startswith(("pgolf/pack/entropy", "pgolf/pack/rans_core", "pgolf/pack/adaptive")) for k in plain)
    assert "pgolf/pack/container.py" in plain
    assert not any("lrzip" in k for k in (*demo, *sota, *plain))


def test_every_cut_point_names_a_module_level_function():
    from pgolf.experiments.closure import CUTS

    files = package_files()
    for mod, fn, _ in CUTS:
        rel = next(k for k in files if module_name(k) == mod and k.endswith(".py"))
        assert any(isinstance(n, ast.FunctionDef) and n.name == fn for n in ast.parse(files[rel]).body), (mod, fn)


def test_shake_keeps_what_is_reachable_and_is_idempotent(tmp_path):
    from pgolf.experiments.closure import Plan, shake

    files = {
        "pgolf/__init__.py": "",
        "pgolf/submission.py": "from pgolf.lib import used, Kept\nfrom pgolf.reg import REG\n\ndef main():\n"
                               "    return used() + Kept().v + len(REG)\n",
        "pgolf/lib.py": "import os\nfrom pgolf.other import helper, unused_name\nCONST = 3\nDROPPED = 4\n\n"
                        "def used():\n    return helper() + CONST\n\ndef unused():\n    from pgolf.tool import x\n"
                        "    return x\n\nclass Kept:\n    v = 1\n\ndef cut_me():\n    from pgolf.tool import x\n"
                        "    return x\n",
        "pgolf/other.py": "def helper():\n    return 1\n\ndef unused_name():\n    return 2\n",
        "pgolf/reg.py": "REG = {'a': 'pgolf.lazy:run'}\n",
        "pgolf/lazy.py": "def run():\n    return 0\n\ndef other():\n    return 1\n",
        "pgolf/tool.py": "x = 1\n",
        "pgolf/presets/p.toml": "[a]\n",
    }
    plan = Plan(cuts=frozenset({("pgolf.lib", "cut_me")}))
    out = shake(files, plan)
    assert set(out) == {"pgolf/__init__.py", "pgolf/submission.py", "pgolf/lib.py", "pgolf/other.py",
                        "pgolf/reg.py", "pgolf/lazy.py", "pgolf/presets/p.toml"}  # no pgolf.tool
    lib = out["pgolf/lib.py"]
    assert "def used" in lib and "class Kept" in lib and "CONST = 3" in lib
    assert "DROPPED" not in lib and "def unused" not in lib and "unused_name" not in lib
    assert "def cut_me" not in lib  # cut, and then unreferenced
    assert "def other" not in out["pgolf/lazy.py"] and "def run" in out["pgolf/lazy.py"]  # "module:name" strings
    assert shake(out, plan) == out
    ns: dict = {}
    sys.modules.pop("pgolf_fake", None)
    exec(compile(out["pgolf/other.py"] + out["pgolf/lib.py"].split("\n", 2)[2], "<lib>", "exec"), ns)
    assert ns["used"]() == 4


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
    from pgolf.experiments.bundle import measure_code_bytes

    files = package_files()
    counted = counted_source(files, codec="lzma")
    assert counted.startswith(b"# -*- coding: latin-1 -*-\nimport lzma as L\nexec(L.decompress('''")
    lit = ast.literal_eval(counted.decode("latin-1").split("decompress(", 1)[1].split(".encode(", 1)[0])
    payload = lzma.decompress(lit.encode("latin-1"), format=lzma.FORMAT_RAW, filters=[{"id": lzma.FILTER_LZMA2}])
    assert payload == unwrap_counted(counted)
    assert payload.decode() == bundle_source(files, minify=True)
    assert measure_code_bytes(codec="lzma") == len(counted)
    brotli_form = counted_source(files, codec="brotli")
    assert brotli_form.startswith(b"# -*- coding: latin-1 -*-\nimport brotli as R\nexec(R.decompress('''")
    assert unwrap_counted(brotli_form) == payload and counted_codec(brotli_form) == "brotli"
    # the default ("auto") is the shorter of the two forms
    assert counted_source(files) == min(counted, brotli_form, key=len) and measure_code_bytes() == min(
        len(counted), len(brotli_form))
    raw = lzma.compress(payload, format=lzma.FORMAT_RAW, filters=[{"id": lzma.FILTER_LZMA2, "preset": 9}])
    assert len(counted) < len(raw) * 1.03  # the literal costs ~1 % over the compressed bytes (base85: 25 %)
    assert measure_code_bytes() < len(bundle_source(files)) / 3  # minified + compressed vs the readable bundle
    sota = _cfg("sota-sp8192", *SOTA)
    assert measure_code_bytes(cfg=sota) > measure_code_bytes()  # Hessians, LQER, TTT: more code
    ast.parse(bundle_source(files))  # the readable bundle is valid Python
    assert "def tensor_byte_report" not in payload.decode()  # pgolf info's report: not what a run executes


def test_bundle_runs_without_the_package_and_counts_itself(tmp_path):
    """`python train_gpt_readable.py` (the __main__ path) is `pgolf run`; with the package hidden, the counted script
    runs as one namespace (no pgolf module, no import hook) and measures its own size."""
    files = package_files()
    counted = tmp_path / "train_gpt.py"
    counted.write_bytes(counted_source(files, preset="cpu-smoke"))
    readable = tmp_path / "train_gpt_readable.py"
    readable.write_text(bundle_source(files, preset="cpu-smoke", counted_bytes=counted.stat().st_size))
    proc = subprocess.run([sys.executable, str(readable), "run", "--train.sed", "3"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "bad override (KeyError('sed'))" in proc.stderr  # the baked configuration's
    # minimal override parser (pgolf.config.baked_config): no did-you-mean, no ranges, but no unknown field
    rep = run_bundle_hidden(counted, ["--model.num_layers", "x"], tmp_path, tmp_path / "out.json")
    assert rep["rc"] == 2 and rep["hidden"]  # a value of the wrong type: the parser's own error
    assert rep["pgolf_modules"] == [] and "_BundleImporter" not in rep["meta_path"]  # one namespace, no hook
    # with the package reachable, the script still never imports it: its first statement blocks `import pgolf`
    rep = run_bundle_hidden(counted, ["--model.num_layers", "x"], tmp_path, tmp_path / "out2.json", hide=False)
    assert rep["rc"] == 2 and not rep["hidden"] and rep["blocked"] and rep["pgolf_modules"] == []
    # a field outside LIVE_FIELDS is folded into the code: the script refuses to change it, naming it
    proc = subprocess.run([sys.executable, str(counted), "run", "--eval.mode", "ttt-lora"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "--eval.mode ttt-lora: this script has eval.mode baked in" in proc.stderr
    # its own size: the code bytes a run from it charges (the standalone runs compare run.json's bytes)
    script = unwrap_counted(counted.read_bytes()).decode()
    assert re.search(r"^def \w+\(\):import os;return os.path.getsize\(__file__\)$", script, re.M)


def test_bundle_verb_writes_both_scripts_and_reports_their_sizes(tmp_path, capsys):
    from pgolf.cli import main
    from pgolf.experiments.bundle import measure_code_bytes

    assert main(["bundle", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    counted, readable = tmp_path / "train_gpt.py", tmp_path / "train_gpt_readable.py"
    assert counted.stat().st_size == measure_code_bytes()
    assert f"counted ({counted_codec(counted.read_bytes())}, latin-1 literal) {counted.stat().st_size:,} bytes" in out
    assert f"readable {readable.stat().st_size:,}" in out
    overrides = [f"--{k}={v}" for k, v in SOTA]
    assert main(["bundle", "--out", str(tmp_path / "s"), "--preset", "sota-sp8192", *overrides]) == 0
    out = capsys.readouterr().out
    assert "recipe sota-lqer, codec rans-ctx, eval ttt-phased" in out
    assert (tmp_path / "s" / "train_gpt.py").stat().st_size == measure_code_bytes(cfg=_cfg("sota-sp8192", *SOTA))


@pytest.mark.parametrize("seed", range(6))
def test_latin1_literal_carries_any_bytes_through_a_source_file(tmp_path, seed):
    import random

    rng = random.Random(seed)
    edge = b"\\'\r\n\x00\"" + bytes(range(48, 56))
    data = bytes(rng.choice(edge) if rng.random() < 0.3 else rng.randrange(256) for _ in range(3000))
    data += [b"", b"'", b"''", b"\\", b"\x00", b"\x000"][seed]  # endings that could close or break the literal
    script = tmp_path / "s.py"
    script.write_bytes(b"# -*- coding: latin-1 -*-\nimport sys\nsys.stdout.buffer.write(" + latin1_literal(data)
                       + b".encode('latin-1'))\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout == data
    assert len(latin1_literal(data)) < len(data) * 1.2  # one source byte per payload byte but the escapes
    wrapped = wrap_counted(lzma.compress(b"print(1)\n", format=lzma.FORMAT_RAW,
                                         filters=[{"id": lzma.FILTER_LZMA2, "preset": 9}]), "lzma")
    assert unwrap_counted(wrapped) == b"print(1)\n"


def test_methods_overriding_a_framework_base_are_framework_hooks():
    """Method-level shaking drops a method nothing references by name; the framework calls overrides of its own
    methods (Module.forward, Optimizer.step, ...) by name, so every such override in pgolf must be a listed hook."""
    import importlib
    import inspect

    from pgolf.experiments.closure import FRAMEWORK_HOOKS

    missing = []
    for rel in package_files():
        if not rel.endswith(".py") or rel.startswith(("pgolf/experiments/", "pgolf/cli")):
            continue
        mod = importlib.import_module(module_name(rel))
        for cls in vars(mod).values():
            if not (inspect.isclass(cls) and cls.__module__ == mod.__name__):
                continue
            foreign = [b for b in cls.__mro__[1:] if not b.__module__.startswith("pgolf") and b is not object]
            for name, fn in vars(cls).items():
                fn = fn.fget if isinstance(fn, property) else getattr(fn, "__func__", fn)
                if name.startswith("__") or not inspect.isfunction(fn):
                    continue
                if any(hasattr(b, name) for b in foreign) and name not in FRAMEWORK_HOOKS:
                    missing.append(f"{cls.__module__}.{cls.__qualname__}.{name}")
    assert not missing, missing


def test_shake_drops_unreferenced_methods_keeps_hooks_dunders_and_property_pairs():
    from pgolf.experiments.closure import Plan, shake

    files = {
        "pgolf/__init__.py": "",
        "pgolf/submission.py": "from pgolf.lib import K\n\ndef main():\n    k = K()\n    k.p = 2\n    return k.used()\n",
        "pgolf/lib.py": "class K:\n    def __init__(self):\n        self._p = 0\n    def forward(self):\n        return 1\n"
                        "    def used(self):\n        return self.helper() + self.p\n    def helper(self):\n"
                        "        return 1\n    def unused(self):\n        from pgolf.tool import x\n        return x\n"
                        "    @property\n    def p(self):\n        return self._p\n    @p.setter\n    def p(self, v):\n"
                        "        self._p = v\n    @property\n    def q(self):\n        return 0\n    @q.setter\n"
                        "    def q(self, v):\n        pass\n",
        "pgolf/tool.py": "x = 1\n",
    }
    out = shake(files, Plan())
    lib = out["pgolf/lib.py"]
    assert "pgolf/tool.py" not in out  # only the dropped method imported it
    for kept in ("def __init__", "def forward", "def used", "def helper", "def p(self)", "@p.setter"):
        assert kept in lib, kept
    assert "def unused" not in lib and "def q" not in lib and "q.setter" not in lib
    ns: dict = {}
    exec(compile(lib, "<lib>", "exec"), ns)
    k = ns["K"]()
    k.p = 2
    assert k.used() == 3 and k.forward() == 1
    assert shake(out, Plan()) == out
