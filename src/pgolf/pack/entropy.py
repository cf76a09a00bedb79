"""Order-0 rANS coding of quantized weight codes (int8/int16 arrays) with a per-tensor histogram model.

Compressors such as zstd-22, brotli-11 and lzma-9e spend 1.4-6 % more than the order-0 entropy on int8-stored
codes; rANS with the tensor's own histogram comes within ~0.01 % of it, side info included
(quantization.md §3.1). The coder is constriction's `AnsCoder` (a stack) with a `Categorical` model.

Stream layout (version 1; every integer is a LEB128 varint, signed ones zigzag-mapped first):

    byte 0       (1 << 5) | (mode << 2) | dtype      dtype: 0 int8, 1 uint8, 2 int16, 3 uint16
    ndim, dim_0 .. dim_{ndim-1}
    mode 0 EMPTY     (size 0)                 nothing follows
    mode 1 CONSTANT  (one distinct value)     value
    mode 2 COUNTS    (exact histogram)        lo, span = hi - lo, weight table, payload
    mode 3 WEIGHTS   (histogram rescaled)     lo, span = hi - lo, weight table, payload
    mode 4 RAW       (fallback)               the little-endian element bytes, when that is smaller (tiny or
                                              near-uniform arrays, whose table would cost more than it saves)
    mode 5 CONTEXT   (model="best" only)      lo, span, then pgolf.pack.context's body: row/column cluster ids
                                              and one weight table per (row cluster, column cluster) context
    mode 6 BROTLI    (model="best" only)      brotli-11 of the little-endian element bytes (wins on tensors
                                              with repeated rows, which no per-symbol model sees)
    mode 7 BROTLI_T  (model="best" only)      the same of the array viewed as (shape[0], rest) and transposed
                                              (column-major, as R0427 stored codes; ndim >= 2)

The weight table holds span + 1 slots (symbols lo..hi); a present symbol has weight >= 1, a run of r absent
symbols is written as 0, r - 1. In COUNTS mode the weights are the exact counts (they sum to the size, and the
decoder checks the decoded histogram against them); in WEIGHTS mode they are the counts rescaled to about 2^p in
total, with p chosen per tensor to minimise table bytes + cross-entropy bits. The payload is the rANS stream as
little-endian uint32 words with the zero high bytes of the last word dropped.

encode_codes(x) writes modes 0-4 only (order-0, the "rans" artifact codec); encode_codes(x, model="best") also
tries the context model (2-D and larger arrays) and brotli-11 (row- and column-major), and keeps the smallest
(the "rans-ctx" codec); model="context" skips the brotli trials (quick sizing). Modes 5-7 were added inside
format version 1: older readers reject them with a clean "unknown mode" error.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "EntropyDecodeError",
    "MAX_SYMBOLS",
    "MODELS",
    "decode_codes",
    "encode_codes",
    "order0_entropy_bytes",
]

FORMAT_VERSION = 1
MAX_SYMBOLS = 2**31
"""Default cap on the element count decode_codes accepts (the header is checked against it before allocating)."""

_EMPTY, _CONSTANT, _COUNTS, _WEIGHTS, _RAW, _CONTEXT, _BROTLI, _BROTLI_T = 0, 1, 2, 3, 4, 5, 6, 7
MODELS = ("order0", "context", "best")
_CONTEXT_MIN_SIZE = 4096  # smaller arrays cannot repay the cluster ids and extra tables
_CONTEXT_MAX_ALPHABET = 256  # int8-like codes; wider alphabets would need too many counts per context
_DTYPES = (np.dtype(np.int8), np.dtype(np.uint8), np.dtype(np.int16), np.dtype(np.uint16))
_MAX_NDIM = 32
_MAX_WEIGHT = 2**32
_CHUNK = 1 << 22  # symbols per constriction call: bounds the int32 temporaries to 16 MiB
_PRECISION = 24  # fixed-point bits of constriction's default categorical model
_SLACK_BITS = 128  # the rANS state may hold this much more than the payload length shows


class EntropyDecodeError(ValueError):
    """The bytes given to decode_codes are not a valid encoding (truncated, corrupted or over the size limit)."""


# --------------------------------------------------------------------------------------------------------------
# varints


def _put_uvarint(out: bytearray, v: int) -> None:
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)


def _zigzag(v: int) -> int:
    return 2 * v if v >= 0 else -2 * v - 1


class _Reader:
    """Cursor over the header bytes; every failure is an EntropyDecodeError."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise EntropyDecodeError("truncated header")
        b = self.data[self.pos]
        self.pos += 1
        return b

    def uvarint(self, what: str, limit: int) -> int:
        v = shift = 0
        while True:
            b = self.byte()
            v |= (b & 0x7F) << shift
            if not b & 0x80:
                break
            shift += 7
            if shift > 63:
                raise EntropyDecodeError(f"varint too long in {what}")
        if v > limit:
            raise EntropyDecodeError(f"{what} = {v} exceeds the limit {limit}")
        return v

    def svarint(self, what: str, lo: int, hi: int) -> int:
        z = self.uvarint(what, 2 * max(abs(lo), abs(hi)) + 1)
        v = (z >> 1) ^ -(z & 1)
        if not lo <= v <= hi:
            raise EntropyDecodeError(f"{what} = {v} outside [{lo}, {hi}]")
        return v


