"""Fixtures for the data-stage tests: a synthetic corpus, a tokenizer trained on it, the official tokenizers.

    python -m pytest tests/data -q
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
OFFICIAL_TOKENIZERS = SHARED / "data" / "tokenizers"
FINEWEB_SAMPLE = SHARED / "data" / "fineweb-sample" / "docs.jsonl"

WORDS = ("the cat sat on a mat while dogs ran far away from big red barns near old green hills and "
         "small birds sang loud songs under grey skies every day of summer").split()


def synthetic_docs(n: int, seed: int = 0) -> list[str]:
    """`n` short documents over a ~25-letter alphabet, single spaces, so nmt_nfkc leaves them unchanged."""
    rng = random.Random(seed)
    docs = []
    for i in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(3, 40))]
        docs.append(" ".join(words).capitalize().replace("C", "c") + f" {i % 10}.")  # digits exercise split_digits
    return docs


@pytest.fixture(scope="session")
def docs() -> list[str]:
    return synthetic_docs(400)


@pytest.fixture(scope="session")
def small_tokenizer(tmp_path_factory, docs) -> Path:
    """A 320-piece tokenizer (260 byte/special pieces + ~60 merges) trained on the synthetic corpus."""
    from pgolf.data.tokenizer import train_tokenizer

    return train_tokenizer(docs, 320, tmp_path_factory.mktemp("tok") / "small.model")


def official_tokenizer(name: str) -> Path:
    path = OFFICIAL_TOKENIZERS / name
    if not path.is_file():
        pytest.skip(f"official tokenizer {path} not available")
    return path
