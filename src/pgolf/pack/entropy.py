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
from pgolf.pack.order0 import decode_order0_body, encode_order0, order0_entropy_bytes, read_head
from pgolf.pack.rans_core import (
    _BROTLI,
    _BROTLI_T,
    _CONSTANT,
    _CONTEXT,
    _DTYPES,
    _EMPTY,
    _MAX_NDIM,
    MAX_SYMBOLS,
    EntropyDecodeError,
    _header,
    _Reader,
)

MODELS = ("order0", "context", "best")
_CONTEXT_MIN_SIZE = 4096  # smaller arrays cannot repay the cluster ids and extra tables
ADAPTIVE_GATE = 0.98


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
    dt = arr.dtype.newbyteorder("=")  # native order (int8/uint8 are unchanged)
    if dt not in _DTYPES:
        raise TypeError(f"encode_codes takes int8/uint8/int16/uint16 codes, got {arr.dtype}")
    if arr.ndim > _MAX_NDIM:
        raise ValueError(f"at most {_MAX_NDIM} dimensions, got {arr.ndim}")
    if arr.size > MAX_SYMBOLS:
        raise ValueError(f"at most {MAX_SYMBOLS} elements, got {arr.size}")
    arr = np.ascontiguousarray(arr, dtype=dt)
    best = encode_order0(arr)
    if model == "order0" or best[0] >> 2 & 7 in (_EMPTY, _CONSTANT):
        return best
    v1 = _encode_v1(arr, model, best)
    return min([v1, _encode_adaptive(arr, model, best, v1) or v1], key=len)  # ties keep the version-1 stream


def _encode_v1(arr: np.ndarray, model: str, order0: bytes | None = None) -> bytes:
    """Smallest of the version-1 modes model allows (order-0, context, and for "best" brotli row/column-major)."""
    order0 = encode_order0(arr) if order0 is None else order0
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
    body = ad.encode_body(mat, lo, span, lambda a: _encode_v1(a.astype(arr.dtype), model))
    return bytes(_header(arr, 0, lo, span, version=2)) + body


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
    return ad.decode_body(r, data, shape, dt, *r.alphabet(dt), _decode)


def _decode(data: bytes, max_symbols: int) -> np.ndarray:
    r, version, mode, dt, shape, n = read_head(data, max_symbols)
    if version == 2:
        return _decode_adaptive(r, data, shape, dt)
    if n and mode in (_BROTLI, _BROTLI_T):
        return _decode_brotli(data[r.pos :], shape, dt, transpose=mode == _BROTLI_T)
    if n and mode == _CONTEXT:
        return _decode_context(r, data, shape, dt)
    return decode_order0_body(r, data, shape, dt, mode, n)
