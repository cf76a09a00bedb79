"""`pgolf seeds`: the same configuration under several `train.seed` values, then a per-seed table with mean ± std.

    pgolf seeds 42,1337,2024 --preset cpu-smoke --run.name exp [--section.field VALUE ...]
    pgolf seeds 3 ...                           # a bare count N: the records' seeds 42, 1337, 2024, then 0, 1, 2, …
    pgolf seeds 3 --nproc-per-node 8 ...        # one `torchrun --standalone --nproc_per_node 8 -m pgolf.cli run`
    pgolf seeds 3 --dry-run ...                 # print the per-seed commands only

Every seed is a normal `pgolf run` (the same `cmd_run` → `run_pipeline`) into `<out_dir>/<name>-s<seed>`; on CPU
they run one after another in this process, with `--nproc-per-node K` each is a `torchrun` subprocess. Then every
run.json is read back, the table (`report.seeds_table`) is printed and `<out_dir>/<name>-seeds.json` is written:
the seeds, the run directories, per-seed figures and mean / sample std (ddof=1) of each. Records report 3 seeds,
mostly 42, 1337 and 2024 (docs/techniques.md#rules).

    python -m pytest tests/experiments/test_seeds_submit.py -q
"""

from __future__ import annotations

import argparse
import itertools
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from pgolf.experiments.report import dotted_get
from pgolf.experiments.runs import SEEDS_FORMAT, SEEDS_SUFFIX, expand_runs, read_record  # noqa: F401 (expand_runs: re-exported)

RECORD_SEEDS = (42, 1337, 2024)
"""The seeds most record submissions report (e.g. R0325, R0414)."""

FIELDS: tuple[tuple[str, str], ...] = (
    ("steps", "train.steps"), ("prequant_val_bpb", "prequant.val_bpb"), ("val_bpb", "roundtrip.val_bpb"),
    ("val_loss", "roundtrip.val_loss"), ("bytes_total", "bytes.total"), ("model_bytes", "bytes.model_bytes"),
    ("code_bytes", "bytes.code_bytes"), ("train_seconds", "train.train_seconds"),
    ("eval_seconds", "roundtrip.seconds"),
)
"""seeds.json per-seed fields ← run.json dotted paths (val_* are the round-trip score; val_loss in nats/token)."""


def parse_seeds(spec: str) -> list[int]:
    """"42,1337,2024" → those seeds; a bare count "N" → the first N of 42, 1337, 2024, 0, 1, 2, … ("7," is seed 7)."""
    text = spec.strip()
    try:
        if "," not in text:
            n = int(text)
            if n < 1:
                raise ValueError
            pool = itertools.chain(RECORD_SEEDS, (i for i in itertools.count() if i not in RECORD_SEEDS))
            return list(itertools.islice(pool, n))
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"seeds {spec!r}: expected a count N ≥ 1 or comma-separated integers such as 42,1337,2024 "
                         "(write '7,' for the single seed 7)") from None
    if not seeds or any(s < 0 for s in seeds):
        raise ValueError(f"seeds {spec!r}: need at least one seed, each ≥ 0")
    dups = sorted({s for s in seeds if seeds.count(s) > 1})
    if dups:
        raise ValueError(f"seeds {spec!r}: seed(s) {dups} repeated")
    return seeds


def seed_overrides(extra: Sequence[str], seed: int, name: str) -> list[str]:
    """The user's dotted overrides with train.seed and run.name set for one seed (as `--key=value` tokens)."""
    from pgolf.overrides import split_overrides

    pairs = split_overrides(extra)
    for key, _ in pairs:
        if key == "train.seed":
            raise ValueError("--train.seed is set per run by `pgolf seeds`; give the seeds as its first argument")
    kept = [f"--{k}={v}" for k, v in pairs if k != "run.name"]
    return [*kept, f"--train.seed={seed}", f"--run.name={name}"]


def config_flags(args: argparse.Namespace) -> list[str]:
    flags = ["--preset", args.preset]
    if args.config:
        flags += ["--config", args.config]
    if args.from_env:
        flags.append("--from-env")
    return flags


