"""rans-ctx encode time, and what its brotli-11 gate (pgolf.pack.entropy_modes._brotli_may_win) costs in bytes:
every code tensor encoded with the gate and without it (every brotli trial run, the encoder before the gate),
alternating per tensor in one process, CPU seconds per variant.

    python bench/pack_encode_time.py [--checkpoint /tmp/runs/demo/checkpoint.pt ...] [--skip-36m]

States: each --checkpoint through int6 SDClip k=12.85 (bench/pack.py's rule), and the synthetic sota-sp8192 state of
bench/pack_vs_lrzip.py (36M parameters, tok_emb = sp8192_tok_emb). Prints per state: tensors, bytes with / without
the gate, tensors whose stream differs, CPU seconds with / without; exit status 1 if the gate ever costs bytes.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pack import int6_sdclip  # noqa: E402
from pack_vs_lrzip import codes_of, sota_36m_state, sp8192_tok_emb  # noqa: E402

from pgolf.pack import entropy  # noqa: E402


def compare(label: str, codes: dict) -> bool:
    gated = entropy._brotli_may_win
    size = {True: 0, False: 0}
    cpu = {True: 0.0, False: 0.0}
    differ = []
    for i, (name, q) in enumerate(codes.items()):
        out = {}
        for on in ((True, False) if i % 2 == 0 else (False, True)):  # alternate which variant runs first
            entropy._brotli_may_win = gated if on else (lambda *a: True)
            t = time.process_time()
            out[on] = entropy.encode_codes(q, model="best")
            cpu[on] += time.process_time() - t
            size[on] += len(out[on])
        entropy._brotli_may_win = gated
        if out[True] != out[False]:
            differ.append(f"{name} {len(out[True]):,} vs {len(out[False]):,}")
    print(f"| {label} | {len(codes)} | {size[True]:,} | {size[False]:,} | {len(differ)} | {cpu[True]:.1f} | "
          f"{cpu[False]:.1f} |")
    for d in differ:
        print(f"|   differs: {d} | | | | | | |")
    return size[True] <= size[False]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", action="append", default=[])
    p.add_argument("--skip-36m", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(1)
    print("| state | code tensors | bytes, gate | bytes, every trial | streams that differ | CPU s, gate | "
          "CPU s, every trial |")
    print("|---|---|---|---|---|---|---|")
    ok = True
    for path in args.checkpoint:
        ok &= compare(path, codes_of(Path(path)))
    if not args.skip_36m:
        qs = int6_sdclip(sota_36m_state(torch.from_numpy(sp8192_tok_emb())))
        ok &= compare("synthetic sota-sp8192 (36M)", {n: t.q.numpy() for n, t in qs.tensors.items()})
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
