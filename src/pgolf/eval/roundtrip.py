"""The score is the round trip (style.md rule 12): artifact bytes → decode → dequantize → fresh model → val_bpb.

    model, manifest = load_model_from_artifact(Path("model.pgolf").read_bytes(), device="cuda")
    res = evaluate(model, val_tokens, target_bytes, EvalConfig(stride=64), seq_len=2048, device="cuda", bos_id=1)

Nothing but the artifact's bytes is used to build the model: its architecture comes from manifest["model"]
(GPTConfig fields), its weights from the decoded tensors, loaded with strict=True so a missing or extra tensor is
an error rather than a silently random weight.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from pgolf.pack.container import ArtifactError, decode_artifact
from pgolf.quant.apply import dequantize_state


def model_config_from_manifest(manifest: dict[str, Any]):
    """GPTConfig from manifest["model"] (JSON lists back to tuples); ArtifactError on missing/unknown fields."""
    from pgolf.model.config import GPTConfig

    raw = manifest.get("model")
    if not isinstance(raw, dict):
        raise ArtifactError("artifact manifest has no 'model' configuration to rebuild the network from")
    known = {f.name for f in dataclasses.fields(GPTConfig)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ArtifactError(f"artifact model config has fields this pgolf does not know: {unknown}")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}
    try:
        return GPTConfig(**kwargs)
    except (TypeError, ValueError) as e:
        raise ArtifactError(f"artifact model config is invalid: {e}") from e


def load_model_from_artifact(data: bytes, device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """(GPT with the artifact's dequantized weights, in eval mode on `device`; the manifest).

    Depth recurrence: looping is switched on when manifest["looping_active"] says so, or, when the manifest does
    not say, whenever the config has num_loops > 0 (records train with it on by the end and evaluate with it on).
    """
    from pgolf.model.gpt import GPT

    qs, manifest = decode_artifact(data)
    cfg = model_config_from_manifest(manifest)
    model = GPT(cfg)
    try:
        model.load_state_dict(dequantize_state(qs), strict=True)
    except RuntimeError as e:
        raise ArtifactError(f"artifact weights do not fit the model it describes: {e}") from e
    model.set_looping(bool(manifest.get("looping_active", cfg.num_loops > 0)))
    return model.to(device).eval(), manifest
