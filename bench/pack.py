"""Artifact codecs on real weights: bytes per codec vs order-0 entropy, encode/decode seconds, 27M decode time.

    python bench/pack.py [--artifact /tmp/runs/demo-a/model.pgolf] [--checkpoint /tmp/runs/demo-a/checkpoint.pt]
                         [--skip-27m] [--codecs zlib,zstd,...]

States measured: (a) the artifact as written by `pgolf run` (int8-baseline codes); (b) the same checkpoint
quantized with int6 SDClip RTN (q = clamp(round(W/s), -31, 31), s = 12.85·std(row)/31 in fp16, matrices > 65,536
elements; the rest kept as fp16 passthrough); (c) a synthetic 27M-parameter int6 state with the record-11l shapes
(pgolf.model.gpt.GPT, random-init weights through the same rule) for whole-artifact decode time.
Targets: rans weight-code bytes ≤ 1.005 × order-0 entropy and ≤ 0.96 × best of zstd-22/lzma-9/brotli-11; whole
artifact decode < 5 s on 2 cores at 27M parameters.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from pgolf.pack.budget import byte_report_totals, tensor_byte_report
from pgolf.pack.container import CODEC_IDS, decode_artifact, encode_artifact
from pgolf.quant.apply import QuantizedState
from pgolf.quant.primitives import QuantizedTensor


def int6_sdclip(weights: dict[str, torch.Tensor], k: float = 12.85, bits: int = 6) -> QuantizedState:
    m = 2 ** (bits - 1) - 1
    qs = QuantizedState()
    for name, w in weights.items():
        w = w.detach().float()
        qs.dtypes[name] = "float32"
        if w.ndim == 2 and w.numel() > 65_536:
            s = (k * w.std(dim=1) / m).clamp_min(1e-8).half()
            q = torch.clamp(torch.round(w / s.float()[:, None]), -m, m).to(torch.int8)
            qs.tensors[name] = QuantizedTensor(q=q, scale=s, bits=bits, method="rtn")
        else:
            qs.passthrough[name] = w.half()
            qs.dtypes[name] = "float16"
    return qs


def bench_state(label: str, qs: QuantizedState, codecs: list[str]) -> None:
    n = sum(t.q.numel() for t in qs.tensors.values())
    print(f"\n## {label}: {len(qs.tensors)} quantized tensors ({n:,} codes), {len(qs.passthrough)} passthrough")
    general = sorted({c.split("+")[0] for c in codecs if c != "rans"}, key=list(CODEC_IDS).index)
    rows = tensor_byte_report(qs, [*general, "rans"])
    tot = byte_report_totals(rows)
    h = tot["entropy_bytes"]
    print(f"weight codes, each tensor compressed alone: order-0 entropy {h:,.0f} bytes ({8 * h / max(n, 1):.3f} b/w)")
    print("| codec | code bytes | ÷ entropy |")
    print("|---|---|---|")
    for c, b in tot["bytes"].items():
        print(f"| {c} | {b:,} | {b / h:.4f} |")
    best = min(tot["bytes"][c] for c in ("zstd", "lzma", "brotli") if c in tot["bytes"])
    r = tot["bytes"]["rans"]
    print(f"targets: rans/entropy = {r / h:.4f} (≤ 1.005: {'PASS' if r <= 1.005 * h else 'FAIL'}); "
          f"rans/best(zstd,lzma,brotli) = {r / best:.4f} (≤ 0.96: {'PASS' if r <= 0.96 * best else 'FAIL'})")
    print("\nwhole artifact:")
    print("| codec | artifact bytes | ÷ rans | encode s | decode s |")
    print("|---|---|---|---|---|")
    results = {}
    for c in codecs:
        t0 = time.perf_counter()
        blob = encode_artifact(qs, {"bench": label}, c)
        t1 = time.perf_counter()
        decode_artifact(blob)
        t2 = time.perf_counter()
        results[c] = (len(blob), t1 - t0, t2 - t1)
    ref = results.get("rans", (1,))[0]
    for c, (b, te, td) in results.items():
        print(f"| {c} | {b:,} | {b / ref:.4f} | {te:.2f} | {td:.2f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--artifact", default="/tmp/runs/demo-a/model.pgolf")
    p.add_argument("--checkpoint", default="/tmp/runs/demo-a/checkpoint.pt")
    p.add_argument("--codecs", default=",".join(CODEC_IDS))
    p.add_argument("--skip-27m", action="store_true")
    args = p.parse_args()
    codecs = args.codecs.split(",")
    torch.set_num_threads(2)
    if Path(args.artifact).is_file():
        qs, _ = decode_artifact(Path(args.artifact).read_bytes())
        bench_state(f"(a) {args.artifact} (int8-baseline codes)", qs, codecs)
    if Path(args.checkpoint).is_file():
        from pgolf.train.checkpoint import load_checkpoint, trained_weights

        w = trained_weights(load_checkpoint(Path(args.checkpoint)))
        bench_state(f"(b) {args.checkpoint} → int6 SDClip RTN k=12.85", int6_sdclip(w), codecs)
    if not args.skip_27m:
        from pgolf.config import GPTConfig, load_preset
        from pgolf.model.gpt import GPT

        torch.manual_seed(0)
        model = GPT(GPTConfig(**load_preset("record-11l")["model"]))
        sd = {k: v.detach() for k, v in model.state_dict().items()}
        for k, v in sd.items():  # random-init zeros (proj layers) would be constant; give every matrix a spread
            if v.ndim == 2 and v.numel() > 65_536 and float(v.std()) == 0.0:
                sd[k] = torch.randn_like(v) * 0.02
        n = sum(v.numel() for v in sd.values())
        qs = int6_sdclip(sd)
        print(f"\n## (c) synthetic record-11l int6 state: {n:,} parameters")
        for c in ("rans", "brotli+shuffle"):
            blob = encode_artifact(qs, {}, c)
            times = []
            for _ in range(2):
                t0 = time.perf_counter()
                decode_artifact(blob)
                times.append(time.perf_counter() - t0)
            print(f"{c}: {len(blob):,} bytes; whole-artifact decode {min(times):.2f} s (best of 2; target < 5 s: "
                  f"{'PASS' if min(times) < 5 else 'FAIL'})")


if __name__ == "__main__":
    main()
