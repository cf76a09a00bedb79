"""Causal attention kernels, with optional document isolation.

Document isolation (the records' VarLen training, PR #1530, R0414+; masks, cu_seqlens and the varlen kernel in
model/documents.py): a token attends only to positions at or after the start of its own document — the most recent
BOS at or before it — within its row. Every kernel below equals running every document on its own.

`model.attention_backend`:
- `auto` / `torch` (default): torch-native kernels. On CUDA, document isolation runs
  `torch.nn.attention.varlen.varlen_attn` (torch ≥ 2.13: FlashAttention over `cu_seqlens`, one segment per document
  and per row, no extra wheel) and plain causal attention runs SDPA with `is_causal` (the flash kernel under bf16
  autocast). On CPU, SDPA: `is_causal`, or a boolean block-diagonal causal mask (B, 1, T, T) for documents.
  (Flex attention was measured as the CPU alternative: it has no CPU backward in torch 2.13, so it cannot train
  there; BENCHMARKS.md "Attention kernels".)
- `sdpa`: SDPA everywhere, the dense mask for documents (the reference).
- `flash`: the flash-attn package (model/flash.py: `flash_attn_interface` FA3 or `flash_attn` FA2:
  `flash_attn_varlen_func` / `flash_attn_func`), as the records install it from their wheel index; CUDA only, optional.
The varlen kernels need half precision: fp32 inputs under CUDA autocast are cast to the autocast dtype (what SDPA
does there too), fp32 inputs outside autocast take the SDPA path.

`build_attention_context` runs once per forward (mask / cu_seqlens are shared by every layer); `attend` runs per layer.
model/documents.py and model/flash.py are imported only inside the branches that use them (so a configuration's
single-file script leaves out what it never runs); FlashAttention and varlen_attn are imported lazily, so importing
this module never touches CUDA.

Incremental decoding (model/generate.py): with `ctx.cache` set, q/k/v hold only the newest positions; `attend`
appends k/v to the cache slot of virtual layer `ctx.layer` and attends over all cached positions (SDPA with a
bottom-right causal mask, document-isolated when enabled).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor


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
            from pgolf.model.documents import decode_mask, document_causal_mask

            if self.cache is None:
                self._mask = document_causal_mask(self.idx, self.bos_id)
            else:
                self._mask = decode_mask(self.idx, self.cos.size(1), self.bos_id, self.doc_isolation)
        return self._mask

    def cu_seqlens(self) -> tuple[Tensor, int]:
        if self._cu_seqlens is None:
            from pgolf.model.documents import document_cu_seqlens

            self._cu_seqlens = document_cu_seqlens(self.idx, self.bos_id)
        return self._cu_seqlens

    def cu_seqlens_bucketed(self) -> tuple[Tensor, int]:
        if self._cu_varlen is None:
            from pgolf.model.documents import VARLEN_BUCKET, document_cu_seqlens

            self._cu_varlen = document_cu_seqlens(self.idx, self.bos_id, bucket=VARLEN_BUCKET)
        return self._cu_varlen


BACKENDS = ("auto", "torch", "sdpa", "flash")


def _want_flash(backend: str, device: torch.device) -> bool:
    if backend not in BACKENDS:
        raise ValueError(f"model.attention_backend={backend!r}; expected one of {BACKENDS}")
    if backend != "flash":
        return False
    from pgolf.model.flash import flash_available

    if device.type != "cuda" or not flash_available():
        raise RuntimeError(
            "model.attention_backend='flash' needs a CUDA device and flash-attn (flash_attn_interface or "
            "flash_attn) installed; use 'auto' (torch-native varlen_attn / SDPA) or 'sdpa' otherwise"
        )
    return True


def _want_varlen(backend: str, device: torch.device) -> bool:
    from pgolf.model.documents import want_varlen

    return want_varlen(backend, device)


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


def attend(q: Tensor, k: Tensor, v: Tensor, ctx: AttentionContext) -> Tensor:
    """Causal GQA attention, scale 1/sqrt(head_dim).  q (B, T, H, D), k/v (B, T, Hkv, D) -> (B, T, H, D)."""
    if ctx.cache is not None:  # incremental decoding: q/k/v are the T newest positions
        k, v = ctx.cache.update(ctx.layer, k, v)  # (B, T_all, Hkv, D)
    if ctx.use_varlen:  # torch-native, documents only; None for fp32 outside autocast (then SDPA + mask)
        from pgolf.model.documents import varlen_attend

        if (y := varlen_attend(q, k, v, ctx.cu_seqlens_bucketed)) is not None:
            return y
    if ctx.use_flash and q.dtype in (torch.bfloat16, torch.float16):  # FlashAttention needs half precision
        from pgolf.model.flash import flash_attend

        return flash_attend(q, k, v, ctx.cu_seqlens() if ctx.doc_isolation else None)
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
