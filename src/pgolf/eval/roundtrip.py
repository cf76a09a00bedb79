"""The score is the round trip (style.md rule 12): artifact bytes → decode → dequantize → fresh model → val_bpb.

    model, manifest = load_model_from_artifact(Path("model.pgolf").read_bytes(), device="cuda")
    res = evaluate(model, val_tokens, target_bytes, EvalConfig(stride=64), seq_len=2048, device="cuda", bos_id=1)

Nothing but the artifact's bytes is used to build the model: its architecture comes from manifest["model"]
(GPTConfig fields), its weights from the decoded tensors. Artifacts come from strangers, so the whole artifact is
validated (pgolf.pack.validate) before the model is allocated, and a non-finite score is an error (`check_score`).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from pgolf.pack.container import ArtifactError, decode_artifact
from pgolf.pack.validate import model_config, validate_artifact
from pgolf.quant.apply import dequantize_state


def model_config_from_manifest(manifest: dict[str, Any]):
    """GPTConfig from manifest["model"]: strictly typed, in range, consistent (pgolf.pack.validate.model_config)."""
    return model_config(manifest)


def load_model_from_artifact(data: bytes, device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """(GPT with the artifact's dequantized weights, in eval mode on `device`; the manifest).

    The artifact is validated in full first (`validate_artifact`: manifest types and ranges, the tensor table against
    the model the config implies, the parameter cap, codes vs bits, finite values), so nothing is allocated for a
    forged one. Depth recurrence: looping is switched on when manifest["looping_active"] says so, or, when the
    manifest does not say, whenever the config has num_loops > 0 (records train with it on by the end and evaluate
    with it on).
    """
    qs, manifest = decode_artifact(data)
    return model_from_state(qs, manifest, validate_artifact(qs, manifest), device), manifest


def model_from_state(qs: Any, manifest: dict[str, Any], cfg: Any, device: torch.device | str = "cpu") -> nn.Module:
    """The GPT of a decoded artifact that `validate_artifact` accepted (its GPTConfig `cfg`), eval mode."""
    from pgolf.model.gpt import GPT

    with torch.device("meta"):  # no random init to overwrite: the weights are the artifact's, assigned below
        model = GPT(cfg)
    try:
        model.load_state_dict(dequantize_state(qs), strict=True, assign=True)
    except RuntimeError as e:  # unreachable after check_tensor_table; kept as a clean error, not a traceback
        raise ArtifactError(f"artifact weights do not fit the model it describes: {str(e)[:300]}") from None
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:  # pragma: no cover - every GPT tensor is in its state dict
        raise RuntimeError(f"tensors not restored from the artifact: {left[:3]}")
    model.set_looping(bool(manifest.get("looping_active", cfg.num_loops > 0)))
    return model.to(device).eval()


def check_score(val_loss: float, val_bpb: float, what: str = "round-trip") -> None:
    """A non-finite score is an error, never a result (NaN weights, an overflowing model)."""
    if not (math.isfinite(val_loss) and math.isfinite(val_bpb)):
        raise ArtifactError(f"{what} val_loss={val_loss} val_bpb={val_bpb}: the model produced non-finite losses; "
                            "no score is reported")
