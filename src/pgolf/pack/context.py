"""Context-model rANS for a matrix of codes: a static histogram per (row cluster, column cluster) context.

A quantized weight matrix is not i.i.d.: rows with per-row scales still differ in shape (trained vs barely-trained
embedding rows), and input channels (columns) differ in spread (live vs dead MLP units). Clustering the rows into
`br` groups and the columns into `bc` groups, and coding each of the br × bc blocks with its own histogram, captures
that at the price of the cluster ids (side info) and br × bc tables. The clusters are fitted by alternating
minimisation of the code length (k-means over histograms, cross-entropy as the distance), started from quantiles of
the mean |code| per row / column; the (br, bc) grid point with the smallest estimated size wins. Measured on the
cpu-demo checkpoint in BENCHMARKS.md ("Packing").

    sym, lo, k = symbol_matrix(codes2d)          # symbol index 0..k-1 of every code
    rows, cols = fit_clusters(sym, k, br, bc)
    body = encode_context_body(sym, k, rows, cols) ... decode_context_body(reader, payload, r, c, k)

Stream body (after entropy.py's header and alphabet): uvarint br, uvarint bc, row ids (nested encode_codes stream,
uint8, length-prefixed) when br > 1, column ids likewise when bc > 1, then br × bc weight tables (context order:
row cluster major), each preceded by a flag (0 = empty context, 1 = table follows), then the rANS payload holding the
contexts in that order. The decoder knows every context's symbol count from the ids, so no counts are stored.
"""

from __future__ import annotations

import math

import numpy as np

MAX_CLUSTERS = 64
"""Upper bound on br and bc (the decoder rejects more; the encoder's grid stays far below)."""
GRID: tuple[tuple[int, int], ...] = ((1, 2), (1, 4), (1, 8), (2, 1), (4, 1), (8, 1), (2, 2), (2, 4), (4, 2), (4, 4),
                                     (2, 8), (8, 2), (4, 8), (8, 4), (8, 8), (16, 1), (1, 16), (16, 4), (4, 16))
"""(row clusters, column clusters) tried per tensor."""
_ITERS = 6
FIT_CELLS = 1 << 18
"""Codes the cluster fit looks at before its full-data refinement round (bounds encode time on big matrices)."""


def symbol_matrix(codes: np.ndarray) -> tuple[np.ndarray, int, int]:
    """(symbol index matrix int32, lowest value, alphabet size) of a 2-D integer array."""
    x = codes.astype(np.int32)
    lo = int(x.min())
    return x - lo, lo, int(x.max()) - lo + 1


def _joint(sym: np.ndarray, k: int, row_ids: np.ndarray, nr: int, col_ids: np.ndarray, nc: int) -> np.ndarray:
    """counts[a, b, s]: occurrences of symbol s at rows with id a and columns with id b (ids may be identities)."""
    idx = (row_ids[:, None].astype(np.int64) * nc + col_ids[None, :]) * k + sym
    return np.bincount(idx.reshape(-1), minlength=nr * nc * k).reshape(nr, nc, k)


def _neg_log2_probs(counts: np.ndarray) -> np.ndarray:
    """-log2 of smoothed per-context probabilities (last axis = symbols)."""
    c = counts + 0.5 / counts.shape[-1]
    return -np.log2(c / c.sum(-1, keepdims=True))


def _initial(stat: np.ndarray, n: int) -> np.ndarray:
    if n == 1:
        return np.zeros(stat.size, dtype=np.int64)
    edges = np.quantile(stat, np.linspace(0, 1, n + 1)[1:-1])
    return np.searchsorted(edges, stat, side="right").astype(np.int64)


def _col_step(sym: np.ndarray, k: int, rows: np.ndarray, br: int, cols: np.ndarray, bc: int) -> np.ndarray:
    """Each column's best column cluster given the row clusters and the current contexts' histograms."""
    per_col = _joint(sym, k, rows, br, np.arange(sym.shape[1]), sym.shape[1])  # br × c × k
    joint = np.stack([per_col[:, cols == b].sum(1) for b in range(bc)], 1)  # br × bc × k
    return np.einsum("acs,abs->cb", per_col, _neg_log2_probs(joint)).argmin(1)


