"""The entry of the single-file `train_gpt.py`: run one configuration end to end, nothing else.

    python train_gpt.py [run] [--preset NAME] [--section.field VALUE ...]      # as `pgolf run`

`pgolf bundle` / `pgolf submit` embed this module and what it reaches for the configured run (the closure rules are
in pgolf.experiments.closure): training, the model switches, the recipe's quantizers, the codec, the eval mode. The
CLI verbs, reports, statistics and data preparation are not in it, so `pgolf run` and the script share
`run_configured` and produce the same artifact and score for the same configuration. Without --preset it runs cpu-demo,
as `pgolf run` does (the commands `pgolf submit` writes always name the preset).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Sequence

DEFAULT_PRESET = "cpu-demo"


def run_configured(cfg, preset: str, *, resume: bool = False, train_only: bool = False,
                   notes: Sequence[str] = ()) -> int:
    """data → train → quantize → pack → round-trip score into run.out_dir/run.name (train_only: data →
    train)."""
    from pgolf.log import RunLogger
    from pgolf.io import atomic_write_json
    from pgolf.run import RUN_RECORD, data_stage, environment_info, run_pipeline, train_stage
    from pgolf.train.distributed import broadcast_object, init_distributed, shutdown_distributed

    dist_info = init_distributed(cfg.train.device)
    run_dir = Path(cfg.run.out_dir) / broadcast_object(cfg.run.name or f"{preset}-{time.strftime('%Y%m%d-%H%M%S')}")
    run_dir.mkdir(parents=True, exist_ok=True)
    logger = RunLogger(run_dir / "train.log", enabled=dist_info.is_main, progress=cfg.run.progress)
    try:
        for note in notes:
            logger.event("from_env", note=note)
        logger.event("config", preset=preset, run_dir=str(run_dir), device=str(dist_info.device),
                     world_size=dist_info.world_size)
        logger.line(json.dumps(cfg.to_dict(), sort_keys=True), console=False)
        if not train_only:
            run_pipeline(cfg, run_dir, dist_info, logger, resume=resume, preset=preset)
        else:
            data = data_stage(cfg, dist_info, logger)
            model, result = train_stage(cfg, data, run_dir, dist_info, logger, resume=resume)
            if dist_info.is_main:
                atomic_write_json(run_dir / RUN_RECORD, {
                    "format": "pgolf-run-v1", "preset": preset, "config": cfg.to_dict(),
                    "env": environment_info(), "params": model.parameter_counts(), "train": result.to_dict(),
                })
                logger.line(f"checkpoint: {run_dir / 'checkpoint.pt'}  (next: pgolf quantize {run_dir})")
    finally:
        logger.close()
        shutdown_distributed()
    return 0


def main(argv: Sequence[str] | None = None, default_preset: str = DEFAULT_PRESET) -> int:
    from pgolf.config import build_config, load_preset, parse_overrides
    from pgolf.overrides import UsageError, split_overrides

    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["run"]:
        args = args[1:]
    preset = default_preset
    try:
        if "--preset" in args:
            i = args.index("--preset")
            if i + 1 >= len(args):
                raise UsageError("--preset needs a name")
            preset = args.pop(i + 1)
            args.pop(i)
        cfg = build_config([(f"preset {preset}", load_preset(preset)),
                            ("command-line overrides", parse_overrides(split_overrides(args)))])
        return run_configured(cfg, preset)
    except (UsageError, ValueError, OSError) as e:
        print(f"train_gpt.py: error: {e}", file=sys.stderr)
        return 2


BAKED: dict | None = None
"""The single-file script's configuration, {section: {field: value}} (`pgolf.experiments.cfgfold.baked_submission`
sets it and makes `baked_main` the script's `main`); None in the package."""
LIVE_FIELDS: tuple | None = None
"""The (section, field) pairs the script's command line may override (`pgolf.experiments.cfgfold.LIVE_FIELDS`); the
others are folded into its code. None in the package."""


def baked_main(argv: Sequence[str] | None = None, default_preset: str = DEFAULT_PRESET) -> int:
    """`main` of the single-file script: the baked configuration plus overrides; --preset only names the run (its
    run directory and run.json's "preset"), the configuration is the baked one whatever it says."""
    from pgolf.config import baked_config

    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["run"]:
        args = args[1:]
    preset = default_preset
    if "--preset" in args:
        i = args.index("--preset")
        preset = args.pop(i + 1)
        args.pop(i)
    try:
        cfg = baked_config(BAKED, args, LIVE_FIELDS)
    except (ValueError, KeyError, IndexError, NotImplementedError) as e:
        print(f"train_gpt.py: error: bad override ({e!r})", file=sys.stderr)
        return 2
    return run_configured(cfg, preset)
