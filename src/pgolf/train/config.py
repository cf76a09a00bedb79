"""TrainConfig: optimizer, schedule, batch and wallclock settings (defaults = the challenge baseline, BASE)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 1337
    max_wallclock_seconds: float = 600.0
    """Training budget; the LR schedule is a function of elapsed time over this budget. 0 = step-based only."""
    calib_reserve_seconds: float = 0.0
    """Seconds kept out of the budget for in-budget calibration (GPTQ_RESERVE_SECONDS: 12 s R0405, 0.5 s R0427)."""
    iterations: int = 20000
    """Hard cap on optimizer steps (the schedule uses it when max_wallclock_seconds = 0)."""
    train_batch_tokens: int = 524288
    """Global tokens per optimizer step, summed over ranks and accumulation micro-steps."""
    train_seq_len: int = 1024
    grad_accum_steps: int = 1
    """Micro-batches per step and rank; train_batch_tokens must divide evenly."""
    # Muon (matrices) — docs/techniques.md#muon
    matrix_lr: float = 0.04
    muon_momentum: float = 0.95
    muon_momentum_warmup_start: float = 0.85
    muon_momentum_warmup_steps: int = 500
    muon_backend_steps: int = 5
    muon_coeffs: Literal["classic", "polar_express"] = "classic"
    """Newton–Schulz coefficients: (3.4445, −4.7750, 2.0315) ×5, or the Polar Express schedule (PR #1344, R0427)."""
    muon_nesterov: bool = True
    muon_row_normalize: bool = False
    """MuonEq-R: normalise update rows before Newton–Schulz (PR #1217, R0405+)."""
    muon_wd: float = 0.0
    muon_ns_dtype: Literal["auto", "bf16", "fp32"] = "auto"
    """Newton–Schulz precision: 'auto' = bf16 on CUDA (every record) and on CPUs with native bf16 matmuls
    (AVX512-BF16/AMX: ~4× faster than fp32 there, and the records' numerics), fp32 on other CPUs; or force one."""
    autocast: Literal["auto", "bf16", "off"] = "auto"
    """Training forward/backward precision: "bf16" = bf16 autocast with fp32 master weights, optimizer states and
    EMA (the records' CUDA training), "off" = fp32, "auto" = bf16 on CUDA and on CPUs with native bf16 matmuls
    (AVX512-BF16/AMX: ~5× the fp32 matmul rate there), fp32 on other CPUs. Validation and round-trip scoring keep
    their own precision (fp32 on CPU) either way."""
    muon_impl: Literal["auto", "round_robin", "parallel"] = "auto"
    """How Muon is distributed under torchrun: 'parallel' = Parallel Muon (PR #399, R0323+: reduce-scatter of banked
    gradients, batched Newton–Schulz on each rank's shard, all-gather; train/parallel_muon.py), 'round_robin' = the
    baseline (all-reduce of gradients, then of the updates), 'auto' = parallel when world size > 1. Same update."""
    # AdamW (embeddings, scalars) — docs/techniques.md#muon
    tied_embed_lr: float = 0.05
    embed_lr: float = 0.6
    """Untied input embedding LR (only when model.tie_embeddings = false)."""
    head_lr: float = 0.008
    """Untied LM head LR."""
    scalar_lr: float = 0.04
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    adam_eps: float = 1e-8
    adam_wd: float = 0.0
    embed_wd: float = 0.0
    grad_clip_norm: float = 0.0
    """Global-norm clip (0.3 in R0322+); 0 = off."""
    # Schedule — docs/techniques.md#schedule
    warmdown_frac: float = 0.2
    """Final fraction of the budget over which the LR decays linearly (0.667 R0405, 0.75 R0414, 0.85 R0427)."""
    min_lr: float = 0.0
    """LR multiplier floor during warmdown (0.10 in R0427)."""
    qat_threshold: float = 0.0
    """Late QAT: STE fake-quant with the quant recipe's export rule (quant/qat.py) once the LR multiplier drops
    below this (R0322 LATE_QAT_THRESHOLD 0.15); 0 = off."""
    qat_calib_seqs: int = 0
    """Training sequences for the Hessians QAT needs at switch-on when the recipe picks σ / bits per tensor
    (adaptive_clip / mixed_precision); 0 = the exporter's count (quant.calib_seqs, else the recipe's calib_seqs)."""
    ema_decay: float = 0.0
    """EMA of weights, loaded before quantization (0.997 R0322–R0405, 0.9965 R0414+); 0 = off."""
    ema_warmup: bool = True
    """Decay min(ema_decay, (1+t)/(10+t)) at update t (TensorFlow ExponentialMovingAverage `num_updates`), so short
    runs do not average in the initial weights. The records use a constant decay from the initial weights: the
    record presets set false, which reproduces them bit for bit (train/ema.py)."""
    ema_select: Literal["best", "ema"] = "best"
    """End of training, with an EMA: score raw and EMA weights on validation and keep the better ("best"), or always
    keep the EMA as the records do ("ema"). Both scores are logged and recorded in run.json either way."""
    enable_looping_at: float = 0.0
    """Fraction of training after which depth recurrence switches on (0.5 R0405, 0.35 R0414+)."""
    # Engineering
    device: str = "auto"
    """auto = cuda if available else cpu."""
    compile: bool = False
    """torch.compile the model (CUDA)."""
    cpu_malloc: bool = True
    """Single-process CPU training keeps glibc's freed activations for reuse (train/malloc.py: 7–8 % faster steps).
    The GPU presets set false: it never applies on CUDA, and their single-file script leaves the module out."""
    val_every: int = 0
    """Steps between validation passes during training (0 = only at the end)."""
    log_every: int = 10
    checkpoint_every: int = 0
    """Steps between atomic checkpoints (0 = only at the end of training)."""

    def modules_not_run(self) -> tuple[str, ...]:
        """The train/ modules a run of this config never imports, so its single-file script leaves them out
        (pgolf.experiments.closure): Parallel Muon unless `muon_impl` may choose it, the baseline's round robin
        unless `muon_impl` is "round_robin" ("auto" is Parallel Muon in a world of more than one), the CPU malloc
        tuning when `cpu_malloc` is off. tests/train/test_parallel_muon.py and test_loop.py train with each left
        out unimportable."""
        muon = "pgolf.train.parallel_muon" if self.muon_impl == "round_robin" else "pgolf.train.round_robin"
        return (muon,) + (() if self.cpu_malloc else ("pgolf.train.malloc",))

    def __post_init__(self) -> None:
        from pgolf.train.muon import check_coeff_steps  # lazy: keeps this module torch-free at import

        check_coeff_steps(self.muon_coeffs, self.muon_backend_steps)
        if self.train_batch_tokens % (self.train_seq_len * self.grad_accum_steps):
            raise ValueError(
                f"train.train_batch_tokens={self.train_batch_tokens} must be a multiple of "
                f"train.train_seq_len × train.grad_accum_steps = {self.train_seq_len * self.grad_accum_steps}"
            )
        if not 0.0 <= self.warmdown_frac <= 1.0:
            raise ValueError(f"train.warmdown_frac={self.warmdown_frac} must be in [0, 1]")
        if self.qat_calib_seqs < 0:
            raise ValueError(f"train.qat_calib_seqs={self.qat_calib_seqs} must be ≥ 0 (0 = the exporter's count)")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"train.ema_decay={self.ema_decay} must be in [0, 1)")
        if self.autocast not in ("auto", "bf16", "off"):
            raise ValueError(f"train.autocast={self.autocast!r}: expected 'auto', 'bf16' or 'off'")
        if self.muon_impl not in ("auto", "round_robin", "parallel"):
            raise ValueError(f"train.muon_impl={self.muon_impl!r}: expected 'auto', 'round_robin' or 'parallel'")
        if self.ema_select not in ("best", "ema"):
            raise ValueError(f"train.ema_select={self.ema_select!r}: expected 'best' or 'ema'")
        if self.calib_reserve_seconds < 0 or (
            self.max_wallclock_seconds and self.calib_reserve_seconds >= self.max_wallclock_seconds
        ):
            raise ValueError(
                f"train.calib_reserve_seconds={self.calib_reserve_seconds} must be ≥ 0 and below "
                f"train.max_wallclock_seconds={self.max_wallclock_seconds}"
            )
