"""Shared pieces of pgolf.pack.entropy's streams: constants, varints, the bounded header reader, histogram weight
tables and the constriction categorical model (split out of entropy.py; the stream layout is documented there)."""

from __future__ import annotations

import math

import numpy as np

FORMAT_VERSION = 1
MAX_SYMBOLS = 2**31
"""Default cap on the element count decode_codes accepts (the header is checked against it before allocating)."""

_EMPTY, _CONSTANT, _COUNTS, _WEIGHTS, _RAW, _CONTEXT, _BROTLI, _BROTLI_T = 0, 1, 2, 3, 4, 5, 6, 7
_ADAPTIVE = 0  # the only mode of version-2 streams (pgolf.pack.adaptive)
_DTYPES = (np.dtype(np.int8), np.dtype(np.uint8), np.dtype(np.int16), np.dtype(np.uint16))
_MAX_NDIM = 32
_MAX_WEIGHT = 2**32
_PRECISION = 24  # fixed-point bits of constriction's default categorical model
_SLACK_BITS = 128  # the rANS state may hold this much more than the payload length shows


class EntropyDecodeError(ValueError):
    """The bytes given to decode_codes are not a valid encoding (truncated, corrupted or over the size limit)."""


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

    def alphabet(self, dt: np.dtype) -> tuple[int, int]:
        """(lo, span) of a coded stream's alphabet lo..lo+span, within dt's range."""
        info = np.iinfo(dt)
        lo = self.svarint("alphabet start", int(info.min), int(info.max))
        return lo, self.uvarint("alphabet span", int(info.max) - lo)

    def svarint(self, what: str, lo: int, hi: int) -> int:
        z = self.uvarint(what, 2 * max(abs(lo), abs(hi)) + 1)
        v = (z >> 1) ^ -(z & 1)
        if not lo <= v <= hi:
            raise EntropyDecodeError(f"{what} = {v} outside [{lo}, {hi}]")
        return v


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
    best_cost = 8 * int(_uvarint_lens(best_w).sum()) + _xent_bits(c, c)
    for p in range(1, max(1, n.bit_length() - 1)):
        w = np.maximum(1, np.rint(c * (2.0**p / n))).astype(np.int64)
        cost = 8 * int(_uvarint_lens(w).sum()) + _xent_bits(c, w)
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


def _header(arr: np.ndarray, mode: int, *fields: int, version: int = FORMAT_VERSION) -> bytearray:
    """Byte 0, ndim and the dimensions, then `fields`: the first (the alphabet start lo) zigzag-mapped, the others
    (alphabet span, cluster counts) as they are."""
    out = bytearray([(version << 5) | (mode << 2) | _DTYPES.index(arr.dtype)])
    values = [arr.ndim, *arr.shape]
    if fields:
        values += [_zigzag(fields[0]), *fields[1:]]
    for v in values:
        _put_uvarint(out, int(v))
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


def _xent_bits(counts: np.ndarray, weights: np.ndarray) -> float:
    """Σ counts · (log2 Σ weights − log2 weights): bits of symbols with these counts under a categorical model with
    these (positive) weights; the entropy bits when weights = counts."""
    return float(np.sum(counts * (math.log2(weights.sum()) - np.log2(weights))))


def _min_bits(weights: np.ndarray, n: int) -> float:
    """Fewest bits n symbols can take under a categorical model with these weights (>= 2 of them): each costs at
    least -log2 of the largest probability after constriction's 2^-24 fixed-point rounding. (One expression, like
    _xent_bits: the single-file script drops the decoders' size checks that call them, and then them.)"""
    return -n * math.log2(min(1.0 - (len(weights) - 1) * 2.0**-_PRECISION,
                              int(weights.max()) / int(weights.sum()) + len(weights) * 2.0**-_PRECISION))
