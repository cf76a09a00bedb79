"""Run-record accessors shared by the report and its plots, and the atomic writer for their files.

    dotted_get(run, "config.train.seed")   → run["config"]["train"]["seed"] (or the default on the way)
    run_name(run), run_recipe(run)         → the run's name, its quantization recipe
    save_atomic(path, lambda f: ...)       → path, written to a temporary name and renamed

Its own module so that `report` (tables, report.md) and `plots` (the PNGs `report` embeds) both import it and
neither imports the other at module level.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable

BLOCK = re.compile(r"^blocks\.(\d+)\.(.+?)(\.weight)?$")  # a per-layer tensor name: (layer, kind, .weight)


def dotted_get(d: Any, dotted: str, default: Any = None) -> Any:
    """d["a"]["b"] for "a.b"; `default` when a key is missing or None on the way."""
    for key in dotted.split("."):
        if not isinstance(d, dict) or key not in d or d[key] is None:
            return default
        d = d[key]
    return d


def run_name(run: dict) -> str:
    return dotted_get(run, "config.run.name") or Path(run.get("_path", "run/run.json")).parent.name or "run"


def run_recipe(run: dict) -> str:
    return dotted_get(run, "quant.recipe") or dotted_get(run, "config.quant.recipe") or "?"


def bits_label(row: dict) -> str:
    """A quantize-report tensor row's stored type: "fp<bits>" for a passthrough tensor, else "int<bits>"."""
    return f"{'fp' if row.get('method') == 'passthrough' else 'int'}{row.get('bits', '?')}"


def save_atomic(path: Path, write: Callable[[Any], None], mode: str = "wb") -> Path:
    """Call write(f) on a temporary file next to `path`, then rename it over `path` (nothing half-written)."""
    from pgolf.io import atomic_write

    if "b" in mode:
        return atomic_write(path, write)
    return atomic_write(path, lambda f: write(_Text(f)))


class _Text:
    """Text view of a binary file for `save_atomic(..., mode="w")` writers: str is written as UTF-8."""

    def __init__(self, f: Any) -> None:
        self._f = f

    def write(self, s: str) -> int:
        return self._f.write(s.encode("utf-8"))
