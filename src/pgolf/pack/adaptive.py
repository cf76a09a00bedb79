"""Mode ADAPTIVE of pgolf.pack.entropy: rows in a stored similarity order, each symbol coded with counts learnt
from the rows before it (same column in the previous row × the column's running mean), optionally after splitting
off a cluster of near-identical rows that is coded with the static modes.

Why: on a trained tok_emb, the rows of frequent tokens are weakly correlated with their nearest neighbours and their
columns carry an offset (the mean embedding). R0427 exploits that with an L1 similarity sort, column-major bytes and
ZPAQ (pgolf.pack.lrzip); the row × column clusters of mode CONTEXT cannot see either. Here the decoder walks the rows
in the stored order and, for each row, builds a per-column probability table from three adaptive count tables
(vectorised over the row; counts updated between rows), so no tables are stored:

    A[c, u, x]   symbol x given u = the same column in the previous row and c = that column's running mean
                 (rounded, clipped to ±CM_CLIP around the code 0)
    B[c, x]      symbol x given c;   G[x]   all symbols so far (starts at 1 each)
    p(x) ∝ A[c, u, x] + ALPHA_A · (B[c, x] + ALPHA_B · G[x] / ΣG) / (ΣB[c] + ALPHA_B)

(Dirichlet back-off, evaluated with IEEE float64 elementwise operations only, so encoder and decoder compute the
same tables on every platform; constriction's range coder with per-symbol categorical tables codes the symbols.)
The rows of tok_emb's byte/rare tokens, which training barely moved, are near copies of one vector: the encoder
splits them off (k-means on rows, k = 2) when that is smaller and codes them with the best static mode.

Body (after entropy.py's version-2 header and lo, span; see entropy.py):
    u8 split flag; if 1: uvarint length + order-0 uint8 stream of the row classes (1 = split off), uvarint length
    + a version-1 entropy.py stream of the split-off rows (n1, columns); then, for the R0 remaining rows, one
    range-coder payload (u32 words, little-endian): the Lehmer code of the row order (digit i uniform over R0 - i,
    i < R0 - 1), then the rows' symbols in that order.
"""

from __future__ import annotations

import bisect
import math

import numpy as np

from pgolf.pack.order0 import encode_order0
from pgolf.pack.rans_core import EntropyDecodeError, _put_uvarint, _Reader

ALPHA_A = 24.0
ALPHA_B = 24.0
CM_CLIP = 3
MAX_ALPHABET = 64
"""int6/int7 codes; wider alphabets would make the per-row tables too large to be worth it."""
MAX_SYMBOLS = 1 << 26
"""Largest matrix the mode codes (67M codes: every count stays exact in float64 and decode time bounded)."""
MIN_ROWS = 32
MAX_ROWS = 16384
"""The encoder's row walk holds a rows × rows float32 distance matrix (1 GiB at this bound), and the Lehmer decode
is quadratic in rows."""


def lehmer(perm: np.ndarray) -> np.ndarray:
    """Lehmer digits d_i = rank of perm[i] among perm[i:], for i < n - 1."""
    rest = list(range(len(perm)))
    out = np.empty(max(len(perm) - 1, 0), dtype=np.int32)
    for i, p in enumerate(perm[:-1].tolist()):
        k = bisect.bisect_left(rest, p)
        out[i] = k
        rest.pop(k)
    return out


def unlehmer(digits: np.ndarray, n: int) -> np.ndarray:
    rest = list(range(n))
    out = [rest.pop(int(d)) for d in digits.tolist()]
    out.extend(rest)
    return np.asarray(out, dtype=np.int64)


