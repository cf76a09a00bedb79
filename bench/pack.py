"""Artifact codecs on real weights: bytes per codec vs order-0 entropy, encode/decode seconds, 27M decode time.

    python bench/pack.py [--artifact /tmp/runs/demo/model.pgolf] [--checkpoint /tmp/runs/demo/checkpoint.pt]
                         [--skip-27m] [--skip-layouts] [--codecs zlib,zstd,...]

States measured: (a) the artifact as written by `pgolf run` (int8-baseline codes); (b) the same checkpoint
quantized with int6 SDClip RTN (q = clamp(round(W/s), -31, 31), s = 12.85·std(row)/31 in fp16, matrices > 65,536
elements; the rest kept as fp16 passthrough); (c) a synthetic 27M-parameter int6 state with the record-11l shapes
(pgolf.model.gpt.GPT, random-init weights through the same rule) for whole-artifact decode time, and (d) the same
shapes with log-normal column spreads, so that every code tensor takes the context mode (its decode time).
Per state: the weight codes with each tensor compressed alone (rans = order-0 rANS, rans-ctx = per tensor the
smallest of order-0 rANS, row/column context rANS and brotli-11 of the row- or column-major codes); the records'
general-codec layouts of the same codes (transposed, role-grouped, rows similarity-sorted as R0427;
pgolf.pack.layouts); whole artifacts per codec.
Targets: default codec's weight-code bytes ≤ 1.005 × order-0 entropy and ≤ 0.96 × best of zstd-22/lzma-9/brotli-11;
whole artifact decode < 5 s on 2 cores at 27M parameters.
"""

from __future__ import annotations

import argparse
import json
import struct
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from pgolf.pack.budget import byte_report_totals, tensor_byte_report
from pgolf.pack.codecs import compress, decompress
from pgolf.pack.container import CODEC_IDS, ENTROPY_CODECS, MAGIC, RANS_INNER, decode_artifact, encode_artifact
from pgolf.pack.entropy import decode_codes, encode_codes
from pgolf.pack.layouts import arrange, restore
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


MODE_NAMES = {2: "order0", 3: "order0", 4: "raw", 5: "context", 6: "brotli", 7: "brotli-T"}


def mode_name(stream: bytes) -> str:
    """The entropy.py mode of a code stream (version-2 streams are the adaptive mode)."""
    return "adaptive" if stream[0] >> 5 == 2 else MODE_NAMES.get((stream[0] >> 2) & 7, "trivial")

LAYOUTS = {  # name: arrange() flags
    "per tensor, row-major": {},
    "per tensor, transposed": {"transpose": True},
    "role groups, row-major": {"group": True},
    "role groups, transposed": {"group": True, "transpose": True},
    "per tensor, simsort rows": {"simsort": True},
    "role groups, simsort + transposed (R0427)": {"group": True, "transpose": True, "simsort": True},
}


def bench_codes(qs: QuantizedState, general: list[str]) -> dict[str, int]:
    """Per-tensor table (each tensor compressed alone) for the general codecs, rans and rans-ctx; returns totals."""
    rows = tensor_byte_report(qs, [*general, "rans"])
    n = sum(r["numel"] for r in rows)
    modes: Counter = Counter()
    t_enc = t_dec = 0.0
    for r, qt in zip(rows, qs.tensors.values()):
        arr = qt.q.detach().cpu().numpy()
        t0 = time.perf_counter()
        blob = encode_codes(arr, model="best")
        t1 = time.perf_counter()
        assert np.array_equal(decode_codes(blob), arr)
        t_enc, t_dec = t_enc + t1 - t0, t_dec + time.perf_counter() - t1
        r["bytes"]["rans-ctx"] = len(blob)
        modes[mode_name(blob)] += 1
    tot = byte_report_totals(rows)
    h = tot["entropy_bytes"]
    print(f"weight codes, each tensor compressed alone: order-0 entropy {h:,.0f} bytes ({8 * h / max(n, 1):.3f} b/w)")
    print("| codec | code bytes | ÷ entropy |")
    print("|---|---|---|")
    for c, b in tot["bytes"].items():
        print(f"| {c} | {b:,} | {b / h:.4f} |")
    print(f"rans-ctx per-tensor choice: {dict(modes)}; encode {t_enc:.2f} s, decode {t_dec:.2f} s")
    print("per tensor (bytes ÷ order-0 entropy):")
    print("| tensor | shape | entropy | " + " | ".join(tot["bytes"]) + " |")
    print("|---|---|---|" + "---|" * len(tot["bytes"]))
    for r in rows:
        e = r["entropy_bytes"]
        cells = " | ".join(f"{b / e:.4f}" if e else "-" for b in r["bytes"].values())
        print(f"| {r['name']} | {'x'.join(map(str, r['shape']))} | {e:,.0f} | {cells} |")
    return {**tot["bytes"], "entropy": h}


