"""How far below the record's per-group lrzip a coder of int6 codes can go: per role group, order-0 entropy, the best
adaptive code length over the contexts below, R0427's lrzip, pgolf's rans-ctx, and the tok_emb size total ≤ 0.98 ×
lrzip would need.

    python bench/pack_bounds.py [/tmp/runs/demo/checkpoint.pt ...]

Codes: int6 SDClip k=12.85 (bench/pack.py's rule). "best context" = the smallest, per tensor, of order-0 and the
exact adaptive code lengths (Dirichlet-multinomial per context, prior = the tensor's histogram × the best of six
strengths; order-free, so equal to learn-as-you-go coding in any order) under: the column's mean |q| quartile (2
bits/column side info counted), the row's mean |q| quartile (2 bits/row), the signs of the previous code in the row
and of the same column in the previous row (9 contexts), those two codes' values clipped to ±3 (49), the column
itself (one adaptive histogram per column). tok_emb in addition: the adaptive stream rans-ctx writes, and a linear
mixture of its model with per-column adaptive counts (weights from the two models' running code lengths; exact code
length, not a stream mode), and static conditional entropies (optimistic: no tables) of its adaptive rows under
richer contexts. "needed tok_emb" = 0.98 × lrzip total − the other groups at their best context.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
from scipy.special import gammaln

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pack_vs_lrzip import codes_of  # noqa: E402

from pgolf.pack import adaptive as ad  # noqa: E402
from pgolf.pack.entropy import _encode_v1, encode_codes, order0_entropy_bytes  # noqa: E402
from pgolf.pack.lrzip import code_groups, group_layout, lrzip_compress  # noqa: E402


def dm_bits(ctx: np.ndarray, x: np.ndarray, k: int) -> float:
    """Smallest Dirichlet-multinomial code length (bits) of symbols x under integer contexts ctx."""
    _, inv = np.unique(ctx.reshape(-1), return_inverse=True)
    m = np.bincount(inv * k + x.reshape(-1), minlength=(inv.max() + 1) * k).reshape(-1, k).astype(np.float64)
    g = m.sum(0) + 0.5
    prior = g / g.sum()
    best = math.inf
    for alpha in (0.5, 2, 8, 32, 128, 512):
        a = alpha * prior[None, :]
        ll = gammaln(a.sum(1)) - gammaln(m.sum(1) + a.sum(1)) + np.sum(gammaln(m + a) - gammaln(a), axis=1)
        best = min(best, -ll.sum() / math.log(2))
    return best


def quartile(v: np.ndarray) -> np.ndarray:
    return np.searchsorted(np.quantile(v, [0.25, 0.5, 0.75]), v, side="right")


def contexts(q: np.ndarray) -> dict[str, tuple[np.ndarray, float]]:
    """name: (context per code, side-info bits)."""
    r, c = q.shape
    mag = np.abs(q.astype(np.int64))
    left = np.hstack([np.zeros((r, 1), np.int64), q[:, :-1]])
    up = np.vstack([np.zeros((1, c), np.int64), q[:-1]])
    return {
        "column |q| quartile": (np.broadcast_to(quartile(mag.mean(0))[None, :], q.shape), 2.0 * c),
        "row |q| quartile": (np.broadcast_to(quartile(mag.mean(1))[:, None], q.shape), 2.0 * r),
        "signs left × up": ((np.sign(left) + 1) * 3 + np.sign(up) + 1, 0.0),
        "left × up, ±3": ((np.clip(left, -3, 3) + 3) * 7 + np.clip(up, -3, 3) + 3, 0.0),
        "column": (np.broadcast_to(np.arange(c)[None, :], q.shape), 0.0),
    }


def best_context(q: np.ndarray) -> tuple[float, str]:
    x = q.astype(np.int64) - int(q.min())
    k = int(x.max()) + 1
    out = (order0_entropy_bytes(q), "order-0")
    for name, (ctx, side) in contexts(q).items():
        out = min(out, ((dm_bits(ctx, x, k) + side) / 8, name))
    return out


def mixed_tok_emb(q: np.ndarray, beta: float = 0.002, alpha: float = 32.0) -> float:
    """Bytes of tok_emb with its adaptive rows coded by a mixture of the shipped model and per-column counts (the
    split-off rows and the Lehmer code as rans-ctx writes them)."""
    lo, span = int(q.min()), int(q.max() - q.min())
    cls = ad._split_rows(q)
    keep = np.ones(len(q), bool) if cls is None else cls == 0
    side = 0 if cls is None else len(encode_codes(cls.astype(np.uint8))) + len(_encode_v1(q[~keep], "best")) + 4
    rest = q[keep].astype(np.int64) - lo
    r, c = rest.shape
    x_all = rest[ad.chain_order(rest)]
    m1, col = ad._Model(c, span + 1, ad._centre(lo, span)), np.zeros((c, span + 1))
    cum, w, bits, ar = np.zeros(2), np.full(2, 0.5), 0.0, np.arange(c)
    for x in x_all:
        p1 = m1.weights()
        p1 /= p1.sum(1, keepdims=True)
        p2 = (col + alpha * p1) / (col.sum(1, keepdims=True) + alpha)
        bits -= np.log2(w[0] * p1[ar, x] + w[1] * p2[ar, x]).sum()
        cum -= [np.log2(p1[ar, x]).sum(), np.log2(p2[ar, x]).sum()]
        w = np.exp2(-(cum - cum.min()) * beta)
        w /= w.sum()
        col[ar, x] += 1
        m1.update(x)
    lehmer = sum(math.log2(v) for v in range(2, r + 1))
    return side + (bits + lehmer) / 8


def static_h(ctx: np.ndarray, x: np.ndarray, k: int) -> float:
    """Empirical conditional entropy (bytes) of x given ctx: no tables, no side information (optimistic)."""
    _, inv = np.unique(ctx.reshape(-1), return_inverse=True)
    m = np.bincount(inv * k + x.reshape(-1), minlength=(inv.max() + 1) * k).reshape(-1, k).astype(np.float64)
    p = m / np.maximum(m.sum(1, keepdims=True), 1)
    return float(-(m * np.log2(np.where(m > 0, p, 1))).sum() / 8)


def richer_tok_emb(q: np.ndarray) -> str:
    """Static conditional entropies of the adaptive rows (tok_emb minus its split-off rows) in the row walk's order,
    under richer contexts than the shipped one, for comparison with its exact adaptive code length."""
    lo = int(q.min())
    cls = ad._split_rows(q)
    rest = q[np.ones(len(q), bool) if cls is None else cls == 0].astype(np.int64) - lo
    x_all = rest[ad.chain_order(rest)]
    k, centre = int(rest.max()) + 1, ad._centre(lo, int(q.max()) - lo)
    r, c = x_all.shape
    x, u = x_all[1:], x_all[:-1]
    u2 = np.vstack([np.full((1, c), centre), x_all[:-2]])
    mean = np.round(np.cumsum(x_all, 0)[:-1] / np.arange(1, r)[:, None]).astype(np.int64)
    cm = np.clip(mean - centre, -ad.CM_CLIP, ad.CM_CLIP) + ad.CM_CLIP
    xf = x_all.astype(np.float32)
    sq = (xf * xf).sum(1)
    d = sq[:, None] + sq[None, :] - 2 * xf @ xf.T
    d[np.triu_indices(r)] = np.inf  # earlier rows only
    nn3 = np.argsort(d, 1)[1:, :3]
    near = np.round(x_all[nn3].mean(1)).astype(np.int64)  # row i >= 3 has 3 earlier rows; rows 1-2 repeat some
    h0 = order0_entropy_bytes(x)
    rows = {"shipped context (u × column mean), static": (cm * k + u),
            "(u, previous-but-one, column mean), static": ((cm * k + u) * k + u2),
            "mean of the 3 nearest earlier rows × column mean, static (row choice not counted)": (cm * k + near)}
    return "; ".join(f"{name} {static_h(ctx, x, k):,.0f} B" for name, ctx in rows.items()) + f" (H0 {h0:,.0f} B)"


def main(argv: list[str]) -> None:
    for path in argv or ["/tmp/runs/demo/checkpoint.pt", "/tmp/runs/d384/checkpoint.pt"]:
        codes = codes_of(Path(path))
        print(f"\n## {path} → int6 SDClip k=12.85")
        print("| group | order-0 entropy | best context (÷ H0; which) | R0427 lrzip (+ perms) | rans-ctx (÷ H0) |")
        print("|---|---|---|---|---|")
        tot = {"h": 0.0, "best": 0.0, "lrz": 0, "ours": 0}
        tok = None
        for g in code_groups(codes):
            raw, perms = group_layout(codes, g)
            lrz = len(lrzip_compress(raw)) + len(perms)
            h = sum(order0_entropy_bytes(codes[n]) for n in g.names)
            ours = sum(len(encode_codes(codes[n], model="best")) for n in g.names)
            found = [best_context(codes[n]) for n in g.names]
            best = sum(b for b, _ in found)
            which = ", ".join(sorted({w for _, w in found}))
            if g.role == "tok_emb":
                mix = mixed_tok_emb(codes[g.names[0]])
                which = f"{which} {best / h:.4f}; shipped adaptive {ours / h:.4f}; mixed with per-column counts " \
                        f"{mix / h:.4f}"
                best = min(best, ours, mix)
                tok = (h, best)
            print(f"| {g.role} | {h:,.0f} | {best:,.0f} ({best / h:.4f}; {which}) | {lrz:,} (+{len(perms):,}) | "
                  f"{ours:,} ({ours / h:.4f}) |")
            for key, v in zip(tot, (h, best, lrz, ours)):
                tot[key] += v
        print(f"| total | {tot['h']:,.0f} | {tot['best']:,.0f} | {tot['lrz']:,} | {tot['ours']:,} "
              f"(÷ lrzip {tot['ours'] / tot['lrz']:.4f}; best found ÷ lrzip {tot['best'] / tot['lrz']:.4f}) |")
        if tok is not None:
            need = 0.98 * tot["lrz"] - (tot["best"] - tok[1])
            print(f"total ≤ 0.98 × lrzip needs tok_emb ≤ {need:,.0f} B = {need / tok[0]:.4f} × its H0 "
                  f"(best found {tok[1] / tok[0]:.4f})")
            print(f"tok_emb's adaptive rows (rows 2.. in walk order): "
                  f"{richer_tok_emb(codes[next(n for n in codes if n.startswith('tok_emb'))])}")


if __name__ == "__main__":
    main(sys.argv[1:])
