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
import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from pgolf.config import (
    SECTIONS, RunConfig, build_config, load_preset, parse_overrides, preset_names,
)
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
    from pgolf.run import load_run_or_checkpoint, quantize_stage, sha256_file, write_json_atomic
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
    write_json_atomic(report_path, report)
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
        write_json_atomic(report_path, report)
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


def cmd_eval(args: argparse.Namespace) -> int:
    from pgolf.eval.modes import EvalTimeout
    from pgolf.pack.validate import read_artifact, run_config

    _, manifest, _ = read_artifact(args.artifact)  # decoded and validated in full before anything is built
    d = run_config(manifest).to_dict()
    overrides: dict[str, dict[str, Any]] = {"eval": {}, "data": {}}
    for key, section, fieldname in (("mode", "eval", "mode"), ("max_seconds", "eval", "max_seconds"),
                                    ("stride", "eval", "stride"), ("seq_len", "eval", "seq_len"),
                                    ("batch_seqs", "eval", "batch_seqs"), ("data_dir", "data", "data_dir"),
                                    ("val_max_tokens", "data", "val_max_tokens")):
        if getattr(args, key) is not None:
            overrides[section][fieldname] = getattr(args, key)
    layers = [("artifact manifest", d), ("command line", overrides)]
    if getattr(args, "overrides", None):  # dotted --eval.field value (TTT settings, lora_order, ...)
        layers.append(("overrides", parse_overrides(_split_overrides(args.overrides))))
    cfg = build_config(layers)
    try:
        _score_artifact(Path(args.artifact), cfg, args.device)
    except EvalTimeout as e:  # the --max-seconds projection: one clear line, exit status 1
        print(f"pgolf eval: {e}", file=sys.stderr)
        return 1
    return 0


def _score_artifact(path: Path, cfg: Any, device: str) -> tuple[Any, str]:
    """Read the artifact back, rebuild the model, score it with cfg's data and eval settings, print the result
    (`final_roundtrip` and, for modes that time their stages, `eval_timing`). Used by `eval` and `quantize --eval`.
    The data may be eval-only (no train shard). Returns (EvalResult, byte accounting "sidecar"|"lut")."""
    from pgolf.log import RunLogger
    from pgolf.run import data_stage, roundtrip_stage
    from pgolf.train.distributed import init_distributed, shutdown_distributed

    dist_info = init_distributed(device)
    logger = RunLogger(None, enabled=dist_info.is_main)
    try:
        data = data_stage(cfg, dist_info, logger, require_train=False)
        res = roundtrip_stage(path, cfg, data, dist_info.device, logger, progress=logger.progress_mode)
    finally:
        shutdown_distributed()
    logger.event("final_roundtrip", mode=res.mode, val_loss=f"{res.val_loss:.8f}", val_bpb=f"{res.val_bpb:.8f}",
                 tokens=res.num_tokens, bytes=res.num_bytes, eval_s=round(res.seconds, 2),
                 tokens_per_s=round(res.num_tokens / max(res.seconds, 1e-9), 1))
    if getattr(res, "timing", None):
        logger.event("eval_timing", **{k: round(v, 3) for k, v in res.timing.items()})
    return res, data.byte_accounting


