"""The flash-attn package as an attention kernel: `model.attention_backend = "flash"` (CUDA only, optional).

FA3 (`flash_attn_interface`) or FA2 (`flash_attn`): `flash_attn_func` for causal attention, `flash_attn_varlen_func`
over the document `cu_seqlens` for document isolation (PR #1530, R0414+), as the records install it from their wheel
index. Imported lazily, so importing this module never touches CUDA or needs the package.

Its own module because only backend "flash" runs it (the default `auto` runs torch-native kernels): attention.py
imports it only in the branches of that backend, so the single-file script of every other configuration leaves it
out (`GPTConfig.modules_not_run`).
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

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


def _first(out: Any) -> Tensor:
    """Some FlashAttention builds return (out, lse); keep the output."""
    return out[0] if isinstance(out, tuple) else out


def flash_attend(q: Tensor, k: Tensor, v: Tensor, documents: tuple[Tensor, int] | None) -> Tensor:
    """Causal GQA attention through flash-attn, half precision; q (B, T, H, D), k/v (B, T, Hkv, D) -> (B, T, H, D).
    `documents`: (cu_seqlens, max length) of the document segments (document isolation), or None (plain causal)."""
    B, T, H, D = q.shape
    flash_func, flash_varlen = _flash_functions()
    if documents is not None:
        cu, max_len = documents
        y = flash_varlen(
            q.reshape(B * T, H, D), k.reshape(B * T, -1, D), v.reshape(B * T, -1, D),
            cu_seqlens_q=cu, cu_seqlens_k=cu, max_seqlen_q=max_len, max_seqlen_k=max_len, causal=True,
        )
        return _first(y).reshape(B, T, H, D)
    return _first(flash_func(q, k, v, causal=True))  # (B, T, H, D)
