"""The artifact file: a versioned, self-describing container with no pickle (style.md rules 12–13).

Layout (all integers little-endian):

    b"PGOLF\\0"  u8 format version (1)  u8 codec id  compressed(body)
    body = u32 header length  ‖  UTF-8 JSON header  ‖  raw tensor bytes, concatenated

The JSON header is {"format": "pgolf-v1", "manifest": {...caller's: model config, recipe, tokenizer sha...},
"dtypes": {name: original dtype}, "payload_bytes": n, "payload_crc32": c, "tensors": [blob rows]}. Each blob row
is {name, kind, dtype, shape, offset, nbytes} with kind q | scale | extra | passthrough; q rows also carry bits and
method, extra rows their key. Blobs are laid out in row order with no gaps: all int8 codes first, then the scales,
extras and passthrough tensors (the records' torch.save order, which compresses better than interleaving).

    blob = encode_artifact(qs, manifest, "zlib")
    qs, manifest = decode_artifact(blob)        # bit-exact inverse; ArtifactError on any malformed input
    write_artifact(path, blob)                  # atomic: temp file + rename

The decoder trusts nothing: magic, version, codec, decompressed size, header length, JSON shape, dtype allowlist,
shape × itemsize = nbytes, offsets tiling the payload, the payload CRC, scale/code consistency. Every failure is an
`ArtifactError` with a message; nothing allocates more than the (bounded) decompressed body.
"""

from __future__ import annotations

import json
import math
import os
import struct
import sys
import tempfile
import zlib
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from pgolf.pack.codecs import CODECS, CodecError, compress, decompress
from pgolf.quant.apply import QuantizedState, dtype_name
from pgolf.quant.primitives import QuantizedTensor

MAGIC = b"PGOLF\0"
FORMAT_VERSION = 1
FORMAT_ID = "pgolf-v1"
CODEC_IDS: dict[str, int] = {"zlib": 1, "zstd": 2, "lzma": 3, "brotli": 4}
MAX_BODY_BYTES = 1 << 30  # 1 GiB decompressed: ~60× the 16 MB cap, far above any real artifact
MAX_HEADER_BYTES = 64 << 20
MAX_NDIM = 8
DTYPES: dict[str, torch.dtype] = {
    "int8": torch.int8, "uint8": torch.uint8, "int16": torch.int16, "int32": torch.int32, "int64": torch.int64,
    "bool": torch.bool, "float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32,
    "float64": torch.float64,
}
KINDS = ("q", "scale", "extra", "passthrough")
_PREFIX = len(MAGIC) + 2

assert set(CODEC_IDS) == set(CODECS)


class ArtifactError(ValueError):
    """The bytes are not a valid pgolf artifact (corrupt, truncated, unknown version/codec, inconsistent)."""


# ------------------------------------------------------------------------------------------------ encode

def _raw(t: Tensor) -> bytes:
    if sys.byteorder != "little":  # pragma: no cover - every supported platform is little-endian
        raise RuntimeError("pgolf artifacts are little-endian; big-endian hosts are not supported")
    t = t.detach().to("cpu").contiguous().reshape(-1)
    return t.view(torch.uint8).numpy().tobytes() if t.numel() else b""


def encode_artifact(qs: QuantizedState, manifest: dict, codec: str) -> bytes:
    """Serialize a QuantizedState plus a JSON-able manifest; deterministic for equal inputs."""
    if codec not in CODEC_IDS:
        raise ValueError(f"unknown codec {codec!r}; valid codecs: {', '.join(CODECS)}")
    dtypes = _dtype_table(qs)
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
        raw = _raw(t)
        rows.append({**row, "dtype": name, "shape": list(t.shape), "offset": offset, "nbytes": len(raw)})
        chunks.append(raw)
        offset += len(raw)
    payload = b"".join(chunks)
    header = {"format": FORMAT_ID, "manifest": manifest, "dtypes": dtypes, "payload_bytes": len(payload),
              "payload_crc32": zlib.crc32(payload), "tensors": rows}
    try:
        header_bytes = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    except (TypeError, ValueError) as e:
        raise ValueError(f"artifact manifest is not JSON-serializable: {e}") from e
    body = struct.pack("<I", len(header_bytes)) + header_bytes + payload
    return MAGIC + bytes([FORMAT_VERSION, CODEC_IDS[codec]]) + compress(body, codec)


