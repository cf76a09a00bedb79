"""Mode ADAPTIVE (pgolf.pack.adaptive, version-2 entropy streams): round trips, choice inside rans-ctx, hardening."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pgolf.pack import adaptive as ad
from pgolf.pack.entropy import EntropyDecodeError, _encode_v1, decode_codes, encode_codes
from pgolf.pack.rans_core import _put_uvarint, _Reader, _zigzag
from tests.pack.test_entropy import _decode_or_reject as decode_or_reject, mutate


def emb_like(rows: int = 320, cols: int = 48, rare: int = 64, seed: int = 0) -> np.ndarray:
    """int6 codes of an embedding-like matrix: column offsets + correlated trained rows, and near-copy rare rows."""
    g = np.random.default_rng(seed)
    w = g.normal(0, 0.6, cols) + g.normal(0, 1, (rows, 4)) @ g.normal(0, 0.5, (4, cols))
    w += 0.8 * g.normal(0, 1, (rows, cols))
    w[g.choice(rows, rare, replace=False)] = g.normal(0, 1, cols) + 0.1 * g.normal(0, 1, (rare, cols))
    s = 12.85 * w.std(1, keepdims=True) / 31
    return np.clip(np.round(w / s), -31, 31).astype(np.int8)


EMB = emb_like()
STREAM = encode_codes(EMB, model="best")
SPLIT_AT = 7  # byte 0, ndim, 320 (2 bytes), 48, lo, span


def test_rans_ctx_picks_the_adaptive_mode_on_embedding_like_codes_and_round_trips():
    assert STREAM[0] >> 5 == 2
    v1 = _encode_v1(EMB, "best")
    assert len(STREAM) < 0.97 * len(v1)
    np.testing.assert_array_equal(decode_codes(STREAM), EMB)
    assert encode_codes(EMB, model="best") == STREAM  # deterministic


def test_order0_model_never_writes_version_2():
    assert encode_codes(EMB)[0] >> 5 == 1


def test_unsplit_body_round_trips():
    lo, span = int(EMB.min()), int(EMB.max()) - int(EMB.min())
    payload = ad.encode_rows(EMB.astype(np.int64) - lo, lo, span)
    blob = _forge(b"\x00" + payload, lo=lo, span=span, shape=EMB.shape)
    np.testing.assert_array_equal(decode_codes(blob), EMB)


@pytest.mark.parametrize("dtype, offset", [(np.uint8, 100), (np.int16, -300), (np.uint16, 5000)])
def test_other_dtypes_round_trip(dtype, offset):
    x = (EMB.astype(np.int64) + offset).astype(dtype)
    lo, span = int(x.min()), int(x.max()) - int(x.min())
    payload = ad.encode_rows(x.astype(np.int64) - lo, lo, span)
    out = bytearray([(2 << 5) | [np.uint8, np.int16, np.uint16].index(dtype) + 1, 2])
    for v in (*EMB.shape, _zigzag(lo), span):
        _put_uvarint(out, v)
    y = decode_codes(bytes(out) + b"\x00" + payload)
    assert y.dtype == dtype
    np.testing.assert_array_equal(y, x)


def test_split_body_is_chosen_here():
    assert STREAM[SPLIT_AT] == 1


def test_iid_codes_are_not_tried():
    g = np.random.default_rng(1)
    x = np.clip(np.round(g.normal(0, 2.4, (256, 64))), -31, 31).astype(np.int8)
    assert encode_codes(x, model="best")[0] >> 5 == 1


@given(st.permutations(list(range(12))))
def test_lehmer_inverts(perm):
    p = np.asarray(perm)
    d = ad.lehmer(p)
    assert all(0 <= v < len(p) - i for i, v in enumerate(d.tolist()))
    np.testing.assert_array_equal(ad.unlehmer(d, len(p)), p)


def _forge(body: bytes, lo: int = -31, span: int = 62, shape=(320, 48)) -> bytes:
    out = bytearray([(2 << 5) | 0])  # version 2, mode ADAPTIVE, int8
    _put_uvarint(out, len(shape))
    for d in shape:
        _put_uvarint(out, d)
    _put_uvarint(out, _zigzag(lo))
    _put_uvarint(out, span)
    return bytes(out) + body


@pytest.mark.parametrize("data, match", [
    (_forge(b"\x02"), "split flag"),
    (_forge(b"\x00", span=100), "alphabet"),
    (_forge(b"\x00", shape=(1 << 14, 1 << 13)), "at most"),
    (_forge(b"\x00", shape=(1 << 20, 2)), "rows"),
    (_forge(b"\x00", shape=(0, 4)), "non-empty"),
    (_forge(b"\x00" + bytes(range(1, 9))), "consumed|corrupt"),
    (_forge(b"\x00\x01\x02\x03"), "whole 32-bit words"),
    (_forge(b"\x00"), "missing"),
    (bytes([(2 << 5) | (3 << 2)]) + STREAM[1:], "unknown mode"),
])
def test_forged_streams_are_rejected(data, match):
    with pytest.raises(EntropyDecodeError, match=match):
        decode_codes(data, max_symbols=1 << 28)


def test_split_off_rows_must_be_a_version_1_stream():
    r = _Reader(STREAM)
    r.pos = SPLIT_AT + 1
    r.pos += r.uvarint("ids", 1 << 20)  # skip the id stream
    r.uvarint("sub", 1 << 20)
    bad = bytearray(STREAM)
    bad[r.pos] = (2 << 5) | (bad[r.pos] & 3)  # the nested stream's byte 0 becomes version 2
    with pytest.raises(EntropyDecodeError, match="version-1"):
        decode_codes(bytes(bad))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    edits=st.lists(st.tuples(st.floats(0, 0.2, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=3),
    tail=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), max_size=2),
    cut=st.one_of(st.none(), st.floats(0, 1)),
    insert=st.booleans(),
)
def test_fuzz_mutated_adaptive_streams(edits, tail, cut, insert):
    """Edits concentrated in the header, ids and split-off stream (the first 20 %), plus anywhere; every outcome is a
    clean EntropyDecodeError or an array within the size limit."""
    decode_or_reject(mutate(STREAM, edits + tail, cut, insert), max_symbols=EMB.size)


def test_mutated_adaptive_stream_in_an_artifact_is_a_clean_error_naming_the_tensor():
    """Byte edits inside an artifact's adaptive stream (same length, so the container's lengths still match) end in
    ArtifactError: from the decoder, naming the tensor, or from the payload CRC; never IndexError & co."""
    import torch

    from pgolf.pack.container import decode_artifact, encode_artifact
    from pgolf.pack.format import ArtifactError
    from pgolf.quant.apply import QuantizedState
    from pgolf.quant.primitives import QuantizedTensor

    qs = QuantizedState(tensors={"tok_emb.weight": QuantizedTensor(
        q=torch.from_numpy(EMB.copy()), scale=torch.full((EMB.shape[0],), 0.01, dtype=torch.float16), bits=6,
        method="sdclip_rtn")})
    blob = encode_artifact(qs, {}, "rans-ctx")
    start = len(blob) - len(STREAM)
    assert blob[start:] == STREAM  # the one code stream comes last
    g = np.random.default_rng(0)
    named = 0
    for k in range(40):
        bad = bytearray(blob)
        # the header and split-off part (first 20 %), the Lehmer digits and first rows, or anywhere in the payload
        span = (len(STREAM) // 5, len(STREAM) // 2, len(STREAM))[k % 3]
        for _ in range(1 + k % 3):
            bad[start + int(g.integers(span))] ^= int(g.integers(1, 256))
        with pytest.raises(ArtifactError) as err:
            decode_artifact(bytes(bad))
        msg = str(err.value)
        assert msg.startswith("tensor row 0 ('tok_emb.weight'): rANS stream") or "CRC32" in msg, msg
        named += msg.startswith("tensor row 0")
    assert named >= 30  # most edits are caught by the stream decoder itself, not only by the CRC
