"""Everything a reader checks in an untrusted artifact, after the container has been decompressed and before any
model is built (the structure, tensor rows tiling the payload, is checked as the body is assembled: pack/body.py).
Every refusal is one `ArtifactError` naming the field, its value and what was expected.

    cfg = validate_artifact(qs, manifest)       # semantics: manifest types/ranges, codes vs bits, finite floats,
                                                # dtypes, the tensor table against the model the config implies
    qs, manifest, cfg = read_artifact(path)     # file → decode → validate (what every command that reads one calls)

`validate_artifact` builds the model on the meta device (shapes only, no memory) and compares its state dict, name
by name, with the artifact's tensors: shape, original dtype and the parameter count (≤ MAX_MODEL_PARAMS). Only then
may a caller allocate the real model (pgolf.eval.roundtrip.load_model_from_artifact).
"""

from __future__ import annotations

import math
import os
import typing
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from pgolf.pack.format import FLOAT_DTYPES, MAX_BODY_BYTES, MAX_MODEL_PARAMS, ArtifactError, short
from pgolf.quant.apply import QuantizedState

MODEL_CAPS: dict[str, int] = {
    "vocab_size": 65536, "num_layers": 256, "model_dim": 16384, "num_heads": 1024, "num_kv_heads": 1024,
    "rope_dims": 16384, "rope_ntk_seq_len": 1 << 22, "xsa_last_n": 4096, "gate_window": 16384,
    "bigram_vocab_size": 1 << 20, "bigram_dim": 16384, "ve_dim": 16384, "num_loops": 16, "loop_start": 256,
    "loop_end": 256, "parallel_start_layer": 256, "bos_id": 65535,
}
"""Upper bounds on the integer model fields of an artifact (far above any record; they keep even the meta-device
construction of a forged config instant). The lower bounds are the config's own (pgolf.fields.FIELD_RANGES)."""
MAX_MLP_MULT = 64.0


# ------------------------------------------------------------------------------------------------ semantics

def _finite(name: str, what: str, t: Tensor) -> None:
    if t.is_floating_point() and t.numel() and not bool(torch.isfinite(t).all()):
        bad = int((~torch.isfinite(t)).sum())
        raise ArtifactError(f"tensor {name[:100]!r}: {what} holds {bad:,} NaN/inf value(s); expected finite numbers")


def check_state(qs: QuantizedState) -> None:
    """Codes within the range their `bits` label allows, finite scales / extras / passthrough, consistent dtypes."""
    for name, qt in qs.tensors.items():
        qmax = max(1, (1 << (qt.bits - 1)) - 1)
        if qt.q.numel():
            lo, hi = int(qt.q.min()), int(qt.q.max())
            if lo < -qmax or hi > qmax:
                raise ArtifactError(f"tensor {name[:100]!r}: codes span [{lo}, {hi}] but bits={qt.bits} allows "
                                    f"only ±{qmax}")
        _finite(name, "scale", qt.scale)
        for key, t in qt.extras.items():
            _finite(name, f"extra {key[:50]!r}", t)
        orig = qs.dtypes[name]
        if orig not in FLOAT_DTYPES:
            raise ArtifactError(f"tensor {name[:100]!r}: quantized, but its original dtype is {orig}; expected one "
                                f"of {', '.join(FLOAT_DTYPES)}")
    # (distinct loop names, conditions without side effects: the single-file script drops these checks whole)
    for pname, value in qs.passthrough.items():
        _finite(pname, "passthrough value", value)
        stored, orig = str(value.dtype)[len("torch."):], qs.dtypes[pname]
        allowed = ("float16", "float32") if orig in FLOAT_DTYPES else (orig,)
        if stored not in allowed:
            raise ArtifactError(f"tensor {pname[:100]!r}: stored as {stored} for an original {orig}; expected "
                                f"{' or '.join(allowed)}")


def model_config(manifest: dict[str, Any]):
    """manifest["model"] → GPTConfig: strictly typed fields, the config's ranges, MODEL_CAPS, divisibility."""
    from pgolf.fields import check_ranges, json_value
    from pgolf.model.config import GPTConfig

    raw = manifest.get("model")
    if not isinstance(raw, dict):
        raise ArtifactError(f"manifest field 'model' is {short(raw)}, expected an object of GPTConfig fields")
    hints = typing.get_type_hints(GPTConfig)
    unknown = sorted(set(raw) - set(hints))
    if unknown:
        raise ArtifactError(f"manifest model fields unknown to this pgolf: {short(unknown, 120)}")
    kwargs: dict[str, Any] = {}
    try:
        for key, value in raw.items():
            kwargs[key] = json_value(hints[key], value, f"manifest model.{key}")
        check_ranges("model", kwargs)
    except ValueError as e:
        raise ArtifactError(str(e)) from None
    for capped, cap in MODEL_CAPS.items():  # not `key`: the script's dead-code pass then drops the loop
        if capped in kwargs and kwargs[capped] > cap:
            raise ArtifactError(f"manifest model.{capped}={kwargs[capped]:,}: expected at most {cap:,}")
    if kwargs.get("mlp_mult", 2.0) > MAX_MLP_MULT:
        raise ArtifactError(f"manifest model.mlp_mult={kwargs['mlp_mult']}: expected at most {MAX_MLP_MULT}")
    if len(kwargs.get("ve_layers", ())) > MODEL_CAPS["num_layers"]:
        raise ArtifactError(f"manifest model.ve_layers has {len(kwargs['ve_layers'])} entries; expected at most "
                            f"{MODEL_CAPS['num_layers']}")
    try:
        cfg = GPTConfig(**kwargs)
    except (TypeError, ValueError, ZeroDivisionError) as e:
        raise ArtifactError(f"manifest model config is inconsistent: {e}") from None
    if cfg.model_dim % cfg.num_heads or cfg.head_dim % 2 or (cfg.rope_dims or cfg.head_dim) % 2:
        raise ArtifactError(f"manifest model: head_dim = model_dim/num_heads = {cfg.model_dim}/{cfg.num_heads} "
                            "must be an even integer (rotary embeddings pair dimensions)")
    if cfg.bos_id >= cfg.vocab_size:
        raise ArtifactError(f"manifest model.bos_id={cfg.bos_id}: expected an id below vocab_size={cfg.vocab_size}")
    return cfg


