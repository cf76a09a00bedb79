"""What the single-file script of one configuration contains: the modules and definitions that run executes.

    plan = closure_plan(cfg)                    # entry pgolf.submission, the config's cut points and excluded modules
    kept = shake(minified_files, plan)          # {"pgolf/run.py": "<only what is reachable>", ...}

The counted code of a submission is what its configured run executes (issue 14: training, the model switches, the
chosen recipe's quantizers, the codec's encoder and decoder, the chosen eval mode); reports, statistics, submission
tooling, data preparation and the CLI verbs stay out. Two rules pick it:

- **Cut points** (`CUTS`): functions whose body the script replaces by a `raise` (saying `CUT_MESSAGES`) because the
  configured run never takes them, each with its condition on the config, e.g. the default corpus preparation (the
  script reads a prepared dataset). A cut function's imports go with its body, and so do the modules only it imports.
- **Registry tables** (`registry_keeps`): the configured recipe, its methods' `MethodSpec(...)` registrations and
  the artifact codec's coder and compressors stay, so the other quantizers' and codecs' code is shaken out.
- **Tree shaking** (`shake`): from the entry, a fixpoint over names. A module is in when a kept statement imports
  it; a module-level function, class or simple assignment is kept when its name occurs anywhere in kept code (as a
  name, an attribute, an imported name or an identifier-like string constant); every other module-level statement
  is kept. Unused names leave `from ... import` lists. The rule is conservative by construction (a name shared by
  two definitions keeps both), so the only way to lose code that runs is a name built at run time
  (`getattr(m, "f" + x)`), which pgolf does not do; the standalone-run test (tests/experiments/test_seeds_submit.py)
  checks the script reproduces a package run's artifact and score byte for byte.

Shaking is idempotent: shaking shaken sources keeps everything, so the script, run standalone, counts the same
bytes as the package. Two more transforms shape what the shaking keeps (pgolf.experiments.bundle.script_files):

- **The baked configuration** (`cfgfold.baked_submission`): pgolf/submission.py carries the run's RunConfig as a
  literal (`BAKED`: the fields that differ from the dataclass defaults; train.seed and run.name at their defaults,
  the commands pass them) and its `main` is `baked_main`, which applies `--section.field VALUE` by the field's
  annotation (bool/int/float/str/tuple) with no ranges, choices or did-you-mean. So presets, TOML, override
  parsing and `validate` are unreferenced and leave the script, with the preset .toml files.
- **Check stripping** (`strip.strip_checks`, then shaken again): the script does not check what the package
  checks, as `python -O` drops asserts. Asserts and `if <pure condition>: raise ...` go, every raise loses its
  message (`strip.strip_messages`), and the dead code and empty validators that leaves go with their calls. Kept:
  raises of `strip.KEPT_RAISES` (iteration, signals, the eval time limit, divergence, a non-finite checkpoint, a
  full disk, cut functions), raises in try bodies and handlers, protocol dunders, and the functions a non-re-raising
  handler's try body reaches (`strip.protected_functions`). A valid configuration runs identically (the standalone
  tests check artifact and score byte for byte); an invalid one runs on or fails later, with a bare exception.
- **Configuration fields** (`cfgfold`, first): the command line changes only `cfgfold.LIVE_FIELDS`, so another
  field's reads are its baked value and fold; then what follows a `return`/`raise` goes (`strip.drop_unreachable`).
- **Constant parameters** (`fold.fold_constant_parameters`, before the stripping): a parameter every call of its
  function leaves at its constant default (the function only ever called directly, by a name no other def, alias,
  value or string uses; a function's own local of that name does not count) becomes that constant and the branches
  it decides fold, e.g. `resume` and `train_only`, which the script's entry never passes: checkpoint resumption
  leaves the script. Exact for every input, not only valid ones.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from pgolf.experiments.modnames import module_name

ENTRY = "pgolf.submission"

CUTS: tuple[tuple[str, str, Callable[[Any], bool]], ...] = (
    # data preparation: the script reads a prepared dataset (the records' train_gpt.py reads downloaded shards)
    ("pgolf.data.dataset", "prepare_default_dataset", lambda c: True),
    ("pgolf.data.tokenizer", "train_tokenizer", lambda c: True),
    ("pgolf.run", "calibration_stage", lambda c: not _recipe(c).needs_hessians),  # Hessian recipes call it
)
"""(module, module-level function, condition on the RunConfig under which the script replaces its body by a raise)."""
CUT_MESSAGES = {"pgolf.data.dataset.prepare_default_dataset": (  # what a cut's raise says where a user may reach it
    "the default BBC News dataset is not prepared, and this single-file script only reads prepared data: make it "
    "once with `pgolf run` (it lands in $PGOLF_CACHE) or `pgolf data prepare --out DIR` and --data.data_dir DIR")}


def registry_keeps(cfg: Any) -> tuple[tuple[str, str, frozenset[str]], ...]:
    """Registry tables the script cuts to the configuration's entries: (module, table, kept keys). `RECIPES` keeps
    the recipe, the `MethodSpec(...)` registrations its methods (a .toml recipe keeps every entry), the codec tables
    the artifact codec (`pgolf.pack.container.codec_tables`), MODES its eval mode and "standard" (pre-quant)."""
    from pgolf.pack.container import codec_tables
    from pgolf.quant.recipes import PASSTHROUGH, RECIPES, recipe_for

    codecs = codec_tables(cfg.pack.codec) + (("pgolf.eval.modes", "MODES", frozenset({cfg.eval.mode, "standard"})),)
    if cfg.quant.recipe not in RECIPES:
        return codecs
    recipe = recipe_for(cfg.quant)
    methods = {r.method for r in recipe.rules} - {PASSTHROUGH}
    if recipe.gate_pattern:
        from pgolf.quant.plan import GATE_METHOD

        methods.add(GATE_METHOD)
    return (("pgolf.quant.recipes", "RECIPES", frozenset({cfg.quant.recipe})),
            ("pgolf.quant.methods", "MethodSpec", frozenset(methods))) + codecs


def excluded_modules(cfg: Any) -> tuple[str, ...]:
    """Library modules the configured run never imports (their imports sit in branches the config does not take)."""
    recipe = _recipe(cfg)
    qat = cfg.train.qat_threshold > 0
    out = ["pgolf.eval.legal", "pgolf.eval.recorder"]  # the causality checker (pgolf check-legal), its recorder
    if not cfg.pack.budget:
        out += ["pgolf.pack.fit", "pgolf.quant.fit"]
    if not qat:
        out.append("pgolf.quant.qat")
    out += cfg.quant.modules_not_run(qat)  # the recipe's optional steps it lacks (LQER, cross-tensor σ, amends)
    out += cfg.train.modules_not_run()  # the Muon distribution it never builds
    if not (recipe.needs_hessians or qat):
        out += ["pgolf.quant.calibration", "pgolf.quant.hessian"]
    if not (recipe.needs_hessians and cfg.quant.calibration_for(recipe, cfg.train.train_seq_len).source == "selfgen"):
        out.append("pgolf.model.generate")  # selfgen calibration's sampler (QAT's batches are training data)
    codec = cfg.pack.codec
    if codec not in ("rans", "rans-ctx"):  # the script decodes only the artifact it wrote, in the configured codec
        out += ["pgolf.pack.entropy", "pgolf.pack.entropy_modes", "pgolf.pack.adaptive", "pgolf.pack.rans_core",
                "pgolf.pack.order0", "pgolf.pack.context"]
    if codec != "lrzip-groups":
        out += ["pgolf.pack.lrzip_artifact", "pgolf.pack.lrzip"]
    mode = cfg.eval.mode
    if not mode.startswith("ttt"):
        out.append("pgolf.eval.ttt")
    if not (lora := mode in ("ttt-lora", "ttt-phased")):
        out.append("pgolf.eval.lora")
    return tuple(out) + cfg.model.modules_not_run(lora or "pgolf.model.generate" not in out)  # flash, documents


EXCLUDED_PREFIXES = ("pgolf.experiments", "pgolf.cli", "pgolf.data.cli", "pgolf.data.fineweb")
"""Tooling that no run executes: imports of these inside kept functions stay, but the modules never enter."""

FRAMEWORK_HOOKS = frozenset({
    # torch.nn.Module / torch.optim.Optimizer / torch.autograd.Function methods the framework calls by name on a
    # subclass (tests/experiments/test_bundle.py checks every pgolf override of a non-pgolf base is listed here)
    "forward", "backward", "setup_context", "jvp", "vjp", "vmap", "extra_repr", "reset_parameters", "train", "eval",
    "state_dict", "load_state_dict", "_load_from_state_dict", "_save_to_state_dict", "get_extra_state",
    "set_extra_state", "_apply", "step", "zero_grad", "add_param_group",
})
"""Method names a class keeps whatever the script references: called by a base class or the framework."""

_SAFE_DECORATORS = {"dataclass", "property", "staticmethod", "classmethod", "no_grad", "inference_mode",
                    "lru_cache", "cache", "cached_property", "wraps", "contextmanager", "compile"}


def _recipe(cfg: Any) -> Any:
    from pgolf.quant.recipes import recipe_for

    return recipe_for(cfg.quant)  # with the --quant.ROLE.KNOB overrides


@dataclass
class Plan:
    entries: tuple[str, ...] = (ENTRY,)
    cuts: frozenset[tuple[str, str]] = field(default_factory=frozenset)
    excluded: tuple[str, ...] = EXCLUDED_PREFIXES
    extra: tuple[str, ...] = ()
    """Modules the configuration needs that no static import reaches (none today)."""
    keep: tuple[tuple[str, str, frozenset[str]], ...] = ()
    """Registry tables cut to these keys (`registry_keeps`)."""

    def key(self) -> str:
        return repr((self.entries, sorted(self.cuts), self.excluded, self.extra,
                     [(m, t, sorted(k)) for m, t, k in self.keep]))


def closure_plan(cfg: Any) -> Plan:
    """The entry, cut points and exclusions for one RunConfig (see the module docstring)."""
    cuts = {(m, f) for m, f, cond in CUTS if cond(cfg)}
    return Plan(cuts=frozenset(cuts), excluded=EXCLUDED_PREFIXES + excluded_modules(cfg), keep=registry_keeps(cfg))


# ------------------------------------------------------------------------------------------------ shaking

def _defined_name(stmt: ast.stmt) -> str | None:
    """The name a prunable module-level statement defines (None: always kept)."""
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        for d in stmt.decorator_list:
            base = d.func if isinstance(d, ast.Call) else d
            name = base.attr if isinstance(base, ast.Attribute) else getattr(base, "id", None)
            if name not in _SAFE_DECORATORS:
                return None  # e.g. a registering decorator: its side effect must run
        return stmt.name
    if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
        name = stmt.targets[0].id
    elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
        name = stmt.target.id
    else:
        return None
    return None if name.startswith("__") else name


def _resolve_from(node: ast.ImportFrom, current: str, is_pkg: bool) -> str:
    if not node.level:
        return node.module or ""
    base = current.split(".") if is_pkg else current.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


_REF = re.compile(r"^(pgolf(?:\.\w+)+):(\w+)$")
"""A registry's lazy reference, "pgolf.eval.lora:run_ttt_phased" (eval/modes.py MODES): module + name."""