def _row_step(sym: np.ndarray, k: int, nl: np.ndarray, cols: np.ndarray, bc: int) -> np.ndarray:
    """Each row's best row cluster given the column clusters and -log2 probabilities nl (br × bc × k)."""
    per_row = _joint(sym, k, np.arange(sym.shape[0]), sym.shape[0], cols, bc)  # r × bc × k
    return np.einsum("rbs,abs->ra", per_row, nl).argmin(1)


def _fit(sym: np.ndarray, k: int, br: int, bc: int, iters: int) -> tuple[np.ndarray, np.ndarray]:
    centre = np.argmax(np.bincount(sym.reshape(-1), minlength=k))
    mag = np.abs(sym - centre)
    rows = _initial(mag.mean(1), br)
    cols = _initial(mag.mean(0), bc)
    for _ in range(iters):
        changed = False
        if bc > 1:
            new = _col_step(sym, k, rows, br, cols, bc)
            changed |= bool(np.any(new != cols))
            cols = new
        if br > 1:
            nl = _neg_log2_probs(_joint(sym, k, rows, br, cols, bc))
            new = _row_step(sym, k, nl, cols, bc)
            changed |= bool(np.any(new != rows))
            rows = new
        if not changed:
            break
    return rows, cols


def fit_clusters(sym: np.ndarray, k: int, br: int, bc: int, iters: int = _ITERS) -> tuple[np.ndarray, np.ndarray]:
    """Row and column cluster ids (int64) minimising the static context code length, by alternating assignment:
    each column moves to the column cluster whose histograms (given the row clusters) code it in the fewest bits,
    then each row likewise; stops when nothing moves or after `iters` rounds. Matrices over FIT_CELLS codes are
    fitted on evenly spaced rows, then every row is assigned and one full-data round refines both."""
    r, c = sym.shape
    br, bc = min(br, r), min(bc, c)
    if r * c <= FIT_CELLS or r <= 2 * br:
        rows, cols = _fit(sym, k, br, bc, iters)
        return _compact(rows), _compact(cols)
    step = -(-r * c // FIT_CELLS)
    sub = sym[::step]
    rows_s, cols = _fit(sub, k, br, bc, iters)
    nl = _neg_log2_probs(_joint(sub, k, rows_s, br, cols, bc))
    rows = _row_step(sym, k, nl, cols, bc) if br > 1 else np.zeros(r, dtype=np.int64)
    if bc > 1:
        cols = _col_step(sym, k, rows, br, cols, bc)
    if br > 1:
        rows = _row_step(sym, k, _neg_log2_probs(_joint(sym, k, rows, br, cols, bc)), cols, bc)
    return _compact(rows), _compact(cols)


def _compact(ids: np.ndarray) -> np.ndarray:
    """Renumber ids 0..m-1 in order of first use-frequency rank (drops empty clusters)."""
    used, inv = np.unique(ids, return_inverse=True)
    return inv.astype(np.int64).reshape(ids.shape) if used.size else ids


def context_counts(sym: np.ndarray, k: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """counts[(a * bc + b), s] for the contexts of the given cluster ids."""
    br, bc = int(rows.max()) + 1, int(cols.max()) + 1
    return _joint(sym, k, rows, br, cols, bc).reshape(br * bc, k)


def estimate_bits(counts: np.ndarray) -> float:
    """Σ over contexts of n·H (bits): the payload size the tables will approach."""
    c = counts.astype(np.float64)
    n = c.sum(1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(c > 0, c * (np.log2(np.maximum(n, 1)) - np.log2(np.where(c > 0, c, 1))), 0.0)
    return float(t.sum())


def context_order(rows: np.ndarray, cols: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """(row indices, column indices) of every context in stream order (row cluster major)."""
    br, bc = int(rows.max()) + 1, int(cols.max()) + 1
    rsets = [np.flatnonzero(rows == a) for a in range(br)]
    csets = [np.flatnonzero(cols == b) for b in range(bc)]
    return [(ra, cb) for ra in rsets for cb in csets]


def gather(mat: np.ndarray, ra: np.ndarray, cb: np.ndarray) -> np.ndarray:
    """The block mat[ra][:, cb] flattened row-major (the order a context's symbols are coded in)."""
    return mat[np.ix_(ra, cb)].reshape(-1)


def bits_for_ids(n: int, m: int) -> float:
    """Rough side-info estimate used only to rank grid points: n ids of log2(m) bits."""
    return n * math.log2(m) if m > 1 else 0.0