def cmd_check_legal(args: argparse.Namespace) -> int:
    """The causality checker (eval/legal.py) on the user's model and settings: an artifact (or a --preset model
    with informative random weights), its eval config with --eval.* overrides, each requested mode."""
    from pgolf.eval.config import EVAL_MODES
    from pgolf.eval.legal import check_legal, informative_init, mode_eval_fn
    from pgolf.eval.score import lut_target_bytes
    from pgolf.log import RunLogger
    from pgolf.run import build_model, data_stage
    from pgolf.train.distributed import DistInfo

    args.artifact = args.artifact or args.artifact_path
    if args.artifact:
        from pgolf.eval.roundtrip import model_from_state
        from pgolf.pack.validate import read_artifact, run_config

        qs, manifest, model_cfg = read_artifact(args.artifact)  # decoded and validated in full
        cfg = run_config(manifest)
        model = model_from_state(qs, manifest, model_cfg)
    overrides = parse_overrides(_split_overrides(args.overrides or []))  # dotted --eval.* / --data.* ...
    if args.artifact and "model" in overrides:
        raise UsageError(f"--model.* overrides with an artifact: its model is fixed by {args.artifact}")
    if args.artifact:
        cfg = build_config([("configuration", cfg.to_dict()), ("overrides", overrides)])
    else:  # a fresh --preset model with its zero-initialised projections filled, so attention reaches the output
        cfg = build_config([("preset", load_preset(args.preset)), ("overrides", overrides)])
        model = informative_init(build_model(cfg, torch_device("cpu")), seed=args.seed)
    data = data_stage(cfg, DistInfo(), RunLogger(None, enabled=False), require_train=False)  # val only
    tokens = data.val_tokens[: args.tokens + 1]
    if getattr(data, "byte_accounting", "lut") == "sidecar":  # CaseOps: the original text's bytes, per position
        target_bytes = data.target_bytes[: tokens.numel()]
    else:  # the LUT, recomputed for every perturbed copy
        target_bytes = lambda t: lut_target_bytes(data.lut, t)  # noqa: E731
    seq_len = args.seq_len or cfg.eval_seq_len
    device = torch_device("cpu" if args.device == "auto" else args.device)
    model = model.to(device)
    if args.mode_module:
        runs = [(args.mode_module, cfg.eval, args.mode_module)]
    else:
        names = EVAL_MODES if (args.mode or "all") == "all" else (args.mode,)
        runs = [(name, None, None) for name in names]
    failed = 0
    for name, ecfg, mode_fn in runs:
        try:
            ecfg = ecfg or dataclasses.replace(cfg.eval, mode=name)
        except ValueError as e:  # e.g. lora_order=length with ttt-phased: refused for every run anyway
            print(f"{name:<11} SKIP  {e}")
            continue
        check = mode_eval_fn(ecfg, seq_len=seq_len, bos_id=cfg.model.bos_id, device=device, mode=mode_fn,
                             chunk_tokens=args.chunk_tokens)
        report = check_legal(check, model, tokens, target_bytes,
                             positions="all" if args.positions == "all" else None, seed=args.seed, atol=args.atol)
        failed += not report.passed
        print(f"{name:<11} {'PASS' if report.passed else 'FAIL'}  "
              + "  ".join(f"{k}:{'ok' if v else 'VIOLATED'}" for k, v in report.checks.items()))
        print(f"            {report.summary()} in {tokens.numel() - 1} tokens, seq_len {seq_len}, "
              f"bytes {getattr(data, 'byte_accounting', 'lut')}")
        if report.updates == 0 and name not in ("standard", "sliding", "doc"):
            print("            note: no parameter update ran on these tokens, so the update path is unchecked; use "
                  "more --tokens or smaller --eval.ttt_chunk_tokens / --eval.ttt_lora_chunk / phased_prefix_docs")
        for line in report.details if not report.passed else []:
            print(f"    {line}")
    return 1 if failed else 0


def _take_dotted(argv: list[str]) -> tuple[list[str], list[str]]:
    """check-legal: its --section.field VALUE overrides out of argv before parsing, so that no VALUE is taken for the
    optional ARTIFACT. Other verbs: unchanged."""
    if argv[:1] != ["check-legal"]:
        return argv, []
    rest, dotted, i = [], [], 0
    while i < len(argv):
        tok = argv[i]
        n = (1 if "=" in tok else 2) if tok.startswith("--") and "." in tok.split("=", 1)[0] else 0
        if n:
            dotted += argv[i : i + n]
            i += n
        else:
            rest.append(tok)
            i += 1
    return rest, dotted


def torch_device(name: str):
    import torch

    return torch.device(name)


def _manifest_config(manifest: dict) -> Any:
    """The artifact's run configuration (its counted script's closure), or None (the cpu-demo preset's) if absent."""
    from pgolf.config import config_from_dict

    return config_from_dict(manifest["config"]) if manifest.get("config") else None