def _names_used(node: ast.AST, out: set[str], refs: list[tuple[str, list[str]]]) -> None:
    """Identifiers `node` may reference (into `out`), import statements excepted (their bound names keep nothing);
    "module:name" string references into `refs`."""
    for n in ast.walk(node):
        if isinstance(n, ast.Name):
            out.add(n.id)
        elif isinstance(n, ast.Attribute):
            out.add(n.attr)
        elif isinstance(n, ast.Constant) and isinstance(n.value, str):
            if n.value.isidentifier():
                out.add(n.value)
            elif m := _REF.match(n.value):
                out.add(m.group(2))
                refs.append((m.group(1), [m.group(2)]))
        elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and n is not node:
            out.add(n.name)


def _imports_in(node: ast.AST, current: str, is_pkg: bool) -> list[tuple[str, list[str]]]:
    """(module, imported names) of every import statement under `node`."""
    out: list[tuple[str, list[str]]] = []
    for n in ast.walk(node):
        if isinstance(n, ast.Import):
            out += [(a.name, []) for a in n.names]
        elif isinstance(n, ast.ImportFrom):
            out.append((_resolve_from(n, current, is_pkg), [a.name for a in n.names]))
    return out


@dataclass
class _Method:
    name: str
    node: ast.stmt
    uses: set[str]
    imports: list[tuple[str, list[str]]]


