"""The one training loop: Muon + AdamW, a wallclock schedule, EMA, depth-recurrence switch, checkpoints, resume.

`train(...)` takes its inputs (config, model, loader, logger) and returns a `TrainResult`; it never parses
arguments or reads the environment. Under torchrun every rank runs it; gradients are averaged with one flat
all-reduce and Muon shares its Newton–Schulz work across ranks (train/muon.py), so a 2-process run equals a
1-process run with the same global batch. The wallclock budget counts only optimizer steps (validation and
checkpoint writes are excluded, as in the records), and rank 0's clock is broadcast so every rank sees the same LR
and stops on the same step.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist

from pgolf.io import remove_stale_temps
from pgolf.train.checkpoint import CHECKPOINT_NAME, check_resumable, load_checkpoint, save_checkpoint
from pgolf.train.config import TrainConfig
from pgolf.train.distributed import world
from pgolf.train.ema import EMA
from pgolf.train.muon import cpu_has_native_bf16
from pgolf.train.optim import (
    apply_lr_multiplier, build_optimizers, clip_gradients, reduce_gradients, set_muon_momentum, step_order,
)
from pgolf.train.schedule import lr_multiplier, muon_momentum_at, training_progress


class TrainingDiverged(RuntimeError):
    """The loss became NaN/inf; the last good checkpoint is kept on disk."""


@dataclass
class TrainResult:
    steps: int
    train_seconds: float
    tokens_seen: int
    final_loss: float
    stopped_by: str
    """'wallclock' or 'iterations'."""
    resumed_from_step: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    """One row per logged step: step, loss, lr_mult, momentum, elapsed_s, tokens_per_s."""
    step_loss: list[float] = field(default_factory=list)
    """The training loss of every step (entry i: step i + 1), rounded to 5 digits: the report's training curve."""
    qat: dict[str, Any] | None = None
    """Late QAT record (quant.qat.QAT.summary plus step / lr_mult at switch-on); None when QAT was not installed."""
    weights: dict[str, Any] | None = None
    """With an EMA: {"chosen": "ema"|"raw", "rule": ema_select, "warmup": bool, "raw": score, "ema": score} where a
    score is the select_fn's result as a dict (None when no select_fn was given); None without an EMA."""

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def autocast_dtype(choice: str, device: torch.device) -> torch.dtype | None:
    """train.autocast → the training autocast dtype, None = fp32. "auto": bf16 on CUDA (every record) and on CPUs
    that multiply bf16 natively (AVX512-BF16 or AMX: there a bf16 matmul runs ~5× the fp32 rate; CPUs without it
    emulate bf16, slower than fp32), else fp32."""
    if choice == "off":
        return None
    if choice == "bf16" or device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16()):
        return torch.bfloat16
    return None


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _synced(value: float, device: torch.device) -> float:
    """Rank 0's value on every rank (keeps LR schedules and stop decisions identical across ranks)."""
    if world()[1] == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.broadcast(t, src=0)
    return float(t.item())


def _mean_over_ranks(t: torch.Tensor) -> torch.Tensor:
    if world()[1] > 1:
        t = t.clone()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t /= world()[1]
    return t


