"""Muon optimizer step on a preset's matrix shapes: per-matrix Newton–Schulz (`Muon`) vs banked, batched
(`ParallelMuon`, world of one), and the bytes each distributed scheme would move.

    python bench/muon.py                        # record-11l shapes, CPU, 3 alternating repeats
    python bench/muon.py --preset sota-sp8192 --device cuda --repeats 10

Random gradients, one optimizer step per timing (momentum, Newton–Schulz, weight update); the two variants
alternate inside every repeat, medians reported. On CPU Newton–Schulz runs in fp32, on CUDA in bf16.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from pgolf.config import build_config, load_preset
from pgolf.model.gpt import GPT
from pgolf.train.muon import Muon
from pgolf.train.parallel_muon import ParallelMuon, communication_bytes


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="record-11l")
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    dev = torch.device(args.device)
    cfg = build_config([("preset", load_preset(args.preset))])
    with torch.device("meta"):
        shapes = [tuple(q.shape) for q in GPT(cfg.model).optimizer_groups()["matrix"]]
    t = cfg.train
    kw = dict(lr=t.matrix_lr, momentum=t.muon_momentum, nesterov=t.muon_nesterov, backend_steps=t.muon_backend_steps,
              coeffs=t.muon_coeffs, row_normalize=t.muon_row_normalize, weight_decay=t.muon_wd)
    g = torch.Generator().manual_seed(0)
    grads = [torch.randn(s, generator=g).to(dev) for s in shapes]
    opts = {}
    for cls in (Muon, ParallelMuon):
        ps = [torch.nn.Parameter(torch.zeros(s, device=dev)) for s in shapes]
        opts[cls.__name__] = (cls(ps, **kw), ps)
    times: dict[str, list[float]] = {n: [] for n in opts}
    for r in range(args.repeats + 1):  # the first round warms up (allocations, bank build)
        for name, (opt, ps) in opts.items():
            for p_, g_ in zip(ps, grads):
                p_.grad = g_.clone()
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            opt.step()
            if dev.type == "cuda":
                torch.cuda.synchronize()
            if r:
                times[name].append(time.perf_counter() - t0)
    muon_w, pm_w = opts["Muon"][1], opts["ParallelMuon"][1]
    diff = max(float((a.detach() - b.detach()).abs().max()) for a, b in zip(muon_w, pm_w))
    print(f"{args.preset}: {len(shapes)} matrices, {sum(torch.Size(s).numel() for s in shapes):,} params, "
          f"{t.muon_coeffs} × {t.muon_backend_steps}, device {dev}, threads {torch.get_num_threads()}, "
          f"{args.repeats} repeats; max |Δweights| after {args.repeats + 1} steps: {diff:.1e}")
    print("| variant | median step s | min s |")
    print("|---|---|---|")
    for name, ts in times.items():
        print(f"| {name} | {statistics.median(ts):.3f} | {min(ts):.3f} |")
    for w in (2, 4, 8):
        c = communication_bytes(shapes, w, cuda=True)
        print(f"W={w}: round robin {c['round_robin_bytes'] / 1e6:.1f} MB/rank, parallel "
              f"{c['parallel_bytes'] / 1e6:.1f} MB/rank (padded {c['padded_params']:,} of {c['matrix_params']:,})")


if __name__ == "__main__":
    main()
