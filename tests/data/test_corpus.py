"""Corpus: reading documents, the stable split, prepare_corpus output (shards decode back to the documents),
the embedded BBC corpus and its cached default dataset, and resolve_dataset on our and the challenge's layouts.

    python -m pytest tests/data/test_corpus.py -q
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil

import numpy as np
import pytest

from pgolf.data import corpus, dataset
from pgolf.data.config import DataConfig
from pgolf.data.corpus import DatasetInfo, bbc_documents, prepare_corpus, read_documents, split_documents
from pgolf.data.dataset import ensure_default_dataset, resolve_dataset
from pgolf.data.shards import read_shard, write_shard
from pgolf.data.tokenizer import load_tokenizer

# ------------------------------------------------------------------------------------------------ documents


def test_read_documents_txt_jsonl_and_folders(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "2.txt").write_text("second file", encoding="utf-8")
    (tmp_path / "b" / "1.jsonl").write_text('{"text": "j1"}\n\n{"text": "j2", "id": 3}\n', encoding="utf-8")
    (tmp_path / "b" / "skip.csv").write_text("ignored", encoding="utf-8")
    (tmp_path / "a.txt").write_text("first\nstill first", encoding="utf-8")
    assert read_documents([tmp_path / "a.txt", tmp_path / "b"]) == ["first\nstill first", "j1", "j2", "second file"]


@pytest.mark.parametrize("content,match", [
    ('{"text": "ok"}\n{not json}\n', r"bad\.jsonl:2: line is not valid JSON"),
    ('{"text": "ok"}\n{"body": "x"}\n', r"bad\.jsonl:2: expected a JSON object with a string \"text\""),
    ('["text"]\n', r"bad\.jsonl:1:"),
])
def test_read_documents_jsonl_errors(tmp_path, content, match):
    (tmp_path / "bad.jsonl").write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=match):
        read_documents([tmp_path / "bad.jsonl"])


def test_read_documents_other_errors(tmp_path):
    (tmp_path / "x.csv").write_text("a,b", encoding="utf-8")
    with pytest.raises(ValueError, match=r"x\.csv: unsupported suffix '\.csv'"):
        read_documents([tmp_path / "x.csv"])
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        read_documents([tmp_path / "missing.txt"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no .txt or .jsonl"):
        read_documents([tmp_path / "empty"])


def test_split_is_stable_and_order_independent(docs):
    train, val = split_documents(docs, 0.1)
    shuffled = list(docs)
    random.Random(1).shuffle(shuffled)
    train2, val2 = split_documents(shuffled, 0.1)
    assert set(val) == set(val2) and set(train) == set(train2)
    assert [d for d in docs if d in set(val)] == val  # input order kept within a split
    assert 20 <= len(val) <= 60  # ~10% of 400
    for fraction in (0.1, 0.5, 0.9):  # exact duplicates never straddle the split
        train_d, val_d = split_documents(["same text"] * 5 + ["other"], fraction)
        assert train_d.count("same text") in (0, 5) and val_d.count("same text") in (0, 5)
    with pytest.raises(ValueError, match="val_fraction=1.5"):
        split_documents(docs, 1.5)


def test_split_rule_is_sha256_not_python_hash():
    text = "The quick brown fox."
    score = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2**64
    assert split_documents([text], min(score + 1e-9, 0.999))[1] == [text]
    assert split_documents([text], max(score - 1e-9, 1e-9))[0] == [text]


# ------------------------------------------------------------------------------------------------ prepare


def decode_stream(sp, files) -> list[str]:
    tokens = np.concatenate([np.asarray(read_shard(f)) for f in files]).tolist()
    starts = [i for i, t in enumerate(tokens) if t == sp.bos_id()] + [len(tokens)]
    assert starts[0] == 0
    return [sp.decode(tokens[a + 1 : b]) for a, b in zip(starts, starts[1:])]


def test_prepare_corpus_round_trip(tmp_path, docs):
    info = prepare_corpus(docs, tmp_path / "ds", vocab_size=320, val_fraction=0.1, shard_tokens=2000, name="syn")
    train, val = split_documents(docs, 0.1)
    sp = load_tokenizer(info.tokenizer_path)
    assert info.vocab_size == sp.vocab_size() == 320
    assert len(info.train_files) > 1
    assert [f.name for f in info.train_files][:2] == ["train_000000.bin", "train_000001.bin"]
    assert all(read_shard(f).size == 2000 for f in info.train_files[:-1])  # documents straddle shard ends
    assert decode_stream(sp, info.train_files) == train
    assert decode_stream(sp, info.val_files) == val
    manifest = json.loads((info.data_dir / "manifest.json").read_text())
    assert manifest["name"] == "syn" and manifest["vocab_size"] == 320 and manifest["bos_id"] == 1
    assert manifest["train"]["docs"] == len(train) and manifest["val"]["docs"] == len(val)
    assert manifest["train"]["tokens"] == info.num_train_tokens == sum(read_shard(f).size for f in info.train_files)
    assert manifest["split"]["val_fraction"] == 0.1 and "sha256" in manifest["split"]["rule"]
    assert len(manifest["tokenizer_sha256"]) == 64 and "pgolf_version" in manifest
    assert DatasetInfo.load(info.data_dir) == info
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]  # no temp folder left


def test_prepare_with_given_tokenizer(tmp_path, docs, small_tokenizer):
    info = prepare_corpus(docs[:100], tmp_path / "ds", vocab_size=320, tokenizer_path=small_tokenizer)
    assert info.tokenizer_path.read_bytes() == small_tokenizer.read_bytes()
    with pytest.raises(ValueError, match="has 320 pieces but vocab_size=1024 was requested"):
        prepare_corpus(docs[:100], tmp_path / "ds2", vocab_size=1024, tokenizer_path=small_tokenizer)
    assert not (tmp_path / "ds2").exists()


def test_prepare_refuses_existing_output_and_cleans_up_on_failure(tmp_path, docs, monkeypatch):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="full"):
        prepare_corpus(docs, tmp_path / "full", vocab_size=320)

    def broken_write(path, tokens):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(corpus, "write_shard", broken_write)
    with pytest.raises(OSError, match="simulated"):
        prepare_corpus(docs, tmp_path / "new", vocab_size=320)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full"]  # nothing half-written


def test_prepare_needs_both_splits(tmp_path):
    with pytest.raises(ValueError, match="both must be non-empty"):
        prepare_corpus(["only one document"], tmp_path / "ds", vocab_size=320)


# ------------------------------------------------------------------------------------------------ BBC default


def test_bbc_corpus():
    docs = bbc_documents()
    assert len(docs) == 2225
    assert docs[0].startswith("Ad sales boost Time Warner profit")  # business/001.txt comes first
    assert 4_000_000 < sum(len(d) for d in docs) < 6_000_000


@pytest.fixture(scope="session")
def bbc_cache(tmp_path_factory):
    """The full default dataset in a temp cache (about 1 s on 2 CPU cores)."""
    cache = tmp_path_factory.mktemp("pgolf-cache")
    return cache, ensure_default_dataset(cache, vocab_size=1024)


def test_default_dataset_is_prepared_once(bbc_cache, monkeypatch):
    cache, info = bbc_cache
    assert info.data_dir == cache / "bbc-news-sp1024" and info.vocab_size == 1024
    assert info.num_train_tokens > 1_000_000 and 0.05 < info.num_val_tokens / info.num_train_tokens < 0.2
    stamp = (info.data_dir / "manifest.json").stat().st_mtime_ns
    assert ensure_default_dataset(cache, vocab_size=1024) == info
    monkeypatch.setenv("PGOLF_CACHE", str(cache))
    assert resolve_dataset(DataConfig()) == info  # reused, not rebuilt
    assert (info.data_dir / "manifest.json").stat().st_mtime_ns == stamp
    manifest = json.loads((info.data_dir / "manifest.json").read_text())
    assert manifest["train"]["docs"] + manifest["val"]["docs"] == 2225


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("PGOLF_CACHE", str(tmp_path / "c"))
    assert dataset.default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("PGOLF_CACHE")
    assert dataset.default_cache_dir().parts[-2:] == (".cache", "pgolf")


# ------------------------------------------------------------------------------------------------ resolve


def test_resolve_our_dataset(tmp_path, docs):
    info = prepare_corpus(docs, tmp_path / "ds", vocab_size=320, shard_tokens=3000)
    assert resolve_dataset(DataConfig(data_dir=str(info.data_dir))) == info
    (info.data_dir / "manifest.json").unlink()  # also works without a manifest
    assert resolve_dataset(DataConfig(data_dir=str(info.data_dir))) == info


def challenge_layout(root, tokenizer, other_tokenizer):
    """ROOT/manifest.json, ROOT/datasets/fineweb10B_sp320/*.bin (+ a byte sidecar), ROOT/tokenizers/*.model."""
    data = root / "datasets" / "fineweb10B_sp320"
    write_shard(data / "fineweb_train_000000.bin", np.arange(1, 300))
    write_shard(data / "fineweb_train_000001.bin", np.arange(1, 200))
    write_shard(data / "fineweb_val_000000.bin", np.arange(1, 100))
    write_shard(data / "fineweb_val_bytes_000000.bin", np.ones(99, dtype=np.int64))  # CaseOps sidecar, not tokens
    (root / "tokenizers").mkdir()
    shutil.copy(tokenizer, root / "tokenizers" / "fineweb_320_bpe.model")
    shutil.copy(other_tokenizer, root / "tokenizers" / "fineweb_1024_bpe.model")
    manifest = {"datasets": [{"name": "fineweb10B_sp320", "tokenizer_name": "sp_bpe_320"}],
                "tokenizers": [{"name": "sp_bpe_320", "model_path": "tokenizers/fineweb_320_bpe.model"}]}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return data


def test_resolve_challenge_layout(tmp_path, small_tokenizer, bbc_cache):
    data = challenge_layout(tmp_path, small_tokenizer, bbc_cache[1].tokenizer_path)
    info = resolve_dataset(DataConfig(data_dir=str(data)))
    assert [f.name for f in info.train_files] == ["fineweb_train_000000.bin", "fineweb_train_000001.bin"]
    assert [f.name for f in info.val_files] == ["fineweb_val_000000.bin"]
    assert info.tokenizer_path == tmp_path / "tokenizers" / "fineweb_320_bpe.model" and info.vocab_size == 320
    assert (info.num_train_tokens, info.num_val_tokens) == (299 + 199, 99)
    explicit = resolve_dataset(DataConfig(data_dir=str(data), tokenizer_path=str(bbc_cache[1].tokenizer_path)))
    assert explicit.vocab_size == 1024
    (tmp_path / "manifest.json").unlink()  # two .model files and no manifest: ambiguous
    with pytest.raises(FileNotFoundError, match=r"looked for:.*tokenizer\.model.*found 2.*data\.tokenizer_path"):
        resolve_dataset(DataConfig(data_dir=str(data)))


def test_resolve_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such folder"):
        resolve_dataset(DataConfig(data_dir=str(tmp_path / "nope")))
    write_shard(tmp_path / "val_000000.bin", np.arange(10))
    with pytest.raises(FileNotFoundError, match=r"no shards match data\.train_pattern='\*train_\*\.bin'"):
        resolve_dataset(DataConfig(data_dir=str(tmp_path)))
    with pytest.raises(ValueError, match="needs data.data_dir"):
        resolve_dataset(DataConfig(tokenizer_path="x.model"))
