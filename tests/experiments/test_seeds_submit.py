"""`pgolf seeds` → `pgolf submit` on a tiny config, and the records folder's single-file script reproducing a seed.

    python -m pytest tests/experiments/test_seeds_submit.py -q
"""

from __future__ import annotations

import json
import math
import shlex
import statistics

import pytest

from pgolf.cli import main
from pgolf.experiments.seeds import parse_seeds

from tests.experiments.test_bundle import run_bundle_hidden

TINY = ["--train.max_wallclock_seconds", "0", "--train.iterations", "2", "--train.train_batch_tokens", "256",
        "--data.val_max_tokens", "512", "--run.progress", "lines"]
"""Step-based (deterministic) and seconds-long: cpu-smoke, 2 steps of 4×64 tokens, 512 validation tokens."""


def test_parse_seeds_counts_lists_and_errors():
    assert parse_seeds("3") == [42, 1337, 2024]
    assert parse_seeds("5") == [42, 1337, 2024, 0, 1]
    assert parse_seeds("1") == [42]
    assert len(set(parse_seeds("50"))) == 50 and parse_seeds("50").count(42) == 1
    assert parse_seeds("7,") == [7] and parse_seeds("42, 1337") == [42, 1337]
    for bad, msg in (("0", "count N ≥ 1"), ("a,b", "comma-separated integers"), ("1,1", "repeated"),
                     ("-1,2", "each ≥ 0")):
        with pytest.raises(ValueError, match=msg):
            parse_seeds(bad)


