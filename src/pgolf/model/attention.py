"""Causal attention kernels, with optional document isolation.

Document isolation (the records' VarLen training, PR #1530, R0414+): a token attends only to positions at or after
the start of its own document — the most recent BOS at or before it — within its row. Every kernel below equals
running every document on its own.

`model.attention_backend`:
- `auto` / `torch` (default): torch-native kernels. On CUDA, document isolation runs
  `torch.nn.attention.varlen.varlen_attn` (torch ≥ 2.13: FlashAttention over `cu_seqlens`, one segment per document
  and per row, no extra wheel) and plain causal attention runs SDPA with `is_causal` (the flash kernel under bf16
  autocast). On CPU, SDPA: `is_causal`, or a boolean block-diagonal causal mask (B, 1, T, T) for documents.
  (Flex attention was measured as the CPU alternative: it has no CPU backward in torch 2.13, so it cannot train
  there; BENCHMARKS.md "Attention kernels".)
- `sdpa`: SDPA everywhere, the dense mask for documents (the reference).
- `flash`: the flash-attn package (`flash_attn_interface` FA3 or `flash_attn` FA2: `flash_attn_varlen_func` /
  `flash_attn_func`), as the records install it from their wheel index; CUDA only, optional.
The varlen kernels need half precision: fp32 inputs under CUDA autocast are cast to the autocast dtype (what SDPA
does there too), fp32 inputs outside autocast take the SDPA path.

`build_attention_context` runs once per forward (mask / cu_seqlens are shared by every layer); `attend` runs per layer.
FlashAttention and varlen_attn are imported lazily, so importing this module never touches CUDA.

Incremental decoding (model/generate.py): with `ctx.cache` set, q/k/v hold only the newest positions; `attend`
appends k/v to the cache slot of virtual layer `ctx.layer` and attends over all cached positions (SDPA with a
bottom-right causal mask, document-isolated when enabled).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor

_FLASH: dict[str, Any] = {}


def _flash_functions() -> tuple[Callable[..., Any] | None, Callable[..., Any] | None]:
    """(flash_attn_func, flash_attn_varlen_func) from FA3 (`flash_attn_interface`) or FA2 (`flash_attn`), else Nones."""
    if "funcs" not in _FLASH:
        funcs: tuple[Any, Any] = (None, None)
        for module_name in ("flash_attn_interface", "flash_attn"):
            try:
                module = importlib.import_module(module_name)
                funcs = (module.flash_attn_func, module.flash_attn_varlen_func)
                break
            except (ImportError, AttributeError, OSError):
                continue
        _FLASH["funcs"] = funcs
    return _FLASH["funcs"]


def flash_available() -> bool:
    return _flash_functions()[0] is not None


def _varlen_function() -> Callable[..., Any] | None:
    """torch.nn.attention.varlen.varlen_attn (torch ≥ 2.13), else None."""
    if "varlen" not in _FLASH:
        try:
            from torch.nn.attention.varlen import varlen_attn
        except ImportError:
            varlen_attn = None
        _FLASH["varlen"] = varlen_attn
    return _FLASH["varlen"]


def varlen_available(device: torch.device) -> bool:
    """Whether the torch-native varlen kernel can run on `device` (a CUDA build of torch ≥ 2.13)."""
    return device.type == "cuda" and _varlen_function() is not None


VARLEN_BUCKET = 64
"""cu_seqlens of the varlen kernel are padded with empty segments to a multiple of this (the records' R0414
`_build_cu_seqlens` bucket), so torch.compile sees few distinct shapes."""


def _first(out: Any) -> Tensor:
    """Some FlashAttention builds return (out, lse); keep the output."""
    return out[0] if isinstance(out, tuple) else out


@dataclass
class AttentionContext:
    """Per-forward inputs shared by every attention layer.

    cos, sin: rotary tables (1, T, 1, rope_dims/2). With doc_isolation the SDPA mask (B, 1, T, T) and the flash
    cu_seqlens are built on first use from idx and then reused by every layer.
    cache, layer: incremental decoding (model/generate.py `KVCache`, duck-typed: `update(layer, k, v)` returns all
    cached k/v); idx then holds every token so far, cos/sin only the T new positions, and the mask is (B, 1, T, T_all).
    """

    cos: Tensor
    sin: Tensor
    idx: Tensor
    bos_id: int
    doc_isolation: bool = False
    use_flash: bool = False
    """The flash-attn package (backend 'flash')."""
    use_varlen: bool = False
    """torch-native varlen_attn for document isolation (backend 'auto'/'torch' on CUDA)."""
    cache: Any = None
    layer: int = 0
    _mask: Tensor | None = None
    _cu_seqlens: tuple[Tensor, int] | None = None
    _cu_varlen: tuple[Tensor, int] | None = None

    def mask(self) -> Tensor:
        if self._mask is None:
            if self.cache is None:
                self._mask = document_causal_mask(self.idx, self.bos_id)
            else:
                self._mask = decode_mask(self.idx, self.cos.size(1), self.bos_id, self.doc_isolation)
        return self._mask

    def cu_seqlens(self) -> tuple[Tensor, int]:
        if self._cu_seqlens is None:
            self._cu_seqlens = document_cu_seqlens(self.idx, self.bos_id)
        return self._cu_seqlens

    def cu_seqlens_bucketed(self) -> tuple[Tensor, int]:
        if self._cu_varlen is None:
            self._cu_varlen = document_cu_seqlens(self.idx, self.bos_id, bucket=VARLEN_BUCKET)
        return self._cu_varlen


def document_starts(idx: Tensor, bos_id: int) -> Tensor:
    """Start position of each token's document within its row: the last BOS at or before t, else 0.  (B, T) int64."""
    T = idx.size(1)
    pos = torch.arange(T, device=idx.device).expand_as(idx)  # (B, T)
    starts = torch.where(idx == bos_id, pos, torch.zeros_like(pos))  # (B, T)
    return torch.cummax(starts, dim=1).values  # (B, T)


