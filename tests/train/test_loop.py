"""The training loop: resume after a kill is bit-identical, 2 processes equal 1, NaN stops with the checkpoint kept.

    python -m pytest tests/train/test_loop.py -q
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pgolf.train.checkpoint import load_checkpoint
from tests.conftest import smoke_args

STEP_BASED = ["--train.max_wallclock_seconds", "0", "--train.warmdown_frac", "0.5", "--train.ema_decay", "0.9"]


def _pgolf(*args: str, env: dict | None = None, launcher: list[str] | None = None) -> subprocess.CompletedProcess:
    cmd = (launcher or [sys.executable, "-m", "pgolf.cli"]) + list(args)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    state = load_checkpoint(run_dir / "checkpoint.pt")
    return {**{f"model.{k}": v for k, v in state["model"].items()},
            **{f"ema.{k}": v for k, v in (state["ema"] or {}).items() if isinstance(v, torch.Tensor)}}


@pytest.mark.parametrize("autocast", ["off", "bf16"])
def test_resume_after_kill_is_bit_identical(tiny_dataset, tmp_path, autocast):
    common = STEP_BASED + ["--train.iterations", "24", "--train.checkpoint_every", "4", "--train.autocast", autocast]
    ref = _pgolf("train", *smoke_args(tiny_dataset.data_dir, tmp_path, "full", *common))
    assert ref.returncode == 0, ref.stderr

    killed_dir = tmp_path / "killed"
    args = [sys.executable, "-m", "pgolf.cli", "train",
            *smoke_args(tiny_dataset.data_dir, tmp_path, "killed", *common, "--train.log_every", "1")]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    killed_at = None
    for line in proc.stdout:  # kill as soon as step 10 is logged (checkpoint at step 8 is on disk)
        if line.startswith("train step:10 "):
            proc.send_signal(signal.SIGKILL)
            killed_at = 10
            break
    proc.wait(timeout=60)
    assert killed_at is not None, "the run finished before it could be killed"
    state = load_checkpoint(killed_dir / "checkpoint.pt")
    assert 0 < state["step"] < 24

    resumed = _pgolf("train", *smoke_args(tiny_dataset.data_dir, tmp_path, "killed", *common), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert f"resume step:{state['step']}" in resumed.stdout
    a, b = _weights(tmp_path / "full"), _weights(killed_dir)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after resume"


def test_two_processes_equal_one(tiny_dataset, tmp_path):
    # fp32 Newton–Schulz and fp32 training: the comparison is of the data split and the reductions, at fp32 rounding
    # (bf16 NS and bf16 autocast, the "auto" choices on CPUs with native bf16, turn summation-order noise into bf16
    # rounding differences)
    common = STEP_BASED + ["--train.iterations", "6", "--train.train_batch_tokens", "2048",
                           "--train.muon_ns_dtype", "fp32", "--train.autocast", "off"]
    one = _pgolf("train", *smoke_args(tiny_dataset.data_dir, tmp_path, "w1", *common))
    assert one.returncode == 0, one.stderr
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                str(29500 + os.getpid() % 1000), "-m", "pgolf.cli"]
    two = _pgolf("train", *smoke_args(tiny_dataset.data_dir, tmp_path, "w2", *common), launcher=torchrun)
    assert two.returncode == 0, two.stdout + two.stderr
    assert "world_size:2" in two.stdout
    a, b = _weights(tmp_path / "w1"), _weights(tmp_path / "w2")
    # The all-reduced gradient differs from the 1-process gradient only by float summation order. Muon's
    # orthogonalised updates keep that at rounding level; AdamW divides by sqrt(v), so embedding rows of tokens
    # that were almost never seen (gradient ~ eps) can move by up to ~lr·1e-3. A wrong data split or a missing
    # all-reduce moves every element by O(lr) instead (checked by the loss comparison below as well).
    for k in a:
        diff = (a[k].float() - b[k].float()).abs()
        assert diff.max() < 1e-3, f"{k}: max |Δ| {diff.max():.3g}"
        assert (diff > 1e-5).float().mean() < 1e-3, f"{k}: {(diff > 1e-5).float().mean():.2%} elements differ"
    losses = lambda out: [l.split(" loss:")[1].split()[0] for l in out.splitlines() if l.startswith("train step:")]
    assert losses(one.stdout) and losses(one.stdout) == losses(two.stdout)
    # and the runs really trained: weights moved away from initialisation
    assert not torch.equal(a["model.blocks.0.mlp.fc.weight"], torch.zeros_like(a["model.blocks.0.mlp.fc.weight"]))


class _NaNAfter(torch.nn.Module):
    """A one-matrix model whose loss turns NaN at a given call; exposes what the loop needs."""

    def __init__(self, nan_at: int):
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(8, 8) * 0.1)
        self.calls, self.nan_at = 0, nan_at

    def optimizer_groups(self):
        return {"matrix": [self.w], "embed": [], "head": [], "scalar": []}

    def forward(self, x, y):
        self.calls += 1
        loss = (self.w ** 2).sum() + x.float().mean() * 0
        return loss * float("nan") if self.calls >= self.nan_at else loss


class _Loader:
    def __init__(self):
        self.pos = 0

    def next_batch(self, global_tokens, seq_len, grad_accum_steps):
        self.pos += 1
        x = torch.zeros(1, seq_len, dtype=torch.long)
        return x, x

    def state_dict(self):
        return {"pos": self.pos}

    def load_state_dict(self, d):
        self.pos = d["pos"]


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    from pgolf.log import RunLogger
    from pgolf.train.config import TrainConfig
    from pgolf.train.loop import TrainingDiverged, train

    cfg = TrainConfig(max_wallclock_seconds=0, iterations=10, train_seq_len=8, train_batch_tokens=8,
                      checkpoint_every=2, log_every=1)
    model = _NaNAfter(nan_at=6)
    with pytest.raises(TrainingDiverged, match="loss became nan at step 6"):
        train(cfg, model, _Loader(), logger=RunLogger(None, enabled=False), run_dir=tmp_path,
              device=torch.device("cpu"))
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["step"] == 4
    assert torch.isfinite(state["model"]["w"]).all()


def test_fifty_step_run_reports_weights_no_worse_than_raw(tiny_dataset, tmp_path):
    """Issue 18: a short run's EMA (0.99, no warm-up: 0.99⁵⁰ = 60 % initial weights) must not silently win."""
    import json

    from pgolf.train.checkpoint import trained_weights

    common = ["--train.max_wallclock_seconds", "0", "--train.iterations", "50", "--train.ema_decay", "0.99",
              "--train.ema_warmup", "false"]
    res = _pgolf("run", *smoke_args(tiny_dataset.data_dir, tmp_path, "short", *common))
    assert res.returncode == 0, res.stdout + res.stderr
    record = json.loads((tmp_path / "short" / "run.json").read_text())
    w = record["weights"]
    raw, ema = w["raw"]["val_bpb"], w["ema"]["val_bpb"]
    assert w["rule"] == "best" and w["updates"] == 50
    assert record["prequant"]["val_bpb"] == min(raw, ema) <= raw
    assert w["chosen"] == ("raw" if raw < ema else "ema")
    assert raw < ema  # 60 % of the initialisation: the unwarmed EMA is the worse one here
    line = next(l for l in res.stdout.splitlines() if l.startswith("weights chosen:"))
    assert line.startswith("weights chosen:raw rule:best")
    logged = {k: float(v) for k, v in (f.split(":") for f in line.split() if f.split(":")[0].endswith("val_bpb"))}
    # the log rounds to 6 digits and then prints 6 significant ones: compare values, not strings (double rounding)
    assert abs(logged["raw_val_bpb"] - raw) < 2e-5 and abs(logged["ema_val_bpb"] - ema) < 2e-5, (line, raw, ema)
    state = load_checkpoint(tmp_path / "short" / "checkpoint.pt")
    assert state["weights"]["chosen"] == w["chosen"]
    chosen = trained_weights(state)
    assert all(torch.equal(chosen[k], state["model"][k]) for k in chosen)  # raw was chosen
    ema_w = trained_weights(state, "ema")
    assert any(not torch.equal(ema_w[k], state["model"][k]) for k in ema_w)
    # pgolf quantize --weights: ema and raw give different artifacts; the default is the run's choice (raw).
    outs = {}
    for which in ("ema", "raw", None):
        out = tmp_path / f"q-{which}.pgolf"
        q = _pgolf("quantize", str(tmp_path / "short"), "--out", str(out), *(["--weights", which] if which else []))
        assert q.returncode == 0, q.stdout + q.stderr
        outs[which] = out.read_bytes()
    assert outs["ema"] != outs["raw"] and outs[None] == outs["raw"]


