"""Exponential moving average of the weights, loaded into the model before quantization (R0322).

Keeps an fp32 copy of the full state_dict (buffers included) and updates it after every optimizer step, with the
records' arithmetic (R0322 → R0427 `ema_state[name].mul_(ema_decay).add_(t.float(), alpha=1 − ema_decay)`):
    ema = d_t·ema + (1 − d_t)·w          d = 0.997 (R0322–R0405) · 0.9965 (R0414/R0427)
Non-float entries (integer buffers, step counters) are copied, not averaged.

Warm-up (`warmup=True`): d_t = min(d, (1 + t)/(10 + t)) for the t-th update (t = 0, 1, …), the `num_updates` rule
of TensorFlow's `tf.train.ExponentialMovingAverage`. The records start the average at the initial weights with a
constant d; after n steps it still holds dⁿ of them (0.99²⁰⁰ = 13 %), which ruins the short CPU runs. With the
warm-up the initialisation's share after n updates is Π d_t = 9!·n!/(n + 9)! (1·10⁻⁵ after 10 updates), and
every later update is also weighted far more evenly than with a constant d until the schedule reaches d.
At the records' step counts (~7,000 at d = 0.997, where the schedule reaches d by step 2,990) the warm-up changes
the result by about d^(n − 2990) of the early weights' share (≈ 6·10⁻⁶ relative): tiny but not bit-identical, so
the record presets set `train.ema_warmup = false` and reproduce their records bit for bit.

Updates use `torch._foreach_mul_` / `_foreach_add_` over all float entries (one call per step, same per-element
arithmetic as the records' per-tensor loop). Run the tests: `pytest tests/train/test_ema.py -q`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor, nn


def warmup_decay(decay: float, num_updates: int) -> float:
    """min(decay, (1 + t)/(10 + t)): TensorFlow ExponentialMovingAverage's `num_updates` warm-up."""
    return min(decay, (1.0 + num_updates) / (10.0 + num_updates))


class EMA:
    def __init__(self, model: nn.Module, decay: float, *, warmup: bool = False) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay, self.warmup = decay, warmup
        self.num_updates = 0
        """Updates applied so far (= optimizer steps; the training loop restores it on resume)."""
        self.shadow: dict[str, Tensor] = {
            name: (t.detach().float().clone() if t.is_floating_point() else t.detach().clone())
            for name, t in model.state_dict().items()
        }
        self._float_names = [n for n, t in self.shadow.items() if t.is_floating_point()]
        self._other_names = [n for n, t in self.shadow.items() if not t.is_floating_point()]
        self._float_shadow = [self.shadow[n] for n in self._float_names]

    def current_decay(self) -> float:
        """The decay the next update uses."""
        return warmup_decay(self.decay, self.num_updates) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """ema ← d·ema + (1 − d)·w for float entries (d = current_decay()); others are copied."""
        d = self.current_decay()
        state = model.state_dict()
        src = [state[n].detach().float() for n in self._float_names]  # .float() of an fp32 tensor is itself
        torch._foreach_mul_(self._float_shadow, d)
        torch._foreach_add_(self._float_shadow, src, alpha=1.0 - d)
        for n in self._other_names:  # every step: the split is made once, in __init__
            self.shadow[n].copy_(state[n])
        self.num_updates += 1

    def state_dict(self) -> dict[str, Tensor]:
        """Plain tensors (for checkpoints); the decay is a config value, not state."""
        return {name: t.clone() for name, t in self.shadow.items()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        if set(state) != set(self.shadow):
            raise ValueError(f"EMA state keys differ from the model's: missing {sorted(set(self.shadow) - set(state))},"
                             f" unexpected {sorted(set(state) - set(self.shadow))}")
        for name, t in state.items():
            self.shadow[name].copy_(t)

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Load the EMA weights into `model`, cast to the model's dtypes and devices."""
        current = model.state_dict()
        model.load_state_dict({name: self.shadow[name].to(device=t.device, dtype=t.dtype)
                               for name, t in current.items()})

    @contextlib.contextmanager
    def applied(self, model: nn.Module) -> Iterator[None]:
        """Run a block with the EMA weights in `model`; the model's own weights are restored afterwards."""
        saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.copy_to(model)
        try:
            yield
        finally:
            model.load_state_dict(saved)
