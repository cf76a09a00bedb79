"""RunConfig: the composition of the stage configs, with presets, TOML files, dotted overrides and `--from-env`.

Precedence (lowest to highest): dataclass defaults < preset (src/pgolf/presets/NAME.toml) < --config FILE <
record environment variables (--from-env) < dotted command-line overrides (`--train.matrix_lr 0.026`).
Every unknown section or field is an error that lists the valid names.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
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


def parse_value(tp: Any, raw: Any, key: str) -> Any:
    """Convert `raw` (a string, or an already-typed TOML/JSON value) to type `tp`; errors name the key."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        choices = typing.get_args(tp)
        if raw not in choices:
            raise ValueError(f"{key}={raw!r} is not one of {', '.join(map(repr, choices))}")
        return raw
    if origin is tuple:
        (inner, *_rest) = typing.get_args(tp)
        if isinstance(raw, str):
            items = [s for s in raw.replace(" ", "").split(",") if s]
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


# --------------------------------------------------------------------------------------------------------------
# Building a RunConfig

def merge(base: dict[str, dict[str, Any]], layer: Mapping[str, Mapping[str, Any]], where: str) -> None:
    """Merge `layer` into `base` in place, validating section and field names against the dataclasses."""
    for section, values in layer.items():
        if section not in SECTIONS:
            raise _unknown("section", section, list(SECTIONS), where)
        if not isinstance(values, Mapping):
            raise ValueError(f"[{section}] in {where} must be a table of fields, got {values!r}")
        types_ = _field_types(SECTIONS[section])
        for key, raw in values.items():
            if key not in types_:
                raise _unknown(f"{section} field", key, list(types_), where)
            base.setdefault(section, {})[key] = parse_value(types_[key], raw, f"{section}.{key}")


def parse_overrides(pairs: list[tuple[str, str]]) -> dict[str, dict[str, Any]]:
    """[("train.matrix_lr", "0.026")] → {"train": {"matrix_lr": "0.026"}} (types are applied by `merge`)."""
    out: dict[str, dict[str, Any]] = {}
    for dotted, value in pairs:
        if "." not in dotted:
            raise ValueError(f"override --{dotted} must look like --section.field (sections: {', '.join(SECTIONS)})")
        section, key = dotted.split(".", 1)
        out.setdefault(section, {})[key] = value
    return out


def build_config(layers: list[tuple[str, Mapping[str, Mapping[str, Any]]]]) -> RunConfig:
    """Apply (description, {section: {field: value}}) layers in order over the defaults and validate."""
    merged: dict[str, dict[str, Any]] = {}
    for where, layer in layers:
        merge(merged, layer, where)
    sections = {}
    for name, cls in SECTIONS.items():
        try:
            sections[name] = cls(**merged.get(name, {}))
        except ValueError as e:
            raise ValueError(f"invalid configuration: {e}") from None
    cfg = RunConfig(**sections)
    validate(cfg)
    return cfg


def validate(cfg: RunConfig) -> None:
    """Cross-section checks that a single stage config cannot make."""
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


# --------------------------------------------------------------------------------------------------------------
# Records' environment variables → fields (`pgolf run --from-env`), so a record's run command ports directly.

