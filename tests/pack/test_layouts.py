"""Container codecs beyond the plain compressors: byte shuffle and per-tensor rANS codes.

Bit-exact round trips for every codec × bit width 2–8, empty and constant tensors; version-1 artifacts written by
the previous pgolf still decode; rans-specific corruptions are ArtifactErrors; rans beats brotli on int6 codes.

    python -m pytest tests/pack/test_layouts.py -q
"""

from __future__ import annotations

import base64
import struct

import numpy as np
import pytest
import torch

from pgolf.pack.codecs import byte_shuffle, byte_unshuffle
from pgolf.pack.container import (
    CODEC_IDS, MAGIC, ArtifactError, artifact_codec, decode_artifact, encode_artifact,
)
from pgolf.pack.entropy import order0_entropy_bytes
from pgolf.quant.apply import QuantizedState, dequantize_state
from pgolf.quant.primitives import QuantizedTensor

ALL = list(CODEC_IDS)


def _q(bits: int, shape: tuple[int, ...], seed: int = 0) -> QuantizedTensor:
    g = torch.Generator().manual_seed(seed)
    m = 2 ** (bits - 1) - 1
    q = (torch.randn(shape, generator=g) * m / 3).round().clamp(-m, m).to(torch.int8)
    scale = (torch.rand(shape[0] if shape else (), generator=g) + 0.1).half()
    return QuantizedTensor(q=q, scale=scale, bits=bits, method="rtn")


def _state(bits: int) -> QuantizedState:
    qs = QuantizedState()
    qs.tensors["w"] = _q(bits, (33, 40), bits)
    qs.tensors["const"] = QuantizedTensor(q=torch.full((5, 7), -1, dtype=torch.int8),
                                          scale=torch.full((5,), 0.5, dtype=torch.float16), bits=bits, method="rtn")
    qs.tensors["empty"] = QuantizedTensor(q=torch.zeros(0, 9, dtype=torch.int8),
                                          scale=torch.zeros(0, dtype=torch.float16), bits=bits, method="rtn")
    qs.tensors["lqer"] = QuantizedTensor(q=_q(bits, (4, 6)).q, scale=torch.ones(4, dtype=torch.float16), bits=bits,
                                         method="gptq", extras={"a": torch.randn(4, 1), "b": torch.randn(1, 6).half()})
    qs.passthrough.update({"f16": torch.randn(3, 5).half(), "f32": torch.randn(7), "bf16": torch.randn(2).bfloat16(),
                           "i64": torch.tensor([1, -2]), "empty_pt": torch.zeros(0, 3)})
    qs.dtypes.update({n: "float32" for n in [*qs.tensors, *qs.passthrough]})
    return qs


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)


def _assert_equal(a: QuantizedState, b: QuantizedState) -> None:
    assert list(a.tensors) == list(b.tensors) and list(a.passthrough) == list(b.passthrough) and a.dtypes == b.dtypes
    for n, t in a.tensors.items():
        u = b.tensors[n]
        assert _same(t.q, u.q) and _same(t.scale, u.scale) and (t.bits, t.method) == (u.bits, u.method), n
        assert t.extras.keys() == u.extras.keys() and all(_same(v, u.extras[k]) for k, v in t.extras.items())
    for n, t in a.passthrough.items():
        assert _same(t, b.passthrough[n]), n


@pytest.mark.parametrize("bits", range(2, 9))
@pytest.mark.parametrize("codec", ALL)
def test_every_codec_and_bit_width_round_trips(codec, bits):
    qs = _state(bits)
    blob = encode_artifact(qs, {"bits": bits}, codec)
    assert artifact_codec(blob) == codec
    out, manifest = decode_artifact(blob)
    assert manifest == {"bits": bits}
    _assert_equal(qs, out)
    a, b = dequantize_state(qs), dequantize_state(out)
    assert all(_same(a[k], b[k]) for k in a)
    assert encode_artifact(out, manifest, codec) == blob


@pytest.mark.parametrize("codec", ALL)
def test_empty_and_code_only_states(codec):
    out, manifest = decode_artifact(encode_artifact(QuantizedState(), {}, codec))
    assert out.tensors == {} and out.passthrough == {} and manifest == {}
    qs = QuantizedState(tensors={"c": QuantizedTensor(q=torch.full((4, 4), 3, dtype=torch.int8),
                                                      scale=torch.ones(4).half(), bits=3, method="rtn")},
                        dtypes={"c": "float32"})
    _assert_equal(qs, decode_artifact(encode_artifact(qs, {}, codec))[0])