def document_causal_mask(idx: Tensor, bos_id: int) -> Tensor:
    """Boolean mask (B, 1, T, T): query i may attend key j iff start(i) <= j <= i."""
    T = idx.size(1)
    pos = torch.arange(T, device=idx.device)
    starts = document_starts(idx, bos_id)  # (B, T)
    causal = pos[None, :] <= pos[:, None]  # (T, T): j <= i
    same_doc = pos[None, None, :] >= starts[:, :, None]  # (B, T, T): j >= start(i)
    return (causal[None] & same_doc)[:, None]  # (B, 1, T, T)


def decode_mask(idx: Tensor, num_new: int, bos_id: int, doc_isolation: bool) -> Tensor:
    """Mask (B|1, 1, T, T_all) for the last T = num_new queries of idx (B, T_all): j <= i [and j >= start(i)]."""
    T_all = idx.size(1)
    pos = torch.arange(T_all, device=idx.device)
    mask = (pos[None, :] <= pos[T_all - num_new :, None])[None]  # (1, T, T_all)
    if doc_isolation:
        starts = document_starts(idx, bos_id)[:, T_all - num_new :]  # (B, T)
        mask = mask & (pos[None, None, :] >= starts[:, :, None])  # (B, T, T_all)
    return mask[:, None]


def document_cu_seqlens(idx: Tensor, bos_id: int, bucket: int = 1) -> tuple[Tensor, int]:
    """Segments of the flattened (B·T) batch, one per row start and per BOS: (cu_seqlens int32 (S+1,), max length).

    bucket > 1 pads cu_seqlens with B·T (empty trailing segments, which the varlen kernels skip) to a multiple of
    `bucket` entries. One device→host sync (the segment count is data-dependent)."""
    B, T = idx.shape
    pos = torch.arange(T, device=idx.device)
    boundary = (idx == bos_id) | (pos == 0)[None, :]  # (B, T)
    starts = torch.nonzero(boundary.reshape(-1), as_tuple=True)[0]  # (S,)
    total = torch.tensor([B * T], device=idx.device, dtype=starts.dtype)
    cu = torch.cat([starts, total]).to(torch.int32)  # (S + 1,)
    max_seqlen = int((cu[1:] - cu[:-1]).max().item())
    pad = -cu.numel() % bucket
    if pad:
        cu = torch.cat([cu, cu.new_full((pad,), B * T)])
    return cu, max_seqlen


BACKENDS = ("auto", "torch", "sdpa", "flash")


def _want_flash(backend: str, device: torch.device) -> bool:
    if backend not in BACKENDS:
        raise ValueError(f"model.attention_backend={backend!r}; expected one of {BACKENDS}")
    if backend != "flash":
        return False
    if device.type != "cuda" or not flash_available():
        raise RuntimeError(
            "model.attention_backend='flash' needs a CUDA device and flash-attn (flash_attn_interface or "
            "flash_attn) installed; use 'auto' (torch-native varlen_attn / SDPA) or 'sdpa' otherwise"
        )
    return True


