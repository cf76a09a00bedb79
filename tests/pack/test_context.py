"""encode_codes(model="best"): context-model rANS (pgolf.pack.context) and the brotli fallback, bit-exact and hardened.

    python -m pytest tests/pack/test_context.py -q
"""

from __future__ import annotations

import brotli
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pgolf.pack import context as cx
from pgolf.pack.container import decode_artifact, encode_artifact
from pgolf.pack.entropy import EntropyDecodeError, decode_codes, encode_codes, order0_entropy_bytes
from pgolf.quant.apply import QuantizedState
from pgolf.quant.primitives import QuantizedTensor
from tests.pack.test_entropy import _decode_or_reject as decode_or_reject, mutate

CONTEXT, BROTLI, BROTLI_T = 5, 6, 7


def mode(data: bytes) -> int:
    return (data[0] >> 2) & 7


def column_codes(rows: int, cols: int, bits: int = 6, k: float = 12.85, spread: float = 0.8,
                 seed: int = 0) -> np.ndarray:
    """Per-row std-clipped RTN codes of weights whose columns differ in spread (log-normal), like trained inputs."""
    rng = np.random.default_rng(seed)
    qmax = 2 ** (bits - 1) - 1
    w = rng.standard_normal((rows, cols)) * np.exp(rng.normal(0, spread, cols))[None, :]
    w *= rng.uniform(0.5, 2.0, (rows, 1))
    scale = np.maximum(k * w.std(axis=1, keepdims=True) / qmax, 1e-12)
    return np.clip(np.round(w / scale), -qmax, qmax).astype(np.int8)


def roundtrip(x: np.ndarray) -> bytes:
    data = encode_codes(x, model="best")
    y = decode_codes(data)
    assert y.dtype == x.dtype.newbyteorder("=") and y.shape == x.shape and np.array_equal(y, x)
    return data


# ---------------------------------------------------------------------------------------------------------- exact


@pytest.mark.parametrize("bits", range(2, 9))
def test_every_bit_width_round_trips_and_uses_the_context_model(bits):
    x = column_codes(96, 160, bits=bits, k=2.0 * 2 ** (bits - 2), seed=bits)
    data = roundtrip(x)
    assert mode(data) == CONTEXT  # column spreads differ: the context model must win at every width
    assert len(data) < 0.97 * len(encode_codes(x))


@pytest.mark.parametrize(
    "x",
    [
        np.zeros(0, np.int8),
        np.zeros((0, 9), np.int8),
        np.zeros((3, 0, 2), np.int16),
        np.full((64, 70), -3, np.int8),
        np.full(100_000, 127, np.int8),
        np.array([[1, -1]], np.int8),
        np.arange(-128, 128, dtype=np.int8).reshape(16, 16),
        np.tile(np.arange(-128, 128, dtype=np.int8), (40, 1)),  # repeated rows: brotli's case
        np.repeat(np.random.default_rng(5).integers(-30, 30, (100, 7)), 20, axis=1).astype(np.int8),  # column-major
        np.repeat(np.random.default_rng(6).integers(-30, 30, (10, 7)), 20, axis=1).astype(np.int8).reshape(10, 20, 7),
        np.random.default_rng(1).integers(-32768, 32768, (50, 100)).astype(np.int16),
        np.random.default_rng(2).integers(0, 65536, (100, 50)).astype(np.uint16),
        (np.random.default_rng(3).standard_normal((64, 300)) * 40).round().astype(np.int16),
        np.arange(-2000, 2000, dtype=">i2").reshape(40, 100),  # big-endian input comes back native
        column_codes(4096, 1),  # a single column: no context model
        column_codes(1, 8192),  # a single row
        column_codes(40, 200).reshape(40, 10, 20),  # ndim 3: viewed as 40 × 200
        column_codes(300, 40, bits=2),
        np.r_[np.zeros((500, 20), np.int8), np.ones((1, 20), np.int8)],  # one row differs
        ((np.random.default_rng(4).random((100, 100)) < 1e-3) * 17 - 8).astype(np.int8),
    ],
    ids=lambda x: f"{x.dtype}{list(x.shape)}",
)
def test_edge_cases_round_trip(x):
    roundtrip(x)


