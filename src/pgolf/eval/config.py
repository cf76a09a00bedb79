"""EvalConfig: how val_bpb is scored (non-overlapping or exact sliding window)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EvalConfig:
    seq_len: int = 0
    """Evaluation context length; 0 = train.train_seq_len."""
    stride: int = 0
    """Sliding-window stride (64 in the records); 0 = non-overlapping windows."""
    batch_seqs: int = 32
    """Windows per forward pass."""

    def __post_init__(self) -> None:
        if self.stride < 0 or self.seq_len < 0:
            raise ValueError(f"eval.stride={self.stride} and eval.seq_len={self.seq_len} must be ≥ 0")
