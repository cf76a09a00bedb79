"""The single-file script's check stripping (`pgolf.experiments.strip.strip_checks`): what goes, what stays.

    python -m pytest tests/experiments/test_bundle_strip.py -q
"""

from __future__ import annotations

import ast

import pytest

from pgolf.experiments.strip import protected_functions, pure_functions, strip_checks

SRC = '''
def check(n):
    if n < 0:
        raise ValueError(f"n={n}: expected >= 0")
    assert n != 3, "three"
    return n


def impure(xs):
    if xs.pop() > 9:
        raise ValueError("popped")
    return xs


def branches(n):
    if n > 5:
        raise ValueError("big")
    elif n > 2:
        return "mid"
    else:
        return "small"


def guard(t):
    if t > 10:
        raise EvalTimeout("too slow")
    raise KeyError("k")


def caught(s):
    try:
        if not s:
            raise ValueError("empty")
        return 1
    except ValueError:
        return 0


def parse(s):
    if not s.isdigit():
        raise ValueError(s)
    return int(s)


def lenient(s):
    try:
        return parse(s)
    except ValueError:
        return -1


class K:
    def __getattr__(self, name):
        if name.startswith("x"):
            raise AttributeError(name)
        return 1


class EvalTimeout(RuntimeError):
    pass


def is_small(n):
    return n < 4


class C:
    def __init__(self, n):
        if not is_small(n):
            raise ValueError("too big")
        self.n = n
'''


def _stripped(src: str = SRC) -> tuple[str, dict]:
    trees = {"m.py": ast.parse(src)}
    out = ast.unparse(strip_checks(trees["m.py"], protected_functions(trees), pure_functions(trees)))
    ns: dict = {}
    exec(compile(out, "<stripped>", "exec"), ns)
    return out, ns


def test_checks_go_control_flow_and_guards_stay():
    out, ns = _stripped()
    assert "expected" not in out and "assert" not in out and "three" not in out
    assert ns["check"](-1) == -1 and ns["check"](3) == 3  # the package refuses both: the script does not check
    with pytest.raises(ValueError) as e:  # impure condition: the check stays (its message goes)
        ns["impure"]([10])
    assert e.value.args == ()
    assert ns["branches"](9) == "mid" and ns["branches"](1) == "small"  # the raising branch is gone
    with pytest.raises(ns["EvalTimeout"], match="too slow"):  # a run-time guard (KEPT_RAISES) keeps its message
        ns["guard"](11)
    with pytest.raises(KeyError) as e:  # a bare raise keeps its type, loses its message
        ns["guard"](0)
    assert e.value.args == ()
    assert ns["caught"]("") == 0  # a raise inside a try body is kept
    assert ns["lenient"]("x") == -1  # parse's raise is caught by lenient's handler: parse is protected
    assert ns["C"](9).n == 9 and "too big" not in out  # __init__ is stripped; is_small is pure (one return)
    assert ns["K"]().y == 1 and not hasattr(ns["K"](), "xa")  # __getattr__'s AttributeError is the protocol


def test_strip_is_idempotent_and_the_real_script_compiles():
    out, _ = _stripped()
    assert _stripped(out)[0] == out
    from pgolf.experiments.bundle import default_config, package_files, script_files

    files = script_files(package_files(), default_config())
    for rel, text in files.items():
        if rel.endswith(".py"):
            compile(text, rel, "exec")
    assert "Newton" in files["pgolf/train/muon.py"]  # a protected function (called under a catch-all) keeps its
    assert "CODEC_IDS)" not in files["pgolf/pack/container.py"]  # a module-level assert goes
    assert "expected a finite number" not in "".join(files.values())  # config.check_ranges' message


