"""sota-sp8192 (R0427's recipe) trains on CaseOps data end to end on CPU at smoke size and is scored with sidecar
bytes: run.json and the artifact record "sidecar", the round-trip bytes are the sidecar's, and `pgolf eval` of the
artifact refuses the same data without its sidecar. Needs ../shared/data/caseops-sample; skips without it.

    python -m pytest tests/data/test_caseops_train.py -q
"""

from __future__ import annotations

import json
import shutil

import numpy as np

from pgolf.cli import main
from pgolf.data.shards import read_shard
from pgolf.pack.container import decode_artifact
from tests.data.test_caseops import CASEOPS_MODEL, CASEOPS_SAMPLE, need_fixture

# R0427's architecture (loops, parallel residuals, XSA, gates, 8192 vocab) at a size one CPU core trains in seconds.
SMOKE = ["--model.num_layers", "4", "--model.loop_start", "1", "--model.loop_end", "2",
         "--model.parallel_start_layer", "3", "--model.model_dim", "32", "--model.num_heads", "2",
         "--model.num_kv_heads", "1", "--train.train_seq_len", "64", "--train.train_batch_tokens", "512",
         "--train.iterations", "2", "--train.max_wallclock_seconds", "0", "--eval.seq_len", "64",
         "--eval.stride", "0", "--eval.batch_seqs", "16", "--data.val_max_tokens", "512"]


def test_sota_preset_trains_and_scores_on_caseops_data(tmp_path, capsys):
    need_fixture()
    assert main(["run", "--preset", "sota-sp8192", "--data.data_dir", str(CASEOPS_SAMPLE), *SMOKE,
                 "--run.out_dir", str(tmp_path), "--run.name", "co", "--run.progress", "lines"]) == 0
    assert "bytes:sidecar" in capsys.readouterr().out
    record = json.loads((tmp_path / "co" / "run.json").read_text())
    assert record["data"]["bytes"] == "sidecar"
    side = np.asarray(read_shard(CASEOPS_SAMPLE / "fineweb_val_bytes_000000.bin")).astype(np.int64)
    assert record["roundtrip"]["num_bytes"] == int(side[1:513].sum())  # targets 1..512 of the val stream
    assert record["roundtrip"]["num_tokens"] == 512
    _, manifest = decode_artifact((tmp_path / "co" / "model.pgolf").read_bytes())
    assert manifest["byte_accounting"] == "sidecar"

    bare = tmp_path / "bare"  # the same data without its byte sidecar
    bare.mkdir()
    for name in ("fineweb_val_000000.bin", CASEOPS_MODEL.name):
        shutil.copyfile(CASEOPS_SAMPLE / name, bare / name)
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "co" / "model.pgolf"), "--data-dir", str(bare)]) == 2
    assert "is a CaseOps tokenizer" in capsys.readouterr().err