ENV_FIELDS: dict[str, str] = {
    # data
    "VOCAB_SIZE": "model.vocab_size",
    "DATA_PATH": "data.data_dir",
    "TOKENIZER_PATH": "data.tokenizer_path",
    # model
    "NUM_LAYERS": "model.num_layers",
    "MODEL_DIM": "model.model_dim",
    "NUM_HEADS": "model.num_heads",
    "NUM_KV_HEADS": "model.num_kv_heads",
    "MLP_MULT": "model.mlp_mult",
    "ROPE_BASE": "model.rope_base",
    "ROPE_DIMS": "model.rope_dims",
    "QK_GAIN_INIT": "model.qk_gain_init",
    "LOGIT_SOFTCAP": "model.logit_softcap",
    "TIE_EMBEDDINGS": "model.tie_embeddings",
    "TIED_EMBED_INIT_STD": "model.tied_embed_init_std",
    "XSA_LAST_N": "model.xsa_last_n",
    "BIGRAM_VOCAB_SIZE": "model.bigram_vocab_size",
    "BIGRAM_DIM": "model.bigram_dim",
    "VE_DIM": "model.ve_dim",
    "VE_LAYERS": "model.ve_layers",
    "NUM_LOOPS": "model.num_loops",
    "LOOP_START": "model.loop_start",
    "LOOP_END": "model.loop_end",
    "PARALLEL_START_LAYER": "model.parallel_start_layer",
    "SPARSE_ATTN_GATE_ENABLED": "model.sparse_attn_gate",
    "SPARSE_ATTN_GATE_SCALE": "model.sparse_attn_gate_scale",
    # train
    "SEED": "train.seed",
    "ITERATIONS": "train.iterations",
    "MAX_WALLCLOCK_SECONDS": "train.max_wallclock_seconds",
    "GPTQ_RESERVE_SECONDS": "train.calib_reserve_seconds",
    "TRAIN_BATCH_TOKENS": "train.train_batch_tokens",
    "TRAIN_SEQ_LEN": "train.train_seq_len",
    "MATRIX_LR": "train.matrix_lr",
    "MUON_MOMENTUM": "train.muon_momentum",
    "MUON_MOMENTUM_WARMUP_START": "train.muon_momentum_warmup_start",
    "MUON_MOMENTUM_WARMUP_STEPS": "train.muon_momentum_warmup_steps",
    "MUON_BACKEND_STEPS": "train.muon_backend_steps",
    "MUON_ROW_NORMALIZE": "train.muon_row_normalize",
    "MUON_WD": "train.muon_wd",
    "TIED_EMBED_LR": "train.tied_embed_lr",
    "EMBED_LR": "train.embed_lr",
    "HEAD_LR": "train.head_lr",
    "SCALAR_LR": "train.scalar_lr",
    "BETA1": "train.adam_beta1",
    "BETA2": "train.adam_beta2",
    "ADAM_EPS": "train.adam_eps",
    "ADAM_WD": "train.adam_wd",
    "EMBED_WD": "train.embed_wd",
    "GRAD_CLIP_NORM": "train.grad_clip_norm",
    "WARMDOWN_FRAC": "train.warmdown_frac",
    "MIN_LR": "train.min_lr",
    "EMA_DECAY": "train.ema_decay",
    "ENABLE_LOOPING_AT": "train.enable_looping_at",
    "VAL_LOSS_EVERY": "train.val_every",
    "TRAIN_LOG_EVERY": "train.log_every",
    # eval
    "EVAL_SEQ_LEN": "eval.seq_len",
    "EVAL_STRIDE": "eval.stride",
    # pack
    "COMPRESSOR": "pack.codec",
}

# Record variables whose meaning pgolf expresses differently: named so `--from-env` can say what to do instead.
ENV_UNSUPPORTED: dict[str, str] = {
    "WARMDOWN_ITERS": "use train.warmdown_frac (pgolf's schedule is a fraction of the wallclock budget, §4.3)",
    "WARMUP_STEPS": "compile warm-up steps are not replayed by pgolf; nothing to set",
    "RUN_ID": "use run.name",
}


def env_layer(environ: Mapping[str, str]) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Translate the records' hyperparameter environment variables into a config layer.

    Returns the layer and notes about record variables that were seen but have no pgolf equivalent."""
    out: dict[str, dict[str, Any]] = {}
    for var, dotted in ENV_FIELDS.items():
        if var in environ:
            section, key = dotted.split(".")
            value: Any = environ[var]
            if var == "COMPRESSOR" and value == "pergroup":
                raise ValueError("COMPRESSOR=pergroup (R0427's lrzip per-group mode) is not supported; use brotli")
            out.setdefault(section, {})[key] = value
    notes = [f"ignored {var}={environ[var]}: {advice}" for var, advice in ENV_UNSUPPORTED.items() if var in environ]
    if "VOCAB_SIZE" in environ:
        out.setdefault("data", {})["vocab_size"] = environ["VOCAB_SIZE"]
    return out, notes
