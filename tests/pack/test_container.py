"""The artifact container: bit-exact round trips for every codec, clear errors, and a decoder that survives fuzzing.

    python -m pytest tests/pack/test_container.py -q
"""

from __future__ import annotations

import json
import struct
import zlib

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pgolf.pack.codecs import compress, decompress
from pgolf.pack.container import (
    CODEC_IDS, CODEC_VERSION, FORMAT_VERSION, MAGIC, ArtifactError, artifact_codec, decode_artifact, encode_artifact,
    write_artifact,
)
from pgolf.quant.apply import QuantizedState, dequantize_state, quantize_state_dict
from pgolf.quant.primitives import QuantizedTensor, quantize_rtn


def _state() -> QuantizedState:
    g = torch.Generator().manual_seed(0)
    w = torch.randn(70, 1000, generator=g) * 0.05
    qs, _ = quantize_state_dict({"blocks.0.mlp.fc.weight": w, "blocks.0.attn_scale": torch.rand(8)}, "int8-baseline")
    qs.tensors["vec"] = quantize_rtn(torch.randn(5), 6, torch.tensor(0.1))  # 0-d scale
    qs.tensors["const"] = QuantizedTensor(q=torch.full((3, 4), 7, dtype=torch.int8),
                                          scale=torch.full((3,), 0.5, dtype=torch.float16), bits=4, method="rtn")
    qs.tensors["empty"] = QuantizedTensor(q=torch.zeros(0, 4, dtype=torch.int8),
                                          scale=torch.zeros(0, dtype=torch.float16), bits=8, method="rtn")
    qs.tensors["lqer"] = QuantizedTensor(q=torch.ones(2, 3, dtype=torch.int8), scale=torch.ones(2, dtype=torch.float16),
                                         bits=6, method="gptq", extras={"a": torch.randn(2, 1), "b": torch.randn(1, 3)})
    qs.passthrough.update({
        "bf16": torch.randn(3, 2).to(torch.bfloat16), "i64": torch.tensor([1, -2, 3]), "flag": torch.tensor(True),
        "empty_pt": torch.zeros(0), "u8": torch.arange(5, dtype=torch.uint8),
        "f64": torch.randn(2, dtype=torch.float64),
    })
    for name in ("vec", "const", "empty", "lqer"):
        qs.dtypes[name] = "float32"
    qs.dtypes.update({"bf16": "bfloat16", "i64": "int64", "flag": "bool", "empty_pt": "float32", "u8": "uint8",
                      "f64": "float64"})
    return qs


MANIFEST = {"model": {"vocab_size": 1024, "ve_layers": [9, 10]}, "recipe": "int8-baseline", "tokenizer_sha256": "ab",
            "note": "ünïcode"}


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)


@pytest.mark.parametrize("codec", list(CODEC_IDS))
def test_round_trip_is_bit_exact(codec):
    qs = _state()
    blob = encode_artifact(qs, MANIFEST, codec)
    assert blob[:6] == MAGIC and blob[6] == CODEC_VERSION[codec] <= FORMAT_VERSION and artifact_codec(blob) == codec
    out, manifest = decode_artifact(blob)
    assert manifest == MANIFEST
    assert list(out.tensors) == list(qs.tensors) and list(out.passthrough) == list(qs.passthrough)
    assert out.dtypes == qs.dtypes and list(out.dtypes) == list(qs.dtypes)
    for name, qt in qs.tensors.items():
        got = out.tensors[name]
        assert _same(got.q, qt.q) and _same(got.scale, qt.scale), name
        assert got.bits == qt.bits and got.method == qt.method
        assert got.extras.keys() == qt.extras.keys() and all(_same(got.extras[k], v) for k, v in qt.extras.items())
    for name, t in qs.passthrough.items():
        assert _same(out.passthrough[name], t), name
    a, b = dequantize_state(qs), dequantize_state(out)
    assert all(_same(a[k], b[k]) for k in a)
    assert encode_artifact(out, manifest, codec) == blob  # deterministic, and decode∘encode is the identity


