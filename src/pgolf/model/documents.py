"""Document isolation: the masks, segment tables and torch-native varlen kernel of document-isolated attention.

The records' VarLen training (PR #1530, R0414+): a token attends only to positions at or after the start of its own
document — the most recent BOS at or before it — within its row. Each layout below equals running every document on
its own: the boolean block-diagonal causal mask of SDPA (`document_causal_mask`; `decode_mask` for incremental
decoding), and the `cu_seqlens` of the varlen kernels (`document_cu_seqlens`: one segment per document and per row).
On CUDA, backend `auto`/`torch` runs `torch.nn.attention.varlen.varlen_attn` over them (torch ≥ 2.13:
FlashAttention, no extra wheel), imported lazily, so importing this module never touches CUDA.

Its own module because most configurations never run it: attention.py imports it only in the branches that use it
(a `model.doc_isolation` model, TTT-LoRA's document-isolated eval, incremental decoding in model/generate.py), so the
single-file script of a configuration that takes none of them leaves it out (`GPTConfig.modules_not_run`).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

_VARLEN: dict[str, Any] = {}

VARLEN_BUCKET = 64
"""cu_seqlens of the varlen kernel are padded with empty segments to a multiple of this (the records' R0414
`_build_cu_seqlens` bucket), so torch.compile sees few distinct shapes."""


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


def varlen_function() -> Callable[..., Any] | None:
    """torch.nn.attention.varlen.varlen_attn (torch ≥ 2.13), else None."""
    if "varlen" not in _VARLEN:
        try:
            from torch.nn.attention.varlen import varlen_attn
        except ImportError:
            varlen_attn = None
        _VARLEN["varlen"] = varlen_attn
    return _VARLEN["varlen"]


def varlen_available(device: torch.device) -> bool:
    """Whether the torch-native varlen kernel can run on `device` (a CUDA build of torch ≥ 2.13)."""
    return device.type == "cuda" and varlen_function() is not None


def want_varlen(backend: str, device: torch.device) -> bool:
    """Whether `backend` runs document isolation through the torch-native varlen kernel on `device`."""
    return backend in ("auto", "torch") and varlen_available(device)


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


def varlen_attend(q: Tensor, k: Tensor, v: Tensor, cu_seqlens: Callable[[], tuple[Tensor, int]]) -> Tensor | None:
    """Document-isolated causal GQA attention through varlen_attn; q (B, T, H, D), k/v (B, T, Hkv, D) -> (B, T, H, D).
    `cu_seqlens()` gives the bucketed segments (built once per forward). None for fp32 inputs outside autocast (the
    caller takes SDPA + mask)."""
    half = _half_inputs(q, k, v)
    if half is None:
        return None
    B, T, H, D = q.shape
    hq, hk, hv = half
    cu, max_len = cu_seqlens()
    y = varlen_function()(
        hq.reshape(B * T, H, D), hk.reshape(B * T, -1, D), hv.reshape(B * T, -1, D), cu, cu, max_len, max_len,
        window_size=(-1, 0), enable_gqa=hk.size(-2) != H,  # (-1, 0) = causal; the default (-1, -1) is not
    )
    return y.reshape(B, T, H, D)