def expected_tensors(cfg) -> dict[str, tuple[tuple[int, ...], str]]:
    """name → (shape, dtype) of the state dict GPT(cfg) has, from a meta-device build (no memory allocated)."""
    from pgolf.model.gpt import GPT

    try:
        with torch.device("meta"):
            model = GPT(cfg)
    except (ValueError, RuntimeError, TypeError, ZeroDivisionError, IndexError) as e:
        raise ArtifactError(f"manifest model config does not build a model: {type(e).__name__}: {e}") from None
    return {k: (tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in model.state_dict().items()}


def _stored_shape(qs: QuantizedState, name: str) -> tuple[int, ...]:
    return tuple((qs.tensors[name].q if name in qs.tensors else qs.passthrough[name]).shape)


def check_tensor_table(qs: QuantizedState, cfg) -> None:
    """The artifact's tensors are exactly the model's: same names, shapes and original dtypes; ≤ MAX_MODEL_PARAMS."""
    expected = expected_tensors(cfg)
    n_params = sum(math.prod(s) for s, _ in expected.values())
    if n_params > MAX_MODEL_PARAMS:
        raise ArtifactError(f"manifest model describes {n_params:,} parameters ({4 * n_params / 2**30:.1f} GiB in "
                            f"fp32); this pgolf builds at most {MAX_MODEL_PARAMS:,}")
    stored = {*qs.tensors, *qs.passthrough}  # (the checks have no side effects: the script drops them whole)
    if set(expected) != stored:
        missing, extra = sorted(set(expected) - stored), sorted(stored - set(expected))
        raise ArtifactError(f"the tensor table does not match the manifest model: missing {short(missing[:3], 150)}"
                            f", unexpected {short(extra[:3], 150)}")
    for name, (shape, dtype) in expected.items():
        if _stored_shape(qs, name) != shape:
            raise ArtifactError(f"tensor {name!r}: shape {list(_stored_shape(qs, name))} but the manifest model "
                                f"implies {list(shape)}")
        if qs.dtypes[name] != dtype:
            raise ArtifactError(f"tensor {name!r}: original dtype {qs.dtypes[name]} but the model's is {dtype}")


def validate_artifact(qs: QuantizedState, manifest: dict[str, Any], require_model: bool = True):
    """All semantic checks of a decoded artifact → its GPTConfig; ArtifactError on the first violation.

    require_model=False (`pgolf info`, `pgolf pack`: they build no model): an artifact whose manifest has no "model"
    at all (a bare quantized state) passes with the tensor checks alone and None for the config; one that has a
    "model" is checked in full either way."""
    if "looping_active" in manifest and not isinstance(manifest["looping_active"], bool):
        raise ArtifactError(f"manifest field 'looping_active' is {short(manifest['looping_active'])}, "
                            "expected true or false")
    if not require_model and "model" not in manifest:
        check_state(qs)
        return None
    cfg = model_config(manifest)
    check_tensor_table(qs, cfg)  # before check_state: a forged table is refused without reading the payload
    check_state(qs)
    return cfg


def read_artifact_bytes(path: str | os.PathLike) -> bytes:
    """The artifact file's bytes, refused before reading when it is larger than any artifact can be."""
    path = Path(path)
    size = path.stat().st_size
    if size > MAX_BODY_BYTES:
        raise ArtifactError(f"{path} is {size:,} bytes; an artifact is at most {MAX_BODY_BYTES:,}")
    return path.read_bytes()


def decode_validated(blob: bytes, require_model: bool = True, source: str | os.PathLike = ""
                     ) -> tuple[QuantizedState, dict[str, Any], Any]:
    """Decode and validate artifact bytes → (QuantizedState, manifest, GPTConfig or None when require_model=False
    and the manifest has no model). A refusal's message starts with `source` (the file), when given."""
    from pgolf.pack.container import decode_artifact

    try:
        qs, manifest = decode_artifact(blob)
        return qs, manifest, validate_artifact(qs, manifest, require_model)
    except ArtifactError as e:
        if not source:
            raise
        raise ArtifactError(f"{source}: {e}") from None


def read_artifact(path: str | os.PathLike, require_model: bool = True) -> tuple[QuantizedState, dict[str, Any], Any]:
    """Read, decode and validate the artifact at `path` (`read_artifact_bytes` + `decode_validated`); a refusal
    names the file."""
    return decode_validated(read_artifact_bytes(path), require_model, source=path)
