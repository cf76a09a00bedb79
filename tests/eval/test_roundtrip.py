"""Round trip: artifact bytes alone rebuild the model (strict load), and its score is what gets reported.

    python -m pytest tests/eval/test_roundtrip.py -q
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

gpt = pytest.importorskip("pgolf.model.gpt", reason="pgolf.model.gpt is not written yet (model stage)")

from pgolf.eval.roundtrip import load_model_from_artifact  # noqa: E402
from pgolf.model.config import GPTConfig  # noqa: E402
from pgolf.pack.container import ArtifactError, encode_artifact  # noqa: E402
from pgolf.quant.apply import dequantize_state, quantize_state_dict  # noqa: E402
from tests.eval.test_bpb import make_lut, score_standard  # noqa: E402

CFG = GPTConfig(vocab_size=64, num_layers=4, model_dim=64, num_heads=4, num_kv_heads=2, mlp_mult=4.0,
                ve_dim=16, ve_layers=(2, 3), num_loops=1, loop_start=1, loop_end=2)


def _trained_like(cfg: GPTConfig) -> torch.nn.Module:
    torch.manual_seed(0)
    model = gpt.GPT(cfg)
    with torch.no_grad():  # zero-initialised projections would make the check trivial
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def _artifact(model, manifest_extra=None, codec="zlib", drop=None):
    state = {k: v for k, v in model.state_dict().items() if k != drop}
    qs, _ = quantize_state_dict(state, "int8-baseline")
    manifest = {"model": json.loads(json.dumps(dataclasses.asdict(model.cfg))), **(manifest_extra or {})}
    return encode_artifact(qs, manifest, codec), qs


def test_artifact_rebuilds_the_dequantized_model_exactly():
    model = _trained_like(CFG)
    blob, qs = _artifact(model, {"recipe": "int8-baseline"})
    loaded, manifest = load_model_from_artifact(blob)
    assert manifest["recipe"] == "int8-baseline" and not loaded.training
    assert loaded.cfg == CFG and loaded.cfg.ve_layers == (2, 3)  # JSON lists back to tuples
    assert loaded.looping_active  # num_loops > 0 and the manifest does not say otherwise
    reference = gpt.GPT(CFG)
    reference.load_state_dict(dequantize_state(qs))
    reference.set_looping(True)
    idx = torch.randint(0, 64, (2, 24))
    with torch.no_grad():
        assert torch.equal(loaded.logits(idx), reference.logits(idx))
    off, _ = load_model_from_artifact(_artifact(model, {"looping_active": False})[0])
    assert not off.looping_active


def test_roundtrip_score_is_close_to_the_float_model():
    model = _trained_like(CFG)
    model.set_looping(True)
    loaded, _ = load_model_from_artifact(_artifact(model, codec="brotli")[0])
    toks = torch.randint(0, 64, (400,), generator=torch.Generator().manual_seed(0))
    pre = score_standard(model, toks, make_lut(), seq_len=32, stride=8)
    post = score_standard(loaded, toks, make_lut(), seq_len=32, stride=8)
    assert post.num_tokens == pre.num_tokens == 399 and post.num_bytes == pre.num_bytes
    assert post.val_bpb != pre.val_bpb and abs(post.val_bpb - pre.val_bpb) < 0.01 * pre.val_bpb


def test_mismatched_artifacts_are_artifact_errors():
    model = _trained_like(CFG)
    with pytest.raises(ArtifactError, match=r"tensor table does not match the manifest model: missing \['tok_emb"):
        load_model_from_artifact(_artifact(model, drop="tok_emb.weight")[0])
    qs, _ = quantize_state_dict(model.state_dict(), "int8-baseline")
    with pytest.raises(ArtifactError, match="unknown to this pgolf"):
        load_model_from_artifact(encode_artifact(qs, {"model": {"vocab_size": 64, "warp_drive": 1}}, "zlib"))
    with pytest.raises(ArtifactError, match="field 'model' is None"):
        load_model_from_artifact(encode_artifact(qs, {}, "zlib"))
    with pytest.raises(ArtifactError, match="inconsistent: model.model_dim=63 must be divisible"):
        load_model_from_artifact(encode_artifact(qs, {"model": {"model_dim": 63}}, "zlib"))