class _Model:
    """The adaptive count tables; weights(row) gives the (columns × K) table of the next row, update(x) learns it."""

    def __init__(self, cols: int, k: int, centre: int) -> None:
        nc = 2 * CM_CLIP + 1
        self.a = np.zeros((nc, k, k))
        self.b = np.zeros((nc, k))
        self.bsum = np.zeros(nc)
        self.g = np.ones(k)
        self.gsum = float(k)
        self.colsum = np.zeros(cols, dtype=np.int64)
        self.rows = 0
        self.centre = centre
        self.u = np.full(cols, centre, dtype=np.int64)
        self.c = np.full(cols, CM_CLIP, dtype=np.int64)

    def weights(self) -> np.ndarray:
        pb = (self.b + ALPHA_B * (self.g / self.gsum)) / (self.bsum + ALPHA_B)[:, None]
        k = self.g.size
        return np.take(self.a.reshape(-1, k), self.c * k + self.u, axis=0) + np.take(ALPHA_A * pb, self.c, axis=0)

    def update(self, x: np.ndarray) -> None:
        np.add.at(self.a, (self.c, self.u, x), 1.0)
        np.add.at(self.b, (self.c, x), 1.0)
        np.add.at(self.bsum, self.c, 1.0)
        cnt = np.bincount(x, minlength=self.g.size)
        self.g += cnt
        self.gsum += float(x.size)
        self.colsum += x
        self.rows += 1
        n = self.rows
        mean = (2 * self.colsum + n) // (2 * n)  # the column's mean symbol, rounded (exact integers)
        self.c = np.clip(mean - self.centre, -CM_CLIP, CM_CLIP) + CM_CLIP
        self.u = x.astype(np.int64)


def chain_order(sym: np.ndarray) -> np.ndarray:
    """Greedy nearest-neighbour row walk from row 0 under squared L2 distance (one BLAS Gram matrix, then O(rows²)
    steps; R0427's L1 walk, layouts.similarity_order, costs O(rows² · columns) numpy work: minutes at 8192 × 512)."""
    x = sym.astype(np.float32)
    n = x.shape[0]
    sq = (x * x).sum(1)
    d = sq[:, None] + sq[None, :] - 2 * (x @ x.T)
    order = np.empty(n, dtype=np.int64)
    seen = np.zeros(n, dtype=np.float32)  # +inf at visited rows: one contiguous add per step, no strided writes
    cur = 0
    for i in range(n):
        order[i] = cur
        seen[cur] = np.inf
        if i < n - 1:
            cur = int((d[cur] + seen).argmin())
    return order


def _centre(lo: int, span: int) -> int:
    return min(max(-lo, 0), span)


def _code_rows(coder, rows: int, cols: int, lo: int, span: int, sym: np.ndarray | None = None) -> np.ndarray:
    """The walk encoder and decoder share: the Lehmer code of the row order, then each row in that order under the
    adaptive model. sym given: `coder` is a RangeEncoder and sym (values 0..span) is coded; None: a RangeDecoder
    and the decoded symbol matrix is returned."""
    import constriction

    m = constriction.stream.model
    sizes = np.arange(rows, 1, -1, dtype=np.int32)
    if rows < 2:
        perm = np.zeros(rows, dtype=np.int64)
    elif sym is None:
        perm = unlehmer(np.asarray(coder.decode(m.Uniform(), sizes)), rows)
    else:
        perm = chain_order(sym)
        coder.encode(lehmer(perm), m.Uniform(), sizes)
    fam = m.Categorical(perfect=False)
    model = _Model(cols, span + 1, _centre(lo, span))
    out = np.empty((rows, cols), dtype=np.int64)
    for i in perm.tolist():
        if sym is None:
            x = np.asarray(coder.decode(fam, model.weights()), dtype=np.int64)
        else:
            x = sym[i].astype(np.int64)
            coder.encode(x.astype(np.int32), fam, model.weights())
        out[i] = x
        model.update(x)
    return out


def encode_rows(sym: np.ndarray, lo: int, span: int) -> bytes:
    """Range-coder payload of a symbol matrix (values 0..span): row order by L2 similarity, then the rows."""
    import constriction

    enc = constriction.stream.queue.RangeEncoder()
    _code_rows(enc, *sym.shape, lo, span, sym)
    return enc.get_compressed().astype("<u4").tobytes()


def decode_rows(payload: bytes, rows: int, cols: int, lo: int, span: int) -> np.ndarray:
    import constriction

    if len(payload) % 4:
        raise EntropyDecodeError(f"adaptive payload of {len(payload)} bytes is not whole 32-bit words")
    if not payload:
        raise EntropyDecodeError("missing adaptive payload")
    dec = constriction.stream.queue.RangeDecoder(np.frombuffer(payload, dtype="<u4").astype(np.uint32))
    out = _code_rows(dec, rows, cols, lo, span)
    if not dec.maybe_exhausted():
        raise EntropyDecodeError("adaptive payload not fully consumed (corrupt stream)")
    return out


