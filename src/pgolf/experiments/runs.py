"""Run sets for the experiment verbs: run specs (dirs, run.json files, globs, seeds.json) and one side of a comparison.

    expand("runs/a-s*,runs/b")          # → ["runs/a-s42", "runs/a-s1337", "runs/b"]
    side("B", "runs/base-seeds.json", None)   # → (nats, bpb, description, tokens per byte)
"""

from __future__ import annotations

import glob
import json
from pathlib import Path
from typing import Sequence

SEEDS_SUFFIX = "-seeds.json"  # `pgolf seeds` writes <out_dir>/<name>-seeds.json
SEEDS_FORMAT = "pgolf-seeds-v1"


def expand(spec: str) -> list[str]:
    out: list[str] = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        if any(ch in item for ch in "*?["):
            hits = sorted(glob.glob(item))
            if not hits:
                raise FileNotFoundError(f"{item}: glob matched nothing")
            out += hits
        else:
            out.append(item)
    return out


def literal_values(spec: str, flag: str) -> list[float]:
    try:
        return [float(s) for s in spec.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"{flag}: expected comma-separated numbers, got {spec!r}") from None


def side(label: str, spec: str | None,
          values: str | None) -> tuple[list[float], list[float] | None, str, float | None]:
    """→ (nats values, bpb values or None, description, tokens/byte or None) for one side of the comparison."""
    if (spec is None) == (values is None):
        raise ValueError(f"give exactly one of the positional {label} or --{label.lower()}-values")
    if values is not None:
        nats = literal_values(values, f"--{label.lower()}-values")
        return nats, None, f"{len(nats)} literal values", None
    from pgolf.experiments.report import load_runs, run_name
    from pgolf.experiments.stats import tokens_per_byte

    runs = load_runs(expand_runs([spec]))
    missing = [r["_path"] for r in runs if (r.get("roundtrip") or {}).get("val_loss") is None]
    if missing:
        raise ValueError(f"no round-trip score in {', '.join(missing)} (train-only or unfinished run?)")
    nats = [float(r["roundtrip"]["val_loss"]) for r in runs]
    bpb = [float(r["roundtrip"]["val_bpb"]) for r in runs]
    return nats, bpb, f"{len(runs)} runs: " + ", ".join(run_name(r) for r in runs), tokens_per_byte(runs[0])


def read_record(path: Path) -> dict | None:
    """A run.json / seeds.json as a dict, None if it is missing or not JSON."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def seeds_file_runs(path: str | Path) -> list[str]:
    """The run directories a `<name>-seeds.json` lists."""
    rec = read_record(Path(path))
    if not isinstance(rec, dict) or rec.get("format") != SEEDS_FORMAT:
        raise ValueError(f"{path}: not a pgolf seeds.json (format {SEEDS_FORMAT})")
    return [r["run_dir"] for r in rec["runs"]]


def expand_runs(specs: Sequence[str]) -> list[str]:
    """Comma-separated run dirs / run.json files / globs / `<name>-seeds.json` files → run paths, each once."""
    out: list[str] = []
    for spec in specs:
        for item in expand(spec):
            if item.endswith(SEEDS_SUFFIX) and Path(item).is_file():
                out += seeds_file_runs(item)
            else:
                out.append(item)
    seen: set[str] = set()
    return [p for p in out if not (str(Path(p).resolve()) in seen or seen.add(str(Path(p).resolve())))]
