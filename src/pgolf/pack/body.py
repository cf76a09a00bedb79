"""The artifact body every codec shares: u32 header length ‖ UTF-8 JSON header ‖ raw tensor bytes (the layout is
described in pack/container.py). The container's codecs (pack/container.py) and the lrzip-groups codec
(pack/lrzip_artifact.py) differ only in how they compress this body; both build it and read it back here.

    rows, chunks = layout_rows(qs)              # encode: the tensor rows (offsets into the raw payload), their bytes
    body = pack_body(header, payload)
    header, payload = split_body(decompress_bounded(blob, "brotli", MAX_BODY_BYTES))   # decode: trusts nothing
    qs = assemble(header, payload)              # tensor rows → QuantizedState (rows tile the payload, …)

Every refusal on decode is one `ArtifactError` naming the field, its value and what was expected; the semantic
checks (codes vs bits, finite values, the tensor table against the manifest's model) are pack/validate.py's.
"""

from __future__ import annotations

import json
import math
import struct
import sys
from typing import Any

import torch
from torch import Tensor

from pgolf.pack.codecs import CodecError, decompress
from pgolf.pack.format import (
    DTYPES, EXPANSION_FLOOR, FORMAT_ID, KINDS, MAX_BODY_BYTES, MAX_EXPANSION, MAX_HEADER_BYTES, MAX_NDIM,
    ArtifactError, is_uint, itemsize, short,
)
from pgolf.quant.apply import QuantizedState, dtype_name
from pgolf.quant.primitives import QuantizedTensor


# ------------------------------------------------------------------------------------------------ encode

def tensor_bytes(t: Tensor) -> bytes:
    """The tensor's raw little-endian bytes (CPU, contiguous)."""
    if sys.byteorder != "little":  # pragma: no cover - every supported platform is little-endian
        raise RuntimeError("pgolf artifacts are little-endian; big-endian hosts are not supported")
    t = t.detach().to("cpu").contiguous().reshape(-1)
    return t.view(torch.uint8).numpy().tobytes() if t.numel() else b""


def layout_rows(qs: QuantizedState) -> tuple[list[dict], list[bytes]]:
    """Blob rows (with offsets into the raw payload) and their raw bytes, in storage order."""
    blobs: list[tuple[dict, Tensor]] = []
    for name, qt in qs.tensors.items():
        blobs.append(({"name": name, "kind": "q", "bits": qt.bits, "method": qt.method}, qt.q))
    for name, qt in qs.tensors.items():
        blobs.append(({"name": name, "kind": "scale"}, qt.scale))
    for name, qt in qs.tensors.items():
        for key, t in qt.extras.items():
            blobs.append(({"name": name, "kind": "extra", "key": key}, t))
    for name, t in qs.passthrough.items():
        blobs.append(({"name": name, "kind": "passthrough"}, t))
    rows, chunks, offset = [], [], 0
    for row, t in blobs:
        name = dtype_name(t.dtype)
        if name not in DTYPES:
            raise ValueError(f"tensor {row['name']} ({row['kind']}) has dtype {name}, not storable; "
                             f"allowed: {', '.join(DTYPES)}")
        if row["kind"] == "q" and name != "int8":
            raise ValueError(f"tensor {row['name']}: codes must be int8, got {name}")
        raw = tensor_bytes(t)
        rows.append({**row, "dtype": name, "shape": list(t.shape), "offset": offset, "nbytes": len(raw)})
        chunks.append(raw)
        offset += len(raw)
    return rows, chunks


def dtype_table(qs: QuantizedState) -> dict[str, str]:
    """Original dtype of every stored tensor, in qs.dtypes order; unlisted ones default to float32 (quantized) or
    their stored dtype (passthrough). Rejects overlaps, stale entries and dtypes outside the allowlist."""
    both = set(qs.tensors) & set(qs.passthrough)
    if both:
        raise ValueError(f"tensors both quantized and passthrough: {sorted(both)[:3]}")
    stale = set(qs.dtypes) - set(qs.tensors) - set(qs.passthrough)
    if stale:
        raise ValueError(f"dtypes listed for tensors that are not stored: {sorted(stale)[:3]}")
    table = dict(qs.dtypes)
    for name in qs.tensors:
        table.setdefault(name, "float32")
    for name, t in qs.passthrough.items():
        table.setdefault(name, dtype_name(t.dtype))
    if any(d not in DTYPES for d in table.values()):
        bad = [(n, d) for n, d in table.items() if d not in DTYPES]
        raise ValueError(f"original dtypes outside the allowlist {', '.join(DTYPES)}: {dict(bad[:3])}")
    return table


