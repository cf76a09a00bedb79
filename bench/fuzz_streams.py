"""Fuzz pgolf.pack.entropy's stream decoder on every rans-ctx stream mode, the adaptive mode (split and unsplit
bodies) included: each outcome must be a decoded array within the size limit or an EntropyDecodeError.

    python bench/fuzz_streams.py [-n 10000] [--seed 0]

Streams: the embedding-like int6 matrix of tests/pack/test_adaptive.py (320 × 48: adaptive, split body), the same
forced unsplit, a column-spread matrix (context mode), row-repeated codes (brotli), i.i.d. codes (order-0). Mutants as
bench/fuzz_artifact.py: byte flips (anywhere / in the first 32 bytes), truncation, insertion, deletion, overwrite,
splice with another stream. Any other exception is a crash (exit 1). Prints counts per stream and the max-RSS growth.
"""

from __future__ import annotations

import argparse
import random
import resource
import sys
import time
import traceback
from collections import Counter
from pathlib import Path

import numpy as np

from byte_mutations import mutate_bytes  # bench/ (this script's folder) is on sys.path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pgolf.pack import adaptive as ad  # noqa: E402
from pgolf.pack.entropy import EntropyDecodeError, decode_codes, encode_codes  # noqa: E402
from tests.pack.test_adaptive import EMB, _forge  # noqa: E402


def streams() -> dict[str, bytes]:
    g = np.random.default_rng(0)
    lo, span = int(EMB.min()), int(EMB.max()) - int(EMB.min())
    unsplit = _forge(b"\x00" + ad.encode_rows(EMB.astype(np.int64) - lo, lo, span), lo=lo, span=span, shape=EMB.shape)
    spread = np.clip(np.round(g.normal(0, 1, (256, 64)) * np.exp(g.normal(0, 0.7, 64))), -31, 31).astype(np.int8)
    rep = np.repeat(g.integers(-5, 6, (1, 256)), 48, 0).astype(np.int8)
    out = {"adaptive split": encode_codes(EMB, model="best"), "adaptive unsplit": unsplit,
           "context": encode_codes(spread, model="context"), "brotli": encode_codes(rep, model="best"),
           "order0": encode_codes(g.integers(-20, 21, (64, 64)).astype(np.int8))}
    for name, blob in out.items():
        assert decode_codes(blob).size > 0, name
    return out


def mutate(blob: bytes, rng: random.Random, others: list[bytes]) -> tuple[str, bytes]:
    return mutate_bytes(blob, rng, others, head=32)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("-n", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    blobs = streams()
    names = list(blobs)
    rng = random.Random(args.seed)
    counts: Counter = Counter()
    crashes = []
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    for k in range(args.n):
        name = names[k % len(names)]
        limit = decode_codes(blobs[name]).size
        op, m = mutate(blobs[name], rng, list(blobs.values()))
        try:
            y = decode_codes(m, max_symbols=limit)
            outcome = "decoded" if y.size <= limit else "CRASH"
        except EntropyDecodeError:
            outcome = "EntropyDecodeError"
        except Exception as e:  # noqa: BLE001 - this is what we count
            outcome = "CRASH"
            if len(crashes) < 5:
                crashes.append((name, op, f"{type(e).__name__}: {e}", traceback.format_exc(limit=4)))
        counts[name, outcome] += 1
    secs = time.perf_counter() - t0
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"{args.n:,} mutants, {secs:.1f} s; max RSS growth {(rss1 - rss0) / 1024:.1f} MiB")
    print("| stream | bytes | decoded | EntropyDecodeError | crash |")
    print("|---|---|---|---|---|")
    for n in names:
        print(f"| {n} | {len(blobs[n]):,} | {counts[n, 'decoded']} | {counts[n, 'EntropyDecodeError']} | "
              f"{counts[n, 'CRASH']} |")
    for n, op, msg, tb in crashes:
        print(f"\nCRASH {n} {op}: {msg}\n{tb}")
    return 1 if crashes else 0


if __name__ == "__main__":
    raise SystemExit(main())
