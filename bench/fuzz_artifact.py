"""Fuzz the FULL artifact load path of every command that reads one: 0 tracebacks, 0 hangs, bounded memory.

    python bench/fuzz_artifact.py [-n 10000] [--workers 2] [--timeout 10] [--artifact PATH ...] [--families a,b]

Base artifacts: small but complete models (every tensor the manifest's model implies; features bigram, value
embeddings, SmearGate v2, depth recurrence, parallel residuals, sparse attention gates) quantized with int8 and
sdclip-rtn recipes, encoded with zlib / brotli+shuffle / rans / rans-ctx; one rans-ctx artifact with an
embedding-like int6 tok_emb whose stream is in the adaptive mode (checked: the run stops if it is not); plus any
--artifact given. Each mutant goes through, in a worker process: `pgolf info` and `pgolf pack` (the CLI's `main`,
so any exception that escapes is a traceback), and the `pgolf eval` / `check-legal --artifact` load path:
read_artifact (decode + validate), the run config from the manifest, the model built from the artifact, one forward
pass, a finite loss.

Mutant families (MUTATORS; add one with @mutator("name")): byte-level edits of the container (flip, truncate,
insert, delete, overwrite, splice); forged manifest model fields (zero, negative, huge, wrong type); forged run
config fields; type confusion of manifest and header fields; forged tensor rows (shape, dtype, bits, name, kind,
offset, nbytes); semantic corruption (codes beyond the bits label, NaN/inf scales and passthrough, fp16 ↔ bf16
swaps, transposed or swapped tensors); byte edits inside one entropy-coded tensor stream of a rans / rans-ctx base,
adaptive streams preferred, with the stream lengths rewritten to match (code-stream); decompression bombs and huge
lengths. The header/payload mutants are re-packed
with a recomputed CRC, so they reach the validator, not just the checksum.

Outcomes per command: ok (loaded and scored), refused (one clean error: ArtifactError or exit status 2), crash
(any other exception), hang (one command over --timeout s, or the worker killed after --timeout × 4 s and replaced).
Peak RSS is the largest ru_maxrss of any worker (each worker's baseline, torch imported, is printed too); the
family whose mutant first reached a worker's peak is shown per row. Exit status 1 on any crash or hang.

The one stand-in: `info`/`pack` print the counted-script bytes (`measure_code_bytes(cfg=…)`, seconds per call: it
bundles pgolf's own source for the manifest's config). It reads no artifact bytes, so the workers replace it with a
constant after building the config from the manifest exactly as the command does.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import os
import random
import resource
import select
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import zlib
from collections import Counter
from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable

from byte_mutations import mutate_bytes  # bench/ (this script's folder) is on sys.path

COMMANDS = ("info", "pack", "eval", "check-legal")


# ------------------------------------------------------------------------------------------------ worker side

def _load_path(path: str, forward: bool) -> str:
    """The eval / check-legal artifact path: decode + validate, run config, model, (one forward, finite loss)."""
    import torch

    from pgolf.eval.roundtrip import check_score, model_from_state
    from pgolf.config import config_from_manifest
    from pgolf.pack.validate import read_artifact

    qs, manifest, model_cfg = read_artifact(path)
    cfg = config_from_manifest(manifest)
    model = model_from_state(qs, manifest, model_cfg)
    if not forward:
        copy.deepcopy(model)  # check-legal copies the model per mode
        return "ok"
    idx = torch.randint(0, model_cfg.vocab_size, (1, 17), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        loss = float(model(idx[:, :-1], idx[:, 1:]))
    check_score(loss, loss / 0.7, "fuzz")  # eval refuses a non-finite score the same way
    _ = cfg
    return "ok"


def _run_command(cmd: str, path: str) -> tuple[str, str]:
    from pgolf.cli import main
    from pgolf.pack.format import ArtifactError

    try:
        if cmd in ("info", "pack"):
            argv = ["info", path, "--codecs", "none"] if cmd == "info" else ["pack", path, "--codec", "zlib",
                                                                            "--codecs", "none"]
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
                rc = main(argv)
            return ("ok", "") if rc == 0 else ("refused", err.getvalue().strip()[-200:])
        return _load_path(path, forward=cmd == "eval"), ""
    except ArtifactError as e:
        return "refused", str(e)[:200]
    except BaseException as e:  # noqa: BLE001 - everything else is what the fuzz looks for
        return "crash", f"{type(e).__name__}: {str(e)[:200]} @ {traceback.format_exc().splitlines()[-3].strip()}"


def worker() -> int:
    import torch

    torch.set_num_threads(1)
    import pgolf.run
    from pgolf.cli import main  # noqa: F401  (imports done before the baseline is reported)

    code_bytes = pgolf.run.counted_code_bytes(None)
    pgolf.run.counted_code_bytes = lambda *a, **k: code_bytes  # the stand-in named in the module docstring
    print(json.dumps({"ready": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}), flush=True)
    for line in sys.stdin:
        path = line.strip()
        out: dict = {}
        for c in COMMANDS:
            t = time.perf_counter()
            out[c] = [*_run_command(c, path), round(time.perf_counter() - t, 3)]
        out["rss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps(out), flush=True)
    return 0


# ------------------------------------------------------------------------------------------------ base artifacts

def _tiny_configs():
    from pgolf.config import build_config, load_preset

    base = build_config([("preset", load_preset("cpu-smoke"))])
    m = base.model  # cpu-smoke: 2 layers × 64; the recipes below quantize every matrix over 1,024 values
    variants = [
        m,
        replace(m, bigram_vocab_size=64, bigram_dim=16, ve_dim=16, ve_layers=(m.num_layers - 1,),
                smear_gate="v2", unet_skips="gates", sparse_attn_gate=True),
        replace(m, num_layers=3, num_loops=1, loop_start=1, loop_end=1, parallel_start_layer=2, xsa_last_n=1,
                mlp_act="leaky_relu2", rope_dims=m.model_dim // m.num_heads // 2),
    ]
    return [replace(base, model=v) for v in variants]


def base_artifacts(extra: list[str]) -> list[tuple[str, bytes]]:
    import torch

    from pgolf.model.gpt import GPT
    from pgolf.pack.container import encode_artifact
    from pgolf.quant.apply import quantize_state_dict

    out = []
    from dataclasses import replace as _replace

    from pgolf.quant.recipes import get_recipe

    for k, cfg in enumerate(_tiny_configs()):
        torch.manual_seed(k)
        model = GPT(cfg.model)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.02)
        manifest = {"model": asdict(cfg.model), "recipe": None, "codec": None, "tokenizer_sha256": None,
                    "pgolf_version": "fuzz", "config": cfg.to_dict(), "looping_active": cfg.model.num_loops > 0}
        for recipe, codec in (("int8-baseline", "zlib"), ("sdclip-rtn", "brotli+shuffle"), ("sdclip-rtn", "rans"),
                              ("int8-baseline", "rans-ctx")):
            try:  # small passthrough threshold: the tiny model still has quantized rows for the code mutants
                qs, _ = quantize_state_dict(model.state_dict(),
                                            _replace(get_recipe(recipe), passthrough_max_numel=1024))
            except (KeyError, ValueError):
                continue
            out.append((f"m{k}-{recipe}-{codec}", encode_artifact(qs, {**manifest, "recipe": recipe,
                                                                      "codec": codec}, codec)))
    out.append(("emb-int6-rans-ctx", adaptive_base()))
    for path in extra:
        out.append((Path(path).name, Path(path).read_bytes()))
    return out


def adaptive_base() -> bytes:
    """A rans-ctx artifact whose tok_emb stream is in the adaptive mode (pgolf.pack.adaptive), so the fuzz reaches
    that decoder: the cpu-smoke model with an embedding-like tok_emb (bench/pack_vs_lrzip.sp8192_tok_emb at 1024 ×
    64: column offset + low-rank rows + noise, 128 near-copy rare rows) and int6 SDClip codes for it (the recipes'
    int8 k=20 embed codes are too wide for the mode to win at this size). Raises if the mode was not picked."""
    import torch

    from pack import stream_modes  # bench/
    from pack_vs_lrzip import sp8192_tok_emb
    from pgolf.model.gpt import GPT
    from pgolf.pack.container import encode_artifact
    from pgolf.quant.apply import quantize_state_dict
    from pgolf.quant.recipes import TensorRule, get_recipe

    cfg = _tiny_configs()[0]
    torch.manual_seed(3)
    model = GPT(cfg.model)
    m = cfg.model
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
        model.tok_emb.weight.copy_(torch.from_numpy(sp8192_tok_emb(3, m.vocab_size, m.model_dim, m.vocab_size // 8)))
    recipe = get_recipe("sdclip-rtn")
    rules = (TensorRule(role="embed", method="sdclip_rtn", bits=6, params={"clip_sigma": 12.85}), *recipe.rules[1:])
    qs, _ = quantize_state_dict(model.state_dict(), replace(recipe, rules=rules, passthrough_max_numel=1024))
    manifest = {"model": asdict(m), "recipe": "sdclip-rtn", "codec": "rans-ctx", "tokenizer_sha256": None,
                "pgolf_version": "fuzz", "config": cfg.to_dict(), "looping_active": False}
    blob = encode_artifact(qs, manifest, "rans-ctx")
    if not stream_modes(blob).get("adaptive"):
        raise SystemExit(f"fuzz base emb-int6-rans-ctx has no adaptive stream ({stream_modes(blob)}): the fuzz "
                         "would not reach pgolf.pack.adaptive's decoder")
    return blob


# ------------------------------------------------------------------------------------------------ mutators

MUTATORS: dict[str, Callable[[bytes, random.Random, list[bytes]], bytes]] = {}
FAMILY_WEIGHTS: dict[str, float] = {"bomb": 0.03}
"""Relative frequency of a family (default 1): a bomb costs four 256 MiB decompressions and has few variants."""


def mutator(name: str):
    def deco(fn):
        MUTATORS[name] = fn
        return fn
    return deco


def unpack(blob: bytes) -> tuple[dict, bytes]:
    """(header, raw payload) of any valid artifact (decoded, then laid out as a plain v1 body)."""
    from pgolf.pack.container import decode_artifact, encode_artifact
    from pgolf.pack.codecs import decompress

    qs, manifest = decode_artifact(blob)
    body = decompress(encode_artifact(qs, manifest, "zlib")[8:], "zlib")
    (hlen,) = struct.unpack_from("<I", body, 0)
    return json.loads(body[4 : 4 + hlen]), body[4 + hlen :]


def pack(header: dict, payload: bytes, crc: bool = True) -> bytes:
    """A version-1 zlib artifact of this header and payload, with the CRC and payload size recomputed."""
    from pgolf.pack.format import MAGIC

    header = dict(header)
    if crc:
        header["payload_crc32"], header["payload_bytes"] = zlib.crc32(payload), len(payload)
    hb = json.dumps(header, separators=(",", ":")).encode()
    return MAGIC + bytes([1, 1]) + zlib.compress(struct.pack("<I", len(hb)) + hb + payload, 6)


def _weird(rng: random.Random):
    return rng.choice([0, -1, -(2**31), 1, 2, 3, 7, 63, 65, 1000, 1500, 100_000, 2**31, 2**62, 2**80, 0.5, 1e308,
                       float("nan"), float("inf"), -0.0, True, False, None, "", "x", "64", [], [1, 2], {}, {"a": 1},
                       [[[[[]]]]]])


@mutator("bytes")
def m_bytes(blob, rng, others):
    return mutate_bytes(blob, rng, others, head=64)[1]


@mutator("manifest-model")
def m_model(blob, rng, others):
    header, payload = unpack(blob)
    model = header["manifest"]["model"]
    for _ in range(rng.choice([1, 1, 2, 3])):
        key = rng.choice(list(model) + ["warp_drive"])
        if rng.random() < 0.5 and isinstance(model.get(key), int) and not isinstance(model.get(key), bool):
            model[key] = rng.choice([0, -1, 1, 2, model[key] * 2, model[key] + 1, model[key] - 1, 1500, 100_000,
                                     2**40])
        else:
            model[key] = _weird(rng)
    return pack(header, payload)


@mutator("manifest-config")
def m_config(blob, rng, others):
    header, payload = unpack(blob)
    cfg = header["manifest"]["config"]
    section = rng.choice(list(cfg))
    key = rng.choice(list(cfg[section]) or ["x"])
    cfg[section][key] = _weird(rng) if rng.random() < 0.7 else rng.choice([0, -5, 10**12])
    if rng.random() < 0.2:
        cfg[rng.choice(list(cfg))] = _weird(rng)
    return pack(header, payload)


@mutator("type-confusion")
def m_types(blob, rng, others):
    header, payload = unpack(blob)
    target = rng.choice(["manifest", "manifest.model", "manifest.config", "manifest.looping_active", "dtypes",
                         "tensors", "format", "payload_bytes", "drop"])
    if target == "drop":
        header["manifest"].pop(rng.choice(["model", "config", "looping_active", "recipe"]), None)
    elif "." in target:
        header["manifest"][target.split(".")[1]] = rng.choice([[], [1], "model", 5, None, True, {"a": [1]}])
    else:
        header[target] = rng.choice([[], {}, "x", 5, None, True, [{"name": 1}]])
    return pack(header, payload, crc=target != "payload_bytes")


@mutator("tensor-rows")
def m_rows(blob, rng, others):
    header, payload = unpack(blob)
    rows = header["tensors"]
    row = rng.choice(rows)
    field = rng.choice(["shape", "dtype", "bits", "name", "kind", "offset", "nbytes", "method", "key", "drop", "dup"])
    if field == "shape":
        s = row["shape"]
        row["shape"] = rng.choice([s[::-1], [s[0] * 2] + s[1:] if s else [2], [10**6, 10**6], [0], [-1], s + [1],
                                   [2**40], "x", [1.5]])
    elif field == "dtype":
        row["dtype"] = rng.choice(["float16", "bfloat16", "float32", "int8", "uint8", "float64", "complex64", 7])
    elif field == "bits":
        row["bits"] = rng.choice([0, 1, 2, 3, 9, 255, -1, True, "6", None])
    elif field == "name":
        row["name"] = rng.choice([r["name"] for r in rows] + ["", "x" * 10_000, 5])
    elif field == "kind":
        row["kind"] = rng.choice(["q", "scale", "extra", "passthrough", "zz"])
    elif field in ("offset", "nbytes"):
        row[field] = rng.choice([0, row[field] + 1, row[field] - 1, 2**62, -1, None])
    elif field in ("method", "key"):
        row[field] = _weird(rng)
    elif field == "drop":
        rows.remove(row)
    else:
        rows.append(dict(row))
    return pack(header, payload)


def _rows_of(header: dict, kind: str, dtypes: tuple[str, ...] | None = None) -> list[dict]:
    return [r for r in header["tensors"] if r["kind"] == kind and r["nbytes"] and (dtypes is None
                                                                                  or r["dtype"] in dtypes)]


@mutator("semantic")
def m_semantic(blob, rng, others):
    import numpy as np

    header, payload = unpack(blob)
    p = bytearray(payload)
    op = rng.choice(["codes", "bits", "nan-scale", "inf-passthrough", "dtype-swap", "dtype-table", "transpose",
                     "swap-names"])
    rows = header["tensors"]
    if op == "codes" and _rows_of(header, "q"):
        r = rng.choice(_rows_of(header, "q"))
        p[r["offset"] + rng.randrange(r["nbytes"])] = rng.choice([127, 128, 0x81, 100, 64])
    elif op == "bits" and _rows_of(header, "q"):
        rng.choice(_rows_of(header, "q"))["bits"] = rng.choice([1, 2, 3, 4])
    elif op in ("nan-scale", "inf-passthrough"):
        cands = _rows_of(header, "scale" if op == "nan-scale" else "passthrough", ("float16", "float32"))
        if cands:
            r = rng.choice(cands)
            val = rng.choice([np.nan, np.inf, -np.inf])
            item = np.array([val], dtype=r["dtype"]).tobytes()
            j = r["offset"] + len(item) * rng.randrange(r["nbytes"] // len(item))
            p[j : j + len(item)] = item
    elif op == "dtype-swap":
        cands = [r for r in rows if r["dtype"] in ("float16", "bfloat16")]
        if cands:
            r = rng.choice(cands)
            r["dtype"] = "bfloat16" if r["dtype"] == "float16" else "float16"
    elif op == "dtype-table":
        name = rng.choice(list(header["dtypes"]))
        header["dtypes"][name] = rng.choice(["float16", "bfloat16", "int8", "float64", "int64"])
    elif op == "transpose":
        cands = [r for r in rows if len(r["shape"]) == 2 and r["shape"][0] != r["shape"][1]]
        if cands:
            r = rng.choice(cands)
            r["shape"] = r["shape"][::-1]
    else:  # swap two tensors' names in every row (codes, scales, extras) and the dtype table stays as is
        q = _rows_of(header, "q")
        if len(q) >= 2:
            a, b = (r["name"] for r in rng.sample(q, 2))
            for r in rows:
                r["name"] = {a: b, b: a}.get(r["name"], r["name"])
    return pack(header, bytes(p))


def split_rans(blob: bytes) -> tuple[bytes, dict, bytes, list[bytes]] | None:
    """(prefix up to the inner codec id, header, rest of the inner body, code streams) of a rans / rans-ctx
    artifact, or None for another codec."""
    from pgolf.pack.codecs import decompress
    from pgolf.pack.container import CODEC_IDS, ENTROPY_CODECS, RANS_INNER
    from pgolf.pack.format import PREFIX as _PREFIX

    if blob[_PREFIX - 1] not in {CODEC_IDS[c] for c in ENTROPY_CODECS}:
        return None
    (n,) = struct.unpack_from("<I", blob, _PREFIX + 1)
    body = decompress(blob[_PREFIX + 5 : _PREFIX + 5 + n], RANS_INNER.split("+")[0])
    (hlen,) = struct.unpack_from("<I", body, 0)
    header = json.loads(body[4 : 4 + hlen])
    streams, p = [], _PREFIX + 5 + n
    for m in header["code_streams"]:
        streams.append(blob[p : p + m])
        p += m
    return blob[: _PREFIX + 1], header, body[4 + hlen :], streams


def join_rans(prefix: bytes, header: dict, rest: bytes, streams: list[bytes]) -> bytes:
    """Inverse of split_rans, with code_streams recomputed (so a mutated stream reaches the entropy decoder)."""
    from pgolf.pack.codecs import compress
    from pgolf.pack.container import RANS_INNER

    header = dict(header, code_streams=[len(s) for s in streams])
    hb = json.dumps(header, separators=(",", ":")).encode()
    inner = compress(struct.pack("<I", len(hb)) + hb + rest, RANS_INNER.split("+")[0])
    return prefix + struct.pack("<I", len(inner)) + inner + b"".join(streams)


_SPLIT: dict[int, tuple | None] = {}
STREAM_HITS: Counter = Counter()
"""code-stream mutants per entropy.py stream mode of the stream they edited (printed after the table)."""
_HITS_LOCK = threading.Lock()


def _split_cached(blob: bytes):
    key = hash(blob)
    if key not in _SPLIT:
        _SPLIT[key] = split_rans(blob)
    return _SPLIT[key]


@mutator("code-stream")
def m_code_stream(blob, rng, others):
    """Byte mutations inside one entropy-coded tensor stream of a rans / rans-ctx base, code_streams kept
    consistent. Half the mutants go to a base with an adaptive (version-2) stream and edit that stream 3 times in 4;
    a base of another codec is swapped for a random rans base."""
    with_adaptive = [b for b in others if (p := _split_cached(b)) and any(st[:1] and st[0] >> 5 == 2 for st in p[3])]
    parts = _split_cached(blob)
    if with_adaptive and rng.random() < 0.5:
        parts = _split_cached(rng.choice(with_adaptive))
    elif parts is None:
        parts = _split_cached(rng.choice([b for b in others if _split_cached(b) is not None]))
    prefix, header, rest, streams = parts
    adaptive = [i for i, st in enumerate(streams) if st and st[0] >> 5 == 2]
    coded = [i for i, st in enumerate(streams) if len(st) > 8] or list(range(len(streams)))
    i = rng.choice(adaptive if adaptive and rng.random() < 0.75 else coded)
    with _HITS_LOCK:
        STREAM_HITS["adaptive" if i in adaptive else "version-1"] += 1
    pool = [st for st in streams if st]
    streams = list(streams)
    streams[i] = mutate_bytes(streams[i] or b"\x00", rng, pool, head=24)[1]
    return join_rans(prefix, header, rest, streams)


_BOMBS: dict[tuple[str, int], bytes] = {}


def _fast_compress(data: bytes, codec: str) -> bytes:
    import lzma

    import brotli
    import zstandard

    if codec == "lzma":
        return lzma.compress(data, preset=0)
    if codec == "zstd":
        return zstandard.ZstdCompressor(level=1, write_content_size=False).compress(data)
    return brotli.compress(data, quality=1)


@mutator("bomb")
def m_bomb(blob, rng, others):
    from pgolf.pack.container import CODEC_IDS
    from pgolf.pack.format import MAGIC

    op = rng.choice(["zlib", "zstd", "brotli", "lzma", "header-len", "huge-rows", "code-streams"])
    if op in ("zlib", "zstd", "brotli", "lzma"):
        size = rng.choice([257 << 20, 1 << 30])
        key = (op, size)
        if key not in _BOMBS:  # built once per kind: compressing 1 GiB takes seconds
            d = zlib.compressobj(9) if op == "zlib" else None
            chunk = bytes(1 << 20)
            if d is not None:
                data = b"".join(d.compress(chunk) for _ in range(size >> 20)) + d.flush()
            else:  # fast settings: a bomb need not be small, only decompress past the limit
                data = _fast_compress(bytes(257 << 20), op)
            _BOMBS[key] = MAGIC + bytes([1, CODEC_IDS[op]]) + data
        return _BOMBS[key]
    header, payload = unpack(blob)
    if op == "header-len":
        body = struct.pack("<I", rng.choice([2**32 - 1, 5 << 20, 64 << 20])) + b"{" * 1000
        return MAGIC + bytes([1, 1]) + zlib.compress(body)
    if op == "huge-rows":
        header["tensors"] = [dict(header["tensors"][0], name=f"t{i}", offset=0) for i in range(200_000)]
        return pack(header, payload)
    return MAGIC + bytes([2, 16, 8]) + struct.pack("<I", 2**31) + rng.randbytes(64)


# ------------------------------------------------------------------------------------------------ parent side

class Worker:
    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.start()

    def start(self) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen([sys.executable, __file__, "--worker"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env, bufsize=1)
        self.baseline = json.loads(self.proc.stdout.readline())["ready"]

    def run(self, path: str) -> dict | None:
        self.proc.stdin.write(path + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], self.timeout * len(COMMANDS))
        if not ready:
            self.proc.kill()  # this worker only: its own pid
            self.proc.wait()
            self.start()
            return None
        line = self.proc.stdout.readline()
        if not line:  # the worker died (e.g. killed for memory)
            self.proc.wait()
            self.start()
            return {c: ("crash", f"worker died (exit {self.proc.returncode})", 0) for c in COMMANDS} | {"rss_kib": 0}
        return json.loads(line)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("-n", type=int, default=10_000, help="mutants in total")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds per mutant (all commands) before a hang")
    ap.add_argument("--artifact", action="append", default=[], help="also mutate this artifact (repeatable)")
    ap.add_argument("--families", default=",".join(MUTATORS), help=f"mutant families (default all: "
                                                                    f"{', '.join(MUTATORS)})")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-seconds", type=float, default=0, help="stop handing out mutants after this (0 = never)")
    args = ap.parse_args()
    if args.worker:
        return worker()
    families = [f for f in args.families.split(",") if f]
    bases = base_artifacts(args.artifact)
    blobs = [b for _, b in bases]
    rng = random.Random(args.seed)
    tmp = Path(tempfile.mkdtemp(prefix="pgolf-fuzz-"))
    counts: dict[str, Counter] = {f: Counter() for f in families}
    examples: list[str] = []
    peak, lock = [0], threading.Lock()
    jobs = []
    weights = [FAMILY_WEIGHTS.get(f, 1.0) for f in families]
    for i in range(args.n):
        fam = rng.choices(families, weights)[0]
        jobs.append((i, fam, rng.randrange(len(bases)), rng.randrange(2**32)))
    t0 = time.perf_counter()
    workers = [Worker(args.timeout) for _ in range(args.workers)]
    print(f"{len(bases)} base artifacts ({', '.join(n for n, _ in bases)}); worker baseline RSS "
          f"{max(w.baseline for w in workers) / 1024:.0f} MiB", flush=True)

    def loop(w: Worker) -> None:
        while True:
            with lock:
                if not jobs or (args.max_seconds and time.perf_counter() - t0 > args.max_seconds):
                    return
                i, fam, b, seed = jobs.pop()
                done = sum(c["mutants"] for c in counts.values())
                if done and done % 500 == 0:
                    print(f"... {done:,} mutants, {time.perf_counter() - t0:.0f} s, crashes "
                          f"{sum(v for c in counts.values() for k, v in c.items() if k.endswith(':crash'))}, "
                          f"hangs {sum(c['hang'] for c in counts.values())}, peak {peak[0] // 1024} MiB", flush=True)
            try:
                data = MUTATORS[fam](blobs[b], random.Random(seed), blobs)
            except Exception as e:  # noqa: BLE001 - a mutator that cannot apply to this base: count it
                with lock:
                    counts[fam]["skipped"] += 1
                    examples.append(f"mutator {fam} failed: {type(e).__name__}: {e}")
                continue
            path = tmp / f"m{i}.pgolf"
            path.write_bytes(data)
            t = time.perf_counter()
            res = w.run(str(path))
            dt = time.perf_counter() - t
            path.unlink()
            with lock:
                counts[fam]["mutants"] += 1
                if res is None:
                    counts[fam]["hang"] += 1
                    examples.append(f"HANG {fam} seed {seed} base {bases[b][0]}")
                    continue
                rss = res.pop("rss_kib")
                if rss > peak[0]:
                    peak[0] = rss
                counts[fam]["peak_MiB"] = max(counts[fam]["peak_MiB"], rss // 1024)
                counts[fam]["max_s"] = max(counts[fam]["max_s"], max(t for _, _, t in res.values()))
                _ = dt
                for cmd, (outcome, msg, sec) in res.items():
                    if sec > args.timeout:
                        counts[fam]["hang"] += 1
                        examples.append(f"HANG {cmd} {fam} {sec} s seed {seed} base {bases[b][0]}")
                    counts[fam][f"{cmd}:{outcome}"] += 1
                    if outcome == "crash" and len(examples) < 40:
                        examples.append(f"CRASH {cmd} {fam} seed {seed} base {bases[b][0]}: {msg}")

    threads = [threading.Thread(target=loop, args=(w,)) for w in workers]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for w in workers:
        w.close()
    seconds = time.perf_counter() - t0
    cols = (["mutants"] + [f"{c}:{o}" for c in COMMANDS for o in ("ok", "refused", "crash")]
            + ["hang", "max_s", "peak_MiB"])
    print("| family | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    total = Counter()
    for fam in families:
        print(f"| {fam} | " + " | ".join(str(counts[fam][c]) for c in cols) + " |")
        for c in cols:
            total[c] = max(total[c], counts[fam][c]) if c in ("max_s", "peak_MiB") else total[c] + counts[fam][c]
    print("| **all** | " + " | ".join(str(total[c]) for c in cols) + " |")
    crashes = sum(total[f"{c}:crash"] for c in COMMANDS)
    print(f"\n{total['mutants']:,} mutants in {seconds:.0f} s; crashes {crashes}, hangs {total['hang']}, "
          f"slowest command {total['max_s']} s, peak worker RSS {peak[0] / 1024:.0f} MiB")
    if STREAM_HITS:
        print(f"code-stream mutants by the stream they edit: {dict(STREAM_HITS)}")
    for line in examples[:40]:
        print(line)
    os.rmdir(tmp)
    return 1 if crashes or total["hang"] else 0


if __name__ == "__main__":
    sys.exit(main())
