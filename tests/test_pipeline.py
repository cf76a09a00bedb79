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


def test_quantize_verb_with_a_hessian_recipe_file(smoke_run, tmp_path, capsys):
    recipe = tmp_path / "mine.toml"
    recipe.write_text('base = "sota-lqer"\ncalib_seqs = 4\npassthrough_max_numel = 4096\n')
    out_path = tmp_path / "mine.pgolf"
    assert main(["quantize", str(smoke_run), "--recipe", str(recipe), "--out", str(out_path)]) == 0
    report = json.loads(out_path.with_suffix(".quant.json").read_text())
    cal = report["calibration"]
    assert cal["source"] == "train" and cal["seqs"] == 4 and cal["tokens"] == 4 * 64 and cal["seconds"] > 0
    assert cal["valid_for_record"] is False  # collected after training, no calib reserve
    rows = {r["name"]: r for r in report["tensors"]}
    fc = rows["blocks.0.mlp.fc.weight"]
    assert fc["method"] == "sdclip_gptq" and fc["sigma"] == 11.5 and fc["hessian_err"] > 0 and fc["damp"] == 0.01
    out = capsys.readouterr().out
    assert "hessian_err" in out and "sdclip_gptq" in out
    assert main(["eval", str(out_path)]) == 0
    rt = float(capsys.readouterr().out.split("val_bpb:")[1].split()[0])
    record = json.loads((smoke_run / "run.json").read_text())
    assert abs(rt - record["prequant"]["val_bpb"]) < 0.1


def test_run_with_a_gptq_recipe_records_calibration(tiny_dataset, tmp_path):
    args = smoke_args(tiny_dataset.data_dir, tmp_path, "gptq", "--quant.recipe", "sdclip", "--quant.calib_source",
                      "random", "--quant.calib_seqs", "4")
    assert main(["run", *args]) == 0
    record = json.loads((tmp_path / "gptq" / "run.json").read_text())
    cal = record["quant"]["calibration"]
    assert cal["source"] == "random" and cal["valid_for_record"] is True and cal["tokens"] == 4 * 64
    assert math.isfinite(record["roundtrip"]["val_bpb"])


@pytest.mark.parametrize("mode", ["sliding", "doc", "ttt-sgd"])
def test_eval_modes_from_the_cli(smoke_run, mode, capsys):
    capsys.readouterr()
    assert main(["eval", str(smoke_run / "model.pgolf"), "--mode", mode, "--val-max-tokens", "2048"]) == 0
    out = capsys.readouterr().out
    assert "final_roundtrip" in out and "eval_timing" in out


def test_check_legal_verb(smoke_run, capsys):
    assert main(["check-legal", "--artifact", str(smoke_run / "model.pgolf"), "--mode", "ttt-sgd",
                 "--tokens", "192", "--seq-len", "32"]) == 0
    assert "ttt-sgd     PASS" in capsys.readouterr().out


def test_run_record_git_info_works_wherever_the_code_sits(monkeypatch, tmp_path):
    # the single-file script is `pgolf.__file__` itself: at /train_gpt.py or /workspace/train_gpt.py there is no
    # third parent folder to run git in (that raised IndexError and killed the run before training)
    import pgolf
    from pgolf.run import _git_sha

    for where in ("/train_gpt.py", str(tmp_path / "train_gpt.py")):
        monkeypatch.setattr(pgolf, "__file__", where)
        assert _git_sha() == {"sha": None, "dirty": None}  # neither is in a git checkout
