"""One prepared device check: environment, compiled training at the records' per-GPU shape, every eval mode on a
slice, quantize + pack + round trip. One JSON, one table, exit status 1 if any stage failed.

    bench/gpu_check.sh                                   # on one CUDA GPU (< 8 min on an H100/H200-class device)
    python bench/gpu_check.py --out gpu_check.json --steps 20
    python bench/gpu_check.py --dry-run                  # CPU, tiny sizes, same stages (tests/test_gpu_check.py)
    python bench/gpu_check.py --set quant.recipe=... --presets sota-sp8192 --modes standard,doc

Stages, each timed and isolated (a failure is recorded with its traceback and the next stage still runs):
1. env: torch / CUDA / device, bf16 support, torch.compile backend (inductor, triton version), the attention kernels
   `model.attention_backend=auto` picks (model/attention.py `chosen_kernels`), flash-attn (model/flash.py) and
   varlen (model/documents.py) availability.
2. train, per preset (record-11l, sota-sp8192): the real loop (train/loop.py: Muon + AdamW + EMA + clipping,
   compiled on CUDA) for warm-up + timed steps on synthetic tokens at the records' batch shape scaled to one GPU:
   786,432 tokens / 8 GPUs = 98,304 tokens per step (48 × 2048), i.e. the per-GPU work of an 8×H100 record step, so
   ms/step compares with their 83–87 ms/step minus communication. Depth recurrence is on from step 0 (steady
   state). Reports ms/step (median of the timed steps), tokens/s, peak CUDA memory, compile time (first step minus
   the median).
3. eval: every mode in eval/config.py EVAL_MODES on a synthetic slice with the trained model: tokens/s and the
   seconds of each stage the mode reports (score, train, lora, …).
4. pack: quantize with the configured recipe (Hessian recipes calibrate on `random` tokens: no dataset needed),
   pack with the preset's codec, write, read back, rebuild and score the slice: seconds per stage, bytes.

It never changes device settings (no clocks, MIG, persistence or allocator knobs); it only reads them.
Synthetic data: uniform random tokens with a BOS about every 700 tokens (documents for doc isolation and doc-based
eval modes); the scores are meaningless, the speed is not.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

PRESETS = ("record-11l", "sota-sp8192")
RECORD_GPUS = 8
RECORD_MS_PER_STEP = "83-87 (8xH100, R0322-R0427)"
DOC_LEN = 700

# CPU dry run: the presets' structure (layers, switches, vocab) at tiny width and length.
DRY_RUN = [("model.model_dim", "32"), ("model.num_heads", "2"), ("model.num_kv_heads", "1"),
           ("model.bigram_dim", "16"), ("model.ve_dim", "16"), ("model.rope_dims", "8"),
           ("train.train_seq_len", "64"), ("train.train_batch_tokens", "256"),
           ("eval.seq_len", "64"), ("eval.stride", "32"), ("eval.batch_seqs", "4"),
           ("eval.ttt_chunk_tokens", "256"), ("eval.ttt_lora_chunk", "64"), ("eval.ttt_lora_rank", "4"),
           ("eval.ttt_epochs", "1")]


def _now() -> float:
    return time.perf_counter()


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------------------------------------------- stages


def check_env(device) -> dict[str, Any]:
    import torch

    from pgolf.model.attention import chosen_kernels
    from pgolf.model.documents import varlen_available
    from pgolf.model.flash import flash_available

    env: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                           "device": str(device), "cuda_available": torch.cuda.is_available(),
                           "cuda_version": torch.version.cuda, "threads": torch.get_num_threads()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(device_name=props.name, capability=f"{props.major}.{props.minor}",
                   memory_gb=round(props.total_memory / 2**30, 1), bf16=torch.cuda.is_bf16_supported())
        a = torch.randn(256, 256, device=device, dtype=torch.bfloat16)
        env["bf16_matmul_ok"] = bool(torch.isfinite(a @ a).all())
    else:
        env.update(device_name=platform.processor() or platform.machine(), bf16=True)
    try:
        import triton

        env["triton"] = triton.__version__
    except ImportError:
        env["triton"] = None
    env["compile_backend"] = "inductor"
    env["attention_auto"] = chosen_kernels("auto", device)
    env["varlen_attn"] = varlen_available(device)
    env["flash_attn_package"] = flash_available()
    try:  # torch's FA3/FA4 activation hooks (need the flash-attn wheels; pgolf does not activate them)
        import torch.nn.attention as tna

        env["flash_impls_registered"] = tna.list_flash_attention_impls()
        env["flash_impl_active"] = tna.current_flash_attention_impl()
    except (ImportError, AttributeError):
        env["flash_impls_registered"] = None
    return env


class SyntheticLoader:
    """DistributedTokenLoader's interface (next_batch / state_dict / load_state_dict) over seeded random tokens."""

    def __init__(self, vocab: int, bos_id: int, seed: int = 0) -> None:
        self.vocab, self.bos_id, self.seed, self.calls = vocab, bos_id, seed, 0

    def next_batch(self, global_tokens: int, seq_len: int, grad_accum_steps: int):
        rows = global_tokens // (seq_len * grad_accum_steps)
        tokens = synthetic_tokens(rows * seq_len + 1, self.vocab, self.bos_id, seed=self.seed + self.calls)
        self.calls += 1
        return tokens[:-1].view(rows, seq_len), tokens[1:].view(rows, seq_len)

    def state_dict(self) -> dict[str, int]:
        return {"calls": self.calls}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.calls = int(state["calls"])


