"""EvalConfig: how val_bpb is scored: the evaluation mode (eval/modes.py) and its test-time-training settings.

Defaults of the ttt_* fields are the records' run values (parameter-golf.md §5.2–5.4); tests use tiny values.
"""

from __future__ import annotations

from dataclasses import dataclass

EVAL_MODES = ("standard", "sliding", "doc", "ttt-sgd", "ttt-lora", "ttt-phased")


@dataclass(frozen=True)
class EvalConfig:
    seq_len: int = 0
    """Evaluation context length; 0 = train.train_seq_len."""
    stride: int = 0
    """Sliding-window stride (64 in the records); 0 = non-overlapping windows. Modes "sliding" and "ttt-sgd" use
    64 when this is 0."""
    batch_seqs: int = 32
    """Windows per forward pass."""
    mode: str = "standard"
    """standard | sliding | doc | ttt-sgd | ttt-lora | ttt-phased (eval/modes.py)."""
    max_seconds: float = 0.0
    """Stop with a clear error when the projected evaluation time exceeds this (600 s in the challenge); 0 = off."""

    # ---- full-model SGD score-first TTT (R0323 `eval_val_sliding_ttt`, PR #461; §5.2)
    ttt_chunk_tokens: int = 32768
    """Val stream chunk: score its windows, then train on it (TTT_CHUNK_TOKENS). Also the cosine unit of the
    phased global SGD (§5.4)."""
    ttt_lr: float = 0.002
    """Peak SGD lr, cosine-decayed over chunks: lr·½(1+cos(π·ci/(N−1))) (TTT_LR)."""
    ttt_momentum: float = 0.9
    ttt_epochs: int = 3
    """Passes over each chunk after it is scored (TTT_EPOCHS)."""
    ttt_batch_seqs: int = 32
    """Training sequences (of seq_len) per SGD step (R0323: 32×2048)."""
    ttt_grad_clip: float = 1.0
    ttt_freeze_blocks: int = 0
    """First N blocks kept frozen (TTT_FREEZE_BLOCKS; 0 in the record, 2 ablated)."""

    # ---- per-document LoRA TTT (R0414/R0427 `BatchedTTTLoRA`; §5.3)
    ttt_lora_rank: int = 80
    """Rank (R0427 run: 80; R0414: 96)."""
    ttt_lora_alpha: float = 144.0
    """Output scale alpha/rank (R0427 TTT_LORA_ALPHA=144)."""
    ttt_lora_warm_start_a: bool = True
    """Reset zeroes only B; A keeps its trained values across document batches (R0427 TTT_WARM_START_A=1)."""
    ttt_lora_chunk: int = 48
    """Tokens scored per chunk; one AdamW step per chunk (TTT_CHUNK_SIZE)."""
    ttt_lora_lr: float = 1e-4
    """Constant AdamW lr (TTT_LORA_LR)."""
    ttt_lora_beta2: float = 0.99
    """AdamW betas (0, beta2): R0427 run 0.99 (R0414: 0.999)."""
    ttt_lora_weight_decay: float = 0.5
    """AdamW weight decay (R0427 run: 0.5; code default 1.0)."""
    ttt_lora_batch_docs: int = 64
    """Documents adapted together, one adapter slot each (TTT_BATCH_SIZE)."""

    # ---- phased global SGD (R0414/R0427 `eval_val_ttt_phased`; §5.4)
    phased_prefix_docs: int = 2500
    """Documents (in stream order) that feed the global SGD phases (R0427: 2500; R0414: 2000)."""
    phased_num_phases: int = 3
    """Cumulative phase boundaries over the prefix docs (PHASED_TTT_NUM_PHASES)."""
    phased_lr: float = 0.001
    """Global SGD peak lr, momentum ttt_momentum, cosine over ttt_chunk_tokens chunks, 1 epoch (GLOBAL_TTT_LR)."""

    def __post_init__(self) -> None:
        if self.stride < 0 or self.seq_len < 0:
            raise ValueError(f"eval.stride={self.stride} and eval.seq_len={self.seq_len} must be ≥ 0")
        if self.mode not in EVAL_MODES:
            raise ValueError(f"eval.mode={self.mode!r} is not one of {EVAL_MODES}")
        positive = ("batch_seqs", "ttt_chunk_tokens", "ttt_batch_seqs", "ttt_lora_rank", "ttt_lora_chunk",
                    "ttt_lora_batch_docs", "phased_num_phases")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"eval.{name}={getattr(self, name)} must be positive")
        if self.ttt_epochs < 0 or self.ttt_freeze_blocks < 0 or self.phased_prefix_docs < 0:
            raise ValueError("eval.ttt_epochs, eval.ttt_freeze_blocks and eval.phased_prefix_docs must be ≥ 0")
