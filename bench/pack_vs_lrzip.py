"""pgolf's default codec (rans-ctx) ÷ R0427's per-group lrzip on int6 codes, per role group and in total.

    python bench/pack_vs_lrzip.py [--checkpoint /tmp/runs/demo/checkpoint.pt] [--checkpoint-8m /tmp/runs/d384/...]
                                  [--skip-sp8192] [--skip-36m]

(also run by bench/pack.py). States: (a) a cpu-demo checkpoint and (b) an ~8M-parameter checkpoint (6 layers, d384),
each through int6 SDClip RTN k=12.85 (bench/pack.py's rule); (c) a synthetic sp8192-shaped tok_emb (8192 × 512,
see sp8192_tok_emb); (d) a synthetic sota-sp8192-shaped artifact (36M parameters, random-init matrices with (c) as
its tok_emb) for whole-artifact encode/decode time. R0427's bytes per group: `lrzip -z -L 9` of the transposed,
similarity-sorted group plus its brotli'd uint16 permutations (pgolf.pack.lrzip). pgolf's bytes per group: the sum
of its tensors' rans-ctx streams (encode_codes(model="best")). Targets: total ≤ 0.98 ×, every group ≤ 1.00 ×.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pack import int6_sdclip, mode_name  # noqa: E402

from pgolf.pack.entropy import decode_codes, encode_codes, order0_entropy_bytes  # noqa: E402
from pgolf.pack.lrzip import code_groups, group_layout, lrzip_compress, lrzip_path  # noqa: E402


def compare_groups(label: str, codes: dict[str, np.ndarray]) -> tuple[int, int]:
    """Print the per-group table; returns (pgolf bytes, R0427 bytes) over all groups."""
    print(f"\n## {label}")
    print("| group | tensors | codes | order-0 entropy | R0427 lrzip (+ perms) | pgolf rans-ctx | modes | ÷ lrzip |")
    print("|---|---|---|---|---|---|---|---|")
    tot_p = tot_l = 0
    tot_h = 0.0
    t_enc = t_dec = t_lrz = 0.0
    for g in code_groups(codes):
        raw, side = group_layout(codes, g)
        t0 = time.perf_counter()
        lrz = len(lrzip_compress(raw)) + len(side)
        t1 = time.perf_counter()
        ours, modes = 0, Counter()
        for n in g.names:
            blob = encode_codes(codes[n], model="best")
            t2 = time.perf_counter()
            assert np.array_equal(decode_codes(blob), codes[n])
            t_dec += time.perf_counter() - t2
            ours += len(blob)
            modes[mode_name(blob)] += 1
        t_enc += time.perf_counter() - t1
        t_lrz += t1 - t0
        h = sum(order0_entropy_bytes(codes[n]) for n in g.names)
        n_codes = sum(codes[n].size for n in g.names)
        mark = "" if ours <= lrz else " **over**"
        print(f"| {g.role} | {len(g.names)} | {n_codes:,} | {h:,.0f} | {lrz:,} (+{len(side):,}) | {ours:,} | "
              f"{dict(modes)} | {ours / lrz:.4f}{mark} |")
        tot_p, tot_l, tot_h = tot_p + ours, tot_l + lrz, tot_h + h
    print(f"| total | | | {tot_h:,.0f} | {tot_l:,} | {tot_p:,} | | **{tot_p / tot_l:.4f}** |")
    print(f"seconds: lrzip {t_lrz:.1f}, rans-ctx encode+check {t_enc:.1f} (of which decode {t_dec:.2f})")
    return tot_p, tot_l


def sp8192_tok_emb(seed: int = 0, rows: int = 8192, cols: int = 512, rare: int = 600) -> np.ndarray:
    """Synthetic float tok_emb shaped like the SOTA's (8192 × 512), built to have the two kinds of rows a trained
    tied embedding has: `rows - rare` trained rows = a shared column offset (the mean embedding, N(0, 0.4²)) + a
    rank-32 semantic part (so that similar tokens have correlated rows) + 0.7 × i.i.d. noise; and `rare` barely
    trained rows (byte-fallback / unseen tokens) = one common vector (the shared push-down gradient) + 0.15 × their
    i.i.d. init. Rare rows are scattered over the vocabulary. Not a measurement of a real checkpoint."""
    g = np.random.default_rng(seed)
    offset = g.normal(0, 0.4, cols)
    semantic = g.normal(0, 1, (rows, 32)) @ (g.normal(0, 1, (32, cols)) / np.sqrt(32))
    w = offset + semantic + 0.7 * g.normal(0, 1, (rows, cols))
    idx = g.choice(rows, rare, replace=False)
    w[idx] = g.normal(0, 1, cols) + 0.15 * g.normal(0, 1, (rare, cols))
    return w.astype(np.float32)


def codes_of(path: Path) -> dict[str, np.ndarray]:
    from pgolf.train.checkpoint import load_checkpoint, trained_weights

    qs = int6_sdclip(trained_weights(load_checkpoint(path)))
    return {n: t.q.numpy() for n, t in qs.tensors.items()}


def sota_36m_state(tok_emb: torch.Tensor) -> dict[str, torch.Tensor]:
    """The sota-sp8192 preset's GPT state (random init; zero-initialised matrices redrawn at std 0.02), tok_emb
    replaced."""
    from pgolf.config import GPTConfig, load_preset
    from pgolf.model.gpt import GPT

    torch.manual_seed(0)
    model = GPT(GPTConfig(**load_preset("sota-sp8192")["model"]))
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    for k, v in sd.items():
        if v.ndim == 2 and v.numel() > 65_536 and float(v.std()) == 0.0:
            sd[k] = torch.randn_like(v) * 0.02
    sd["tok_emb.weight"] = tok_emb
    return sd


def sota_36m(tok_emb: torch.Tensor) -> None:
    """Whole-artifact rans-ctx encode and decode time at the sota-sp8192 shapes, tok_emb from sp8192_tok_emb."""
    from pgolf.pack.container import decode_artifact, encode_artifact

    sd = sota_36m_state(tok_emb)
    qs = int6_sdclip(sd)
    n = sum(v.numel() for v in sd.values())
    t0, c0 = time.perf_counter(), time.process_time()
    blob = encode_artifact(qs, {}, "rans-ctx")
    t_enc, c_enc = time.perf_counter() - t0, time.process_time() - c0
    wall, cpu = [], []
    for _ in range(3):
        t0, c0 = time.perf_counter(), time.process_time()
        decode_artifact(blob)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    dec, dec_cpu = sorted(wall)[1], sorted(cpu)[1]
    from pack import stream_modes

    print(f"\n## (d) synthetic sota-sp8192 state, {n:,} parameters, tok_emb from (c): rans-ctx artifact "
          f"{len(blob):,} bytes, stream modes {stream_modes(blob)}; encode {t_enc:.1f} s wall, {c_enc:.1f} s CPU "
          f"(target ≤ 180: {'PASS' if t_enc <= 180 else 'FAIL'}); decode median of 3: {dec:.2f} s wall, "
          f"{dec_cpu:.2f} s CPU "
          f"(target ≤ 5: {'PASS' if dec <= 5 else 'FAIL'}); torch threads {torch.get_num_threads()}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", default="/tmp/runs/demo/checkpoint.pt", help="(a) a cpu-demo checkpoint")
    p.add_argument("--checkpoint-8m", default="/tmp/runs/d384/checkpoint.pt", help="(b) a 6-layer d384 checkpoint")
    p.add_argument("--skip-sp8192", action="store_true")
    p.add_argument("--skip-36m", action="store_true")
    args = p.parse_args(argv)
    if lrzip_path() is None:
        print("lrzip is not on PATH (apt-get install lrzip): no R0427 comparison")
        return
    torch.set_num_threads(2)
    totals = {}
    for key, label, path in (("a", "cpu-demo", args.checkpoint), ("b", "6 layers d384", args.checkpoint_8m)):
        if Path(path).is_file():
            totals[key] = compare_groups(f"({key}) {label}: {path} → int6 SDClip k=12.85", codes_of(Path(path)))
    tok = None
    if not args.skip_sp8192:
        tok = torch.from_numpy(sp8192_tok_emb())
        qs = int6_sdclip({"tok_emb.weight": tok})
        totals["c"] = compare_groups("(c) synthetic sp8192 tok_emb 8192×512 (600 barely-trained rows) → int6 SDClip",
                                     {"tok_emb.weight": qs.tensors["tok_emb.weight"].q.numpy()})
    for k, (ours, lrz) in totals.items():
        verdict = "PASS" if ours <= 0.98 * lrz else "FAIL"
        print(f"({k}) total {ours:,} ÷ {lrz:,} = {ours / lrz:.4f} (target ≤ 0.98: {verdict})")
    if not args.skip_36m:
        sota_36m(tok if tok is not None else torch.from_numpy(sp8192_tok_emb()))


if __name__ == "__main__":
    main()
