"""Training throughput: tokens/s and peak memory of full optimizer steps (forward, backward, Muon + AdamW, EMA).

    python bench/train_throughput.py                       # cpu-demo and record-11l shapes, 2 warm-up + 5 timed steps
    python bench/train_throughput.py --presets cpu-demo --steps 10 --batch-tokens 8192 --seq-len 256

Each preset runs in its own subprocess so the peak resident memory (ru_maxrss, CPU) or the peak CUDA allocation
belongs to that shape alone. The batch defaults to the preset's sequence length and a CPU-sized token count
(override with --batch-tokens); the model, optimizers and step are the real ones from pgolf.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def measure(preset: str, steps: int, warmup: int, batch_tokens: int, seq_len: int, device: str) -> dict:
    import torch

    from pgolf.config import build_config, load_preset, parse_overrides
    from pgolf.model.gpt import GPT
    from pgolf.train.ema import EMA
    from pgolf.train.optim import build_optimizers

    layers = [("preset", load_preset(preset))]
    over = [("train.train_batch_tokens", str(batch_tokens))]
    if seq_len:
        over.append(("train.train_seq_len", str(seq_len)))
    cfg = build_config(layers + [("bench", parse_overrides(over))])
    dev = torch.device(device if device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(0)
    model = GPT(cfg.model).to(dev)
    if getattr(cfg.model, "num_loops", 0):
        model.set_looping(True)  # measure the steady state after recurrence switches on
    opts = build_optimizers(model, cfg.train)
    ema = EMA(model, 0.997)
    T = cfg.train.train_seq_len
    B = cfg.train.train_batch_tokens // T
    x = torch.randint(0, cfg.model.vocab_size, (B, T + 1), device=dev)
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            loss = model(x[:, :-1], x[:, 1:])
        loss.backward()
        for o in opts:
            o.step()
        for o in opts:
            o.zero_grad(set_to_none=True)
        ema.update(model)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    step_s = sorted(times)[len(times) // 2]
    peak = (torch.cuda.max_memory_allocated() if dev.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"preset": preset, "device": str(dev), "threads": torch.get_num_threads(),
            "params": sum(p.numel() for p in model.parameters()), "seq_len": T, "batch_tokens": B * T,
            "median_step_s": round(step_s, 4), "tokens_per_s": round(B * T / step_s, 1),
            "peak_mem_mb": round(peak / 1e6, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", default="cpu-demo,record-11l")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--batch-tokens", type=int, default=8192)
    p.add_argument("--seq-len", type=int, default=0, help="0 = the preset's train_seq_len")
    p.add_argument("--device", default="auto")
    p.add_argument("--one", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.steps, args.warmup, args.batch_tokens, args.seq_len, args.device)))
        return
    rows = []
    for preset in args.presets.split(","):
        cmd = [sys.executable, __file__, "--one", preset, "--steps", str(args.steps), "--warmup", str(args.warmup),
               "--batch-tokens", str(args.batch_tokens), "--seq-len", str(args.seq_len), "--device", args.device]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    cols = ["preset", "device", "threads", "params", "seq_len", "batch_tokens", "median_step_s", "tokens_per_s",
            "peak_mem_mb"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(f"{r[c]:,}" if isinstance(r[c], int) else str(r[c]) for c in cols) + " |")


if __name__ == "__main__":
    main()
