"""GPTQ Hessians: H = XᵀX / n_batches (fp32) of every quantized matrix's input, from calibration token batches.

    hs = collect_hessians(model, calib.batches)            # Hessians(h={"blocks.0.attn.c_q.weight": (C, C), ...})
    gptq_quantize(state["blocks.0.mlp.fc.weight"], hs.h["blocks.0.mlp.fc.weight"], ...)

What feeds which matrix (docs/techniques.md#full-gptq, R0405/R0414/R0427 `collect_hessians`):
* every `CastedLinear` (attn.c_q/c_k/c_v/proj, mlp.fc/proj, bigram.proj, ve_shared.proj): its own input, via a
  forward pre-hook. c_q/c_k/c_v read the same normalized block input, so XᵀX is computed once and the three names
  get equal Hessians; mlp.proj's input is the post-activation leaky_relu(·)² (R0331 `_gptq_down_in`).
* the tied embedding `tok_emb.weight`: the LM-head input, i.e. the final-norm output `GPT.hidden(idx)` (R0405 hooks
  `final_norm`), (C, C). Untied models: `lm_head.weight` gets that Hessian instead and `tok_emb` gets none (an input
  lookup has one-hot inputs; the records only GPTQ the tied table from the head side).
* looped layers (depth recurrence, when `model.looping_active`): the physical weight is shared, so the hook fires
  once per pass and H sums over every pass (R0414/R0427 "accumulate from every pass").
H is normalised by the number of batches, not tokens (as every record; GPTQ is invariant to H's scale), is per rank
(the records never all-reduce it) and stays on the model's device. No damping here: the quantizer adds it.

This is one of the two nn.Module-aware quant files (with qat.py): hooks feed `HessianAccumulator`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from pgolf.model.layers import CastedLinear


class HessianAccumulator:
    """Streaming Σ XᵀX in fp32 per name. X (..., cols) is flattened over every leading dim (batch × seq).

    `update(name, X)` with the same tensor object X as the previous update reuses its XᵀX (q/k/v share an input).
    Streaming k batches gives the same sums as one concatenated batch (to fp32 summation order).
    """

    def __init__(self) -> None:
        self.sums: dict[str, Tensor] = {}
        self.rows: dict[str, int] = {}
        self._last: tuple[Tensor, Tensor] | None = None  # (X, XᵀX) of the previous update

    def update(self, name: str, x: Tensor) -> None:
        if self._last is not None and self._last[0] is x:
            xtx = self._last[1]
        else:
            x2 = x.detach().reshape(-1, x.size(-1)).float()  # (N, cols)
            xtx = x2.T @ x2  # (cols, cols)
            self._last = (x, xtx)
        if name in self.sums:
            self.sums[name].add_(xtx)
        else:
            self.sums[name] = xtx.clone()
        self.rows[name] = self.rows.get(name, 0) + x.numel() // x.size(-1)

    def result(self, divide_by: float = 1.0) -> dict[str, Tensor]:
        """{name: Σ XᵀX / divide_by} (fp32, fresh tensors)."""
        self._last = None
        return {name: s / divide_by for name, s in self.sums.items()}


@dataclass
class Hessians:
    h: dict[str, Tensor]
    """Parameter name → H (in_features, in_features) fp32 = Σ XᵀX / num_batches."""
    num_tokens: int
    """Tokens fed (Σ B·T over the batches)."""
    num_batches: int
    seconds: float


def collect_hessians(
    model: nn.Module,
    batches: Iterable[Tensor],
    *,
    include_embedding: bool = True,
    min_numel: int = 0,
) -> Hessians:
    """Run `model` (a GPT) over token batches (B, T) and return the Hessian of every CastedLinear weight.

    include_embedding: also the LM-head-side Hessian of the head weight ("tok_emb.weight" when tied,
    "lm_head.weight" when untied). min_numel: skip matrices with fewer elements (R0405 hooks numel > 65,536, i.e.
    min_numel=65537). The model runs in eval mode under no_grad (bf16 autocast on CUDA, as the records); its
    training flag is restored and every hook removed afterwards, also on error.
    """
    t0 = time.perf_counter()
    device = next(model.parameters()).device
    acc = HessianAccumulator()
    tied = getattr(model, "lm_head", None) is None
    head_name = "tok_emb.weight" if tied else "lm_head.weight"
    handles = []
    for mod_name, module in model.named_modules():
        if not isinstance(module, CastedLinear) or module.weight.numel() < min_numel:
            continue
        if mod_name == "lm_head":  # fed from GPT.hidden below (never called here)
            continue
        handles.append(module.register_forward_pre_hook(_pre_hook(acc, f"{mod_name}.weight")))
    head_numel = model.tok_emb.weight.numel() if tied else model.lm_head.weight.numel()
    want_head = include_embedding and head_numel >= min_numel
    num_batches = num_tokens = 0
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), torch.autocast("cuda", torch.bfloat16, enabled=device.type == "cuda"):
            for tokens in batches:
                if isinstance(tokens, (tuple, list)):  # (x, y) pairs from a loader: x is the input
                    tokens = tokens[0]
                if not isinstance(tokens, Tensor) or tokens.ndim != 2:
                    raise TypeError(f"calibration batches must be (B, T) token tensors, got {_describe(tokens)}")
                tokens = tokens.to(device=device, dtype=torch.long, non_blocking=True)
                h = model.hidden(tokens)  # (B, T, C) final-norm output = LM-head input
                if want_head:
                    acc.update(head_name, h)
                num_batches += 1
                num_tokens += tokens.numel()
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    if num_batches == 0:
        raise ValueError("collect_hessians got no calibration batches")
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return Hessians(acc.result(divide_by=num_batches), num_tokens, num_batches, time.perf_counter() - t0)


def _pre_hook(acc: HessianAccumulator, name: str):
    def hook(module: nn.Module, args: tuple) -> None:
        acc.update(name, args[0])  # (B, T, in_features); autocast bf16 inputs accumulate in fp32

    return hook


def _describe(x: object) -> str:
    return f"Tensor of shape {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
