"""The artifact file: a versioned, self-describing container with no pickle (style.md rules 12–13).

Layout (all integers little-endian):

    b"PGOLF\\0"  u8 format version  u8 codec id  rest
    version 1, codec zlib | zstd | lzma | brotli (ids 1-4):     rest = compressed(body)
    version 2, codec zlib+shuffle … brotli+shuffle (ids 5-8):   rest = compressed(body with the payload byte-shuffled)
    version 2, codec rans (id 16):   rest = u8 inner codec id (5-8)  ‖  u32 n  ‖  n bytes inner-compressed(body
                                     without the code blobs, byte-shuffled)  ‖  one rANS stream per code blob
    version 2, codec rans-ctx (id 17): the same, each code stream being the smallest of order-0 rANS, context rANS
                                     and brotli-11 (pgolf.pack.entropy.encode_codes(..., model="best"))
    body = u32 header length  ‖  UTF-8 JSON header  ‖  raw tensor bytes, concatenated

The JSON header is {"format": "pgolf-v1", "manifest": {...caller's: model config, recipe, tokenizer sha...},
"dtypes": {name: original dtype}, "payload_bytes": n, "payload_crc32": c, "tensors": [blob rows]}; version 2 adds
"layout" ("shuffle" | "rans" | "rans-ctx") and, for the last two, "code_streams": [byte length of each code blob's
entropy stream]. Each blob row is {name, kind, dtype, shape, offset, nbytes} with kind q | scale | extra |
passthrough; q rows also carry bits and method, extra rows their key. Blobs are laid out in row order with no gaps:
all int8 codes first, then the scales, extras and passthrough tensors (the records' torch.save order, which
compresses better than interleaving).
`payload_bytes`, `payload_crc32`, offsets and nbytes always describe the raw (unshuffled, uncoded) payload.

Byte shuffle (R0331's `_byte_shuffle`, generalised): each maximal run of consecutive
rows with the same element size k > 1 is stored as byte planes (byte 0 of every element, then byte 1, …). int8 codes
are untouched. rans: each q row's codes are coded alone by `pgolf.pack.entropy.encode_codes` (order-0 rANS with the
tensor's own histogram, ~0.01 % over its entropy); rans-ctx: each q row's codes take the smallest of that, the
row/column context model (pgolf.pack.context) and brotli-11 of the raw codes (a mode byte in each stream says which);
for both, header, scales, extras and passthrough go through brotli-11 + shuffle.

    blob = encode_artifact(qs, manifest, "rans")
    qs, manifest = decode_artifact(blob)        # bit-exact inverse; ArtifactError on any malformed input
    write_artifact(path, blob)                  # atomic: temp file + rename

The decoder trusts nothing: magic, version, codec, decompressed size, header length, JSON shape, dtype allowlist,
shape × itemsize = nbytes, offsets tiling the payload, stream lengths, each rANS stream's dtype/shape against its
row, the payload CRC, scale/code consistency (pack/body.py `assemble`). Every failure is an `ArtifactError` with a
message; nothing allocates more than MAX_BODY_BYTES (decompressed body plus decoded codes; pack/format.py). The
semantic checks (codes vs bits, finite values, the tensor table against the manifest's model) are
`pgolf.pack.validate.validate_artifact`, which every command that reads an artifact runs (`read_artifact`).
"""

from __future__ import annotations

import os
import struct
import zlib
from typing import Any

from pgolf.io import atomic_write
from pgolf.pack.body import assemble, decompress_bounded, dtype_table, layout_rows, pack_body, split_body
from pgolf.pack.codecs import CODECS, byte_shuffle, compress
from pgolf.pack.format import (  # noqa: F401  (re-exported: the format's names have always lived here)
    DTYPES, EXPANSION_FLOOR, FORMAT_ID, KINDS, MAGIC, MAX_BODY_BYTES, MAX_EXPANSION, MAX_HEADER_BYTES, MAX_NDIM,
    PREFIX, ArtifactError, is_uint, itemsize,
)
from pgolf.quant.apply import QuantizedState