def _dtype_table(qs: QuantizedState) -> dict[str, str]:
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
    bad = {n: d for n, d in table.items() if d not in DTYPES}
    if bad:
        raise ValueError(f"original dtypes outside the allowlist {', '.join(DTYPES)}: {dict(list(bad.items())[:3])}")
    return table


def write_artifact(path: str | os.PathLike, data: bytes) -> None:
    """Write atomically (temp file in the same directory, fsync, rename): readers never see a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ------------------------------------------------------------------------------------------------ decode

def artifact_codec(data: bytes) -> str:
    """The codec named by an artifact's prefix (validates magic and version)."""
    if len(data) < _PREFIX or data[: len(MAGIC)] != MAGIC:
        raise ArtifactError("not a pgolf artifact (missing the PGOLF magic bytes)")
    version, codec_id = data[len(MAGIC)], data[len(MAGIC) + 1]
    if version != FORMAT_VERSION:
        raise ArtifactError(f"unsupported artifact format version {version}; this pgolf reads version "
                            f"{FORMAT_VERSION} ({FORMAT_ID})")
    for name, cid in CODEC_IDS.items():
        if cid == codec_id:
            return name
    raise ArtifactError(f"unknown codec id {codec_id} in artifact; known: "
                        + ", ".join(f"{cid}={n}" for n, cid in CODEC_IDS.items()))


def decode_artifact(data: bytes) -> tuple[QuantizedState, dict]:
    """Inverse of `encode_artifact` → (QuantizedState, manifest). Raises ArtifactError on any malformed input."""
    data = bytes(data)
    codec = artifact_codec(data)
    try:
        body = decompress(data[_PREFIX:], codec, max_size=MAX_BODY_BYTES)
    except CodecError as e:
        raise ArtifactError(f"artifact payload does not decompress: {e}") from e
    if len(body) < 4:
        raise ArtifactError(f"artifact body is {len(body)} bytes, too short for its header length")
    (hlen,) = struct.unpack_from("<I", body, 0)
    if hlen > min(MAX_HEADER_BYTES, len(body) - 4):
        raise ArtifactError(f"header length {hlen:,} exceeds the {len(body) - 4:,} bytes available")
    header = _parse_header(body[4 : 4 + hlen])
    payload = memoryview(body)[4 + hlen :]
    if header["payload_bytes"] != len(payload):
        raise ArtifactError(f"payload is {len(payload):,} bytes but the header declares {header['payload_bytes']:,}")
    if zlib.crc32(payload) != header["payload_crc32"]:
        raise ArtifactError("payload CRC32 mismatch: the tensor bytes are corrupt")
    return _assemble(header, payload), header["manifest"]


def _parse_header(raw: bytes) -> dict[str, Any]:
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
        if not _is_uint(header.get(key)):
            raise ArtifactError(f"artifact header field {key!r} is missing or not a non-negative integer")
    for name, dt in header["dtypes"].items():
        if not (isinstance(dt, str) and dt in DTYPES):
            raise ArtifactError(f"tensor {name[:100]!r}: original dtype {str(dt)[:30]!r} is not allowed")
    return header


