"""`pgolf data ...`: prepare a corpus, download the challenge's FineWeb shards, train a tokenizer, convert files.

    pgolf data prepare INPUT... --out DIR [--vocab-size 1024] [--tokenizer T.model] [--val-fraction 0.1]
                       [--val-docs N] [--val-only] [--caseops]
    pgolf data fineweb --variant sp1024|sp8192|caseops --train-shards N [--out DIR] [--repo-id ID]
    pgolf data tokenizer INPUT... --vocab-size N --out T.model [--caseops]
    pgolf data convert INPUT... --tokenizer T.model --out OUT   (.txt/.jsonl → shard, or shard → .jsonl)

With a CaseOps tokenizer (one reserving the operators U+E001..U+E004, data/caseops.py) `convert` transforms text
before encoding and decodes shards back to the original text.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_data_parser(sub) -> None:
    d = sub.add_parser("data", help="prepare / download / tokenize / convert data")
    dsub = d.add_subparsers(dest="data_verb", required=True)
    p = dsub.add_parser("prepare", help="a .txt/.jsonl corpus (or folder) → tokenizer → train/val shards")
    p.add_argument("inputs", nargs="*", help="files or folders; none = the embedded BBC News corpus")
    p.add_argument("--out", required=True, help="dataset folder to create")
    p.add_argument("--vocab-size", type=int, help="default: the --tokenizer's piece count, else 1024")
    p.add_argument("--tokenizer", help="use this SentencePiece .model instead of training one")
    p.add_argument("--val-fraction", type=float, default=0.1,
                   help="share of documents (by text hash) for validation; 1 = eval-only (as --val-only)")
    p.add_argument("--val-docs", type=int,
                   help="the first N documents are validation, the rest train (the challenge's and R0427's split)")
    p.add_argument("--val-only", action="store_true",
                   help="eval-only dataset: every document is validation, no train shard (needs --tokenizer)")
    p.add_argument("--caseops", action="store_true",
                   help="R0427's CaseOps data: case-transformed text, fineweb_* names, val byte sidecar")
    p.add_argument("--shard-tokens", type=int, default=10_000_000)
    f = dsub.add_parser("fineweb", help="download the challenge's FineWeb shards + tokenizer (Hugging Face)")
    f.add_argument("--variant", choices=["sp1024", "sp8192", "caseops"], default="sp1024")
    f.add_argument("--train-shards", type=int, default=1)
    f.add_argument("--out", default="data/fineweb", help="destination folder")
    f.add_argument("--repo-id", help="dataset repository (default: the challenge's)")
    f.add_argument("--revision")
    t = dsub.add_parser("tokenizer", help="train a SentencePiece tokenizer with the challenge's spec")
    t.add_argument("inputs", nargs="+")
    t.add_argument("--vocab-size", type=int, required=True)
    t.add_argument("--out", required=True, help="output .model path")
    t.add_argument("--caseops", action="store_true",
                   help="train on CaseOps-transformed text with the four operators reserved as pieces 4-7 (R0427)")
    c = dsub.add_parser("convert", help="text → shard, or shard → .jsonl documents (split at BOS)")
    c.add_argument("inputs", nargs="+")
    c.add_argument("--tokenizer", required=True)
    c.add_argument("--out", required=True)
    c.add_argument("--bytes-out", default=None,
                   help="CaseOps text → shard: where to write the val byte sidecar (default: beside a val shard OUT "
                        "named X_val_NNNNNN.bin, as X_val_bytes_NNNNNN.bin; none for other names)")


def run_data_command(args: argparse.Namespace) -> int:
    from pgolf.data import corpus, shards, tokenizer

    if args.data_verb == "prepare":
        docs = corpus.read_documents([Path(x) for x in args.inputs]) if args.inputs else corpus.bbc_documents()
        vocab = args.vocab_size or (tokenizer.load_tokenizer(Path(args.tokenizer)).vocab_size() if args.tokenizer
                                    else 1024)
        info = corpus.prepare_corpus(
            docs, Path(args.out), vocab_size=vocab, val_fraction=args.val_fraction,
            tokenizer_path=Path(args.tokenizer) if args.tokenizer else None, shard_tokens=args.shard_tokens,
            name=Path(args.out).name, val_docs=args.val_docs, val_only=args.val_only, caseops=args.caseops,
        )
        _print_info(info)
    elif args.data_verb == "fineweb":
        from pgolf.data.fineweb import download_fineweb

        info = download_fineweb(args.variant, args.train_shards, Path(args.out), repo_id=args.repo_id,
                                revision=args.revision)
        _print_info(info)
    elif args.data_verb == "tokenizer":
        docs = corpus.read_documents([Path(x) for x in args.inputs])
        if args.caseops:
            from pgolf.data import caseops

            path = tokenizer.train_tokenizer([caseops.encode(d) for d in docs], args.vocab_size, Path(args.out),
                                             user_defined_symbols=caseops.OPERATORS)
        else:
            path = tokenizer.train_tokenizer(docs, args.vocab_size, Path(args.out))
        sp = tokenizer.load_tokenizer(path)
        kind = " CaseOps (operators = pieces 4-7)" if args.caseops else ""
        print(f"tokenizer: {path} ({sp.vocab_size()} pieces{kind}, trained on {len(docs)} documents)")
    elif args.data_verb == "convert":
        sp = tokenizer.load_tokenizer(Path(args.tokenizer))
        inputs = [Path(x) for x in args.inputs]
        out = Path(args.out)
        if all(p.suffix == ".bin" for p in inputs):
            n_docs = _shards_to_jsonl(inputs, sp, out)
            print(f"wrote {n_docs} documents to {out}")
        else:
            docs = corpus.read_documents(inputs)
            if _is_caseops(sp):
                _caseops_text_to_shard(sp, docs, out, Path(args.bytes_out) if args.bytes_out else None)
            else:
                if args.bytes_out:
                    raise ValueError("--bytes-out: a byte sidecar is written for a CaseOps tokenizer only (others "
                                     "count bytes with the tokenizer's LUT)")
                tokens = tokenizer.encode_documents(sp, docs)
                shards.write_shard(out, tokens)
                print(f"wrote {len(tokens):,} tokens ({len(docs)} documents) to {out}")
    return 0


def _caseops_text_to_shard(sp, docs: list[str], out: Path, bytes_out: Path | None) -> None:
    """CaseOps text → one shard of [BOS] + ids per document, and for a val shard its byte sidecar ([0] + original
    UTF-8 bytes per token, R0427's fineweb_val_bytes_NNNNNN.bin) so val_bpb divides by the original text's bytes."""
    import numpy as np

    from pgolf.data import caseops
    from pgolf.data.corpus import sidecar_path
    from pgolf.data.shards import write_shard

    bos = sp.bos_id()
    pairs = caseops.encode_with_bytes(sp, docs)
    tokens = np.concatenate([np.zeros(0, np.int64), *[np.concatenate([[bos], ids]) for ids, _ in pairs]])
    nbytes = np.concatenate([np.zeros(0, np.int64), *[np.concatenate([[0], nb]) for _, nb in pairs]])
    target = bytes_out or sidecar_path(out)
    if target is not None and int(nbytes.max(initial=0)) >= 2**16:
        raise ValueError(f"{out}: a token stands for {int(nbytes.max())} bytes; the sidecar is uint16")
    write_shard(out, tokens)
    print(f"wrote {len(tokens):,} tokens ({len(docs)} CaseOps documents) to {out}")
    if target is None:
        print(f"no byte sidecar: {out.name} is not named as a val shard (X_val_NNNNNN.bin); pass --bytes-out to "
              "write one")
        return
    write_shard(target, nbytes)
    print(f"wrote its byte sidecar ({int(nbytes.sum()):,} bytes of original text) to {target}")


def _shards_to_jsonl(paths: list[Path], sp, out: Path) -> int:
    import numpy as np

    from pgolf.data.shards import read_shard

    tokens = np.concatenate([np.asarray(read_shard(p)) for p in sorted(paths)]) if paths else np.zeros(0)
    bos = sp.bos_id()
    starts = np.flatnonzero(tokens == bos).tolist()
    if not starts or starts[0] != 0:
        starts = [0] + starts
    bounds = starts + [len(tokens)]
    if _is_caseops(sp):
        from pgolf.data.caseops import decode as text_of
    else:
        def text_of(t: str) -> str:
            return t
    from pgolf.io import atomic_write

    n = 0

    def write(f) -> None:
        nonlocal n
        for a, b in zip(bounds[:-1], bounds[1:]):
            ids = [int(t) for t in tokens[a:b] if t != bos]
            if ids:
                f.write((json.dumps({"text": text_of(sp.decode(ids))}, ensure_ascii=False) + "\n").encode("utf-8"))
                n += 1

    atomic_write(out, write)
    return n


def _is_caseops(sp) -> bool:
    from pgolf.data.caseops import is_caseops_tokenizer

    return is_caseops_tokenizer(sp)


def _print_info(info) -> None:
    print(f"dataset: {info.data_dir}")
    print(f"tokenizer: {info.tokenizer_path} (vocab {info.vocab_size})")
    print(f"train: {len(info.train_files)} shard(s), {info.num_train_tokens:,} tokens")
    print(f"val: {len(info.val_files)} shard(s), {info.num_val_tokens:,} tokens")
    if info.val_bytes_files:
        import numpy as np

        from pgolf.data.shards import read_shard

        total = sum(int(np.asarray(read_shard(f), dtype=np.int64).sum()) for f in info.val_bytes_files)
        print(f"val byte sidecar: {len(info.val_bytes_files)} shard(s), {total:,} bytes of original text "
              f"({info.val_bytes_files[0].name} ...); bytes: sidecar")
