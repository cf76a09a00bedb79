"""Transformer building blocks of the Parameter Golf records: CastedLinear, rotary tables, attention, MLP, Block.

Every formula follows docs/techniques.md#architecture (block formula of all records since the 2026-03-11 baseline):

    x_in = resid_mix[0]·x + resid_mix[1]·x0
    x    = x_in + attn_scale ⊙ Attn(rms_norm(x_in)·ln_s)
    x    = x    + mlp_scale  ⊙ MLP(rms_norm(x)·ln_s)

and the two-lane parallel form of PR #1530 (R0414/R0427) in `Block.forward_parallel`. RMSNorm is weightless
(`F.rms_norm`). Big matrices are `CastedLinear` so that quantization can hook them (Hessians) and swap their weight
(`weight_fn`, QAT); their state-dict names are the records' (`attn.c_q`, `attn.c_k`, `attn.c_v`, `attn.proj`,
`mlp.fc`, `mlp.proj`).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pgolf.model.attention import AttentionContext, attend

if TYPE_CHECKING:
    from pgolf.model.config import GPTConfig


def rms_norm(x: Tensor, fused: bool = False, scale: float = 1.0, out_dtype: torch.dtype | None = None) -> Tensor:
    """Weightless RMSNorm over the last dim (every record; eps = torch default), times `scale` (LN scale, PR #315).
    fused=True: on CPU with autograd recording, model/fused.py's norm (same values, one node, a cheaper backward),
    its output in `out_dtype` when given."""
    if fused and x.device.type == "cpu" and x.requires_grad and torch.is_grad_enabled():
        from pgolf.model.fused import rms_norm_scaled  # the kernels are imported where used: see GPTConfig.cpu_kernels

        return rms_norm_scaled(x, scale, out_dtype)
    n = F.rms_norm(x, (x.size(-1),))
    return n * scale if scale != 1.0 else n  # ×1.0 is the identity: skip the pass


class CastedLinear(nn.Linear):
    """Bias-free linear whose fp32 weight is cast to the input dtype in forward (bf16 autocast keeps fp32 masters).

    `weight_fn`, when set, maps the weight before use (the quantization stage installs fake-quant for QAT here).
    It should be a plain callable, not an nn.Module, so it adds nothing to the state dict.
    """

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__(in_features, out_features, bias=False)
        self.weight_fn: Callable[[Tensor], Tensor] | None = None
        self._zero_init = False

    def forward(self, x: Tensor, out_scale: Tensor | None = None) -> Tensor:
        """x Wᵀ; with `out_scale` (out_features,), out_scale ⊙ (x Wᵀ) computed as x (out_scale ⊙ W)ᵀ: the per-channel
        scale multiplies the (out, in) weight instead of the (B, T, out) activation, and its gradient is a reduction
        over the weight's rows instead of over every token (the CPU training path, `Block._folds`)."""
        w = self.weight if self.weight_fn is None else self.weight_fn(self.weight)
        if out_scale is not None:
            w = w * out_scale[:, None]
        return F.linear(x, w.to(x.dtype))


def zero_init_linear(in_features: int, out_features: int) -> nn.Linear:
    """A tiny bias-free gate matrix (SmearGate v2 12→1, sparse attention gate 12→H), zero at init (PR #1667/#1787).

    Deliberately a plain nn.Linear, not a CastedLinear: gates are control tensors (scalar AdamW, int8 passthrough),
    not GPTQ targets. Under autocast nn.Linear already runs in the autocast dtype.
    """
    gate = nn.Linear(in_features, out_features, bias=False)
    nn.init.zeros_(gate.weight)
    gate._zero_init = True  # type: ignore[assignment]
    return gate


class Rotary(nn.Module):
    """RoPE tables for the first `rope_dims` dims of each head (partial RoPE, PR #315), rotate-half convention.

    Frequencies are base^(-2i/rope_dims). With `ntk_seq_len > 0` a sequence longer than it uses the NTK-scaled base
    base·(T/ntk_seq_len)^(rd/(rd−2)) (the R0322-era `Rotary`, which hard-codes 1024). No buffers: the fp32 tables
    are a plain cache, so nothing here enters the state dict or gets cast by model.to(dtype).
    """

    def __init__(self, rope_dims: int, base: float, ntk_seq_len: int = 0) -> None:
        super().__init__()
        self.rope_dims, self.base, self.ntk_seq_len = rope_dims, base, ntk_seq_len
        self._cache: tuple[int, torch.device, Tensor, Tensor] | None = None

    def forward(self, seq_len: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """fp32 (cos, sin), each (1, T, 1, rope_dims/2); recomputed only when T or the device changes."""
        if self._cache is not None and self._cache[0] == seq_len and self._cache[1] == device:
            return self._cache[2], self._cache[3]
        rd, base = self.rope_dims, self.base
        if self.ntk_seq_len and seq_len > self.ntk_seq_len:
            base = base * (seq_len / self.ntk_seq_len) ** (rd / (rd - 2))
        # Ordinary tensors even when called under torch.inference_mode (generate(), scoring): a cached inference
        # tensor cannot be saved for backward, so the next training forward would fail.
        with torch.inference_mode(False), torch.no_grad():
            inv_freq = 1.0 / base ** (torch.arange(0, rd, 2, dtype=torch.float32, device=device) / rd)  # (rd/2,)
            t = torch.arange(seq_len, device=device, dtype=torch.float32)
            freqs = torch.outer(t, inv_freq)  # (T, rd/2)
            cos, sin = freqs.cos()[None, :, None, :], freqs.sin()[None, :, None, :]  # (1, T, 1, rd/2)
        self._cache = (seq_len, device, cos, sin)
        return cos, sin


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate-half RoPE on the first 2·cos.size(-1) dims; the rest pass through.  x (B, T, H, D)."""
    rd = 2 * cos.size(-1)
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    x_rope, x_pass = x[..., :rd], x[..., rd:]
    x1, x2 = x_rope[..., : rd // 2], x_rope[..., rd // 2 :]
    rotated = torch.cat((x1 * cos + x2 * sin, x2 * cos - x1 * sin), dim=-1)  # (B, T, H, rd)
    return rotated if x_pass.size(-1) == 0 else torch.cat((rotated, x_pass), dim=-1)


class CausalSelfAttention(nn.Module):
    """GQA attention with q/k RMSNorm, partial RoPE, per-head q_gain, optional XSA, value embedding, sparse gate."""

    def __init__(self, dim: int, num_heads: int, num_kv_heads: int, qk_gain_init: float,
                 sparse_gate: bool, gate_window: int, gate_scale: float) -> None:
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = num_heads, num_kv_heads, dim // num_heads
        kv_dim = num_kv_heads * self.head_dim
        self.c_q = CastedLinear(dim, dim)
        self.c_k = CastedLinear(dim, kv_dim)
        self.c_v = CastedLinear(dim, kv_dim)
        self.proj = CastedLinear(dim, dim)
        self.proj._zero_init = True  # out-proj starts at zero (every record)
        self.q_gain = nn.Parameter(torch.full((num_heads,), qk_gain_init, dtype=torch.float32))
        # Sparse head-output gate y_h ·= σ(scale·W_h·n[:gate_window]) (PR #1787; R0427 scale 0.5), W zero-init.
        self.gate = zero_init_linear(gate_window, num_heads) if sparse_gate else None
        self.gate_window, self.gate_scale = gate_window, gate_scale
        self.fused = True  # model/fused.py norms on CPU in training (GPT.fused_cpu_kernels switches it)

    @staticmethod
    def exclusive(y: Tensor, v: Tensor) -> Tensor:
        """XSA (arXiv 2603.09078, PR #198): drop each head's component along its own position's value direction.

        y (B, T, H, D), v (B, T, Hkv, D); the H/Hkv query heads of a group share one v̂ (no repeat_interleave).
        """
        B, T, H, D = y.shape
        Hkv = v.size(-2)
        y_g = y.reshape(B, T, Hkv, H // Hkv, D)  # (B, T, Hkv, group, D)
        v_hat = F.normalize(v, dim=-1).unsqueeze(-2)  # (B, T, Hkv, 1, D)
        y_g = y_g - (y_g * v_hat).sum(dim=-1, keepdim=True) * v_hat
        return y_g.reshape(B, T, H, D)

    def forward(self, n: Tensor, ctx: AttentionContext, *, xsa: bool = False, ve: Tensor | None = None,
                out_scale: Tensor | None = None) -> Tensor:
        """n: normalized block input (B, T, C); ve: value embedding (B, T, kv_dim) or None; out_scale (C,): the
        block's attn_scale folded into the output projection (CastedLinear.forward)."""
        B, T, C = n.shape
        q = self.c_q(n).reshape(B, T, self.num_heads, self.head_dim)  # (B, T, H, D)
        k = self.c_k(n).reshape(B, T, self.num_kv_heads, self.head_dim)  # (B, T, Hkv, D)
        v = self.c_v(n)  # (B, T, kv_dim)
        if ve is not None:
            v = v + ve.to(v.dtype)
        v = v.reshape(B, T, self.num_kv_heads, self.head_dim)  # (B, T, Hkv, D)
        q, k = rms_norm(q, self.fused), rms_norm(k, self.fused)
        if self.fused and q.device.type == "cpu" and torch.is_grad_enabled():
            from pgolf.model.fused import rotary

            q, k = rotary(q, ctx.cos, ctx.sin), rotary(k, ctx.cos, ctx.sin)  # same values (model/fused.py)
        else:
            q, k = apply_rotary(q, ctx.cos, ctx.sin), apply_rotary(k, ctx.cos, ctx.sin)
        q = q * self.q_gain.to(q.dtype)[None, None, :, None]
        y = attend(q, k, v, ctx)  # (B, T, H, D)
        if xsa:
            y = self.exclusive(y, v)
        if self.gate is not None:
            g = torch.sigmoid(self.gate_scale * self.gate(n[..., : self.gate_window]))  # (B, T, H)
            y = y * g[..., None].to(y.dtype)
        return self.proj(y.reshape(B, T, C), out_scale=out_scale)


class MLP(nn.Module):
    """fc → relu² (baseline) or leaky_relu(·, 0.5)² (PR #493) → proj. proj's input is the post-activation."""

    def __init__(self, dim: int, hidden: int, act: str) -> None:
        super().__init__()
        self.fc = CastedLinear(dim, hidden)
        self.proj = CastedLinear(hidden, dim)
        self.proj._zero_init = True  # down-proj starts at zero (every record)
        self.act = act
        self.fused = True  # leaky_relu_square on CPU (GPT.fused_cpu_kernels switches it)

    def forward(self, x: Tensor, out_scale: Tensor | None = None) -> Tensor:
        """out_scale (C,): the block's mlp_scale folded into the down-projection (CastedLinear.forward)."""
        slope = 0.5 if self.act == "leaky_relu2" else 0.0
        if (self.fused and self.training and x.device.type == "cpu" and torch.is_grad_enabled()
                and not (self.fc._forward_hooks or self.fc._forward_pre_hooks)):
            from pgolf.model.fused import linear_leaky_relu_square

            amp = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else x.dtype
            fc = self.fc
            w = fc.weight if fc.weight_fn is None else fc.weight_fn(fc.weight)
            h = linear_leaky_relu_square(x.to(amp), w.to(amp), slope)  # fc + activation, one node (model/fused.py)
            return self.proj(h, out_scale=out_scale)
        h = self.fc(x)  # (B, T, hidden)
        if h.device.type == "cpu" and self.fused:  # same values, one-tensor backward (model/fused.py)
            from pgolf.model.fused import leaky_relu_square

            return self.proj(leaky_relu_square(h, slope), out_scale=out_scale)
        h = F.leaky_relu(h, negative_slope=slope) if slope else torch.relu(h)
        return self.proj(h.square(), out_scale=out_scale)  # (B, T, C)


class Block(nn.Module):
    """One physical transformer layer; `layer_idx` is its physical index (LN scale uses it, R0405+)."""

    def __init__(self, cfg: GPTConfig, layer_idx: int) -> None:
        super().__init__()
        dim = cfg.model_dim
        self.attn = CausalSelfAttention(dim, cfg.num_heads, cfg.num_kv_heads, cfg.qk_gain_init,
                                        cfg.sparse_attn_gate, cfg.gate_window, cfg.sparse_attn_gate_scale)
        self.mlp = MLP(dim, cfg.mlp_hidden, cfg.mlp_act)
        self.attn_scale = nn.Parameter(torch.ones(dim, dtype=torch.float32))
        self.mlp_scale = nn.Parameter(torch.ones(dim, dtype=torch.float32))
        self.resid_mix = nn.Parameter(torch.stack((torch.ones(dim), torch.zeros(dim))).float())  # (2, C)
        self.ln_scale = 1.0 / math.sqrt(layer_idx + 1) if cfg.ln_scale else 1.0  # PR #315

    def _norm(self, x: Tensor) -> Tensor:
        if not self._fast(x):
            return rms_norm(x, False, self.ln_scale)
        # The LN scale folded into the norm's factor; under CPU autocast the norm is written once in bf16, where
        # c_q, c_k, c_v (or fc) would each cast the fp32 norm (and their gradients come back in bf16, summed there).
        amp = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None
        return rms_norm(x, True, self.ln_scale, amp)

    def _folds(self, x: Tensor, module: nn.Module) -> bool:
        """The CPU training path (fused kernels on, autograd recording): per-channel scales folded into the output
        projections, residual mixes as addcmul (issue 15: fewer passes over (B, T, C) activations; the same maths
        within float rounding). Off in eval mode (scoring keeps the records' ops exactly) and while `module` or its
        output projection has forward hooks (TTT's LoRA adds to the unscaled attention/MLP output; calibration
        reads the projections)."""
        return self._fast(x) and not (module._forward_hooks or module.proj._forward_hooks)

    def _fast(self, x: Tensor) -> bool:
        return self.mlp.fused and self.training and x.device.type == "cpu" and torch.is_grad_enabled()

    def _attn(self, x_in: Tensor, ctx: AttentionContext, xsa: bool, ve: Tensor | None) -> Tensor:
        if self._folds(x_in, self.attn):
            return self.attn(self._norm(x_in), ctx, xsa=xsa, ve=ve, out_scale=self.attn_scale)
        out = self.attn(self._norm(x_in), ctx, xsa=xsa, ve=ve)
        return self.attn_scale.to(out.dtype)[None, None, :] * out

    def _mlp(self, x: Tensor) -> Tensor:
        if self._folds(x, self.mlp):
            return self.mlp(self._norm(x), out_scale=self.mlp_scale)
        out = self.mlp(self._norm(x))
        return self.mlp_scale.to(out.dtype)[None, None, :] * out

    def _mix(self, x: Tensor, x0: Tensor) -> Tensor:
        mix = self.resid_mix.to(x.dtype)
        if self._fast(x):  # one pass fewer than the records' mul, mul, add
            return torch.addcmul(mix[0][None, None, :] * x, mix[1][None, None, :], x0)
        return mix[0][None, None, :] * x + mix[1][None, None, :] * x0

    def forward(self, x: Tensor, x0: Tensor, ctx: AttentionContext, *, xsa: bool = False,
                ve: Tensor | None = None) -> Tensor:
        # The records' op order (an addcmul would save a pass but round differently from their forward).
        x = self._mix(x, x0)  # (B, T, C)
        x = x + self._attn(x, ctx, xsa, ve)
        return x + self._mlp(x)

    def forward_parallel(self, lane0: Tensor, lane1: Tensor, x0: Tensor, ctx: AttentionContext,
                         resid: Tensor, post: Tensor, *, xsa: bool = False,
                         ve: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """PR #1530 two-lane form (R0427): attention reads mix(lane0, x0), MLP reads lane1, both from the old lanes.

        resid (2,) = (r_a, r_m); post (2, 2) = [[p_a0, p_a1], [p_m0, p_m1]].
        lane0 = r_a·lane0 + p_a0·attn + p_m0·mlp;  lane1 = r_m·lane1 + p_a1·attn + p_m1·mlp.
        """
        a = self._attn(self._mix(lane0, x0), ctx, xsa, ve)  # (B, T, C)
        m = self._mlp(lane1)  # (B, T, C)
        resid, post = resid.to(a.dtype), post.to(a.dtype)
        new0 = resid[0] * lane0 + post[0, 0] * a + post[1, 0] * m
        new1 = resid[1] * lane1 + post[0, 1] * a + post[1, 1] * m
        return new0, new1