FORMAT_VERSION = 2
"""Newest container version this pgolf writes; plain zlib/zstd/lzma/brotli artifacts are still written as version 1
(byte-identical to before), so older readers keep reading them."""
READABLE_VERSIONS = (1, 2)
CODEC_IDS: dict[str, int] = {
    "zlib": 1, "zstd": 2, "lzma": 3, "brotli": 4,
    "zlib+shuffle": 5, "zstd+shuffle": 6, "lzma+shuffle": 7, "brotli+shuffle": 8,
    "rans": 16, "rans-ctx": 17,
}
"""Codec → id (ids 1-4: version-1 artifacts; the others version 2)."""
ENTROPY_CODECS: dict[str, str] = {"rans": "order0", "rans-ctx": "best"}
"""Codecs that entropy-code each q row alone, and the pgolf.pack.entropy.encode_codes model each uses."""
def codec_version(cid: int) -> int:
    """The format version an artifact of codec id `cid` carries: 1 for the plain codecs (ids 1-4), else 2."""
    return 1 if cid <= 4 else 2


CODEC_VERSION = {name: codec_version(cid) for name, cid in CODEC_IDS.items()}
EXTERNAL_CODECS: dict[str, int] = {"lrzip-groups": 18}
"""Version-2 codecs that need an external binary, kept out of CODEC_IDS (which every test and bench loops over):
lrzip-groups = R0427's per-group lrzip (pgolf.pack.lrzip_artifact; `lrzip` on PATH)."""
RANS_INNER = "brotli+shuffle"
"""General codec of everything but the code blobs in a rans artifact (brotli-11 + shuffle: smallest on the fp16
scales/passthrough of real artifacts, bench/pack.py)."""
_PREFIX = PREFIX  # the old name

assert set(CODECS) <= set(CODEC_IDS)


def codec_tables(codec: str) -> tuple[tuple[str, str, frozenset[str]], ...]:
    """The registry tables (module, table, kept keys) a run with artifact codec `codec` needs: its single-file
    script (pgolf.experiments.closure) keeps those entries of CODEC_IDS, CODERS, ENTROPY_CODECS and
    pgolf.pack.codecs.COMPRESSORS and drops the other codecs' code."""
    if codec in ENTROPY_CODECS:
        ids, compressors = {codec, RANS_INNER}, {RANS_INNER.split("+")[0]}
    elif codec in EXTERNAL_CODECS:
        ids, compressors = set(), {"brotli"}  # pgolf.pack.lrzip_artifact: brotli-11 around the ungrouped rows
    else:
        ids, compressors = {codec}, {codec.split("+")[0]}
    return (("pgolf.pack.container", "CODEC_IDS", frozenset(ids)),
            ("pgolf.pack.container", "CODERS", frozenset({codec})),
            ("pgolf.pack.container", "ENTROPY_CODECS", frozenset({codec})),
            ("pgolf.pack.codecs", "COMPRESSORS", frozenset(compressors)))


# ------------------------------------------------------------------------------------------------ encode

def _runs(rows: list) -> list[tuple[int, int]]:
    """(byte length, element size) of each maximal run of consecutive rows with equal element size. The rows may
    be untrusted (a decoder's): only dtype/nbytes are used, and a bad row is an ArtifactError."""
    runs: list[tuple[int, int]] = []
    for i, row in enumerate(rows):
        if not (isinstance(row, dict) and isinstance(row.get("dtype"), str) and row["dtype"] in DTYPES
                and is_uint(row.get("nbytes"))):
            raise ArtifactError(f"tensor row {i}: dtype/nbytes missing or invalid")
        k = itemsize(row["dtype"])
        if runs and runs[-1][1] == k:
            runs[-1] = (runs[-1][0] + row["nbytes"], k)
        else:
            runs.append((row["nbytes"], k))
    return runs