def test_seeds_dry_run_prints_one_torchrun_per_seed(capsys):
    assert main(["seeds", "2", "--preset", "cpu-smoke", "--nproc-per-node", "8", "--dry-run", "--run.name", "x",
                 "--train.matrix_lr=0.03"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    for line, seed in zip(lines, (42, 1337)):
        argv = shlex.split(line)
        assert "--standalone" in argv and "--nproc_per_node=8" in argv
        assert argv[argv.index("-m") + 1:argv.index("-m") + 3] == ["pgolf.cli", "run"]
        assert argv[-3:] == ["--train.matrix_lr=0.03", f"--train.seed={seed}", f"--run.name=x-s{seed}"]
    assert main(["seeds", "2", "--preset", "cpu-smoke", "--dry-run", "--train.seed", "3"]) == 2
    assert "set per run by `pgolf seeds`" in capsys.readouterr().err
    assert main(["seeds", "2", "--preset", "cpu-smoke", "--dry-run", "--train.sed", "3"]) == 2  # typos fail early
    assert "did you mean 'seed'" in capsys.readouterr().err


def test_two_seeds_to_a_records_folder_whose_script_reproduces_the_artifact(tiny_dataset, tmp_path, monkeypatch,
                                                                             capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    monkeypatch.chdir(a)  # run.out_dir is relative ("runs"): the script re-runs with identical config values in b/
    args = ["--preset", "cpu-smoke", "--data.data_dir", str(tiny_dataset.data_dir), "--run.out_dir", "runs",
            "--run.name", "tiny", *TINY]
    assert main(["seeds", "42,1337", *args]) == 0
    out = capsys.readouterr().out
    assert "| **mean** (n=2) |" in out and "| **std** (n=2) |" in out
    seeds_json = a / "runs" / "tiny-seeds.json"
    rec = json.loads(seeds_json.read_text())
    runs = {s: json.loads((a / "runs" / f"tiny-s{s}" / "run.json").read_text()) for s in (42, 1337)}
    assert rec["seeds"] == [42, 1337] and [r["seed"] for r in rec["runs"]] == [42, 1337]
    for row in rec["runs"]:
        r = runs[row["seed"]]
        assert r["config"]["train"]["seed"] == row["seed"] and r["train"]["steps"] == row["steps"] == 2
        assert row["val_bpb"] == r["roundtrip"]["val_bpb"] and row["bytes_total"] == r["bytes"]["total"]
    # --skip-existing: both seeds are done, so nothing trains again and the summary is the same
    assert main(["seeds", "42,1337", *args, "--skip-existing"]) == 0
    again = capsys.readouterr().out
    assert again.count("already done") == 2 and "| **mean** (n=2) |" in again
    assert json.loads(seeds_json.read_text())["runs"] == rec["runs"]
    vals = [runs[s]["roundtrip"]["val_bpb"] for s in (42, 1337)]
    assert vals[0] != vals[1]  # different seeds, different models
    assert math.isclose(rec["summary"]["val_bpb"]["mean"], statistics.mean(vals), rel_tol=1e-12)
    assert math.isclose(rec["summary"]["val_bpb"]["std"], statistics.stdev(vals), rel_tol=1e-9)

    recdir = tmp_path / "record"
    assert main(["submit", str(seeds_json), "--name", "tiny two seeds", "--out", str(recdir),
                 "--baseline-values", "9.1,9.2,9.15", "--author", "Tester"]) == 0
    expected = {"README.md", "submission.json", "requirements.txt", "train_gpt.py", "train_gpt_readable.py",
                "train_seed42.log", "train_seed1337.log", "run_seed42.json", "run_seed1337.json"}
    assert {p.name for p in recdir.iterdir()} == expected
    assert all((recdir / n).stat().st_size > 0 for n in expected)
    sub = json.loads((recdir / "submission.json").read_text())
    losses = [runs[s]["roundtrip"]["val_loss"] for s in (42, 1337)]
    assert sub["seeds"] == [42, 1337] and sub["author"] == "Tester"
    assert math.isclose(sub["val_bpb"], statistics.mean(vals), rel_tol=1e-12)
    assert math.isclose(sub["val_loss"], statistics.mean(losses), rel_tol=1e-12)
    assert math.isclose(sub["val_bpb_std"], statistics.stdev(vals), rel_tol=1e-9)
    assert math.isclose(sub["val_loss_std"], statistics.stdev(losses), rel_tol=1e-9)
    code = (recdir / "train_gpt.py").stat().st_size
    assert sub["bytes_code"] == code == runs[42]["bytes"]["code_bytes"]  # the runs counted this very script
    assert sub["bytes_total"] == max(r["bytes"]["model_bytes"] for r in runs.values()) + code
    for s in (42, 1337):
        got = sub["seed_results"][str(s)]
        assert got["val_bpb"] == runs[s]["roundtrip"]["val_bpb"] and got["val_loss"] == runs[s]["roundtrip"]["val_loss"]
        assert got["artifact_bytes"] == runs[s]["bytes"]["total"] and got["steps"] == 2
        assert (recdir / f"train_seed{s}.log").read_text() == (a / "runs" / f"tiny-s{s}" / "train.log").read_text()
    assert sub["t_statistic"] < 0 and sub["welch_df"] > 0 and sub["record_criteria_met"] in (True, False)
    assert sub["compliance"]["artifact_under_16mb"] and not sub["compliance"]["three_seeds"]
    assert sub["technique_summary"].startswith("preset cpu-smoke: 2L x 64d")
    readme = (recdir / "README.md").read_text()
    assert f"**val_bpb = {sub['val_bpb']:.6f}**" in readme and "| tiny-s1337 | 1337 |" in readme
    assert "torch==" in (recdir / "requirements.txt").read_text()

    # the records folder's counted script, with the package unreachable, re-runs seed 42 from its README command
    cmd = shlex.split(sub["commands"][0])
    assert cmd[:2] == ["python", "train_gpt.py"] and cmd[cmd.index("--train.seed") + 1] == "42"
    assert sub["commands"][0] in readme
    rep = run_bundle_hidden(recdir / "train_gpt.py", cmd[2:], b, b / "rep.json")
    assert rep["rc"] == 0 and rep["hidden"] and rep["pgolf_modules"] == []  # one namespace: no pgolf module
    pkg_run, script_run = a / "runs" / "tiny-s42", b / "runs" / "tiny-s42"
    assert (script_run / "model.pgolf").read_bytes() == (pkg_run / "model.pgolf").read_bytes()
    again = json.loads((script_run / "run.json").read_text())
    assert again["roundtrip"]["val_bpb"] == runs[42]["roundtrip"]["val_bpb"]
    assert again["roundtrip"]["val_loss"] == runs[42]["roundtrip"]["val_loss"]
    assert again["bytes"] == runs[42]["bytes"] and again["config"] == runs[42]["config"]


@pytest.mark.slow
def test_seeds_with_nproc_launches_torchrun_per_seed(tiny_dataset, tmp_path, capsys):
    """--nproc-per-node runs each seed as `torchrun --standalone ... -m pgolf.cli run` (gloo on CPU)."""
    out = tmp_path / "runs"
    assert main(["seeds", "5,", "--nproc-per-node", "1", "--preset", "cpu-smoke", "--data.data_dir",
                 str(tiny_dataset.data_dir), "--run.out_dir", str(out), "--run.name", "tr", *TINY]) == 0
    printed = capsys.readouterr().out
    assert "--nproc_per_node=1 -m pgolf.cli run" in printed and "| tr-s5 | 5 |" in printed
    run = json.loads((out / "tr-s5" / "run.json").read_text())
    assert run["config"]["train"]["seed"] == 5 and run["world_size"] == 1 and run["roundtrip"]["val_bpb"] > 0
    assert json.loads((out / "tr-seeds.json").read_text())["nproc_per_node"] == 1


def test_seeds_json_feeds_compare_and_submit_refuses_mixed_configs(tmp_path, capsys):
    from pgolf.experiments.seeds import expand_runs, summarize_runs
    from pgolf.experiments.submit import load_seed_runs
    from tests.experiments.test_report import make_run, write_run

    dirs = [write_run(tmp_path, make_run(s, val_loss=v, name=f"c-s{s}")) for s, v in ((1, 1.8828), (2, 1.8816),
                                                                                        (3, 1.8822))]
    base = [write_run(tmp_path, make_run(s, val_loss=v, name=f"b-s{s}")) for s, v in ((1, 1.8898), (2, 1.8911),
                                                                                       (3, 1.8892))]
    from pgolf.experiments.report import load_runs

    seeds_file = tmp_path / "c-seeds.json"
    seeds_file.write_text(json.dumps({"format": "pgolf-seeds-v1", **summarize_runs(load_runs(dirs))}))
    assert expand_runs([str(seeds_file)]) == [str(d) for d in dirs]
    assert len(expand_runs([str(seeds_file), str(tmp_path / "c-s*")])) == 3  # the same runs twice: listed once
    assert main(["compare", str(seeds_file), ",".join(map(str, base))]) == 0
    assert "(n=3; 3 runs: c-s1, c-s2, c-s3)" in capsys.readouterr().out
    other = make_run(4, name="c-s4")
    other["config"]["train"]["matrix_lr"] = 0.5
    with pytest.raises(ValueError, match="differs .* beyond train.seed/run.name: train.matrix_lr"):
        load_seed_runs([str(seeds_file), str(write_run(tmp_path, other))])
