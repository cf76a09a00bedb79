"""Reports over synthetic run.json records: seeds table, PNG plots + report.md, and the compare/report verbs.

    python -m pytest tests/experiments/test_report.py -q
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pytest

from pgolf.experiments.cli import add_experiment_parsers, run_experiment_command
from pgolf.experiments.report import load_runs, seeds_table, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
KINDS = [("attn_scale", 512, 32, "passthrough"), ("mlp_scale", 512, 32, "passthrough"),
         ("resid_mix", 1024, 32, "passthrough"), ("attn.q_gain", 8, 32, "passthrough"),
         ("attn.c_q.weight", 512 * 512, 6, "int6_sdclip"), ("attn.c_k.weight", 256 * 512, 6, "int6_sdclip"),
         ("attn.c_v.weight", 256 * 512, 6, "int6_sdclip"), ("attn.proj.weight", 512 * 512, 6, "int6_sdclip"),
         ("mlp.fc.weight", 1024 * 512, 5, "int6_sdclip"), ("mlp.proj.weight", 512 * 1024, 5, "int6_sdclip")]


def make_run(seed: int, *, val_loss: float = 1.8822, recipe: str = "int6-sdclip", layers: int = 9,
             total_bytes: int = 15_912_345, name: str | None = None) -> dict:
    """A run.json shaped like `run_pipeline` writes it, with plausible numbers for an 11L-ish record run."""
    tpb, n_tok = 0.4105, 62_021_632
    bpb = val_loss / math.log(2) * tpb
    iters = 4000
    history = []
    for step in range(0, iters + 1, 100):
        frac = step / iters
        lr = min(1.0, (1 - frac) / 0.3)  # warmdown over the last 30%
        history.append({"step": step, "loss": 2.0 + 4.9 * math.exp(-step / 300) + 0.02 * math.sin(step + seed),
                        "lr_mult": lr, "momentum": 0.95, "elapsed_s": 0.148 * step, "tokens_per_s": 3.5e6})
    tensors = [{"name": "skip_weights", "role": "other", "method": "passthrough", "bits": 32, "numel": 2048,
                "mse": 0.0},
               {"name": "tok_emb.weight", "role": "embed", "method": "int8_percentile", "bits": 8,
                "numel": 1024 * 512, "mse": 3.1e-7}]
    for i in range(layers):
        for kind, numel, bits, method in KINDS:
            mse = 0.0 if method == "passthrough" and bits == 32 else (2.0 ** (-2 * bits)) * (1 + 0.1 * i) * 1e-2
            tensors.append({"name": f"blocks.{i}.{kind}", "role": "attn" if "attn" in kind else "mlp",
                            "method": method, "bits": bits, "numel": numel, "mse": mse})
    mode = "sliding(seq_len=2048,stride=64)"
    ev = lambda loss, secs: {"val_loss": loss, "val_bpb": loss / math.log(2) * tpb, "num_tokens": n_tok,  # noqa
                             "num_bytes": round(n_tok / tpb), "seconds": secs, "mode": mode}
    pre, rt = ev(val_loss - 0.012, 71.3), ev(val_loss, 74.9)
    return {
        "format": "pgolf-run-v1", "preset": "record-11l",
        "config": {"model": {"num_layers": layers, "model_dim": 512, "num_heads": 8, "num_kv_heads": 4,
                             "mlp_mult": 2.0, "vocab_size": 1024, "tie_embeddings": True},
                   "train": {"seed": seed, "iterations": 20000, "train_batch_tokens": 524288, "train_seq_len": 2048,
                             "max_wallclock_seconds": 600.0, "matrix_lr": 0.025, "warmdown_frac": 0.3,
                             "ema_decay": 0.997},
                   "quant": {"recipe": recipe}, "pack": {"codec": "brotli"}, "eval": {"seq_len": 2048, "stride": 64},
                   "run": {"name": name or f"seed{seed}"}},
        "env": {"pgolf": "0.1.0", "torch": "2.8.0", "cuda": "12.8", "gpu": "NVIDIA H100 80GB HBM3",
                "git": {"sha": "abc1234", "dirty": False}},
        "world_size": 8, "params": {"total": 26_993_756},
        "train": {"steps": iters, "train_seconds": 592.1, "tokens_seen": iters * 524288, "final_loss": 2.02,
                  "stopped_by": "wallclock", "resumed_from_step": 0, "history": history},
        "prequant": pre, "roundtrip": rt, "quant_gap_bpb": rt["val_bpb"] - pre["val_bpb"],
        "bytes": {"model_bytes": total_bytes - 27_610, "code_bytes": 27_610, "limit": 16_000_000,
                  "total": total_bytes, "headroom": 16_000_000 - total_bytes, "fits": total_bytes <= 16_000_000},
        "quant": {"recipe": recipe, "seconds": 11.2, "tensors": tensors},
        "artifact": "model.pgolf", "wall_seconds": 812.0,
    }


def write_run(root: Path, rec: dict) -> Path:
    d = root / rec["config"]["run"]["name"]
    d.mkdir(parents=True)
    (d / "run.json").write_text(json.dumps(rec))
    return d


def test_load_runs_accepts_dirs_and_files_and_names_a_missing_path(tmp_path):
    d = write_run(tmp_path, make_run(1))
    runs = load_runs([d, d / "run.json"])
    assert len(runs) == 2 and runs[0]["_path"] == runs[1]["_path"] == str(d / "run.json")
    empty = tmp_path / "crashed"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="crashed: no run.json"):
        load_runs([d, empty])


def test_seeds_table_rows_and_mean_std():
    runs = [make_run(s, val_loss=v) for s, v in zip((1337, 42, 2025), (1.88276292, 1.88156874, 1.88220393))]
    table = seeds_table(runs)
    lines = table.strip().splitlines()
    assert len(lines) == 2 + 3 + 2  # header, rule, 3 seeds, mean, std
    assert "round-trip val_bpb" in lines[0] and "artifact bytes" in lines[0]
    assert "| seed1337 | 1337 | 4000 |" in lines[2] and "1.88276292" in lines[2] and "15,912,345" in lines[2]
    assert lines[5].startswith("| **mean** (n=3)") and "1.88217853" in lines[5]
    assert lines[6].startswith("| **std** (n=3)") and "0.00059750" in lines[6]  # sample std, ddof=1


def test_seeds_table_tolerates_missing_sections():
    rec = make_run(7)
    del rec["roundtrip"], rec["bytes"]
    assert "—" in seeds_table([rec])


def _check_png(p: Path) -> None:
    data = p.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 5_000, (p, len(data))


def test_write_report_writes_pngs_and_markdown(tmp_path):
    runs = [write_run(tmp_path, make_run(s, val_loss=1.882 + 0.001 * k, total_bytes=15_900_000 + 9_000 * k))
            for k, s in enumerate((1337, 42))]
    runs.append(write_run(tmp_path, make_run(1, val_loss=1.90, recipe="int8-baseline", total_bytes=15_400_000,
                                             name="int8-base")))
    written = write_report(runs)
    out = runs[0] / "report"
    assert [p.name for p in written] == ["training.png", "score_vs_bytes.png", "quant_tensors.png", "report.md"]
    for p in written[:3]:
        _check_png(p)
    md = (out / "report.md").read_text()
    for p in written[:3]:
        assert f"]({p.name})" in md
    assert "round trip (the score)" in md and "quantization gap" in md and "15,900,000" in md
    assert "## Runs (3)" in md and "int6-sdclip" in md
    assert not list(out.glob("*.tmp"))  # atomic writes leave no temporaries


def test_write_report_bar_chart_fallback_and_out_dir(tmp_path):
    rec = make_run(3)
    rec["quant"]["tensors"] = [{"name": f"layer{i}.w", "role": "other", "method": "int8", "bits": 8,
                                "numel": 4096, "mse": 1e-5 * (i + 1)} for i in range(6)]
    d = write_run(tmp_path, rec)
    written = write_report(d, out_dir=tmp_path / "rep")
    assert written[-1] == tmp_path / "rep" / "report.md"
    _check_png(tmp_path / "rep" / "quant_tensors.png")


def _cli(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="pgolf")
    add_experiment_parsers(p.add_subparsers(dest="verb", required=True))
    return run_experiment_command(p.parse_args(argv))


def test_compare_literal_values_prints_r0325_statistics(capsys):
    rc = _cli(["compare", "--a-values", "1.88276292,1.88156874,1.88220393",
               "--b-values", "1.88976776,1.89110239,1.88919190", "--tokens-per-byte", "0.4105"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "t=-11.83" in out and "df=3.31" in out
    assert "t=-4.29" in out and "p=0.0095" in out and "MEETS" in out
    assert "val_bpb" in out  # converted with --tokens-per-byte


def test_compare_run_dirs_with_globs(tmp_path, capsys):
    new = [write_run(tmp_path / "new", make_run(s, val_loss=v)) for s, v in ((1, 1.880), (2, 1.881), (3, 1.8805))]
    old = [write_run(tmp_path / "old", make_run(s, val_loss=v)) for s, v in ((1, 1.882), (2, 1.8835), (3, 1.881))]
    assert len(new) == len(old) == 3
    rc = _cli(["compare", str(tmp_path / "new" / "*"), ",".join(map(str, old))])
    out = capsys.readouterr().out
    assert rc == 0 and "n=3; 3 runs: seed1, seed2, seed3" in out and "does NOT meet" in out


def test_compare_and_report_errors_are_one_line(tmp_path, capsys):
    assert _cli(["compare", "--a-values", "1.0", "--b-values", "1.1,1.2"]) == 2
    assert "at least 2" in capsys.readouterr().err
    assert _cli(["compare", str(tmp_path / "nope*"), "--b-values", "1,2"]) == 2
    assert "glob matched nothing" in capsys.readouterr().err
    assert _cli(["report", str(tmp_path)]) == 2
    assert "no run.json" in capsys.readouterr().err


def test_report_verb(tmp_path, capsys):
    d = write_run(tmp_path, make_run(5))
    assert _cli(["report", str(d), "--out", str(tmp_path / "r")]) == 0
    assert "report.md" in capsys.readouterr().out


def test_single_run_omits_score_vs_bytes_and_plots_every_step(tmp_path):
    rec = make_run(5)
    rec["train"]["step_loss"] = [7.0 - 0.001 * i for i in range(rec["train"]["steps"])]
    d = write_run(tmp_path, rec)
    written = write_report(d)
    assert [p.name for p in written] == ["training.png", "quant_tensors.png", "report.md"]
    md = (d / "report" / "report.md").read_text()
    assert "val_bpb against artifact bytes: omitted: it compares artifacts" in md
    assert "artifact: `model.pgolf` as written by the run" in md


def test_report_describes_the_artifact_after_a_requantize(tmp_path):
    import os

    from pgolf.experiments.report import artifact_variants, with_current_artifact

    rec = make_run(7, total_bytes=15_912_345)
    d = write_run(tmp_path, rec)
    (d / "model.pgolf").write_bytes(b"x" * (15_912_345 - 27_610))
    assert with_current_artifact(load_runs([d])[0])["quant"]["recipe"] == "int6-sdclip"  # no re-quantize yet
    q = {"recipe": "sdclip-rtn", "codec": "rans-ctx", "seconds": 3.0, "calibration": None, "fit": None,
         "bytes": {"model_bytes": 1000, "code_bytes": 27_610, "total": 28_610, "limit": 16_000_000,
                   "headroom": 16_000_000 - 28_610, "fits": True},
         "tensors": [{"name": "blocks.0.mlp.fc.weight", "role": "mlp", "method": "sdclip_rtn", "bits": 6,
                      "numel": 4096, "mse": 2e-6}]}
    art = d / "model.sdclip-rtn.rans-ctx.pgolf"  # what `pgolf quantize RUN --recipe sdclip-rtn` writes
    art.write_bytes(b"y" * 1000)
    (d / "model.sdclip-rtn.rans-ctx.quant.json").write_text(json.dumps(q))
    os.utime(d / "run.json", (1, 1))  # the run record is older than the re-quantize report
    run = with_current_artifact(load_runs([d])[0])
    assert run["quant"]["recipe"] == "sdclip-rtn" and run["bytes"]["total"] == 28_610
    assert run["config"]["pack"]["codec"] == "rans-ctx" and art.name in run["_artifact"]
    assert run["roundtrip"] is None and "not scored (add --eval)" in run["_artifact"]  # the run's score: not this
    assert artifact_variants(load_runs([d])[0]) == []  # unscored: no point to plot
    assert [p.name for p in write_report(d)] == ["training.png", "quant_tensors.png", "report.md"]
    q["eval"] = [{"data_dir": "", "mode": "standard", "val_loss": 2.5, "val_bpb": 1.5, "tokens": 10, "bytes": 25}]
    (d / "model.sdclip-rtn.rans-ctx.quant.json").write_text(json.dumps(q))
    os.utime(d / "run.json", (1, 1))
    run = with_current_artifact(load_runs([d])[0])
    assert run["roundtrip"]["val_bpb"] == 1.5 and math.isclose(run["quant_gap_bpb"], 1.5 - rec["prequant"]["val_bpb"])
    (v,) = artifact_variants(load_runs([d])[0])
    assert v["config"]["run"]["name"] == "seed7 model.sdclip-rtn.rans-ctx" and v["bytes"]["total"] == 28_610
    written = write_report(d)  # the run's artifact and the re-quantized one: two points, the plot is back
    assert [p.name for p in written] == ["training.png", "score_vs_bytes.png", "quant_tensors.png", "report.md"]
    md = (d / "report" / "report.md").read_text()
    assert "written by `pgolf quantize` after the run" in md and "sdclip-rtn" in md and "28,610" in md
    art.unlink()  # gone: the report is the run's again, and a hand-replaced model.pgolf is flagged
    (d / "model.pgolf").write_bytes(b"z" * 999)
    assert "warning" in with_current_artifact(load_runs([d])[0])["_artifact"]


def test_quant_colour_scale_is_centred_on_the_median_and_at_least_a_decade_each_way(tmp_path, monkeypatch):
    import matplotlib.axes
    import numpy as np

    from pgolf.experiments import plots

    rec = make_run(9)
    for i, r in enumerate(rec["quant"]["tensors"]):  # nearly equal errors: a 0.2 % spread must stay pale
        if r["mse"]:
            r["mse"] = 5.28e-6 * (1 + 0.002 * (i % 2))
    d = write_run(tmp_path, rec)
    calls = []
    orig = matplotlib.axes.Axes.imshow

    def spy(self, m, **kw):
        calls.append((m, kw))
        return orig(self, m, **kw)

    monkeypatch.setattr(matplotlib.axes.Axes, "imshow", spy)
    plots.plot_quant_tensors(load_runs([d])[0], tmp_path / "q.png")
    (mat, kw), = calls
    assert kw["vmin"] == -1.0 and kw["vmax"] == 1.0 and kw["cmap"].name.startswith("RdBu_r")  # ×0.1 … ×10
    assert abs(float(np.nanmedian(mat))) < 1e-3 and float(np.nanmax(np.abs(mat))) < 0.01
