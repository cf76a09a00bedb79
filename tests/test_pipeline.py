"""End to end: `pgolf run` on cpu-smoke writes an artifact and run.json; `info`, `eval`, `quantize` agree with it.

    python -m pytest tests/test_pipeline.py -q
"""

from __future__ import annotations

import json
import math

import pytest

from pgolf.cli import main
from tests.conftest import smoke_args


@pytest.fixture(scope="module")
def smoke_run(tiny_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    assert main(["run", *smoke_args(tiny_dataset.data_dir, out, "smoke")]) == 0
    return out / "smoke"


def test_run_writes_artifact_and_record(smoke_run, capsys):
    record = json.loads((smoke_run / "run.json").read_text())
    assert (smoke_run / "model.pgolf").is_file() and (smoke_run / "train.log").is_file()
    assert record["bytes"]["model_bytes"] == (smoke_run / "model.pgolf").stat().st_size
    assert record["bytes"]["total"] == record["bytes"]["model_bytes"] + record["bytes"]["code_bytes"]
    pre, rt = record["prequant"]["val_bpb"], record["roundtrip"]["val_bpb"]
    assert math.isfinite(pre) and math.isfinite(rt)
    assert record["quant_gap_bpb"] == pytest.approx(rt - pre)
    assert abs(rt - pre) < 0.05  # int8 per-row barely moves a tiny model
    assert record["train"]["steps"] > 0 and record["config"]["train"]["train_seq_len"] == 64
    assert record["env"]["torch"]


def test_eval_verb_reproduces_the_roundtrip_score(smoke_run, capsys):
    record = json.loads((smoke_run / "run.json").read_text())
    capsys.readouterr()
    assert main(["eval", str(smoke_run / "model.pgolf")]) == 0
    out = capsys.readouterr().out
    assert f"val_bpb:{record['roundtrip']['val_bpb']:.8f}" in out


def test_info_verb_prints_manifest_and_bytes(smoke_run, capsys):
    capsys.readouterr()
    assert main(["info", str(smoke_run / "model.pgolf")]) == 0
    out = capsys.readouterr().out
    assert "recipe: int8-baseline" in out and "blocks.0.attn.c_q.weight" in out and "/ 16,000,000" in out


def test_quantize_verb_rewrites_with_another_codec(smoke_run, tmp_path, capsys):
    out_path = tmp_path / "lzma.pgolf"
    assert main(["quantize", str(smoke_run), "--codec", "lzma", "--out", str(out_path)]) == 0
    assert out_path.is_file() and out_path.with_suffix(".quant.json").is_file()
    assert main(["eval", str(out_path)]) == 0
    record = json.loads((smoke_run / "run.json").read_text())
    assert f"val_bpb:{record['roundtrip']['val_bpb']:.8f}" in capsys.readouterr().out  # same codes, same score


def test_over_budget_is_an_error_unless_allowed(tiny_dataset, tmp_path, capsys):
    args = smoke_args(tiny_dataset.data_dir, tmp_path, "tight", "--pack.byte_limit", "1000",
                      "--train.iterations", "2")
    assert main(["run", *args]) == 2
    assert "exceeds" in capsys.readouterr().err
    assert main(["run", *args, "--pack.allow_over_limit", "true"]) == 0


def test_cli_errors_are_one_clear_line(capsys):
    assert main(["run", "--preset", "cpu-smoke", "--train.matrx_lr", "1"]) == 2
    err = capsys.readouterr().err
    assert "did you mean 'matrix_lr'" in err and "valid train fields" in err
    assert main(["eval", "/nonexistent/model.pgolf"]) == 2
