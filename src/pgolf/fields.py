"""Typed values of the config fields: strict parsing and the valid ranges, for every config that reads untrusted
values (pgolf.config's RunConfig from presets, TOML, the environment and the command line; pgolf.pack.validate's
GPTConfig from an artifact's manifest).

    parse_value(int, Text("1_000"), "train.iterations")     → 1000 (a `Text` is parsed to the field's type)
    parse_value(float, True, "train.matrix_lr")             → ValueError: … is a boolean, expected a number
    check_ranges("model", {"num_layers": 0})                → ValueError: model.num_layers=0: expected … ≥ 1 …

Its own module, below every stage, so that a reader of a stage's config (the artifact validator in pack/) does not
import the top-level RunConfig.
"""

from __future__ import annotations

import math
import types
import typing
from typing import Any, Literal, Mapping


class Text(str):
    """A value typed by a person on the command line or in the environment: parsed to the field's type. Any other
    value (TOML, JSON, Python) must already have the field's type."""


_JSON_NAMES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
               dict: "a table", type(None): "null"}


def json_kind(raw: Any) -> str:
    """The JSON name of raw's type ("a boolean", "an integer", …) for error messages."""
    return next((n for t, n in _JSON_NAMES.items() if type(raw) is t), type(raw).__name__)


def parse_value(tp: Any, raw: Any, key: str) -> Any:
    """Convert `raw` to type `tp`: a `Text` is parsed; anything else must already have the type (strict, so a TOML
    `true` is not 1.0 and `5` is not "5"). Errors name the key, the value and the expected type."""
    if not isinstance(raw, Text):
        return json_value(tp, raw, key)
    origin = typing.get_origin(tp)
    if origin is Literal:
        choices = typing.get_args(tp)
        if raw not in choices:
            raise ValueError(f"{key}={raw!r} is not one of {', '.join(map(repr, choices))}")
        return str(raw)
    if origin is tuple:
        (inner, *_rest) = typing.get_args(tp)
        if isinstance(raw, str):
            items = [Text(s) for s in raw.replace(" ", "").split(",") if s]
        elif isinstance(raw, (list, tuple)):
            items = list(raw)
        else:
            raise ValueError(f"{key}={raw!r} is not a list")
        return tuple(parse_value(inner, item, key) for item in items)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return parse_value(args[0], raw, key)
    if tp is bool:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, (int, float)) and raw in (0, 1):
            return bool(raw)
        s = str(raw).strip().lower()
        if s in ("1", "true", "yes", "on"):
            return True
        if s in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{key}={raw!r} is not a boolean (use true/false)")
    if tp is int:
        if isinstance(raw, bool):
            raise ValueError(f"{key}={raw!r} is not an integer")
        if isinstance(raw, int):
            return raw
        try:
            f = float(str(raw).replace("_", ""))
        except ValueError:
            raise ValueError(f"{key}={raw!r} is not an integer") from None
        if not f.is_integer():
            raise ValueError(f"{key}={raw!r} is not an integer")
        return int(f)
    if tp is float:
        try:
            return float(raw)
        except (TypeError, ValueError):
            raise ValueError(f"{key}={raw!r} is not a number") from None
    if tp is str:
        return str(raw)
    raise TypeError(f"{key}: unsupported field type {tp!r}")


