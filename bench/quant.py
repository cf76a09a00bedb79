"""Quantization recipes on one trained checkpoint: bytes, round-trip val_bpb, quantization gap, time, memory.

    PGOLF_CACHE=/tmp/pgolf-cache python bench/quant.py /tmp/runs/demo-a --val-tokens 65536 --calib-seqs 16

For every registered recipe (or --recipes a,b): calibration (Hessian recipes only; source = the recipe's record
default unless --calib-source, sequences --calib-seqs, length = the run's train_seq_len), quantize, encode with the
recipe's codec hint (--codec to force one), decode, load into a fresh GPT, score val_bpb on the first
--val-tokens validation tokens (0 = all), against the pre-quant score of the checkpoint on the same tokens.
"quant s" is quantize + encode wall time without the calibration forwards (reported apart); "peak MB" is the peak
resident memory above the pre-quantize level, sampled every 5 ms. Writes OUT/quant_bench.md, .json and a PNG of
val_bpb vs model bytes (matplotlib Agg).

Equal bytes (issue 3's comparison): `--equal-bytes sdclip-rtn --codec rans` first quantizes the reference recipe
as is, then fits every recipe to the reference's model bytes with the budget fitter (pack/fit.py: per-tensor bits/σ
chosen by measured bytes and Hessian-weighted error) and scores each; "quant s" is then the whole fit.
"""


