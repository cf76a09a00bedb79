"""RunConfig: the composition of the stage configs, with presets, TOML files, dotted overrides and `--from-env`.

Precedence (lowest to highest): dataclass defaults < preset (src/pgolf/presets/NAME.toml) < --config FILE <
record environment variables (--from-env) < dotted command-line overrides (`--train.matrix_lr 0.026`).
Every unknown section or field is an error that lists the valid names. Values are typed strictly: command-line and
environment values are text (`Text`) parsed to the field's type; TOML/JSON values must already have it (a bool is
not a number, a number is not a string, an int is accepted for a float). Every numeric field must be finite and
within its range in `FIELD_RANGES` (positive counts, probabilities in [0, 1], non-negative rates); each violation is
one line naming the field, its value and the expected range. The parsing and the ranges live in pgolf.fields (the
artifact validator reads a manifest's model config with them too).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import sys
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from pgolf.data.config import DataConfig
from pgolf.eval.config import EvalConfig
from pgolf.fields import FIELD_RANGES, Text, check_ranges, json_kind, parse_value  # noqa: F401 (re-exported)
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


# --------------------------------------------------------------------------------------------------------------
# Building a RunConfig

def merge(base: dict[str, dict[str, Any]], layer: Mapping[str, Mapping[str, Any]], where: str) -> None:
    """Merge `layer` into `base` in place, validating section and field names against the dataclasses."""
    if not isinstance(layer, Mapping):
        raise ValueError(f"{where} must be a table of sections, got {json_kind(layer)}")
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


def config_from_manifest(manifest: Mapping[str, Any]) -> RunConfig:
    """An artifact manifest's "config" → RunConfig (for eval / check-legal), its errors as ArtifactError."""
    from pgolf.pack.format import ArtifactError, short

    d = manifest.get("config")
    if not isinstance(d, dict):
        raise ArtifactError(f"manifest field 'config' is {short(d)}, expected the run configuration object")
    try:
        return config_from_dict(d)
    except (ValueError, TypeError) as e:
        raise ArtifactError(f"manifest run configuration is invalid: {e}") from None


def load_run_config(path: str | Path) -> RunConfig:
    return config_from_dict(json.loads(Path(path).read_text())["config"])


def _typed(tp: str, raw: str):
    """A command-line value parsed by its field's annotation (bool, int, float, tuple[T, ...]; anything else is a
    str): the script has no ranges or Literal choices to check it against."""
    if tp == "bool":
        return {"true": True, "1": True, "yes": True, "on": True, "false": False, "0": False, "no": False,
                "off": False}[raw.lower()]
    if tp.startswith("tuple["):
        return tuple(_typed(tp[6:].split(",")[0], x) for x in raw.split(",") if x)
    return int(raw) if tp == "int" else float(raw) if tp == "float" else raw


def baked_config(baked: Mapping[str, Mapping[str, Any]], args: Sequence[str],
                 live: Sequence[tuple[str, str]] | None = None) -> RunConfig:
    """The single-file script's configuration (`pgolf.submission.BAKED`, {section: {field: value}}) with
    `--section.field VALUE` / `--section.field=VALUE` overrides applied (`_typed`), as a RunConfig; with `live`,
    only those (section, field) pairs may be overridden (the script's code has the others folded in). Here, not in
    submission.py, so the bundler can check a baked configuration without importing the script's entry."""
    d = {s: dict(v) for s, v in baked.items()}
    i = 0
    while i < len(args):
        key, eq, value = args[i][2:].partition("=")
        if not eq:
            i += 1
            value = args[i]
        i += 1
        section, name = key.split(".", 1)
        tp = {f.name: f.type for f in dataclasses.fields(SECTIONS[section])}[name]
        typed = _typed(tp if isinstance(tp, str) else getattr(tp, "__name__", str(tp)), value)
        if live is not None and (section, name) not in live and typed != d[section].get(
                name, getattr(SECTIONS[section](), name)):
            raise NotImplementedError(f"--{key} {value}: this script has {section}.{name} baked in (its code may "
                                      f"be folded for that value); rebuild it with `pgolf bundle ... --{key} {value}`")
        d[section][name] = typed
    return RunConfig(**{s: SECTIONS[s](**v) for s, v in d.items()})
