"""Reports over run records (RUN_DIR/run.json): a per-seed markdown table, three PNG plots and a report.md.

    load_runs(["runs/a", "runs/b/run.json"])    → list of run.json dicts (each with "_path")
    seeds_table(runs)                            → markdown: one row per run + mean and std rows
    write_report("runs/a", out_dir=None)         → [training.png, score_vs_bytes.png, quant_tensors.png, report.md]

Plots (pgolf.experiments.plots): (a) the loss of every training step and the LR multiplier against the step;
(b) val_bpb against artifact bytes, one point per run coloured by recipe (round trip filled, pre-quant hollow),
omitted for a single run; (c) per-tensor stored bits and quantization MSE relative to the median tensor (heat map
layers × tensor kind when names look like `blocks.N.…`, else a bar chart). The report describes the artifact in
the run directory: after `pgolf quantize RUN`, RUN/model.quant.json (`with_current_artifact`). Every file is
written to a temporary name and renamed.

    python -m pytest tests/experiments/test_report.py -q
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable, Sequence

from pgolf.experiments.records import bits_label, dotted_get, run_name, run_recipe, save_atomic
from pgolf.experiments.stats import RECORD_MARGIN_NATS, nats_to_bpb, summarize, tokens_per_byte

RUN_RECORD = "run.json"
ARTIFACT = "model.pgolf"
REPORT_DIR = "report"


# ------------------------------------------------------------------------------------------------ loading

def load_runs(paths: Sequence[str | Path]) -> list[dict]:
    """Run directories or run.json files → their records; each gets "_path" (the run.json it came from)."""
    runs = []
    for p in map(Path, paths):
        f = p / RUN_RECORD if p.is_dir() else p
        if not f.is_file():
            raise FileNotFoundError(f"{p}: no {RUN_RECORD} there (expected a run directory or its {RUN_RECORD}; "
                                    "a train-only run writes it too, a crashed run may not)")
        try:
            rec = json.loads(f.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{f}: not valid JSON ({e})") from None
        if not isinstance(rec, dict):
            raise ValueError(f"{f}: expected a JSON object")
        rec["_path"] = str(f)
        runs.append(rec)
    if not runs:
        raise ValueError("no runs given")
    return runs


def quantize_reports(run: dict) -> list[tuple[Path, Path, dict]]:
    """(artifact, report path, report) for every `pgolf quantize` output in the run's directory (ARTIFACT.quant.json
    beside an existing ARTIFACT.pgolf, e.g. model.sdclip-rtn.rans-ctx.pgolf), oldest first."""
    d = Path(run["_path"]).parent
    out = []
    for rep in d.glob("*.quant.json"):
        art = rep.with_name(rep.name[: -len(".quant.json")] + ".pgolf")
        if art.is_file():
            try:
                out.append((art, rep, json.loads(rep.read_text())))
            except (OSError, ValueError):
                continue
    return sorted(out, key=lambda t: t[1].stat().st_mtime)


def _overlay(run: dict, art: Path, rep: Path, q: dict) -> dict:
    """The run with the quantization, bytes, codec and (if scored on the run's data) round trip of `q`."""
    run = {**run, "quant": {k: q.get(k) for k in ("recipe", "seconds", "calibration", "fit", "tensors")},
           "bytes": q.get("bytes")}
    run["config"] = {**run.get("config", {}), "pack": {**dotted_get(run, "config.pack", {}), "codec": q.get("codec")}}
    data_dir = dotted_get(run, "config.data.data_dir", "") or ""
    ev = next((e for e in q.get("eval") or [] if (e.get("data_dir") or "") == data_dir), None)
    pre = dotted_get(run, "prequant.val_bpb")
    run["roundtrip"], run["quant_gap_bpb"] = None, None
    if ev:
        run["roundtrip"] = {"val_bpb": ev["val_bpb"], "val_loss": ev["val_loss"], "num_tokens": ev.get("tokens"),
                            "num_bytes": ev.get("bytes"), "mode": ev.get("mode")}
        run["quant_gap_bpb"] = ev["val_bpb"] - pre if pre is not None else None
    run["_artifact"] = (f"`{art.name}`, written by `pgolf quantize` after the run (`{rep.name}`: recipe "
                        f"{q.get('recipe')}, codec {q.get('codec')}); round trip "
                        + ("scored by `pgolf quantize --eval`" if ev else "not scored (add --eval)"))
    return run


def with_current_artifact(run: dict) -> dict:
    """The run as its directory's newest artifact stands: when `pgolf quantize RUN` wrote an artifact after the run
    (ARTIFACT.quant.json newer than run.json), that report supplies the quantization, the bytes and, when it was
    scored with --eval on the run's data, the round trip (else none: the run's score described another artifact).
    "_artifact" says which artifact the report shows; a run's model.pgolf whose size disagrees is flagged."""
    newer = [t for t in quantize_reports(run) if t[1].stat().st_mtime >= Path(run["_path"]).stat().st_mtime]
    if newer:
        return _overlay(run, *newer[-1])
    run = {**run, "_artifact": f"`{ARTIFACT}` as written by the run"}
    art = Path(run["_path"]).parent / ARTIFACT
    size = art.stat().st_size if art.is_file() else None
    if size is not None and dotted_get(run, "bytes.model_bytes") not in (None, size):
        run["_artifact"] += (f"; **warning**: {ARTIFACT} is {size:,} bytes, the record says "
                             f"{run['bytes']['model_bytes']:,}: the artifact was replaced without a report")
    return run


def artifact_variants(run: dict) -> list[dict]:
    """Run-shaped records of the run's re-quantized artifacts scored on its data (the recipes it was compared
    with), named "<run> <artifact>": extra points for the score-vs-bytes plot."""
    out = []
    for art, rep, q in quantize_reports(run):
        v = _overlay(run, art, rep, q)
        if v["roundtrip"] is not None and dotted_get(v, "bytes.total"):
            v["config"] = {**v["config"], "run": {**dotted_get(v, "config.run", {}),
                                                  "name": f"{run_name(run)} {art.stem}"}}
            out.append(v)
    return out


# ------------------------------------------------------------------------------------------------ seeds table

_COLUMNS: list[tuple[str, Callable[[dict], Any], str]] = [
    ("seed", lambda r: dotted_get(r, "config.train.seed"), "d"),
    ("steps", lambda r: dotted_get(r, "train.steps"), "d"),
    ("pre-quant val_bpb", lambda r: dotted_get(r, "prequant.val_bpb"), ".8f"),
    ("round-trip val_bpb", lambda r: dotted_get(r, "roundtrip.val_bpb"), ".8f"),
    ("val_loss (nats)", lambda r: dotted_get(r, "roundtrip.val_loss"), ".8f"),
    ("artifact bytes", lambda r: dotted_get(r, "bytes.total"), ",d"),
    ("train s", lambda r: dotted_get(r, "train.train_seconds"), ".1f"),
    ("eval s", lambda r: dotted_get(r, "roundtrip.seconds"), ".1f"),
]


def _fmt(v: Any, spec: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    if spec.endswith("d") and isinstance(v, float) and not v.is_integer():
        return f"{v:,.1f}" if "," in spec else f"{v:.1f}"
    return format(int(v) if spec.endswith("d") else float(v), spec)


def seeds_table(runs: Sequence[dict]) -> str:
    """Markdown table: one row per run (round-trip numbers are the score), then mean and sample-std rows."""
    head = ["run"] + [c[0] for c in _COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * len(_COLUMNS)) + "|"]
    cols = [[get(r) for r in runs] for _, get, _ in _COLUMNS]
    for i, r in enumerate(runs):
        lines.append("| " + " | ".join([run_name(r)] + [_fmt(c[i], spec) for c, (_, _, spec) in zip(cols, _COLUMNS)])
                     + " |")
    for label, idx in (("mean", 0), ("std", 1)):
        cells = []
        for c, (name, _, spec) in zip(cols, _COLUMNS):
            vals = [float(v) for v in c if v is not None]
            cells.append("" if name == "seed" or not vals else _fmt(summarize(vals)[idx], spec.replace("d", ".1f")
                                                                     if spec.endswith("d") else spec))
        lines.append(f"| **{label}** (n={len(runs)}) | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------ report.md

def _quant_summary(run: dict) -> list[str]:
    rows = dotted_get(run, "quant.tensors") or []
    if not rows:
        return []
    q = [r for r in rows if r.get("method") != "passthrough"]
    n_all = sum(r["numel"] for r in rows)
    avg_bits = sum(r["bits"] * r["numel"] for r in rows) / max(n_all, 1)
    worst = sorted(q, key=lambda r: -(r.get("mse") or 0))[:5]
    out = [f"- {len(q)} quantized tensors ({sum(r['numel'] for r in q):,} values), {len(rows) - len(q)} passthrough "
           f"({n_all - sum(r['numel'] for r in q):,} values); {avg_bits:.2f} stored bits per value before entropy "
           f"coding; quantize {dotted_get(run, 'quant.seconds', math.nan):.2f} s"]
    if worst:
        out.append("- largest MSE: " + ", ".join(f"`{r['name']}` {bits_label(r)} {r['mse']:.2e}" for r in worst))
    return out


def _markdown(runs: Sequence[dict], images: dict[str, Path | None]) -> str:
    r = runs[0]
    g = lambda k, d=None: dotted_get(r, k, d)  # noqa: E731
    L = [f"# Run report: {run_name(r)}", "", f"Record: `{r.get('_path')}` (preset {g('preset', '—')}); artifact: "
         f"{r.get('_artifact', '—')}.", ""]
    L += ["## Score", "", "| | val_bpb | val_loss (nats/token) | tokens | bytes | mode | eval s |",
          "|---|---:|---:|---:|---:|---|---:|"]
    for label, key in (("pre-quant", "prequant"), ("**round trip (the score)**", "roundtrip")):
        ev = g(key) or {}
        L.append(f"| {label} | {_fmt(ev.get('val_bpb'), '.8f')} | {_fmt(ev.get('val_loss'), '.8f')} | "
                 f"{_fmt(ev.get('num_tokens'), ',d')} | {_fmt(ev.get('num_bytes'), ',d')} | {ev.get('mode', '—')} | "
                 f"{_fmt(ev.get('seconds'), '.1f')} |")
    L.append("")
    if g("quant_gap_bpb") is not None:
        L.append(f"- quantization gap (round trip − pre-quant): {g('quant_gap_bpb'):+.6f} bpb")
    try:
        tpb = tokens_per_byte(r)
        L.append(f"- tokens per byte {tpb:.5f}: the record margin {RECORD_MARGIN_NATS} nats = "
                 f"{nats_to_bpb(RECORD_MARGIN_NATS, tpb):.5f} bpb for this tokenizer")
    except ValueError:
        pass
    b = g("bytes") or {}
    if b:
        fits = "fits" if b.get("fits", True) else "**OVER the limit**"
        L += ["", "## Bytes", "", f"model {_fmt(b.get('model_bytes'), ',d')} + code {_fmt(b.get('code_bytes'), ',d')}"
              f" = **{_fmt(b.get('total'), ',d')}** / {_fmt(b.get('limit'), ',d')} bytes "
              f"(headroom {_fmt(b.get('headroom'), ',d')}; {fits})"]
    steps, secs = g("train.steps"), g("train.train_seconds")
    step_ms = f"{1000 * secs / steps:.1f} ms/step" if steps and secs else "—"
    L += ["", "## Timings", "", f"- train {_fmt(secs, '.1f')} s, {_fmt(steps, 'd')} steps ({step_ms}), stopped by "
          f"{g('train.stopped_by', '—')}, {_fmt(g('train.tokens_seen'), ',d')} tokens",
          f"- quantize + pack {_fmt(g('quant.seconds'), '.2f')} s; eval pre-quant {_fmt(g('prequant.seconds'), '.1f')}"
          f" s, round trip {_fmt(g('roundtrip.seconds'), '.1f')} s; wall {_fmt(g('wall_seconds'), '.1f')} s"]
    m, t = g("config.model", {}), g("config.train", {})
    L += ["", "## Configuration highlights", "",
          f"- model: {m.get('num_layers')} layers × {m.get('model_dim')} dim, {m.get('num_heads')} heads "
          f"({m.get('num_kv_heads')} kv), mlp_mult {m.get('mlp_mult')}, vocab {m.get('vocab_size')}, "
          f"tied embeddings {m.get('tie_embeddings')}; params {_fmt(g('params.total'), ',d')}",
          f"- train: seed {t.get('seed')}, {t.get('iterations')} iterations max, {t.get('train_batch_tokens')} tokens/"
          f"step × seq {t.get('train_seq_len')}, wallclock cap {t.get('max_wallclock_seconds')} s, matrix_lr "
          f"{t.get('matrix_lr')}, warmdown_frac {t.get('warmdown_frac')}, ema {t.get('ema_decay')}",
          f"- quant recipe `{run_recipe(r)}`, codec {g('config.pack.codec', '—')}; eval seq_len "
          f"{g('config.eval.seq_len', '—')} stride {g('config.eval.stride', '—')}",
          f"- env: pgolf {g('env.pgolf', '—')}, torch {g('env.torch', '—')}, cuda {g('env.cuda', '—')}, gpu "
          f"{g('env.gpu', '—')}, world size {g('world_size', '—')}, git {g('env.git.sha', '—')}"
          f"{' (dirty)' if g('env.git.dirty') else ''}"]
    qs = _quant_summary(r)
    if qs:
        L += ["", "## Quantization", "", *qs]
    if len(runs) > 1:
        L += ["", f"## Runs ({len(runs)})", "", seeds_table(runs).rstrip()]
    L += ["", "## Plots", ""]
    captions = {"training": "Training loss and LR multiplier", "score_vs_bytes": "val_bpb against artifact bytes",
                "quant_tensors": "Per-tensor bits and quantization error"}
    for key, p in images.items():
        why = ("omitted: it compares artifacts; give the runs to compare (`pgolf report RUN OTHER ...`) or "
               "score another recipe of this run (`pgolf quantize RUN --recipe R --eval`)"
               if key == "score_vs_bytes" else "no data in the run record")
        L.append(f"![{captions[key]}]({p.name})" if p else f"- {captions[key]}: {why}")
        L.append("")
    return "\n".join(L).rstrip() + "\n"


def write_report(run_dir: str | Path | Sequence[str | Path], out_dir: str | Path | None = None) -> list[Path]:
    """Write the plots and report.md for one run (or several: the first is the subject, all feed the comparisons).

    out_dir defaults to FIRST_RUN_DIR/report. Returns the paths written (PNGs first, report.md last).
    """
    paths = [run_dir] if isinstance(run_dir, (str, Path)) else list(run_dir)
    loaded = load_runs(paths)
    runs = [with_current_artifact(r) for r in loaded]  # what each run directory holds now
    out = Path(out_dir) if out_dir is not None else Path(runs[0]["_path"]).parent / REPORT_DIR
    out.mkdir(parents=True, exist_ok=True)
    from pgolf.experiments.plots import plot_quant_tensors, plot_score_vs_bytes, plot_training

    images = {"training": plot_training(runs, out / "training.png"),
              "score_vs_bytes": plot_score_vs_bytes(  # the runs' own artifacts and their re-quantized ones
                  loaded + [v for r in loaded for v in artifact_variants(r)], out / "score_vs_bytes.png"),
              "quant_tensors": plot_quant_tensors(runs[0], out / "quant_tensors.png")}
    md = save_atomic(out / "report.md", lambda f: f.write(_markdown(runs, images)), mode="w")
    return [p for p in images.values() if p] + [md]