def bench_layouts(qs: QuantizedState, general: list[str]) -> dict[str, int]:
    """The records' layouts of all code tensors with each general codec; permutations (uint16, brotli'd) counted."""
    codes = {n: qt.q.detach().cpu().numpy() for n, qt in qs.tensors.items()}
    shapes = {n: a.shape for n, a in codes.items()}
    print("\ngeneral codecs on the records' code layouts (all code tensors; bytes incl. stored permutations):")
    print("| layout | " + " | ".join(general) + " |")
    print("|---|" + "---|" * len(general))
    best: dict[str, int] = {}
    for name, flags in LAYOUTS.items():
        t0 = time.perf_counter()
        blobs, perms = arrange(codes, **flags)
        sort_s = time.perf_counter() - t0
        back = restore(blobs, perms, shapes, transpose=flags.get("transpose", False), group=flags.get("group", False))
        assert all(np.array_equal(back[n], a) for n, a in codes.items())
        side = sum(len(compress(p.astype("<u2").tobytes(), "brotli")) for p in perms.values())
        sizes = {c: sum(len(compress(b, c)) for b in blobs if b) + side for c in general}
        for c, v in sizes.items():
            best[c] = min(best.get(c, v), v)
        note = f" (sort {sort_s:.1f} s, perms {side:,} B)" if perms else ""
        print(f"| {name}{note} | " + " | ".join(f"{v:,}" for v in sizes.values()) + " |")
    return best


