"""entropy.py's modes CONTEXT (row/column cluster contexts, pgolf.pack.context), BROTLI and BROTLI_T: encoders and
hardened decoders (split out of entropy.py; the stream layout is documented there)."""

from __future__ import annotations

import math

import numpy as np

from pgolf.pack.order0 import decode_order0, encode_order0, order0_entropy_bytes
from pgolf.pack.rans_core import (
    _BROTLI,
    _BROTLI_T,
    _CONSTANT,
    _CONTEXT,
    _COUNTS,
    _MAX_WEIGHT,
    _RAW,
    _SLACK_BITS,
    _WEIGHTS,
    EntropyDecodeError,
    _header,
    _min_bits,
    _xent_bits,
    _model,
    _put_uvarint,
    _read_table,
    _Reader,
    _table_bytes,
)

_CONTEXT_MAX_ALPHABET = 256  # int8-like codes; wider alphabets would need too many counts per context


def _encode_brotli(arr: np.ndarray, transpose: bool = False) -> bytes:
    from pgolf.pack.codecs import compress

    return bytes(_header(arr, _BROTLI_T if transpose else _BROTLI)) + compress(_le_bytes(arr, transpose), "brotli")


BROTLI_SAMPLE = (1 << 15, 1 << 17)
"""Bytes of the sample (4 evenly spaced stripes, a quarter of the array up to the upper bound) a large array's
brotli-11 size is estimated from; arrays under 4 × the lower bound always get the trial."""
BROTLI_MARGIN = 0.01
"""A brotli-11 trial runs when the estimate is below (1 + BROTLI_MARGIN) × the smallest stream so far."""


def _le_bytes(arr: np.ndarray, transpose: bool) -> bytes:
    le = arr.astype(arr.dtype.newbyteorder("<"))
    if transpose:
        le = np.ascontiguousarray(le.reshape(arr.shape[0], -1).T)
    return le.tobytes()