def train(
    cfg: TrainConfig,
    model: torch.nn.Module,
    loader: Any,
    *,
    logger: Any,
    run_dir: Path,
    device: torch.device,
    resume: bool = False,
    val_fn: Callable[[torch.nn.Module], Any] | None = None,
    config_dict: dict[str, Any] | None = None,
    qat: Any = None,
    select_fn: Callable[[torch.nn.Module], Any] | None = None,
    step_fn: Callable[[int, torch.nn.Module], None] | None = None,
) -> TrainResult:
    """Train `model` in place; on return the model holds the weights the run reports (`TrainResult.weights`).

    With cfg.ema_decay > 0 those are the EMA weights, or, with cfg.ema_select = "best" and a `select_fn` (model →
    EvalResult on validation, excluded from the wallclock), whichever of raw and EMA weights scores the lower
    val_bpb; both scores are logged (event "weights") either way. The final checkpoint keeps the raw weights and
    the EMA, and records the choice under "weights".

    loader: a pgolf.data.loader.DistributedTokenLoader (next_batch, state_dict, load_state_dict).
    val_fn: optional model → EvalResult, called every cfg.val_every steps (excluded from the wallclock).
    step_fn: optional (step, model) callback after every optimizer step, outside the wallclock (benches, e.g.
    bench/ema_warmup.py keeps a second EMA with it).
    qat: a quant.qat.QAT installed on `model` (off); switched on (`QAT.switch_on`: the Hessian calibration of
    adaptive-σ / mixed-bits recipes, counted in the wallclock, then the flag) once the LR multiplier <
    cfg.qat_threshold. Its state (on, per-tensor σ / bits) is checkpointed, so a resumed run keeps the same grid.
    """
    rank = world()[0]
    ckpt_path = Path(run_dir) / CHECKPOINT_NAME
    with qat.unhooked(model) if qat is not None else contextlib.nullcontext():
        optimizers = build_optimizers(model, cfg)  # groups parameters by id(module.weight): plain attributes
    ema = EMA(model, cfg.ema_decay, warmup=cfg.ema_warmup) if cfg.ema_decay > 0 else None
    params = [p for p in model.parameters() if p.requires_grad]
    step, elapsed, tokens_seen, resumed_from = 0, 0.0, 0, 0
    history: list[dict[str, float]] = []
    losses: list[float] = []  # every step's loss (already a Python float: no extra device sync)
    qat_record: dict[str, Any] = {}  # step / lr_mult / calibration at switch-on

    if resume:
        remove_stale_temps(run_dir)  # temp files of a killed writer (pgolf.io)
    if resume and ckpt_path.is_file():
        state = load_checkpoint(ckpt_path)
        check_resumable(state, config_dict, model)
        model.load_state_dict(state["model"])
        for opt, opt_state in zip(optimizers, state["optimizers"], strict=True):
            opt.load_state_dict(opt_state)
        if ema is not None and state.get("ema"):
            ema.load_state_dict(state["ema"])
        loader.load_state_dict(state["loader"])
        if state.get("looping_active") and hasattr(model, "set_looping"):
            model.set_looping(True)
        _set_rng_state(state["rng"])
        step, elapsed, tokens_seen = state["step"], state["elapsed_s"], state["tokens_seen"]
        history = list(state.get("history", []))
        losses = list(state.get("step_loss", []))
        if qat is not None and state.get("qat"):
            qat.load_state_dict(state["qat"]["state"])
            qat_record = dict(state["qat"].get("record", {}))
        resumed_from = step
        if ema is not None:
            ema.num_updates = step  # one EMA update per optimizer step (the warm-up schedule continues)
        logger.event("resume", step=step, elapsed_s=round(elapsed, 2), checkpoint=str(ckpt_path))
    elif resume:
        logger.event("resume", note=f"no checkpoint at {ckpt_path}; starting from step 0")

    def checkpoint(weights: dict[str, Any] | None = None) -> None:
        optimizer_states = [o.state_dict() for o in optimizers]  # every rank: ParallelMuon gathers its shards
        if rank == 0:
            save_checkpoint(ckpt_path, {
                "model": model.state_dict(),
                "weights": weights,
                "optimizers": optimizer_states,
                "ema": ema.state_dict() if ema is not None else None,
                "loader": loader.state_dict(),
                "looping_active": bool(getattr(model, "looping_active", False)),
                "rng": _rng_state(),
                "step": step,
                "elapsed_s": elapsed,
                "tokens_seen": tokens_seen,
                "history": history,
                "step_loss": losses,
                "qat": {"state": qat.state_dict(), "record": qat_record} if qat is not None else None,
                "config": config_dict or {},
            })

    amp = autocast_dtype(cfg.autocast, device)
    logger.event("precision", autocast="bf16" if amp is not None else "fp32", rule=cfg.autocast)
    if cfg.cpu_malloc and device.type == "cpu" and world()[1] == 1:
        # glibc: the step's freed activations are reused, not re-faulted (train/malloc.py). Single-process only: a
        # 2-process gloo run once aborted at interpreter exit with it in force (not reproduced; kept out until known)
        from pgolf.train.malloc import retain_freed_memory  # lazy: a script with cpu_malloc off leaves it out

        retain_freed_memory()
    forward = torch.compile(model) if cfg.compile else model
    budget = cfg.max_wallclock_seconds - cfg.calib_reserve_seconds if cfg.max_wallclock_seconds else 0.0
    logger.start_bar(budget if budget else cfg.iterations, "train", unit="s" if budget else "it")
    stopped_by = "iterations"
    last_loss = float("nan")
    model.train()
    while True:
        progress = training_progress(step, elapsed, cfg)
        if step >= cfg.iterations:
            break
        if cfg.max_wallclock_seconds and progress >= 1.0:
            stopped_by = "wallclock"
            break
        if (getattr(getattr(model, "cfg", None), "num_loops", 0) and not model.looping_active
                and progress >= cfg.enable_looping_at):
            model.set_looping(True)
            logger.event("looping", step=step, progress=round(progress, 4), active=True)
        mult = lr_multiplier(progress, cfg.warmdown_frac, cfg.min_lr)
        momentum = muon_momentum_at(step, cfg.muon_momentum_warmup_start, cfg.muon_momentum,
                                    cfg.muon_momentum_warmup_steps)
        if qat is not None and mult < cfg.qat_threshold and not qat.enabled:  # mult ≥ 0: never at threshold 0
            t_qat = time.perf_counter()
            info = qat.switch_on(model)  # a tensor flag: torch.compile reads it at run time (the records' was folded)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            elapsed = _synced(elapsed + time.perf_counter() - t_qat, device)  # calibration is training-time work
            qat_record = {"step": step, "lr_mult": round(mult, 5), **info}
            model.train()
            logger.event("qat", step=step, lr_mult=round(mult, 5), **info)
        apply_lr_multiplier(optimizers, mult)
        set_muon_momentum(optimizers, momentum)

        t0 = time.perf_counter()
        loss_sum = torch.zeros((), device=device)
        for _ in range(cfg.grad_accum_steps):
            x, y = loader.next_batch(cfg.train_batch_tokens, cfg.train_seq_len, cfg.grad_accum_steps)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=amp or torch.bfloat16, enabled=amp is not None):
                loss = forward(x, y)
            (loss / cfg.grad_accum_steps).backward()
            loss_sum += loss.detach().float()
        reduce_gradients(params, optimizers)  # Parallel Muon: reduce-scatters; everything else: one all-reduce
        step_loss = _mean_over_ranks(loss_sum / cfg.grad_accum_steps)
        last_loss = float(step_loss.item())
        if not math.isfinite(last_loss):
            logger.close_bar()
            raise TrainingDiverged(
                f"loss became {last_loss} at step {step + 1}; stopped. The last good checkpoint "
                f"({ckpt_path if ckpt_path.is_file() else 'none written yet'}) is kept. Lower the learning rates "
                "or enable train.grad_clip_norm."
            )
        if cfg.grad_clip_norm > 0:
            clip_gradients(params, optimizers, cfg.grad_clip_norm)  # global norm, also over sharded gradients
        for opt in step_order(optimizers):  # Parallel Muon last: its reduce-scatters overlap the AdamW step
            opt.step()
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        if ema is not None:
            ema.update(model)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        dt = time.perf_counter() - t0
        elapsed = _synced(elapsed + dt, device)
        step += 1
        losses.append(round(last_loss, 5))
        tokens_seen += cfg.train_batch_tokens
        tok_s = cfg.train_batch_tokens / max(dt, 1e-9)
        if step_fn is not None:
            step_fn(step, model)
        if step % cfg.log_every == 0 or step == 1:
            row = {"step": step, "loss": round(last_loss, 5), "lr_mult": round(mult, 5),
                   "momentum": round(momentum, 5), "elapsed_s": round(elapsed, 3), "tokens_per_s": round(tok_s, 1)}
            history.append(row)
            eta = (budget - elapsed) if budget else (cfg.iterations - step) * elapsed / step
            logger.step("train", **row, eta_s=round(max(eta, 0.0), 1))
        elif getattr(logger, "step_due", bool)():  # a progress line between logged steps (not in the history)
            logger.step("train", step=step, loss=round(last_loss, 5), elapsed_s=round(elapsed, 3))
        logger.update_bar(elapsed if budget else step, step=step, loss=last_loss, tok_s=f"{tok_s:,.0f}")
        if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
            checkpoint()
        if val_fn is not None and cfg.val_every and step % cfg.val_every == 0:
            res = val_fn(model)
            model.train()
            logger.event("val", step=step, val_loss=round(res.val_loss, 6), val_bpb=round(res.val_bpb, 6))
    logger.close_bar()
    logger.event("train_done", steps=step, train_s=round(elapsed, 2), stopped_by=stopped_by,
                 tokens=tokens_seen, loss=round(last_loss, 5))
    weights = _choose_weights(cfg, model, ema, select_fn, logger) if ema is not None else None
    checkpoint(weights)  # the model still holds the raw weights here
    if weights is not None and weights["chosen"] == "ema":
        ema.copy_to(model)
    model.eval()
    return TrainResult(steps=step, train_seconds=elapsed, tokens_seen=tokens_seen, final_loss=last_loss,
                       stopped_by=stopped_by, resumed_from_step=resumed_from, history=history, step_loss=losses,
                       qat={**qat_record, **qat.summary()} if qat is not None else None, weights=weights)


