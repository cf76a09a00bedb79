"""`pgolf eval` and `pgolf check-legal`: score an artifact on a dataset, and the causality checker on the user's own
artifact (or an informative --preset model) and settings."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

from pgolf.config import build_config, config_from_manifest, load_preset, parse_overrides
from pgolf.overrides import UsageError, split_overrides as _split_overrides


def cmd_eval(args: argparse.Namespace) -> int:
    from pgolf.eval.modes import EvalTimeout
    from pgolf.pack.validate import read_artifact

    _, manifest, _ = read_artifact(args.artifact)  # decoded and validated in full before anything is built
    d = config_from_manifest(manifest).to_dict()
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
        from pgolf.pack.validate import read_artifact

        qs, manifest, model_cfg = read_artifact(args.artifact)  # decoded and validated in full
        cfg = config_from_manifest(manifest)
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