def test_records_rule_keeps_the_ema_and_still_scores_both(tiny_dataset, tmp_path):
    common = ["--train.max_wallclock_seconds", "0", "--train.iterations", "12", "--train.ema_decay", "0.9",
              "--train.ema_select", "ema"]
    res = _pgolf("run", *smoke_args(tiny_dataset.data_dir, tmp_path, "rule", *common))
    assert res.returncode == 0, res.stdout + res.stderr
    import json

    record = json.loads((tmp_path / "rule" / "run.json").read_text())
    w = record["weights"]
    assert w["chosen"] == "ema" and w["warmup"] is True
    assert record["prequant"]["val_bpb"] == w["ema"]["val_bpb"] and w["raw"]["val_bpb"] > 0


_MALLOC_BLOCKED = ("import sys; sys.modules['pgolf.train.malloc'] = None; from pgolf.cli import main; "
                   "sys.exit(main(sys.argv[1:]))")


def test_training_with_cpu_malloc_off_never_imports_malloc_and_gives_the_same_weights(tiny_dataset, tmp_path):
    from pgolf.train.config import TrainConfig

    assert "pgolf.train.malloc" in TrainConfig(cpu_malloc=False).modules_not_run()
    assert "pgolf.train.malloc" not in TrainConfig().modules_not_run()
    common = STEP_BASED + ["--train.iterations", "4"]
    on = _pgolf("train", *smoke_args(tiny_dataset.data_dir, tmp_path, "on", *common))
    assert on.returncode == 0, on.stderr
    blocked = _pgolf("train", *smoke_args(tiny_dataset.data_dir, tmp_path, "on-blocked", *common),
                     launcher=[sys.executable, "-c", _MALLOC_BLOCKED])
    assert blocked.returncode != 0 and "pgolf.train.malloc" in blocked.stderr  # the block holds: on imports it
    off = _pgolf("train", *smoke_args(tiny_dataset.data_dir, tmp_path, "off", *common, "--train.cpu_malloc", "false"),
                 launcher=[sys.executable, "-c", _MALLOC_BLOCKED])
    assert off.returncode == 0, off.stderr
    a, b = _weights(tmp_path / "on"), _weights(tmp_path / "off")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # a process setting, not numerics
