"""Shared fixtures: a small real dataset (a slice of the embedded BBC News corpus), prepared once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)  # CI has 2 cores; keep tests predictable and leave one for the other process

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """~450 BBC articles → a 1024-piece tokenizer and train/val shards (a few seconds)."""
    from pgolf.data.corpus import bbc_documents, prepare_corpus

    docs = bbc_documents()[::5]
    out = tmp_path_factory.mktemp("data") / "bbc-tiny"
    return prepare_corpus(docs, out, vocab_size=1024, val_fraction=0.1, name="bbc-tiny")


def smoke_args(data_dir: Path, out_dir: Path, name: str, *extra: str) -> list[str]:
    """CLI arguments for a seconds-long cpu-smoke run on `data_dir`."""
    return ["--preset", "cpu-smoke", "--data.data_dir", str(data_dir), "--run.out_dir", str(out_dir),
            "--run.name", name, "--run.progress", "lines", *extra]
