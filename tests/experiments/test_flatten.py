"""The counted script as one module namespace (pgolf.experiments.flatten): imports between modules become direct
references, colliding names get unique ones, and what one namespace cannot keep is refused with file:line.

    python -m pytest tests/experiments/test_flatten.py -q
"""

from __future__ import annotations

import ast

import pytest

from pgolf.experiments.flatten import FlattenError, flatten, shake_flat
from pgolf.experiments.minify import compact_python

TOY = {
    "pgolf/__init__.py": "__version__ = '9'\n",
    "pgolf/sub/__init__.py": "",
    "pgolf/a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pgolf.nowhere import T\n"
                  "X = 1\nWHO = __name__\n\ndef f():\n    return X\n\ndef min(*v):\n    return -1\n\n"
                  "if __name__ == '__main__':\n    X = 99\n",
    "pgolf/sub/b.py": "import math\nfrom .. import a\nX = 2\nREG = {'f': 'pgolf.a:f'}\n\ndef g():\n    return X\n\n"
                      "def h():\n    X = 5\n    return X + min(3, 4)\n\nclass K:\n    X = 7\n    def m(self):\n"
                      "        return X + self.X + a.X\n",
    "pgolf/submission.py": "import math\nimport pgolf\nimport pgolf.sub.b as bm\nfrom pgolf.a import f, WHO\n"
                           "from pgolf.sub.b import g as gg, K\n\ndef lazy():\n    from pgolf.a import X as Y\n"
                           "    return Y\n\ndef shadow():\n    g = 100\n    return g + gg()\n\n"
                           "def main(argv=None):\n    return (f(), gg(), bm.X, pgolf.sub.b.X, lazy(), shadow(), K().m(), "
                           "bm.h(), bm.REG['f'](), WHO, pgolf.__version__, math.floor(2.5))\n",
}
EXPECTED = (1, 2, 2, 2, 1, 102, 10, 8, 1, "pgolf.a", "9", 2)


def _run(source: str) -> tuple:
    ns: dict = {"__name__": "not_main"}
    exec(compile(source, "<flat>", "exec"), ns)
    main = ns["main"]
    return main()


def test_a_toy_package_flattens_to_one_namespace_with_the_package_semantics():
    flat = flatten(TOY)
    src = ast.unparse(flat.module())
    assert "import pgolf" not in src and "from pgolf" not in src and "from ." not in src
    assert "TYPE_CHECKING:" not in src
    assert flat.order == ["pgolf/__init__.py", "pgolf/sub/__init__.py", "pgolf/a.py", "pgolf/sub/b.py",
                          "pgolf/submission.py"]  # as Python runs them: parent packages first, then what b imports
    assert src.count("import math") == 1  # one binding for the same stdlib import
    # X is bound by a and b: the first keeps it, b's becomes X_b; b's class attribute and h's local stay X;
    # a's `min` would capture b's builtin min(3, 4): it is renamed, not the builtin
    assert flat.names[("pgolf.a", "X")] == "X" and flat.names[("pgolf.sub.b", "X")] == "X_b"
    assert flat.names[("pgolf.a", "min")] != "min"
    assert _run(src) == EXPECTED
    # `g = 100` in shadow() would capture b's g (imported as gg): b's g is renamed
    assert flat.names[("pgolf.sub.b", "g")] != "g"
    # python-minifier may then rename every module-level name but main
    small = compact_python(src, rename_globals=True, preserve_globals=("main",))
    assert len(small) < len(src) and _run(small) == EXPECTED


def test_the_flat_module_runs_its_main_only_as_main():
    src = ast.unparse(flatten(TOY).module())
    ns: dict = {"__name__": "__main__"}
    with pytest.raises(SystemExit) as e:
        exec(compile(src, "<flat>", "exec"), ns)
    assert e.value.code == EXPECTED


@pytest.mark.parametrize("code, message", [
    ("import pgolf.a as m\n\ndef main():\n    return getattr(m, 'X')\n",
     r"pgolf/submission.py:4: uses the module pgolf.a as a value"),
    ("import pgolf.a as m\n\ndef main():\n    m.X = 3\n", r"pgolf/submission.py:4: assigns 'X' of a module"),
    ("from pgolf.a import X\nX = 2\n\ndef main():\n    return X\n", r"rebinds the imported name 'X'"),
    ("from pgolf.a import *\n\ndef main():\n    return 0\n", r"import \*"),
    ("from pgolf.nowhere import x\n\ndef main():\n    return x\n", r"pgolf/submission.py:1: .*pgolf.nowhere"),
    ("from pgolf.a import NOPE\n\ndef main():\n    return NOPE\n", r"no module-level name 'NOPE'"),
])
def test_what_one_namespace_cannot_keep_is_refused_with_file_and_line(code, message):
    with pytest.raises(FlattenError, match=message):
        flatten({**TOY, "pgolf/submission.py": code})