def _shuffle(payload: bytes | memoryview, rows: Any, inverse: bool = False) -> bytes:
    """Each run of equal element size as byte planes (`inverse`: back). On decode the rows are untrusted: any
    inconsistency (bad row, lengths not tiling the payload, a run not a multiple of its element size) is an
    ArtifactError; the full row checks and the CRC run afterwards on the restored payload."""
    if not isinstance(rows, list):
        raise ArtifactError("artifact header field 'tensors' is missing or not a list")
    runs = _runs(rows)
    if sum(n for n, _ in runs) != len(payload):
        raise ArtifactError(f"tensor rows describe {sum(n for n, _ in runs):,} bytes but the shuffled payload has "
                            f"{len(payload):,}")
    out, pos = [], 0
    for n, k in runs:
        if n % k:
            raise ArtifactError(f"a run of {k}-byte elements is {n:,} bytes long")
        out.append(byte_shuffle(bytes(payload[pos : pos + n]), k, inverse))
        pos += n
    return b"".join(out)


def _unshuffle(payload: bytes | memoryview, rows: Any) -> bytes:
    """Inverse of `_shuffle` for untrusted rows."""
    return _shuffle(payload, rows, inverse=True)


def _table(qs: QuantizedState, manifest: dict) -> tuple[dict, list[dict], list[bytes]]:
    """(JSON header, tensor rows, their raw bytes) every codec stores."""
    dtypes = dtype_table(qs)
    rows, chunks = layout_rows(qs)
    payload = b"".join(chunks)
    return ({"format": FORMAT_ID, "manifest": manifest, "dtypes": dtypes, "payload_bytes": len(payload),
             "payload_crc32": zlib.crc32(payload), "tensors": rows}, rows, chunks)


def _prefix(codec: str) -> bytes:
    return MAGIC + bytes([codec_version(CODEC_IDS[codec]), CODEC_IDS[codec]])


def _encode_plain(qs: QuantizedState, manifest: dict, codec: str, progress: object) -> bytes:
    header, _, chunks = _table(qs, manifest)
    return _prefix(codec) + compress(pack_body(header, b"".join(chunks)), codec)


def _encode_shuffled(qs: QuantizedState, manifest: dict, codec: str, progress: object) -> bytes:
    header, rows, chunks = _table(qs, manifest)
    header["layout"] = "shuffle"
    return _prefix(codec) + compress(pack_body(header, _shuffle(b"".join(chunks), rows)), codec.split("+")[0])


def _encode_rans(qs: QuantizedState, manifest: dict, codec: str, progress: object) -> bytes:
    from pgolf.pack.entropy import encode_codes  # here: a script for a plain codec carries no entropy coder
    from pgolf.progress import track

    header, rows, chunks = _table(qs, manifest)
    nq = len(qs.tensors)  # the q rows come first, one per quantized tensor (body.layout_rows)
    streams = [encode_codes(qt.q.detach().cpu().numpy(), model=ENTROPY_CODECS[codec])
               for qt in track(list(qs.tensors.values()), f"encode {codec}", enabled=progress, unit="tensor")]
    header["layout"] = codec
    header["code_streams"] = [len(s) for s in streams]
    rest = _shuffle(b"".join(chunks[nq:]), rows[nq:])  # RANS_INNER is a "+shuffle" codec
    inner = compress(pack_body(header, rest), RANS_INNER.split("+")[0])
    return _prefix(codec) + bytes([CODEC_IDS[RANS_INNER]]) + struct.pack("<I", len(inner)) + inner + b"".join(streams)


def _encode_groups(qs: QuantizedState, manifest: dict, codec: str, progress: object) -> bytes:
    from pgolf.pack.lrzip_artifact import encode_artifact_groups

    return encode_artifact_groups(qs, manifest)


