"""Command-line configuration overrides: `--section.field value` / `--section.field=value` tokens → pairs.

    split_overrides(["--train.seed", "7", "--eval.mode=sliding"])  # [("train.seed", "7"), ("eval.mode", "sliding")]

`pgolf.config.parse_overrides` turns the pairs into a typed config layer. Used by the CLI verbs, `pgolf seeds` and
the single-file script (`pgolf.submission`).
"""

from __future__ import annotations

from typing import Sequence


class UsageError(Exception):
    """Bad command-line input: printed as one line, exit status 2."""


def split_overrides(extra: Sequence[str]) -> list[tuple[str, str]]:
    pairs, i = [], 0
    while i < len(extra):
        tok = extra[i]
        if not tok.startswith("--") or len(tok) == 2:
            raise UsageError(f"unexpected argument {tok!r}; overrides look like --train.matrix_lr 0.026")
        key = tok[2:]
        if "=" in key:
            key, value = key.split("=", 1)
            i += 1
        else:
            if i + 1 >= len(extra):
                raise UsageError(f"override --{key} needs a value")
            value = extra[i + 1]
            i += 2
        pairs.append((key, value))
    return pairs


def resolve_config(preset: str, extra: Sequence[str], *, config_file: str | None = None,
                   from_env: bool = False, environ: dict[str, str] | None = None):
    """Preset → optional TOML file → optional records' environment variables → dotted overrides; → (RunConfig,
    notes about the environment variables read)."""
    import os

    from pgolf.config import build_config, load_preset, load_toml, parse_overrides
    from pgolf.record_env import env_layer

    layers: list[tuple[str, object]] = [(f"preset {preset}", load_preset(preset))]
    if config_file:
        layers.append((f"config file {config_file}", load_toml(config_file)))
    notes: list[str] = []
    if from_env:
        layer, notes = env_layer(os.environ if environ is None else environ)
        layers.append(("environment (--from-env)", layer))
    layers.append(("command-line overrides", parse_overrides(split_overrides(extra))))
    return build_config(layers), notes