def cmd_info(args: argparse.Namespace) -> int:
    from pgolf.pack.budget import ByteReport, format_byte_report, tensor_byte_report
    from pgolf.run import counted_code_bytes
    from pgolf.pack.container import artifact_codec
    from pgolf.pack.validate import read_artifact

    path = Path(args.artifact)
    qs, manifest, _ = read_artifact(path, require_model=False)  # decoded and validated in full
    blob = path.read_bytes()
    print(f"artifact: {path}")
    print(f"format: {manifest.get('format', 'pgolf-v1')}  recipe: {manifest.get('recipe')}  "
          f"codec: {manifest.get('codec')}  pgolf: {manifest.get('pgolf_version')}")
    model = manifest.get("model", {})
    print("model: " + " ".join(f"{k}={v}" for k, v in model.items()))
    rows = []
    for name, t in sorted(qs.tensors.items()):
        rows.append({"name": name, "kind": t.method, "bits": t.bits, "shape": "x".join(map(str, t.q.shape)),
                     "numel": t.q.numel()})
    for name, t in sorted(qs.passthrough.items()):
        rows.append({"name": name, "kind": "passthrough", "bits": t.element_size() * 8,
                     "shape": "x".join(map(str, t.shape)) or "scalar", "numel": t.numel()})
    cols = ["name", "kind", "bits", "shape", "numel"]
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    print("  ".join(c.ljust(widths[c]) for c in cols))
    for r in rows:
        print("  ".join(str(r[c]).ljust(widths[c]) for c in cols))
    n_quant = sum(t.q.numel() for t in qs.tensors.values())
    n_pass = sum(t.numel() for t in qs.passthrough.values())
    print(f"tensors: {len(qs.tensors)} quantized ({n_quant:,} values), {len(qs.passthrough)} passthrough "
          f"({n_pass:,} values)")
    codecs = _report_codecs(getattr(args, "codecs", None))
    if codecs:
        print("\nbytes of each tensor's codes compressed alone (entropy = order-0 bound; gap = bytes/entropy - 1):")
        print(format_byte_report(tensor_byte_report(qs, codecs)))
    print(f"artifact codec {artifact_codec(blob)}: {len(blob):,} bytes")
    report = ByteReport(model_bytes=len(blob), code_bytes=counted_code_bytes(_manifest_config(manifest)))
    print(report.format())
    return 0


def _report_codecs(spec: str | None) -> list[str]:
    from pgolf.pack.budget import REPORT_CODECS
    from pgolf.pack.codecs import CODECS

    if spec is None:
        return list(REPORT_CODECS)
    if spec in ("", "none"):
        return []
    if spec == "all":
        return [*CODECS, "rans", "rans-ctx"]
    return [c.strip() for c in spec.split(",") if c.strip()]


def _same_tensor(a: Any, b: Any) -> bool:
    import torch

    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)


def cmd_pack(args: argparse.Namespace) -> int:
    """Re-encode an artifact with another codec (decode → encode → decode, verified bit-exact) and report bytes."""
    from pgolf.pack.budget import ByteReport, format_byte_report, tensor_byte_report
    from pgolf.run import counted_code_bytes
    from pgolf.pack.container import (
        CODEC_IDS, EXTERNAL_CODECS, artifact_codec, decode_artifact, encode_artifact, write_artifact,
    )

    if args.codec not in CODEC_IDS and args.codec not in EXTERNAL_CODECS:
        raise UsageError(f"unknown codec {args.codec!r}; valid: {', '.join([*CODEC_IDS, *EXTERNAL_CODECS])}")
    path = Path(args.artifact)
    blob = path.read_bytes()
    old_codec = artifact_codec(blob)
    from pgolf.pack.validate import read_artifact

    qs, manifest, _ = read_artifact(path, require_model=False)  # decoded and validated in full
    manifest = {**manifest, "codec": args.codec}
    t0 = time.perf_counter()
    new = encode_artifact(qs, manifest, args.codec)
    t1 = time.perf_counter()
    back, back_manifest = decode_artifact(new)
    t2 = time.perf_counter()
    same = (back_manifest == manifest and back.dtypes == qs.dtypes and list(back.tensors) == list(qs.tensors)
            and list(back.passthrough) == list(qs.passthrough)
            and all(_same_tensor(t, back.passthrough[n]) for n, t in qs.passthrough.items()))
    for name, qt in qs.tensors.items():
        bt = back.tensors[name]
        same = same and _same_tensor(qt.q, bt.q) and _same_tensor(qt.scale, bt.scale) and qt.bits == bt.bits \
            and qt.extras.keys() == bt.extras.keys() and all(_same_tensor(v, bt.extras[k]) for k, v in qt.extras.items())
    if not same:
        raise RuntimeError("re-encoded artifact does not round-trip bit-exactly (please report this bug)")
    target = "rans-ctx" if args.codec in EXTERNAL_CODECS else args.codec.split("+")[0]  # lrzip-groups: whole groups
    codecs = _report_codecs(args.codecs) if args.codecs is not None else sorted({"rans", target})
    if codecs:
        print(format_byte_report(tensor_byte_report(qs, codecs)))
    print(f"{path}: {old_codec} {len(blob):,} bytes → {args.codec} {len(new):,} bytes "
          f"({len(new) - len(blob):+,}; encode {t1 - t0:.2f} s, decode {t2 - t1:.2f} s; round trip bit-exact)")
    if args.out:
        write_artifact(args.out, new)
        print(f"wrote {args.out}")
        print(ByteReport(model_bytes=len(new), code_bytes=counted_code_bytes(_manifest_config(manifest))).format())
    else:
        print("(dry run: pass --out PATH to write it)")
    return 0


