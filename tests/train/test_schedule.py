"""LR warmdown multiplier, Muon momentum warmup and training progress at their key points.

    python -m pytest tests/train/test_schedule.py -q
"""

from __future__ import annotations

import pytest

from pgolf.train.config import TrainConfig
from pgolf.train.schedule import lr_multiplier, muon_momentum_at, training_progress


def test_lr_multiplier_key_points():
    # R0427: warmdown over the last 85 %, floor 0.10
    assert lr_multiplier(0.0, 0.85, 0.1) == 1.0
    assert lr_multiplier(0.1499, 0.85, 0.1) == 1.0
    assert lr_multiplier(0.15, 0.85, 0.1) == pytest.approx(1.0)  # continuous at the knee
    assert lr_multiplier(0.575, 0.85, 0.1) == pytest.approx(0.5)
    assert lr_multiplier(0.9, 0.85, 0.1) == pytest.approx(0.1 / 0.85 * 1.0)  # (1−0.9)/0.85 ≈ 0.118 > floor
    assert lr_multiplier(0.95, 0.85, 0.1) == 0.1  # (1−0.95)/0.85 ≈ 0.059 → floor
    assert lr_multiplier(1.0, 0.85, 0.1) == 0.1
    assert lr_multiplier(1.0, 0.2) == 0.0  # no floor: decays to 0
    assert lr_multiplier(0.9, 0.2) == pytest.approx(0.5)
    assert lr_multiplier(0.99, 0.0) == 1.0 and lr_multiplier(1.0, 0.0) == 1.0  # warmdown off
    assert lr_multiplier(0.0, 1.0) == 1.0 and lr_multiplier(0.25, 1.0) == pytest.approx(0.75)  # whole run


def test_lr_multiplier_is_monotone():
    values = [lr_multiplier(i / 100, 0.667, 0.05) for i in range(101)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_muon_momentum_warmup_endpoints():
    assert muon_momentum_at(0, 0.85, 0.95, 500) == 0.85
    assert muon_momentum_at(250, 0.85, 0.95, 500) == pytest.approx(0.90)
    assert muon_momentum_at(500, 0.85, 0.95, 500) == pytest.approx(0.95)
    assert muon_momentum_at(10_000, 0.85, 0.95, 500) == pytest.approx(0.95)
    assert muon_momentum_at(1500, 0.92, 0.99, 1500) == pytest.approx(0.99)  # R0322
    assert muon_momentum_at(0, 0.92, 0.99, 0) == 0.99  # no warmup


def test_training_progress_wallclock_and_steps():
    wall = TrainConfig(max_wallclock_seconds=600.0, calib_reserve_seconds=12.0)
    assert training_progress(0, 0.0, wall) == 0.0
    assert training_progress(10**6, 294.0, wall) == pytest.approx(0.5)  # the step count is ignored
    assert training_progress(0, 700.0, wall) == 1.0  # clamped
    steps = TrainConfig(max_wallclock_seconds=0.0, iterations=200)
    assert training_progress(50, 1e9, steps) == pytest.approx(0.25)
    assert training_progress(400, 0.0, steps) == 1.0
