"""Tokenizer: the challenge trainer spec, deterministic training, [BOS]+ids document encoding, clear load errors.

    python -m pytest tests/data/test_tokenizer.py -q
"""

from __future__ import annotations

import numpy as np
import pytest

from pgolf.data.tokenizer import encode_documents, load_tokenizer, train_tokenizer


def test_trained_tokenizer_has_the_challenge_spec(small_tokenizer):
    sp = load_tokenizer(small_tokenizer)
    assert sp.vocab_size() == 320
    assert [sp.pad_id(), sp.bos_id(), sp.eos_id(), sp.unk_id()] == [0, 1, 2, 3]
    assert sum(sp.is_byte(i) for i in range(sp.vocab_size())) == 256  # byte_fallback
    assert sp.encode("x1234") == sp.encode("x") + [sp.piece_to_id(d) for d in "1234"]  # split_digits
    assert sp.id_to_piece(sp.encode("the")[0]) != "\u2581the"  # add_dummy_prefix=False
    assert sp.decode(sp.encode("ﬁne  ＡＢ")) == "fine AB"  # nmt_nfkc + whitespace folding
    assert small_tokenizer.with_suffix(".vocab").read_text(encoding="utf-8").count("\n") == 320


def test_training_is_deterministic(tmp_path, docs, small_tokenizer):
    again = train_tokenizer(docs, 320, tmp_path / "again.model")
    assert again.read_bytes() == small_tokenizer.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again.model", "again.vocab"]  # nothing else left


def test_training_errors(tmp_path):
    with pytest.raises(ValueError, match="no non-empty documents"):
        train_tokenizer(["", "  \x00 "], 300, tmp_path / "t.model")
    with pytest.raises(ValueError, match="too small"):
        train_tokenizer(["abc"], 100, tmp_path / "t.model")
    with pytest.raises(ValueError, match=r"\.model"):
        train_tokenizer(["abc"], 300, tmp_path / "t.bin")
    assert not list(tmp_path.iterdir())


def test_encode_documents_is_bos_plus_ids(small_tokenizer):
    sp = load_tokenizer(small_tokenizer)
    texts = ["the cat sat", "", "dogs ran 42."]
    tokens = encode_documents(sp, texts)
    expected = [t for text in texts for t in [sp.bos_id()] + sp.encode(text)]
    assert tokens.dtype == np.uint16 and tokens.tolist() == expected
    assert sp.eos_id() not in tokens.tolist()
    assert encode_documents(sp, []).size == 0


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.model"):
        load_tokenizer(tmp_path / "nope.model")
    junk = tmp_path / "junk.model"
    junk.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="junk.model"):
        load_tokenizer(junk)
