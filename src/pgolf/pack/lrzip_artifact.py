"""The `lrzip-groups` artifact codec: R0427's per-group serializer inside a pgolf container (container codec id 18).

    blob = encode_artifact(qs, manifest, "lrzip-groups")     # needs `lrzip` on PATH (LrzipMissingError otherwise)
    qs, manifest = decode_artifact(blob)                     # likewise; ArtifactError on malformed input

Layout after the container prefix (MAGIC, version 2, id 18): u32 n ‖ n bytes brotli-11(u32 header length ‖ JSON
header ‖ the raw bytes of every row that is not in a role group, in row order) ‖ the PGRP stream of
pgolf.pack.lrzip.encode_groups (the role groups' codes: similarity-sorted, transposed, `lrzip -z -L 9`). The header
is the container's, with "layout": "lrzip-groups" and "grouped": the names of the q rows in the PGRP stream. As R0427,
scales, passthrough and ungrouped codes are brotli'd (no byte shuffle). For reproducing the record's pipeline and
comparing with it (bench/pack_vs_lrzip.py); pgolf's default rans-ctx is smaller on every group measured.
"""

from __future__ import annotations

import struct
import zlib

from pgolf.pack.body import decompress_bounded, dtype_table, layout_rows, pack_body, split_body
from pgolf.pack.codecs import compress
from pgolf.pack.format import FORMAT_ID, MAGIC, MAX_BODY_BYTES, PREFIX, ArtifactError, is_uint
from pgolf.pack.lrzip import LrzipError, LrzipMissingError, decode_groups, encode_groups, lrzip_path, role

CODEC = "lrzip-groups"
CODEC_ID = 18


def _grouped_names(rows: list) -> list[str]:
    """Names of the q rows R0427 groups (2-D, with a role), in row order."""
    return [r["name"] for r in rows if isinstance(r, dict) and r.get("kind") == "q" and isinstance(r.get("name"), str)
            and isinstance(r.get("shape"), list) and len(r["shape"]) == 2 and role(r["name"]) is not None]


def encode_artifact_groups(qs, manifest: dict) -> bytes:
    dtypes = dtype_table(qs)
    rows, chunks = layout_rows(qs)
    payload = b"".join(chunks)
    header = {"format": FORMAT_ID, "manifest": manifest, "dtypes": dtypes, "payload_bytes": len(payload),
              "payload_crc32": zlib.crc32(payload), "tensors": rows, "layout": CODEC}
    grouped = _grouped_names(rows)
    header["grouped"] = grouped
    codes = {n: qs.tensors[n].q.detach().cpu().numpy() for n in grouped}
    stream = encode_groups(codes)
    rest = b"".join(ch for r, ch in zip(rows, chunks) if not (r["kind"] == "q" and r["name"] in codes))
    inner = compress(pack_body(header, rest), "brotli")
    return MAGIC + bytes([2, CODEC_ID]) + struct.pack("<I", len(inner)) + inner + stream


def decode_artifact_groups(data: bytes):
    """(header, raw payload) of an lrzip-groups artifact; the container checks the size and CRC and assembles it."""
    if lrzip_path() is None:
        raise ArtifactError("this artifact was packed with lrzip-groups (R0427's per-group lrzip): decoding it "
                              "needs the `lrzip` binary on PATH (apt-get install lrzip)")
    pos = PREFIX
    if len(data) < pos + 4:
        raise ArtifactError("lrzip-groups artifact is truncated before its inner stream")
    (n,) = struct.unpack_from("<I", data, pos)
    pos += 4
    if n > len(data) - pos:
        raise ArtifactError(f"inner stream of {n:,} bytes runs past the {len(data) - pos:,} bytes left")
    body = decompress_bounded(data[pos : pos + n], "brotli", MAX_BODY_BYTES)
    header, rest = split_body(body)
    if header.get("layout") != CODEC:
        raise ArtifactError(f"an {CODEC} artifact must declare layout {CODEC!r}")
    rows = header["tensors"]
    grouped = header.get("grouped")
    if not isinstance(grouped, list) or grouped != _grouped_names(rows):
        raise ArtifactError("lrzip-groups header: 'grouped' does not list the role-grouped code rows")
    shapes = {}
    for r in rows:
        if isinstance(r, dict) and r.get("name") in grouped and r.get("kind") == "q":
            if r.get("dtype") != "int8" or not all(is_uint(d) for d in r["shape"]):
                raise ArtifactError(f"tensor {str(r.get('name'))[:80]!r}: a grouped row must be int8 with a shape")
            if r["shape"][0] * r["shape"][1] > MAX_BODY_BYTES:
                raise ArtifactError(f"tensor {r['name'][:80]!r}: shape {r['shape']} is implausibly large")
            shapes[r["name"]] = tuple(r["shape"])
    if sum(a * b for a, b in shapes.values()) > MAX_BODY_BYTES - len(body):
        raise ArtifactError("grouped codes exceed the decode limit")
    try:
        codes = decode_groups(data[pos + n :], shapes)
    except (LrzipError, LrzipMissingError) as e:
        raise ArtifactError(f"lrzip group stream does not decode: {e}") from None
    parts, off = [], 0
    rest = bytes(rest)
    for i, r in enumerate(rows):
        if not (isinstance(r, dict) and is_uint(r.get("nbytes"))):
            raise ArtifactError(f"tensor row {i}: nbytes missing or invalid")
        if r.get("kind") == "q" and r.get("name") in codes:
            parts.append(codes[r["name"]].tobytes())
            continue
        if off + r["nbytes"] > len(rest):
            raise ArtifactError(f"tensor row {i}: runs past the {len(rest):,} ungrouped bytes")
        parts.append(rest[off : off + r["nbytes"]])
        off += r["nbytes"]
    if off != len(rest):
        raise ArtifactError(f"{len(rest) - off:,} ungrouped bytes are not described by any tensor row")
    return header, memoryview(b"".join(parts))
