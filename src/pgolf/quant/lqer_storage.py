"""How an LQER correction is stored in `QuantizedTensor.extras` (the records' key names) and read back as A·B
(pure tensor functions; quant/lqer.py packs the factors). Only a tensor with extras imports this module, so the
single-file script of a recipe without LQER leaves it out.

    asym: lqA_a int8 (rows, r) in [−2, 1], lqAs_a fp16 () ; lqB_a int8 (r, cols) in [−8, 7], lqBs_a fp16 (numel/g,)
    sym : lqA   int8 (rows, r) in ±cr,     lqAs   fp16 (rows,); lqB int8 (r, cols) in ±cr,  lqBs fp16 (r,)
"""

from __future__ import annotations

from typing import Mapping

from torch import Tensor

ASYM_KEYS = ("lqA_a", "lqAs_a", "lqB_a", "lqBs_a")
SYM_KEYS = ("lqA", "lqAs", "lqB", "lqBs")
LQER_KEYS = (ASYM_KEYS, SYM_KEYS)  # the order `unpack_lqer` tries them in


def has_lqer(extras: Mapping[str, Tensor]) -> bool:
    """True when `extras` hold a packed LQER correction (asym or sym)."""
    return any(all(k in extras for k in keys) for keys in LQER_KEYS)


def unpack_lqer(extras: Mapping[str, Tensor]) -> Tensor:
    """The fp32 correction A·B (rows, cols) from packed factors, asym or sym."""
    for keys in LQER_KEYS:
        if all(k in extras for k in keys):
            qA, sA, qB, sB = (extras[k] for k in keys)
            return _times_scale(qA, sA) @ _times_scale(qB, sB)
    raise KeyError(f"no LQER factors in extras (keys {sorted(extras)}); expected {ASYM_KEYS} or {SYM_KEYS}")


def _times_scale(q: Tensor, s: Tensor) -> Tensor:
    """q · s in fp32 with one scale per equal block of q's elements in order: per tensor (s 0-d, asym A), per row
    (sym A and B) or per group of numel(q)/numel(s) (asym B)."""
    return (q.reshape(s.numel(), -1).float() * s.float().reshape(-1, 1)).reshape(q.shape)
