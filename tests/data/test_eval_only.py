"""Eval-only datasets (issue 18) and the byte accounting an artifact records (issue 11).

`data prepare --val-only` writes validation shards and no train shard; `pgolf eval --data-dir D` and
`pgolf quantize --eval --data-dir D [--data-dir E ...]` score such a folder; the artifact manifest and run.json say
which byte accounting was used ("sidecar" or "lut"), and `pgolf eval` refuses data with the other one.

    python -m pytest tests/data/test_eval_only.py -q
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from pgolf.cli import main
from pgolf.data.config import DataConfig
from pgolf.data.corpus import DatasetInfo, bbc_documents, prepare_corpus
from pgolf.data.dataset import resolve_dataset
from pgolf.data.shards import read_shard, write_shard
from pgolf.pack.container import decode_artifact
from tests.conftest import smoke_args


@pytest.fixture(scope="module")
def held_out(tiny_dataset, tmp_path_factory) -> Path:
    """An eval-only dataset: 60 BBC articles the tiny dataset never saw, with its tokenizer, via the CLI."""
    docs = bbc_documents()[1::37][:60]
    root = tmp_path_factory.mktemp("heldout")
    src = root / "docs.jsonl"
    src.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs), encoding="utf-8")
    out = root / "held-out"
    assert main(["data", "prepare", str(src), "--val-only", "--tokenizer", str(tiny_dataset.tokenizer_path),
                 "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def run_dir(tiny_dataset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    assert main(["run", *smoke_args(tiny_dataset.data_dir, out, "smoke")]) == 0
    return out / "smoke"


def test_val_only_prepare_writes_no_train_shard(held_out, tiny_dataset):
    info = DatasetInfo.load(held_out)
    assert info.train_files == [] and info.num_train_tokens == 0
    assert len(info.val_files) == 1 and info.num_val_tokens > 10_000
    manifest = json.loads((held_out / "manifest.json").read_text())
    assert manifest["val"]["docs"] == 60 and manifest["train"]["docs"] == 0
    assert (held_out / "tokenizer.model").read_bytes() == tiny_dataset.tokenizer_path.read_bytes()
    with pytest.raises(FileNotFoundError, match="no shards match data.train_pattern"):
        resolve_dataset(DataConfig(data_dir=str(held_out)))  # training still needs train shards
    assert resolve_dataset(DataConfig(data_dir=str(held_out)), require_train=False).val_files == info.val_files


def test_val_fraction_one_is_val_only_and_needs_a_tokenizer(tiny_dataset, tmp_path):
    docs = bbc_documents()[2::97]
    info = prepare_corpus(docs, tmp_path / "a", vocab_size=1024, val_fraction=1.0,
                          tokenizer_path=tiny_dataset.tokenizer_path)
    assert info.train_files == [] and info.num_val_tokens > 0
    with pytest.raises(ValueError, match="eval-only dataset .* pass the model's tokenizer"):
        prepare_corpus(docs, tmp_path / "b", vocab_size=1024, val_only=True)
    assert not (tmp_path / "b").exists()


def _bpb(out: str) -> float:
    return float(out.split("val_bpb:")[1].split()[0])


def test_eval_scores_an_eval_only_dataset(run_dir, held_out, capsys):
    capsys.readouterr()
    assert main(["eval", str(run_dir / "model.pgolf"), "--data-dir", str(held_out), "--val-max-tokens", "4096"]) == 0
    out = capsys.readouterr().out
    assert "bytes:LUT" in out and 0 < _bpb(out) < 20
    record = json.loads((run_dir / "run.json").read_text())
    assert record["data"]["bytes"] == "lut"
    _, manifest = decode_artifact((run_dir / "model.pgolf").read_bytes())
    assert manifest["byte_accounting"] == "lut"


def test_quantize_eval_scores_every_data_dir(run_dir, held_out, tiny_dataset, capsys, tmp_path):
    out = tmp_path / "q.pgolf"
    assert main(["quantize", str(run_dir), "--out", str(out), "--eval", "--data-dir", str(held_out),
                 "--data-dir", str(tiny_dataset.data_dir), "--data.val_max_tokens", "4096"]) == 0
    report = json.loads(out.with_suffix(".quant.json").read_text())
    assert [e["data_dir"] for e in report["eval"]] == [str(held_out), str(tiny_dataset.data_dir)]
    assert all(e["byte_accounting"] == "lut" and e["tokens"] == 4096 for e in report["eval"])
    assert report["eval"][0]["val_bpb"] != report["eval"][1]["val_bpb"]  # two datasets, two scores
    capsys.readouterr()
    assert main(["eval", str(out), "--data-dir", str(held_out), "--val-max-tokens", "4096"]) == 0
    assert _bpb(capsys.readouterr().out) == pytest.approx(report["eval"][0]["val_bpb"], abs=1e-8)


def test_eval_refuses_data_with_the_other_byte_accounting(run_dir, held_out, tmp_path, capsys):
    # The same tokens with a byte sidecar beside them: a "lut" artifact must not be scored with sidecar bytes.
    d = tmp_path / "with-sidecar"
    shutil.copytree(held_out, d)
    val = np.asarray(read_shard(d / "val_000000.bin"))
    write_shard(d / "val_bytes_000000.bin", np.ones_like(val))
    assert resolve_dataset(DataConfig(data_dir=str(d)), require_train=False).val_bytes_files
    capsys.readouterr()
    assert main(["eval", str(run_dir / "model.pgolf"), "--data-dir", str(d), "--val-max-tokens", "1024"]) == 2
    err = capsys.readouterr().err
    assert "byte accounting 'lut'" in err and "gives 'sidecar'" in err
