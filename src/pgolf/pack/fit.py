"""The budget fit (quant/fit.py) bound to the container: rates from the entropy coder, the real encoder.

    fit = fit_to_budget(state_dict, get_recipe("sdclip"), target_model_bytes=16_000_000 - code_bytes,
                        codec="rans", manifest=manifest, hessians=hessians)
"""

from __future__ import annotations

from typing import Any, Mapping

from torch import Tensor

from pgolf.pack.container import encode_artifact
from pgolf.pack.entropy import encode_codes
from pgolf.quant import fit as _fit
from pgolf.quant.fit import FitError, FitResult  # noqa: F401  (re-exported for callers of the pack stage)
from pgolf.quant.primitives import QuantizedTensor
from pgolf.quant.recipes import QuantRecipe


def code_rate(qt: QuantizedTensor) -> int:
    """Bytes of a tensor under the rans container: its entropy-coded codes plus the raw scales and extras."""
    n = len(encode_codes(qt.q.detach().cpu().contiguous().numpy()))
    n += qt.scale.numel() * qt.scale.element_size()
    return n + sum(t.numel() * t.element_size() for t in qt.extras.values())


def fit_to_budget(state_dict: Mapping[str, Tensor], recipe: QuantRecipe | str, *, target_model_bytes: int,
                  codec: str, manifest: Mapping[str, Any], **kwargs: Any) -> FitResult:
    """quant.fit.fit_to_budget with `code_rate` and `encode_artifact(state, manifest, codec)`; other keywords
    (hessians, sigma_multipliers, bits_delta, tolerance_bytes, max_rounds, progress) pass through."""
    return _fit.fit_to_budget(state_dict, recipe, target_model_bytes=target_model_bytes, rate=code_rate,
                              encode=lambda qs: encode_artifact(qs, dict(manifest), codec), codec=codec, **kwargs)
