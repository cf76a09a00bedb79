"""Token batches for training and the validation token stream.

Training stream: the train shards, concatenated in sorted order, read as one endless (wrapping) token stream.
One optimizer step consumes the span `stream[p : p + G + 1]` (G = global_tokens) cut into G / L rows
(L = seq_len), row i = span[i*L : i*L + L + 1], x = row[:-1], y = row[1:]. Then p advances by G, so every
token is a target exactly once per pass. The rows are dealt out contiguously:

    micro-step m of rank r gets rows [(m*W + r)*R, (m*W + r + 1)*R),   R = G / (L * W * A)

(W = world size, A = grad-accumulation steps). The union over all ranks and micro-steps of one optimizer step
is exactly the same G tokens whatever W and A are, so a run on 2 GPUs with A=4 sees the same global batch as
a run on 1 GPU with A=8 (the gradient, averaged over the step, is the same up to float summation order).

The training loop calls `next_batch` A times per optimizer step. The loader counts micro-steps itself and moves
the stream forward after the A-th call; `state_dict()` taken between optimizer steps (micro = 0) resumes the
exact same sequence of batches. Only this rank's rows are read from the memory-mapped shards.

    loader = DistributedTokenLoader(train_files, rank, world_size)
    for step in ...:
        for _ in range(A):
            x, y = loader.next_batch(G, L, A)    # (R, L) int64 each, on CPU
    val = load_validation_tokens(val_files, seq_len=L)   # int64, length k*L + 1
    side = load_validation_sidecar(dataset.val_bytes_files, len(val))   # int32 byte sidecar, aligned with val
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from pgolf.data.shards import read_shard


def load_validation_tokens(files: Sequence[str | os.PathLike], seq_len: int, max_tokens: int = 0) -> torch.Tensor:
    """All val shards (sorted) concatenated, cut to k*seq_len + 1 tokens (as the challenge); int64, 1-D, CPU.

    max_tokens > 0 keeps only the first max_tokens + 1 tokens before the cut (a quick partial evaluation).
    """
    if seq_len <= 0:
        raise ValueError(f"seq_len={seq_len} must be positive")
    if max_tokens < 0:
        raise ValueError(f"max_tokens={max_tokens} must be ≥ 0 (0 = all)")
    files = sorted(Path(f) for f in files)
    if not files:
        raise ValueError("no validation shards given")
    limit = max_tokens + 1 if max_tokens else None
    parts, have = [], 0
    for f in files:
        tokens = read_shard(f)
        if limit is not None:
            tokens = tokens[: limit - have]
        parts.append(np.asarray(tokens))
        have += len(tokens)
        if limit is not None and have >= limit:
            break
    tokens = np.concatenate(parts)
    if len(tokens) < seq_len + 1:
        raise ValueError(f"validation has {len(tokens)} tokens ({len(files)} shard(s), max_tokens={max_tokens}); "
                         f"need at least seq_len + 1 = {seq_len + 1}")
    usable = ((len(tokens) - 1) // seq_len) * seq_len
    return torch.from_numpy(tokens[: usable + 1].astype(np.int64))


def load_validation_sidecar(files: Sequence[str | os.PathLike], length: int) -> torch.Tensor:
    """The first `length` entries of the byte sidecars (sorted, concatenated), int32: the byte counts of the tokens
    `load_validation_tokens` returned from the matching val shards (pass its length)."""
    files = sorted(Path(f) for f in files)
    parts, have = [], 0
    for f in files:
        if have >= length:
            break
        part = np.asarray(read_shard(f)[: length - have])
        parts.append(part)
        have += len(part)
    if have < length:
        raise ValueError(f"byte sidecars {[f.name for f in files]} hold {have} entries; the val tokens need {length}")
    return torch.from_numpy(np.concatenate(parts).astype(np.int32)) if parts else torch.zeros(0, dtype=torch.int32)


class DistributedTokenLoader:
    """This rank's share of each optimizer step's global batch, from an endless stream over `files`."""

    def __init__(self, files: Sequence[str | os.PathLike], rank: int = 0, world_size: int = 1) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank={rank} must be in [0, world_size={world_size})")
        self.files = sorted(Path(f) for f in files)
        if not self.files:
            raise ValueError("no training shards given")
        self.rank, self.world_size = rank, world_size
        self._shards = [read_shard(f) for f in self.files]
        sizes = np.array([len(s) for s in self._shards], dtype=np.int64)
        self._starts = np.concatenate([[0], np.cumsum(sizes)])  # stream offset of each shard, then the total
        self.total_tokens = int(self._starts[-1])
        if self.total_tokens < 2:
            raise ValueError(f"training shards hold {self.total_tokens} tokens; need at least 2")
        self.position = 0  # stream offset of the current optimizer step's span
        self.micro_step = 0  # next micro-step within the current optimizer step

    def next_batch(self, global_tokens: int, seq_len: int, grad_accum_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y) for this rank's next micro-step, each (R, seq_len) int64 on CPU; y is x shifted by one."""
        W, A, L = self.world_size, grad_accum_steps, seq_len
        if min(global_tokens, seq_len, grad_accum_steps) <= 0 or global_tokens % (L * W * A):
            raise ValueError(f"global_tokens={global_tokens} must be a positive multiple of seq_len*world_size*"
                             f"grad_accum_steps = {L}*{W}*{A} = {L * W * A}")
        R = global_tokens // (L * W * A)
        first_row = (self.micro_step * W + self.rank) * R
        chunk = self._read(self.position + first_row * L, R * L + 1)  # rows overlap by one token
        x = torch.from_numpy(chunk[:-1].reshape(R, L))
        y = torch.from_numpy(chunk[1:].reshape(R, L))
        self.micro_step += 1
        if self.micro_step == A:
            self.micro_step = 0
            self.position = (self.position + global_tokens) % self.total_tokens
        return x, y

    def _read(self, start: int, count: int) -> np.ndarray:
        """`count` tokens of the wrapping stream from offset `start`, as int64."""
        out = np.empty(count, dtype=np.int64)
        filled, pos = 0, start % self.total_tokens
        while filled < count:
            i = int(np.searchsorted(self._starts, pos, side="right")) - 1  # shard holding stream offset pos
            offset = pos - int(self._starts[i])
            take = min(count - filled, len(self._shards[i]) - offset)
            out[filled : filled + take] = self._shards[i][offset : offset + take]
            filled += take
            pos = (pos + take) % self.total_tokens
        return out

    def state_dict(self) -> dict:
        """JSON-serializable position; restore with load_state_dict on a loader over the same shards.

        The state is the same on every rank and does not depend on the world size (the position is global), so
        rank 0's copy resumes all ranks, also with a different number of GPUs.
        """
        return {"position": self.position, "micro_step": self.micro_step, "total_tokens": self.total_tokens,
                "files": [f.name for f in self.files]}

    def load_state_dict(self, state: dict) -> None:
        names = [f.name for f in self.files]
        if state.get("files") != names or state.get("total_tokens") != self.total_tokens:
            raise ValueError(f"loader state is for shards {state.get('files')} ({state.get('total_tokens')} tokens), "
                             f"but this loader reads {names} ({self.total_tokens} tokens); resume on the same data")
        self.position, self.micro_step = int(state["position"]), int(state["micro_step"])
