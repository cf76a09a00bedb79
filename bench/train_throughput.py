"""Training throughput: pgolf's full optimizer step against a plain PyTorch GPT loop of the same shape.

    python bench/train_throughput.py                              # cpu-demo and record-11l (seq 256), 1 thread, fp32 and bf16
    python bench/train_throughput.py --autocast bf16              # only bf16 autocast (both loops)
    python bench/train_throughput.py --presets cpu-demo --repeats 5 --steps 4
    python bench/train_throughput.py --presets cpu-demo --baseline-src /tmp/base/src   # + an older pgolf checkout (fp32)

A pgolf step is the training loop's step: forward, backward, grad clip (when the preset clips), Muon + AdamW,
zero_grad, EMA update (when the preset keeps one). The reference ("plain") is a textbook PyTorch GPT of the same shape
(layers, width, heads, KV heads, MLP width, LeakyReLU(0.5)² or ReLU², tied embeddings, RoPE, RMSNorm, SDPA),
trained with `torch.optim.Muon` for the block matrices and `torch.optim.AdamW` for the rest, with none of the
records' extras (no softcap, gates, skips, SmearGate, BigramHash, EMA, clipping).

Both loops run at the same precision, once per `--autocast` entry: "off" = fp32, "bf16" = bf16 autocast with fp32
master weights around forward and loss (pgolf's loop with `--train.autocast bf16`; the plain loop's nn.Linear run
in bf16 too). The ratio pgolf ÷ plain is printed per precision, like with like.

On CPU the pgolf subprocess applies what pgolf's training loop applies to its process: glibc malloc keeps freed
activations for reuse (train/malloc.py, ≈5 % of the step). `--plain-malloc` adds the plain loop with that same
setting (variant "plain-malloc"), to show how much of the ratio is that process setting and how much the kernels.

Every measurement runs in its own subprocess (same interpreter, same thread count, random tokens, fixed seed):
per repeat the variants run one after another in a rotating order, so a loaded machine slows them alike. A
subprocess reports the median wall time and the median process CPU time of its timed steps; the table gives the
median over repeats and the ratio pgolf ÷ plain of those medians. CPU time is the steadier figure when other
processes compete for the cores; wall time is what a wallclock budget sees. For pgolf (and the baseline) the
progress lines on stderr also split the CPU time by phase: forward+backward, clip, muon, adamw, ema.
`minflt_per_step` is the median number of minor page faults of a timed step: memory the allocator gave back to the
kernel and the step faulted in (zero-filled) again.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time


def _shape(preset: str, batch_tokens: int, seq_len: int):
    from pgolf.config import build_config, load_preset, parse_overrides

    over = [("train.train_batch_tokens", str(batch_tokens))]
    if seq_len:
        over.append(("train.train_seq_len", str(seq_len)))
    return build_config([("preset", load_preset(preset)), ("bench", parse_overrides(over))])


def _pgolf_step(cfg, dev, amp):
    import torch

    from pgolf.model.gpt import GPT
    from pgolf.train.ema import EMA
    from pgolf.train.optim import build_optimizers

    torch.manual_seed(0)
    model = GPT(cfg.model).to(dev)
    if getattr(cfg.model, "num_loops", 0):
        model.set_looping(True)  # the steady state after recurrence switches on
    model.train()
    opts = build_optimizers(model, cfg.train)
    ema = EMA(model, cfg.train.ema_decay) if cfg.train.ema_decay > 0 else None
    params = [p for p in model.parameters() if p.requires_grad]
    clip = cfg.train.grad_clip_norm

    phases: dict[str, list[float]] = {"forward+backward": [], "clip": [], "muon": [], "adamw": [], "ema": []}

    def step(x, y):
        c = [time.process_time()]
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
            loss = model(x, y)
        loss.backward()
        c.append(time.process_time())
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(params, clip)
        c.append(time.process_time())
        for o in opts:
            o.step()
            c.append(time.process_time())
        for o in opts:
            o.zero_grad(set_to_none=True)
        if ema is not None:
            ema.update(model)
        c.append(time.process_time())
        names = ["forward+backward", "clip"] + [type(o).__name__.lower() for o in opts] + ["ema"]
        for name, a, b in zip(names, c, c[1:]):
            phases.setdefault(name, []).append(b - a)

    step.phases = phases  # CPU seconds per phase and step (--breakdown)
    return model, step


def _plain_step(cfg, dev, amp):
    """A plain GPT of cfg.model's shape with torch.optim.Muon (matrices) + AdamW (embedding)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    m, t = cfg.model, cfg.train
    C, H, Hkv = m.model_dim, m.num_heads, m.num_kv_heads
    D = C // H
    slope = 0.5 if m.mlp_act == "leaky_relu2" else 0.0

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.q, self.k, self.v = (nn.Linear(C, C, bias=False), nn.Linear(C, Hkv * D, bias=False),
                                      nn.Linear(C, Hkv * D, bias=False))
            self.o = nn.Linear(C, C, bias=False)
            self.fc, self.proj = nn.Linear(C, m.mlp_hidden, bias=False), nn.Linear(m.mlp_hidden, C, bias=False)

        def forward(self, x, cos, sin):
            B, T, _ = x.shape
            n = F.rms_norm(x, (C,))
            q = self.q(n).view(B, T, H, D).transpose(1, 2)
            k = self.k(n).view(B, T, Hkv, D).transpose(1, 2)
            v = self.v(n).view(B, T, Hkv, D).transpose(1, 2)
            q, k = rope(q, cos, sin), rope(k, cos, sin)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=Hkv != H)
            x = x + self.o(y.transpose(1, 2).reshape(B, T, C))
            h = self.fc(F.rms_norm(x, (C,)))
            h = F.leaky_relu(h, slope) if slope else torch.relu(h)
            return x + self.proj(h.square())

    def rope(x, cos, sin):
        x1, x2 = x[..., : D // 2], x[..., D // 2:]
        return torch.cat((x1 * cos + x2 * sin, x2 * cos - x1 * sin), dim=-1)

    class PlainGPT(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(m.vocab_size, C)
            self.blocks = nn.ModuleList(Block() for _ in range(m.num_layers))

        def forward(self, idx, targets):
            T = idx.size(1)
            inv = 1.0 / 10000.0 ** (torch.arange(0, D, 2, device=idx.device, dtype=torch.float32) / D)
            f = torch.outer(torch.arange(T, device=idx.device, dtype=torch.float32), inv)
            cos, sin = f.cos()[None, None], f.sin()[None, None]
            x = self.emb(idx)
            for b in self.blocks:
                x = b(x, cos, sin)
            logits = F.linear(F.rms_norm(x, (C,)), self.emb.weight)
            return F.cross_entropy(logits.view(-1, logits.size(-1)).float(), targets.reshape(-1))

    torch.manual_seed(0)
    model = PlainGPT().to(dev).train()
    matrices = [p for p in model.blocks.parameters() if p.ndim == 2]
    opts = [torch.optim.Muon(matrices, lr=t.matrix_lr, momentum=t.muon_momentum, weight_decay=0.0),
            torch.optim.AdamW([model.emb.weight], lr=t.tied_embed_lr, betas=(t.adam_beta1, t.adam_beta2))]

    def step(x, y):
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
            loss = model(x, y)
        loss.backward()
        for o in opts:
            o.step()
        for o in opts:
            o.zero_grad(set_to_none=True)

    return model, step


def measure(variant: str, preset: str, steps: int, warmup: int, batch_tokens: int, seq_len: int,
            device: str, autocast: str = "off") -> dict:
    import torch

    cfg = _shape(preset, batch_tokens, seq_len)
    dev = torch.device(device if device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    if autocast not in ("off", "bf16"):
        raise SystemExit(f"--autocast {autocast!r}: expected off or bf16")
    if dev.type == "cpu" and variant in ("pgolf", "plain-malloc"):
        try:  # what pgolf's training loop does on CPU (an older checkout measured as the baseline may lack it)
            from pgolf.train.malloc import retain_freed_memory
        except ImportError:
            pass
        else:
            retain_freed_memory()
    model, step = (_pgolf_step if variant == "pgolf" else _plain_step)(cfg, dev, autocast == "bf16")
    T = cfg.train.train_seq_len
    B = cfg.train.train_batch_tokens // T
    gen = torch.Generator().manual_seed(1)
    x = torch.randint(0, cfg.model.vocab_size, (B, T + 1), generator=gen).to(dev)
    wall, cpu, faults = [], [], []
    for i in range(warmup + steps):
        t0, c0 = time.perf_counter(), time.process_time()
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        step(x[:, :-1], x[:, 1:])
        if dev.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
            faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)  # pages the step faulted in
    peak = (torch.cuda.max_memory_allocated() if dev.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    phases = {k: round(statistics.median(v[warmup:]), 4) for k, v in getattr(step, "phases", {}).items()
              if len(v) > warmup}
    return {"variant": variant, "preset": preset, "autocast": autocast, "device": str(dev),
            "threads": torch.get_num_threads(),
            "cpu_phases_s": phases,
            "params": sum(p.numel() for p in model.parameters()), "seq_len": T, "batch_tokens": B * T,
            "step_s": statistics.median(wall), "cpu_s": statistics.median(cpu), "peak_mem_mb": round(peak / 1e6, 1),
            "minflt_per_step": int(statistics.median(faults))}


def _run_one(variant: str, preset: str, args: argparse.Namespace, src: str | None, autocast: str) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--one", variant, "--presets", preset, "--autocast", autocast,
           "--steps",
           str(args.steps), "--warmup", str(args.warmup), "--batch-tokens", str(args.batch_tokens), "--seq-len",
           str(args.seq_len), "--device", args.device]
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(args.threads))
    if src:  # an older pgolf checkout (its src/ folder) for a side-by-side baseline
        env["PYTHONPATH"] = os.path.abspath(src) + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode:
        raise RuntimeError(f"{variant} {preset} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", default="cpu-demo,record-11l")
    p.add_argument("--steps", type=int, default=3, help="timed steps per subprocess")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3, help="subprocesses per variant, alternating")
    p.add_argument("--batch-tokens", type=int, default=8192)
    p.add_argument("--seq-len", type=int, default=256, help="0 = the preset's train_seq_len")
    p.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of each subprocess (unless already set)")
    p.add_argument("--device", default="auto")
    p.add_argument("--autocast", default="off,bf16",
                   help="precisions to compare, comma-separated: off (fp32) and/or bf16 (autocast, fp32 masters)")
    p.add_argument("--baseline-src", help="src/ folder of another pgolf checkout, measured as variant 'baseline'")
    p.add_argument("--baseline-autocast", action="store_true",
                   help="also wrap the baseline in bf16 autocast (default: the baseline runs only at 'off', fp32, "
                        "which is what older pgolf trained on CPU)")
    p.add_argument("--no-plain", action="store_true", help="skip the plain PyTorch reference")
    p.add_argument("--plain-malloc", action="store_true",
                   help="also measure the plain loop with pgolf's glibc malloc setting (train/malloc.py), variant "
                        "'plain-malloc': how much of the ratio is that process setting")
    p.add_argument("--json", help="also write every measurement to this file")
    p.add_argument("--one", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.presets, args.steps, args.warmup, args.batch_tokens, args.seq_len,
                                 args.device, args.autocast)))
        return
    variants = [("pgolf", None)] + ([] if args.no_plain else [("plain", None)])
    if args.plain_malloc:
        variants.append(("plain-malloc", None))
    if args.baseline_src:
        variants.append(("baseline", args.baseline_src))
    rows, allruns = [], []
    for preset, amp in ((p, a) for p in args.presets.split(",") for a in args.autocast.split(",")):
        here = [(v, src) for v, src in variants if v != "baseline" or amp == "off" or args.baseline_autocast]
        runs: dict[str, list[dict]] = {v: [] for v, _ in here}
        for r in range(args.repeats):
            order = here[r % len(here):] + here[:r % len(here)]  # rotate who goes first
            for v, src in order:
                res = _run_one("pgolf" if v == "baseline" else v, preset, args, src, amp)
                res["variant"] = v
                runs[v].append(res)
                allruns.append(res)
                phases = ", ".join(f"{k} {t:.3f}" for k, t in res.get("cpu_phases_s", {}).items())
                print(f"# {preset} {amp} repeat {r + 1} {v}: step {res['step_s']:.3f} s, cpu {res['cpu_s']:.3f} s"
                      + (f" (cpu by phase: {phases})" if phases else ""), file=sys.stderr, flush=True)
        ref = runs["plain"] if "plain" in runs else None
        for v, _ in here:
            step = statistics.median(x["step_s"] for x in runs[v])
            cpu = statistics.median(x["cpu_s"] for x in runs[v])
            row = {**runs[v][0], "variant": v, "step_s": step, "cpu_s": cpu,
                   "tokens_per_s": runs[v][0]["batch_tokens"] / step,
                   "peak_mem_mb": max(x["peak_mem_mb"] for x in runs[v]),
                   "minflt_per_step": int(statistics.median(x["minflt_per_step"] for x in runs[v]))}
            if ref is not None:
                row["wall_ratio"] = step / statistics.median(x["step_s"] for x in ref)
                row["cpu_ratio"] = cpu / statistics.median(x["cpu_s"] for x in ref)
            rows.append(row)
    cols = ["preset", "autocast", "variant", "device", "threads", "params", "seq_len", "batch_tokens", "step_s", "cpu_s",
            "tokens_per_s", "peak_mem_mb", "minflt_per_step"] + (["wall_ratio", "cpu_ratio"] if not args.no_plain else [])
    print(f"medians of {args.repeats} alternating subprocesses × {args.steps} timed steps "
          f"(ratios: ÷ plain PyTorch + torch.optim.Muon)")
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        cells = []
        for c in cols:
            v = r[c]
            cells.append(f"{v:,}" if isinstance(v, int) else f"{v:.3f}" if isinstance(v, float) else str(v))
        print("| " + " | ".join(cells) + " |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "runs": allruns, "args": vars(args)}, f, indent=2)


if __name__ == "__main__":
    main()
