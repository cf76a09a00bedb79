"""Raw weights vs the records' EMA vs the warmed-up EMA after short cpu-demo runs (issue 18).

    python bench/ema_warmup.py --steps 80,150,280

For each step count: one step-based cpu-demo run (`--train.max_wallclock_seconds 0 --train.iterations N`, the
preset's EMA decay 0.99). The run's own EMA uses the warm-up (train.ema_warmup = true, TF num_updates); a second
EMA with the records' rule (constant decay from the initial weights, train.ema_warmup = false) is updated after every
step through train()'s step_fn, so both averages see exactly the same weights. At the end raw, EMA-old and EMA-new
weights are scored on the whole validation split (pre-quantization val_bpb), and the row says which one
train.ema_select = "best" reported.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path


def one(steps: int, preset: str, extra: list[tuple[str, str]]) -> dict:
    import torch

    from pgolf.config import build_config, load_preset, parse_overrides
    from pgolf.data.loader import DistributedTokenLoader
    from pgolf.log import RunLogger
    from pgolf.run import build_model, data_stage, score
    from pgolf.train.distributed import DistInfo
    from pgolf.train.ema import EMA
    from pgolf.train.loop import train

    over = [("train.max_wallclock_seconds", "0"), ("train.iterations", str(steps)), ("train.ema_warmup", "true"),
            ("train.ema_select", "best"), *extra]
    cfg = build_config([("preset", load_preset(preset)), ("bench", parse_overrides(over))])
    dist = DistInfo()
    logger = RunLogger(None)
    data = data_stage(cfg, dist, logger)
    model = build_model(cfg, dist.device)
    old = EMA(model, cfg.train.ema_decay, warmup=False)  # the records' EMA, fed the same weights
    loader = DistributedTokenLoader(data.dataset.train_files, 0, 1)
    with tempfile.TemporaryDirectory() as run_dir:
        result = train(cfg.train, model, loader, logger=logger, run_dir=Path(run_dir), device=dist.device,
                       select_fn=lambda m: score(m, data, cfg, dist.device),
                       step_fn=lambda step, m: old.update(m))
    w = result.weights
    with torch.no_grad():
        old.copy_to(model)
    ema_old = score(model, data, cfg, dist.device)
    return {"steps": result.steps, "raw": w["raw"]["val_bpb"], "ema_old": ema_old.val_bpb,
            "ema_new": w["ema"]["val_bpb"], "reported": w["chosen"], "decay": cfg.train.ema_decay,
            "train_s": round(result.train_seconds, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", default="80,150,280")
    p.add_argument("--preset", default="cpu-demo")
    p.add_argument("--json", help="also write the rows to this file")
    args, rest = p.parse_known_args()
    extra = [(k.lstrip("-"), v) for k, v in zip(rest[::2], rest[1::2])]  # --section.field VALUE overrides
    rows = []
    for n in (int(s) for s in args.steps.split(",")):
        rows.append(one(n, args.preset, extra))
        print(json.dumps(rows[-1]), flush=True)
    print("| steps | raw | EMA, records' rule | EMA, warm-up | reported (ema_select best) |")
    print("|---:|---:|---:|---:|---|")
    for r in rows:
        print(f"| {r['steps']} | {r['raw']:.5f} | {r['ema_old']:.5f} | {r['ema_new']:.5f} | {r['reported']} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