# --------------------------------------------------------------------------------------------------------------
# histogram model


def _histogram(flat: np.ndarray) -> tuple[int, np.ndarray]:
    """(lo, counts over lo..hi) of a 1-D int8/uint8/int16/uint16 array; counts[0] and counts[-1] are nonzero."""
    bits = flat.dtype.itemsize * 8
    unsigned = flat.view(np.dtype(f"u{flat.dtype.itemsize}"))
    counts = np.bincount(unsigned, minlength=1 << bits).astype(np.int64)
    if flat.dtype.kind == "i":  # the unsigned view puts negatives last; rotate to value order
        counts = np.roll(counts, 1 << (bits - 1))
        base = -(1 << (bits - 1))
    else:
        base = 0
    nz = np.flatnonzero(counts)
    return base + int(nz[0]), counts[nz[0] : nz[-1] + 1]


def _uvarint_lens(v: np.ndarray) -> np.ndarray:
    """Byte length of the LEB128 encoding of each (positive) value."""
    n = np.ones(v.shape, dtype=np.int64)
    v = v >> 7
    while np.any(v):
        n += v > 0
        v = v >> 7
    return n


def _choose_weights(counts: np.ndarray) -> tuple[int, np.ndarray]:
    """(mode, weights) minimising weight-table bytes * 8 + cross-entropy bits of the data under the weights."""
    present = counts > 0
    c = counts[present].astype(np.float64)
    n = int(counts.sum())
    best_mode, best_w = _COUNTS, counts[present]
    best_cost = 8 * int(_uvarint_lens(best_w).sum()) + float(np.sum(c * (math.log2(n) - np.log2(c))))
    for p in range(1, max(1, n.bit_length() - 1)):
        w = np.maximum(1, np.rint(c * (2.0**p / n))).astype(np.int64)
        cost = 8 * int(_uvarint_lens(w).sum()) + float(np.sum(c * (math.log2(int(w.sum())) - np.log2(w))))
        if cost < best_cost:
            best_mode, best_w, best_cost = _WEIGHTS, w, cost
    full = np.zeros(counts.shape, dtype=np.int64)
    full[present] = best_w
    return best_mode, full


def _put_table(out: bytearray, table: np.ndarray) -> None:
    """Weight table with zero runs written as 0, run - 1."""
    vals = table.tolist()
    i = 0
    while i < len(vals):
        if vals[i]:
            _put_uvarint(out, vals[i])
            i += 1
        else:
            j = i
            while vals[j] == 0:  # the last slot is nonzero, so this stops
                j += 1
            out.append(0)
            _put_uvarint(out, j - i - 1)
            i = j


