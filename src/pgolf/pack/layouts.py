"""The records' code layouts for general compressors: transposition, role grouping, row similarity ordering.

R0427's per-group serializer (`_serialize_pergroup`) groups int8 code tensors by role across layers, reorders the
rows of some groups by a greedy L1 nearest-neighbour walk (`_similarity_sort_l1`, permutation stored as uint16),
stores each 2-D tensor transposed (column-major) and compresses each group alone. These pure functions rebuild
those layouts so bench/pack.py can measure each one with zstd-22 / lzma-9 / brotli-11 on the same codes as the
entropy coders (measured: none of them beats rans-ctx, see BENCHMARKS.md "Packing"; the container does not use them).

    blobs, perms = arrange(codes, transpose=True, group=True, simsort=True)   # codes: {name: 2-D int8 array}
    assert restore(blobs, perms, {n: a.shape for n, a in codes.items()}, transpose=True, group=True) == codes
"""

from __future__ import annotations

import re

import numpy as np

_LAYER = re.compile(r"\.\d+\.")


def role_of(name: str) -> str:
    """Tensor role without its layer index: blocks.3.mlp.fc.weight → blocks.*.mlp.fc.weight."""
    return _LAYER.sub(".*.", name)


def role_groups(names: list[str]) -> list[list[str]]:
    """Names grouped by role, groups in first-appearance order, names in their given order."""
    groups: dict[str, list[str]] = {}
    for n in names:
        groups.setdefault(role_of(n), []).append(n)
    return list(groups.values())


def similarity_order(q: np.ndarray) -> np.ndarray:
    """Greedy L1 nearest-neighbour row order starting at row 0 (R0427's `_similarity_sort_l1`); O(rows² · cols)."""
    rows = _matrix(q).astype(np.int16)
    n = rows.shape[0]
    order = np.empty(n, dtype=np.int64)
    if n == 0:
        return order
    left = np.ones(n, dtype=bool)
    cur = 0
    for i in range(n):
        order[i] = cur
        left[cur] = False
        if i == n - 1:
            break
        idx = np.flatnonzero(left)
        d = np.abs(rows[idx] - rows[cur]).sum(1, dtype=np.int64)
        cur = int(idx[int(d.argmin())])
    return order


def _dims(shape: tuple[int, ...]) -> tuple[int, int]:
    """(rows, columns) a tensor is viewed as: (shape[0], the rest) for ndim >= 2, one row otherwise."""
    if len(shape) >= 2:
        return shape[0], int(np.prod(shape[1:], dtype=np.int64))
    return 1, int(np.prod(shape, dtype=np.int64))


def _matrix(a: np.ndarray) -> np.ndarray:
    return a.reshape(_dims(a.shape))


def arrange(codes: dict[str, np.ndarray], *, transpose: bool = False, group: bool = False,
            simsort: bool = False) -> tuple[list[bytes], dict[str, np.ndarray]]:
    """Code bytes laid out as asked: one blob per tensor, or per role group (group=True); rows permuted by
    similarity_order (simsort=True, permutations returned); each tensor viewed as (rows, rest) and stored
    column-major (transpose=True)."""
    perms: dict[str, np.ndarray] = {}
    parts: dict[str, bytes] = {}
    for name, a in codes.items():
        m = _matrix(np.asarray(a))
        if simsort and m.shape[0] > 1:
            perms[name] = similarity_order(m)
            m = m[perms[name]]
        parts[name] = np.ascontiguousarray(m.T if transpose else m).tobytes()
    if not group:
        return [parts[n] for n in codes], perms
    return [b"".join(parts[n] for n in g) for g in role_groups(list(codes))], perms


def restore(blobs: list[bytes], perms: dict[str, np.ndarray], shapes: dict[str, tuple[int, ...]], *,
            transpose: bool = False, group: bool = False, dtype: np.dtype = np.dtype(np.int8)) -> dict[str, np.ndarray]:
    """Inverse of `arrange` given the tensors' shapes (in the original order) and dtype."""
    names = list(shapes)
    order = [n for g in role_groups(names) for n in g] if group else names
    data = b"".join(blobs)
    out, pos = {}, 0
    for name in order:
        shape = tuple(shapes[name])
        rows, cols = _dims(shape)
        nbytes = rows * cols * dtype.itemsize
        m = np.frombuffer(data[pos : pos + nbytes], dtype=dtype)
        pos += nbytes
        m = m.reshape(cols, rows).T if transpose else m.reshape(rows, cols)
        if name in perms:
            inv = np.empty_like(perms[name])
            inv[perms[name]] = np.arange(perms[name].size)
            m = m[inv]
        out[name] = np.ascontiguousarray(m).reshape(shape)
    if pos != len(data):
        raise ValueError(f"layout blobs hold {len(data)} bytes, the shapes describe {pos}")
    return {n: out[n] for n in names}