def test_best_is_never_larger_than_order0_or_brotli():
    rng = np.random.default_rng(5)
    cases = [column_codes(200, 300, seed=1), column_codes(200, 300, spread=0.0, seed=2),
             np.tile(column_codes(1, 512, seed=3), (64, 1)), rng.integers(-31, 32, (128, 128)).astype(np.int8),
             np.repeat(rng.integers(-30, 30, (100, 7)), 20, axis=1).astype(np.int8)]
    for x in cases:
        data = roundtrip(x)
        assert len(data) <= len(encode_codes(x))
        assert len(data) <= len(brotli.compress(x.tobytes(), quality=11)) + 8  # + the header bytes
        assert len(data) <= len(brotli.compress(np.ascontiguousarray(x.T).tobytes(), quality=11)) + 8
    assert mode(encode_codes(cases[2], model="best")) == BROTLI  # identical rows: no per-symbol model competes
    for x in cases:  # the quick-sizing model skips the brotli trials and is never below "best"
        quick = encode_codes(x, model="context")
        assert mode(quick) not in (BROTLI, BROTLI_T) and np.array_equal(decode_codes(quick), x)
        assert len(encode_codes(x, model="best")) <= len(quick) <= len(encode_codes(x))
    with pytest.raises(ValueError, match="unknown model"):
        encode_codes(cases[0], model="ctx")
    assert mode(encode_codes(cases[4], model="best")) == BROTLI_T  # repeated columns: column-major wins


def test_context_model_approaches_the_conditional_entropy():
    """On codes whose columns fall in 4 spread classes, the coded size sits near the entropy given the class."""
    rng = np.random.default_rng(6)
    cls = rng.integers(0, 4, 512)
    w = rng.standard_normal((256, 512)) * (0.25 * 2.0 ** cls)[None, :]
    x = np.clip(np.round(w / (12.85 * 2.0 / 31)), -31, 31).astype(np.int8)
    h_cond = sum(order0_entropy_bytes(x[:, cls == c]) for c in range(4))
    data = roundtrip(x)
    assert mode(data) == CONTEXT
    assert len(data) <= 1.01 * h_cond + 400  # ids (512 × 2 bits) and tables
    assert len(data) < 0.9 * order0_entropy_bytes(x)


def test_cluster_fit_lowers_the_code_length():
    x = column_codes(128, 256, seed=7)
    sym, lo, k = cx.symbol_matrix(x)
    one = cx.estimate_bits(cx.context_counts(sym, k, np.zeros(128, np.int64), np.zeros(256, np.int64)))
    prev = one
    for bc in (2, 4, 8):
        rows, cols = cx.fit_clusters(sym, k, 1, bc)
        assert rows.max() == 0 and cols.max() < bc
        bits = cx.estimate_bits(cx.context_counts(sym, k, rows, cols))
        assert bits < prev
        prev = bits
    assert prev < 0.97 * one


def test_torch_and_container_use_the_best_model():
    qs = QuantizedState()
    qs.tensors["w"] = QuantizedTensor(q=torch.from_numpy(column_codes(128, 192, seed=8)),
                                      scale=torch.ones(128, dtype=torch.float16), bits=6, method="rtn")
    qs.tensors["rep"] = QuantizedTensor(q=torch.from_numpy(np.tile(column_codes(1, 256, seed=9), (48, 1))),
                                        scale=torch.ones(48, dtype=torch.float16), bits=6, method="rtn")
    qs.dtypes.update({"w": "float32", "rep": "float32"})
    a, b = encode_artifact(qs, {}, "rans"), encode_artifact(qs, {}, "rans-ctx")
    assert len(b) < len(a)
    out, _ = decode_artifact(b)
    for n, t in qs.tensors.items():
        assert torch.equal(out.tensors[n].q, t.q) and torch.equal(out.tensors[n].scale, t.scale)