from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class PeakRSS:
    def __enter__(self):
        self.base = self.peak = _rss_mb()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, _rss_mb())

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, _rss_mb())

    @property
    def delta(self) -> float:
        return self.peak - self.base


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir")
    p.add_argument("--recipes", default="", help="comma-separated recipe names (default: all registered)")
    p.add_argument("--val-tokens", type=int, default=0, help="score on the first N val tokens (0 = all)")
    p.add_argument("--calib-seqs", type=int, default=0, help="calibration sequences (0 = recipe default)")
    p.add_argument("--calib-seq-len", type=int, default=0,
                   help="calibration sequence length (0 = the recipe's: selfgen 2048, else train_seq_len)")
    p.add_argument("--calib-source", default="", help="override every recipe's calibration source")
    p.add_argument("--codec", default="", help="force one codec (default: each recipe's codec_hint)")
    p.add_argument("--out", default="", help="output directory (default RUN_DIR/quant_bench)")
    p.add_argument("--stride", type=int, default=None, help="eval stride (default: the run's eval.stride)")
    p.add_argument("--equal-bytes", default="", metavar="RECIPE",
                   help="fit every recipe to the model bytes of RECIPE (quantized as is) and compare at equal bytes")
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    from pgolf.config import build_config
    from pgolf.data.bytes import build_byte_lut, validation_bytes
    from pgolf.data.dataset import resolve_dataset
    from pgolf.data.loader import load_validation_tokens
    from pgolf.data.tokenizer import load_tokenizer
    from pgolf.eval.roundtrip import load_model_from_artifact
    from pgolf.model.gpt import GPT
    from pgolf.experiments.bundle import measure_code_bytes
    from pgolf.pack.container import encode_artifact
    from pgolf.quant.apply import quantize_state_dict
    from pgolf.quant.recipes import RECIPES, get_recipe
    from pgolf.run import DataBundle, calibration_stage, load_run_or_checkpoint, score

    cfg, weights, run_dir, looping = load_run_or_checkpoint(Path(args.run_dir))
    dataset = resolve_dataset(cfg.data)
    sp = load_tokenizer(dataset.tokenizer_path)
    lut = build_byte_lut(sp, cfg.model.vocab_size)
    val = load_validation_tokens(dataset.val_files, cfg.eval_seq_len, args.val_tokens)
    # CaseOps data: the val byte sidecar (the original text's bytes), as `pgolf run` scores it; else the LUT
    target_bytes, accounting = validation_bytes(dataset, sp, val, lut)
    data = DataBundle(dataset, lut, val, "", target_bytes, accounting)
    dev = torch.device("cpu")
    model = GPT(cfg.model)
    model.load_state_dict(weights, strict=True)
    model.set_looping(looping)
    pre = score(model.eval(), data, cfg, dev, stride=args.stride).val_bpb
    print(f"pre-quant val_bpb {pre:.5f} on {val.numel() - 1:,} val tokens (bytes: {accounting})", file=sys.stderr)
    code = measure_code_bytes()
    names = [n for n in args.recipes.split(",") if n] or list(RECIPES)
    rows = []
    target = None
    if args.equal_bytes:
        names = [args.equal_bytes] + names
    for i, name in enumerate(names):
        fitting = bool(args.equal_bytes) and i > 0
        recipe = get_recipe(name)
        q = dataclasses.replace(cfg.quant, recipe=name, calib_seqs=args.calib_seqs, calib_seq_len=args.calib_seq_len,
                                calib_source=args.calib_source or cfg.quant.calib_source)
        rcfg = build_config([("run", {**cfg.to_dict(), "quant": asdict(q)})])
        hessians, cal = None, None
        if recipe.needs_hessians:
            hessians, cal = calibration_stage(rcfg, weights, recipe, dataset=dataset, looping_active=looping)
        codec = args.codec or recipe.codec_hint or cfg.pack.codec
        with PeakRSS() as mem:
            t0 = time.perf_counter()
            manifest = {"model": asdict(cfg.model), "recipe": name, "codec": codec, "looping_active": looping}
            if fitting:
                from pgolf.pack.fit import fit_to_budget

                fit = fit_to_budget(weights, recipe, target_model_bytes=target, codec=codec, manifest=manifest,
                                    hessians=hessians)
                blob = fit.blob
            else:
                qs, _ = quantize_state_dict(weights, recipe, hessians=hessians)
                blob = encode_artifact(qs, manifest, codec)
            secs = time.perf_counter() - t0
        if args.equal_bytes and i == 0:
            target = len(blob)
        rt_model, _ = load_model_from_artifact(blob)
        rt = score(rt_model, data, cfg, dev, stride=args.stride).val_bpb
        row = {"recipe": name + (" (fit)" if fitting else ""), "codec": codec, "model_bytes": len(blob), "total_bytes": len(blob) + code,
               "val_bpb": rt, "gap": rt - pre, "quant_s": secs, "peak_mb": mem.delta,
               "calib": f"{cal['source']} {cal['seqs']}×{cal['seq_len']} {cal['seconds']:.1f}s" if cal else "—"}
        rows.append(row)
        print(f"{name}: {len(blob):,} B  bpb {rt:.5f}  gap {rt - pre:+.5f}  {secs:.1f}s", file=sys.stderr)

    out = Path(args.out) if args.out else run_dir / "quant_bench"
    out.mkdir(parents=True, exist_ok=True)
    lines = [f"pre-quant val_bpb **{pre:.5f}** ({val.numel() - 1:,} val tokens; code bytes {code:,})", "",
             "| recipe | codec | model bytes | val_bpb | gap | quant s | peak MB | calibration |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['recipe']} | {r['codec']} | {r['model_bytes']:,} | {r['val_bpb']:.5f} | {r['gap']:+.5f} "
                     f"| {r['quant_s']:.2f} | {r['peak_mb']:.0f} | {r['calib']} |")
    if args.equal_bytes and len(rows) > 1:
        ref, best = rows[0], min(rows[1:], key=lambda r: r["gap"])
        lines += ["", f"equal bytes ({ref['model_bytes']:,} model bytes, {ref['recipe']} as is): best "
                  f"{best['recipe']} gap {best['gap']:+.5f} = {best['gap'] / ref['gap']:.2f} × the reference's "
                  f"{ref['gap']:+.5f} (target ≤ 0.5)"]
    md = "\n".join(lines) + "\n"
    (out / "quant_bench.md").write_text(md)
    (out / "quant_bench.json").write_text(json.dumps({"prequant_bpb": pre, "rows": rows}, indent=2))
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for r in rows:
        ax.scatter(r["model_bytes"] / 1e6, r["val_bpb"])
        ax.annotate(r["recipe"], (r["model_bytes"] / 1e6, r["val_bpb"]), fontsize=7)
    ax.axhline(pre, ls="--", c="gray", label="pre-quant")
    ax.set_xlabel("model bytes (MB)")
    ax.set_ylabel("round-trip val_bpb")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "quant_bench.png", dpi=120)
    print(md)
    print(f"wrote {out}/quant_bench.md, .json, .png", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
