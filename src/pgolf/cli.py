"""`pgolf` command line: thin verbs that parse arguments and call the stage functions.

    pgolf run      [--preset cpu-demo] [--config FILE] [--from-env] [--resume] [--section.field VALUE ...]
    pgolf train    (same options; stops after training and writes checkpoint.pt)
    pgolf quantize RUN_OR_CHECKPOINT [--recipe NAME] [--codec C] [--out PATH] [--budget BYTES] [--eval] [--weights W]
    pgolf eval     ARTIFACT [--mode M] [--stride N] [--seq-len N] [--data-dir DIR] [--val-max-tokens N] [--eval.*]
    pgolf check-legal [--mode M]   (the causality checker on the eval modes)
    pgolf info     ARTIFACT
    pgolf pack     ARTIFACT --codec C [--out PATH]   (re-encode, per-tensor bytes vs entropy)
    pgolf data     prepare|fineweb|tokenizer|convert ...
    pgolf presets  (list presets and every config field)
    pgolf compare  A B   (Welch t-test and the record margin test, in nats and bpb)
    pgolf report   RUN_DIR... [--out DIR]   (PNG plots + report.md)
    pgolf seeds    42,1337,2024|N [--nproc-per-node K] [--dry-run] [run options]   (per-seed table, mean ± std)
    pgolf submit   RUNS --name NAME [--out DIR] [--baseline RUNS]   (records folder + single-file train_gpt.py)
    pgolf bundle   [--out DIR]   (the single-file train_gpt.py and its readable form, sizes)

Overrides are dotted `--section.field value` (or `--section.field=value`); `pgolf presets` lists the fields.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

from pgolf.commands.artifact import cmd_info, cmd_pack
from pgolf.commands.evaluate import _score_artifact, _take_dotted, cmd_check_legal, cmd_eval
from pgolf.commands.presets import cmd_presets, describe_preset  # noqa: F401 (re-exported)
from pgolf.config import RunConfig, build_config, parse_overrides, preset_names
from pgolf.overrides import UsageError, split_overrides as _split_overrides  # noqa: F401 (re-exported)


# ------------------------------------------------------------------------------------------------ config options

def _add_config_options(p: argparse.ArgumentParser, default_preset: str) -> None:
    p.add_argument("--preset", default=default_preset,
                   help=f"preset name (default {default_preset}); one of: {', '.join(preset_names())}")
    p.add_argument("--config", help="TOML file with [data]/[model]/[train]/[quant]/[pack]/[eval]/[run] tables")
    p.add_argument("--from-env", action="store_true",
                   help="read the records' hyperparameter environment variables (MATRIX_LR, NUM_LAYERS, ...)")
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/checkpoint.pt (needs --run.name)")


def resolve_config(args: argparse.Namespace, extra: Sequence[str]) -> tuple[RunConfig, list[str]]:
    from pgolf.overrides import resolve_config as resolve

    return resolve(args.preset, extra, config_file=args.config, from_env=args.from_env)


# ------------------------------------------------------------------------------------------------ verbs

def cmd_run(args: argparse.Namespace, extra: Sequence[str], *, train_only: bool = False) -> int:
    cfg, notes = resolve_config(args, extra)
    if args.resume and not cfg.run.name:
        raise UsageError("--resume needs --run.name NAME (the run directory to continue)")
    if args.resume and not (Path(cfg.run.out_dir) / cfg.run.name).is_dir():
        raise UsageError(f"--resume: run directory {Path(cfg.run.out_dir) / cfg.run.name} does not exist "
                         "(check --run.name and --run.out_dir)")
    from pgolf.submission import run_configured

    out = Path(cfg.run.out_dir)
    before = set(out.iterdir()) if out.is_dir() else set()
    try:
        return run_configured(cfg, args.preset, resume=args.resume, train_only=train_only, notes=notes)
    except BaseException:
        _drop_new_empty_run_dirs(out, before)
        raise


def _drop_new_empty_run_dirs(out: Path, before: set[Path]) -> None:
    """After a failed run: remove the run directories this command created that hold no result (only a log)."""
    import shutil

    for d in (set(out.iterdir()) - before) if out.is_dir() else ():
        if d.is_dir() and all(p.name == "train.log" for p in d.iterdir()):
            shutil.rmtree(d, ignore_errors=True)


def cmd_quantize(args: argparse.Namespace) -> int:
    from pgolf.log import RunLogger
    from pgolf.io import atomic_write_json
    from pgolf.run import load_run_or_checkpoint, quantize_stage, sha256_file
    from pgolf.data.dataset import resolve_dataset

    cfg, weights, run_dir, looping_active = load_run_or_checkpoint(Path(args.source), args.weights)
    changes: dict[str, dict[str, Any]] = {}
    if args.recipe:
        changes["quant"] = {"recipe": args.recipe}
    if args.codec or args.allow_over_limit or args.budget:
        changes["pack"] = {k: v for k, v in (("codec", args.codec),
                                              ("allow_over_limit", args.allow_over_limit or None),
                                              ("budget", args.budget)) if v}
    layers = [("checkpoint", cfg.to_dict()), ("command line", changes)]
    extra = list(getattr(args, "overrides", None) or [])
    if extra:
        layers.append(("overrides", parse_overrides(_split_overrides(extra))))
    cfg = build_config(layers)
    logger = RunLogger(None)
    tok_sha, dataset, accounting = None, None, None
    try:
        from pgolf.data.bytes import byte_accounting
        from pgolf.data.tokenizer import load_tokenizer

        dataset = resolve_dataset(cfg.data)
        tok_sha = sha256_file(dataset.tokenizer_path)
        accounting = byte_accounting(dataset, load_tokenizer(dataset.tokenizer_path))
    except (OSError, ValueError):
        pass
    out = Path(args.out) if args.out else _new_artifact_path(run_dir, cfg)
    packed = quantize_stage(cfg, weights, run_dir, logger, tokenizer_sha256=tok_sha, artifact_path=out,
                            looping_active=looping_active, progress=True, dataset=dataset,
                            byte_accounting=accounting)
    report_path = out.with_suffix(".quant.json")
    report = {"recipe": cfg.quant.recipe, "codec": cfg.pack.codec, "bytes": packed.bytes_report.to_dict(),
              "seconds": packed.quantize_seconds, "calibration": packed.calibration, "fit": packed.fit,
              "tensors": packed.tensor_report}
    atomic_write_json(report_path, report)
    _print_tensor_table(packed.tensor_report)
    if packed.fit:
        f = packed.fit
        budget = cfg.pack.budget
        slack = budget - packed.bytes_report.total
        print(f"fit: budget {budget:,} → total {packed.bytes_report.total:,} (slack {slack:,} = "
              f"{100 * slack / budget:.3f} % of the budget) in {len(f['rounds'])} encode round(s), "
              f"{f['fitted_tensors']} tensors × {f['candidates'] / max(1, f['fitted_tensors']):.1f} candidates, "
              f"{f['seconds']:.1f} s; {f['distortion']} error {f['baseline_err']:.4g} (recipe) → "
              f"{f['fitted_err']:.4g} (fitted); bits by parameters "
              + ", ".join(f"int{b} {n:,}" for b, n in f["bits_numel"].items())
              + (f"; pruned {f['pruned_ones']:,} ±1 codes" if f["pruned_ones"] else ""))
    print(packed.bytes_report.format())
    print(f"artifact: {out}\nreport: {report_path}")
    if args.eval:  # round trip: read the artifact back from disk, rebuild, score (the measured val_bpb)
        report["eval"] = []  # one entry per scored dataset (--data-dir, repeatable; default the run's own)
        for data_dir in args.data_dir or [None]:
            dcfg = cfg if data_dir is None else build_config([*layers, ("--data-dir", {"data": {"data_dir": data_dir}})])
            res, acc = _score_artifact(out, dcfg, "auto")
            report["eval"].append({"data_dir": dcfg.data.data_dir, "mode": res.mode, "val_loss": res.val_loss,
                                   "val_bpb": res.val_bpb, "tokens": res.num_tokens, "bytes": res.num_bytes,
                                   "byte_accounting": acc})
        atomic_write_json(report_path, report)
    elif args.data_dir:
        raise UsageError("--data-dir selects the datasets `quantize --eval` scores; add --eval")
    return 0


def _new_artifact_path(run_dir: Path, cfg: Any) -> Path:
    """quantize without --out: RUN_DIR/model.RECIPE.CODEC.pgolf, a new file; RUN_DIR/model.pgolf, which run.json and
    `pgolf report` describe, is never replaced behind their back."""
    import re

    recipe = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(cfg.quant.recipe).stem if cfg.quant.recipe.endswith(".toml")
                    else cfg.quant.recipe)
    return run_dir / f"model.{recipe}.{cfg.pack.codec.replace('+', '-')}.pgolf"


def _byte_count(text: str) -> int:
    """A decimal byte count: 16000000, 16_000_000, 16,000,000 or 16e6 (must be a whole number ≥ 1)."""
    try:
        value = float(text.replace("_", "").replace(",", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a byte count such as 16000000 or 16e6, got {text!r}") from None
    if value < 1 or value != int(value):
        raise argparse.ArgumentTypeError(f"byte count {text!r} must be a whole number ≥ 1")
    return int(value)


def _print_tensor_table(rows: list[dict]) -> None:
    if not rows:
        return
    cols = [c for c in ("name", "role", "method", "bits", "numel", "mse", "sigma", "damp", "escalations",
                        "hessian_err", "zlib_bytes", "lqer") if c in rows[0] and any(r.get(c) is not None for r in rows)]
    fmt = lambda v: f"{v:.3e}" if isinstance(v, float) else ("-" if v is None else str(v))  # noqa: E731
    widths = {c: max(len(c), *(len(fmt(r.get(c, ""))) for r in rows)) for c in cols}
    print("  ".join(c.ljust(widths[c]) for c in cols))
    for r in rows:
        print("  ".join(fmt(r.get(c, "")).ljust(widths[c]) for c in cols))


# ------------------------------------------------------------------------------------------------ parser

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pgolf", description="Parameter golf: train, quantize, pack and score "
                                "language models under a 16,000,000-byte artifact cap.")
    sub = p.add_subparsers(dest="verb", required=True)
    r = sub.add_parser("run", help="data → train → quantize → pack → round-trip val_bpb (the main job)")
    _add_config_options(r, "cpu-demo")
    t = sub.add_parser("train", help="train only; writes RUN_DIR/checkpoint.pt and run.json")
    _add_config_options(t, "cpu-demo")
    q = sub.add_parser(
        "quantize", help="quantize a trained run/checkpoint and write the artifact",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Other settings as dotted overrides (pgolf presets lists the quant fields), e.g.\n"
               "  --quant.calib_seqs 16 --quant.calib_source random\n"
               "Per-role knobs of the recipe's rules, --quant.ROLE.KNOB VALUE (ROLE: embed, attn, mlp, other;\n"
               "KNOB: bits, method, or a parameter of the rule's method such as clip_sigma, percentile), e.g.\n"
               "  --quant.mlp.bits 5 --quant.attn.clip_sigma 13      (also on pgolf run)\n"
               "A recipe .toml may start from a registered recipe and amend one role's rule only:\n"
               "  base = \"sota-lqer\"\n  [[amend]]\n  role = \"mlp\"\n  bits = 5\n"
               "Every Hessian recipe calibrates on 64 sequences by default (ar-calib-gptq: R0325's 64 x 2048).")
    q.add_argument("source", help="run directory or checkpoint.pt")
    q.add_argument("--recipe", help="quantization recipe name or .toml file")
    q.add_argument("--codec", help="zlib|zstd|lzma|brotli (each optionally +shuffle), rans or rans-ctx")
    q.add_argument("--out", help="artifact path (default RUN_DIR/model.RECIPE.CODEC.pgolf, a new file: the run's "
                   "model.pgolf, described by run.json, is never replaced)")
    q.add_argument("--allow-over-limit", action="store_true", help="write even if over the byte cap")
    q.add_argument("--budget", type=_byte_count, metavar="BYTES",
                   help="fit per-tensor bits/σ so code + model bytes land within 0.1%% under BYTES (e.g. 16e6)")
    q.add_argument("--eval", action="store_true", help="then read the artifact back and score its round-trip val_bpb")
    q.add_argument("--data-dir", action="append", metavar="DIR",
                   help="with --eval: score on this dataset (repeatable; eval-only datasets work); each score is "
                        "recorded in the .quant.json 'eval' list (default: the run's own dataset)")
    q.add_argument("--weights", choices=("ema", "raw"),
                   help="which trained weights to quantize (default: the run's choice, train.ema_select)")
    e = sub.add_parser("eval", help="round-trip val_bpb of an artifact",
                       epilog="Other settings as dotted overrides, e.g. --eval.ttt_lora_rank 64 "
                              "--eval.lora_order length --eval.ttt_lora_warm_start_a false (pgolf presets lists them).")
    e.add_argument("artifact")
    e.add_argument("--stride", type=int, help="sliding-window stride (0 = non-overlapping)")
    e.add_argument("--seq-len", type=int, help="evaluation context length")
    e.add_argument("--batch-seqs", type=int)
    e.add_argument("--data-dir", help="dataset folder (default: the one the run used); validation shards suffice "
                   "(an eval-only dataset: `pgolf data prepare --val-only`)")
    e.add_argument("--val-max-tokens", type=int, help="score only the first N validation tokens (0 = all)")
    e.add_argument("--device", default="auto")
    e.add_argument("--mode", help="standard | sliding | doc | ttt-sgd | ttt-lora | ttt-phased")
    e.add_argument("--max-seconds", type=float, help="abort when the projected eval time exceeds this")
    c = sub.add_parser("check-legal", help="causality checker: legality of eval modes on your model and settings",
                       epilog="Eval settings as dotted overrides over the artifact's, e.g. --eval.ttt_chunk_tokens 128 "
                              "--eval.ttt_lora_chunk 16 --eval.phased_prefix_docs 4 (README: 'The legality checker').")
    c.add_argument("artifact_path", nargs="?", metavar="ARTIFACT",
                   help="check this artifact's model and eval settings (default: a --preset model, random weights)")
    c.add_argument("--artifact", help=argparse.SUPPRESS)  # the older spelling of ARTIFACT
    c.add_argument("--mode", help="a registered mode or 'all' (default: every built-in mode)")
    c.add_argument("--mode-module", metavar="PKG.MOD:FN",
                   help="check your own mode: a function fn(model, ctx) -> label (eval/modes.py ModeFn)")
    c.add_argument("--chunk-tokens", type=int,
                   help="--mode-module: perturb a token in every chunk of this many targets (default seq_len)")
    c.add_argument("--preset", default="cpu-smoke")
    c.add_argument("--tokens", type=int, default=384, help="validation tokens to score")
    c.add_argument("--seq-len", type=int, help="evaluation context (default: the configuration's)")
    c.add_argument("--positions", choices=("structural", "all"), default="structural",
                   help="perturb one token per window/chunk/document/phase (default) or every token")
    c.add_argument("--atol", type=float, default=1e-4, help="largest |Δ log p| counted as unchanged")
    c.add_argument("--device", default="cpu")
    c.add_argument("--seed", type=int, default=0)
    i = sub.add_parser("info", help="print an artifact's manifest, tensors and byte report")
    i.add_argument("artifact")
    i.add_argument("--codecs", help="per-tensor byte report codecs, comma-separated (zlib,zstd,lzma,brotli,rans,rans-ctx), "
                   "'all' or 'none' (default zstd,brotli,rans,rans-ctx)")
    pk = sub.add_parser("pack", help="re-encode an artifact with another codec (verified bit-exact) and report bytes")
    pk.add_argument("artifact")
    pk.add_argument("--codec", required=True, help="zlib|zstd|lzma|brotli, each optionally +shuffle, rans, rans-ctx, "
                    "or lrzip-groups (R0427's per-group lrzip; needs the lrzip binary)")
    pk.add_argument("--out", help="write the re-encoded artifact here (default: report only)")
    pk.add_argument("--codecs", help="per-tensor report codecs, as for info (default rans + the target's compressor)")
    pr = sub.add_parser("presets", help="list presets and every configuration field; with NAME, what that preset "
                        "sets against the defaults and why")
    pr.add_argument("name", nargs="?", help="a preset: print the fields it sets, their defaults and its comments")
    from pgolf.data.cli import add_data_parser
    from pgolf.experiments.cli import add_experiment_parsers

    add_data_parser(sub)
    add_experiment_parsers(sub)
    return p


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the process is, so it unwinds like Ctrl-C (temporary files removed, clean message)."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated()


def main(argv: Sequence[str] | None = None) -> int:
    from pgolf.train.threads import quiet_openmp_waits

    quiet_openmp_waits()  # OMP_WAIT_POLICY=PASSIVE before torch loads: no collapse on a shared machine
    import signal
    import threading

    parser = build_parser()
    argv, dotted = _take_dotted(list(sys.argv[1:] if argv is None else argv))
    args, extra = parser.parse_known_args(argv)
    extra = [*extra, *dotted]
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return _dispatch(args, extra)
    except Terminated:
        print(f"pgolf {args.verb}: terminated (SIGTERM); partial files were removed", file=sys.stderr)
        return 143
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _dispatch(args: argparse.Namespace, extra: Sequence[str]) -> int:
    try:
        if args.verb in ("run", "train"):
            return cmd_run(args, extra, train_only=args.verb == "train")
        if args.verb in ("quantize", "eval", "check-legal"):  # dotted overrides, e.g. --eval.lora_order length
            args.overrides, extra = extra, []
        if getattr(args, "experiment_verb", None):  # compare, report, seeds, submit: pgolf.experiments.cli
            from pgolf.experiments.cli import run_experiment_command

            return run_experiment_command(args, extra)
        if extra:
            raise UsageError(f"unrecognized arguments: {' '.join(extra)}")
        handlers = {"quantize": cmd_quantize, "eval": cmd_eval, "info": cmd_info, "pack": cmd_pack, "presets": cmd_presets,
                    "check-legal": cmd_check_legal}
        if args.verb == "data":
            from pgolf.data.cli import run_data_command

            return run_data_command(args)
        return handlers[args.verb](args)
    except BrokenPipeError:  # e.g. `pgolf presets | head`
        sys.stderr.close()
        return 0
    except (UsageError, ValueError, OSError) as e:
        print(f"pgolf {args.verb}: error: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:
        from pgolf.train.loop import TrainingDiverged

        if not isinstance(e, TrainingDiverged):
            raise
        print(f"pgolf {args.verb}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:
        if isinstance(e, Terminated):
            raise
        print(f"pgolf {args.verb}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
