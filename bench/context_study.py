"""Conditional entropy of real quantized codes under candidate contexts, side information counted.

    python bench/context_study.py [RUN_DIR]      # default /tmp/runs/demo (model.pgolf + checkpoint.pt)

For each 2-D code tensor of (1) the run's artifact (int8-baseline codes) and (2) its checkpoint through int6 SDClip
RTN k=12.85 (bench/pack.py's rule), prints code lengths as a ratio to the order-0 entropy H0 under: actual rANS and
brotli-11 (row- and column-major) bytes; per-row / per-column / row-scale-octile / previous-code / |previous| /
column- and row-importance / previous-row / most-similar-row contexts, each "static" (the empirical conditional
entropy plus every context's histogram table as entropy.py would store it, plus bucket ids) and "adapt" (the exact
code length of learn-as-you-go Dirichlet-multinomial counts per context, prior = the tensor's order-0 histogram
with the best of six strengths: no side info beyond that, order-independent); and the row × column cluster contexts
of pgolf.pack.context for each grid point (ids and tables as really encoded). The totals close each section.
This is the study behind the rans-ctx codec (BENCHMARKS.md "Packing"); it takes ~1-2 minutes on 2 cores.
"""
import math
import sys
from pathlib import Path

import brotli
import numpy as np
from scipy.special import gammaln

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pack import int6_sdclip  # noqa: E402
from pgolf.pack.container import decode_artifact  # noqa: E402
from pgolf.pack.entropy import encode_codes  # noqa: E402
from pgolf.train.checkpoint import load_checkpoint, trained_weights  # noqa: E402

LN2 = math.log(2)

def H_counts(c):
    c = c[c > 0].astype(np.float64); n = c.sum()
    return float(np.sum(c * (np.log2(n) - np.log2(c))))

def cond_static(x, ctx):
    """sum over contexts of n_c H_c (bits), no side info; plus #contexts."""
    K = x.max() - x.min() + 1
    xi = x - x.min()
    u, inv = np.unique(ctx, return_inverse=True)
    M = np.zeros((len(u), K), np.int64)
    np.add.at(M, (inv, xi), 1)
    return sum(H_counts(r) for r in M), M

def adaptive_bits(M, prior, alpha):
    """Dirichlet-multinomial code length (bits) of counts M (ctx x K) under prior alpha*prior (sequential KT-like, order-free)."""
    a = alpha * prior[None, :]
    A = a.sum(1)
    N = M.sum(1)
    ll = gammaln(A) - gammaln(N + A) + np.sum(gammaln(M + a) - gammaln(a), axis=1)
    return float(-ll.sum() / LN2)

def best_adaptive(M, g):
    prior = (g + 0.5) / (g + 0.5).sum()
    return min((adaptive_bits(M, prior, al), al) for al in (0.5, 2, 8, 32, 128, 512))