def pack_body(header: dict, payload: bytes) -> bytes:
    """u32 header length ‖ the header as compact UTF-8 JSON ‖ payload."""
    try:
        header_bytes = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    except (TypeError, ValueError) as e:
        raise ValueError(f"artifact manifest is not JSON-serializable: {e}") from e
    return struct.pack("<I", len(header_bytes)) + header_bytes + payload


# ------------------------------------------------------------------------------------------------ decode

def decompress_bounded(data: bytes, codec: str, limit: int) -> bytes:
    """Decompress at most min(limit, max(EXPANSION_FLOOR, MAX_EXPANSION × compressed size)) bytes: a bomb is refused
    after a few MiB of work, not after inflating the full 256 MiB."""
    bound = min(limit, max(EXPANSION_FLOOR, MAX_EXPANSION * len(data)))
    try:
        return decompress(data, codec, max_size=bound)
    except CodecError as e:
        raise ArtifactError(f"artifact payload does not decompress: {e}"
                            + (f" ({MAX_EXPANSION}× its {len(data):,} compressed bytes; real artifacts expand < 10×)"
                               if bound < limit else "")) from e


def split_body(body: bytes) -> tuple[dict[str, Any], memoryview]:
    """A decompressed body → (its checked JSON header, a view of the raw payload after it)."""
    if len(body) < 4:
        raise ArtifactError(f"artifact body is {len(body)} bytes, too short for its header length")
    (hlen,) = struct.unpack_from("<I", body, 0)
    if hlen > min(MAX_HEADER_BYTES, len(body) - 4):
        raise ArtifactError(f"header length {hlen:,} exceeds the {len(body) - 4:,} bytes available")
    return parse_header(body[4 : 4 + hlen]), memoryview(body)[4 + hlen :]


def parse_header(raw: bytes) -> dict[str, Any]:
    """The JSON header, its required fields typed and its dtype table within the allowlist."""
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ArtifactError(f"artifact header is not valid UTF-8 JSON: {str(e)[:200]}") from None
    if not isinstance(header, dict):
        raise ArtifactError("artifact header is not a JSON object")
    if header.get("format") != FORMAT_ID:
        raise ArtifactError(f"artifact header format {str(header.get('format'))[:50]!r} is not {FORMAT_ID!r}")
    for key, kind in (("manifest", dict), ("dtypes", dict), ("tensors", list)):
        if not isinstance(header.get(key), kind):
            raise ArtifactError(f"artifact header field {key!r} is missing or not a {kind.__name__}")
    for key in ("payload_bytes", "payload_crc32"):
        if not is_uint(header.get(key)):
            raise ArtifactError(f"artifact header field {key!r} is missing or not a non-negative integer")
    for name, dt in header["dtypes"].items():
        if not (isinstance(dt, str) and dt in DTYPES):
            raise ArtifactError(f"tensor {name[:100]!r}: original dtype {str(dt)[:30]!r} is not allowed")
    return header


def check_row(i: int, row: Any, expected_offset: int, payload_len: int) -> None:
    """Tensor row i is well formed and starts where the previous one ended, within the payload."""
    if not isinstance(row, dict):
        raise ArtifactError(f"tensor row {i} is {type(row).__name__}, expected an object")
    where = f"tensor row {i}"
    if not isinstance(row.get("name"), str):
        raise ArtifactError(f"{where}: 'name' is {short(row.get('name'))}, expected a string")
    where = f"tensor row {i} ({row['name'][:100]!r})"
    if not (isinstance(row.get("kind"), str) and row["kind"] in KINDS):
        raise ArtifactError(f"{where}: kind {short(row.get('kind'), 30)} is not one of {', '.join(KINDS)}")
    if not (isinstance(row.get("dtype"), str) and row["dtype"] in DTYPES):
        raise ArtifactError(f"{where}: dtype {short(row.get('dtype'), 30)} is not allowed; allowed: "
                            f"{', '.join(DTYPES)}")
    shape = row.get("shape")
    if not isinstance(shape, list) or len(shape) > MAX_NDIM or not all(is_uint(d) for d in shape):
        raise ArtifactError(f"{where}: shape {short(shape)} must be a list of ≤ {MAX_NDIM} non-negative integers")
    if math.prod(max(d, 1) for d in shape) > MAX_BODY_BYTES:
        raise ArtifactError(f"{where}: shape {shape} is implausibly large (over {MAX_BODY_BYTES:,} elements)")
    offset, nbytes = row.get("offset"), row.get("nbytes")
    if not is_uint(offset) or not is_uint(nbytes):
        raise ArtifactError(f"{where}: offset {short(offset)} and nbytes {short(nbytes)} must be non-negative "
                            "integers")
    if offset != expected_offset:
        raise ArtifactError(f"{where}: offset {offset:,} breaks the contiguous layout (expected {expected_offset:,})")
    if offset + nbytes > payload_len:
        raise ArtifactError(f"{where}: bytes [{offset:,}, {offset + nbytes:,}) run past the "
                            f"{payload_len:,}-byte payload")
    size = itemsize(row["dtype"])
    if math.prod(shape) * size != nbytes:
        raise ArtifactError(f"{where}: shape {shape[:MAX_NDIM]} × {size} bytes ≠ nbytes {nbytes:,}")
    if row["kind"] == "q":
        if row["dtype"] != "int8" or not is_uint(row.get("bits")) or not 1 <= row["bits"] <= 8:
            raise ArtifactError(f"{where}: codes must be int8 with 1 ≤ bits ≤ 8, got dtype {row['dtype']} "
                                f"bits {short(row.get('bits'))}")
        if not isinstance(row.get("method"), str):
            raise ArtifactError(f"{where}: 'method' is {short(row.get('method'))}, expected a string")
    if row["kind"] == "extra" and not isinstance(row.get("key"), str):
        raise ArtifactError(f"{where}: extra tensor without a string 'key'")


