"""DataConfig: where the token shards and the tokenizer live, and how the default corpus is built."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DataConfig:
    data_dir: str = ""
    """Folder with train_*.bin / val_*.bin shards and tokenizer.model; empty = the embedded BBC News corpus,
    prepared on first use under $PGOLF_CACHE (default ~/.cache/pgolf)."""
    train_pattern: str = "*train_*.bin"
    """Glob (relative to data_dir) of training shards (matches the challenge's fineweb_train_000000.bin too)."""
    val_pattern: str = "*val_*.bin"
    tokenizer_path: str = ""
    """SentencePiece .model; empty = data_dir/tokenizer.model (or the challenge's name found in data_dir)."""
    vocab_size: int = 1024
    """Vocabulary of the tokenizer trained for the default corpus / `pgolf data prepare`."""
    val_fraction: float = 0.1
    """Share of documents (by a stable hash of the text) that go to validation when preparing a corpus."""
    val_max_tokens: int = 0
    """Score only the first N validation tokens (0 = the whole split, as the challenge does)."""

    def __post_init__(self) -> None:
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"data.val_fraction={self.val_fraction} must be in (0, 1)")
        if self.val_max_tokens < 0:
            raise ValueError(f"data.val_max_tokens={self.val_max_tokens} must be ≥ 0")