def json_value(tp: Any, raw: Any, key: str) -> Any:
    """A value read from JSON or TOML (never `Text`) checked strictly against `tp`: a list for a tuple, an int is a
    float, nothing else converts (the artifact validator reads a manifest's model config with it)."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        choices = typing.get_args(tp)
        if not isinstance(raw, str) or raw not in choices:
            raise ValueError(f"{key}={raw!r} is not one of {', '.join(map(repr, choices))}")
        return raw
    if origin is tuple:
        if not isinstance(raw, (list, tuple)):
            raise ValueError(f"{key}={raw!r} is {json_kind(raw)}, expected a list")
        return tuple(json_value(typing.get_args(tp)[0], item, key) for item in raw)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return None if raw is None and len(args) < len(typing.get_args(tp)) else json_value(args[0], raw, key)
    ok = {bool: isinstance(raw, bool), str: isinstance(raw, str),
          int: isinstance(raw, int) and not isinstance(raw, bool),
          float: isinstance(raw, (int, float)) and not isinstance(raw, bool)}.get(tp)
    if ok is None:
        raise TypeError(f"{key}: unsupported field type {tp!r}")
    if not ok:
        text = repr(raw)
        raise ValueError(f"{key}={text if len(text) <= 60 else text[:57] + '…'} is {json_kind(raw)}, "
                         f"expected {_JSON_NAMES[tp]}")
    return float(raw) if tp is float else raw


_POS, _NONNEG, _PROB = (1, None), (0, None), (0, 1)
FIELD_RANGES: dict[str, tuple[float | None, float | None]] = {
    # (low, high), inclusive; None = unbounded. Every float field must also be finite.
    "data.vocab_size": (2, 65536), "data.val_fraction": _PROB, "data.val_max_tokens": _NONNEG,
    "model.vocab_size": (2, 65536), "model.num_layers": _POS, "model.model_dim": _POS, "model.num_heads": _POS,
    "model.num_kv_heads": _POS, "model.mlp_mult": (1e-6, None), "model.rope_base": (1e-6, None),
    "model.rope_dims": _NONNEG, "model.rope_ntk_seq_len": _NONNEG, "model.logit_softcap": _NONNEG,
    "model.tied_embed_init_std": _NONNEG, "model.xsa_last_n": _NONNEG, "model.gate_window": _NONNEG,
    "model.bigram_vocab_size": _NONNEG, "model.bigram_dim": _POS, "model.ve_dim": _NONNEG,
    "model.num_loops": _NONNEG, "model.loop_start": _NONNEG, "model.loop_end": _NONNEG,
    "model.parallel_start_layer": (-1, None), "model.bos_id": _NONNEG,
    "train.max_wallclock_seconds": _NONNEG, "train.calib_reserve_seconds": _NONNEG, "train.iterations": _POS,
    "train.train_batch_tokens": _POS, "train.train_seq_len": _POS, "train.grad_accum_steps": _POS,
    "train.matrix_lr": _NONNEG, "train.muon_momentum": _PROB, "train.muon_momentum_warmup_start": _PROB,
    "train.muon_momentum_warmup_steps": _NONNEG, "train.muon_backend_steps": _NONNEG, "train.muon_wd": _NONNEG,
    "train.tied_embed_lr": _NONNEG, "train.embed_lr": _NONNEG, "train.head_lr": _NONNEG, "train.scalar_lr": _NONNEG,
    "train.adam_beta1": _PROB, "train.adam_beta2": _PROB, "train.adam_eps": (1e-30, None), "train.adam_wd": _NONNEG,
    "train.embed_wd": _NONNEG, "train.grad_clip_norm": _NONNEG, "train.warmdown_frac": _PROB,
    "train.min_lr": _PROB, "train.qat_threshold": _PROB, "train.qat_calib_seqs": _NONNEG,
    "train.ema_decay": _PROB, "train.enable_looping_at": _PROB, "train.val_every": _NONNEG,
    "train.log_every": _POS, "train.checkpoint_every": _NONNEG,
    "quant.calib_seqs": _NONNEG, "quant.calib_seq_len": _NONNEG, "quant.calib_batch_size": _POS,
    "quant.calib_temperature": _NONNEG,
    "pack.byte_limit": _POS, "pack.budget": _NONNEG, "pack.fit_bits_delta": _NONNEG,
    "eval.seq_len": _NONNEG, "eval.stride": _NONNEG, "eval.batch_seqs": _POS, "eval.max_seconds": _NONNEG,
    "eval.ttt_chunk_tokens": _POS, "eval.ttt_lr": _NONNEG, "eval.ttt_momentum": _PROB, "eval.ttt_epochs": _NONNEG,
    "eval.ttt_batch_seqs": _POS, "eval.ttt_grad_clip": _NONNEG, "eval.ttt_freeze_blocks": _NONNEG,
    "eval.ttt_lora_rank": _POS, "eval.ttt_lora_alpha": _NONNEG, "eval.ttt_lora_chunk": _POS,
    "eval.ttt_lora_lr": _NONNEG, "eval.ttt_lora_beta2": _PROB, "eval.ttt_lora_weight_decay": _NONNEG,
    "eval.ttt_lora_batch_docs": _POS, "eval.ttt_lora_lanes": _NONNEG, "eval.phased_prefix_docs": _NONNEG,
    "eval.phased_num_phases": _POS, "eval.phased_lr": _NONNEG,
}
"""Valid range of every numeric field that has one (`pgolf presets` prints them); checked by `check_ranges`."""


def _describe(lo: float | None, hi: float | None) -> str:
    if hi is None:
        return {0: "≥ 0", 1: "≥ 1 (a positive count)"}.get(lo, f"≥ {lo}")  # type: ignore[arg-type]
    return "in [0, 1]" if (lo, hi) == (0, 1) else f"in [{lo}, {hi}]"


def check_ranges(section: str, values: Mapping[str, Any]) -> None:
    """ValueError naming the first field of `section` that is non-finite or outside its FIELD_RANGES entry."""
    for key, v in values.items():
        items = v if isinstance(v, tuple) else (v,)
        for x in items:
            if isinstance(x, float) and not math.isfinite(x):
                raise ValueError(f"{section}.{key}={x}: expected a finite number")
        lo, hi = FIELD_RANGES.get(f"{section}.{key}", (None, None))
        if isinstance(v, (int, float)) and not isinstance(v, bool) and (
                (lo is not None and v < lo) or (hi is not None and v > hi)):
            raise ValueError(f"{section}.{key}={v}: expected a value {_describe(lo, hi)}")
