"""RunConfig: the composition of the stage configs, with presets, TOML files, dotted overrides and `--from-env`.

Precedence (lowest to highest): dataclass defaults < preset (src/pgolf/presets/NAME.toml) < --config FILE <
record environment variables (--from-env) < dotted command-line overrides (`--train.matrix_lr 0.026`).
Every unknown section or field is an error that lists the valid names. Values are typed strictly: command-line and
environment values are text (`Text`) parsed to the field's type; TOML/JSON values must already have it (a bool is
not a number, a number is not a string, an int is accepted for a float). Every numeric field must be finite and
within its range in `FIELD_RANGES` (positive counts, probabilities in [0, 1], non-negative rates); each violation is
one line naming the field, its value and the expected range.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import sys
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Mapping

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from pgolf.data.config import DataConfig
from pgolf.eval.config import EvalConfig
from pgolf.model.config import GPTConfig
from pgolf.pack.config import PackConfig
from pgolf.quant.config import QuantConfig
from pgolf.train.config import TrainConfig


@dataclass(frozen=True)
class RunSection:
    out_dir: str = "runs"
    """Parent folder of run directories."""
    name: str = ""
    """Run directory name; empty = <preset>-<timestamp>."""
    progress: Literal["auto", "bar", "lines"] = "auto"
    """auto = a live tqdm bar on a terminal, plain key:value lines otherwise."""


@dataclass(frozen=True)
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: GPTConfig = field(default_factory=GPTConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    quant: QuantConfig = field(default_factory=QuantConfig)
    pack: PackConfig = field(default_factory=PackConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    run: RunSection = field(default_factory=RunSection)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {s.name: dataclasses.asdict(getattr(self, s.name)) for s in dataclasses.fields(self)}

    @property
    def eval_seq_len(self) -> int:
        return self.eval.seq_len or self.train.train_seq_len


SECTIONS: dict[str, type] = {f.name: f.default_factory for f in dataclasses.fields(RunConfig)}  # type: ignore[misc]


# --------------------------------------------------------------------------------------------------------------
# Presets

def preset_names() -> list[str]:
    root = resources.files("pgolf").joinpath("presets")
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".toml"))


def load_preset(name: str) -> dict[str, dict[str, Any]]:
    names = preset_names()
    if name not in names:
        hint = difflib.get_close_matches(name, names, n=1)
        raise ValueError(
            f"unknown preset {name!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
            + f"; valid presets: {', '.join(names)}"
        )
    text = resources.files("pgolf").joinpath("presets", f"{name}.toml").read_text()
    return tomllib.loads(text)


def load_toml(path: str | Path) -> dict[str, dict[str, Any]]:
    path = Path(path)
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"config file {path} is not valid TOML: {e}") from None


# --------------------------------------------------------------------------------------------------------------
# Value parsing (strings from the command line / environment → the field's declared type)

def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _unknown(kind: str, name: str, valid: list[str], where: str) -> ValueError:
    hint = difflib.get_close_matches(name, valid, n=1)
    return ValueError(
        f"unknown {kind} {name!r} in {where}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
        + f"; valid {kind}s: {', '.join(valid)}"
    )


class Text(str):
    """A value typed by a person on the command line or in the environment: parsed to the field's type. Any other
    value (TOML, JSON, Python) must already have the field's type."""


_JSON_NAMES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
               dict: "a table", type(None): "null"}


def _kind(raw: Any) -> str:
    return next((n for t, n in _JSON_NAMES.items() if type(raw) is t), type(raw).__name__)


def parse_value(tp: Any, raw: Any, key: str) -> Any:
    """Convert `raw` to type `tp`: a `Text` is parsed; anything else must already have the type (strict, so a TOML
    `true` is not 1.0 and `5` is not "5"). Errors name the key, the value and the expected type."""
    if not isinstance(raw, Text):
        return _typed_value(tp, raw, key)
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


