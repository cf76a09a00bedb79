"""Checkpoints: atomic replace, weights-only loading, clear errors for foreign or corrupt files."""

from __future__ import annotations

import pytest
import torch

from pgolf.train.checkpoint import load_checkpoint, save_checkpoint, trained_weights


def test_round_trip_and_atomic_replace(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"model": {"w": torch.ones(3)}, "step": 1, "ema": None})
    save_checkpoint(path, {"model": {"w": torch.full((3,), 2.0)}, "step": 2, "ema": None})
    state = load_checkpoint(path)
    assert state["step"] == 2 and torch.equal(state["model"]["w"], torch.full((3,), 2.0))
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temp files left behind


def test_failed_write_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"model": {"w": torch.ones(3)}, "step": 1})

    class Unsaveable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(Exception):
        save_checkpoint(path, {"model": {"w": torch.zeros(3)}, "step": 2, "bad": Unsaveable()})
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_foreign_and_corrupt_files_are_clear_errors(tmp_path):
    foreign = tmp_path / "foreign.pt"
    torch.save({"w": torch.ones(1)}, foreign)
    with pytest.raises(ValueError, match="is not a pgolf checkpoint"):
        load_checkpoint(foreign)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="could not be read"):
        load_checkpoint(corrupt)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_trained_weights_prefer_ema():
    state = {"model": {"a": torch.zeros(2), "b": torch.ones(2)}, "ema": {"a": torch.full((2,), 5.0)}}
    w = trained_weights(state)
    assert torch.equal(w["a"], torch.full((2,), 5.0)) and torch.equal(w["b"], torch.ones(2))
    assert trained_weights({"model": {"a": torch.zeros(1)}, "ema": None})["a"].item() == 0
