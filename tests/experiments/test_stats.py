"""Welch and margin tests reproduce the R0325 record's published statistics; unit conversions round-trip.

    python -m pytest tests/experiments/test_stats.py -q
"""

from __future__ import annotations

import math

import pytest

from pgolf.experiments.stats import (
    bpb_to_nats, margin_test, nats_to_bpb, summarize, tokens_per_byte, welch, welch_df,
)

# R0325 README: new record vs PR #549, per-seed val_loss in nats
NEW = (1.88276292, 1.88156874, 1.88220393)
OLD = (1.88976776, 1.89110239, 1.88919190)


def test_welch_reproduces_r0325():
    w = welch(NEW, OLD)
    assert round(w.t, 2) == -11.83
    assert round(w.df, 2) == 3.31
    assert round(w.p_two_sided, 4) == 0.0008
    assert w.n_a == w.n_b == 3 and w.mean_a < w.mean_b


def test_scipy_df_matches_welch_satterthwaite():
    assert welch(NEW, OLD).df == pytest.approx(welch_df(NEW, OLD), rel=1e-12)


def test_margin_test_reproduces_r0325():
    m = margin_test(NEW, OLD, margin_nats=0.005)
    assert round(m.t, 2) == -4.29
    assert round(m.p_one_sided, 4) == 0.0095
    assert round(m.df, 2) == 3.31
    assert m.improvement_mean == pytest.approx(0.00784215, abs=1e-7)
    assert m.meets(0.01) and not m.meets(0.005)


def test_margin_test_fails_when_improvement_is_below_margin():
    m = margin_test([x - 0.003 for x in OLD], OLD)  # a 0.003-nat improvement cannot clear a 0.005 margin
    assert m.p_one_sided > 0.5 and not m.meets()


def test_summarize_uses_sample_std():
    mean, std = summarize([1.0, 2.0, 3.0])
    assert mean == 2.0 and std == 1.0  # ddof=1
    assert math.isnan(summarize([4.0])[1])


def test_too_few_values_or_zero_variance_is_a_clear_error():
    with pytest.raises(ValueError, match="at least 2"):
        welch([1.0], OLD)
    with pytest.raises(ValueError, match="zero variance"):
        welch([1.0, 1.0], [2.0, 2.0])


def test_nats_bpb_round_trip_and_record_margin_in_bpb():
    tpb = 0.41
    for nats in (0.005, 1.88, 3.2):
        assert bpb_to_nats(nats_to_bpb(nats, tpb), tpb) == pytest.approx(nats, rel=1e-12)
    # docs/techniques.md#rules: 0.005 nats ≈ 0.00296 bpb for sp1024 (≈ 0.41 tokens/byte)
    assert nats_to_bpb(0.005, 0.4105) == pytest.approx(0.00296, abs=1e-5)


def test_tokens_per_byte_reads_the_roundtrip_eval():
    rec = {"prequant": {"num_tokens": 10, "num_bytes": 20}, "roundtrip": {"num_tokens": 300, "num_bytes": 1200}}
    assert tokens_per_byte(rec) == 0.25
    assert tokens_per_byte({"prequant": {"num_tokens": 10, "num_bytes": 20}}) == 0.5
    with pytest.raises(ValueError, match="num_tokens"):
        tokens_per_byte({"train": {}})


def test_experiment_modules_import_no_scipy_or_matplotlib():
    import subprocess
    import sys

    code = ("import sys, pgolf.experiments.cli, pgolf.experiments.report, pgolf.experiments.stats; "
            "bad = [m for m in ('scipy', 'matplotlib') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
