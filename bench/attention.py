"""Attention kernels on one shape: the document-isolated (model/documents.py) and plain causal paths, timed.

    python bench/attention.py                                   # CPU: SDPA + mask vs flex attention, forward only
    python bench/attention.py --device cuda --backward          # CUDA: + torch varlen_attn, forward + backward

Variants (each where it can run): `sdpa-mask` (SDPA with the (B, 1, T, T) block-diagonal mask: pgolf's CPU path and
the `sdpa` backend), `sdpa-causal` (no document isolation, the lower bound), `flex` (torch.compile'd flex_attention
with a document block mask, built per call as a forward would), `varlen` (torch.nn.attention.varlen.varlen_attn over
bucketed cu_seqlens: pgolf's CUDA default). Inputs: random q/k/v, GQA, BOS with probability 1/doc_len. Variants
alternate inside every repeat; the table gives medians, and the max |Δ| of each output against sdpa-mask. Flex
attention has no CPU backward in torch 2.13 (NotImplementedError), so on CPU it can only serve evaluation.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from pgolf.model.documents import (VARLEN_BUCKET, document_causal_mask, document_cu_seqlens, document_starts,
                                   varlen_available)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--kv-heads", type=int, default=4)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--doc-len", type=int, default=200, help="mean document length (BOS probability 1/doc_len)")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--backward", action="store_true", help="time forward + backward (not on CPU flex)")
    args = p.parse_args()
    dev = torch.device(args.device)
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    B, T, H, Hkv, D = args.batch, args.seq_len, args.heads, args.kv_heads, args.head_dim
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(2, 1000, (B, T), generator=g)
    idx[torch.rand(B, T, generator=g) < 1 / args.doc_len] = 1
    idx = idx.to(dev)
    q0, k0, v0 = (torch.randn(B, T, h, D, generator=g).to(dev, dtype) for h in (H, Hkv, Hkv))

    def inputs():
        return [t.clone().requires_grad_(args.backward) for t in (q0, k0, v0)]

    def sdpa_mask():
        q, k, v = inputs()
        y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2).repeat_interleave(H // Hkv, 1),
                                           v.transpose(1, 2).repeat_interleave(H // Hkv, 1),
                                           attn_mask=document_causal_mask(idx, 1)).transpose(1, 2)
        return y, (q, k, v)

    def sdpa_causal():
        q, k, v = inputs()
        y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True,
                                           enable_gqa=True).transpose(1, 2)
        return y, (q, k, v)

    variants = {"sdpa-mask": sdpa_mask, "sdpa-causal": sdpa_causal}
    if not (args.backward and dev.type == "cpu"):
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention

        flex = torch.compile(flex_attention)

        def flex_doc():
            q, k, v = inputs()
            starts = document_starts(idx, 1)
            bm = create_block_mask(lambda b, h, qi, ki: (ki <= qi) & (ki >= starts[b, qi]), B, None, T, T,
                                   device=dev.type)
            y = flex(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), block_mask=bm,
                     enable_gqa=True).transpose(1, 2)
            return y, (q, k, v)

        variants["flex"] = flex_doc
    if varlen_available(dev):
        from torch.nn.attention.varlen import varlen_attn

        def varlen():
            q, k, v = inputs()
            cu, mx = document_cu_seqlens(idx, 1, bucket=VARLEN_BUCKET)
            y = varlen_attn(q.reshape(B * T, H, D), k.reshape(B * T, Hkv, D), v.reshape(B * T, Hkv, D), cu, cu, mx, mx,
                            window_size=(-1, 0), enable_gqa=True).reshape(B, T, H, D)
            return y, (q, k, v)

        variants["varlen"] = varlen

    def run(fn):
        y, leaves = fn()
        if args.backward:
            y.float().sum().backward()
        return y.detach().float()

    ref = run(sdpa_mask)
    diff, first = {}, {}
    for name, fn in variants.items():  # warm-up (compiles flex)
        t0 = time.perf_counter()
        diff[name] = float((run(fn) - ref).abs().max()) if name != "sdpa-causal" else float("nan")
        first[name] = time.perf_counter() - t0
    times: dict[str, list[float]] = {n: [] for n in variants}
    for _ in range(args.repeats):
        for name, fn in variants.items():
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            run(fn)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - t0)
    docs = int((idx == 1).sum()) + B
    print(f"device {dev}, dtype {dtype}, B={B} T={T} H={H} Hkv={Hkv} D={D}, {docs} segments, "
          f"{'forward+backward' if args.backward else 'forward'}, {args.repeats} repeats, threads "
          f"{torch.get_num_threads()}")
    print("| variant | median ms | min ms | first call s | max abs diff vs sdpa-mask |")
    print("|---|---|---|---|---|")
    for name in variants:
        t = times[name]
        print(f"| {name} | {1000 * statistics.median(t):.1f} | {1000 * min(t):.1f} | {first[name]:.2f} | "
              f"{diff[name]:.2e} |")


if __name__ == "__main__":
    main()