@dataclass
class _Stmt:
    node: ast.stmt
    name: str | None          # the prunable definition's name, None = always kept
    uses: set[str]            # names it references (empty for import statements), prunable methods excepted
    imports: list[tuple[str, list[str]]]
    methods: list[_Method] = field(default_factory=list)
    """A class's prunable methods: each kept only when its name is referenced by kept code (`_method_name`)."""


def _method_name(node: ast.stmt) -> str | None:
    """The name under which a method in a class body may be dropped (None: always kept): a plain, property,
    static/class or otherwise safely decorated method that is neither a dunder nor a framework hook; a property's
    setter/deleter goes with its property."""
    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return None
    name = node.name
    if (name.startswith("__") and name.endswith("__")) or name in FRAMEWORK_HOOKS:
        return None
    for d in node.decorator_list:
        base = d.func if isinstance(d, ast.Call) else d
        if isinstance(base, ast.Attribute) and base.attr in ("setter", "getter", "deleter"):
            if not (isinstance(base.value, ast.Name) and base.value.id == name):
                return None
            continue
        dname = base.attr if isinstance(base, ast.Attribute) else getattr(base, "id", None)
        if dname not in _SAFE_DECORATORS:
            return None
    return name


def _prune_registries(mod: str, tree: ast.Module, keep: tuple[tuple[str, str, frozenset[str]], ...]) -> None:
    """Drop the entries of `mod`'s registry tables whose key is not kept: a dict literal assigned to the table's
    name (string keys), or a tuple/list of `TABLE("key", ...)` calls iterated by a module-level `for`."""
    for m, table, keys in keep:
        if m != mod:
            continue
        for stmt in tree.body:
            target = (stmt.targets[0] if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
                      else getattr(stmt, "target", None) if isinstance(stmt, ast.AnnAssign) else None)
            if isinstance(target, ast.Name) and target.id == table and isinstance(stmt.value, ast.Dict):
                pairs = [(k, v) for k, v in zip(stmt.value.keys, stmt.value.values)
                         if not (isinstance(k, ast.Constant) and isinstance(k.value, str)) or k.value in keys]
                stmt.value.keys, stmt.value.values = [k for k, _ in pairs], [v for _, v in pairs]
            elif isinstance(stmt, ast.For) and isinstance(stmt.iter, (ast.Tuple, ast.List)):
                def kept(e: ast.expr) -> bool:
                    if not (isinstance(e, ast.Call) and getattr(e.func, "id", None) == table and e.args):
                        return True
                    first = e.args[0]
                    return not (isinstance(first, ast.Constant) and isinstance(first.value, str)) or first.value in keys
                stmt.iter.elts = [e for e in stmt.iter.elts if kept(e)]