def _read_table(r: _Reader, slots: int, max_weight: int) -> np.ndarray:
    table = np.zeros(slots, dtype=np.int64)
    i = 0
    while i < slots:
        v = r.uvarint("histogram weight", max_weight)
        if v:
            table[i] = v
            i += 1
        else:
            i += r.uvarint("zero run", slots - i - 1) + 1
    if table[0] == 0 or table[-1] == 0:
        raise EntropyDecodeError("histogram does not start and end with a present symbol")
    return table


def _model(weights: np.ndarray):
    import constriction

    return constriction.stream.model.Categorical(weights.astype(np.float64), perfect=False)


# --------------------------------------------------------------------------------------------------------------
# public API


def order0_entropy_bytes(codes: np.ndarray) -> float:
    """Shannon bound sum(-log2 p(x)) / 8 of `codes` under its own histogram, in bytes (0 for empty/constant)."""
    flat = np.ascontiguousarray(codes).reshape(-1)
    if flat.size == 0:
        return 0.0
    if flat.dtype not in _DTYPES:
        flat = flat.astype(np.int64)
        counts = np.unique(flat, return_counts=True)[1].astype(np.float64)
    else:
        counts = _histogram(flat.astype(flat.dtype.newbyteorder("=")))[1]
        counts = counts[counts > 0].astype(np.float64)
    n = float(flat.size)
    return float(np.sum(counts * (math.log2(n) - np.log2(counts)))) / 8.0


def encode_codes(codes: np.ndarray, *, model: str = "order0") -> bytes:
    """Losslessly encode an int8/uint8/int16/uint16 array of any shape (shape and dtype are stored).

    model="order0" (default, the "rans" codec): the order-0 histogram of the array itself, stored in the header; see
    the module docstring for the layout. Cost: a few bytes of header, the histogram (~20-60 bytes for int6-like
    codes) and ~0.01 % over the order-0 entropy. model="best" (the "rans-ctx" codec): the smallest of that, the
    row/column context model (pgolf.pack.context) and brotli-11 of the raw bytes in row- and column-major order, so
    it is never larger than any of them (plus a header of a few bytes). model="context": the smaller of order-0
    and context rANS only (no brotli trials: ~10x faster to encode, for quick sizing; "best" is never larger).
    Accepts anything np.asarray accepts (e.g. CPU torch tensors).
    """
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; valid: {', '.join(MODELS)}")
    arr = np.asarray(codes)
    dt = arr.dtype.newbyteorder("=") if arr.dtype.byteorder not in "=|" else arr.dtype
    if dt not in _DTYPES:
        raise TypeError(f"encode_codes takes int8/uint8/int16/uint16 codes, got {arr.dtype}")
    if arr.ndim > _MAX_NDIM:
        raise ValueError(f"at most {_MAX_NDIM} dimensions, got {arr.ndim}")
    if arr.size > MAX_SYMBOLS:
        raise ValueError(f"at most {MAX_SYMBOLS} elements, got {arr.size}")
    arr = np.ascontiguousarray(arr, dtype=dt)
    best = _encode_order0(arr)
    if model == "order0" or best[0] >> 2 & 7 in (_EMPTY, _CONSTANT):
        return best
    candidates = [best]
    if model == "best":
        candidates.append(_encode_brotli(arr))
        if arr.ndim >= 2 and arr.shape[0] > 1:
            candidates.append(_encode_brotli(arr, transpose=True))
    if arr.ndim >= 2 and arr.size >= _CONTEXT_MIN_SIZE and arr.shape[0] > 1:
        ctx = _encode_context(arr)
        if ctx is not None:
            candidates.append(ctx)
    return min(candidates, key=len)  # ties keep the earlier (simpler) mode


def _header(arr: np.ndarray, mode: int) -> bytearray:
    out = bytearray([(FORMAT_VERSION << 5) | (mode << 2) | _DTYPES.index(arr.dtype)])
    _put_uvarint(out, arr.ndim)
    for d in arr.shape:
        _put_uvarint(out, int(d))
    return out


