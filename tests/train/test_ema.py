"""EMA of the weights: closed form after k updates, the records' arithmetic bit for bit, the TF warm-up, fp32 shadow,
non-float entries copied, checkpoint and copy_to round trips.

    python -m pytest tests/train/test_ema.py -q
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pgolf.train.ema import EMA, warmup_decay


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


class Several(nn.Module):
    """Odd sizes (not multiples of a SIMD width), a 0-d and an fp32 buffer, like a GPT state dict."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.randn(37, 13))
        self.b = nn.Parameter(torch.randn(5))
        self.c = nn.Parameter(torch.tensor(0.05))
        self.register_buffer("step", torch.zeros((), dtype=torch.long))


def _records_trajectory(steps: int, decay: float, warmup: bool) -> tuple[dict, dict]:
    """(records' ema_state, pgolf EMA state) after `steps` random-walk updates of the same weights."""
    torch.manual_seed(3)
    model = Several()
    gen = torch.Generator().manual_seed(4)
    ref = {name: t.detach().float().clone() for name, t in model.state_dict().items()}  # R0322+ initialisation
    ema = EMA(model, decay, warmup=warmup)
    for step in range(steps):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=gen) * 0.01)
            model.step.fill_(step)
        for name, t in model.state_dict().items():  # the records' per-tensor loop, verbatim arithmetic
            if t.is_floating_point():
                ref[name].mul_(decay).add_(t.detach().float(), alpha=1.0 - decay)
            else:
                ref[name].copy_(t)
        ema.update(model)
    return ref, ema.state_dict()


@pytest.mark.parametrize("steps, decay", [(7000, 0.997), (7000, 0.9965)])  # R0322–R0405 · R0414/R0427
def test_without_warmup_the_records_ema_bit_for_bit(steps, decay):
    ref, ours = _records_trajectory(steps, decay, warmup=False)
    for name in ref:
        assert torch.equal(ours[name], ref[name]), name


def test_warmup_changes_the_records_ema_only_negligibly_at_their_step_counts():
    """At 7,000 steps of 0.997 the warm-up's effect has decayed to ~d^(7000−2990) of the early weights' share."""
    ref, ours = _records_trajectory(7000, 0.997, warmup=True)
    for name in ("a", "b", "c"):
        scale = ref[name].abs().max().item()
        diff = (ours[name] - ref[name]).abs().max().item()
        assert diff <= 2e-5 * scale, (name, diff, scale)


def test_warmup_schedule_and_the_initialisation_share():
    assert warmup_decay(0.99, 0) == 0.1 and warmup_decay(0.99, 90) == 91 / 100
    assert warmup_decay(0.99, 10_000) == 0.99  # capped at the configured decay
    torch.manual_seed(0)
    model, n = Tiny(), 12
    w0 = model.lin.weight.detach().clone()
    ema = EMA(model, 0.999, warmup=True)
    with torch.no_grad():
        model.lin.weight.add_(1.0)
    for _ in range(n):
        ema.update(model)
    share = 1.0
    for t in range(n):
        share *= (1 + t) / (10 + t)
    assert share < 1e-5  # 9!·12!/21!
    torch.testing.assert_close(ema.state_dict()["lin.weight"], share * w0 + (1 - share) * (w0 + 1.0), rtol=0, atol=1e-6)
    assert ema.num_updates == n


def test_applied_runs_with_ema_weights_and_restores():
    torch.manual_seed(5)
    model = Tiny()
    ema = EMA(model, 0.5)
    raw = model.lin.weight.detach().clone()
    with torch.no_grad():
        model.lin.weight.add_(2.0)
    ema.update(model)
    trained = model.lin.weight.detach().clone()
    with ema.applied(model):
        torch.testing.assert_close(model.lin.weight.detach(), 0.5 * raw + 0.5 * trained, rtol=0, atol=1e-6)
    assert torch.equal(model.lin.weight.detach(), trained)
