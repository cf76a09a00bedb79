"""The experiment verbs, hooked into `pgolf.cli` by `add_experiment_parsers`.

    pgolf compare NEW BASELINE        NEW/BASELINE: comma-separated run dirs or run.json files, globs allowed
    pgolf compare --a-values 1.8827,1.8815,1.8822 --b-values 1.8897,1.8911,1.8891 [--tokens-per-byte 0.4]
    pgolf report RUN_DIR [RUN_DIR ...] [--out DIR]
    pgolf seeds 42,1337,2024|N [--preset P] [--nproc-per-node K] [--dry-run] [--section.field VALUE ...]
    pgolf submit RUNS --name NAME [--out DIR] [--baseline RUNS | --baseline-values V,V,V]
    pgolf bundle [--out DIR] [--codec auto|lzma|brotli] [--preset P] [--section.field VALUE ...]   (single-file script)

`compare` prints both means ± std in nats (round-trip val_loss) and bpb, Welch's t-test, the 0.005-nat margin test
and whether the record criteria (≥ 0.005 nats at p < 0.01) are met. A is the candidate, B the baseline.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from pgolf.experiments.runs import expand, side
from pgolf.experiments.stats import RECORD_ALPHA, RECORD_MARGIN_NATS, margin_test, nats_to_bpb, summarize, welch


def add_experiment_parsers(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser("compare", help="Welch t-test and record-margin test of two sets of per-seed runs")
    c.add_argument("a", nargs="?", help="candidate runs: comma-separated run dirs / run.json files / globs / "
                   "a <name>-seeds.json")
    c.add_argument("b", nargs="?", help="baseline runs, same form")
    c.add_argument("--a-values", help="candidate per-seed val_loss in nats, comma-separated (instead of A)")
    c.add_argument("--b-values", help="baseline per-seed val_loss in nats, comma-separated (instead of B)")
    c.add_argument("--tokens-per-byte", type=float,
                   help="tokens/byte of the validation set, to convert literal nats to bpb (runs carry their own)")
    c.add_argument("--margin-nats", type=float, default=RECORD_MARGIN_NATS,
                   help=f"required improvement in nats per token (default {RECORD_MARGIN_NATS})")
    c.add_argument("--alpha", type=float, default=RECORD_ALPHA, help=f"significance level (default {RECORD_ALPHA})")
    c.set_defaults(experiment_verb="compare")
    r = sub.add_parser("report", help="plots and report.md for a run (extra runs join the comparison plot/table)")
    r.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories or run.json files (globs allowed)")
    r.add_argument("--out", help="output folder (default FIRST_RUN_DIR/report)")
    r.set_defaults(experiment_verb="report")
    _add_seeds_parser(sub)
    _add_submit_parser(sub)
    b = sub.add_parser("bundle", help="write the single-file train_gpt.py (counted) and train_gpt_readable.py "
                       "of one configuration; print their sizes")
    b.add_argument("--out", default=".", help="output folder (default: the current folder)")
    b.add_argument("--codec", default="auto", choices=("auto", "lzma", "brotli"),
                   help="compressor of the counted script (auto: the shorter of lzma and brotli)")
    b.add_argument("--preset", default="cpu-demo", help="the configuration's preset (default cpu-demo); dotted "
                   "overrides (--quant.recipe sota-lqer --eval.mode ttt-phased ...) complete it")
    b.add_argument("--config", help="TOML file with [data]/[model]/[train]/... tables")
    b.set_defaults(experiment_verb="bundle")


def _add_seeds_parser(sub: argparse._SubParsersAction) -> None:
    from pgolf.config import preset_names

    s = sub.add_parser("seeds", help="the same config under several train.seed values; per-seed table, mean ± std",
                       description="Runs `pgolf run` once per seed into <out_dir>/<name>-s<seed> (sequentially, or "
                       "one torchrun per seed with --nproc-per-node), prints the per-seed table with mean and "
                       "sample std, writes <out_dir>/<name>-seeds.json. Dotted overrides as for pgolf run.")
    s.add_argument("seeds", help="comma-separated seeds (42,1337,2024; '7,' = seed 7) or a count N: the records' "
                   "42, 1337, 2024, then 0, 1, 2, ...")
    s.add_argument("--preset", default="cpu-demo", help=f"preset (default cpu-demo); one of: {', '.join(preset_names())}")
    s.add_argument("--config", help="TOML file with [data]/[model]/[train]/... tables")
    s.add_argument("--from-env", action="store_true", help="read the records' hyperparameter environment variables")
    s.add_argument("--nproc-per-node", type=int, help="launch each seed as `torchrun --nproc_per_node K -m pgolf.cli run`")
    s.add_argument("--dry-run", action="store_true", help="print the per-seed commands and exit")
    s.add_argument("--skip-existing", action="store_true", help="skip seeds whose run directory has a finished run.json")
    s.set_defaults(experiment_verb="seeds")


def _add_submit_parser(sub: argparse._SubParsersAction) -> None:
    from pgolf.experiments.stats import RECORD_ALPHA, RECORD_MARGIN_NATS

    s = sub.add_parser("submit", help="write a challenge-style records folder (README, submission.json, logs, "
                       "single-file train_gpt.py) from per-seed runs")
    s.add_argument("runs", nargs="+", metavar="RUNS",
                   help="a <name>-seeds.json, or run dirs / run.json files (comma-separated, globs allowed)")
    s.add_argument("--name", required=True, help="submission name (README title, submission.json name)")
    s.add_argument("--out", help="output folder (default records/<date>_<name>)")
    s.add_argument("--baseline", nargs="+", help="baseline runs (same forms as RUNS) for the Welch and margin tests")
    s.add_argument("--baseline-values", help="baseline per-seed val_loss in nats, comma-separated")
    s.add_argument("--margin-nats", type=float, default=RECORD_MARGIN_NATS)
    s.add_argument("--alpha", type=float, default=RECORD_ALPHA)
    s.add_argument("--author", default="", help="submission.json author")
    s.add_argument("--github-id", default="", help="submission.json github_id")
    s.add_argument("--blurb", default="", help="one-paragraph description")
    s.add_argument("--date", help="submission date (default today, UTC)")
    s.add_argument("--track", default="non-record", help="submission.json track (records use 10min_16mb)")
    s.add_argument("--codec", default="auto", choices=("auto", "lzma", "brotli"),
                   help="compressor of the counted script (auto: the shorter of lzma and brotli)")
    s.add_argument("--force", action="store_true", help="write into a non-empty output folder")
    s.set_defaults(experiment_verb="submit")


def cmd_compare(args: argparse.Namespace) -> int:
    a_nats, a_bpb, a_desc, a_tpb = side("A", args.a, args.a_values)
    b_nats, b_bpb, b_desc, b_tpb = side("B", args.b, args.b_values)
    for label, vals in (("A", a_nats), ("B", b_nats)):
        if len(vals) < 2:
            raise ValueError(f"side {label} has {len(vals)} run(s); Welch's test needs at least 2 per side "
                             "(pgolf seeds runs several seeds)")
    tpb = args.tokens_per_byte or a_tpb or b_tpb  # literal nats are converted with the runs' tokenizer if any
    if tpb:
        a_bpb = a_bpb or [nats_to_bpb(v, tpb) for v in a_nats]
        b_bpb = b_bpb or [nats_to_bpb(v, tpb) for v in b_nats]
    for label, nats, bpb, desc in (("A (candidate)", a_nats, a_bpb, a_desc), ("B (baseline) ", b_nats, b_bpb, b_desc)):
        m, s = summarize(nats)
        line = f"{label}: val_loss {m:.8f} ± {s:.8f} nats"
        if bpb:
            mb, sb = summarize(bpb)
            line += f" | val_bpb {mb:.8f} ± {sb:.8f}"
        print(f"{line}  (n={len(nats)}; {desc})")
    w = welch(a_nats, b_nats)
    print(f"difference A − B: {w.mean_a - w.mean_b:+.8f} nats" +
          (f" ({summarize(a_bpb)[0] - summarize(b_bpb)[0]:+.8f} bpb)" if a_bpb and b_bpb else ""))
    print(f"welch: t={w.t:.2f} df={w.df:.2f} p={w.p_two_sided:.4g} (two-sided)")
    mt = margin_test(a_nats, b_nats, args.margin_nats)
    print(f"margin test H0: improvement ≤ {mt.margin} nats: t={mt.t:.2f} df={mt.df:.2f} p={mt.p_one_sided:.4f} "
          f"(one-sided); mean improvement {mt.improvement_mean:+.6f} nats")
    if tpb:
        print(f"at {tpb:.5f} tokens/byte the margin {mt.margin} nats = {nats_to_bpb(mt.margin, tpb):.5f} bpb")
    ok = mt.meets(args.alpha)
    verdict = "MEETS" if ok else "does NOT meet"
    print(f"record criteria (≥ {mt.margin} nats at p < {args.alpha}): {verdict}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from pgolf.experiments.report import write_report

    paths = [p for spec in args.runs for p in expand(spec)]
    for p in write_report(paths, out_dir=Path(args.out) if args.out else None):
        print(f"wrote {p}")
    return 0


def cmd_bundle(args: argparse.Namespace, extra: Sequence[str] = ()) -> int:
    from pgolf.experiments.bundle import bundle_sizes, counted_codec, package_files, write_bundle
    from pgolf.overrides import resolve_config

    cfg, _ = resolve_config(args.preset, extra, config_file=args.config)
    files = package_files()
    paths = write_bundle(args.out, files, cfg, codec=args.codec, preset=args.preset)
    sizes = bundle_sizes(files, cfg, args.codec, preset=args.preset)
    print(f"bundle for --preset {args.preset} {' '.join(extra)}".rstrip() + f" (recipe {cfg.quant.recipe}, codec "
          f"{cfg.pack.codec}, eval {cfg.eval.mode}): {sizes['files']} files, {sizes['source_bytes']:,} bytes of "
          f"source → readable {sizes['bundle_bytes']:,} → minified {sizes['minified_bytes']:,} → counted "
          f"({counted_codec(paths['counted'].read_bytes())}, latin-1 literal) {sizes['counted_bytes']:,} bytes")
    print(f"wrote {paths['counted']}  (counted: python {paths['counted'].name} --preset {args.preset} ...)")
    print(f"wrote {paths['readable']}")
    return 0


def run_experiment_command(args: argparse.Namespace, extra: Sequence[str] = ()) -> int:
    """Dispatch compare / report / seeds / submit / bundle; bad input is one line on stderr and exit status 2.

    `extra` holds the arguments argparse did not know: dotted overrides for `seeds`, an error for the others."""
    verb = getattr(args, "experiment_verb", None)
    try:
        if verb == "seeds":
            from pgolf.experiments.seeds import cmd_seeds

            return cmd_seeds(args, list(extra))
        if verb == "bundle":  # dotted overrides pick the configuration whose script is written
            return cmd_bundle(args, list(extra))
        if extra:
            raise ValueError(f"unrecognized arguments: {' '.join(extra)}")
        if verb == "compare":
            return cmd_compare(args)
        if verb == "report":
            return cmd_report(args)
        if verb == "submit":
            from pgolf.experiments.submit import cmd_submit

            return cmd_submit(args)
        raise ValueError(f"not an experiment verb: {verb!r}")
    except (ValueError, FileNotFoundError) as e:
        print(f"pgolf {verb}: error: {e}", file=sys.stderr)
        return 2
