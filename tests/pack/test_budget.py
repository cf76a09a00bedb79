"""ByteReport arithmetic/format, the budget check, and the code-bytes figure it is given (pgolf.run.counted_code_bytes:
the bundler's measure outside the script, the script's own size inside it).

    python -m pytest tests/pack/test_budget.py -q
"""

from __future__ import annotations

import pytest

from pgolf.experiments.bundle import (
    bundle_source, counted_source, measure_code_bytes, package_files, unwrap_counted,
)
from pgolf.pack.budget import BudgetError, ByteReport, check_budget, script_code_bytes


def test_byte_report_matches_the_baseline_submission():
    r = ByteReport(model_bytes=15_815_847, code_bytes=47_642)  # BASE submission.json (docs/techniques.md#int8-baseline)
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


def test_measure_code_bytes_counts_the_compressed_single_file_script(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text('__version__ = "0"\n')
    (pkg / "submission.py").write_text('"""Docstring: not counted."""\nfrom pgolf.sub.a import A  # nor this comment\n\n\ndef main():\n    return A\n')
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "a.py").write_text("A = 1\n")
    (pkg / "unused.py").write_text("B = 2\n" * 50)  # not imported by pgolf.submission: not in the bundle
    (pkg / "notes.txt").write_text("not code\n")
    bundle = bundle_source(package_files(pkg))
    assert "'pgolf/sub/a.py'" in bundle and "unused" not in bundle and "notes" not in bundle
    counted = counted_source(package_files(pkg), codec="lzma")
    assert measure_code_bytes(package_root=pkg, codec="lzma") == len(counted)
    assert measure_code_bytes(package_root=pkg) == min(len(counted), measure_code_bytes(package_root=pkg,
                                                                                        codec="brotli"))
    assert counted.startswith(b"# -*- coding: latin-1 -*-\nimport lzma as L\nexec(L.decompress(")
    minified = unwrap_counted(counted)
    assert b"Docstring" not in minified and b"comment" not in minified and b"A=1" in minified
    assert measure_code_bytes(package_root=pkg, codec="brotli") != measure_code_bytes(package_root=pkg, codec="lzma")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no .py files"):
        measure_code_bytes(package_root=tmp_path / "empty")
    with pytest.raises(ValueError, match="is not a directory"):
        measure_code_bytes(package_root=tmp_path / "missing")
    with pytest.raises(ValueError, match="unknown counted-code codec"):
        measure_code_bytes(package_root=pkg, codec="zlib")


def test_counted_code_bytes_outside_the_script_is_the_bundlers_measure():
    from pgolf.run import counted_code_bytes

    assert script_code_bytes() is None  # not running from the single-file script
    n = counted_code_bytes(None)
    assert n == measure_code_bytes() and 5_000 < n < 1_000_000  # the installed pgolf package