"""SentencePiece tokenizers: load, train with the challenge's spec, encode documents into one token stream.

The trainer settings are those of the challenge's `build_sentencepiece_tokenizer`
(openai/parameter-golf `data/download_hf_docs_and_tokenize.py`): BPE, byte_fallback, split_digits, nmt_nfkc,
no dummy prefix, ids pad/bos/eos/unk = 0/1/2/3, character_coverage 0.999, hard_vocab_limit off, and each
document (NULs → spaces, stripped, empties skipped) is one training sentence; as there, SentencePiece's default
max_sentence_length (4192 bytes) applies, so longer documents do not take part in training (they still encode).
We add only what makes training reproducible and quiet: a fixed seed, few threads, the model returned in memory (so no temp path is
recorded in it), and no log spam.

    path = train_tokenizer(texts, vocab_size=1024, model_path=Path("tok.model"))  # also writes tok.vocab
    sp = load_tokenizer(path)
    tokens = encode_documents(sp, texts)   # uint16: [BOS] + ids for each document, no EOS, concatenated
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import sentencepiece as spm

# The challenge's trainer spec (download_hf_docs_and_tokenize.py: build_sentencepiece_tokenizer).
CHALLENGE_TRAINER_SPEC: dict[str, object] = {
    "model_type": "bpe",
    "character_coverage": 0.999,
    "byte_fallback": True,
    "split_digits": True,
    "normalization_rule_name": "nmt_nfkc",
    "add_dummy_prefix": False,
    "pad_id": 0,
    "bos_id": 1,
    "eos_id": 2,
    "unk_id": 3,
    "hard_vocab_limit": False,
}
TRAIN_SEED = 1337
TRAIN_THREADS = 2  # BPE merges are deterministic at any thread count; 2 keeps a shared CI box responsive


def load_tokenizer(path: str | os.PathLike) -> spm.SentencePieceProcessor:
    """Load a SentencePiece .model file; a missing or unreadable file raises with the path in the message."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"tokenizer model not found: {path} (expected a SentencePiece .model file)")
    sp = spm.SentencePieceProcessor()
    try:
        sp.Load(str(path))
    except (OSError, RuntimeError) as e:
        raise ValueError(f"{path}: not a readable SentencePiece model ({e})") from e
    return sp


def _training_sentences(texts: Iterable[str]) -> Iterator[str]:
    for text in texts:
        text = text.replace("\x00", " ").strip()
        if text:
            yield text


def train_tokenizer(texts: Iterable[str], vocab_size: int, model_path: str | os.PathLike, *,
                    user_defined_symbols: Sequence[str] = ()) -> Path:
    """Train a BPE tokenizer on `texts` with the challenge's spec; writes model_path (+ .vocab) atomically.

    Deterministic: the same texts in the same order give a byte-identical model. `user_defined_symbols` become
    pieces right after the four specials (ids 4, 5, ...), never split: R0427's CaseOps tokenizer reserves the four
    operators this way (pass data.caseops.OPERATORS; `pgolf data tokenizer --caseops`).
    """
    model_path = Path(model_path)
    if model_path.suffix != ".model":
        raise ValueError(f"tokenizer output path must end in .model, got {model_path}")
    if vocab_size < 260:  # 4 special ids + 256 byte-fallback pieces
        raise ValueError(f"vocab_size={vocab_size} is too small: byte_fallback needs at least 4 + 256 = 260 pieces")
    if vocab_size > 2**16:
        raise ValueError(f"vocab_size={vocab_size} does not fit uint16 shards (max 65536)")
    sentences = _training_sentences(texts)
    first = next(sentences, None)
    if first is None:
        raise ValueError("cannot train a tokenizer: no non-empty documents")
    spm.set_random_generator_seed(TRAIN_SEED)
    proto = io.BytesIO()  # the model comes back in memory, so no temp path leaks into trainer_spec
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=_chain(first, sentences), model_writer=proto, vocab_size=vocab_size,
            num_threads=TRAIN_THREADS, minloglevel=2, **CHALLENGE_TRAINER_SPEC,
            **({"user_defined_symbols": list(user_defined_symbols)} if user_defined_symbols else {}),
        )
    except RuntimeError as e:
        raise ValueError(f"SentencePiece training failed for vocab_size={vocab_size}: {e}") from e
    sp = spm.SentencePieceProcessor(model_proto=proto.getvalue())
    vocab = "".join(f"{sp.id_to_piece(i)}\t{sp.get_score(i):g}\n" for i in range(sp.vocab_size()))
    _write_atomic(model_path.with_suffix(".vocab"), vocab.encode("utf-8"))
    _write_atomic(model_path, proto.getvalue())  # last: a present .model means a finished training
    return model_path


def _write_atomic(path: Path, data: bytes) -> None:
    from pgolf.io import atomic_write

    atomic_write(path, data)


def _chain(first: str, rest: Iterator[str]) -> Iterator[str]:
    yield first
    yield from rest


def encode_documents(sp: spm.SentencePieceProcessor, texts: Sequence[str]) -> np.ndarray:
    """Each document becomes [BOS] + sp.encode(text) (no EOS, as the challenge); all concatenated, uint16."""
    if sp.vocab_size() > 2**16:
        raise ValueError(f"tokenizer has {sp.vocab_size()} pieces; uint16 shards hold at most 65536")
    bos = sp.bos_id()
    if bos < 0:
        raise ValueError("tokenizer has no BOS piece (bos_id=-1); documents must start with BOS")
    texts = list(texts)
    if not texts:
        return np.zeros(0, dtype=np.uint16)
    encoded = sp.encode(texts, out_type=int, num_threads=TRAIN_THREADS)
    out = np.empty(sum(len(ids) + 1 for ids in encoded), dtype=np.uint16)
    pos = 0
    for ids in encoded:
        out[pos] = bos
        out[pos + 1 : pos + 1 + len(ids)] = ids
        pos += 1 + len(ids)
    return out