def encode_artifact(qs: QuantizedState, manifest: dict, codec: str, *, progress: object = False) -> bytes:
    """Serialize a QuantizedState plus a JSON-able manifest; deterministic for equal inputs. `progress`: a bar or
    lines over the entropy-coded tensors (pgolf.progress)."""
    if codec not in CODERS:
        raise ValueError(f"unknown codec {codec!r}; valid codecs: {', '.join([*CODEC_IDS, *EXTERNAL_CODECS])}")
    return CODERS[codec][0](qs, manifest, codec, progress)


def write_artifact(path: str | os.PathLike, data: bytes) -> None:
    """Write atomically (`pgolf.io.atomic_write`): readers never see a partial file."""
    atomic_write(path, data)


# ------------------------------------------------------------------------------------------------ decode

def artifact_codec(data: bytes) -> str:
    """The codec named by an artifact's prefix (validates magic, version and the version/codec pairing)."""
    if len(data) < PREFIX or data[: len(MAGIC)] != MAGIC:
        raise ArtifactError("not a pgolf artifact (missing the PGOLF magic bytes)")
    version, codec_id = data[len(MAGIC)], data[len(MAGIC) + 1]
    if version not in READABLE_VERSIONS:
        raise ArtifactError(f"unsupported artifact format version {version}; this pgolf reads versions "
                            f"{', '.join(map(str, READABLE_VERSIONS))} ({FORMAT_ID} headers)")
    for name, cid in [*CODEC_IDS.items(), *EXTERNAL_CODECS.items()]:
        if cid == codec_id:
            if version != codec_version(cid):
                raise ArtifactError(f"codec {name} is not valid in a version-{version} artifact")
            return name
    raise ArtifactError(f"unknown codec id {codec_id} in artifact; known: "
                        + ", ".join(f"{cid}={n}" for n, cid in CODEC_IDS.items()))


def _decode_plain(data: bytes, codec: str) -> tuple[dict[str, Any], memoryview]:
    header, payload = split_body(decompress_bounded(data[PREFIX:], codec, MAX_BODY_BYTES))
    if "layout" in header:
        raise ArtifactError(f"a {codec} artifact must not declare a layout")
    return header, payload


def _decode_shuffled(data: bytes, codec: str) -> tuple[dict[str, Any], memoryview]:
    header, shuffled = split_body(decompress_bounded(data[PREFIX:], codec.split("+")[0], MAX_BODY_BYTES))
    if header.get("layout") != "shuffle":
        raise ArtifactError(f"a {codec} artifact must declare layout 'shuffle'")
    return header, memoryview(_unshuffle(shuffled, header["tensors"]))


def _decode_groups(data: bytes, codec: str) -> tuple[dict[str, Any], memoryview]:
    from pgolf.pack.lrzip_artifact import decode_artifact_groups

    return decode_artifact_groups(data)


def decode_artifact(data: bytes) -> tuple[QuantizedState, dict]:
    """Inverse of `encode_artifact` → (QuantizedState, manifest). Raises ArtifactError on any malformed input."""
    data = bytes(data)
    codec = artifact_codec(data)
    header, payload = CODERS[codec][1](data, codec)
    if header["payload_bytes"] != len(payload):
        raise ArtifactError(f"payload is {len(payload):,} bytes but the header declares {header['payload_bytes']:,}")
    if zlib.crc32(payload) != header["payload_crc32"]:
        raise ArtifactError("payload CRC32 mismatch: the tensor bytes are corrupt")
    return assemble(header, payload), header["manifest"]


