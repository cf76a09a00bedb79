"""Fused CPU training kernels written with plain PyTorch ops (no compiler): same maths, fewer passes over memory.

* `linear_softcap_cross_entropy(h, w, targets, cap)`: mean CE of softcap·tanh((h Wᵀ)/softcap), the head and loss of
  every record, computed in row chunks so the (N, V) logits never exist at once: each chunk's logits, softmax and
  gradient stay in cache (the idea of the records' fused softcapped CE kernel and of Liger's fused linear CE).
  The forward also computes the gradients w.r.t. h and W (the loss is a scalar, so backward only rescales them).
* `rms_norm_scaled(x, scale)`: F.rms_norm(x)·scale, the norm with aten's own ops (bit-identical at scale 1; the LN
  scale folded into the (…, 1) reciprocal RMS, x·(r·s) for (x·r)·s, equal within one rounding) and a backward of
  3 passes, r·g − x·(r³·mean(g·x)) as an addcmul, from the saved input and the reciprocal RMS, instead of
  autograd's pow/mean/add/rsqrt/mul chain (issue 15: the norms were the largest non-matmul cost of record-11l's
  CPU step).
* `rotary(x, cos, sin)`: rotate-half RoPE on the first 2·cos.size(-1) dims (partial RoPE), the rest copied, into
  one output tensor; the backward is the inverse rotation. Same arithmetic as layers.apply_rotary, without its
  slices and concatenations (whose backward zero-fills and copies full-size gradients).
* `leaky_relu_square(h, slope)`: leaky_relu(h, slope)² as h·leaky_relu(h, slope²) (bit-identical forward for
  slope 0.5 or 0: multiplying by a power of two is exact), with the backward 2·g·leaky_relu(h, slope²) from one
  saved tensor instead of autograd's pow/mul/leaky_relu chain.

All are used on CPU in training (GPT.forward with targets, norms, MLP); evaluation and CUDA keep the reference ops.
Run the tests: `pytest tests/model/test_fused.py -q`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

CE_CHUNK_ROWS = 512
"""Rows per chunk: 512 × V=1024 fp32 logits = 2 MB, cache-resident on common CPUs."""


class _LinearSoftcapCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h: Tensor, w: Tensor, targets: Tensor, cap: float, chunk: int,  # type: ignore[override]
                dtype: torch.dtype) -> Tensor:
        n = h.size(0)
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_h = torch.empty_like(h) if need_h else None
        grad_w = torch.zeros_like(w) if need_w else None
        hm, wm = h.to(dtype), w.to(dtype)  # the matmul operands (no copy when already in `dtype`)
        total = torch.zeros((), dtype=torch.float32, device=h.device)
        inv_n = 1.0 / n
        for start in range(0, n, chunk):
            hc, tc = hm[start:start + chunk], targets[start:start + chunk]
            z = (hc @ wm.t()).float()  # (c, V) fp32 logits (a no-op cast in fp32)
            if cap > 0:
                t = z.div_(cap).tanh_()  # tanh(z / cap), in place
                s = t * cap
            else:
                t, s = None, z
            lse = torch.logsumexp(s, dim=-1)  # (c,)
            rows = torch.arange(hc.size(0), device=h.device)
            total += (lse - s[rows, tc]).sum()
            if need_h or need_w:
                g = s.sub_(lse[:, None]).exp_()  # softmax, reusing s
                g[rows, tc] -= 1.0
                g.mul_(inv_n)
                if t is not None:
                    g.addcmul_(g, t.square_(), value=-1.0)  # · (1 − tanh²): d softcap / dz
                gm = g.to(dtype)
                if need_h:
                    if grad_h.dtype == dtype:
                        torch.mm(gm, wm, out=grad_h[start:start + chunk])
                    else:
                        grad_h[start:start + chunk] = gm @ wm
                if need_w:
                    if grad_w.dtype == dtype:
                        grad_w.addmm_(gm.t(), hc)
                    else:  # bf16 product per chunk, summed over chunks in w's precision (fp32 masters)
                        grad_w += gm.t() @ hc
        ctx.save_for_backward(*(x for x in (grad_h, grad_w) if x is not None))
        ctx.has = (need_h, need_w)
        return total * inv_n

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        saved = list(ctx.saved_tensors)
        need_h, need_w = ctx.has
        gh = saved.pop(0) * grad_out if need_h else None
        gw = saved.pop(0) * grad_out if need_w else None
        return gh, gw, None, None, None, None


def linear_softcap_cross_entropy(h: Tensor, w: Tensor, targets: Tensor, cap: float,
                                 chunk: int = CE_CHUNK_ROWS, dtype: torch.dtype | None = None) -> Tensor:
    """mean_i CE(softcap(h_i Wᵀ), y_i); h (N, C), w (V, C), targets (N,) int64. Equals
    F.cross_entropy(cap·tanh(F.linear(h, w)/cap), targets) within float rounding (chunked sums).

    `dtype` None: h and w must share a dtype and the matmuls run in it. `dtype` bf16 (training under CPU bf16
    autocast): the three matmuls run in bf16 as autocast would run them, the softcap, softmax and loss in fp32, and
    the gradients come back in h's and w's own dtypes (W's summed over chunks in fp32)."""
    if dtype is None:
        if h.dtype != w.dtype:
            raise ValueError(f"h is {h.dtype} but w is {w.dtype}")
        dtype = h.dtype
    with torch.autocast(h.device.type, enabled=False):  # the casts above are explicit
        return _LinearSoftcapCE.apply(h.contiguous(), w, targets.reshape(-1), float(cap), int(chunk), dtype)


class _LeakyReLUSquare(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h: Tensor, slope: float) -> Tensor:  # type: ignore[override]
        r = F.leaky_relu(h, slope * slope) if slope else torch.relu(h)  # h for h > 0, slope²·h below
        ctx.save_for_backward(r)
        return h * r

    @staticmethod
    def backward(ctx, g: Tensor):  # type: ignore[override]
        (r,) = ctx.saved_tensors
        return (g * r).mul_(2.0), None


def leaky_relu_square(h: Tensor, slope: float) -> Tensor:
    """leaky_relu(h, slope)² (slope 0 = relu²) with a one-tensor backward."""
    return _LeakyReLUSquare.apply(h, float(slope))


class _LinearLeakyReLUSquare(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, w: Tensor, slope: float) -> Tensor:  # type: ignore[override]
        h = x @ w.t()  # (…, hidden)
        r = F.leaky_relu(h, slope * slope) if slope else torch.relu(h)
        ctx.save_for_backward(x, w, r)
        return h.mul_(r)  # h·r in place: h itself is not needed again

    @staticmethod
    def backward(ctx, g: Tensor):  # type: ignore[override]
        x, w, r = ctx.saved_tensors
        gr = g * r  # d/dh = 2·g·r: the 2 goes on W and on W's gradient, exact (a power of two), not on (…, hidden)
        gx = gr @ (w * 2.0) if ctx.needs_input_grad[0] else None
        gw = (gr.reshape(-1, gr.size(-1)).t() @ x.reshape(-1, x.size(-1))).mul_(2.0) if ctx.needs_input_grad[1] else None
        return gx, gw, None


def linear_leaky_relu_square(x: Tensor, w: Tensor, slope: float) -> Tensor:
    """leaky_relu(x Wᵀ, slope)² with w already in x's dtype: the MLP's fc and activation as one node, whose backward
    skips the ×2 pass over the (…, hidden) gradient (bit-identical to fc → leaky_relu_square)."""
    with torch.autocast(x.device.type, enabled=False):  # operands already in their matmul dtype
        return _LinearLeakyReLUSquare.apply(x, w, float(slope))


class _RMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, scale: float, out_dtype: torch.dtype) -> Tensor:  # type: ignore[override]
        # aten's composite rms_norm, op for op (upcast to fp32, eps = fp32 machine epsilon), so the forward is exact
        xf = x.float()
        r = torch.rsqrt(xf.pow(2).mean(-1, keepdim=True).add_(torch.finfo(torch.float32).eps))  # (…, 1)
        ctx.save_for_backward(x, r)
        ctx.scale = scale
        # x·(r·s): one pass, where the reference's (x·r)·s takes two (equal within rounding); the fp32 product is
        # rounded straight into the output dtype (what .to(out_dtype) would give, without the fp32 temporary)
        y = torch.empty(x.shape, dtype=out_dtype, device=x.device)
        return torch.mul(xf, r * scale if scale != 1.0 else r, out=y)

    @staticmethod
    def backward(ctx, g: Tensor):  # type: ignore[override]
        x, r = ctx.saved_tensors
        xf = x.float()
        # g may be bf16 (a bf16 output): the mixed-dtype products compute in fp32, exactly as g.float() would
        coeff = (g * xf).mean(-1, keepdim=True).mul_(r.pow(3))  # (…, 1): r³·mean(g·x)
        if ctx.scale != 1.0:  # the LN scale folded into the (…, 1) factors: no pass over g for it
            r, coeff = r * ctx.scale, coeff.mul_(ctx.scale)
        return torch.addcmul(g * r, xf, coeff, value=-1.0).to(x.dtype), None, None