def test_encoder_completes_or_rejects_the_dtype_table():
    qs = QuantizedState(tensors={"w": quantize_rtn(torch.randn(2, 3), 8, torch.ones(2))},
                        passthrough={"p": torch.ones(2, dtype=torch.float16)})
    out, _ = decode_artifact(encode_artifact(qs, {}, "zlib"))
    assert out.dtypes == {"w": "float32", "p": "float16"}
    qs.dtypes["gone"] = "float32"
    with pytest.raises(ValueError, match="not stored"):
        encode_artifact(qs, {}, "zlib")
    del qs.dtypes["gone"]
    qs.passthrough["w"] = torch.ones(1)
    with pytest.raises(ValueError, match="both"):
        encode_artifact(qs, {}, "zlib")


def test_empty_state_round_trips():
    out, manifest = decode_artifact(encode_artifact(QuantizedState(), {}, "zlib"))
    assert out.tensors == {} and out.passthrough == {} and manifest == {}


def test_bad_prefix_messages():
    blob = encode_artifact(_state(), MANIFEST, "zlib")
    with pytest.raises(ArtifactError, match="magic"):
        decode_artifact(b"PK\x03\x04" + blob[4:])
    with pytest.raises(ArtifactError, match="magic"):
        decode_artifact(b"")
    with pytest.raises(ArtifactError, match="unsupported artifact format version 3"):
        decode_artifact(blob[:6] + bytes([3]) + blob[7:])
    with pytest.raises(ArtifactError, match="not valid in a version-2"):
        decode_artifact(blob[:6] + bytes([2]) + blob[7:])
    with pytest.raises(ArtifactError, match="unknown codec id 9"):
        decode_artifact(blob[:7] + bytes([9]) + blob[8:])
    with pytest.raises(ArtifactError, match="does not decompress"):
        decode_artifact(blob[:7] + bytes([CODEC_IDS["brotli"]]) + blob[8:])
    with pytest.raises(ValueError, match="valid codecs"):
        encode_artifact(_state(), MANIFEST, "gzip")
    with pytest.raises(ValueError, match="JSON"):
        encode_artifact(_state(), {"bad": object()}, "zlib")


def _body(blob: bytes) -> bytes:
    return decompress(blob[8:], artifact_codec(blob))


def _wrap(body: bytes, codec: str = "zlib") -> bytes:
    return MAGIC + bytes([CODEC_VERSION[codec], CODEC_IDS[codec]]) + compress(body, codec)


def _split(body: bytes) -> tuple[dict, bytes]:
    (hlen,) = struct.unpack_from("<I", body)
    return json.loads(body[4 : 4 + hlen]), body[4 + hlen :]


