"""EvalConfig: how val_bpb is scored: the evaluation mode (eval/modes.py) and its test-time-training settings.

Defaults of the ttt_* fields are the records' run values (R0323, R0414, R0427); tests use tiny values.
"""

from __future__ import annotations

from dataclasses import dataclass

EVAL_MODES = ("standard", "sliding", "doc", "ttt-sgd", "ttt-lora", "ttt-phased")
LORA_ORDERS = ("stream", "length")
_REGISTERED: list[str] = []  # names added by eval/modes.py register_mode (third-party modes)


def register_mode_name(name: str) -> None:
    """Let EvalConfig accept a mode registered with eval/modes.py `register_mode`."""
    if name not in EVAL_MODES and name not in _REGISTERED:
        _REGISTERED.append(name)


def known_modes() -> tuple[str, ...]:
    return EVAL_MODES + tuple(_REGISTERED)


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
    """standard | sliding | doc | ttt-sgd | ttt-lora | ttt-phased, a registered mode (eval/modes.py MODES) or
    "package.module:function" (a third-party mode, imported when scoring)."""
    max_seconds: float = 0.0
    """Stop with a clear error when the projected evaluation time exceeds this (600 s in the challenge); 0 = off."""

    # ---- full-model SGD score-first TTT (R0323 `eval_val_sliding_ttt`, PR #461)
    ttt_chunk_tokens: int = 32768
    """Val stream chunk: score its windows, then train on it (TTT_CHUNK_TOKENS). Also the cosine unit of the
    phased global SGD (R0427)."""
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

    # ---- per-document LoRA TTT (R0414/R0427 `BatchedTTTLoRA`)
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
    lora_order: str = "stream"
    """Document queue of the LoRA modes: "stream" (stream order, consecutive documents per batch) or "length"
    (the records' queue: sorted by length, longest first, so a batch's documents have similar lengths and padding
    is small). "length" is legal only when no state crosses documents, so it needs ttt_lora_warm_start_a=false and
    mode ttt-lora (not ttt-phased); eval/lora.py explains why."""
    ttt_lora_lanes: int = 0
    """Warm-start-A chains: document batch k continues the A of batch k − lanes. 0 = one chain per rank (the
    records: each GPU carries its own A, so scores depend on the world size); a fixed value (a multiple of the
    world size) gives the same scores on any number of processes. Irrelevant without ttt_lora_warm_start_a."""

    # ---- phased global SGD (R0414/R0427 `eval_val_ttt_phased`)
    phased_prefix_docs: int = 2500
    """Documents (in stream order) that feed the global SGD phases (R0427: 2500; R0414: 2000)."""
    phased_num_phases: int = 3
    """Cumulative phase boundaries over the prefix docs (PHASED_TTT_NUM_PHASES)."""
    phased_lr: float = 0.001
    """Global SGD peak lr, momentum ttt_momentum, cosine over ttt_chunk_tokens chunks, 1 epoch (GLOBAL_TTT_LR)."""

    def __post_init__(self) -> None:
        if self.stride < 0 or self.seq_len < 0:
            raise ValueError(f"eval.stride={self.stride} and eval.seq_len={self.seq_len} must be ≥ 0")
        if self.mode not in known_modes() and ":" not in self.mode:  # "pkg.module:function" is imported
            raise ValueError(f"eval.mode={self.mode!r} is not one of {known_modes()} (a third-party mode must be "
                             f"registered first: pgolf.eval.modes.register_mode)")
        if self.lora_order not in LORA_ORDERS:
            raise ValueError(f"eval.lora_order={self.lora_order!r} is not one of {LORA_ORDERS}")
        if self.lora_order == "length" and self.mode in ("ttt-lora", "ttt-phased"):
            check_length_order(self)
        if self.ttt_lora_lanes < 0:
            raise ValueError(f"eval.ttt_lora_lanes={self.ttt_lora_lanes} must be ≥ 0 (0 = one per rank)")
        positive = ("batch_seqs", "ttt_chunk_tokens", "ttt_batch_seqs", "ttt_lora_rank", "ttt_lora_chunk",
                    "ttt_lora_batch_docs", "phased_num_phases")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"eval.{name}={getattr(self, name)} must be positive")
        if self.ttt_epochs < 0 or self.ttt_freeze_blocks < 0 or self.phased_prefix_docs < 0:
            raise ValueError("eval.ttt_epochs, eval.ttt_freeze_blocks and eval.phased_prefix_docs must be ≥ 0")


def check_length_order(cfg: EvalConfig) -> None:
    """Refuse the length-sorted LoRA queue where state crosses documents: the queue puts long documents from later
    in the stream before short earlier ones, so any carried state makes an earlier document's score depend on
    later tokens (condition 1 of parameter-golf issue #1017; the records did this, see eval/lora.py)."""
    if cfg.mode == "ttt-phased":
        raise ValueError(
            "eval.lora_order='length' with eval.mode='ttt-phased' is refused: the global SGD phases would train the "
            "base model on the longest documents and then score shorter documents that come earlier in the stream "
            "(a dependence on future tokens); use eval.lora_order='stream' for ttt-phased")
    if cfg.ttt_lora_warm_start_a:
        raise ValueError(
            "eval.lora_order='length' with eval.ttt_lora_warm_start_a=true is refused: adapter A carried from one "
            "document batch to the next would pass information from documents later in the stream into earlier "
            "ones; set eval.ttt_lora_warm_start_a=false (adapters fully reset per batch) or eval.lora_order='stream'")
