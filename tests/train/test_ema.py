"""EMA of the weights: closed form after k updates, fp32 shadow, non-float entries copied, checkpoint and copy_to
round trips.

    python -m pytest tests/train/test_ema.py -q
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pgolf.train.ema import EMA


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 3)
        self.register_buffer("counter", torch.zeros((), dtype=torch.long))


def test_closed_form_after_k_updates():
    """Constant weights w after init w0: ema_k = d^k·w0 + (1 − d^k)·w."""
    torch.manual_seed(0)
    model, d, k = Tiny(), 0.9, 7
    w0 = model.lin.weight.detach().clone()
    ema = EMA(model, d)
    with torch.no_grad():
        model.lin.weight.add_(1.0)
    for _ in range(k):
        ema.update(model)
    expected = d**k * w0 + (1 - d**k) * (w0 + 1.0)
    torch.testing.assert_close(ema.state_dict()["lin.weight"], expected, rtol=0, atol=1e-6)


def test_changing_weights_recurrence_and_int_buffers():
    torch.manual_seed(1)
    model, d = Tiny(), 0.8
    ema = EMA(model, d)
    ref = model.lin.bias.detach().double().clone()
    for step in range(1, 5):
        with torch.no_grad():
            model.lin.bias.mul_(-1.5).add_(0.3)
            model.counter.fill_(step)
        ema.update(model)
        ref = d * ref + (1 - d) * model.lin.bias.detach().double()
    state = ema.state_dict()
    torch.testing.assert_close(state["lin.bias"].double(), ref, rtol=0, atol=1e-6)
    assert state["counter"].dtype == torch.long and state["counter"].item() == 4  # copied, not averaged


def test_shadow_is_fp32_and_copy_to_casts_back():
    model = Tiny().to(torch.bfloat16)
    ema = EMA(model, 0.99)
    assert ema.state_dict()["lin.weight"].dtype == torch.float32
    with torch.no_grad():
        model.lin.weight.fill_(2.0)
    ema.update(model)
    expected = ema.state_dict()["lin.weight"].to(torch.bfloat16)
    ema.copy_to(model)
    assert model.lin.weight.dtype == torch.bfloat16
    torch.testing.assert_close(model.lin.weight.detach(), expected, rtol=0, atol=0)


def test_state_dict_round_trip_and_copy_to():
    torch.manual_seed(2)
    model = Tiny()
    ema = EMA(model, 0.9)
    with torch.no_grad():
        model.lin.weight.add_(3.0)
    ema.update(model)
    saved = ema.state_dict()
    restored = EMA(Tiny(), 0.9)
    restored.load_state_dict(saved)
    fresh = Tiny()
    restored.copy_to(fresh)
    for name, t in fresh.state_dict().items():
        torch.testing.assert_close(t, saved[name].to(t.dtype), rtol=0, atol=0)
    saved["lin.weight"].zero_()  # state_dict() hands out copies
    assert ema.state_dict()["lin.weight"].abs().sum() > 0
    with pytest.raises(ValueError, match="missing"):
        restored.load_state_dict({"lin.weight": saved["lin.weight"]})


def test_rejects_bad_decay():
    with pytest.raises(ValueError):
        EMA(Tiny(), 1.0)