# ------------------------------------------------------------------------------------------------------- hardened


def _valid() -> list[bytes]:
    out = [encode_codes(column_codes(64, 96, seed=s, bits=b), model="best") for s, b in ((10, 6), (11, 3), (12, 8))]
    out.append(encode_codes(np.tile(column_codes(1, 300, seed=13), (30, 1)), model="best"))
    out.append(encode_codes(np.repeat(column_codes(60, 7, seed=17), 20, axis=1), model="best"))
    x = np.zeros((200, 60), np.int8)  # constant contexts next to coded ones
    x[:, :30] = column_codes(200, 30, seed=14)
    out.append(encode_codes(x, model="best"))
    return out


VALID = _valid()


def test_valid_streams_cover_the_new_modes():
    assert {CONTEXT, BROTLI, BROTLI_T} <= {mode(d) for d in VALID}


def _decode_or_reject(data: bytes) -> None:
    decode_or_reject(data, max_symbols=1 << 20)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    which=st.integers(0, len(VALID) - 1),
    edits=st.lists(st.tuples(st.floats(0, 0.3), st.integers(0, 255)), min_size=1, max_size=4),
    cut=st.one_of(st.none(), st.floats(0, 1)),
    insert=st.booleans(),
)
def test_fuzz_mutated_streams(which, edits, cut, insert):
    _decode_or_reject(mutate(VALID[which], edits, cut, insert))  # edits mostly in the header, ids and tables


def test_forged_context_headers_are_rejected():
    x = column_codes(64, 96, seed=15)
    good = encode_codes(x, model="best")
    assert mode(good) == CONTEXT
    # header: byte0, ndim=2, 64, 96, lo (zigzag), span, br, bc: one byte each here
    assert list(good[1:4]) == [2, 64, 96] and max(good[4:8]) < 128
    for br, bc, what in ((0, 1, "zero"), (65, 1, "row clusters"), (1, 97, "column clusters")):
        forged = good[:6] + bytes([br, bc]) + good[8:]
        with pytest.raises(EntropyDecodeError, match=what):
            decode_codes(forged)
    with pytest.raises(EntropyDecodeError):
        decode_codes(good + b"\x07")
    with pytest.raises(EntropyDecodeError):
        decode_codes(good[:-3])
    # a nested id stream may only be an order-0 stream (no recursion into another context stream)
    nested = encode_codes(column_codes(64, 96, seed=16), model="best")
    assert mode(nested) == CONTEXT
    forged = bytearray(good[:8])
    forged += bytes([len(nested)]) if len(nested) < 128 else bytes([len(nested) & 0x7F | 0x80, len(nested) >> 7])
    forged += nested
    if good[6] > 1:
        with pytest.raises(EntropyDecodeError, match="order-0"):
            decode_codes(bytes(forged) + good[8:])


def test_brotli_mode_bounds_its_output():
    x = np.tile(np.arange(-30, 30, dtype=np.int8), (100, 1))
    data = encode_codes(x, model="best")
    assert mode(data) == BROTLI
    with pytest.raises(EntropyDecodeError, match="limit"):
        decode_codes(data, max_symbols=x.size - 1)
    bigger = bytes([data[0], 2, 101, 60]) + data[4:]  # claims one more row than the brotli payload holds
    with pytest.raises(EntropyDecodeError, match="brotli"):
        decode_codes(bigger)
    smaller = bytes([data[0], 2, 99, 60]) + data[4:]  # the payload holds more than the shape: over the limit
    with pytest.raises(EntropyDecodeError, match="brotli"):
        decode_codes(smaller)


# -------------------------------------------------------------------------------------------------------- layouts


@pytest.mark.parametrize("bits", range(2, 9))
@pytest.mark.parametrize("transpose,group,simsort", [(False, False, False), (True, False, False),
                                                     (False, True, False), (True, True, True), (False, False, True)])