def test_a_module_level_import_cycle_is_refused_a_lazy_one_is_not():
    cyc = {"pgolf/__init__.py": "", "pgolf/a.py": "from pgolf.b import B\nA = 1\n",
           "pgolf/b.py": "from pgolf.a import A\nB = A\n",
           "pgolf/submission.py": "from pgolf.a import A\n\ndef main():\n    return A\n"}
    with pytest.raises(FlattenError, match=r"pgolf/b.py:1: import cycle"):
        flatten(cyc)
    lazy = {**cyc, "pgolf/b.py": "def B():\n    from pgolf.a import A\n    return A\n"}
    assert _run(ast.unparse(flatten(lazy).module())) == 1
    # an import of a module the script leaves out becomes the ImportError the import hook raised
    gone = {**lazy, "pgolf/submission.py": "def main():\n    try:\n        from pgolf.gone import x\n"
                                           "    except ImportError as e:\n        return str(e)\n"}
    assert _run(ast.unparse(flatten(gone).module())) == "pgolf.gone"


def test_the_counted_script_is_one_namespace_without_an_import_hook():
    from pgolf.experiments.bundle import counted_source, flat_source, package_files, unwrap_counted

    files = package_files()
    src = unwrap_counted(counted_source(files)).decode()
    assert src == flat_source(files)
    tree = ast.parse(src)
    for n in ast.walk(tree):
        if isinstance(n, ast.Import):
            assert not any(a.name.split(".")[0] == "pgolf" for a in n.names), ast.unparse(n)
        elif isinstance(n, ast.ImportFrom):
            assert not n.level and (n.module or "").split(".")[0] != "pgolf", ast.unparse(n)
    assert "meta_path" not in src and "PGOLF_FILES" not in src and "importlib.machinery" not in src
    assert isinstance(tree.body[-1], ast.If) and "main()" in ast.unparse(tree.body[-1])  # runs main as __main__
    assert len(src) < len(flat_source(files, rename_globals=False))


def test_one_namespace_shaking_drops_what_only_an_attribute_of_its_name_kept():
    toy = {"pgolf/__init__.py": "", "pgolf/a.py": "import json\nimport torch\n\ndef step():\n    return 1\n\ndef named():\n    return 2\n\n"
                                                  "def used():\n    return 3\n\nSIDE = []\nSIDE.append(1)\n",
           "pgolf/submission.py": "from pgolf.a import used\nimport pgolf.a as m\n\nclass O:\n    def step(self):\n"
                                  "        return 0\n\ndef main():\n    return (O().step(), used(), m.SIDE, 'named')\n"}
    flat = shake_flat(flatten(toy))
    src = ast.unparse(flat.module())
    assert "def step():" not in src and "def named" in src and "def used" in src  # `.step` is O's method
    assert _run(src) == (0, 3, [1], "named")
    assert "import json" not in src and "import torch" in src  # an unused stdlib import goes, a package's stays


def test_a_version_choice_between_imports_goes_when_nothing_uses_its_name():
    choice = ("import sys\nif sys.version_info >= (3, 11):\n    import tomllib\nelse:\n    import tomli as tomllib\n"
              "try:\n    import zoneinfo as Z\nexcept ImportError:\n    Z = None\n")
    toy = {"pgolf/__init__.py": "",
           "pgolf/a.py": choice + "if sys.version_info >= (3, 8):\n    import json\nelse:\n    import simplejson as json\n"
                         "\ndef dumps(x):\n    return json.dumps(x)\n",
           "pgolf/submission.py": "from pgolf.a import Z, dumps\n\ndef main():\n    return dumps([Z is None])\n"}
    src = ast.unparse(shake_flat(flatten(toy)).module())
    assert "tomllib" not in src and "tomli" not in src  # unused: the choice goes
    assert "import json" in src and "zoneinfo" in src  # used; a try whose handler assigns is not an import choice
    assert _run(src) == "[false]"
