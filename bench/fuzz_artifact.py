"""Fuzz the artifact decoder with mutated real artifacts: every outcome must be a clean decode or an ArtifactError.

    python bench/fuzz_artifact.py [--artifact /tmp/runs/demo/model.pgolf] [-n 10000] [--max-codes 200000]
                                  [--codecs rans,rans-ctx]

The artifact's state is trimmed (its first tensors up to --max-codes codes, all passthrough) so one decode takes
milliseconds, then re-encoded with every container codec; each mutant is one of: flip a byte (anywhere, or inside
the first 64 bytes where the prefix/header/stream lengths live), truncate, insert random bytes, delete a span,
overwrite a span with random bytes, or splice the tail of another codec's blob. Counts per codec and outcome, and the
process max-RSS growth, are printed; any other exception is a crash (the script exits 1). For rans-ctx the stream
mode each code tensor got (order-0 / context / brotli) is printed, so the mutants are known to reach every decoder.
"""

from __future__ import annotations

import argparse
import random
import resource
import time
import traceback
from collections import Counter
from pathlib import Path

from pgolf.pack.container import CODEC_IDS, ArtifactError, decode_artifact, encode_artifact
from pgolf.pack.entropy import encode_codes
from pgolf.quant.apply import QuantizedState, dequantize_state


def _trim(qs: QuantizedState, max_codes: int) -> QuantizedState:
    out = QuantizedState(passthrough=dict(qs.passthrough))
    n = 0
    for name, t in qs.tensors.items():
        if n + t.q.numel() > max_codes and out.tensors:
            continue
        out.tensors[name] = t
        n += t.q.numel()
    out.dtypes = {k: v for k, v in qs.dtypes.items() if k in out.tensors or k in out.passthrough}
    return out


def _mutate(blob: bytes, rng: random.Random, others: list[bytes]) -> tuple[str, bytes]:
    b = bytearray(blob)
    op = rng.choice(["flip", "flip_head", "truncate", "insert", "delete", "overwrite", "splice"])
    i = rng.randrange(len(b))
    if op == "flip":
        b[i] ^= rng.randrange(1, 256)
    elif op == "flip_head":
        b[rng.randrange(min(64, len(b)))] ^= 1 << rng.randrange(8)
    elif op == "truncate":
        del b[i:]
    elif op == "insert":
        b[i:i] = rng.randbytes(rng.randrange(1, 16))
    elif op == "delete":
        del b[i : i + rng.randrange(1, 64)]
    elif op == "overwrite":
        n = rng.randrange(1, 32)
        b[i : i + n] = rng.randbytes(n)
    else:
        o = rng.choice(others)
        b = b[:i] + o[rng.randrange(len(o)) :]
    return op, bytes(b)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--artifact", default="/tmp/runs/demo/model.pgolf")
    p.add_argument("--codecs", default=",".join(CODEC_IDS), help="container codecs to fuzz (default: all)")
    p.add_argument("-n", type=int, default=10_000, help="mutants in total (spread over the codecs)")
    p.add_argument("--max-codes", type=int, default=200_000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    qs, manifest = decode_artifact(Path(args.artifact).read_bytes())
    qs = _trim(qs, args.max_codes)
    blobs = {c: encode_artifact(qs, manifest, c) for c in args.codecs.split(",")}
    if "rans-ctx" in blobs:
        names = {2: "order0", 3: "order0", 4: "raw", 5: "context", 6: "brotli", 7: "brotli-T"}
        modes = Counter(names.get((encode_codes(t.q.numpy(), model="best")[0] >> 2) & 7, "trivial")
                        for t in qs.tensors.values())
        print(f"rans-ctx stream modes of the {len(qs.tensors)} code tensors: {dict(modes)}")
    rng = random.Random(args.seed)
    counts: Counter = Counter()
    ops: Counter = Counter()
    crashes = []
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    codecs = list(blobs)
    for k in range(args.n):
        codec = codecs[k % len(codecs)]
        op, mutant = _mutate(blobs[codec], rng, list(blobs.values()))
        try:
            out, _ = decode_artifact(mutant)
            dequantize_state(out)
            outcome = "decoded"
        except ArtifactError:
            outcome = "ArtifactError"
        except Exception as e:  # noqa: BLE001 - this is what we count
            outcome = "CRASH"
            if len(crashes) < 5:
                crashes.append((codec, op, f"{type(e).__name__}: {e}", traceback.format_exc(limit=3)))
        counts[codec, outcome] += 1
        ops[op, outcome] += 1
    secs = time.perf_counter() - t0
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"{args.n:,} mutants of {args.artifact} (trimmed to {sum(t.q.numel() for t in qs.tensors.values()):,} codes "
          f"+ {len(qs.passthrough)} passthrough), {secs:.1f} s")
    print("| codec | blob bytes | decoded | ArtifactError | crash |")
    print("|---|---|---|---|---|")
    for c in codecs:
        print(f"| {c} | {len(blobs[c]):,} | {counts[c, 'decoded']} | {counts[c, 'ArtifactError']} | "
              f"{counts[c, 'CRASH']} |")
    print(f"| total | | {sum(v for (c, o), v in counts.items() if o == 'decoded')} | "
          f"{sum(v for (c, o), v in counts.items() if o == 'ArtifactError')} | "
          f"{sum(v for (c, o), v in counts.items() if o == 'CRASH')} |")
    print("mutation ops: " + ", ".join(f"{op}={sum(v for (o2, _), v in ops.items() if o2 == op)}"
                                       for op in sorted({o for o, _ in ops})))
    print(f"max RSS: {rss0 / 1024:.0f} MiB before fuzzing → {rss1 / 1024:.0f} MiB after "
          f"(growth {(rss1 - rss0) / 1024:.1f} MiB)")
    for c, op, msg, tb in crashes:
        print(f"\nCRASH {c} {op}: {msg}\n{tb}")
    return 1 if crashes else 0


if __name__ == "__main__":
    raise SystemExit(main())
