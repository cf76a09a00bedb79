"""Reliability: forged artifacts, NaN state, bad resumes, signals and kills end in one clear error (rc ≠ 0) with
nothing half-written and nothing bad kept."""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
import torch

from pgolf.cli import main
from pgolf.config import build_config, load_preset
from pgolf.model.gpt import GPT
from pgolf.pack.codecs import decompress
from pgolf.pack.container import decode_artifact, encode_artifact, write_artifact
from pgolf.pack.format import MAGIC, MAX_BODY_BYTES, ArtifactError
from pgolf.pack.validate import read_artifact
from pgolf.quant.apply import quantize_state_dict
from pgolf.train.checkpoint import NonFiniteState, load_checkpoint, save_checkpoint
from tests.conftest import smoke_args

CFG = build_config([("preset", load_preset("cpu-smoke")), ("test", {"model": {"model_dim": 192, "num_heads": 4,
                                                                                 "num_kv_heads": 2}})])
# model_dim 192: the MLP matrices (192×384) exceed the recipes' 65,536-value passthrough size, so some are quantized


@pytest.fixture(scope="module")
def good_artifact(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = GPT(CFG.model)
    qs, _ = quantize_state_dict(model.state_dict(), "int8-baseline")
    manifest = {"model": asdict(CFG.model), "config": CFG.to_dict(), "recipe": "int8-baseline", "codec": "zlib",
                "looping_active": False}
    path = tmp_path_factory.mktemp("art") / "good.pgolf"
    write_artifact(path, encode_artifact(qs, manifest, "zlib"))
    return path


def _unpack(path: Path) -> tuple[dict, bytes]:
    body = decompress(path.read_bytes()[8:], "zlib")
    (n,) = struct.unpack_from("<I", body, 0)
    return json.loads(body[4 : 4 + n]), body[4 + n :]


def _pack(header: dict, payload: bytes, path: Path) -> Path:
    """A v1 zlib artifact with the CRC recomputed: the forgery reaches the validator, not just the checksum."""
    header = {**header, "payload_crc32": zlib.crc32(payload), "payload_bytes": len(payload)}
    hb = json.dumps(header).encode()
    path.write_bytes(MAGIC + bytes([1, 1]) + zlib.compress(struct.pack("<I", len(hb)) + hb + payload))
    return path


def _forge_model(good: Path, tmp: Path, **fields) -> Path:
    header, payload = _unpack(good)
    header["manifest"]["model"].update(fields)
    return _pack(header, payload, tmp / "forged.pgolf")


def _refused(argv: list[str], capsys, *needles: str) -> str:
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err and all(n in err for n in needles), err
    return err


@pytest.mark.parametrize("fields, needle", [
    ({"num_heads": 0}, "model.num_heads=0: expected a value ≥ 1"),
    ({"model_dim": 100000}, "model.model_dim=100,000: expected at most 16,384"),
    ({"num_layers": 1500}, "model.num_layers=1,500: expected at most 256"),
    ({"num_layers": 3}, "the tensor table does not match the manifest model"),
    ({"model_dim": 128}, "192] but the manifest model implies ["),
    ({"num_heads": 5}, "must be divisible by model.num_heads=5"),
    ({"mlp_mult": float("nan")}, "model.mlp_mult=nan: expected a finite number"),
    ({"tie_embeddings": 1}, "model.tie_embeddings=1 is an integer, expected a boolean"),
])
def test_forged_model_fields_are_refused_before_allocation(good_artifact, tmp_path, capsys, fields, needle):
    path = _forge_model(good_artifact, tmp_path, **fields)
    for verb in (["info", str(path), "--codecs", "none"], ["pack", str(path), "--codec", "zlib"],
                 ["eval", str(path)], ["check-legal", "--artifact", str(path)]):
        _refused(verb, capsys, needle)


def test_manifest_type_confusion_is_refused(good_artifact, tmp_path, capsys):
    header, payload = _unpack(good_artifact)
    header["manifest"]["model"] = [1, 2]
    _refused(["info", str(_pack(header, payload, tmp_path / "a.pgolf"))], capsys, "field 'model' is [1, 2]")
    header, payload = _unpack(good_artifact)
    del header["manifest"]["config"]
    _refused(["check-legal", "--artifact", str(_pack(header, payload, tmp_path / "b.pgolf"))], capsys,
             "manifest field 'config' is None")
    header, payload = _unpack(good_artifact)
    header["manifest"]["looping_active"] = "yes"
    _refused(["eval", str(_pack(header, payload, tmp_path / "c.pgolf"))], capsys, "'looping_active' is 'yes'")


def _row(header: dict, kind: str, dtype: str | None = None) -> dict:
    return next(r for r in header["tensors"] if r["kind"] == kind and r["nbytes"] and dtype in (None, r["dtype"]))


def test_semantic_corruption_is_refused(good_artifact, tmp_path):
    header, payload = _unpack(good_artifact)  # bits label contradicting the codes
    q = _row(header, "q")
    q["bits"] = 2
    with pytest.raises(ArtifactError, match=r"codes span \[-\d+, \d+\] but bits=2 allows only ±1"):
        read_artifact(_pack(header, payload, tmp_path / "bits.pgolf"))
    header, payload = _unpack(good_artifact)  # a NaN scale
    s = _row(header, "scale", "float16")
    p = bytearray(payload)
    p[s["offset"] : s["offset"] + 2] = np.array([np.nan], dtype=np.float16).tobytes()
    with pytest.raises(ArtifactError, match="scale holds 1 NaN/inf value"):
        read_artifact(_pack(header, bytes(p), tmp_path / "nan.pgolf"))
    header, payload = _unpack(good_artifact)  # fp16 → bf16 swap of a passthrough tensor
    _row(header, "passthrough", "float16")["dtype"] = "bfloat16"
    with pytest.raises(ArtifactError, match="stored as bfloat16 for an original float32; expected float16 or"):
        read_artifact(_pack(header, payload, tmp_path / "swap.pgolf"))
    header, payload = _unpack(good_artifact)  # the dtype table lying about the model's dtype
    header["dtypes"][q["name"]] = "float16"
    with pytest.raises(ArtifactError, match="original dtype float16 but the model's is float32"):
        read_artifact(_pack(header, payload, tmp_path / "table.pgolf"))


def test_decompression_bomb_is_refused_within_the_memory_bound(tmp_path):
    d = zlib.compressobj(9)
    bomb = b"".join(d.compress(bytes(1 << 20)) for _ in range((MAX_BODY_BYTES >> 20) + 8)) + d.flush()
    path = tmp_path / "bomb.pgolf"
    path.write_bytes(MAGIC + bytes([1, 1]) + bomb)
    code = ("import resource, sys\nfrom pgolf.pack.validate import read_artifact\nfrom pgolf.pack.format import "
            "ArtifactError\nr0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\ntry:\n    read_artifact(sys."
            "argv[1])\nexcept ArtifactError as e:\n    print(e)\nprint((resource.getrusage(resource.RUSAGE_SELF)."
            "ru_maxrss - r0) // 1024)\n")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120)
    msg, growth = out.stdout.strip().splitlines()
    assert "decompresses to more than the" in msg and "128× its" in msg  # stopped after ~35 MB, not 256 MiB
    assert int(growth) < 0.25 * (MAX_BODY_BYTES >> 20), growth  # was 2.3 GB at the old 1 GiB limit