def synthetic_tokens(n: int, vocab: int, bos_id: int, seed: int = 0):
    import torch

    g = torch.Generator().manual_seed(seed)
    t = torch.randint(0, vocab, (n,), generator=g)
    t[t == bos_id] = (bos_id + 1) % vocab
    t[torch.rand(n, generator=g) < 1.0 / DOC_LEN] = bos_id
    t[0] = bos_id
    return t


def preset_config(preset: str, args):
    from pgolf.config import build_config, load_preset, parse_overrides

    over = list(DRY_RUN) if args.dry_run else []
    per_gpu = None
    base = build_config([("preset", load_preset(preset))])
    if not args.dry_run:
        per_gpu = base.train.train_batch_tokens // RECORD_GPUS
        over.append(("train.train_batch_tokens", str(per_gpu)))
    over += [("train.iterations", str(args.warmup + args.steps)), ("train.max_wallclock_seconds", "0"),
             ("train.calib_reserve_seconds", "0"), ("train.enable_looping_at", "0"), ("train.log_every", "1"),
             ("train.val_every", "0"), ("train.checkpoint_every", "0"), ("train.qat_threshold", "0"),
             ("train.compile", "false" if args.dry_run or args.no_compile else "true"),
             ("pack.allow_over_limit", "true"), ("pack.budget", "0")]
    over += [tuple(kv.split("=", 1)) for kv in args.set]
    return build_config([("preset", load_preset(preset)), ("gpu_check", parse_overrides(over))])


