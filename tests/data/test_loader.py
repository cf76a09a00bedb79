"""Loader: x/y alignment, the global batch is the same for any world size / grad accumulation, exact resume,
wrap-around across shards, and validation-token truncation as the challenge does it.

    python -m pytest tests/data/test_loader.py -q
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pgolf.data.loader import DistributedTokenLoader, load_validation_tokens
from pgolf.data.shards import write_shard


@pytest.fixture
def stream_files(tmp_path):
    """Three shards (one empty) whose concatenation is 0, 1, 2, ..., 1099: token value = stream offset."""
    sizes = [500, 0, 350, 250]
    files, start = [], 0
    for i, n in enumerate(sizes):
        files.append(tmp_path / f"train_{i:06d}.bin")
        write_shard(files[-1], np.arange(start, start + n))
        start += n
    return files[::-1]  # the loader must sort them itself


TOTAL = 1100


def one_step(files, world_size: int, accum: int, G: int, L: int, steps: int) -> list[torch.Tensor]:
    """The rows of each optimizer step, gathered from all ranks and micro-steps in (micro*W + rank) order."""
    loaders = [DistributedTokenLoader(files, r, world_size) for r in range(world_size)]
    out = []
    for _ in range(steps):
        rows = [None] * (world_size * accum)
        for m in range(accum):
            for r, loader in enumerate(loaders):
                x, y = loader.next_batch(G, L, accum)
                assert x.shape == y.shape == (G // (L * world_size * accum), L) and x.dtype == torch.int64
                rows[m * world_size + r] = torch.cat([x, y[:, -1:]], dim=1)
        out.append(torch.cat(rows))
    return out


def test_x_y_alignment_and_first_batch(stream_files):
    loader = DistributedTokenLoader(stream_files, 0, 1)
    x, y = loader.next_batch(64, 16, 1)
    assert torch.equal(y, x + 1)  # token value = offset, so y is x shifted by one
    assert x[:, 0].tolist() == [0, 16, 32, 48] and y[-1, -1].item() == 64


@pytest.mark.parametrize("world_size,accum", [(2, 1), (2, 2), (1, 4), (4, 1)])
def test_global_batch_independent_of_world_size(stream_files, world_size, accum):
    reference = one_step(stream_files, 1, 1, G=128, L=16, steps=12)  # 12 steps wrap the 1100-token stream
    other = one_step(stream_files, world_size, accum, G=128, L=16, steps=12)
    assert len(other) == len(reference) and all(torch.equal(a, b) for a, b in zip(other, reference))
    for step, rows in enumerate(reference):  # row i = span[i*L : i*L + L + 1], span starts at step*G
        expected = (step * 128 + torch.arange(8)[:, None] * 16 + torch.arange(17)) % TOTAL
        assert torch.equal(rows, expected)


def test_each_token_is_a_target_once_per_pass(tmp_path):
    write_shard(tmp_path / "train_000000.bin", np.arange(1024 + 1))
    loader = DistributedTokenLoader([tmp_path / "train_000000.bin"], 0, 1)
    targets = torch.cat([loader.next_batch(256, 32, 1)[1].flatten() for _ in range(4)])
    assert sorted(targets.tolist()) == list(range(1, 1025))


def test_wraps_across_shard_ends(stream_files):
    loader = DistributedTokenLoader(stream_files, 0, 1)
    for _ in range(8):
        loader.next_batch(128, 16, 1)  # position 1024
    x, y = loader.next_batch(128, 16, 1)
    flat = torch.cat([x.flatten(), y[-1, -1:]])
    assert flat.tolist() == [(1024 + i) % TOTAL for i in range(129)]  # 1024..1099 then 0..52


def test_state_round_trip_resumes_exactly(stream_files):
    a = DistributedTokenLoader(stream_files, 1, 2)
    for _ in range(5 * 2):
        a.next_batch(96, 8, 2)
    state = json.loads(json.dumps(a.state_dict()))
    b = DistributedTokenLoader(stream_files, 1, 2)
    b.load_state_dict(state)
    for _ in range(20):
        xa, ya = a.next_batch(96, 8, 2)
        xb, yb = b.next_batch(96, 8, 2)
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_state_resumes_on_a_different_world_size(stream_files):
    single = DistributedTokenLoader(stream_files, 0, 1)
    for _ in range(3 * 2):
        single.next_batch(128, 16, 2)
    state = single.state_dict()  # rank 0's state, saved between optimizer steps
    pair = [DistributedTokenLoader(stream_files, r, 2) for r in range(2)]
    for loader in pair:
        loader.load_state_dict(state)
    for _ in range(4):
        expected = torch.cat([single.next_batch(128, 16, 2)[0] for _ in range(2)])
        assert torch.equal(torch.cat([loader.next_batch(128, 16, 1)[0] for loader in pair]), expected)


def test_state_from_other_data_is_refused(stream_files, tmp_path):
    write_shard(tmp_path / "other.bin", np.arange(10))
    loader = DistributedTokenLoader([tmp_path / "other.bin"], 0, 1)
    with pytest.raises(ValueError, match="same data"):
        loader.load_state_dict(DistributedTokenLoader(stream_files).state_dict())


def test_indivisible_batch_names_the_values(stream_files):
    loader = DistributedTokenLoader(stream_files, 0, 2)
    with pytest.raises(ValueError, match=r"global_tokens=100 .* 16\*2\*1 = 32"):
        loader.next_batch(100, 16, 1)
    with pytest.raises(ValueError, match="rank=2"):
        DistributedTokenLoader(stream_files, 2, 2)
    with pytest.raises(ValueError, match="no training shards"):
        DistributedTokenLoader([], 0, 1)


def test_validation_tokens(tmp_path):
    write_shard(tmp_path / "val_000001.bin", np.arange(60, 100))
    write_shard(tmp_path / "val_000000.bin", np.arange(60))
    files = [tmp_path / "val_000001.bin", tmp_path / "val_000000.bin"]
    val = load_validation_tokens(files, seq_len=16)
    assert val.dtype == torch.int64 and val.tolist() == list(range(97))  # usable = ((100-1)//16)*16 = 96
    assert load_validation_tokens(files, seq_len=16, max_tokens=40).tolist() == list(range(33))
    assert load_validation_tokens(files, seq_len=10, max_tokens=70).tolist() == list(range(71))
    with pytest.raises(ValueError, match="need at least seq_len \\+ 1 = 101"):
        load_validation_tokens(files, seq_len=100)