def _cut_body(fn: ast.FunctionDef | ast.AsyncFunctionDef, qualname: str) -> None:
    msg = CUT_MESSAGES.get(qualname, f"{qualname} is not in this single-file script (built for another configuration)")
    fn.body = [ast.Raise(exc=ast.Call(func=ast.Name("NotImplementedError", ast.Load()), args=[ast.Constant(msg)],
                                      keywords=[]), cause=None)]


def shake(files: Mapping[str, str], plan: Plan,
          prepare: Callable[[ast.Module], ast.Module] | None = None) -> dict[str, str]:
    """The .py files of `files` reduced to what `plan`'s entries reach (each parsed module passed through `prepare`
    first, e.g. the minifier); resource files are returned unchanged."""
    rel_of = {module_name(k): k for k in files if k.endswith(".py")}
    for m in (*plan.entries, *plan.extra):
        if m not in rel_of:
            raise ValueError(f"module {m!r} is not in the package sources")
    parsed: dict[str, tuple[ast.Module, list[_Stmt]]] = {}

    def info(mod: str) -> list[_Stmt]:
        if mod not in parsed:
            rel = rel_of[mod]
            t = ast.parse(files[rel], filename=rel)
            if prepare is not None:
                t = prepare(t)
            _prune_registries(mod, t, plan.keep)
            stmts = []
            for node in t.body:
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and (mod, node.name) in plan.cuts:
                    _cut_body(node, f"{mod}.{node.name}")
                uses: set[str] = set()
                refs: list[tuple[str, list[str]]] = []
                is_pkg = rel.endswith("/__init__.py")
                methods: list[_Method] = []
                if isinstance(node, ast.ClassDef):
                    rest = []
                    for item in node.body:
                        mname = _method_name(item)
                        if mname is None:
                            rest.append(item)
                            continue
                        muses: set[str] = set()
                        mrefs: list[tuple[str, list[str]]] = []
                        _names_used(item, muses, mrefs)
                        muses.discard(mname)  # a recursive or self-referencing method keeps nothing by itself
                        methods.append(_Method(mname, item, muses, _imports_in(item, mod, is_pkg) + mrefs))
                    shell = ast.ClassDef(name=node.name, bases=node.bases, keywords=node.keywords, body=rest,
                                         decorator_list=node.decorator_list)
                    _names_used(shell, uses, refs)
                    imports = _imports_in(shell, mod, is_pkg) + refs
                else:
                    if not isinstance(node, (ast.Import, ast.ImportFrom)):
                        _names_used(node, uses, refs)
                    imports = _imports_in(node, mod, is_pkg) + refs
                stmts.append(_Stmt(node, _defined_name(node), uses, imports, methods))
            parsed[mod] = (t, stmts)
        return parsed[mod][1]

    def wanted(name: str) -> bool:
        return name in rel_of and not any(name == p or name.startswith(p + ".") for p in plan.excluded)

    kept: set[tuple[str, str]] = {(m, st.name) for m in plan.entries for st in info(m) if st.name}  # entries whole
    kept_methods: set[tuple[str, int, str]] = set()  # (module, id of the class node, method name)
    while True:
        modules: set[str] = set()
        stack = [*plan.entries, *plan.extra]
        used: set[str] = set()
        while stack:  # the module set from the kept statements' imports
            m = stack.pop()
            if m in modules or not wanted(m):
                continue
            modules.add(m)
            parts = m.split(".")
            stack += [".".join(parts[:i]) for i in range(1, len(parts))]
            for st in info(m):
                if isinstance(st.node, (ast.Import, ast.ImportFrom)):
                    bad = [mod for mod, _ in st.imports if mod in rel_of and not wanted(mod)]
                    if bad:
                        raise ValueError(f"{rel_of[m]}: imports {bad[0]} at module level, which this configuration "
                                         "leaves out of the script (move the import into the function using it)")
                if st.name is None or (m, st.name) in kept:
                    used |= st.uses
                    for mod, names in st.imports:
                        stack += [mod] + [f"{mod}.{n}" for n in names]
                    for meth in st.methods:
                        if (m, id(st.node), meth.name) in kept_methods:
                            used |= meth.uses
                            for mod, names in meth.imports:
                                stack += [mod] + [f"{mod}.{n}" for n in names]
        new = {(m, st.name) for m in modules for st in info(m) if st.name is not None and st.name in used} - kept
        new_methods = {(m, id(st.node), meth.name) for m in modules for st in info(m)
                       if st.name is None or (m, st.name) in kept for meth in st.methods
                       if meth.name in used} - kept_methods
        if not new and not new_methods:
            break
        kept |= new
        kept_methods |= new_methods
    out: dict[str, str] = {}
    for m in sorted(modules):
        tree, stmts = parsed[m]
        body: list[ast.stmt] = []
        for st in stmts:
            if st.name is not None and (m, st.name) not in kept:
                continue
            node = st.node
            if st.methods:
                dropped = {id(meth.node) for meth in st.methods if (m, id(node), meth.name) not in kept_methods}
                node = ast.ClassDef(name=node.name, bases=node.bases, keywords=node.keywords,
                                    body=[b for b in node.body if id(b) not in dropped] or [ast.Pass()],
                                    decorator_list=node.decorator_list)
            if isinstance(node, ast.ImportFrom) and node.module != "__future__":
                names = [a for a in node.names if (a.asname or a.name) in used or a.name == "*"]
                if not names:
                    continue
                node = ast.ImportFrom(module=node.module, names=names, level=node.level)
            body.append(node)
        out[rel_of[m]] = ast.unparse(ast.fix_missing_locations(ast.Module(body=body or [ast.Pass()],
                                                                          type_ignores=[]))) + "\n"
    out.update({k: v for k, v in files.items() if not k.endswith(".py")})
    return dict(sorted(out.items()))