def test_sota_shaped_script_reproduces_the_package_run_byte_for_byte(tiny_dataset, tmp_path, monkeypatch):
    """sota-lqer (Hessians, LQER) + rans-ctx + ttt-phased at tiny sizes: the stripped, baked script written for the
    run's config, run with the package unreachable, gives the same artifact, score and run.json config/bytes."""
    import json
    import shlex

    from pgolf.cli import main
    from pgolf.config import config_from_dict
    from pgolf.experiments.bundle import counted_source, package_files
    from pgolf.experiments.submit import run_command

    from tests.experiments.test_bundle import run_bundle_hidden
    from tests.experiments.test_seeds_submit import TINY

    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    monkeypatch.chdir(a)
    args = ["--preset", "cpu-smoke", "--data.data_dir", str(tiny_dataset.data_dir), "--run.out_dir", "runs",
            "--run.name", "sota", "--quant.recipe", "sota-lqer", "--pack.codec", "rans-ctx", "--eval.mode",
            "ttt-phased", "--quant.calib_seqs", "2", "--train.seed", "7", *TINY]
    assert main(["run", *args]) == 0
    run_json = a / "runs" / "sota" / "run.json"
    run = json.loads(run_json.read_text())
    script = tmp_path / "train_gpt.py"
    script.write_bytes(counted_source(package_files(), config_from_dict(run["config"]), preset="cpu-smoke"))
    assert script.stat().st_size == run["bytes"]["code_bytes"]
    cmd = shlex.split(run_command({**run, "_path": str(run_json)}))
    rep = run_bundle_hidden(script, cmd[2:], b, b / "rep.json")
    assert rep["rc"] == 0 and rep["hidden"] and rep["pgolf_modules"] == []
    again = json.loads((b / "runs" / "sota" / "run.json").read_text())
    assert (b / "runs" / "sota" / "model.pgolf").read_bytes() == (a / "runs" / "sota" / "model.pgolf").read_bytes()
    for k in ("val_loss", "val_bpb"):
        assert again["roundtrip"][k] == run["roundtrip"][k], k
    assert again["config"] == run["config"]
    assert again["bytes"] == run["bytes"]


def test_dead_code_after_stripping_goes_with_the_calls_of_emptied_validators():
    from pgolf.experiments.closure import Plan, shake
    from pgolf.experiments.bundle import strip_script_checks

    files = {
        "pgolf/__init__.py": "",
        "pgolf/submission.py": "from pgolf.lib import run\n\ndef main(argv):\n    return run(len(argv))\n",
        "pgolf/lib.py": "RANGES = {'n': (0, 9)}\n\ndef check(n):\n    lo, hi = RANGES['n']\n    for x in (n,):\n"
                        "        if not lo <= x <= hi:\n            raise ValueError(f'{x} out of range')\n\n"
                        "def run(n):\n    from pgolf.helpers import unused\n    check(n)\n    log = []\n"
                        "    log.append(n)\n    return len(log) + n\n",
        "pgolf/helpers.py": "def unused():\n    return 0\n",
    }
    out = strip_script_checks(shake(files, Plan()), Plan())
    lib = out["pgolf/lib.py"]
    assert "RANGES" not in lib and "check" not in lib and "raise" not in lib  # the emptied validator and its table
    assert "pgolf/helpers.py" not in out  # an unused lazy import of a pgolf module goes
    assert "log.append(n)" in lib  # a statement with an effect stays
    ns: dict = {}
    exec(compile(lib, "<lib>", "exec"), ns)
    assert ns["run"](3) == 4 and ns["run"](99) == 100  # the package would refuse 99
    assert strip_script_checks(out, Plan()) == out


def test_a_script_without_resource_files_has_no_resource_reader():
    from pgolf.experiments.bundle import bootstrap_source, default_config, package_files, script_files, script_text

    chosen = script_files(package_files(), default_config())
    assert all(k.endswith(".py") for k in chosen)  # baked configuration: no presets
    text = script_text(chosen)
    assert "get_resource_reader" not in text and "class _Node" not in text
    assert "get_resource_reader" in bootstrap_source(True)
    compile(bootstrap_source(False), "<bootstrap>", "exec")