def row_tensor(payload: memoryview, row: dict) -> Tensor:
    dtype, shape = DTYPES[row["dtype"]], tuple(row["shape"])
    if row["nbytes"] == 0:
        return torch.empty(shape, dtype=dtype)
    buf = bytearray(payload[row["offset"] : row["offset"] + row["nbytes"]])
    return torch.frombuffer(buf, dtype=torch.uint8).view(dtype).reshape(shape)


def assemble(header: dict, payload: memoryview) -> QuantizedState:
    """The QuantizedState the header's tensor rows describe (every row checked before its bytes are copied)."""
    rows = header["tensors"]
    # all rows first: nothing is copied out of a payload a later row contradicts (each row starts where the
    # previous, already checked one ends; the checks have no side effects, so the single-file script drops them)
    for k, checked in enumerate(rows):
        check_row(k, checked, rows[k - 1]["offset"] + rows[k - 1]["nbytes"] if k else 0, len(payload))
    end = rows[-1]["offset"] + rows[-1]["nbytes"] if rows else 0
    if end != len(payload):
        raise ArtifactError(f"{len(payload) - end:,} payload bytes are not described by any tensor row")
    codes: dict[str, tuple[dict, Tensor]] = {}
    scales: dict[str, Tensor] = {}
    extras: dict[str, dict[str, Tensor]] = {}
    passthrough: dict[str, Tensor] = {}
    for row in rows:
        name, kind = row["name"], row["kind"]
        t = row_tensor(payload, row)
        if kind == "extra":
            slot = extras.setdefault(name, {})
            if row["key"] in slot:
                raise ArtifactError(f"tensor {name[:100]!r}: extra {row['key'][:50]!r} appears twice")
            slot[row["key"]] = t
            continue
        table = {"q": codes, "scale": scales, "passthrough": passthrough}[kind]
        if name in table:
            raise ArtifactError(f"tensor {name[:100]!r}: {kind} appears twice")
        table[name] = (row, t) if kind == "q" else t
    if set(codes) != set(scales):
        odd = sorted(set(codes) ^ set(scales))[:3]
        raise ArtifactError(f"quantized tensors without both codes and scale: {odd}")
    if set(codes) & set(passthrough):
        both = sorted(set(codes) & set(passthrough))[:3]
        raise ArtifactError(f"tensors stored both quantized and passthrough: {both}")
    if set(extras) - set(codes):
        raise ArtifactError(f"extras for unknown quantized tensors: {sorted(set(extras) - set(codes))[:3]}")
    dtypes: dict[str, str] = header["dtypes"]
    if set(dtypes) != set(codes) | set(passthrough):
        odd = sorted(set(dtypes) ^ (set(codes) | set(passthrough)))[:3]
        raise ArtifactError(f"the dtype table does not list exactly the stored tensors (differs on {odd})")
    tensors: dict[str, QuantizedTensor] = {}
    for name, (row, q) in codes.items():
        try:
            tensors[name] = QuantizedTensor(q=q, scale=scales[name], bits=row["bits"], method=row["method"],
                                            extras=extras.get(name, {}))
        except ValueError as e:
            raise ArtifactError(f"tensor {name[:100]!r}: {e}") from None
    return QuantizedState(tensors=tensors, passthrough=passthrough, dtypes=dict(dtypes))