def train_check(preset: str, cfg, device, run_dir: Path, warmup: int) -> tuple[dict[str, Any], Any]:
    import torch

    from pgolf.log import RunLogger
    from pgolf.model.gpt import GPT
    from pgolf.train.loop import train
    from pgolf.train.distributed import world

    torch.manual_seed(cfg.train.seed)
    model = GPT(cfg.model).to(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    loader = SyntheticLoader(cfg.model.vocab_size, cfg.model.bos_id)
    t0 = _now()
    result = train(cfg.train, model, loader, logger=RunLogger(None, enabled=False), run_dir=run_dir, device=device)
    wall = _now() - t0
    steps_s = [cfg.train.train_batch_tokens / r["tokens_per_s"] for r in result.history]  # log_every=1: every step
    if len(steps_s) != cfg.train.iterations or warmup >= len(steps_s):
        raise RuntimeError(f"expected {cfg.train.iterations} logged steps (warm-up {warmup}), got {len(steps_s)}")
    timed = steps_s[warmup:]
    med = statistics.median(timed)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    row = {"preset": preset, "params": sum(p.numel() for p in model.parameters()),
           "batch_tokens": cfg.train.train_batch_tokens, "seq_len": cfg.train.train_seq_len,
           "rows": cfg.train.train_batch_tokens // cfg.train.train_seq_len, "compiled": cfg.train.compile,
           "muon": "parallel (banked)" if cfg.train.muon_impl == "parallel" or (  # build_optimizers' rule
               cfg.train.muon_impl == "auto" and world()[1] > 1) else "Muon", "steps": result.steps,
           "timed_steps": len(timed), "ms_per_step": round(1000 * med, 2),
           "ms_per_step_max": round(1000 * max(timed), 2), "tokens_per_s": round(cfg.train.train_batch_tokens / med),
           "first_step_s": round(steps_s[0], 2), "compile_s": round(max(0.0, steps_s[0] - med), 2),
           "peak_mem_gb": round(peak / 2**30, 2) if peak is not None else None,
           "wall_s": round(wall, 1), "final_loss": round(result.final_loss, 4),
           "looping": bool(getattr(model, "looping_active", False)),
           "attention": "documents" if cfg.model.doc_isolation else "causal"}
    return row, model


def eval_check(model, cfg, device, mode: str, tokens: int) -> dict[str, Any]:
    import torch

    from pgolf.eval.modes import evaluate

    val = synthetic_tokens(tokens + 1, cfg.model.vocab_size, cfg.model.bos_id, seed=10_000)
    target_bytes = torch.full((val.numel(),), 3, dtype=torch.int64)
    ecfg = dataclasses.replace(cfg.eval, mode=mode)
    _sync(device)
    t0 = _now()
    res = evaluate(model, val, target_bytes, ecfg, seq_len=cfg.eval_seq_len, device=device,
                   bos_id=cfg.model.bos_id, max_seconds=0)
    _sync(device)
    sec = _now() - t0
    return {"mode": mode, "tokens": tokens, "seconds": round(sec, 2), "tokens_per_s": round(tokens / sec),
            "val_bpb": round(res.val_bpb, 4),
            "stages_s": {k.removeprefix("seconds_"): round(v, 2) for k, v in (res.timing or {}).items()
                         if k.startswith("seconds_") and k != "seconds_total"}}


def pack_check(model, cfg, device, run_dir: Path, tokens: int) -> dict[str, Any]:
    import torch

    from pgolf.eval.modes import evaluate
    from pgolf.eval.roundtrip import load_model_from_artifact
    from pgolf.log import RunLogger
    from pgolf.quant.recipes import recipe_for
    from pgolf.run import quantize_stage

    if recipe_for(cfg.quant).needs_hessians and not cfg.quant.calib_source:
        cfg = dataclasses.replace(cfg, quant=dataclasses.replace(cfg.quant, calib_source="random"))
    val = synthetic_tokens(tokens + 1, cfg.model.vocab_size, cfg.model.bos_id, seed=20_000)
    target_bytes = torch.full((val.numel(),), 3, dtype=torch.int64)
    ecfg = dataclasses.replace(cfg.eval, mode="standard")
    state = {k: v.detach() for k, v in model.state_dict().items()}
    t0 = _now()
    pack = quantize_stage(cfg, state, run_dir, RunLogger(None, enabled=False), val_tokens=val, device=device,
                          looping_active=bool(getattr(model, "looping_active", False)))
    quant_wall = _now() - t0
    t1 = _now()
    blob = Path(pack.path).read_bytes()
    rebuilt, _ = load_model_from_artifact(blob, device=device)
    _sync(device)
    load_s = _now() - t1
    pre = evaluate(model, val, target_bytes, ecfg, seq_len=cfg.eval_seq_len, device=device, bos_id=cfg.model.bos_id,
                   max_seconds=0)
    t2 = _now()
    post = evaluate(rebuilt, val, target_bytes, ecfg, seq_len=cfg.eval_seq_len, device=device,
                    bos_id=cfg.model.bos_id, max_seconds=0)
    _sync(device)
    score_s = _now() - t2
    calib = pack.calibration or {}
    return {"recipe": recipe_for(cfg.quant).name, "codec": cfg.pack.codec, "model_bytes": pack.bytes_report.model_bytes,
            "calibration_s": calib.get("seconds"), "quantize_pack_s": round(pack.quantize_seconds, 2),
            "quantize_stage_wall_s": round(quant_wall, 2), "read_decode_rebuild_s": round(load_s, 2),
            "roundtrip_score_s": round(score_s, 2), "prequant_bpb": round(pre.val_bpb, 4),
            "roundtrip_bpb": round(post.val_bpb, 4)}


# ---------------------------------------------------------------------------------------------------- driver


def write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    os.replace(tmp, path)


class Checker:
    """Runs stages in isolation; after each one the report so far is rewritten (atomically), so a run killed by its
    time limit still leaves every finished stage on disk."""

    def __init__(self, deadline_s: float, report: dict[str, Any], out: Path) -> None:
        self.t0, self.deadline, self.report, self.out = _now(), deadline_s, report, out
        self.failures: list[dict[str, str]] = report.setdefault("failures", [])
        self.skipped: list[str] = report.setdefault("skipped", [])

    def save(self) -> None:
        self.report["total_s"] = round(_now() - self.t0, 1)
        write_json_atomic(self.out, self.report)

    def run(self, name: str, fn: Callable[[], Any]) -> Any:
        if self.deadline and _now() - self.t0 > self.deadline:
            self.skipped.append(name)
            print(f"[gpu_check] {name}: skipped (past --time-limit {self.deadline:.0f} s)", flush=True)
            return None
        t = _now()
        print(f"[gpu_check] {name} ...", flush=True)
        try:
            out = fn()
            print(f"[gpu_check] {name}: ok in {_now() - t:.1f} s", flush=True)
            return out
        except Exception as exc:  # noqa: BLE001 - every failure is recorded, and the exit status says so
            self.failures.append({"stage": name, "error": f"{type(exc).__name__}: {exc}",
                                  "traceback": traceback.format_exc()})
            print(f"[gpu_check] {name}: FAILED {type(exc).__name__}: {exc}", flush=True)
            return None
        finally:
            self.report.setdefault("stage_seconds", {})[name] = round(_now() - t, 2)


def table(report: dict[str, Any]) -> str:
    lines = [f"device: {report['env'].get('device_name', '?')} ({report['env'].get('device')}), torch "
             f"{report['env'].get('torch')}, attention auto: {report['env'].get('attention_auto')}"]
    if report["train"]:
        lines += ["", "| preset | params | batch (rows × seq) | ms/step | tokens/s | peak mem GB | compile s | muon |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in report["train"]:
            lines.append(f"| {r['preset']} | {r['params']:,} | {r['batch_tokens']:,} ({r['rows']} × {r['seq_len']}) "
                         f"| {r['ms_per_step']} | {r['tokens_per_s']:,} | {r['peak_mem_gb']} | {r['compile_s']} "
                         f"| {r['muon']} |")
    if report["eval"]:
        lines += ["", "| preset | mode | tokens | s | tokens/s | stages (s) |", "|---|---|---|---|---|---|"]
        for preset, rows in report["eval"].items():
            for r in rows:
                stages = ", ".join(f"{k} {v}" for k, v in r["stages_s"].items())
                lines.append(f"| {preset} | {r['mode']} | {r['tokens']:,} | {r['seconds']} | {r['tokens_per_s']:,} "
                             f"| {stages} |")
    if report["pack"]:
        lines += ["", "| preset | recipe | codec | bytes | quantize+pack s | decode+rebuild s | round-trip score s |",
                  "|---|---|---|---|---|---|---|"]
        for preset, r in report["pack"].items():
            lines.append(f"| {preset} | {r['recipe']} | {r['codec']} | {r['model_bytes']:,} | {r['quantize_pack_s']} "
                         f"| {r['read_decode_rebuild_s']} | {r['roundtrip_score_s']} |")
    for f in report["failures"]:
        lines.append(f"FAILED {f['stage']}: {f['error']}")
    for s in report["skipped"]:
        lines.append(f"SKIPPED {s} (time limit)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny widths and lengths, eager (CI)")
    p.add_argument("--presets", default=",".join(PRESETS))
    p.add_argument("--modes", default="", help="eval modes (default: all of eval/config.py EVAL_MODES)")
    p.add_argument("--steps", type=int, default=0, help="timed steps (default 20; dry run 2)")
    p.add_argument("--warmup", type=int, default=0, help="warm-up steps, the first compiles (default 3; dry run 1)")
    p.add_argument("--eval-tokens", type=int, default=0, help="eval slice (default 65,536; dry run 256)")
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--set", action="append", default=[], help="section.field=value override for every preset")
    p.add_argument("--time-limit", type=float, default=450.0, help="start no stage after this many seconds (0 = off)")
    p.add_argument("--out", default="gpu_check.json")
    args = p.parse_args(argv)
    args.steps = args.steps or (2 if args.dry_run else 20)
    args.warmup = args.warmup or (1 if args.dry_run else 3)
    args.eval_tokens = args.eval_tokens or (256 if args.dry_run else 65_536)

    import torch

    from pgolf.eval.config import EVAL_MODES

    if not args.dry_run and not torch.cuda.is_available():
        print("[gpu_check] no CUDA device; use --dry-run for the CPU check", file=sys.stderr)
        return 2
    if args.dry_run:
        torch.set_num_threads(min(2, torch.get_num_threads()))
    device = torch.device("cpu" if args.dry_run else "cuda")
    modes = [m for m in args.modes.split(",") if m] or list(EVAL_MODES)
    report: dict[str, Any] = {"format": "pgolf-gpu-check-v1", "dry_run": args.dry_run,
                              "argv": sys.argv[1:] if argv is None else argv, "env": {}, "train": [], "eval": {},
                              "pack": {}, "record_ms_per_step": RECORD_MS_PER_STEP,
                              "shape_note": f"records' global batch / {RECORD_GPUS} GPUs per step"}
    out_path = Path(args.out)
    check = Checker(args.time_limit, report, out_path)
    report["env"] = check.run("env", lambda: check_env(device)) or {}
    check.save()
    with tempfile.TemporaryDirectory(prefix="pgolf-gpu-check-") as tmp:
        for preset in [s for s in args.presets.split(",") if s]:
            cfg = check.run(f"config:{preset}", lambda preset=preset: preset_config(preset, args))
            if cfg is None:
                check.save()
                continue
            run_dir = Path(tmp) / preset
            run_dir.mkdir(parents=True, exist_ok=True)
            out = check.run(f"train:{preset}", lambda: train_check(preset, cfg, device, run_dir, args.warmup))
            if out is None:
                check.save()
                continue
            row, model = out
            report["train"].append(row)
            check.save()
            report["eval"][preset] = []
            for mode in modes:  # each mode its own stage: one failing mode does not hide the others
                row = check.run(f"eval:{preset}:{mode}", lambda mode=mode: eval_check(model, cfg, device, mode,
                                                                                   args.eval_tokens))
                if row is not None:
                    report["eval"][preset].append(row)
                check.save()
            packed = check.run(f"pack:{preset}", lambda: pack_check(model, cfg, device, run_dir, args.eval_tokens))
            if packed is not None:
                report["pack"][preset] = packed
            check.save()
            del model
            if device.type == "cuda":
                torch.cuda.empty_cache()
    report["complete"] = True
    check.save()
    print(table(report))
    print(f"[gpu_check] wrote {out_path} in {report['total_s']} s; {len(check.failures)} failed stage(s)")
    return 1 if check.failures else 0


if __name__ == "__main__":
    sys.exit(main())