def _score_dict(res: Any) -> dict[str, Any] | None:
    if res is None:
        return None
    return dict(res.__dict__) if hasattr(res, "__dict__") else {"val_bpb": float(res)}


def _choose_weights(cfg: TrainConfig, model: torch.nn.Module, ema: EMA, select_fn: Callable | None,
                    logger: Any) -> dict[str, Any]:
    """Score raw and EMA weights with `select_fn` and pick per cfg.ema_select; leaves the raw weights in `model`."""
    raw_res = ema_res = None
    if select_fn is not None:
        raw_res = select_fn(model)
        with ema.applied(model):
            ema_res = select_fn(model)
    chosen = "ema"
    if cfg.ema_select == "best" and raw_res is not None and raw_res.val_bpb < ema_res.val_bpb:
        chosen = "raw"
    fields = {"chosen": chosen, "rule": cfg.ema_select, "decay": cfg.ema_decay, "warmup": cfg.ema_warmup}
    info = {**fields, "updates": ema.num_updates, "raw": _score_dict(raw_res), "ema": _score_dict(ema_res)}
    if raw_res is not None:
        fields.update(raw_val_bpb=round(raw_res.val_bpb, 6), ema_val_bpb=round(ema_res.val_bpb, 6))
    else:
        fields["note"] = "no validation scorer given: EMA weights used unscored"
    logger.event("weights", **fields)
    return info