def table_bits(M):
    # honest static side-info: each context's histogram as varints of counts (like entropy.py COUNTS mode), approx
    b = 0
    for r in M:
        nz = r[r > 0]
        b += 8 * sum(max(1, (int(v).bit_length() + 6) // 7) for v in nz) + 8 * (len(r) - len(nz)) // 4
    return b

def study(name, q, scale):
    q = q.astype(np.int16)
    R, C = q.shape
    n = q.size
    x = q.reshape(-1)
    g = np.bincount(x - x.min())
    h0 = H_counts(g)
    res = {"order0": h0}
    res["rans_bytes*8"] = 8 * len(encode_codes(q.astype(np.int8)))
    res["brotli*8"] = 8 * len(brotli.compress(q.astype(np.int8).tobytes(), quality=11))
    res["brotliT*8"] = 8 * len(brotli.compress(np.ascontiguousarray(q.T).astype(np.int8).tobytes(), quality=11))
    rows = np.repeat(np.arange(R), C); cols = np.tile(np.arange(C), R)
    def both(label, ctx, side_bits_static=None):
        hs, M = cond_static(x, ctx)
        ab, al = best_adaptive(M, g)
        res[label + " static"] = hs + (table_bits(M) if side_bits_static is None else side_bits_static)
        res[label + " adapt"] = ab
    both("row", rows)
    both("col", cols)
    # row-scale bucket (scales known to decoder)
    s = scale.astype(np.float64)
    rb = np.searchsorted(np.quantile(s, [0.125*i for i in range(1, 8)]), s)
    both("scale8", rb[rows])
    # previous code in row
    prev = np.concatenate([np.full((R, 1), 0, np.int16), q[:, :-1]], 1).reshape(-1)
    both("prev", prev)
    pa = np.minimum(np.abs(prev), 7)
    both("|prev|<=7", pa)
    # two previous |.|
    prev2 = np.concatenate([np.full((R, 2), 0, np.int16), q[:, :-2]], 1).reshape(-1)
    both("|p1|+|p2| b", np.minimum(np.abs(prev) + np.abs(prev2), 15))
    # column importance bucket: column mean |q| known via side info (bucket id per column, 3 bits each)
    cm = np.abs(q).mean(0)
    for nb in (4, 8, 16):
        cb = np.searchsorted(np.quantile(cm, np.linspace(0, 1, nb + 1)[1:-1]), cm)
        hs, M = cond_static(x, cb[cols])
        side = C * math.log2(nb)
        ab, al = best_adaptive(M, g)
        res[f"colbucket{nb} static"] = hs + table_bits(M) + side
        res[f"colbucket{nb} adapt"] = ab + side
    # row importance bucket (row mean |q|)
    rm = np.abs(q).mean(1)
    for nb in (4, 8):
        b_ = np.searchsorted(np.quantile(rm, np.linspace(0, 1, nb + 1)[1:-1]), rm)
        hs, M = cond_static(x, b_[rows]); ab, al = best_adaptive(M, g)
        res[f"rowbucket{nb} static"] = hs + table_bits(M) + R * math.log2(nb)
        res[f"rowbucket{nb} adapt"] = ab + R * math.log2(nb)
    # combined col bucket x row bucket
    cb8 = np.searchsorted(np.quantile(cm, np.linspace(0, 1, 9)[1:-1]), cm)
    rb4 = np.searchsorted(np.quantile(rm, np.linspace(0, 1, 5)[1:-1]), rm)
    hs, M = cond_static(x, cb8[cols] * 4 + rb4[rows]); ab, _ = best_adaptive(M, g)
    res["col8xrow4 adapt"] = ab + C * 3 + R * 2
    # col8 x |prev|
    hs, M = cond_static(x, cb8[cols] * 8 + pa); ab, _ = best_adaptive(M, g)
    res["col8x|prev| adapt"] = ab + C * 3
    # same column previous row
    up = np.concatenate([np.zeros((1, C), np.int16), q[:-1]], 0).reshape(-1)
    both("up", up)
    # nearest (L1) previously-coded row as reference; side info log2(R) per row
    if R <= 4096:
        qf = q.astype(np.float32)
        ref = np.zeros_like(q)
        for i in range(1, R):
            d = np.abs(qf[:i] - qf[i]).sum(1)
            ref[i] = q[int(d.argmin())]
        ctx = ref.reshape(-1)
        hs, M = cond_static(x, ctx); ab, _ = best_adaptive(M, g)
        res["nnrow adapt"] = ab + R * math.log2(max(R, 2))
        # count exact duplicate rows
        res["dup rows"] = R - len(np.unique(q, axis=0))
        hs, M = cond_static(x, np.clip(ctx, -8, 8) * 8 + pa); ab, _ = best_adaptive(M, g)
        res["nnrow x |prev| adapt"] = ab + R * math.log2(max(R, 2))
    # k-means row x column clusters (static, honest side info: ids via encode_codes, tables via entropy tables)
    from pgolf.pack import context as cx
    from pgolf.pack.rans_core import _choose_weights, _put_table
    sym, lo, k = cx.symbol_matrix(q)
    best = None
    for br, bc in ((1, 1),) + cx.GRID:
        rws, cls = cx.fit_clusters(sym, k, br, bc)
        M = cx.context_counts(sym, k, rws, cls)
        side = 0
        if rws.max() > 0: side += 8 * len(encode_codes(rws.astype(np.uint8)))
        if cls.max() > 0: side += 8 * len(encode_codes(cls.astype(np.uint8)))
        tb = 0
        pay = 0
        for row in M:
            if row.sum() == 0: continue
            nzr = np.flatnonzero(row)
            sub = row[nzr[0]:nzr[-1]+1]
            if sub.size == 1:
                tb += 16; continue
            mode, table = _choose_weights(sub)
            out = bytearray(); _put_table(out, table); tb += 8 * (len(out) + 2)
            w = table[table > 0].astype(float); c = sub[sub > 0].astype(float)
            pay += float(np.sum(c * (np.log2(w.sum()) - np.log2(w))))
        tot = side + tb + pay
        res[f"km{br}x{bc}"] = tot
        if best is None or tot < best[0]: best = (tot, br, bc)
    res["km best"] = best[0]
    res["km best_is"] = 0
    print(f"   {name}: best km grid {best[1]}x{best[2]}")
    return n, res

def run(label, items):
    tot = {}
    N = 0
    print(f"\n### {label}")
    for name, q, s in items:
        n, r = study(name, q, s)
        N += n
        line = f"{name} {q.shape}: " + ", ".join(f"{k}={v/r['order0']:.4f}" for k, v in r.items() if k not in ("order0", "dup rows", "km best_is") and not k.startswith("km") or k == "km best")
        if "dup rows" in r: line += f", dup rows={r['dup rows']}"
        print(line, f"[H0={r['order0']/8:.0f} B]")
        for k, v in r.items():
            tot[k] = tot.get(k, 0) + v
    if not tot: return tot
    h0 = tot["order0"]
    print(f"TOTAL {N} codes, H0 = {h0/8:,.0f} B ({h0/N:.4f} b/w)")
    for k, v in tot.items():
        if k not in ("dup rows", "km best_is"):
            print(f"  {k:24s} {v/8:12,.0f} B  {v/h0:.4f}")
    return tot

if __name__ == "__main__":
    d = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/runs/demo")
    qs, _ = decode_artifact((d / "model.pgolf").read_bytes())
    items = [(n, t.q.numpy(), t.scale.float().numpy().reshape(-1)) for n, t in qs.tensors.items() if t.q.ndim == 2]
    run("int8-baseline artifact", items)
    w = trained_weights(load_checkpoint(d / "checkpoint.pt"))
    qs6 = int6_sdclip(w)
    items = [(n, t.q.numpy(), t.scale.float().numpy().reshape(-1)) for n, t in qs6.tensors.items()]
    run("int6 sdclip k=12.85", items)
