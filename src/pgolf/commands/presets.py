"""`pgolf presets [NAME]`: every configuration field with its type and default, or what one preset sets against
the defaults, with the preset file's comments saying why."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from pgolf.config import SECTIONS, RunConfig, load_preset, preset_names


def describe_preset(name: str) -> str:
    """What preset `name` sets against the defaults, with the preset file's comments saying why."""
    import re
    from importlib import resources

    sets = load_preset(name)  # validates the name (one-line error listing the presets)
    text = resources.files("pgolf").joinpath("presets", f"{name}.toml").read_text()
    defaults = RunConfig().to_dict()
    header, notes, pending, section = [], {}, [], None
    for line in text.splitlines():
        stripped = line.strip()
        if section is None and stripped.startswith("#"):
            header.append(stripped.lstrip("#").strip())
        elif stripped.startswith("#"):
            pending.append(stripped.lstrip("#").strip())
        elif m := re.match(r"\[([\w.]+)\]", stripped):
            section, pending = m.group(1), []
        elif m := re.match(r"([\w.]+)\s*=\s*(.*?)(?:\s+#\s*(.*))?$", stripped):
            why = " ".join(pending + ([m.group(3)] if m.group(3) else []))
            notes[(section, m.group(1))], pending = why, []
    import textwrap

    def cli(v: Any) -> str:  # as an override is typed: true/false, plain strings, comma lists
        if isinstance(v, bool):
            return "true" if v else "false"
        return ",".join(map(cli, v)) if isinstance(v, (list, tuple)) else str(v)

    head = " ".join(header)
    head = head.split(":", 1)[1].strip() if head.startswith(name + ":") else head
    lines = textwrap.wrap(f"preset {name}: {head}", 116, subsequent_indent="  ")
    changed = 0
    for sec, fields in sets.items():
        lines.append(f"[{sec}]")
        for key, value in fields.items():
            default = defaults.get(sec, {}).get(key, "?")
            same = value == default or (isinstance(default, (list, tuple)) and list(default) == value)
            changed += not same
            why = notes.get((sec, key))
            lines.append(f"  --{sec}.{key} {cli(value)}" + ("  (= default)" if same else f"  (default {cli(default)})")
                         + (f"  # {why}" if why else ""))
    lines.append(f"{changed} fields differ from the defaults; every other field keeps its default "
                 "(`pgolf presets` lists them all).")
    return "\n".join(lines)


def cmd_presets(args: argparse.Namespace) -> int:
    import typing

    if getattr(args, "name", None):
        print(describe_preset(args.name))
        return 0
    print("presets: " + ", ".join(preset_names()))
    for section, cls in SECTIONS.items():
        hints = typing.get_type_hints(cls)
        print(f"[{section}]")
        for f in dataclasses.fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore
            hint = hints[f.name]
            if typing.get_origin(hint) is typing.Literal:
                tp = "|".join(map(str, typing.get_args(hint)))
            else:
                tp = getattr(hint, "__name__", str(hint)).replace("typing.", "")
            print(f"  --{section}.{f.name} ({tp}, default {default!r})")
    return 0