def seed_command(args: argparse.Namespace, run_extra: list[str], nproc: int | None) -> list[str]:
    """The argv of one seed's run: `pgolf run ...` or `torchrun --standalone --nproc_per_node K -m pgolf.cli run ...`."""
    tail = ["run", *config_flags(args), *run_extra]
    if nproc is None:
        return ["pgolf", *tail]
    beside = Path(sys.executable).with_name("torchrun")  # the venv's torchrun even when the venv is not activated
    found = str(beside) if beside.is_file() else shutil.which("torchrun")
    launcher = [found] if found else [sys.executable, "-m", "torch.distributed.run"]
    return [*launcher, "--standalone", f"--nproc_per_node={nproc}", "-m", "pgolf.cli", *tail]



def summarize_runs(runs: Sequence[dict]) -> dict[str, Any]:
    """Per-seed figures and {field: {mean, std}} over the runs (std = sample std, ddof=1; null for one run)."""
    import math

    from pgolf.experiments.stats import summarize

    rows = []
    for r in runs:
        row = {"seed": dotted_get(r, "config.train.seed"), "run_dir": str(Path(r["_path"]).parent)}
        row.update({k: dotted_get(r, path) for k, path in FIELDS})
        rows.append(row)
    stats: dict[str, dict[str, float | None]] = {}
    for k, _ in FIELDS:
        vals = [float(row[k]) for row in rows if row[k] is not None]
        if vals:
            m, s = summarize(vals)
            stats[k] = {"mean": m, "std": None if math.isnan(s) else s}
    return {"runs": rows, "summary": stats}


def cmd_seeds(args: argparse.Namespace, extra: Sequence[str]) -> int:
    from pgolf.experiments.report import load_runs, seeds_table
    from pgolf.overrides import resolve_config
    from pgolf.submission import run_configured
    from pgolf.io import atomic_write_json
    from pgolf.run import RUN_RECORD

    seeds = parse_seeds(args.seeds)
    cfg, _ = resolve_config(args.preset, extra, config_file=args.config, from_env=args.from_env)  # validated up front
    base = cfg.run.name or f"{args.preset}-{time.strftime('%Y%m%d-%H%M%S')}"
    out_dir = Path(cfg.run.out_dir)
    nproc = args.nproc_per_node
    if nproc is not None and nproc < 1:
        raise ValueError(f"--nproc-per-node {nproc}: must be ≥ 1")
    plan = [(s, f"{base}-s{s}", seed_overrides(extra, s, f"{base}-s{s}")) for s in seeds]
    if args.dry_run:
        for _, _, run_extra in plan:
            print(shlex.join(seed_command(args, run_extra, nproc)))
        return 0
    run_dirs = []
    for i, (seed, name, run_extra) in enumerate(plan):
        run_dir = out_dir / name
        run_dirs.append(run_dir)
        if args.skip_existing and dotted_get(read_record(run_dir / RUN_RECORD), "roundtrip.val_bpb") is not None:
            print(f"seeds: seed {seed} ({i + 1}/{len(plan)}) already done in {run_dir}; skipped", flush=True)
            continue
        print(f"seeds: seed {seed} ({i + 1}/{len(plan)}) → {run_dir}", flush=True)
        if nproc is None:
            run_cfg, notes = resolve_config(args.preset, run_extra, config_file=args.config, from_env=args.from_env)
            rc = run_configured(run_cfg, args.preset, notes=notes)
        else:
            argv = seed_command(args, run_extra, nproc)
            print("seeds: " + shlex.join(argv), flush=True)
            rc = subprocess.run(argv).returncode
        if rc != 0:
            raise RuntimeError(f"seed {seed} failed (exit status {rc}); finished runs stay in {out_dir}")
    runs = load_runs(run_dirs)
    missing = [str(d) for d, r in zip(run_dirs, runs) if dotted_get(r, "roundtrip.val_bpb") is None]
    if missing:
        raise ValueError(f"no round-trip score in {', '.join(missing)}")
    print(seeds_table(runs), end="")
    record = {"format": SEEDS_FORMAT, "name": base, "preset": args.preset, "seeds": seeds,
              "config_flags": config_flags(args), "overrides": list(extra),
              "nproc_per_node": nproc, **summarize_runs(runs)}
    path = out_dir / f"{base}{SEEDS_SUFFIX}"
    atomic_write_json(path, record)
    print(f"seeds.json: {path}  (next: pgolf submit {path} --name NAME)")
    return 0
