"""bench/gpu_check.py --dry-run: every stage of the device check runs on CPU at tiny sizes (so the script cannot rot
between GPU sessions), the JSON holds every preset / mode / pack row, and a failing stage makes the exit status 1.

    python -m pytest tests/test_gpu_check.py -q
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu_check.py"


def _run(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path / "check.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), *args], capture_output=True, text=True,
                          timeout=300, env=env)
    return proc, json.loads(out.read_text())


def test_dry_run_runs_every_stage(tmp_path):
    from pgolf.eval.config import EVAL_MODES

    proc, report = _run(tmp_path, "--dry-run")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert report["dry_run"] and report["complete"] and not report["failures"] and not report["skipped"]
    assert "train:sota-sp8192" in report["stage_seconds"] and "eval:record-11l:ttt-phased" in report["stage_seconds"]
    assert report["env"]["attention_auto"]["documents"] == "SDPA + block-diagonal mask"
    assert [r["preset"] for r in report["train"]] == ["record-11l", "sota-sp8192"]
    for r in report["train"]:
        assert r["steps"] == 3 and r["timed_steps"] == 2 and r["ms_per_step"] > 0 and r["tokens_per_s"] > 0
    assert report["train"][1]["looping"] and report["train"][1]["attention"] == "documents"
    for preset in ("record-11l", "sota-sp8192"):
        rows = report["eval"][preset]
        assert [r["mode"] for r in rows] == list(EVAL_MODES)
        assert all(r["tokens_per_s"] > 0 and r["stages_s"] for r in rows)
        pack = report["pack"][preset]
        assert pack["model_bytes"] > 0 and pack["roundtrip_bpb"] > 0
        assert abs(pack["roundtrip_bpb"] - pack["prequant_bpb"]) < 0.1 * pack["prequant_bpb"]
    assert "| record-11l |" in proc.stdout and "0 failed stage(s)" in proc.stdout


def test_a_failing_stage_sets_the_exit_status(tmp_path):
    proc, report = _run(tmp_path, "--dry-run", "--presets", "no-such-preset", "--modes", "standard")
    assert proc.returncode == 1
    assert [f["stage"] for f in report["failures"]] == ["config:no-such-preset"]
    assert "unknown preset" in report["failures"][0]["error"] and "FAILED config:no-such-preset" in proc.stdout