def test_good_artifact_loads_and_files_honour_the_umask(good_artifact):
    qs, manifest, cfg = read_artifact(good_artifact)
    assert cfg == CFG.model and manifest["recipe"] == "int8-baseline"
    assert good_artifact.stat().st_mode & 0o777 == 0o666 & ~_umask()  # 0644 under umask 022, not 0600


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


# ------------------------------------------------------------------------------------------------ NaN state

def test_checkpoint_writer_refuses_nan_and_keeps_the_last_finite_one(tmp_path):
    path = tmp_path / "checkpoint.pt"
    good = {"model": {"w": torch.ones(3)}, "optimizers": [], "ema": None, "step": 4}
    save_checkpoint(path, good)
    bad = {"model": {"w": torch.tensor([1.0, float("nan"), 2.0])}, "optimizers": [], "ema": None, "step": 5}
    with pytest.raises(NonFiniteState, match=r"at step 5 1 tensor\(s\) hold NaN/inf \(model.w\).*step 4\) is kept"):
        save_checkpoint(path, bad)
    assert load_checkpoint(path)["step"] == 4 and sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]
    torch.save({"format": "pgolf-checkpoint-v1", **bad}, path)  # written by an older pgolf
    with pytest.raises(NonFiniteState, match="cannot be resumed or quantized"):
        load_checkpoint(path)


