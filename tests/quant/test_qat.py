"""quant/qat.py: STE fake-quant via CastedLinear.weight_fn, switched by a tensor flag that torch.compile does not
fold, and exactly aligned with the sdclip-rtn export at the end of training.

    python -m pytest tests/quant/test_qat.py -q
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from pgolf.model.gpt import GPT
from pgolf.pack.container import decode_artifact, encode_artifact
from pgolf.quant.apply import dequantize_state, quantize_state_dict
from pgolf.quant.qat import install_qat
from pgolf.quant.recipes import RECIPES, TensorRule
from pgolf.train.config import TrainConfig
from pgolf.train.loop import train
from tests.model.conftest import randomize, tiny_config

CFG = dict(model_dim=64, num_heads=4, num_kv_heads=2, vocab_size=64)
# sdclip-rtn on every CastedLinear (threshold lowered for the tiny model); embedding and small tensors passthrough
RECIPE = dataclasses.replace(
    RECIPES["sdclip-rtn"], passthrough_max_numel=1024,
    rules=(TensorRule(role="embed", method="passthrough"), *RECIPES["sdclip-rtn"].rules[1:3],
           TensorRule(role="*", method="passthrough")))


def _model() -> GPT:
    torch.manual_seed(0)
    return randomize(GPT(tiny_config(**CFG)), std=0.1).eval()


def _x() -> torch.Tensor:
    return torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(1))


def test_enabling_qat_changes_the_forward_and_off_is_identity():
    torch.set_num_threads(1)
    model, x = _model(), _x()
    with torch.no_grad():
        ref = model(x, x)
        qat = install_qat(model, RECIPE)
        assert qat.tensors and all(qat.tensors.values())  # every CastedLinear exactly aligned
        assert torch.equal(model(x, x), ref)  # flag 0: bit-identical
        qat.enable()
        on = model(x, x)
    assert not torch.equal(on, ref)
    loss = model(x, x)
    loss.backward()  # STE: gradients flow to the fp32 weights
    assert model.blocks[0].mlp.fc.weight.grad.abs().sum() > 0


def test_toggle_after_torch_compile_changes_the_output():
    torch.set_num_threads(1)
    model, x = _model(), _x()
    qat = install_qat(model, RECIPE)
    compiled = torch.compile(model, backend="eager")
    with torch.no_grad():
        off = compiled(x, x)
        qat.enable()
        on = compiled(x, x)
        qat.enable(False)
        off2 = compiled(x, x)
        qat.enable()
        eager_on = model(x, x)
    assert not torch.equal(on, off)
    assert torch.equal(off, off2)
    assert torch.allclose(on, eager_on, atol=1e-6)


class _Loader:
    def __init__(self) -> None:
        self.gen = torch.Generator().manual_seed(0)

    def next_batch(self, tokens, seq_len, accum):
        x = torch.randint(0, 64, (tokens // seq_len, seq_len + 1), generator=self.gen)
        return x[:, :-1], x[:, 1:]

    def state_dict(self):
        return {}


class _Log:
    def __init__(self) -> None:
        self.events = []

    def event(self, kind, **kw):
        self.events.append(kind)

    def step(self, *a, **k): ...
    def start_bar(self, *a, **k): ...
    def update_bar(self, *a, **k): ...
    def close_bar(self, *a, **k): ...


def test_qat_forward_equals_the_exported_artifact_model(tmp_path):
    torch.set_num_threads(1)
    model, x = _model(), _x()
    qat = install_qat(model, RECIPE)
    cfg = TrainConfig(max_wallclock_seconds=0, iterations=6, train_batch_tokens=128, train_seq_len=16,
                      warmdown_frac=0.5, qat_threshold=0.5, log_every=100)
    log = _Log()
    train(cfg, model, _Loader(), logger=log, run_dir=tmp_path, device=torch.device("cpu"), qat=qat)
    assert "qat" in log.events and qat.enabled
    # passthrough tensors are fp16 in the artifact: give the trained model the same rounding, then compare
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name not in qat.tensors:
                p.copy_(p.half().float())
        qat_out = model(x, x)
    qs, _ = quantize_state_dict(model.state_dict(), RECIPE)
    assert set(qat.tensors) <= set(qs.tensors)
    qs2, _ = decode_artifact(encode_artifact(qs, {"recipe": RECIPE.name}, "zlib"))
    exported = GPT(tiny_config(**CFG))
    exported.load_state_dict(dequantize_state(qs2), strict=True)
    with torch.no_grad():
        assert torch.equal(exported.eval()(x, x), qat_out)