def _join(header: dict, payload: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<I", len(raw)) + raw + payload


def test_inconsistent_headers_are_named():
    header, payload = _split(_body(encode_artifact(_state(), MANIFEST, "zlib")))
    cases = []
    h = json.loads(json.dumps(header)); h["format"] = "pgolf-v0"; cases.append((h, payload, "format"))
    h = json.loads(json.dumps(header)); h["tensors"][0]["shape"] = [70, 999]; cases.append((h, payload, "nbytes"))
    h = json.loads(json.dumps(header)); h["tensors"][1]["offset"] += 1; cases.append((h, payload, "contiguous"))
    h = json.loads(json.dumps(header)); h["tensors"][0]["dtype"] = "object"; cases.append((h, payload, "not allowed"))
    h = json.loads(json.dumps(header)); h["tensors"][0]["shape"] = [0, 2**62]; h["tensors"][0]["nbytes"] = 0
    cases.append((h, payload, "implausibly large"))
    h = json.loads(json.dumps(header)); h["payload_bytes"] += 1; cases.append((h, payload, "declares"))
    corrupt = bytes([payload[0] ^ 1]) + payload[1:]
    cases.append((header, corrupt, "CRC32"))
    h = json.loads(json.dumps(header)); h["tensors"].pop(); h["payload_bytes"] = len(payload)
    cases.append((h, payload, "not described"))
    for h, p, message in cases:
        with pytest.raises(ArtifactError, match=message):
            decode_artifact(_wrap(_join(h, p)))
    with pytest.raises(ArtifactError, match="header length"):
        decode_artifact(_wrap(struct.pack("<I", 10**9) + b"{}"))
    with pytest.raises(ArtifactError, match="JSON"):
        decode_artifact(_wrap(struct.pack("<I", 3) + b"{{{"))


def test_write_artifact_is_atomic_and_exact(tmp_path):
    blob = encode_artifact(_state(), MANIFEST, "lzma")
    path = tmp_path / "sub" / "model.pgolf"
    write_artifact(path, blob)
    write_artifact(path, blob)  # overwrite in place
    assert path.read_bytes() == blob and [p.name for p in path.parent.iterdir()] == ["model.pgolf"]


# ------------------------------------------------------------------------------------------------ fuzzing
# Three mutation levels: the raw file (codec/CRC errors), the decompressed body (header parsing), and single header
# fields with hostile values (table validation; the payload CRC stays valid so these reach every bounds check).

_SMALL = QuantizedState()
_SMALL.tensors["w"] = quantize_rtn(torch.randn(4, 6), 6, torch.full((4,), 0.1))
_SMALL.tensors["v"] = QuantizedTensor(q=torch.ones(3, dtype=torch.int8), scale=torch.tensor(0.5, dtype=torch.float16),
                                      bits=8, method="rtn", extras={"a": torch.randn(2)})
_SMALL.passthrough.update({"p": torch.randn(3).half(), "i": torch.tensor([1, 2])})
_SMALL.dtypes.update({"w": "float32", "v": "float32", "p": "float32", "i": "int64"})
_BLOBS = {c: encode_artifact(_SMALL, {"model": {"a": 1}}, c) for c in CODEC_IDS}
_HEADER, _PAYLOAD = _split(_body(_BLOBS["zlib"]))
_FUZZ = settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def _decode_or_artifact_error(blob: bytes) -> None:
    try:
        qs, manifest = decode_artifact(blob)
    except ArtifactError as e:
        assert str(e)
        return
    dequantize_state(qs)  # whatever decodes must also dequantize
    assert isinstance(manifest, dict)


@_FUZZ
@given(codec=st.sampled_from(list(CODEC_IDS)), data=st.data())
def test_fuzz_raw_bytes(codec, data):
    blob = bytearray(_BLOBS[codec])
    op = data.draw(st.sampled_from(["truncate", "flip", "insert", "delete"]))
    i = data.draw(st.integers(0, len(blob) - 1))
    if op == "truncate":
        blob = blob[:i]
    elif op == "flip":
        blob[i] ^= data.draw(st.integers(1, 255))
    elif op == "insert":
        blob[i:i] = data.draw(st.binary(min_size=1, max_size=8))
    else:
        del blob[i : i + data.draw(st.integers(1, 8))]
    _decode_or_artifact_error(bytes(blob))


@_FUZZ
@given(data=st.data())
def test_fuzz_decompressed_body(data):
    body = bytearray(_body(_BLOBS["zlib"]))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(body) - 1))
        if data.draw(st.booleans()):
            body[i] = data.draw(st.integers(0, 255))
        else:
            body = body[:i]
            break
    _decode_or_artifact_error(_wrap(bytes(body)))


_HOSTILE = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 2**64), st.floats(allow_nan=True), st.text(max_size=8),
    st.lists(st.integers(-2, 2**40), max_size=10), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.sampled_from(["q", "scale", "extra", "passthrough", "int8", "float16", "bool", "bfloat16", "w", "v", "a"]),
)


@_FUZZ
@given(data=st.data())
def test_fuzz_header_fields(data):
    header = json.loads(json.dumps(_HEADER))
    rows = header["tensors"]
    for _ in range(data.draw(st.integers(1, 3))):
        if data.draw(st.booleans()):
            row = data.draw(st.sampled_from(rows))
            key = data.draw(st.sampled_from(["name", "kind", "dtype", "shape", "offset", "nbytes", "bits", "method",
                                             "key"]))
        else:
            row = header
            key = data.draw(st.sampled_from(["format", "manifest", "dtypes", "tensors", "payload_bytes",
                                             "payload_crc32"]))
        if data.draw(st.integers(0, 5)) == 0:
            row.pop(key, None)
        else:
            row[key] = data.draw(_HOSTILE)
    header["payload_crc32"] = header["payload_crc32"] if _is_int(header.get("payload_crc32")) else 0
    _decode_or_artifact_error(_wrap(_join(header, _PAYLOAD)))


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def test_payload_crc_guards_tensor_bytes():
    assert _HEADER["payload_crc32"] == zlib.crc32(_PAYLOAD)