def _brotli_may_win(arr: np.ndarray, transpose: bool, bound: int) -> bool:
    """Whether brotli-11 of arr (row- or column-major) may come within BROTLI_MARGIN of `bound` bytes: always for
    small arrays; otherwise the smaller of two estimates must. (1) brotli-3 of all the bytes (fast; sees long-range
    repeats, within ~15 % of brotli-11 there); (2) brotli-11 of 4 evenly spaced stripes (BROTLI_SAMPLE), scaled by
    the order-0 entropy of the array over that of the sample (sees local structure: 0.1-0.4 % pessimistic on i.i.d.
    codes, 0.3-1.2 % on embedding-like ones). On i.i.d. int6 codes brotli-11 is 1.4 % over order-0 rANS, so the
    trial is skipped there: the bulk of rans-ctx's encode time at the 36M shapes (bench/pack_encode_time.py)."""
    import brotli

    from pgolf.pack.codecs import BROTLI_QUALITY

    if arr.nbytes < 4 * BROTLI_SAMPLE[0]:
        return True
    data = _le_bytes(arr, transpose)
    limit = (1 + BROTLI_MARGIN) * bound
    if len(brotli.compress(data, quality=3)) < limit:
        return True
    item = arr.dtype.itemsize
    stripe = min(BROTLI_SAMPLE[1], arr.nbytes // 4) // 4 // item * item
    starts = np.linspace(0, (len(data) - stripe) // item, 4).astype(np.int64) * item
    sample = b"".join(data[s : s + stripe] for s in starts.tolist())
    h_sample = order0_entropy_bytes(np.frombuffer(sample, dtype=arr.dtype.newbyteorder("<")))
    if h_sample == 0:
        return True
    est = len(brotli.compress(sample, quality=BROTLI_QUALITY)) * order0_entropy_bytes(arr) / h_sample
    return est < limit


def _context_plan(sym: np.ndarray, k: int):
    """(bytes estimate, rows, cols, side-info bytes, per-context (offset, table, table bytes) or None) of the best
    grid point, or None when no grid point beats a single context."""
    from pgolf.pack import context as cx

    best = None
    for br, bc in cx.GRID:
        if br > sym.shape[0] or bc > sym.shape[1]:
            continue
        rows, cols = cx.fit_clusters(sym, k, br, bc)
        if rows.max() == 0 and cols.max() == 0:
            continue
        side = bytearray()
        for ids in (rows, cols):
            if ids.max() > 0:
                blob = encode_order0(ids.astype(np.uint8))
                _put_uvarint(side, len(blob))
                side += blob
        counts = cx.context_counts(sym, k, rows, cols)
        tables, bits = [], 0.0
        for row in counts:
            if not row.any():
                tables.append(None)
                continue
            off, table, tb = _table_bytes(row)
            tables.append((off, table, tb))
            if table.size > 1:
                c = row[off : off + table.size]
                present = c > 0
                bits += _xent_bits(c[present], table[present])
        est = len(side) + sum(len(t[2]) for t in tables if t) + bits / 8 + 4
        if best is None or est < best[0]:
            best = (est, rows, cols, bytes(side), tables)
    return best


def _encode_context(arr: np.ndarray) -> bytes | None:
    """Mode CONTEXT: arr viewed as (shape[0], rest) with row/column cluster contexts; None when not applicable."""
    import constriction

    from pgolf.pack import context as cx

    mat = arr.reshape(arr.shape[0], -1)
    if mat.shape[1] < 2:
        return None
    sym, lo, k = cx.symbol_matrix(mat)
    if k > _CONTEXT_MAX_ALPHABET:
        return None
    plan = _context_plan(sym, k)
    if plan is None:
        return None
    _, rows, cols, side, tables = plan
    out = _header(arr, _CONTEXT, lo, k - 1, int(rows.max()) + 1, int(cols.max()) + 1)
    out += side
    for t in tables:
        if t is not None:
            out += t[2]
    blocks = cx.context_order(rows, cols)
    coder = constriction.stream.stack.AnsCoder()
    for (ra, cb), t in reversed(list(zip(blocks, tables))):  # a stack: the last context first
        if t is None or t[1].size == 1:
            continue
        off, table = t[0], t[1]
        present = table > 0
        lut = np.full(table.size, -1, dtype=np.int32)
        lut[present] = np.arange(int(present.sum()), dtype=np.int32)
        syms = lut[cx.gather(sym, ra, cb) - off]
        coder.encode_reverse(syms, _model(table[present]))
    payload = coder.get_compressed().astype("<u4").tobytes().rstrip(b"\x00")
    return bytes(out) + payload


def _decode_brotli(blob: bytes, shape: tuple[int, ...], dt: np.dtype, transpose: bool) -> np.ndarray:
    from pgolf.pack.codecs import decompress

    n = math.prod(shape) * dt.itemsize
    raw = decompress(blob, "brotli", max_size=n)  # a CodecError ("brotli stream ...") becomes decode_codes' error
    if len(raw) != n:
        raise EntropyDecodeError(f"brotli payload holds {len(raw)} bytes, the shape {shape} needs {n}")
    flat = np.frombuffer(raw, dtype=dt.newbyteorder("<")).astype(dt)
    if not transpose:
        return flat.reshape(shape)
    if len(shape) < 2:
        raise EntropyDecodeError(f"column-major brotli mode needs ndim >= 2, got shape {shape}")
    rows = shape[0]
    return np.ascontiguousarray(flat.reshape(-1, rows).T).reshape(shape) if n else flat.reshape(shape)


def _read_ids(r: _Reader, data: bytes, length: int, clusters: int, what: str) -> np.ndarray:
    """Cluster ids: a nested uint8 stream of `length` values, each < clusters (all zero when clusters == 1)."""
    if clusters == 1:
        return np.zeros(length, dtype=np.int64)
    m = r.uvarint(f"{what} id stream length", len(data) - r.pos)
    blob = data[r.pos : r.pos + m]
    r.pos += m
    if not blob or (blob[0] >> 2) & 7 not in (_CONSTANT, _COUNTS, _WEIGHTS, _RAW):
        raise EntropyDecodeError(f"{what} id stream is empty or not an order-0 stream")
    ids = decode_order0(blob, length)
    if ids.dtype != np.uint8 or ids.shape != (length,):
        raise EntropyDecodeError(f"{what} ids are {ids.dtype} {ids.shape}, expected uint8 ({length},)")
    if int(ids.max()) >= clusters:
        raise EntropyDecodeError(f"{what} id {int(ids.max())} is not below the cluster count {clusters}")
    return ids.astype(np.int64)


def _decode_context(r: _Reader, data: bytes, shape: tuple[int, ...], dt: np.dtype) -> np.ndarray:
    import constriction

    from pgolf.pack import context as cx

    if len(shape) < 2 or shape[0] < 1:
        raise EntropyDecodeError(f"context mode needs a non-empty matrix, got shape {shape}")
    nr = shape[0]
    nc = math.prod(shape[1:])
    lo, span = r.alphabet(dt)
    br = r.uvarint("row clusters", min(cx.MAX_CLUSTERS, nr))
    bc = r.uvarint("column clusters", min(cx.MAX_CLUSTERS, nc))
    if br == 0 or bc == 0:
        raise EntropyDecodeError("zero row or column clusters")
    rows = _read_ids(r, data, nr, br, "row")
    cols = _read_ids(r, data, nc, bc, "column")
    sizes = np.bincount(rows, minlength=br)[:, None] * np.bincount(cols, minlength=bc)[None, :]
    models = []
    for n_ctx in sizes.reshape(-1).tolist():
        if n_ctx == 0:
            models.append(None)
            continue
        off = r.uvarint("context alphabet offset", span)
        sub = r.uvarint("context alphabet span", span - off)
        if sub == 0:
            models.append((off, None, None))
            continue
        table = _read_table(r, sub + 1, _MAX_WEIGHT)
        present = table > 0
        models.append((off, np.flatnonzero(present), table[present], n_ctx))
    payload = data[r.pos :]
    coded = any(m is not None and m[1] is not None for m in models)
    if coded and (not payload or payload[-1] == 0):
        raise EntropyDecodeError("missing or non-canonical payload")
    if not coded and payload:
        raise EntropyDecodeError("trailing bytes after a payload-free context stream")
    if sum(_min_bits(m[2], m[3]) for m in models if m is not None and m[1] is not None) > (
            8 * len(payload) + _SLACK_BITS):
        raise EntropyDecodeError(f"payload of {len(payload)} bytes is too short for {nr * nc} symbols")
    words = np.frombuffer(payload + b"\x00" * (-len(payload) % 4), dtype="<u4").astype(np.uint32)
    coder = constriction.stream.stack.AnsCoder(words)
    out = np.empty((nr, nc), dtype=dt)  # every cell is written: the contexts tile the matrix
    for (ra, cb), m in zip(cx.context_order(rows, cols), models):
        if m is None:
            continue
        off, slots, weights = m[:3]
        if slots is None:
            out[np.ix_(ra, cb)] = lo + off
            continue
        values = (np.arange(lo + off, lo + off + int(slots[-1]) + 1, dtype=np.int64)[slots]).astype(dt)
        block = values[coder.decode(_model(weights), ra.size * cb.size)]
        out[np.ix_(ra, cb)] = block.reshape(ra.size, cb.size)
    if not coder.is_empty():
        raise EntropyDecodeError("payload not fully consumed (corrupt stream)")
    return out.reshape(shape)