def test_divergent_run_keeps_no_nan_checkpoint(tiny_dataset, tmp_path, capsys):
    lrs = [f"--train.{k}" for k in ("matrix_lr", "embed_lr", "scalar_lr", "tied_embed_lr")]
    args = smoke_args(tiny_dataset.data_dir, tmp_path, "div", "--train.checkpoint_every", "1",
                      "--train.iterations", "6", *[x for k in lrs for x in (k, "1e30")])
    rc = main(["train", *args])
    err = capsys.readouterr().err
    assert rc != 0 and "diverged" in err and "Traceback" not in err
    ckpt = tmp_path / "div" / "checkpoint.pt"
    if ckpt.exists():  # the last finite one (the message names its step); quantize accepts only that
        assert "last finite checkpoint" in err
        load_checkpoint(ckpt)
    assert not list((tmp_path / "div").glob("*.tmp")) and not list((tmp_path / "div").glob(".*.tmp"))


# ------------------------------------------------------------------------------------------------ resume, signals

def test_resume_errors_name_the_problem(tiny_dataset, tmp_path, capsys):
    _refused(["train", *smoke_args(tiny_dataset.data_dir, tmp_path, "nosuch"), "--resume"], capsys,
             "does not exist")
    assert main(["train", *smoke_args(tiny_dataset.data_dir, tmp_path, "r", "--train.iterations", "2")]) == 0
    capsys.readouterr()
    _refused(["train", *smoke_args(tiny_dataset.data_dir, tmp_path, "r", "--train.iterations", "4",
                                   "--model.num_layers", "3"), "--resume"], capsys,
             "cannot resume", "model.num_layers (2 → 3)")


def test_bad_config_and_bad_data_leave_no_run_dir(tmp_path, capsys):
    _refused(["train", "--preset", "cpu-smoke", "--run.out_dir", str(tmp_path), "--run.name", "x",
              "--model.num_layers", "0"], capsys, "model.num_layers=0")
    _refused(["train", "--preset", "cpu-smoke", "--run.out_dir", str(tmp_path), "--run.name", "y",
              "--data.data_dir", str(tmp_path / "missing")], capsys)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def _train_cmd(data_dir: Path, out: Path, name: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "pgolf.cli", "train", *smoke_args(data_dir, out, name, "--train.iterations", "8",
                                                                     "--train.checkpoint_every", "1", *extra)]