def test_layouts_round_trip(bits, transpose, group, simsort):
    from pgolf.pack.layouts import arrange, restore, role_of

    m = 2 ** (bits - 1) - 1
    codes = {f"blocks.{i}.mlp.fc.weight": column_codes(24, 16, bits=bits, k=m / 2, seed=i) for i in range(2)}
    codes |= {f"blocks.{i}.attn.c_q.weight": column_codes(8, 16, bits=bits, k=m / 2, seed=9 + i) for i in range(2)}
    codes |= {"empty": np.zeros((0, 5), np.int8), "const": np.full((3, 4), -m, np.int8),
              "vec": np.arange(-m, m + 1, dtype=np.int8), "cube": column_codes(6, 12, bits=bits).reshape(6, 3, 4)}
    blobs, perms = arrange(codes, transpose=transpose, group=group, simsort=simsort)
    assert len(blobs) == (len({role_of(n) for n in codes}) if group else len(codes))
    assert sum(map(len, blobs)) == sum(a.nbytes for a in codes.values())
    back = restore(blobs, perms, {n: a.shape for n, a in codes.items()}, transpose=transpose, group=group)
    assert list(back) == list(codes) and all(np.array_equal(back[n], a) and back[n].shape == a.shape
                                             for n, a in codes.items())
    if simsort:
        for p in perms.values():
            assert sorted(p.tolist()) == list(range(p.size)) and p[0] == 0


def test_similarity_order_walks_to_the_nearest_row():
    from pgolf.pack.layouts import similarity_order

    q = np.array([[0, 0], [9, 9], [1, 0], [8, 9], [2, 1]], np.int8)
    assert similarity_order(q).tolist() == [0, 2, 4, 3, 1]


def test_column_major_brotli_needs_a_matrix():
    x = np.repeat(np.random.default_rng(18).integers(-30, 30, (10, 7)), 20, axis=1).astype(np.int8)  # 10 × 140
    data = encode_codes(x, model="best")
    assert mode(data) == BROTLI_T and list(data[1:5]) == [2, 10, 0x8C, 0x01]
    flat = bytes([data[0], 1, 0xF8, 0x0A]) + data[5:]  # the same 1,400 codes declared as a vector
    with pytest.raises(EntropyDecodeError, match="ndim"):
        decode_codes(flat)
    assert np.array_equal(decode_codes(data), x)


def test_pack_cli_writes_rans_ctx(tmp_path, capsys):
    """`pgolf pack --codec rans-ctx` on a valid model artifact whose tok_emb has barely-trained (near-copy) rows."""
    import dataclasses
    import json

    from pgolf.cli import main
    from pgolf.model.config import GPTConfig
    from pgolf.model.gpt import GPT
    from pgolf.pack.container import artifact_codec, write_artifact
    from pgolf.quant.apply import quantize_state_dict

    cfg = GPTConfig(vocab_size=1024, num_layers=1, model_dim=96, num_heads=4, num_kv_heads=2, mlp_mult=2.0)
    torch.manual_seed(0)
    model = GPT(cfg)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        emb = torch.randn(1024, 96, generator=g)
        emb[:300] = torch.randn(96, generator=g) + 0.05 * torch.randn(300, 96, generator=g)
        model.tok_emb.weight.copy_(emb)
    qs, _ = quantize_state_dict(model.state_dict(), "int8-baseline")
    manifest = {"model": json.loads(json.dumps(dataclasses.asdict(cfg))), "codec": "zlib"}
    src, out = tmp_path / "a.pgolf", tmp_path / "b.pgolf"
    write_artifact(src, encode_artifact(qs, manifest, "zlib"))
    assert main(["pack", str(src), "--codec", "rans-ctx", "--out", str(out)]) == 0
    assert "round trip bit-exact" in capsys.readouterr().out
    blob = out.read_bytes()
    assert artifact_codec(blob) == "rans-ctx" and len(blob) < len(encode_artifact(qs, manifest, "rans"))
    assert torch.equal(decode_artifact(blob)[0].tensors["tok_emb.weight"].q, qs.tensors["tok_emb.weight"].q)