# An artifact written by pgolf before this change (format version 1, zlib): must keep decoding.
V1_ZLIB = ("UEdPTEYAAQF42o2PQW6DMBBFTY8ya0fChBLEoheJosgBO6CC7dqTRAhxil6oF6vaIYqEF1lkN//76XnmO2FsAm39IBEqcGfb681VAIdBmk6rQO0E"
           "V6jEzKHB0amwFDdidW8lbjNCXZQIc3Kk0BxPIy60yNeq9jUxVZ7t3otdmpYlB1QmWE/cfgIjB0WuGzk/O9PQ+EXjqUN6JsugsLVL69HAYx1KncGS"
           "YmjlEvcZ3x44WK2DouVTDuaxSDHzZ1+EWvYq0t0vEUVsjHzF6ssjn1t9ToaArbeXc/uyVaSx9jD/srck+WMly9kH+/kHzPKBZQ==")


def test_version_1_artifacts_still_decode():
    qs, manifest = decode_artifact(base64.b64decode(V1_ZLIB))
    assert manifest == {"v": 1}
    assert qs.tensors["w"].q.tolist() == [[-3, 0, 2], [1, 1, -1]] and qs.tensors["w"].bits == 4
    assert qs.passthrough["p"].tolist() == [1.5, -2.0]


@pytest.mark.parametrize("stride", [1, 2, 4, 8])
def test_byte_shuffle_round_trips(stride):
    data = bytes(range(256)) * 3 + bytes(stride * 5)
    data = data[: len(data) // stride * stride]
    assert byte_unshuffle(byte_shuffle(data, stride), stride) == data
    if stride == 2:
        assert byte_shuffle(b"abcdef", 2) == b"acebdf"
    with pytest.raises(ValueError):
        byte_shuffle(b"abc", 2)


def test_rans_is_within_entropy_and_beats_brotli_on_int6_codes():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(256, 1024, generator=g)
    s = 12.85 * w.std(dim=1) / 31
    q = torch.clamp(torch.round(w / s[:, None]), -31, 31).to(torch.int8)
    qs = QuantizedState(tensors={"w": QuantizedTensor(q=q, scale=s.half(), bits=6, method="rtn")})
    sizes = {c: len(encode_artifact(qs, {}, c)) for c in ("brotli", "brotli+shuffle", "zstd", "rans")}
    h = order0_entropy_bytes(q.numpy())
    assert sizes["rans"] < 0.99 * min(sizes["brotli"], sizes["zstd"])
    assert sizes["rans"] < h + 600  # codes within ~0.02 % plus ~500 bytes of scales and header


def _rans_parts(blob: bytes) -> tuple[bytes, bytes, bytes]:
    (n,) = struct.unpack_from("<I", blob, 9)
    return blob[:13], blob[13 : 13 + n], blob[13 + n :]


def test_rans_corruptions_are_artifact_errors():
    blob = encode_artifact(_state(6), {}, "rans")
    head, inner, streams = _rans_parts(blob)
    cases = [
        (blob + b"\x00", "code streams declare"),
        (blob[:-1], "code streams declare"),
        (blob[:8] + bytes([16]) + blob[9:], "invalid inner codec"),
        (blob[:9] + struct.pack("<I", 10**9) + blob[13:], "runs past"),
        (blob[:12], "truncated"),
        (head + inner + bytes([streams[0] ^ 0x20]) + streams[1:], "rANS stream"),
    ]
    for bad, msg in cases:
        with pytest.raises(ArtifactError, match=msg):
            decode_artifact(bad)
    # a stream moved under another row's shape is caught (swap the first two streams' bytes wholesale)
    with pytest.raises(ArtifactError):
        decode_artifact(head + inner + streams[::-1])
    # a shuffle-codec blob relabelled as plain zlib fails cleanly (version/codec pairing, then layout)
    sh = encode_artifact(_state(6), {}, "zlib+shuffle")
    with pytest.raises(ArtifactError):
        decode_artifact(MAGIC + bytes([2, 1]) + sh[8:])
    with pytest.raises(ArtifactError, match="layout"):
        decode_artifact(MAGIC + bytes([1, 1]) + sh[8:])


def test_order0_entropy_matches_numpy():
    q = np.array([0, 0, 1, 2], dtype=np.int8)
    assert order0_entropy_bytes(q) == pytest.approx((2 * 1 + 2 * 2) / 8)