def _wait_for_step(ckpt: Path, step: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout and proc.poll() is None:
        if ckpt.exists():
            try:
                if load_checkpoint(ckpt)["step"] >= step:
                    return
            except (ValueError, OSError):
                pass
        time.sleep(0.05)
    raise AssertionError(f"no checkpoint at step {step} (rc {proc.poll()})")


def test_kill_9_then_resume_is_bit_identical_and_leaves_no_temp_files(tiny_dataset, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ref = subprocess.run(_train_cmd(tiny_dataset.data_dir, tmp_path, "ref"), env=env, capture_output=True,
                         timeout=300)
    assert ref.returncode == 0, ref.stderr[-2000:]
    proc = subprocess.Popen(_train_cmd(tiny_dataset.data_dir, tmp_path, "killed"), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run = tmp_path / "killed"
    _wait_for_step(run / "checkpoint.pt", 3, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    (run / f".checkpoint.pt.{proc.pid}.deadbeef.tmp").write_bytes(b"half")  # what a kill mid-write leaves
    res = subprocess.run(_train_cmd(tiny_dataset.data_dir, tmp_path, "killed", "--resume"), env=env,
                         capture_output=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    a, b = load_checkpoint(tmp_path / "ref" / "checkpoint.pt"), load_checkpoint(run / "checkpoint.pt")
    assert a["step"] == b["step"] == 8
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]


def test_sigterm_is_a_clean_exit_like_ctrl_c(tiny_dataset, tmp_path):
    proc = subprocess.Popen(_train_cmd(tiny_dataset.data_dir, tmp_path, "term", "--train.iterations", "100000"),
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    _wait_for_step(tmp_path / "term" / "checkpoint.pt", 1, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143 and "terminated (SIGTERM)" in err and "Traceback" not in err, err[-2000:]
    assert not [p.name for p in (tmp_path / "term").iterdir() if p.name.endswith(".tmp")]
    load_checkpoint(tmp_path / "term" / "checkpoint.pt")  # the last complete checkpoint is intact


def test_nonfinite_score_is_an_error():
    from pgolf.eval.roundtrip import check_score

    check_score(2.0, 1.2)
    with pytest.raises(ArtifactError, match="non-finite"):
        check_score(float("nan"), float("nan"))


def test_decode_still_rejects_byte_corruption(good_artifact):
    blob = bytearray(good_artifact.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    with pytest.raises(ArtifactError):
        decode_artifact(bytes(blob))
    _ = replace


# ------------------------------------------------------------------------------------------------ workflow errors

def test_compare_with_one_run_per_side_is_an_error_before_any_statistics(capsys):
    assert main(["compare", "--a-values", "1.88", "--b-values", "1.89,1.88"]) == 2
    cap = capsys.readouterr()
    assert "side A has 1 run(s)" in cap.err and "nan" not in cap.out + cap.err and "±" not in cap.out


def test_pruning_with_nothing_quantized_says_so():
    from pgolf.quant.allocate import prune_ones_to_budget

    with pytest.raises(ValueError, match="no quantized tensor whose ±1 codes could be pruned"):
        prune_ones_to_budget({}, lambda qts: 1000, 10)


def test_quantize_without_out_writes_a_new_named_artifact(tiny_dataset, tmp_path, capsys):
    assert main(["train", *smoke_args(tiny_dataset.data_dir, tmp_path, "q", "--train.iterations", "2")]) == 0
    run = tmp_path / "q"
    (run / "model.pgolf").write_bytes(b"the run's artifact")
    assert main(["quantize", str(run), "--codec", "zlib+shuffle"]) == 0
    assert (run / "model.pgolf").read_bytes() == b"the run's artifact"  # never silently replaced
    new = run / "model.int8-baseline.zlib-shuffle.pgolf"
    assert read_artifact(new)[1]["codec"] == "zlib+shuffle" and f"artifact: {new}" in capsys.readouterr().out


def test_token_ids_beyond_the_vocabulary_name_shard_offset_and_vocab(tiny_dataset, tmp_path, capsys):
    import shutil

    from pgolf.data.shards import read_shard, write_shard

    data = tmp_path / "data"
    shutil.copytree(tiny_dataset.data_dir, data)
    shard = sorted(data.glob("*train_*.bin"))[0]
    tokens = np.array(read_shard(shard))
    tokens[1234] = 4000
    write_shard(shard, tokens)
    _refused(["train", *smoke_args(data, tmp_path / "runs", "bad-data")], capsys,
             str(shard), "token id 4000 at offset 1,234", "model.vocab_size=1024")
    assert not (tmp_path / "runs" / "bad-data").exists()