def _typed_value(tp: Any, raw: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin is Literal:
        choices = typing.get_args(tp)
        if not isinstance(raw, str) or raw not in choices:
            raise ValueError(f"{key}={raw!r} is not one of {', '.join(map(repr, choices))}")
        return raw
    if origin is tuple:
        if not isinstance(raw, (list, tuple)):
            raise ValueError(f"{key}={raw!r} is {_kind(raw)}, expected a list")
        return tuple(_typed_value(typing.get_args(tp)[0], item, key) for item in raw)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return None if raw is None and len(args) < len(typing.get_args(tp)) else _typed_value(args[0], raw, key)
    ok = {bool: isinstance(raw, bool), str: isinstance(raw, str),
          int: isinstance(raw, int) and not isinstance(raw, bool),
          float: isinstance(raw, (int, float)) and not isinstance(raw, bool)}.get(tp)
    if ok is None:
        raise TypeError(f"{key}: unsupported field type {tp!r}")
    if not ok:
        text = repr(raw)
        raise ValueError(f"{key}={text if len(text) <= 60 else text[:57] + '…'} is {_kind(raw)}, "
                         f"expected {_JSON_NAMES[tp]}")
    return float(raw) if tp is float else raw


# --------------------------------------------------------------------------------------------------------------
# Building a RunConfig

def merge(base: dict[str, dict[str, Any]], layer: Mapping[str, Mapping[str, Any]], where: str) -> None:
    """Merge `layer` into `base` in place, validating section and field names against the dataclasses."""
    if not isinstance(layer, Mapping):
        raise ValueError(f"{where} must be a table of sections, got {_kind(layer)}")
    for section, values in layer.items():
        if section not in SECTIONS:
            raise _unknown("section", section, list(SECTIONS), where)
        if not isinstance(values, Mapping):
            raise ValueError(f"[{section}] in {where} must be a table of fields, got {values!r}")
        types_ = _field_types(SECTIONS[section])
        for key, raw in values.items():
            nested = getattr(SECTIONS[section], "nested_override", None)  # e.g. quant.mlp.bits (QuantConfig)
            if key not in types_ and nested is not None and ("." in key or isinstance(raw, Mapping)):
                nested(base.setdefault(section, {}), key, raw, where)
                continue
            if key not in types_:
                raise _unknown(f"{section} field", key, list(types_), where)
            try:
                base.setdefault(section, {})[key] = parse_value(types_[key], raw, f"{section}.{key}")
            except ValueError as e:
                raise ValueError(f"{e} (in {where})") from None


def parse_overrides(pairs: list[tuple[str, str]]) -> dict[str, dict[str, Any]]:
    """[("train.matrix_lr", "0.026")] → {"train": {"matrix_lr": "0.026"}} (types are applied by `merge`)."""
    out: dict[str, dict[str, Any]] = {}
    for dotted, value in pairs:
        if "." not in dotted:
            raise ValueError(f"override --{dotted} must look like --section.field (sections: {', '.join(SECTIONS)})")
        section, key = dotted.split(".", 1)
        out.setdefault(section, {})[key] = Text(value)
    return out


def build_config(layers: list[tuple[str, Mapping[str, Mapping[str, Any]]]]) -> RunConfig:
    """Apply (description, {section: {field: value}}) layers in order over the defaults and validate."""
    merged: dict[str, dict[str, Any]] = {}
    for where, layer in layers:
        merge(merged, layer, where)
    sections = {}
    for name, cls in SECTIONS.items():
        try:
            check_ranges(name, merged.get(name, {}))  # before __post_init__ divides by a count
            sections[name] = cls(**merged.get(name, {}))
        except (ValueError, ZeroDivisionError) as e:
            raise ValueError(f"invalid configuration: {e}") from None
    cfg = RunConfig(**sections)
    validate(cfg)
    return cfg


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


def validate(cfg: RunConfig) -> None:
    """Field ranges (`check_ranges`) and the cross-section checks that a single stage config cannot make."""
    for name in SECTIONS:
        check_ranges(name, dataclasses.asdict(getattr(cfg, name)))
    if cfg.model.bos_id >= cfg.model.vocab_size:
        raise ValueError(f"model.bos_id={cfg.model.bos_id}: expected an id below model.vocab_size="
                         f"{cfg.model.vocab_size}")
    if cfg.model.vocab_size != cfg.data.vocab_size and not cfg.data.data_dir:
        raise ValueError(
            f"model.vocab_size={cfg.model.vocab_size} differs from data.vocab_size={cfg.data.vocab_size}, the "
            "vocabulary of the tokenizer trained for the default corpus; set both to the same value"
        )
    if cfg.eval.stride and cfg.eval.stride > cfg.eval_seq_len:
        raise ValueError(f"eval.stride={cfg.eval.stride} exceeds the eval context {cfg.eval_seq_len}")


def config_from_dict(d: Mapping[str, Mapping[str, Any]]) -> RunConfig:
    """Rebuild a RunConfig from RunConfig.to_dict() output (e.g. read back from run.json)."""
    return build_config([("run.json", d)])


def load_run_config(path: str | Path) -> RunConfig:
    return config_from_dict(json.loads(Path(path).read_text())["config"])
