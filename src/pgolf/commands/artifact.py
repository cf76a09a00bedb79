"""`pgolf info` and `pgolf pack`: read an artifact (decoded and validated in full), print its tensors and byte
report, or re-encode it with another codec, verified bit-exact."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from pgolf.overrides import UsageError


def _manifest_config(manifest: dict) -> Any:
    """The artifact's run configuration (its counted script's closure), or None (the cpu-demo preset's) if absent."""
    from pgolf.config import config_from_dict

    return config_from_dict(manifest["config"]) if manifest.get("config") else None


def cmd_info(args: argparse.Namespace) -> int:
    from pgolf.pack.budget import ByteReport, format_byte_report, tensor_byte_report
    from pgolf.run import counted_code_bytes
    from pgolf.pack.container import artifact_codec
    from pgolf.pack.validate import decode_validated, read_artifact_bytes

    path = Path(args.artifact)
    blob = read_artifact_bytes(path)  # read once: decoded and validated in full, then measured
    qs, manifest, _ = decode_validated(blob, require_model=False, source=path)
    print(f"artifact: {path}")
    print(f"format: {manifest.get('format', 'pgolf-v1')}  recipe: {manifest.get('recipe')}  "
          f"codec: {manifest.get('codec')}  pgolf: {manifest.get('pgolf_version')}")
    model = manifest.get("model", {})
    print("model: " + " ".join(f"{k}={v}" for k, v in model.items()))
    rows = []
    for name, t in sorted(qs.tensors.items()):
        rows.append({"name": name, "kind": t.method, "bits": t.bits, "shape": "x".join(map(str, t.q.shape)),
                     "numel": t.q.numel()})
    for name, t in sorted(qs.passthrough.items()):
        rows.append({"name": name, "kind": "passthrough", "bits": t.element_size() * 8,
                     "shape": "x".join(map(str, t.shape)) or "scalar", "numel": t.numel()})
    cols = ["name", "kind", "bits", "shape", "numel"]
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    print("  ".join(c.ljust(widths[c]) for c in cols))
    for r in rows:
        print("  ".join(str(r[c]).ljust(widths[c]) for c in cols))
    n_quant = sum(t.q.numel() for t in qs.tensors.values())
    n_pass = sum(t.numel() for t in qs.passthrough.values())
    print(f"tensors: {len(qs.tensors)} quantized ({n_quant:,} values), {len(qs.passthrough)} passthrough "
          f"({n_pass:,} values)")
    codecs = _report_codecs(getattr(args, "codecs", None))
    if codecs:
        print("\nbytes of each tensor's codes compressed alone (entropy = order-0 bound; gap = bytes/entropy - 1):")
        print(format_byte_report(tensor_byte_report(qs, codecs)))
    print(f"artifact codec {artifact_codec(blob)}: {len(blob):,} bytes")
    report = ByteReport(model_bytes=len(blob), code_bytes=counted_code_bytes(_manifest_config(manifest)))
    print(report.format())
    return 0


def _report_codecs(spec: str | None) -> list[str]:
    from pgolf.pack.budget import REPORT_CODECS
    from pgolf.pack.codecs import CODECS

    if spec is None:
        return list(REPORT_CODECS)
    if spec in ("", "none"):
        return []
    if spec == "all":
        return [*CODECS, "rans", "rans-ctx"]
    return [c.strip() for c in spec.split(",") if c.strip()]


def _same_tensor(a: Any, b: Any) -> bool:
    import torch

    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)


def cmd_pack(args: argparse.Namespace) -> int:
    """Re-encode an artifact with another codec (decode → encode → decode, verified bit-exact) and report bytes."""
    from pgolf.pack.budget import ByteReport, format_byte_report, tensor_byte_report
    from pgolf.run import counted_code_bytes
    from pgolf.pack.container import (
        CODEC_IDS, EXTERNAL_CODECS, artifact_codec, decode_artifact, encode_artifact, write_artifact,
    )

    if args.codec not in CODEC_IDS and args.codec not in EXTERNAL_CODECS:
        raise UsageError(f"unknown codec {args.codec!r}; valid: {', '.join([*CODEC_IDS, *EXTERNAL_CODECS])}")
    from pgolf.pack.validate import decode_validated, read_artifact_bytes

    path = Path(args.artifact)
    blob = read_artifact_bytes(path)  # read once
    qs, manifest, _ = decode_validated(blob, require_model=False, source=path)  # validated in full
    old_codec = artifact_codec(blob)
    manifest = {**manifest, "codec": args.codec}
    t0 = time.perf_counter()
    new = encode_artifact(qs, manifest, args.codec)
    t1 = time.perf_counter()
    back, back_manifest = decode_artifact(new)
    t2 = time.perf_counter()
    same = (back_manifest == manifest and back.dtypes == qs.dtypes and list(back.tensors) == list(qs.tensors)
            and list(back.passthrough) == list(qs.passthrough)
            and all(_same_tensor(t, back.passthrough[n]) for n, t in qs.passthrough.items()))
    for name, qt in qs.tensors.items():
        bt = back.tensors[name]
        same = same and _same_tensor(qt.q, bt.q) and _same_tensor(qt.scale, bt.scale) and qt.bits == bt.bits \
            and qt.extras.keys() == bt.extras.keys() and all(_same_tensor(v, bt.extras[k]) for k, v in qt.extras.items())
    if not same:
        raise RuntimeError("re-encoded artifact does not round-trip bit-exactly (please report this bug)")
    target = "rans-ctx" if args.codec in EXTERNAL_CODECS else args.codec.split("+")[0]  # lrzip-groups: whole groups
    codecs = _report_codecs(args.codecs) if args.codecs is not None else sorted({"rans", target})
    if codecs:
        print(format_byte_report(tensor_byte_report(qs, codecs)))
    print(f"{path}: {old_codec} {len(blob):,} bytes → {args.codec} {len(new):,} bytes "
          f"({len(new) - len(blob):+,}; encode {t1 - t0:.2f} s, decode {t2 - t1:.2f} s; round trip bit-exact)")
    if args.out:
        write_artifact(args.out, new)
        print(f"wrote {args.out}")
        print(ByteReport(model_bytes=len(new), code_bytes=counted_code_bytes(_manifest_config(manifest))).format())
    else:
        print("(dry run: pass --out PATH to write it)")
    return 0