def _want_varlen(backend: str, device: torch.device) -> bool:
    return backend in ("auto", "torch") and varlen_available(device)


def chosen_kernels(backend: str, device: torch.device) -> dict[str, str]:
    """Which kernel runs causal and document-isolated attention on `device` with `backend` (for logs and checks)."""
    if _want_flash(backend, device):
        return {"causal": "flash-attn flash_attn_func", "documents": "flash-attn flash_attn_varlen_func"}
    if _want_varlen(backend, device):
        return {"causal": "SDPA is_causal (flash kernel in bf16)", "documents": "torch varlen_attn (cu_seqlens)"}
    return {"causal": "SDPA is_causal", "documents": "SDPA + block-diagonal mask"}


def build_attention_context(
    idx: Tensor, cos: Tensor, sin: Tensor, *, doc_isolation: bool, bos_id: int, backend: str, cache: Any = None
) -> AttentionContext:
    """Decide the kernel once per forward; the document layout is built lazily by the first layer that needs it."""
    return AttentionContext(cos=cos, sin=sin, idx=idx, bos_id=bos_id, doc_isolation=doc_isolation,
                            use_flash=cache is None and _want_flash(backend, idx.device),
                            use_varlen=cache is None and doc_isolation and _want_varlen(backend, idx.device),
                            cache=cache)


def _half_inputs(q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor] | None:
    """q/k/v in half precision for a varlen kernel: as they are, cast to the autocast dtype under autocast, or None
    (fp32 outside autocast: the caller uses SDPA)."""
    if q.dtype in (torch.bfloat16, torch.float16):
        return q, k.to(q.dtype), v.to(q.dtype)
    device_type = q.device.type
    if torch.is_autocast_enabled(device_type):
        dtype = torch.get_autocast_dtype(device_type)
        return q.to(dtype), k.to(dtype), v.to(dtype)
    return None


def attend(q: Tensor, k: Tensor, v: Tensor, ctx: AttentionContext) -> Tensor:
    """Causal GQA attention, scale 1/sqrt(head_dim).  q (B, T, H, D), k/v (B, T, Hkv, D) -> (B, T, H, D)."""
    B, T, H, D = q.shape
    if ctx.cache is not None:  # incremental decoding: q/k/v are the T newest positions
        k, v = ctx.cache.update(ctx.layer, k, v)  # (B, T_all, Hkv, D)
    if ctx.use_varlen and (half := _half_inputs(q, k, v)) is not None:  # torch-native, documents only
        hq, hk, hv = half
        cu, max_len = ctx.cu_seqlens_bucketed()
        y = _varlen_function()(
            hq.reshape(B * T, H, D), hk.reshape(B * T, -1, D), hv.reshape(B * T, -1, D), cu, cu, max_len, max_len,
            window_size=(-1, 0), enable_gqa=hk.size(-2) != H,  # (-1, 0) = causal; the default (-1, -1) is not
        )
        return y.reshape(B, T, H, D)
    if ctx.use_flash and q.dtype in (torch.bfloat16, torch.float16):  # FlashAttention needs half precision
        flash_func, flash_varlen = _flash_functions()
        if ctx.doc_isolation:
            cu, max_len = ctx.cu_seqlens()
            y = flash_varlen(
                q.reshape(B * T, H, D), k.reshape(B * T, -1, D), v.reshape(B * T, -1, D),
                cu_seqlens_q=cu, cu_seqlens_k=cu, max_seqlen_q=max_len, max_seqlen_k=max_len, causal=True,
            )
            return _first(y).reshape(B, T, H, D)
        return _first(flash_func(q, k, v, causal=True))  # (B, T, H, D)
    qt, kt, vt = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, H|Hkv, T, D)
    gqa = kt.size(1) != qt.size(1)
    if ctx.doc_isolation or ctx.cache is not None:
        if gqa and q.is_cuda:  # the masked CUDA kernel (mem-efficient) may not take enable_gqa: expand k/v instead
            group = qt.size(1) // kt.size(1)
            kt, vt, gqa = kt.repeat_interleave(group, dim=1), vt.repeat_interleave(group, dim=1), False
        y = F.scaled_dot_product_attention(qt, kt, vt, attn_mask=ctx.mask(), enable_gqa=gqa)
    else:
        y = F.scaled_dot_product_attention(qt, kt, vt, is_causal=True, enable_gqa=gqa)
    return y.transpose(1, 2)  # (B, T, H, D)