def rms_norm_scaled(x: Tensor, scale: float = 1.0, out_dtype: torch.dtype | None = None) -> Tensor:
    """F.rms_norm(x, (x.size(-1),)) · scale (weightless, eps = fp32 epsilon) with a one-pass-per-term backward.
    `out_dtype` (default x's): the output rounded to it in the same pass (bf16 for the linears of a CPU autocast
    step, which would otherwise each cast the fp32 norm)."""
    return _RMSNorm.apply(x, float(scale), out_dtype or x.dtype)


class _Rotary(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:  # type: ignore[override]
        half = cos.size(-1)
        x1, x2 = x[..., :half], x[..., half:2 * half]
        y = torch.empty_like(x, memory_format=torch.contiguous_format)
        y[..., :half] = x1 * cos + x2 * sin  # the reference's expressions, op for op
        y[..., half:2 * half] = x2 * cos - x1 * sin
        if x.size(-1) > 2 * half:
            y[..., 2 * half:] = x[..., 2 * half:]
        ctx.save_for_backward(cos, sin)
        return y

    @staticmethod
    def backward(ctx, g: Tensor):  # type: ignore[override]
        cos, sin = ctx.saved_tensors
        half = cos.size(-1)
        g1, g2 = g[..., :half], g[..., half:2 * half]
        dx = torch.empty_like(g, memory_format=torch.contiguous_format)
        dx[..., :half] = g1 * cos - g2 * sin  # the transposed rotation
        dx[..., half:2 * half] = g1 * sin + g2 * cos
        if g.size(-1) > 2 * half:
            dx[..., 2 * half:] = g[..., 2 * half:]
        return dx, None, None


def rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """layers.apply_rotary(x, cos, sin) with one output tensor and a one-pass backward; cos/sin in x's dtype."""
    return _Rotary.apply(x, cos.to(x.dtype), sin.to(x.dtype))