def _decode_rans(data: bytes, codec: str) -> tuple[dict[str, Any], memoryview]:
    from pgolf.pack.entropy import EntropyDecodeError, decode_codes

    pos = PREFIX
    if len(data) < pos + 5:
        raise ArtifactError("rans artifact is truncated before its inner stream")
    inner_id = data[pos]
    inner = next((n for n, cid in CODEC_IDS.items() if cid == inner_id), None)
    if inner is None or inner in ENTROPY_CODECS:
        raise ArtifactError(f"rans artifact names an invalid inner codec id {inner_id}")
    (n,) = struct.unpack_from("<I", data, pos + 1)
    pos += 5
    if n > len(data) - pos:
        raise ArtifactError(f"inner stream of {n:,} bytes runs past the {len(data) - pos:,} bytes left")
    body = decompress_bounded(data[pos : pos + n], inner.split("+")[0], MAX_BODY_BYTES)
    pos += n
    header, rest = split_body(body)
    if header.get("layout") != codec:
        raise ArtifactError(f"a {codec} artifact must declare layout {codec!r}")
    rows, lens = header["tensors"], header.get("code_streams")
    if not isinstance(lens, list) or not all(is_uint(v) for v in lens):
        raise ArtifactError("rans artifact header has no valid 'code_streams' list")
    nq = len(lens)
    if nq > len(rows):
        raise ArtifactError(f"{nq} code streams but only {len(rows)} tensor rows")
    if sum(lens) != len(data) - pos:
        raise ArtifactError(f"code streams declare {sum(lens):,} bytes but {len(data) - pos:,} follow the header")
    if any(isinstance(r, dict) and r.get("kind") == "q" for r in rows[nq:]):
        raise ArtifactError("code rows must come first, one per code stream")
    budget = MAX_BODY_BYTES - len(body)
    codes = []
    for i, (row, m) in enumerate(zip(rows[:nq], lens)):
        if not (isinstance(row, dict) and row.get("kind") == "q" and row.get("dtype") == "int8"
                and is_uint(row.get("nbytes")) and isinstance(row.get("shape"), list)):
            raise ArtifactError(f"tensor row {i}: a code stream's row must be an int8 q row with shape and nbytes")
        if row["nbytes"] > budget:
            raise ArtifactError(f"tensor row {i}: {row['nbytes']:,} code bytes exceed the decode limit")
        dims = [d for d in row["shape"] if is_uint(d)]
        limit = min(budget, max([row["nbytes"], *dims]))  # empty tensors may have dims > 0 (shape (0, 4))
        try:
            arr = decode_codes(data[pos : pos + m], max_symbols=limit)
        except EntropyDecodeError as e:
            raise ArtifactError(f"tensor row {i} ({str(row.get('name'))[:80]!r}): rANS stream does not decode: "
                                f"{e}") from None
        if arr.dtype != "int8" or list(arr.shape) != row["shape"] or arr.nbytes != row["nbytes"]:
            raise ArtifactError(f"tensor row {i} ({str(row.get('name'))[:80]!r}): rANS stream holds {arr.dtype} "
                                f"{list(arr.shape)}, "
                                f"not the row's int8 {str(row['shape'])[:80]}")
        budget -= arr.nbytes
        codes.append(arr.tobytes())
        pos += m
    if inner.endswith("+shuffle"):
        rest = memoryview(_unshuffle(rest, rows[nq:]))
    payload = b"".join(codes) + bytes(rest)
    return header, memoryview(payload)


CODERS = {
    "zlib": (_encode_plain, _decode_plain), "zstd": (_encode_plain, _decode_plain),
    "lzma": (_encode_plain, _decode_plain), "brotli": (_encode_plain, _decode_plain),
    "zlib+shuffle": (_encode_shuffled, _decode_shuffled), "zstd+shuffle": (_encode_shuffled, _decode_shuffled),
    "lzma+shuffle": (_encode_shuffled, _decode_shuffled), "brotli+shuffle": (_encode_shuffled, _decode_shuffled),
    "rans": (_encode_rans, _decode_rans), "rans-ctx": (_encode_rans, _decode_rans),
    "lrzip-groups": (_encode_groups, _decode_groups),
}
"""codec → (encode(qs, manifest, codec, progress) → artifact, decode(artifact, codec) → (header, raw payload)): a
registry table, cut to the run's codec in its single-file script (`codec_tables`)."""
