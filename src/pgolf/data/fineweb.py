"""Download the challenge's published FineWeb shards and tokenizer (`pgolf data fineweb`).

Same source and layout as the challenge's `data/cached_challenge_fineweb.py`: a Hugging Face dataset repository
whose export is rooted at the folder `datasets/` and described by `datasets/manifest.json`:

    remote (repo, repo_type="dataset")                         local (out_dir)
    datasets/manifest.json                                     manifest.json
    datasets/datasets/fineweb10B_sp1024/fineweb_val_000000.bin datasets/fineweb10B_sp1024/fineweb_val_000000.bin
    datasets/datasets/fineweb10B_sp1024/fineweb_train_000000.bin ...
    datasets/tokenizers/fineweb_1024_bpe.model (+ .vocab)      tokenizers/fineweb_1024_bpe.model (+ .vocab)

The manifest's `datasets[name == "fineweb10B_<variant>"]` gives the number of train/val shards (`stats.files_*`)
and its tokenizer's name; `tokenizers[name == ...]` gives the tokenizer files to fetch. All validation shards are
fetched, and the first `train_shards` training shards (a prefix of the same frozen shuffled export). Files go
through the normal Hugging Face cache and are hard-linked (or copied) into place; files already present are
kept. Every shard is validated (header and size) after download. A local manifest.json that does not list the
variant yet is merged with the repository's (sp1024 and sp8192 come from different repositories).

    info = download_fineweb("sp1024", train_shards=1, out_dir=Path("data"))
    # then: pgolf run --data.data_dir data/datasets/fineweb10B_sp1024 ...

Variant "caseops" is the CaseOps data R0427 (PR #1855) and PR #1962 train and score on, published by PR #1729's
author as the dataset repository romeerp/parameter-golf-caseops-v1 in the same export layout:

    datasets/datasets/fineweb10B_sp8192_lossless_caps_caseops_v1_reserved/fineweb_{train,val,val_bytes}_%06d.bin
    datasets/tokenizers/fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model

Every val shard comes with its byte sidecar (fineweb_val_bytes_%06d.bin), fetched and checked against it. If the
repository's manifest.json does not describe the dataset, the val shards are found by fetching fineweb_val_000000,
fineweb_val_000001, ... until the next one does not exist.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from pgolf.data.corpus import DatasetInfo, find_val_sidecars
from pgolf.data.shards import ShardError, read_shard
from pgolf.data.tokenizer import load_tokenizer
from pgolf.io import atomic_write_json

REMOTE_ROOT = "datasets"
DEFAULT_REPO_IDS = {
    "sp1024": "willdepueoai/parameter-golf",  # the challenge's default (cached_challenge_fineweb.py REPO_ID)
    "sp8192": "kevclark/parameter-golf",  # MATCHED_FINEWEB_REPO_ID used by the sp8192 records (R0405+)
    "caseops": "romeerp/parameter-golf-caseops-v1",  # R0427's CaseOps data (PR #1729)
}
DATASET_NAMES = {"sp1024": "fineweb10B_sp1024", "sp8192": "fineweb10B_sp8192",
                 "caseops": "fineweb10B_sp8192_lossless_caps_caseops_v1_reserved"}
CASEOPS_TOKENIZER = "tokenizers/fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model"


def download_fineweb(
    variant: str, train_shards: int, out_dir: str | os.PathLike, *, repo_id: str | None = None,
    revision: str | None = None, endpoint: str | None = None, cache_dir: str | os.PathLike | None = None,
) -> DatasetInfo:
    """Fetch manifest, all val shards, the first `train_shards` train shards and the tokenizer into `out_dir`.

    repo_id/revision/endpoint default to the challenge's repository on huggingface.co (endpoint also honours
    HF_ENDPOINT); cache_dir is the Hugging Face cache (default: huggingface_hub's, i.e. $HF_HOME/hub).
    Returns the dataset at out_dir/datasets/fineweb10B_<variant> with exactly the requested shards.
    """
    if variant not in DEFAULT_REPO_IDS:
        raise ValueError(f"variant={variant!r}: expected one of {sorted(DEFAULT_REPO_IDS)}")
    if train_shards < 0:
        raise ValueError(f"train_shards={train_shards} must be ≥ 0")
    hub = _Hub(repo_id or DEFAULT_REPO_IDS[variant], revision, endpoint, cache_dir)
    out_dir = Path(out_dir)
    dataset_name = DATASET_NAMES[variant]
    shard_dir = f"datasets/{dataset_name}"
    caseops = variant == "caseops"
    described = None
    try:
        manifest_path = _ensure_manifest(hub, out_dir / "manifest.json", dataset_name)
        described = _select(manifest_path, dataset_name)
    except (FileNotFoundError, ValueError):
        if not caseops:  # the challenge's repositories always describe their datasets
            raise
    if described is not None:
        n_train, n_val, tokenizer_files = described
        if train_shards > n_train:
            raise ValueError(f"{variant} has {n_train} training shards on {hub.repo}, requested {train_shards}")
        val_files = [hub.fetch(f"{shard_dir}/fineweb_val_{i:06d}.bin", out_dir) for i in range(n_val)]
    else:  # a CaseOps export without a manifest entry: val shards until the first missing index
        tokenizer_files, val_files = [CASEOPS_TOKENIZER], []
        while True:
            try:
                val_files.append(hub.fetch(f"{shard_dir}/fineweb_val_{len(val_files):06d}.bin", out_dir))
            except FileNotFoundError:
                if not val_files:
                    raise
                break
    if caseops:  # the byte sidecar of every val shard (find_val_sidecars below checks them against their shards)
        for f in val_files:
            hub.fetch(f"{shard_dir}/{f.name.replace('_val_', '_val_bytes_', 1)}", out_dir)
    try:
        train_files = [hub.fetch(f"{shard_dir}/fineweb_train_{i:06d}.bin", out_dir) for i in range(train_shards)]
    except FileNotFoundError as e:
        raise ValueError(f"{variant} on {hub.repo} has fewer than {train_shards} training shards ({e})") from e
    tokenizer_paths = [hub.fetch(rel, out_dir) for rel in tokenizer_files]
    model = next((p for p in tokenizer_paths if p.suffix == ".model"), None)
    if model is None:
        raise ValueError(f"the tokenizer of {dataset_name} lists no .model file: {tokenizer_files}")
    n_tokens = {split: sum(int(read_shard(f).size) for f in files) for split, files in (("train", train_files),
                                                                                       ("val", val_files))}
    return DatasetInfo(out_dir / shard_dir, model, load_tokenizer(model).vocab_size(), train_files, val_files,
                       n_tokens["train"], n_tokens["val"], find_val_sidecars(val_files),
                       "lossless_caps_caseops_v1" if caseops else "")


def _ensure_manifest(hub: _Hub, local: Path, dataset_name: str) -> Path:
    """The local manifest.json, refreshed from the repo when it does not list `dataset_name` yet.

    The repo's entries are merged into an existing local manifest (by name), so sp1024 from one repository and
    sp8192 from another can live side by side under one out_dir, as the challenge's data/ folder does.
    """
    manifest = _read_json(local) if local.is_file() else {}
    if any(d.get("name") == dataset_name for d in manifest.get("datasets", [])):
        return local  # already described: works offline once downloaded
    remote = _read_json(hub.download("manifest.json"))
    for key in ("datasets", "tokenizers"):
        new = {e.get("name"): e for e in remote.get(key, [])}
        manifest[key] = [e for e in manifest.get(key, []) if e.get("name") not in new] + list(new.values())
    for key, value in remote.items():
        manifest.setdefault(key, value)
    atomic_write_json(local, manifest)
    return local


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _select(manifest_path: Path, dataset_name: str) -> tuple[int, int, list[str]]:
    """(train shard count, val shard count, tokenizer files) for `dataset_name` from the challenge manifest."""
    manifest = _read_json(manifest_path)
    datasets = manifest.get("datasets", [])
    entry = next((d for d in datasets if d.get("name") == dataset_name), None)
    if entry is None:
        names = [d.get("name") for d in datasets]
        raise ValueError(f"{manifest_path}: no dataset {dataset_name!r}; it lists {names}")
    stats = entry.get("stats") or {}
    if not isinstance(stats.get("files_train"), int) or not isinstance(stats.get("files_val"), int):
        raise ValueError(f"{manifest_path}: dataset {dataset_name!r} lacks integer stats.files_train/files_val")
    tok = next((t for t in manifest.get("tokenizers", []) if t.get("name") == entry.get("tokenizer_name")), None)
    if tok is None:
        raise ValueError(f"{manifest_path}: tokenizer {entry.get('tokenizer_name')!r} of {dataset_name!r} not listed")
    files = [str(tok[k]) for k in ("model_path", "vocab_path", "path") if tok.get(k)]
    for rel in files:
        path = PurePosixPath(rel)
        if path.is_absolute() or ".." in path.parts or not path.parts:
            raise ValueError(f"{manifest_path}: tokenizer path {rel!r} must be relative, inside the export")
    return stats["files_train"], stats["files_val"], files


@dataclass(frozen=True)
class _Hub:
    """One dataset repository: `download` into the HF cache, `fetch` from there into the local layout."""

    repo: str
    revision: str | None
    endpoint: str | None
    cache_dir: str | os.PathLike | None

    def download(self, rel: str) -> Path:
        """REMOTE_ROOT/rel into the Hugging Face cache; returns the cached file."""
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError

        remote = PurePosixPath(REMOTE_ROOT) / rel
        where = f"{remote} in dataset repo {self.repo} (revision {self.revision or 'main'})"
        try:
            cached = hf_hub_download(self.repo, remote.name, subfolder=str(remote.parent), repo_type="dataset",
                                     revision=self.revision, endpoint=self.endpoint, cache_dir=self.cache_dir)
        except LocalEntryNotFoundError as e:  # a subclass of EntryNotFoundError: test it first
            raise ConnectionError(f"{where}: hub unreachable and not in the Hugging Face cache "
                                  f"(offline? HF_ENDPOINT selects a mirror) ({e})") from e
        except EntryNotFoundError as e:
            raise FileNotFoundError(f"{where}: not found") from e
        except HfHubHTTPError as e:
            raise ConnectionError(f"{where}: download failed ({e})") from e
        return Path(cached).resolve(strict=True)  # the snapshot entry is a symlink to a blob

    def fetch(self, rel: str, out_dir: Path) -> Path:
        """out_dir/rel, downloaded if missing (hard link from the cache, else a copy); shards are validated."""
        dest = out_dir / rel
        if dest.is_file():
            return dest
        source = self.download(rel)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.parent / f".{dest.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        try:
            try:
                os.link(source, tmp)
            except OSError:  # another filesystem, or no hard links
                shutil.copyfile(source, tmp)
            if dest.suffix == ".bin":
                read_shard(tmp)  # validate before it takes its final name
            os.replace(tmp, dest)
        except ShardError as e:
            tmp.unlink(missing_ok=True)
            source.unlink(missing_ok=True)  # drop the bad blob too, so a rerun downloads it again
            raise ShardError(f"{rel} from {self.repo} is not a valid shard (deleted; run again to retry): {e}") from e
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return dest