def test_constant_parameters_fold_only_in_a_closed_world():
    from pgolf.experiments.fold import fold_constant_parameters

    src = ("def run(x, *, resume=False, fast=True):\n    if resume:\n        x = load(x)\n"
           "    return x * 2 if fast else x\n\ndef load(x):\n    return -x\n\n"
           "def top(x):\n    return run(x) + run(x, resume=False)\n\n"
           "def aliased(x, flag=False):\n    return 1 if flag else 0\n\nALIAS = aliased\n\n"
           "def varied(x, flag=False):\n    return 1 if flag else 0\n\ndef both():\n    return varied(0) + varied(0, True)\n"
           "\ndef main(argv=None):\n    return 0 if argv is None else len(argv)\n")
    trees = {"m.py": ast.parse(src)}
    # run's resume and fast; aliased is a value, varied gets True, main is called from outside (an entry)
    assert fold_constant_parameters(trees, frozenset({"main"})) == 2
    out = ast.unparse(trees["m.py"])
    assert "x = load(x)" not in out and "x * 2" in out and "if fast" not in out
    ns: dict = {}
    exec(compile(out, "<folded>", "exec"), ns)
    assert ns["top"](3) == 12 and ns["ALIAS"](0, True) == 1 and ns["both"]() == 1 and ns["main"](["a"]) == 1
    assert fold_constant_parameters(trees, frozenset({"main"})) == 0 and ast.unparse(trees["m.py"]) == out


def test_a_parameter_every_call_passes_the_same_constant_folds_even_without_a_default():
    from pgolf.experiments.fold import fold_constant_parameters

    src = ("def enc(data, codec, level=3):\n    if codec == 'brotli':\n        return ('b', data, level)\n"
           "    return ('z', data, level)\n\n"
           "def a(x):\n    return enc(x, 'brotli') + enc(x, codec='brotli', level=3)\n\n"
           "def mixed(flag):\n    return 1 if flag else 0\n\n"
           "def b():\n    return mixed(1) + mixed(True)\n\n"
           "def var(n):\n    return n + 1\n\n"
           "def c(k):\n    return var(2) + var(k)\n")
    trees = {"m.py": ast.parse(src)}
    # enc's codec ('brotli' at both calls) and level (3 given, 3 by default); mixed gets 1 and True (two types),
    # var a constant and a name: neither folds
    assert fold_constant_parameters(trees) == 2
    out = ast.unparse(trees["m.py"])
    assert "codec ==" not in out and "('b', data, 3)" in out and "1 if flag" in out and "n + 1" in out
    ns: dict = {}
    exec(compile(out, "<folded>", "exec"), ns)
    assert ns["a"](7) == ("b", 7, 3, "b", 7, 3) and ns["b"]() == 2 and ns["c"](5) == 9


def test_a_local_of_the_same_name_does_not_block_folding_but_an_imported_call_counts():
    from pgolf.experiments.fold import fold_constant_parameters

    base = ("def run(x, resume=False):\n    return 1 if resume else 0\n\n"
            "def user(xs):\n    run = [x for x in xs]\n    return [r for r in zip(run, run.copy())]\n\n"
            "def caller():\n    return run(0)\n")
    trees = {"m.py": ast.parse(base)}
    assert fold_constant_parameters(trees) == 1  # user's `run` is its own local
    trees = {"m.py": ast.parse(base), "n.py": ast.parse("def other():\n    from m import run\n    return run(0, True)\n")}
    assert fold_constant_parameters(trees) == 0  # a call through a function-level import is a call site


