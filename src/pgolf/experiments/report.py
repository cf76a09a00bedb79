"""Reports over run records (RUN_DIR/run.json): a per-seed markdown table, three PNG plots and a report.md.

    load_runs(["runs/a", "runs/b/run.json"])    → list of run.json dicts (each with "_path")
    seeds_table(runs)                            → markdown: one row per run + mean and std rows
    write_report("runs/a", out_dir=None)         → [training.png, score_vs_bytes.png, quant_tensors.png, report.md]

Plots: (a) training loss and LR multiplier against elapsed seconds; (b) val_bpb against artifact bytes, one point
per run coloured by recipe (round trip filled, pre-quant hollow); (c) per-tensor stored bits and quantization MSE
(heat map layers × tensor kind when names look like `blocks.N.…`, else a bar chart). Every file is written to a
temporary name and renamed. matplotlib (Agg canvas, no pyplot) is imported lazily.

    python -m pytest tests/experiments/test_report.py -q
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Callable, Sequence

from pgolf.experiments.stats import RECORD_MARGIN_NATS, nats_to_bpb, summarize, tokens_per_byte

RUN_RECORD = "run.json"
REPORT_DIR = "report"
_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+?)(\.weight)?$")


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


# ------------------------------------------------------------------------------------------------ plots

def _new_figure(w: float, h: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=110)
    FigureCanvasAgg(fig)  # the Agg canvas: no display, no pyplot global state
    return fig


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


def _save_figure(fig, path: Path) -> Path:
    fig.tight_layout()
    return save_atomic(path, lambda f: fig.savefig(f, format="png"))


def plot_training(runs: Sequence[dict], path: Path) -> Path | None:
    """Loss (left axis) and LR multiplier (right axis, dashed) against elapsed training seconds."""
    runs = [r for r in runs if dotted_get(r, "train.history")][:8]
    if not runs:
        return None
    fig = _new_figure(8, 4.5)
    ax = fig.add_subplot()
    ax2 = ax.twinx()
    for i, r in enumerate(runs):
        hist = r["train"]["history"]
        x = [h.get("elapsed_s", h.get("step", 0)) for h in hist]
        color = f"C{i}"
        ax.plot(x, [h.get("loss", math.nan) for h in hist], color=color, lw=1.6, label=run_name(r))
        if "lr_mult" in hist[0]:
            ax2.plot(x, [h.get("lr_mult", math.nan) for h in hist], color=color, ls="--", lw=1.1, alpha=0.7)
    ax.set_xlabel("elapsed training time (s)")
    ax.set_ylabel("train loss (nats / token)")
    ax2.set_ylabel("LR multiplier (dashed)")
    # headroom above the LR curve keeps the legend (top right) off it
    ax2.set_ylim(0, 1.45 * max([1.0] + [max(h.get("lr_mult", 0) for h in r["train"]["history"]) for r in runs]))
    ax.grid(alpha=0.3)
    from matplotlib.lines import Line2D

    styles = [Line2D([], [], color="gray", lw=1.6, label="loss (left)"),
              Line2D([], [], color="gray", ls="--", lw=1.1, label="LR multiplier (right)")]
    ax.legend(handles=ax.get_legend_handles_labels()[0] + styles, loc="upper right", fontsize=8,
              ncol=2 if len(runs) > 3 else 1)
    steps = dotted_get(runs[0], "train.steps", "?")
    ax.set_title(f"Training loss and LR schedule ({run_name(runs[0])}: {steps} steps)")
    return _save_figure(fig, path)


def plot_score_vs_bytes(runs: Sequence[dict], path: Path, byte_limit: int = 16_000_000) -> Path | None:
    """One point per run: round-trip val_bpb (filled) and pre-quant (hollow) at the artifact's total bytes."""
    pts = [r for r in runs if dotted_get(r, "bytes.total") and dotted_get(r, "roundtrip.val_bpb") is not None]
    if not pts:
        return None
    from matplotlib.lines import Line2D

    fig = _new_figure(8, 5)
    ax = fig.add_subplot()
    recipes = list(dict.fromkeys(run_recipe(r) for r in pts))
    for r in pts:
        x = r["bytes"]["total"] / 1e6
        color = f"C{recipes.index(run_recipe(r)) % 10}"
        rt, pre = r["roundtrip"]["val_bpb"], dotted_get(r, "prequant.val_bpb")
        if pre is not None:
            ax.plot([x, x], [pre, rt], color=color, lw=0.8, alpha=0.6)
            ax.scatter([x], [pre], s=110, facecolors="none", edgecolors=color, linewidths=1.5, zorder=3)
        ax.scatter([x], [rt], s=45, color=color, zorder=4)  # smaller than the ring: a zero gap stays visible
        if len(pts) <= 12:
            ax.annotate(f"{run_name(r)}", (x, rt), textcoords="offset points", xytext=(6, -10), fontsize=7)
    xmax = max(r["bytes"]["total"] for r in pts)
    if xmax > byte_limit / 2:
        ax.axvline(byte_limit / 1e6, color="red", ls=":", lw=1.2)
        ax.text(byte_limit / 1e6, 0.98, "16 MB cap ", color="red", va="top", ha="right", fontsize=8,
                transform=ax.get_xaxis_transform())
    handles = [Line2D([], [], marker="o", ls="", color=f"C{i % 10}", label=f"recipe {n}")
               for i, n in enumerate(recipes)]
    handles += [Line2D([], [], marker="o", ls="", color="k", label="round trip (the score)"),
                Line2D([], [], marker="o", ls="", mfc="none", mec="k", label="pre-quant")]
    ax.legend(handles=handles, fontsize=8, loc="best")
    ax.margins(x=0.1, y=0.1)
    ax.set_xlabel("artifact bytes: code + compressed model (MB = 10⁶ bytes)")
    ax.set_ylabel("val_bpb (bits per byte, lower is better)")
    ax.set_title(f"Score against artifact size ({len(pts)} run{'s' if len(pts) != 1 else ''})")
    ax.grid(alpha=0.3)
    return _save_figure(fig, path)


