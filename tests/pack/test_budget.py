"""ByteReport arithmetic/format, the budget check, and the code-bytes measure.

    python -m pytest tests/pack/test_budget.py -q
"""

from __future__ import annotations

import lzma

import pytest

from pgolf.pack.budget import BudgetError, ByteReport, check_budget, code_bundle, measure_code_bytes


def test_byte_report_matches_the_baseline_submission():
    r = ByteReport(model_bytes=15_815_847, code_bytes=47_642)  # BASE submission.json (parameter-golf.md §2.1)
    assert r.total == 15_863_489 and r.headroom == 136_511 and r.fits and r.limit == 16_000_000
    assert r.format() == "model 15,815,847 + code 47,642 = 15,863,489 / 16,000,000 bytes (headroom 136,511)"
    assert r.to_dict() == {"model_bytes": 15_815_847, "code_bytes": 47_642, "limit": 16_000_000,
                           "total": 15_863_489, "headroom": 136_511, "fits": True}


def test_limit_is_inclusive_and_over_budget_is_an_error():
    assert ByteReport(15_999_000, 1_000).fits  # exactly 16,000,000 is allowed
    over = ByteReport(15_999_000, 1_001)
    assert not over.fits and over.headroom == -1 and "OVER by 1" in over.format()
    assert check_budget(ByteReport(1, 1), allow_over=False) is True
    with pytest.raises(BudgetError, match="exceeds the 16,000,000-byte limit by 1 bytes"):
        check_budget(over, allow_over=False)
    assert check_budget(over, allow_over=True) is False
    with pytest.raises(ValueError, match="allow_over_limit"):
        check_budget(ByteReport(10, 10, limit=5), allow_over=False)


def test_measure_code_bytes_is_deterministic_and_counts_every_py_file(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "b.py").write_text("B = 2\n")
    (pkg / "sub" / "a.py").write_text("A = 1\n")
    (pkg / "notes.txt").write_text("not code\n")
    (pkg / "__pycache__").mkdir()
    (pkg / "__pycache__" / "x.py").write_text("ignored\n")
    bundle = code_bundle(pkg)
    assert bundle == b"# b.py\nB = 2\n\n# sub/a.py\nA = 1\n\n"
    assert measure_code_bytes(pkg) == len(lzma.compress(bundle, preset=9 | lzma.PRESET_EXTREME))
    assert measure_code_bytes(pkg, codec="zlib") != measure_code_bytes(pkg)
    n = measure_code_bytes()
    assert n == measure_code_bytes() and 10_000 < n < 1_000_000  # the installed pgolf package
    with pytest.raises(ValueError, match="no .py files"):
        measure_code_bytes(tmp_path / "empty")