def _is_uint(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _check_row(i: int, row: Any, expected_offset: int, payload_len: int) -> None:
    if not isinstance(row, dict):
        raise ArtifactError(f"tensor row {i} is not an object")
    where = f"tensor row {i}"
    if not isinstance(row.get("name"), str):
        raise ArtifactError(f"{where}: 'name' is missing or not a string")
    where = f"tensor row {i} ({row['name'][:100]!r})"
    if not (isinstance(row.get("kind"), str) and row["kind"] in KINDS):
        raise ArtifactError(f"{where}: kind {str(row.get('kind'))[:30]!r} is not one of {', '.join(KINDS)}")
    if not (isinstance(row.get("dtype"), str) and row["dtype"] in DTYPES):
        raise ArtifactError(f"{where}: dtype {str(row.get('dtype'))[:30]!r} is not allowed; allowed: "
                            f"{', '.join(DTYPES)}")
    shape = row.get("shape")
    if not isinstance(shape, list) or len(shape) > MAX_NDIM or not all(_is_uint(d) for d in shape):
        raise ArtifactError(f"{where}: shape must be a list of ≤ {MAX_NDIM} non-negative integers")
    if math.prod(max(d, 1) for d in shape) > MAX_BODY_BYTES:
        raise ArtifactError(f"{where}: shape {shape} is implausibly large")
    offset, nbytes = row.get("offset"), row.get("nbytes")
    if not _is_uint(offset) or not _is_uint(nbytes):
        raise ArtifactError(f"{where}: offset and nbytes must be non-negative integers")
    if offset != expected_offset:
        raise ArtifactError(f"{where}: offset {offset:,} breaks the contiguous layout (expected {expected_offset:,})")
    if offset + nbytes > payload_len:
        raise ArtifactError(f"{where}: bytes [{offset:,}, {offset + nbytes:,}) run past the "
                            f"{payload_len:,}-byte payload")
    itemsize = torch.empty((), dtype=DTYPES[row["dtype"]]).element_size()
    if math.prod(shape) * itemsize != nbytes:
        raise ArtifactError(f"{where}: shape {shape[:MAX_NDIM]} × {itemsize} bytes ≠ nbytes {nbytes:,}")
    if row["kind"] == "q":
        if row["dtype"] != "int8" or not _is_uint(row.get("bits")) or not 1 <= row["bits"] <= 8:
            raise ArtifactError(f"{where}: codes must be int8 with 1 ≤ bits ≤ 8")
        if not isinstance(row.get("method"), str):
            raise ArtifactError(f"{where}: 'method' is missing or not a string")
    if row["kind"] == "extra" and not isinstance(row.get("key"), str):
        raise ArtifactError(f"{where}: extra tensor without a string 'key'")


def _tensor(payload: memoryview, row: dict) -> Tensor:
    dtype, shape = DTYPES[row["dtype"]], tuple(row["shape"])
    if row["nbytes"] == 0:
        return torch.empty(shape, dtype=dtype)
    buf = bytearray(payload[row["offset"] : row["offset"] + row["nbytes"]])
    return torch.frombuffer(buf, dtype=torch.uint8).view(dtype).reshape(shape)


def _assemble(header: dict, payload: memoryview) -> QuantizedState:
    codes: dict[str, tuple[dict, Tensor]] = {}
    scales: dict[str, Tensor] = {}
    extras: dict[str, dict[str, Tensor]] = {}
    passthrough: dict[str, Tensor] = {}
    offset = 0
    for i, row in enumerate(header["tensors"]):
        _check_row(i, row, offset, len(payload))
        offset += row["nbytes"]
        name, kind = row["name"], row["kind"]
        t = _tensor(payload, row)
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
    if offset != len(payload):
        raise ArtifactError(f"{len(payload) - offset:,} payload bytes are not described by any tensor row")
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
        raise ArtifactError("the dtype table does not list exactly the stored tensors")
    tensors: dict[str, QuantizedTensor] = {}
    for name, (row, q) in codes.items():
        try:
            tensors[name] = QuantizedTensor(q=q, scale=scales[name], bits=row["bits"], method=row["method"],
                                            extras=extras.get(name, {}))
        except ValueError as e:
            raise ArtifactError(f"tensor {name[:100]!r}: {e}") from None
    return QuantizedState(tensors=tensors, passthrough=passthrough, dtypes=dict(dtypes))
