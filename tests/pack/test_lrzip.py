"""pgolf.pack.lrzip: R0427's per-group pipeline (role groups, similarity sort, transposition, `lrzip -z -L 9`)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from pgolf.pack import lrzip as lz

needs_lrzip = pytest.mark.skipif(shutil.which("lrzip") is None, reason="the lrzip binary is not installed")


def _codes(seed: int = 0) -> dict[str, np.ndarray]:
    g = np.random.default_rng(seed)
    out = {"tok_emb.weight": g.integers(-3, 4, (40, 16))}
    for i in range(2):
        out[f"blocks.{i}.attn.c_q.weight"] = g.integers(-5, 6, (16, 16))
        out[f"blocks.{i}.mlp.fc.weight"] = g.integers(-5, 6, (24, 16))
        out[f"blocks.{i}.mlp.proj.weight"] = g.integers(-5, 6, (16, 24))
    out["bigram.embed.weight"] = g.integers(-5, 6, (8, 4))  # no role: not in any group
    return {k: v.astype(np.int8) for k, v in out.items()}


def test_roles_and_group_order_follow_r0427():
    assert lz.role("tok_emb.weight") == "tok_emb"
    assert lz.role("blocks.3.attn.c_k.weight") == "attn.c_k"
    assert lz.role("blocks.10.mlp.proj.weight") == "mlp.proj"
    assert lz.role("bigram.embed.weight") is None
    groups = lz.code_groups(_codes())
    assert [g.role for g in groups] == ["tok_emb", "attn.c_q", "mlp.fc", "mlp.proj"]
    assert groups[1].names == ["blocks.0.attn.c_q.weight", "blocks.1.attn.c_q.weight"]


def test_group_layout_is_transposed_sorted_rows():
    codes = _codes()
    g = lz.code_groups(codes)[0]
    raw, side = lz.group_layout(codes, g)
    from pgolf.pack.codecs import decompress

    perm = np.frombuffer(decompress(side, "brotli"), dtype="<u2")
    m = codes["tok_emb.weight"]
    assert sorted(perm.tolist()) == list(range(m.shape[0])) and perm[0] == 0
    assert raw == np.ascontiguousarray(m[perm].T).tobytes()
    raw, side = lz.group_layout(codes, lz.code_groups(codes)[3])  # mlp.proj: not similarity-sorted
    assert side == b"" and raw.startswith(np.ascontiguousarray(codes["blocks.0.mlp.proj.weight"].T).tobytes())


def test_missing_binary_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(lz.shutil, "which", lambda name: None)
    with pytest.raises(lz.LrzipMissingError, match="lrzip.*apt-get install lrzip"):
        lz.encode_groups(_codes())


@needs_lrzip
def test_round_trip_and_reference_bytes():
    codes = _codes()
    blob = lz.encode_groups(codes)
    shapes = {n: a.shape for n, a in codes.items()}
    back = lz.decode_groups(blob, shapes)
    assert set(back) == {n for n in codes if lz.role(n)}
    for n, a in back.items():
        np.testing.assert_array_equal(a, codes[n])
    g = lz.code_groups(codes)[2]  # each group's lrzip file is exactly `lrzip -z -L 9` of its layout
    raw, _ = lz.group_layout(codes, g)
    assert lz.lrzip_decompress(lz.lrzip_compress(raw)) == raw
    assert lz.encode_groups(codes) == blob  # deterministic


@needs_lrzip
@pytest.mark.parametrize("cut", [0, 5, 9, 40, -7, -1])
def test_corrupt_streams_raise_lrzip_error(cut):
    codes = _codes()
    blob = lz.encode_groups(codes)
    shapes = {n: a.shape for n, a in codes.items()}
    bad = blob[:cut] if cut > 0 else blob[:cut] + b"\x00" * 3
    with pytest.raises(lz.LrzipError):
        lz.decode_groups(bad, shapes)


def test_oversized_lrzip_header_is_rejected_before_running_lrzip():
    blob = b"LRZI\x00\x06" + (1 << 40).to_bytes(8, "little") + b"\x00" * 10
    if shutil.which("lrzip") is None:
        pytest.skip("the lrzip binary is not installed")
    with pytest.raises(lz.LrzipError, match="over the"):
        lz.lrzip_decompress(blob, max_size=1 << 20)


def _state():
    import torch

    from pgolf.quant.apply import QuantizedState
    from pgolf.quant.primitives import QuantizedTensor

    qs = QuantizedState()
    for n, a in _codes().items():
        q = torch.from_numpy(a)
        qs.tensors[n] = QuantizedTensor(q=q, scale=torch.ones(q.shape[0], dtype=torch.float16), bits=6, method="rtn")
        qs.dtypes[n] = "float32"
    qs.passthrough["norm.weight"] = torch.arange(8, dtype=torch.float16)
    qs.dtypes["norm.weight"] = "float16"
    return qs


@needs_lrzip
def test_lrzip_groups_artifact_round_trips_and_rejects_corruption():
    import torch

    from pgolf.pack.container import ArtifactError, artifact_codec, decode_artifact, encode_artifact

    qs = _state()
    blob = encode_artifact(qs, {"model": {"a": 1}}, "lrzip-groups")
    assert artifact_codec(blob) == "lrzip-groups"
    back, manifest = decode_artifact(blob)
    assert manifest == {"model": {"a": 1}} and list(back.tensors) == list(qs.tensors)
    for n, t in qs.tensors.items():
        assert torch.equal(back.tensors[n].q, t.q) and torch.equal(back.tensors[n].scale, t.scale)
    assert torch.equal(back.passthrough["norm.weight"], qs.passthrough["norm.weight"])
    for bad in (blob[:-5], blob[:20], blob[:12] + b"\xff" + blob[13:], blob + b"\x00"):
        with pytest.raises(ArtifactError):
            decode_artifact(bad)


def test_lrzip_groups_without_the_binary_names_it(monkeypatch):
    from pgolf.pack.container import ArtifactError, decode_artifact, encode_artifact

    monkeypatch.setattr(lz.shutil, "which", lambda name: None)
    with pytest.raises(lz.LrzipMissingError, match="lrzip"):
        encode_artifact(_state(), {}, "lrzip-groups")
    forged = b"PGOLF\0" + bytes([2, 18]) + b"\x00" * 8
    with pytest.raises(ArtifactError, match="needs the `lrzip` binary"):
        decode_artifact(forged)