def test_statements_after_a_return_raise_continue_or_break_go_and_nothing_that_runs_does():
    from pgolf.experiments.strip import drop_unreachable

    src = ("def f(h=None):\n    if h is None:\n        return 1\n    return helper(h)\n\n"
           "def g(xs):\n    out = []\n    for x in xs:\n        if x < 0:\n            continue\n            out.append(-x)\n"
           "        if x > 9:\n            break\n            out.append(9)\n        out.append(x)\n"
           "    else:\n        out.append('done')\n    try:\n        return out\n        out.append('never')\n"
           "    finally:\n        out.append('fin')\n\n"
           "def cut():\n    raise ImportError('pgolf.quant.calibration')\n    return helper(0)\n")
    tree = ast.parse(src)
    # f as folding leaves it with h constant None: `return 1` then the Hessian path
    tree.body[0].body = [ast.Return(ast.Constant(1)), *tree.body[0].body[1:]]
    assert drop_unreachable(tree) == 5
    out = ast.unparse(tree)
    assert "helper" not in out and "never" not in out and "out.append(9)" not in out and "out.append(-x)" not in out
    assert drop_unreachable(tree) == 0  # idempotent
    ns: dict = {}
    exec(compile(out, "<dropped>", "exec"), ns)
    assert ns["f"]() == 1 and ns["g"]([1, -2, 3]) == [1, 3, "done", "fin"] and ns["g"]([1, 10, 2]) == [1, "fin"]
    with pytest.raises(ImportError):
        ns["cut"]()



def test_a_call_through_another_package_protects_no_pgolf_function_of_that_name():
    src = ("import torch\nimport numpy as np\n\ndef load(p):\n    if p < 0:\n        raise ValueError('neg')\n    return p\n\n"
           "def read_ckpt(p):\n    try:\n        return torch.load(p), np.linalg.norm(p)\n    except (OSError, RuntimeError):\n"
           "        return None\n\ndef norm(v):\n    if v < 0:\n        raise ValueError\n    return v\n")
    tree = ast.parse(src)
    assert not {"load", "norm"} & protected_functions({"m.py": tree})
    via_object = ast.parse(src.replace("torch.load(p)", "obj.load(p)"))
    assert "load" in protected_functions({"m.py": via_object})  # obj may be a pgolf object: protected


def test_a_list_only_collected_for_a_stripped_message_goes_and_one_that_is_read_stays():
    from pgolf.experiments.strip import strip_checks, strip_messages

    src = ("def find(paths):\n    looked = []\n    for p in paths:\n        if p.endswith('.model'):\n"
           "            return p\n        looked.append(f'{p}: not a model')\n"
           "    raise FileNotFoundError(f'none of {looked}')\n\n"
           "def kept(paths, out):\n    seen = []\n    alias = out\n    for p in paths:\n        seen.append(p)\n"
           "        alias.append(p)\n    return len(seen)\n")
    tree = ast.parse(src)
    strip_messages(tree)
    out = ast.unparse(strip_checks(tree))
    assert "looked" not in out  # bound to a fresh list, only appended to once the message is gone
    assert "seen.append(p)" in out and "alias.append(p)" in out  # read by the return / another object's list
    ns: dict = {}
    exec(compile(out, "<stripped>", "exec"), ns)
    assert ns["find"](["a", "b.model"]) == "b.model"
    with pytest.raises(FileNotFoundError):
        ns["find"](["a"])
    target: list = []
    assert ns["kept"](["x", "y"], target) == 2 and target == ["x", "y"]


def test_an_emptied_post_init_goes_only_from_a_class_without_bases():
    from pgolf.experiments.strip import drop_empty_hooks

    src = ("from dataclasses import dataclass\n\n@dataclass\nclass A:\n    x: int = 1\n\n    def __post_init__(self):\n"
           "        pass\n\n@dataclass\nclass B(A):\n    def __post_init__(self):\n        pass\n\n"
           "@dataclass\nclass C:\n    y: int = 2\n\n    def __post_init__(self):\n        self.y += 1\n")
    tree = ast.parse(src)
    assert drop_empty_hooks(tree.body) == 1
    out = ast.unparse(tree)
    assert out.count("__post_init__") == 2  # B's empty override (it hides A's) and C's real one stay
    ns: dict = {}
    exec(compile(out, "<hooks>", "exec"), ns)
    assert ns["A"]().x == 1 and ns["C"]().y == 3
