"""The single-file script's bootstrap: an import hook that serves the embedded files (`PGOLF_FILES`) as the
`pgolf` package, with an `importlib.resources` reader for non-.py files, and runs `pgolf.submission.main`.

    source = table + bootstrap_source(resources=False)    # pgolf.experiments.bundle.script_text
"""

from __future__ import annotations

import ast

BOOTSTRAP = r'''
import importlib.abc as _abc, importlib.machinery as _mach, io as _io, os as _os, sys as _sys


class _Node:
    """importlib.resources Traversable over the embedded files (a file or a folder prefix)."""

    def __init__(self, files, path):
        self._files, self._path = files, path

    @property
    def name(self):
        return self._path.rsplit("/", 1)[-1]

    def is_file(self):
        return self._path in self._files

    def is_dir(self):
        return any(k.startswith(self._path + "/") for k in self._files)

    def iterdir(self):
        n = len(self._path) + 1
        kids = sorted({k[n:].split("/", 1)[0] for k in self._files if k.startswith(self._path + "/")})
        return iter([_Node(self._files, self._path + "/" + c) for c in kids])

    def joinpath(self, *parts):
        path = "/".join([self._path, *(s for p in parts for s in str(p).split("/") if s)])
        return _Node(self._files, path)

    __truediv__ = joinpath

    def read_bytes(self):
        if not self.is_file():
            raise FileNotFoundError(f"{self._path}: not in the bundle")
        return self._files[self._path].encode("utf-8")

    def read_text(self, encoding=None, errors=None):
        return self.read_bytes().decode(encoding or "utf-8", errors or "strict")

    def open(self, mode="r", *args, **kwargs):
        data = self.read_bytes()
        return _io.BytesIO(data) if "b" in mode else _io.StringIO(data.decode("utf-8"))

    def __repr__(self):
        return f"<bundled {self._path}>"


class _Reader:
    def __init__(self, files, path):
        self._root = _Node(files, path)

    def files(self):
        return self._root


class _BundleImporter(_abc.MetaPathFinder, _abc.InspectLoader):
    """Serves pgolf.* from the embedded sources; first on sys.meta_path, so an installed pgolf is never used."""

    def __init__(self, files, origin):
        self.bundle_files, self.origin = files, origin

    def _rel(self, fullname):
        base = fullname.replace(".", "/")
        for rel in (base + "/__init__.py", base + ".py"):
            if rel in self.bundle_files:
                return rel
        return None

    def find_spec(self, fullname, path=None, target=None):
        rel = self._rel(fullname) if fullname.split(".")[0] == "pgolf" else None
        if rel is None:
            return None
        is_pkg = rel.endswith("/__init__.py")
        spec = _mach.ModuleSpec(fullname, self, origin=_os.path.join(self.origin, rel), is_package=is_pkg)
        spec.has_location = True
        if is_pkg:
            spec.submodule_search_locations = [_os.path.join(self.origin, rel.rsplit("/", 1)[0])]
        return spec

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        exec(self.get_code(module.__name__), module.__dict__)

    def get_filename(self, fullname):
        return _os.path.join(self.origin, self._rel(fullname))

    def is_package(self, fullname):
        return self._rel(fullname).endswith("/__init__.py")

    def get_source(self, fullname):
        rel = self._rel(fullname)
        if rel is None:
            raise ImportError(f"{fullname} is not in the bundle", name=fullname)
        return self.bundle_files[rel]

    def get_code(self, fullname):
        return compile(self.get_source(fullname), self.get_filename(fullname), "exec", dont_inherit=True)

    def get_resource_reader(self, fullname):
        rel = self._rel(fullname)
        return _Reader(self.bundle_files, rel.rsplit("/", 1)[0]) if rel and rel.endswith("/__init__.py") else None


_file = _os.path.abspath(globals().get("__file__", "train_gpt.py"))
_sys.meta_path.insert(0, _BundleImporter(PGOLF_FILES, _file))
_sys.meta_path[0].code_bytes = globals().get("PGOLF_COUNTED_BYTES") or _os.path.getsize(_file)
if __name__ == "__main__":
    from pgolf.submission import main

    _sys.exit(main())
'''


def bootstrap_source(resources: bool = True) -> str:
    """BOOTSTRAP; without `resources` (a script embedding only .py files: its configuration is baked, it reads no
    preset) the `importlib.resources` reader (`_Node`, `_Reader`, `get_resource_reader`) left out."""
    if resources:
        return BOOTSTRAP
    tree = ast.parse(BOOTSTRAP)
    tree.body = [n for n in tree.body if not (isinstance(n, ast.ClassDef) and n.name in ("_Node", "_Reader"))]
    for n in tree.body:
        if isinstance(n, ast.ClassDef):
            n.body = [m for m in n.body if getattr(m, "name", None) != "get_resource_reader"]
    return ast.unparse(tree) + "\n"