def describe_preset(name: str) -> str:
    """What preset `name` sets against the defaults, with the preset file's comments saying why."""
    import re
    from importlib import resources

    sets = load_preset(name)  # validates the name (one-line error listing the presets)
    text = resources.files("pgolf").joinpath("presets", f"{name}.toml").read_text()
    defaults = RunConfig().to_dict()
    header, notes, pending, section = [], {}, [], None
    for line in text.splitlines():
        stripped = line.strip()
        if section is None and stripped.startswith("#"):
            header.append(stripped.lstrip("#").strip())
        elif stripped.startswith("#"):
            pending.append(stripped.lstrip("#").strip())
        elif m := re.match(r"\[([\w.]+)\]", stripped):
            section, pending = m.group(1), []
        elif m := re.match(r"([\w.]+)\s*=\s*(.*?)(?:\s+#\s*(.*))?$", stripped):
            why = " ".join(pending + ([m.group(3)] if m.group(3) else []))
            notes[(section, m.group(1))], pending = why, []
    import textwrap

    def cli(v: Any) -> str:  # as an override is typed: true/false, plain strings, comma lists
        if isinstance(v, bool):
            return "true" if v else "false"
        return ",".join(map(cli, v)) if isinstance(v, (list, tuple)) else str(v)

    head = " ".join(header)
    head = head.split(":", 1)[1].strip() if head.startswith(name + ":") else head
    lines = textwrap.wrap(f"preset {name}: {head}", 116, subsequent_indent="  ")
    changed = 0
    for sec, fields in sets.items():
        lines.append(f"[{sec}]")
        for key, value in fields.items():
            default = defaults.get(sec, {}).get(key, "?")
            same = value == default or (isinstance(default, (list, tuple)) and list(default) == value)
            changed += not same
            why = notes.get((sec, key))
            lines.append(f"  --{sec}.{key} {cli(value)}" + ("  (= default)" if same else f"  (default {cli(default)})")
                         + (f"  # {why}" if why else ""))
    lines.append(f"{changed} fields differ from the defaults; every other field keeps its default "
                 "(`pgolf presets` lists them all).")
    return "\n".join(lines)


def cmd_presets(args: argparse.Namespace) -> int:
    import typing

    if getattr(args, "name", None):
        print(describe_preset(args.name))
        return 0
    print("presets: " + ", ".join(preset_names()))
    for section, cls in SECTIONS.items():
        hints = typing.get_type_hints(cls)
        print(f"[{section}]")
        for f in dataclasses.fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore
            hint = hints[f.name]
            if typing.get_origin(hint) is typing.Literal:
                tp = "|".join(map(str, typing.get_args(hint)))
            else:
                tp = getattr(hint, "__name__", str(hint)).replace("typing.", "")
            print(f"  --{section}.{f.name} ({tp}, default {default!r})")
    return 0


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
