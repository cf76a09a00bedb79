"""Order-0 rANS coding of quantized weight codes (int8/int16 arrays) with a per-tensor histogram model.

Compressors such as zstd-22, brotli-11 and lzma-9e spend 1.4-6 % more than the order-0 entropy on int8-stored
codes; rANS with the tensor's own histogram comes within ~0.01 % of it, side info included
(docs/techniques.md#sdclip-entropy). The coder is constriction's `AnsCoder` (a stack) with a `Categorical` model.

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

Version 2 (byte 0 = (2 << 5) | (0 << 2) | dtype) has one mode, ADAPTIVE (models "context" and "best"): lo, span,
then pgolf.pack.adaptive's body (rows decoded one at a time in a stored order with counts learnt from the rows
before; tried on matrices of <= 64 symbols where the version-1 modes beat order-0 by 2 %). Older readers reject it
with a clean "unknown format version" error.

The weight table holds span + 1 slots (symbols lo..hi); a present symbol has weight >= 1, a run of r absent
symbols is written as 0, r - 1. In COUNTS mode the weights are the exact counts (they sum to the size, and the
decoder checks the decoded histogram against them); in WEIGHTS mode they are the counts rescaled to about 2^p in
total, with p chosen per tensor to minimise table bytes + cross-entropy bits. The payload is the rANS stream as
little-endian uint32 words with the zero high bytes of the last word dropped.

encode_codes(x) writes modes 0-4 only (order-0, the "rans" artifact codec); encode_codes(x, model="best") also
tries the context model (2-D and larger arrays) and brotli-11 (row- and column-major), and keeps the smallest
(the "rans-ctx" codec); model="context" skips the brotli trials (quick sizing); both also try ADAPTIVE. Modes 5-7
were added inside format version 1: older readers reject them with a clean "unknown mode" error. On arrays of 128 KiB
and more, a brotli-11 trial runs only where an estimate puts it within 1 % of the smallest stream so far
(entropy_modes._brotli_may_win: brotli-3 of all the bytes, brotli-11 of a sample); bench/pack_encode_time.py
measures what that saves and costs.
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

from pgolf.pack.entropy_modes import (
    _brotli_may_win,
    _decode_brotli,
    _decode_context,
    _encode_brotli,
    _encode_context,
)
from pgolf.pack.rans_core import (
    _ADAPTIVE,
    _BROTLI,
    _BROTLI_T,
    _CONSTANT,
    _CONTEXT,
    _COUNTS,
    _DTYPES,
    _EMPTY,
    _MAX_NDIM,
    _MAX_WEIGHT,
    _RAW,
    _SLACK_BITS,
    FORMAT_VERSION,
    MAX_SYMBOLS,
    EntropyDecodeError,
    _choose_weights,
    _header,
    _histogram,
    _min_bits,
    _model,
    _put_table,
    _put_uvarint,
    _read_table,
    _Reader,
    _symbol_lut,
    _zigzag,
)

MODELS = ("order0", "context", "best")
_CONTEXT_MIN_SIZE = 4096  # smaller arrays cannot repay the cluster ids and extra tables
_CHUNK = 1 << 22  # symbols per constriction call: bounds the int32 temporaries to 16 MiB
ADAPTIVE_GATE = 0.98


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
    row/column context model (pgolf.pack.context) and brotli-11 of the raw bytes in row- and column-major order (on
    arrays of 128 KiB and more, only where an estimate says brotli may win; see the module docstring), so it is never
    larger than order-0 or context rANS (plus a header of a few bytes). model="context": the smaller of order-0
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
    v1 = _encode_v1(arr, model, best)
    return min([v1, _encode_adaptive(arr, model, best, v1) or v1], key=len)  # ties keep the version-1 stream


def _encode_v1(arr: np.ndarray, model: str, order0: bytes | None = None) -> bytes:
    """Smallest of the version-1 modes model allows (order-0, context, and for "best" brotli row/column-major)."""
    order0 = _encode_order0(arr) if order0 is None else order0
    if model == "order0" or order0[0] >> 2 & 7 in (_EMPTY, _CONSTANT):
        return order0
    ctx = None
    if arr.ndim >= 2 and arr.size >= _CONTEXT_MIN_SIZE and arr.shape[0] > 1:
        ctx = _encode_context(arr)
    candidates = [order0]
    if model == "best":  # a brotli-11 trial only where an estimate says it may beat the smallest so far
        bound = min(len(order0), len(ctx) if ctx is not None else len(order0))
        for transpose in (False, True) if arr.ndim >= 2 and arr.shape[0] > 1 else (False,):
            if _brotli_may_win(arr, transpose, bound):
                candidates.append(_encode_brotli(arr, transpose=transpose))
    if ctx is not None:
        candidates.append(ctx)
    return min(candidates, key=len)  # ties keep the earlier (simpler) mode


def _encode_adaptive(arr: np.ndarray, model: str, order0: bytes, v1: bytes) -> bytes | None:
    """Mode ADAPTIVE (pgolf.pack.adaptive) when the array is a matrix of narrow codes with row structure: tried only
    where the version-1 modes already beat order-0 by ADAPTIVE_GATE (bounds encode time on i.i.d. matrices)."""
    from pgolf.pack import adaptive as ad

    if arr.ndim < 2 or not 2 * ad.MIN_ROWS <= arr.shape[0] <= ad.MAX_ROWS or arr.size > ad.MAX_SYMBOLS:
        return None
    if len(v1) > ADAPTIVE_GATE * len(order0):
        return None
    mat = arr.reshape(arr.shape[0], -1).astype(np.int64)
    lo, span = int(mat.min()), int(mat.max() - mat.min())
    if span + 1 > ad.MAX_ALPHABET or span == 0:
        return None
    out = _header(arr, 0, version=2)
    _put_uvarint(out, _zigzag(lo))
    _put_uvarint(out, span)
    return bytes(out) + ad.encode_body(mat, lo, span, lambda a: _encode_v1(a.astype(arr.dtype), model))


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


def _decode_adaptive(r: _Reader, data: bytes, shape: tuple[int, ...], dt: np.dtype) -> np.ndarray:
    from pgolf.pack import adaptive as ad

    if len(shape) < 2 or shape[0] < 1:
        raise EntropyDecodeError(f"adaptive mode needs a non-empty matrix, got shape {shape}")
    info = np.iinfo(dt)
    lo = r.svarint("alphabet start", int(info.min), int(info.max))
    span = r.uvarint("alphabet span", int(info.max) - lo)
    return ad.decode_body(r, data, shape, dt, lo, span)


def _decode(data: bytes, max_symbols: int) -> np.ndarray:
    r = _Reader(data)
    b0 = r.byte()
    if b0 >> 5 not in (FORMAT_VERSION, 2):
        raise EntropyDecodeError(f"unknown format version {b0 >> 5} (expected {FORMAT_VERSION} or 2)")
    mode, dt = (b0 >> 2) & 7, _DTYPES[b0 & 3]
    if mode > _BROTLI_T or (b0 >> 5 == 2 and mode != _ADAPTIVE):
        raise EntropyDecodeError(f"unknown mode {mode} in a version-{b0 >> 5} stream")
    ndim = r.uvarint("ndim", _MAX_NDIM)
    shape = tuple(r.uvarint("dimension", max_symbols) for _ in range(ndim))
    n = math.prod(shape)
    if n > max_symbols:
        raise EntropyDecodeError(f"shape {shape} has {n} elements, over the limit {max_symbols}")
    info = np.iinfo(dt)
    if b0 >> 5 == 2:
        return _decode_adaptive(r, data, shape, dt)

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