def _bits_label(row: dict) -> str:
    return f"{'fp' if row.get('method') == 'passthrough' else 'int'}{row.get('bits', '?')}"


def plot_quant_tensors(run: dict, path: Path) -> Path | None:
    """Heat map (layers × tensor kind; colour = log10 MSE, text = stored bits) plus bars for non-block tensors."""
    rows = dotted_get(run, "quant.tensors") or []
    if not rows:
        return None
    import numpy as np

    block = [(int(m.group(1)), m.group(2), r) for r in rows if (m := _BLOCK.match(r["name"]))]
    other = [r for r in rows if not _BLOCK.match(r["name"])]
    if len(block) < len(rows) / 2:
        block, other = [], rows
    kinds = sorted(dict.fromkeys(k for _, k, _ in block), key=lambda k: -max(r["numel"] for _, kk, r in block
                                                                             if kk == k))
    layers = sorted({i for i, _, _ in block})
    n_other = len(other)
    other = sorted(other, key=lambda r: -r.get("numel", 0))[:40]
    n_panels = (1 if block else 0) + (1 if other else 0)
    width = (1.5 + 0.85 * len(kinds) if block else 0) + (4.5 if other else 0)
    height = max(3.5, 1.6 + 0.38 * max(len(layers), len(other) if other else 0))
    fig = _new_figure(max(width, 6), height)
    gs = fig.add_gridspec(1, n_panels, width_ratios=([0.85 * len(kinds) + 1.5] if block else [])
                          + ([4.5] if other else []))
    if block:
        ax = fig.add_subplot(gs[0, 0])
        mat = np.full((len(layers), len(kinds)), np.nan)
        for i, k, r in block:
            mse = r.get("mse") or 0.0  # float-kept tensors stay grey: their ~1e-9 fp16 error would swamp the scale
            if mse > 0 and r.get("method") != "passthrough":
                mat[layers.index(i), kinds.index(k)] = math.log10(mse)
        cmap = _cmap_with_gray()
        im = ax.imshow(mat, aspect="auto", cmap=cmap)
        for i, k, r in block:
            y, x = layers.index(i), kinds.index(k)
            ax.text(x, y, _bits_label(r), ha="center", va="center", fontsize=7,
                    color="white" if np.isfinite(mat[y, x]) and mat[y, x] < np.nanmean(mat) else "black")
        ax.set_xticks(range(len(kinds)), kinds, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(layers)), [f"block {i}" for i in layers], fontsize=8)
        ax.set_xlabel("tensor kind")
        ax.set_title("stored format (text) and log₁₀ MSE of quantized tensors (colour; grey = kept in float)",
                     fontsize=9)
        if np.isfinite(mat).any():
            fig.colorbar(im, ax=ax, label="log₁₀ mean (W − Ŵ)²", shrink=0.9)
        else:
            ax.set_title("stored format per tensor (no block tensor was quantized)", fontsize=9)
    if other:
        ax = fig.add_subplot(gs[0, n_panels - 1])
        names = [r["name"] for r in other]
        mses = [r.get("mse") or 0.0 for r in other]
        floor = min([m for m in mses if m > 0], default=1e-12) / 10
        ax.barh(range(len(other)), [m if m > 0 else floor for m in mses],
                color=["C0" if m > 0 else "lightgray" for m in mses])
        ax.set_xscale("log")
        ax.set_xlim(floor / 2, max(max(mses), floor) * 3)
        from matplotlib.ticker import LogLocator, NullFormatter

        ax.xaxis.set_major_locator(LogLocator(numticks=6))
        ax.xaxis.set_minor_formatter(NullFormatter())
        for y, r in enumerate(other):
            ax.text(floor, y, f" {_bits_label(r)}" + ("" if (r.get("mse") or 0) > 0 else " exact"),
                    va="center", fontsize=7)
        ax.set_yticks(range(len(other)), names, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("mean (W − Ŵ)² (log scale)")
        shown = f" ({len(other)} largest of {n_other})" if n_other > len(other) else ""
        ax.set_title(("non-block tensors: storage and MSE" if block else "per-tensor storage and MSE") + shown,
                     fontsize=9)
    fig.suptitle(f"Quantization per tensor: recipe {run_recipe(run)} ({run_name(run)})", fontsize=11)
    return _save_figure(fig, path)


def _cmap_with_gray():
    from matplotlib import colormaps

    return colormaps["viridis"].with_extremes(bad="lightgray")


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
        out.append("- largest MSE: " + ", ".join(f"`{r['name']}` {_bits_label(r)} {r['mse']:.2e}" for r in worst))
    return out


def _markdown(runs: Sequence[dict], images: dict[str, Path | None]) -> str:
    r = runs[0]
    g = lambda k, d=None: dotted_get(r, k, d)  # noqa: E731
    L = [f"# Run report: {run_name(r)}", "", f"Record: `{r.get('_path')}` (preset {g('preset', '—')}).", ""]
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
        L.append(f"![{captions[key]}]({p.name})" if p else f"- {captions[key]}: no data in the run record")
        L.append("")
    return "\n".join(L).rstrip() + "\n"


def write_report(run_dir: str | Path | Sequence[str | Path], out_dir: str | Path | None = None) -> list[Path]:
    """Write the plots and report.md for one run (or several: the first is the subject, all feed the comparisons).

    out_dir defaults to FIRST_RUN_DIR/report. Returns the paths written (PNGs first, report.md last).
    """
    paths = [run_dir] if isinstance(run_dir, (str, Path)) else list(run_dir)
    runs = load_runs(paths)
    out = Path(out_dir) if out_dir is not None else Path(runs[0]["_path"]).parent / REPORT_DIR
    out.mkdir(parents=True, exist_ok=True)
    images = {"training": plot_training(runs, out / "training.png"),
              "score_vs_bytes": plot_score_vs_bytes(runs, out / "score_vs_bytes.png"),
              "quant_tensors": plot_quant_tensors(runs[0], out / "quant_tensors.png")}
    md = save_atomic(out / "report.md", lambda f: f.write(_markdown(runs, images)), mode="w")
    return [p for p in images.values() if p] + [md]
