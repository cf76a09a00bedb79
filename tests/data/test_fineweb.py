"""FineWeb download through the real huggingface_hub code path, against a local stand-in for the Hub.

The stand-in is a threaded http.server on 127.0.0.1 that answers the Hub's `resolve` endpoint
(`HEAD`/`GET /datasets/{owner}/{name}/resolve/{revision}/{path}` with X-Repo-Commit, ETag, Content-Length) from
a folder laid out like the challenge's dataset repository. `download_fineweb(..., endpoint=...)` then runs
hf_hub_download unchanged: metadata request, cache blob + snapshot symlink, and our link into the local layout.

    python -m pytest tests/data/test_fineweb.py -q
"""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from pgolf.data.config import DataConfig
from pgolf.data.dataset import resolve_dataset
from pgolf.data.fineweb import download_fineweb
from pgolf.data.shards import ShardError, read_shard, write_shard

COMMIT = "c0ffee" + "0" * 34


class FakeHub:
    """Serves ROOT/{owner}/{name}/{path} as dataset repo {owner}/{name} at any revision; counts GETs."""

    def __init__(self, root: Path) -> None:
        self.root, self.gets = root, []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _respond(self, send_body: bool) -> None:
                parts = urllib.parse.urlsplit(self.path).path.split("/")
                # ['', 'datasets', owner, name, 'resolve', revision, *path]
                file = None
                if len(parts) >= 7 and parts[1] == "datasets" and parts[4] == "resolve":
                    candidate = hub.root / parts[2] / parts[3] / urllib.parse.unquote("/".join(parts[6:]))
                    file = candidate if candidate.is_file() else None
                if file is None:
                    self.send_response(404)
                    self.send_header("X-Error-Code", "EntryNotFound")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data = file.read_bytes()
                self.send_response(200)
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if send_body:
                    hub.gets.append(file.relative_to(hub.root).as_posix())
                    self.wfile.write(data)

            def do_HEAD(self) -> None:
                self._respond(False)

            def do_GET(self) -> None:
                self._respond(True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def publish(repo: Path, variant: str, tokenizer: Path, n_train: int, n_val: int = 1) -> dict[str, np.ndarray]:
    """A repository export like the challenge's: datasets/{manifest.json, datasets/<name>/*.bin, tokenizers/}."""
    export = repo / "datasets"
    name, vocab = f"fineweb10B_{variant}", int(variant[2:])
    tok_name = f"fineweb_{vocab}_bpe"
    (export / "tokenizers").mkdir(parents=True)
    shutil.copy(tokenizer, export / "tokenizers" / f"{tok_name}.model")
    shutil.copy(tokenizer.with_suffix(".vocab"), export / "tokenizers" / f"{tok_name}.vocab")
    rng = np.random.default_rng(vocab)
    shards = {}
    for split, n in (("val", n_val), ("train", n_train)):
        for i in range(n):
            shards[f"fineweb_{split}_{i:06d}.bin"] = tokens = rng.integers(0, 320, size=1000 + 7 * i)
            write_shard(export / "datasets" / name / f"fineweb_{split}_{i:06d}.bin", tokens)
    manifest = {
        "version": "10B", "num_val_docs": 50000,
        "tokenizers": [{"name": f"sp_bpe_{vocab}", "kind": "sentencepiece_bpe", "vocab_size": vocab,
                        "model_path": f"tokenizers/{tok_name}.model", "vocab_path": f"tokenizers/{tok_name}.vocab"}],
        "datasets": [{"name": name, "tokenizer_name": f"sp_bpe_{vocab}", "vocab_size": vocab,
                      "stats": {"files_train": n_train, "files_val": n_val}}],
    }
    (export / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return shards


@pytest.fixture
def hub(tmp_path):
    server = FakeHub(tmp_path / "remote")
    yield server
    server.close()


def test_download_mirrors_the_challenge_layout(tmp_path, hub, small_tokenizer):
    shards = publish(hub.root / "golf" / "pg", "sp1024", small_tokenizer, n_train=3)
    out, cache = tmp_path / "data", tmp_path / "hf-cache"
    info = download_fineweb("sp1024", 2, out, repo_id="golf/pg", endpoint=hub.endpoint, cache_dir=cache)

    data = out / "datasets" / "fineweb10B_sp1024"
    assert info.data_dir == data
    assert info.train_files == [data / "fineweb_train_000000.bin", data / "fineweb_train_000001.bin"]
    assert info.val_files == [data / "fineweb_val_000000.bin"]
    assert info.tokenizer_path == out / "tokenizers" / "fineweb_1024_bpe.model"
    assert (out / "tokenizers" / "fineweb_1024_bpe.vocab").is_file() and (out / "manifest.json").is_file()
    assert not (data / "fineweb_train_000002.bin").exists()  # only the requested prefix
    for f in info.train_files + info.val_files:
        np.testing.assert_array_equal(read_shard(f), shards[f.name])
    assert info.num_train_tokens == 1000 + 1007 and info.num_val_tokens == 1000 and info.vocab_size == 320
    assert (cache / "datasets--golf--pg" / "snapshots" / COMMIT).is_dir()  # went through the HF cache
    assert sorted(p.name for p in out.rglob(".*")) == []  # no temp files left

    # The downloaded folder is a dataset a run can use directly: the tokenizer is found via the manifest.
    resolved = resolve_dataset(DataConfig(data_dir=str(data)))
    assert resolved.tokenizer_path == info.tokenizer_path and resolved.train_files == info.train_files

    # Rerun with more shards fetches only what is missing; files present are not downloaded again.
    before = len(hub.gets)
    download_fineweb("sp1024", 3, out, repo_id="golf/pg", endpoint=hub.endpoint, cache_dir=cache)
    assert hub.gets[before:] == ["golf/pg/datasets/datasets/fineweb10B_sp1024/fineweb_train_000002.bin"]


def test_second_variant_from_another_repo_merges_the_manifest(tmp_path, hub, small_tokenizer):
    publish(hub.root / "golf" / "pg", "sp1024", small_tokenizer, n_train=1)
    publish(hub.root / "kc" / "pg", "sp8192", small_tokenizer, n_train=1)
    out, cache = tmp_path / "data", tmp_path / "hf-cache"
    download_fineweb("sp1024", 1, out, repo_id="golf/pg", endpoint=hub.endpoint, cache_dir=cache)
    info = download_fineweb("sp8192", 1, out, repo_id="kc/pg", endpoint=hub.endpoint, cache_dir=cache)
    names = [d["name"] for d in json.loads((out / "manifest.json").read_text())["datasets"]]
    assert sorted(names) == ["fineweb10B_sp1024", "fineweb10B_sp8192"]
    assert info.tokenizer_path.name == "fineweb_8192_bpe.model"
    for variant, model in (("sp1024", "fineweb_1024_bpe.model"), ("sp8192", "fineweb_8192_bpe.model")):
        resolved = resolve_dataset(DataConfig(data_dir=str(out / "datasets" / f"fineweb10B_{variant}")))
        assert resolved.tokenizer_path.name == model  # two .model files, disambiguated by the manifest


def test_offline_rerun_uses_local_files(tmp_path, hub, small_tokenizer):
    publish(hub.root / "golf" / "pg", "sp1024", small_tokenizer, n_train=1)
    out = tmp_path / "data"
    first = download_fineweb("sp1024", 1, out, repo_id="golf/pg", endpoint=hub.endpoint, cache_dir=tmp_path / "c")
    hub.close()
    again = download_fineweb("sp1024", 1, out, repo_id="golf/pg", endpoint=hub.endpoint, cache_dir=tmp_path / "c2")
    assert again == first


def test_download_errors(tmp_path, hub, small_tokenizer):
    publish(hub.root / "golf" / "pg", "sp1024", small_tokenizer, n_train=2)
    kwargs = dict(repo_id="golf/pg", endpoint=hub.endpoint, cache_dir=tmp_path / "c")
    with pytest.raises(ValueError, match="sp1024 has 2 training shards on golf/pg, requested 5"):
        download_fineweb("sp1024", 5, tmp_path / "a", **kwargs)
    with pytest.raises(ValueError, match="no dataset 'fineweb10B_sp8192'"):
        download_fineweb("sp8192", 1, tmp_path / "b", **kwargs)
    with pytest.raises(FileNotFoundError, match="datasets/manifest.json in dataset repo nobody/none"):
        download_fineweb("sp1024", 1, tmp_path / "c", **{**kwargs, "repo_id": "nobody/none"})
    with pytest.raises(ValueError, match="variant='sp4096'"):
        download_fineweb("sp4096", 1, tmp_path / "d", **kwargs)


def test_corrupt_remote_shard_is_reported_and_not_kept(tmp_path, hub, small_tokenizer):
    publish(hub.root / "golf" / "pg", "sp1024", small_tokenizer, n_train=1)
    remote = hub.root / "golf" / "pg" / "datasets" / "datasets" / "fineweb10B_sp1024" / "fineweb_val_000000.bin"
    remote.write_bytes(remote.read_bytes()[:-6])  # truncated upload
    out = tmp_path / "data"
    with pytest.raises(ShardError, match=r"fineweb_val_000000\.bin.*not a valid shard.*truncated"):
        download_fineweb("sp1024", 1, out, repo_id="golf/pg", endpoint=hub.endpoint, cache_dir=tmp_path / "c")
    assert not list((out / "datasets" / "fineweb10B_sp1024").iterdir())


def publish_caseops(repo: Path, tokenizer: Path, n_train: int, n_val: int, manifest: bool) -> dict[str, np.ndarray]:
    """romeerp/parameter-golf-caseops-v1's layout: shards + val byte sidecars + the CaseOps tokenizer."""
    export = repo / "datasets"
    name = "fineweb10B_sp8192_lossless_caps_caseops_v1_reserved"
    tok = "tokenizers/fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model"
    (export / "tokenizers").mkdir(parents=True)
    shutil.copy(tokenizer, export / tok)
    rng = np.random.default_rng(7)
    shards = {}
    for split, n in (("val", n_val), ("train", n_train)):
        for i in range(n):
            shards[f"fineweb_{split}_{i:06d}.bin"] = tokens = rng.integers(0, 320, size=900 + 5 * i)
            write_shard(export / "datasets" / name / f"fineweb_{split}_{i:06d}.bin", tokens)
            if split == "val":
                shards[f"fineweb_val_bytes_{i:06d}.bin"] = nbytes = rng.integers(0, 6, size=tokens.size)
                write_shard(export / "datasets" / name / f"fineweb_val_bytes_{i:06d}.bin", nbytes)
    if manifest:
        (export / "manifest.json").write_text(json.dumps({
            "tokenizers": [{"name": "caseops", "model_path": tok}],
            "datasets": [{"name": name, "tokenizer_name": "caseops", "stats": {"files_train": n_train,
                                                                               "files_val": n_val}}]}))
    return shards


@pytest.fixture(scope="module")
def caseops_tokenizer(tmp_path_factory) -> Path:
    from pgolf.data import caseops
    from pgolf.data.tokenizer import train_tokenizer
    from tests.data.conftest import synthetic_docs

    return train_tokenizer([caseops.encode(d) for d in synthetic_docs(200)], 320,
                           tmp_path_factory.mktemp("cotok") / "co.model", user_defined_symbols=caseops.OPERATORS)


@pytest.mark.parametrize("manifest", [True, False])
def test_caseops_variant_fetches_shards_sidecars_and_tokenizer(tmp_path, hub, caseops_tokenizer, manifest):
    shards = publish_caseops(hub.root / "ro" / "co", caseops_tokenizer, n_train=3, n_val=2, manifest=manifest)
    out = tmp_path / "data"
    info = download_fineweb("caseops", 2, out, repo_id="ro/co", endpoint=hub.endpoint, cache_dir=tmp_path / "c")
    data = out / "datasets" / "fineweb10B_sp8192_lossless_caps_caseops_v1_reserved"
    assert info.data_dir == data and info.text_transform == "lossless_caps_caseops_v1"
    assert [f.name for f in info.val_files] == ["fineweb_val_000000.bin", "fineweb_val_000001.bin"]
    assert [f.name for f in info.val_bytes_files] == ["fineweb_val_bytes_000000.bin", "fineweb_val_bytes_000001.bin"]
    assert [f.name for f in info.train_files] == ["fineweb_train_000000.bin", "fineweb_train_000001.bin"]
    assert info.tokenizer_path == out / "tokenizers" / "fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model"
    for f in info.train_files + info.val_files + info.val_bytes_files:
        np.testing.assert_array_equal(read_shard(f), shards[f.name])
    resolved = resolve_dataset(DataConfig(data_dir=str(data)))  # usable as data.data_dir, sidecars found
    assert resolved.val_bytes_files == info.val_bytes_files and resolved.tokenizer_path == info.tokenizer_path
    with pytest.raises(ValueError, match="caseops .*(has 3 training shards|fewer than 5 training shards)"):
        download_fineweb("caseops", 5, tmp_path / "more", repo_id="ro/co", endpoint=hub.endpoint,
                         cache_dir=tmp_path / "c")


def test_caseops_variant_refuses_a_missing_sidecar(tmp_path, hub, caseops_tokenizer):
    publish_caseops(hub.root / "ro" / "co", caseops_tokenizer, n_train=1, n_val=1, manifest=False)
    (hub.root / "ro" / "co" / "datasets" / "datasets" / "fineweb10B_sp8192_lossless_caps_caseops_v1_reserved"
     / "fineweb_val_bytes_000000.bin").unlink()
    with pytest.raises(FileNotFoundError, match="fineweb_val_bytes_000000.bin"):
        download_fineweb("caseops", 1, tmp_path / "d", repo_id="ro/co", endpoint=hub.endpoint,
                         cache_dir=tmp_path / "c")