def bench_state(label: str, qs: QuantizedState, codecs: list[str], layouts: bool = True) -> None:
    n = sum(t.q.numel() for t in qs.tensors.values())
    print(f"\n## {label}: {len(qs.tensors)} quantized tensors ({n:,} codes), {len(qs.passthrough)} passthrough")
    general = [c for c in ("zlib", "zstd", "lzma", "brotli") if any(x.split("+")[0] == c for x in codecs)]
    tot = bench_codes(qs, general)
    h = tot["entropy"]
    refs = {"per tensor": min(tot[c] for c in ("zstd", "lzma", "brotli") if c in tot)}
    if layouts:
        best = bench_layouts(qs, [c for c in general if c != "zlib"])
        refs["best layout"] = min(best[c] for c in ("zstd", "lzma", "brotli") if c in best)
    for c in ("rans", "rans-ctx"):
        r = tot[c]
        line = f"targets {c}: ÷ entropy = {r / h:.4f} (≤ 1.005: {'PASS' if r <= 1.005 * h else 'FAIL'})"
        for k, ref in refs.items():
            line += f"; ÷ best of zstd/lzma/brotli ({k}, {ref:,}) = {r / ref:.4f} ({'PASS' if r <= 0.96 * ref else 'FAIL'})"
        print(line)
    print("\nwhole artifact:")
    print("| codec | artifact bytes | ÷ rans-ctx | encode s | decode s |")
    print("|---|---|---|---|---|")
    results = {}
    for c in codecs:
        t0 = time.perf_counter()
        blob = encode_artifact(qs, {"bench": label}, c)
        t1 = time.perf_counter()
        decode_artifact(blob)
        t2 = time.perf_counter()
        results[c] = (len(blob), t1 - t0, t2 - t1)
    ref = results.get("rans-ctx", results.get("rans", (1,)))[0]
    for c, (b, te, td) in results.items():
        print(f"| {c} | {b:,} | {b / ref:.4f} | {te:.2f} | {td:.2f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--artifact", default="/tmp/runs/demo/model.pgolf")
    p.add_argument("--checkpoint", default="/tmp/runs/demo/checkpoint.pt")
    p.add_argument("--codecs", default=",".join(CODEC_IDS))
    p.add_argument("--skip-27m", action="store_true")
    p.add_argument("--skip-layouts", action="store_true", help="skip the general-codec layout table")
    p.add_argument("--skip-lrzip", action="store_true", help="skip rans-ctx ÷ R0427's per-group lrzip "
                   "(bench/pack_vs_lrzip.py, run with its defaults)")
    args = p.parse_args()
    codecs = args.codecs.split(",")
    torch.set_num_threads(2)
    if Path(args.artifact).is_file():
        qs, _ = decode_artifact(Path(args.artifact).read_bytes())
        bench_state(f"(a) {args.artifact} (int8-baseline codes)", qs, codecs, not args.skip_layouts)
    if Path(args.checkpoint).is_file():
        from pgolf.train.checkpoint import load_checkpoint, trained_weights

        w = trained_weights(load_checkpoint(Path(args.checkpoint)))
        bench_state(f"(b) {args.checkpoint} → int6 SDClip RTN k=12.85", int6_sdclip(w), codecs, not args.skip_layouts)
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
        print(f"\n## (c) synthetic record-11l int6 state: {n:,} parameters (i.i.d. rows)")
        bench_27m(int6_sdclip(sd), codecs)
        g = torch.Generator().manual_seed(1)
        for k, v in sd.items():  # trained-like column spreads (log-normal, σ 0.5): every tensor takes context mode
            if v.ndim == 2 and v.numel() > 65_536:
                sd[k] = torch.randn(v.shape, generator=g) * torch.exp(0.5 * torch.randn(v.shape[1], generator=g))[None]
        print("\n## (d) the same shapes with log-normal column spreads (context mode in every code tensor)")
        bench_27m(int6_sdclip(sd), codecs)
    if not args.skip_lrzip:
        import pack_vs_lrzip

        pack_vs_lrzip.main([])


def stream_modes(blob: bytes) -> dict[str, int]:
    """How many code streams of a rans/rans-ctx artifact use each entropy.py mode (read from the stream bytes)."""
    pos = len(MAGIC) + 2
    (n,) = struct.unpack_from("<I", blob, pos + 1)
    body = decompress(blob[pos + 5 : pos + 5 + n], RANS_INNER.split("+")[0])
    (hlen,) = struct.unpack_from("<I", body, 0)
    p, modes = pos + 5 + n, Counter()
    for m in json.loads(body[4 : 4 + hlen])["code_streams"]:
        modes[mode_name(blob[p : p + 1])] += 1
        p += m
    return dict(modes)


def bench_27m(qs: QuantizedState, codecs: list[str]) -> None:
    for c in [x for x in ("brotli+shuffle", *ENTROPY_CODECS) if x in codecs]:
        t0 = time.perf_counter()
        blob = encode_artifact(qs, {}, c)
        t_enc = time.perf_counter() - t0
        times = []
        for _ in range(2):
            t0 = time.perf_counter()
            decode_artifact(blob)
            times.append(time.perf_counter() - t0)
        modes = f" stream modes {stream_modes(blob)}" if c in ENTROPY_CODECS else ""
        print(f"{c}: {len(blob):,} bytes, encode {t_enc:.1f} s; whole-artifact decode {min(times):.2f} s (best of 2; "
              f"target < 5 s: {'PASS' if min(times) < 5 else 'FAIL'}){modes}")

if __name__ == "__main__":
    main()
