"""The report's PNG plots (matplotlib's Agg canvas, no pyplot; imported lazily), each written atomically.

    plot_training(runs, path)        loss of every step (left) and LR multiplier (right, dashed) against the step
    plot_score_vs_bytes(runs, path)  val_bpb against artifact bytes, one point per artifact (None below two)
    plot_quant_tensors(run, path)    stored format per tensor; colour = MSE relative to the median tensor's, on a
                                     diverging scale never narrower than ×0.1 … ×10, its range printed on the bar

    python -m pytest tests/experiments/test_report.py -q
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

from pgolf.experiments.records import BLOCK, bits_label, dotted_get, run_name, run_recipe, save_atomic


def _new_figure(w: float, h: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=110)
    FigureCanvasAgg(fig)  # the Agg canvas: no display, no pyplot global state
    return fig


def _save_figure(fig, path: Path) -> Path:
    fig.tight_layout()
    return save_atomic(path, lambda f: fig.savefig(f, format="png"))


def plot_training(runs: Sequence[dict], path: Path) -> Path | None:
    """Loss of every step (left axis; records before train.step_loss: the logged steps) and the LR multiplier of
    the logged steps (right axis, dashed) against the step."""
    runs = [r for r in runs if dotted_get(r, "train.history") or dotted_get(r, "train.step_loss")][:8]
    if not runs:
        return None
    fig = _new_figure(8, 4.5)
    ax = fig.add_subplot()
    ax2 = ax.twinx()
    for i, r in enumerate(runs):
        hist = r["train"].get("history") or []
        per_step = r["train"].get("step_loss") or []
        color = f"C{i}"
        if per_step:
            ax.plot(range(1, len(per_step) + 1), per_step, color=color, lw=1.0 if len(per_step) > 200 else 1.6,
                    label=run_name(r))
        else:
            ax.plot([h.get("step", 0) for h in hist], [h.get("loss", math.nan) for h in hist], color=color, lw=1.6,
                    marker=".", label=f"{run_name(r)} (logged steps)")
        if hist and "lr_mult" in hist[0]:
            ax2.plot([h.get("step", 0) for h in hist], [h.get("lr_mult", math.nan) for h in hist], color=color,
                     ls="--", lw=1.1, alpha=0.7, marker="o" if len(hist) < 20 else None, ms=3)
    ax.set_xlabel("training step")
    ax.set_ylabel("train loss (nats / token)")
    ax2.set_ylabel("LR multiplier (dashed)")
    # headroom above the LR curve keeps the legend (top right) off it
    ax2.set_ylim(0, 1.45 * max([1.0] + [h.get("lr_mult", 0) for r in runs for h in r["train"].get("history") or []]))
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
    """One point per artifact (each run's, and the re-quantized ones of report.artifact_variants): round-trip
    val_bpb (filled) and pre-quant (hollow) at the artifact's total bytes; None below two points."""
    pts = [r for r in runs if dotted_get(r, "bytes.total") and dotted_get(r, "roundtrip.val_bpb") is not None]
    if len(pts) < 2:  # one point says nothing about the trade-off; the records' 8×H100 FineWeb points do not compare
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
    ax.set_title(f"Score against artifact size ({len(pts)} artifacts)")
    ax.grid(alpha=0.3)
    return _save_figure(fig, path)


def plot_quant_tensors(run: dict, path: Path) -> Path | None:
    """Heat map (layers × tensor kind; colour = log10 MSE, text = stored bits) plus bars for non-block tensors."""
    rows = dotted_get(run, "quant.tensors") or []
    if not rows:
        return None
    import numpy as np

    block = [(int(m.group(1)), m.group(2), r) for r in rows if (m := BLOCK.match(r["name"]))]
    other = [r for r in rows if not BLOCK.match(r["name"])]
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
        # diverging around the median tensor's MSE, never narrower than ×0.1 … ×10: a 0.1 % spread stays pale
        finite = mat[np.isfinite(mat)]
        ref = float(np.median(finite)) if finite.size else 0.0
        span = max(1.0, float(np.max(np.abs(finite - ref)))) if finite.size else 1.0
        im = ax.imshow(mat - ref, aspect="auto", cmap=_cmap_with_gray(), vmin=-span, vmax=span)
        for i, k, r in block:
            y, x = layers.index(i), kinds.index(k)
            ax.text(x, y, bits_label(r), ha="center", va="center", fontsize=7,
                    color="white" if np.isfinite(mat[y, x]) and abs(mat[y, x] - ref) > 0.6 * span else "black")
        ax.set_xticks(range(len(kinds)), kinds, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(layers)), [f"block {i}" for i in layers], fontsize=8)
        ax.set_xlabel("tensor kind")
        ax.set_title("stored format (text) and MSE relative to the median tensor (colour; grey = kept in float)",
                     fontsize=9)
        if finite.size:
            lo, hi = 10 ** float(finite.min()), 10 ** float(finite.max())
            fig.colorbar(im, ax=ax, shrink=0.9, label=f"log₁₀(MSE / median {10 ** ref:.2e})\n"
                         f"MSE range {lo:.2e} … {hi:.2e} (×{hi / lo:.3g})")
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
            ax.text(floor, y, f" {bits_label(r)}" + ("" if (r.get("mse") or 0) > 0 else " exact"),
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

    return colormaps["RdBu_r"].with_extremes(bad="lightgray")
