"""Exponential moving average of the weights, loaded into the model before quantization (§4.3).

Keeps an fp32 copy of the full state_dict (buffers included) and updates it every optimizer step:
    ema = d·ema + (1 − d)·w          d = 0.997 (R0322–R0405) · 0.9965 (R0414/R0427)
Non-float entries (integer buffers, step counters) are copied, not averaged.
Run the tests: `pytest tests/train/test_ema.py -q`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class EMA:
    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.shadow: dict[str, Tensor] = {
            name: (t.detach().float().clone() if t.is_floating_point() else t.detach().clone())
            for name, t in model.state_dict().items()
        }

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """ema ← d·ema + (1 − d)·w for float entries; others are copied."""
        d = self.decay
        for name, t in model.state_dict().items():
            ema = self.shadow[name]
            if ema.is_floating_point():
                ema.lerp_(t.detach().float(), 1.0 - d)  # ema + (1−d)(w − ema)
            else:
                ema.copy_(t)

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
