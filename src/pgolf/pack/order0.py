"""The order-0 rANS stream of pgolf.pack.entropy (the layout is documented there): the encoder, the header reader
and the decoder of the order-0 modes, and the order-0 entropy bound.

    blob = encode_order0(arr)                  # arr contiguous int8/uint8/int16/uint16, native byte order
    arr = decode_order0(blob, max_symbols)     # EntropyDecodeError on malformed input
    order0_entropy_bytes(arr)                  # the Shannon bound under arr's own histogram, in bytes

Its own module, below entropy.py (which picks among all the modes) and the modes that code their cluster ids as
order-0 streams (entropy_modes.py: context; adaptive.py), so that none of them imports the dispatcher.
"""

from __future__ import annotations

import math

import numpy as np

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
    EntropyDecodeError,
    _choose_weights,
    _header,
    _histogram,
    _min_bits,
    _xent_bits,
    _model,
    _put_table,
    _read_table,
    _Reader,
    _symbol_lut,
)

CHUNK = 1 << 22  # symbols per constriction call: bounds the int32 temporaries to 16 MiB


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
    return _xent_bits(counts, counts) / 8.0


def encode_order0(arr: np.ndarray) -> bytes:
    """Order-0 rANS of a contiguous native-order array under its own histogram (or the empty, constant and raw
    modes when they are smaller); the "rans" codec's stream, and the id streams of the context and adaptive modes."""
    dt = arr.dtype
    flat = arr.reshape(-1)
    if flat.size == 0:
        return bytes(_header(arr, _EMPTY))
    lo, counts = _histogram(flat)
    if counts.size == 1:
        return bytes(_header(arr, _CONSTANT, lo))

    mode, table = _choose_weights(counts)
    out = _header(arr, mode, lo, counts.size - 1)
    _put_table(out, table)

    import constriction

    lut = _symbol_lut(dt, lo, table)
    unsigned = flat.view(np.dtype(f"u{dt.itemsize}"))
    model = _model(table[table > 0])
    coder = constriction.stream.stack.AnsCoder()
    for start in range(((flat.size - 1) // CHUNK) * CHUNK, -1, -CHUNK):  # last chunk first: a stack
        coder.encode_reverse(lut[unsigned[start : start + CHUNK]], model)
    payload = coder.get_compressed().astype("<u4").tobytes()
    coded = bytes(out) + payload.rstrip(b"\x00")  # the last word is nonzero, so at most 3 bytes go
    raw = _header(arr, _RAW)
    if len(raw) + flat.nbytes < len(coded):
        return bytes(raw) + flat.astype(dt.newbyteorder("<")).tobytes()
    return coded


# ------------------------------------------------------------------------------------------------ decode

def read_head(data: bytes, max_symbols: int) -> tuple[_Reader, int, int, np.dtype, tuple[int, ...], int]:
    """(reader after the header, format version, mode, dtype, shape, element count) of a stream, every field checked
    (version, mode, ndim, the element count against max_symbols) before anything is allocated."""
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
    return r, b0 >> 5, mode, dt, shape, n


def decode_order0(data: bytes, max_symbols: int) -> np.ndarray:
    """A version-1 order-0 stream (the cluster-id streams of the context and adaptive modes)."""
    r, version, mode, dt, shape, n = read_head(data, max_symbols)
    if version != FORMAT_VERSION or mode in (_CONTEXT, _BROTLI, _BROTLI_T):
        raise EntropyDecodeError(f"expected an order-0 stream, got mode {mode} of a version-{version} stream")
    return decode_order0_body(r, data, shape, dt, mode, n)


def decode_order0_body(r: _Reader, data: bytes, shape: tuple[int, ...], dt: np.dtype, mode: int, n: int) -> np.ndarray:
    """The array of a version-1 stream in an order-0 mode (empty, raw, constant, counts, weights) after its header."""
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
        value = r.svarint("constant value", int(np.iinfo(dt).min), int(np.iinfo(dt).max))
        if r.pos != len(data):
            raise EntropyDecodeError("trailing bytes after a constant array")
        return np.full(shape, value, dtype=dt)

    lo, span = r.alphabet(dt)
    if span == 0:
        raise EntropyDecodeError("single-symbol alphabet in a coded stream")
    table = _read_table(r, span + 1, n if mode == _COUNTS else _MAX_WEIGHT)
    present = table > 0
    weights = table[present]
    if mode == _COUNTS and int(weights.sum()) != n:
        raise EntropyDecodeError(f"histogram counts sum to {int(weights.sum())}, but the shape has {n} elements")

    payload = data[r.pos :]
    if not payload or payload[-1] == 0:
        raise EntropyDecodeError("missing or non-canonical payload")
    # Lower bound on the bits n symbols need (_min_bits); with exact counts, the empirical entropy is a tighter one.
    if max(_min_bits(weights, n), _xent_bits(weights, weights) if mode == _COUNTS else 0.0) > (
            8 * len(payload) + _SLACK_BITS):
        raise EntropyDecodeError(f"payload of {len(payload)} bytes is too short for {n} symbols")

    import constriction

    words = np.frombuffer(payload + b"\x00" * (-len(payload) % 4), dtype="<u4").astype(np.uint32)
    coder = constriction.stream.stack.AnsCoder(words)
    model = _model(weights)
    values = np.arange(lo, lo + span + 1, dtype=np.int64)[present].astype(dt)
    out = np.empty(n, dtype=dt)
    for start in range(0, n, CHUNK):
        m = min(CHUNK, n - start)
        idx = coder.decode(model, m)
        out[start : start + m] = values[idx]
    if not coder.is_empty():
        raise EntropyDecodeError("payload not fully consumed (corrupt stream)")
    if mode == _COUNTS:
        got = _histogram(out)[1]
        if got.size != table.size or not np.array_equal(got, table):
            raise EntropyDecodeError("decoded histogram differs from the stored counts (corrupt stream)")
    return out.reshape(shape)
