"""Learning-rate and momentum schedules as pure functions (docs/techniques.md#muon, #schedule).

No LR warmup: the records' 20 "warmup steps" are torch.compile warm-ups whose weights are thrown away. The LR is
flat, then decays linearly to `min_lr` over the last `warmdown_frac` of training (R0405+ form), where training
progress is wallclock-based when a budget is set. Run the tests: `pytest tests/train/test_schedule.py -q`.
"""

from __future__ import annotations

from pgolf.train.config import TrainConfig


def lr_multiplier(progress: float, warmdown_frac: float, min_lr: float = 0.0) -> float:
    """LR multiplier at `progress` ∈ [0, 1]: 1, then max((1 − progress)/warmdown_frac, min_lr) once
    progress ≥ 1 − warmdown_frac (R0405+ `lr_mul`; WARMDOWN_FRAC 0.667 R0405 · 0.75 R0414 · 0.85 R0427,
    MIN_LR 0.10 R0427 / PR #1787). warmdown_frac = 0 keeps it at 1."""
    if warmdown_frac <= 0.0 or progress < 1.0 - warmdown_frac:
        return 1.0
    return max((1.0 - progress) / warmdown_frac, min_lr)


def muon_momentum_at(step: int, start: float, end: float, warmup_steps: int) -> float:
    """Muon momentum, linear from `start` at step 0 to `end` at `warmup_steps`, then `end`
    (BASE 0.85 → 0.95 over 500 steps; R0322+ 0.92 → 0.99 over 1500)."""
    if warmup_steps <= 0:
        return end
    frac = min(max(step / warmup_steps, 0.0), 1.0)
    return (1.0 - frac) * start + frac * end


def training_progress(step: int, elapsed_s: float, cfg: TrainConfig) -> float:
    """Fraction of training done, in [0, 1]: elapsed over (budget − calibration reserve) with a wallclock budget
    (R0405+ `frac = elapsed_ms / (600 s − GPTQ_RESERVE_SECONDS)`), else step / iterations."""
    if cfg.max_wallclock_seconds > 0:
        frac = elapsed_s / (cfg.max_wallclock_seconds - cfg.calib_reserve_seconds)
    else:
        frac = step / cfg.iterations if cfg.iterations > 0 else 1.0
    return min(max(frac, 0.0), 1.0)