def _symbol_lut(dt: np.dtype, lo: int, table: np.ndarray) -> np.ndarray:
    """Symbol index of every code value (over the unsigned view of dt): rank among the table's present slots."""
    present = table > 0
    bits = dt.itemsize * 8
    lut = np.zeros(1 << bits, dtype=np.int32)
    ranks = np.cumsum(present, dtype=np.int32) - 1
    values = np.arange(lo, lo + table.size, dtype=np.int64)
    lut[values % (1 << bits)] = ranks
    return lut


def _encode_order0(arr: np.ndarray) -> bytes:
    dt = arr.dtype
    flat = arr.reshape(-1)
    if flat.size == 0:
        return bytes(_header(arr, _EMPTY))
    lo, counts = _histogram(flat)
    if counts.size == 1:
        out = _header(arr, _CONSTANT)
        _put_uvarint(out, _zigzag(lo))
        return bytes(out)

    mode, table = _choose_weights(counts)
    out = _header(arr, mode)
    _put_uvarint(out, _zigzag(lo))
    _put_uvarint(out, counts.size - 1)
    _put_table(out, table)

    import constriction

    lut = _symbol_lut(dt, lo, table)
    unsigned = flat.view(np.dtype(f"u{dt.itemsize}"))
    model = _model(table[table > 0])
    coder = constriction.stream.stack.AnsCoder()
    for start in range(((flat.size - 1) // _CHUNK) * _CHUNK, -1, -_CHUNK):  # last chunk first: a stack
        coder.encode_reverse(lut[unsigned[start : start + _CHUNK]], model)
    payload = coder.get_compressed().astype("<u4").tobytes()
    coded = bytes(out) + payload.rstrip(b"\x00")  # the last word is nonzero, so at most 3 bytes go
    raw = _header(arr, _RAW)
    if len(raw) + flat.nbytes < len(coded):
        return bytes(raw) + flat.astype(dt.newbyteorder("<")).tobytes()
    return coded


def _encode_brotli(arr: np.ndarray, transpose: bool = False) -> bytes:
    from pgolf.pack.codecs import compress

    le = arr.astype(arr.dtype.newbyteorder("<"))
    if transpose:
        le = np.ascontiguousarray(le.reshape(arr.shape[0], -1).T)
    return bytes(_header(arr, _BROTLI_T if transpose else _BROTLI)) + compress(le.tobytes(), "brotli")


def _table_bytes(counts: np.ndarray) -> tuple[int, np.ndarray, bytes]:
    """(offset of the first present symbol, weight table over first..last present symbol, its serialized bytes)."""
    nz = np.flatnonzero(counts)
    sub = counts[nz[0] : nz[-1] + 1]
    out = bytearray()
    _put_uvarint(out, int(nz[0]))
    _put_uvarint(out, sub.size - 1)
    if sub.size == 1:
        return int(nz[0]), np.ones(1, dtype=np.int64), bytes(out)
    _, table = _choose_weights(sub)
    _put_table(out, table)
    return int(nz[0]), table, bytes(out)


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
                blob = encode_codes(ids.astype(np.uint8))
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
                w = table[present].astype(np.float64)
                bits += float(np.sum(c[present] * (math.log2(w.sum()) - np.log2(w))))
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
    out = _header(arr, _CONTEXT)
    _put_uvarint(out, _zigzag(lo))
    _put_uvarint(out, k - 1)
    _put_uvarint(out, int(rows.max()) + 1)
    _put_uvarint(out, int(cols.max()) + 1)
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


def decode_codes(data: bytes, *, max_symbols: int = MAX_SYMBOLS) -> np.ndarray:
    """Inverse of encode_codes. Malformed input raises EntropyDecodeError (never another exception type).

    Nothing larger than max_symbols elements is allocated, and a header is rejected when the payload is too short to
    hold that many symbols under the stored model (so a corrupt shape cannot trigger a huge allocation).
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"decode_codes takes bytes, got {type(data).__name__}")
    data = bytes(data)
    try:
        return _decode(data, max_symbols)
    except EntropyDecodeError:
        raise
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as e:  # constriction reports some errors as pyo3 PanicException (a BaseException)
        raise EntropyDecodeError(f"corrupt stream ({type(e).__name__}: {e})") from e


def _min_bits(weights: np.ndarray, n: int) -> float:
    """Fewest bits n symbols can take under a categorical model with these weights (>= 2 of them)."""
    k, total = len(weights), int(weights.sum())
    q_max = min(1.0 - (k - 1) * 2.0**-_PRECISION, int(weights.max()) / total + k * 2.0**-_PRECISION)
    return -n * math.log2(q_max)


def _decode_brotli(blob: bytes, shape: tuple[int, ...], dt: np.dtype, transpose: bool) -> np.ndarray:
    from pgolf.pack.codecs import CodecError, decompress

    n = math.prod(shape) * dt.itemsize
    try:
        raw = decompress(blob, "brotli", max_size=n)
    except CodecError as e:
        raise EntropyDecodeError(f"brotli payload: {e}") from None
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
    ids = _decode(blob, length)
    if ids.dtype != np.uint8 or ids.shape != (length,):
        raise EntropyDecodeError(f"{what} ids are {ids.dtype} {ids.shape}, expected uint8 ({length},)")
    if int(ids.max()) >= clusters:
        raise EntropyDecodeError(f"{what} id {int(ids.max())} is not below the cluster count {clusters}")
    return ids.astype(np.int64)


def _decode_context(r: _Reader, data: bytes, shape: tuple[int, ...], dt: np.dtype, max_symbols: int) -> np.ndarray:
    import constriction

    from pgolf.pack import context as cx

    if len(shape) < 2 or shape[0] < 1:
        raise EntropyDecodeError(f"context mode needs a non-empty matrix, got shape {shape}")
    nr = shape[0]
    nc = math.prod(shape[1:])
    info = np.iinfo(dt)
    lo = r.svarint("alphabet start", int(info.min), int(info.max))
    span = r.uvarint("alphabet span", int(info.max) - lo)
    br = r.uvarint("row clusters", min(cx.MAX_CLUSTERS, nr))
    bc = r.uvarint("column clusters", min(cx.MAX_CLUSTERS, nc))
    if br == 0 or bc == 0:
        raise EntropyDecodeError("zero row or column clusters")
    rows = _read_ids(r, data, nr, br, "row")
    cols = _read_ids(r, data, nc, bc, "column")
    sizes = np.bincount(rows, minlength=br)[:, None] * np.bincount(cols, minlength=bc)[None, :]
    models, need = [], 0.0
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
        need += _min_bits(table[present], n_ctx)
        models.append((off, np.flatnonzero(present), table[present]))
    payload = data[r.pos :]
    coded = any(m is not None and m[1] is not None for m in models)
    if coded and (not payload or payload[-1] == 0):
        raise EntropyDecodeError("missing or non-canonical payload")
    if not coded and payload:
        raise EntropyDecodeError("trailing bytes after a payload-free context stream")
    if need > 8 * len(payload) + _SLACK_BITS:
        raise EntropyDecodeError(f"payload of {len(payload)} bytes is too short for {nr * nc} symbols")
    words = np.frombuffer(payload + b"\x00" * (-len(payload) % 4), dtype="<u4").astype(np.uint32)
    coder = constriction.stream.stack.AnsCoder(words)
    out = np.empty((nr, nc), dtype=dt)  # every cell is written: the contexts tile the matrix
    for (ra, cb), m in zip(cx.context_order(rows, cols), models):
        if m is None:
            continue
        off, slots, weights = m
        if slots is None:
            out[np.ix_(ra, cb)] = lo + off
            continue
        values = (np.arange(lo + off, lo + off + int(slots[-1]) + 1, dtype=np.int64)[slots]).astype(dt)
        block = values[coder.decode(_model(weights), ra.size * cb.size)]
        out[np.ix_(ra, cb)] = block.reshape(ra.size, cb.size)
    if not coder.is_empty():
        raise EntropyDecodeError("payload not fully consumed (corrupt stream)")
    return out.reshape(shape)


def _decode(data: bytes, max_symbols: int) -> np.ndarray:
    r = _Reader(data)
    b0 = r.byte()
    if b0 >> 5 != FORMAT_VERSION:
        raise EntropyDecodeError(f"unknown format version {b0 >> 5} (expected {FORMAT_VERSION})")
    mode, dt = (b0 >> 2) & 7, _DTYPES[b0 & 3]
    if mode > _BROTLI_T:
        raise EntropyDecodeError(f"unknown mode {mode}")
    ndim = r.uvarint("ndim", _MAX_NDIM)
    shape = tuple(r.uvarint("dimension", max_symbols) for _ in range(ndim))
    n = math.prod(shape)
    if n > max_symbols:
        raise EntropyDecodeError(f"shape {shape} has {n} elements, over the limit {max_symbols}")
    info = np.iinfo(dt)

    if mode == _EMPTY or n == 0:
        if mode != _EMPTY or n != 0:
            raise EntropyDecodeError(f"mode {mode} does not match the element count {n}")
        if r.pos != len(data):
            raise EntropyDecodeError("trailing bytes after an empty array")
        return np.empty(shape, dtype=dt)
    if mode == _RAW:
        if len(data) - r.pos != n * dt.itemsize:
            raise EntropyDecodeError(f"raw payload of {len(data) - r.pos} bytes does not hold {n} {dt} elements")
        return np.frombuffer(data, dtype=dt.newbyteorder("<"), offset=r.pos).astype(dt).reshape(shape)
    if mode == _CONSTANT:
        value = r.svarint("constant value", int(info.min), int(info.max))
        if r.pos != len(data):
            raise EntropyDecodeError("trailing bytes after a constant array")
        return np.full(shape, value, dtype=dt)
    if mode in (_BROTLI, _BROTLI_T):
        return _decode_brotli(data[r.pos :], shape, dt, transpose=mode == _BROTLI_T)
    if mode == _CONTEXT:
        return _decode_context(r, data, shape, dt, max_symbols)

    lo = r.svarint("alphabet start", int(info.min), int(info.max))
    span = r.uvarint("alphabet span", int(info.max) - lo)
    if span == 0:
        raise EntropyDecodeError("single-symbol alphabet in a coded stream")
    table = _read_table(r, span + 1, n if mode == _COUNTS else _MAX_WEIGHT)
    present = table > 0
    weights = table[present]
    total = int(weights.sum())
    if mode == _COUNTS and total != n:
        raise EntropyDecodeError(f"histogram counts sum to {total}, but the shape has {n} elements")

    payload = data[r.pos :]
    if not payload or payload[-1] == 0:
        raise EntropyDecodeError("missing or non-canonical payload")
    payload_bits = 8 * len(payload)
    # Lower bound on the bits n symbols need. Every symbol costs at least -log2 of the largest model probability
    # (after constriction's 2^-24 fixed-point rounding); with exact counts, the empirical entropy is a tighter bound.
    need = _min_bits(weights, n)
    if mode == _COUNTS:
        w = weights.astype(np.float64)
        need = max(need, float(np.sum(w * (math.log2(total) - np.log2(w)))))
    if need > payload_bits + _SLACK_BITS:
        raise EntropyDecodeError(f"payload of {len(payload)} bytes is too short for {n} symbols")

    import constriction

    words = np.frombuffer(payload + b"\x00" * (-len(payload) % 4), dtype="<u4").astype(np.uint32)
    coder = constriction.stream.stack.AnsCoder(words)
    model = _model(weights)
    values = np.arange(lo, lo + span + 1, dtype=np.int64)[present].astype(dt)
    out = np.empty(n, dtype=dt)
    for start in range(0, n, _CHUNK):
        m = min(_CHUNK, n - start)
        idx = coder.decode(model, m)
        out[start : start + m] = values[idx]
    if not coder.is_empty():
        raise EntropyDecodeError("payload not fully consumed (corrupt stream)")
    if mode == _COUNTS:
        got = _histogram(out)[1]
        if got.size != table.size or not np.array_equal(got, table):
            raise EntropyDecodeError("decoded histogram differs from the stored counts (corrupt stream)")
    return out.reshape(shape)