def _split_rows(mat: np.ndarray) -> np.ndarray | None:
    """Row classes (1 = the smaller of two k-means clusters, when it is tight: near-copies of one vector)."""
    x = mat.astype(np.float64)
    lab = np.zeros(len(x), dtype=np.int64)
    order = np.argsort(np.abs(x - np.median(x, 0)).sum(1), kind="stable")
    cent = np.stack([x[order[0]], x[order[-1]]])
    for it in range(20):
        new = (-2 * x @ cent.T + (cent**2).sum(1)[None]).argmin(1)  # nearest centre (L2)
        if it and np.array_equal(new, lab):
            break
        lab = new
        for k in range(2):
            if (lab == k).any():
                cent[k] = x[lab == k].mean(0)
    sizes = np.bincount(lab, minlength=2)
    if sizes.min() < MIN_ROWS:
        return None
    small = int(sizes.argmin())
    return (lab == small).astype(np.int64)


def encode_body(mat: np.ndarray, lo: int, span: int, static_encode) -> bytes:
    """The smallest body (see the module docstring) for an integer matrix with values lo..lo+span; static_encode(a)
    encodes a split-off submatrix with the version-1 modes (pgolf.pack.entropy passes its encoder)."""
    sym = mat.astype(np.int64) - lo
    whole = b"\x00" + encode_rows(sym, lo, span)
    cls = _split_rows(mat)
    if cls is None:
        return whole
    out = bytearray(b"\x01")
    ids = encode_order0(cls.astype(np.uint8))
    _put_uvarint(out, len(ids))
    out += ids
    sub = static_encode(np.ascontiguousarray(mat[cls == 1]))
    _put_uvarint(out, len(sub))
    out += sub
    rest = sym[cls == 0]
    body = bytes(out) + encode_rows(rest, lo, span)
    return body if len(body) < len(whole) else whole


def decode_body(r: _Reader, data: bytes, shape: tuple[int, ...], dt: np.dtype, lo: int, span: int,
                static_decode) -> np.ndarray:
    """Inverse of encode_body; static_decode(blob, max_symbols) decodes the split-off rows' version-1 stream
    (pgolf.pack.entropy passes its decoder)."""
    from pgolf.pack.entropy_modes import _read_ids

    nr, nc = shape[0], math.prod(shape[1:])
    if nr * nc > MAX_SYMBOLS:
        raise EntropyDecodeError(f"adaptive mode holds at most {MAX_SYMBOLS} codes, the shape {shape} has {nr * nc}")
    if nr > MAX_ROWS:
        raise EntropyDecodeError(f"adaptive mode holds at most {MAX_ROWS} rows, the shape {shape} has {nr}")
    if span + 1 > MAX_ALPHABET:
        raise EntropyDecodeError(f"adaptive alphabet of {span + 1} symbols exceeds {MAX_ALPHABET}")
    split = r.byte()
    if split > 1:
        raise EntropyDecodeError(f"adaptive split flag {split} is not 0 or 1")
    out = np.empty((nr, nc), dtype=dt)
    keep = np.ones(nr, dtype=bool)
    if split:
        cls = _read_ids(r, data, nr, 2, "row class")
        keep = cls == 0
        n1 = int((~keep).sum())
        m = r.uvarint("split-off stream length", len(data) - r.pos)
        blob = data[r.pos : r.pos + m]
        r.pos += m
        if not blob or blob[0] >> 5 != 1:
            raise EntropyDecodeError("split-off rows are not a version-1 stream")
        sub = static_decode(blob, n1 * nc)
        if sub.dtype != dt or sub.shape != (n1, nc):
            raise EntropyDecodeError(f"split-off rows are {sub.dtype} {sub.shape}, expected {dt} ({n1}, {nc})")
        out[~keep] = sub
    r0 = int(keep.sum())
    if r0:
        out[keep] = (decode_rows(data[r.pos :], r0, nc, lo, span) + lo).astype(dt)
    elif r.pos != len(data):
        raise EntropyDecodeError("trailing bytes after an adaptive stream with no adaptive rows")
    return out.reshape(shape)
