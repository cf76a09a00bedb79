"""Counted code bytes of the single-file script per preset × recipe × codec × eval mode (issue 14).

    python bench/code_bytes.py [--presets cpu-demo,sota-sp8192] [--recipes ...] [--modes ...] [--codecs ...]
                               [--markdown] [--breakdown [--top N]]

Each row is `pgolf.experiments.bundle.measure_code_bytes(cfg)`: the script `pgolf bundle` / `pgolf submit` write for
that configuration (entry pgolf.submission; cut points and tree shaking of pgolf.experiments.closure; its
configuration baked in, its checks stripped, constant parameters folded; flattened into one module namespace
(pgolf.experiments.flatten); minified with ast and python-minifier, module-level names renamed too; the shorter of
raw LZMA2 and brotli-11, carried as a latin-1 str literal; --breakdown's shares are under raw LZMA2), with the modules it carries and the minified size before compression. The reference is the records' counted code: 31,999 bytes for R0427 (the SOTA), 15,516–27,610 for the others. Targets: ≤ 31,999 for sota-sp8192 +
sota-lqer + rans-ctx + ttt-phased, ≤ 20,000 for the cpu-demo default. The full package (every module reachable
from pgolf.cli, the previous rule) is printed for comparison. Deterministic for a given source tree and Python.
"""

from __future__ import annotations

import argparse
import ast
import lzma
import sys
import time


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--presets", default="cpu-demo,sota-sp8192,record-11l")
    p.add_argument("--recipes", default="", help="comma-separated recipes (default: each preset's own, + sota-lqer)")
    p.add_argument("--modes", default="standard,sliding,ttt-phased")
    p.add_argument("--codecs", default="", help="comma-separated artifact codecs (default: the preset's + rans-ctx)")
    p.add_argument("--markdown", action="store_true", help="a Markdown table (for BENCHMARKS.md)")
    p.add_argument("--breakdown", action="store_true",
                   help="per embedded file of each configuration: its compressed contribution (counted bytes of the "
                        "script minus those of the script without it), largest first")
    p.add_argument("--top", type=int, default=25, help="files listed per configuration with --breakdown")
    args = p.parse_args(argv)

    from pgolf.config import build_config, load_preset, parse_overrides
    from pgolf.experiments.counted import _LZMA_FILTERS
    from pgolf.experiments.bundle import (
        FLAT_MINIFIER, compact_python, compress_payload, counted_source, flat_source, flat_tree, import_closure,
        minify_file, package_files, wrap_counted,
    )

    def counted_of(parts: dict[str, str]) -> int:
        return len(wrap_counted(compress_payload("".join(parts.values()).encode(), "lzma"), "lzma"))

    def module_parts(cfg) -> dict[str, str]:
        """The one-namespace script's modules, each through python-minifier alone (no module-level renaming)."""
        flat = flat_tree(files, cfg)
        return {r: compact_python(ast.unparse(ast.Module(body=flat.parts[r], type_ignores=[])), r, **FLAT_MINIFIER)
                for r in flat.order}

    files = package_files()
    rows, breakdowns = [], []
    t0 = time.perf_counter()
    for preset in args.presets.split(","):
        base = build_config([("preset", load_preset(preset))])
        recipes = args.recipes.split(",") if args.recipes else list(dict.fromkeys([base.quant.recipe, "sota-lqer"]))
        codecs = args.codecs.split(",") if args.codecs else list(dict.fromkeys([base.pack.codec, "rans-ctx"]))
        for recipe in recipes:
            for codec in codecs:
                for mode in args.modes.split(","):
                    pairs = [("quant.recipe", recipe), ("pack.codec", codec), ("eval.mode", mode)]
                    cfg = build_config([("preset", load_preset(preset)), ("o", parse_overrides(pairs))])
                    minified = flat_source(files, cfg)
                    counted = len(counted_source(files, cfg))
                    rows.append((preset, recipe, codec, mode, len(flat_tree(files, cfg).order),
                                 len(minified.encode()), counted))
                    if args.breakdown:
                        parts = module_parts(cfg)
                        whole = counted_of(parts)
                        breakdowns.append((rows[-1], parts, [
                            (whole - counted_of({k: v for k, v in parts.items() if k != f}), len(parts[f]), f)
                            for f in parts]))
    # the previous rule: every module reachable from pgolf.cli, minified and compressed together
    everything = "".join(minify_file(k, files[k]) for k in import_closure(files))
    full = len(lzma.compress(everything.encode(), format=lzma.FORMAT_RAW, filters=_LZMA_FILTERS))  # ast-minified
    seconds = time.perf_counter() - t0
    head = ("preset", "recipe", "codec", "eval mode", "modules", "minified B", "counted B")
    if args.markdown:
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * 4 + "---:|" * 3)
        for r in rows:
            print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]} | {r[5]:,} | {r[6]:,} |")
    else:
        print(f"{head[0]:12s} {head[1]:14s} {head[2]:9s} {head[3]:11s} {head[4]:>7s} {head[5]:>10s} {head[6]:>9s}")
        for r in rows:
            print(f"{r[0]:12s} {r[1]:14s} {r[2]:9s} {r[3]:11s} {r[4]:7d} {r[5]:10,} {r[6]:9,}")
    for row, chosen, parts in breakdowns:
        parts.sort(reverse=True)
        print(f"\n{' + '.join(map(str, row[:4]))}: {row[6]:,} counted bytes; per module of the one-namespace "
              "script, its compressed contribution (counted minus counted without it, modules minified one by one, "
              "module-level names not renamed) and minified characters:")
        for contrib, chars, f in parts[: args.top]:
            print(f"  {contrib:7,} {chars:8,}  {f}")
        rest = parts[args.top:]
        print(f"  {sum(c for c, _, _ in rest):7,} {sum(n for _, n, _ in rest):8,}  the other {len(rest)} files")
        print(f"  {row[6] - sum(c for c, _, _ in parts):7,} {'':8s}  shared (the wrapper, the dictionary the "
              "modules share, less what renaming module-level names saves: not attributable to one module)")
    print(f"\nwhole package (closure of pgolf.cli, {len(import_closure(files))} modules, ast-minified only, raw LZMA2): ≈{full:,} bytes; "
          f"reference R0427 31,999. {seconds:.0f} s. Python {sys.version.split()[0]}.")
    ast.parse(minified)  # the last script is valid Python
    return 0


if __name__ == "__main__":
    sys.exit(main())
