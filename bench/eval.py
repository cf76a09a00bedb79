"""Evaluation modes on one artifact: val_bpb, gain over standard, wall time and tokens/s per mode.

    python bench/eval.py RUN_DIR/model.pgolf                       # all modes on the whole validation split
    python bench/eval.py RUN_DIR/model.pgolf --val-max-tokens 32768 --modes standard,sliding,ttt-sgd

Every mode scores the model rebuilt from the artifact bytes (the round trip) with the data and evaluation settings
recorded in the artifact; TTT settings are the records' (eval/config.py) unless overridden with --set
section.field=value (e.g. --set eval.ttt_chunk_tokens=8192; the records' length-sorted LoRA queue:
--set eval.lora_order=length --set eval.ttt_lora_warm_start_a=false). The last column splits each mode's time into
its stages (score, train, lora, global_sgd, phase1..N; eval/modes.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("artifact")
    p.add_argument("--modes", default="standard,sliding,doc,ttt-sgd,ttt-lora,ttt-phased")
    p.add_argument("--val-max-tokens", type=int, default=0)
    p.add_argument("--set", action="append", default=[], help="section.field=value override")
    p.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads (0 = torch's default). On a loaded machine 1 can be much faster: "
                        "spinning OpenMP workers that share cores with other jobs slow the many small TTT kernels")
    args = p.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from pgolf.config import build_config, parse_overrides
    from pgolf.eval.modes import evaluate
    from pgolf.eval.score import lut_target_bytes
    from pgolf.eval.roundtrip import load_model_from_artifact
    from pgolf.log import RunLogger
    from pgolf.pack.container import decode_artifact
    from pgolf.run import data_stage
    from pgolf.train.distributed import DistInfo

    blob = Path(args.artifact).read_bytes()
    overrides = parse_overrides([tuple(kv.split("=", 1)) for kv in args.set]
                                + [("data.val_max_tokens", str(args.val_max_tokens))])
    cfg = build_config([("artifact", decode_artifact(blob)[1]["config"]), ("bench", overrides)])
    data = data_stage(cfg, DistInfo(), RunLogger(None, enabled=False))
    model, _ = load_model_from_artifact(blob)
    rows, base = [], None
    for mode in args.modes.split(","):
        ecfg = dataclasses.replace(cfg.eval, mode=mode)
        t0 = time.perf_counter()
        res = evaluate(model, data.val_tokens, lut_target_bytes(data.lut, data.val_tokens), ecfg, seq_len=cfg.eval_seq_len,
                       device=torch.device("cpu"), bos_id=cfg.model.bos_id)
        sec = time.perf_counter() - t0
        base = res.val_bpb if mode == "standard" else base
        stages = ", ".join(f"{k[8:]} {v:.1f}" for k, v in res.timing.items()
                           if k.startswith("seconds_") and k != "seconds_total")
        rows.append((mode, res.val_bpb, None if base is None else res.val_bpb - base, sec, res.num_tokens / sec,
                     stages))
    print(f"artifact {args.artifact}: {data.val_tokens.numel() - 1:,} validation tokens, "
          f"{torch.get_num_threads()} threads")
    print("| mode | val_bpb | Δ vs standard | wall s | tokens/s | seconds per stage |\n|---|---|---|---|---|---|")
    for mode, bpb, gain, sec, tps, stages in rows:
        print(f"| {mode} | {bpb:.5f} | {'' if gain is None else f'{gain:+.5f}'} | {sec:.1f} | {tps:,.0f} | {stages} |")


if __name__ == "__main__":
    main()
