"""Bytes as judged: code bytes + compressed model bytes ≤ 16,000,000 decimal bytes (docs/techniques.md#rules).

    report = ByteReport(model_bytes=len(blob), code_bytes=counted_code_bytes(cfg))   # pgolf.run
    print(report.format())   # model 15,815,847 + code 47,642 = 15,863,489 / 16,000,000 bytes (headroom 136,511)
    check_budget(report, allow_over=False)   # BudgetError when over the cap

Code bytes: the records count the *compressed* code of the script that runs (R0414/R0427 minify, lzma/brotli and
base85-wrap it: 122–158 KB of source count as 27.6–32.0 KB). pgolf counts its single-file submission script
(`pgolf.experiments.bundle.measure_code_bytes`, called by `pgolf.run.counted_code_bytes`; this module only takes
the figure, and inside the script `script_code_bytes` reads the script's own size): what the configured run
executes (entry `pgolf.submission`, the closure rules of `pgolf.experiments.closure`) plus the preset files, minified (docstrings, comments, function annotations removed),
lzma-compressed and carried as a latin-1 str literal in a self-extracting `exec` — the `train_gpt.py` that `pgolf bundle` and
`pgolf submit` write, byte for byte. Deterministic for a given source tree, configuration and Python version.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from pgolf.pack.codecs import compress
from pgolf.pack.config import CHALLENGE_BYTE_LIMIT


class BudgetError(ValueError):
    """Code + model bytes exceed the byte limit."""


@dataclass(frozen=True)
class ByteReport:
    model_bytes: int
    code_bytes: int
    limit: int = CHALLENGE_BYTE_LIMIT

    @property
    def total(self) -> int:
        return self.model_bytes + self.code_bytes

    @property
    def headroom(self) -> int:
        """limit − total; negative when over the cap."""
        return self.limit - self.total

    @property
    def fits(self) -> bool:
        return self.total <= self.limit

    def to_dict(self) -> dict[str, int | bool]:
        return {**asdict(self), "total": self.total, "headroom": self.headroom, "fits": self.fits}

    def format(self) -> str:
        tail = f"headroom {self.headroom:,}" if self.fits else f"OVER by {-self.headroom:,}"
        return (f"model {self.model_bytes:,} + code {self.code_bytes:,} = {self.total:,} / {self.limit:,} bytes "
                f"({tail})")


def script_code_bytes() -> int | None:
    """Inside the single-file submission script: its own size in bytes (its importer records it); else None.

    Outside the script the counted size is computed by the bundler (`pgolf.experiments.bundle.measure_code_bytes`,
    tooling above this layer); `pgolf.run.counted_code_bytes` picks whichever applies."""
    import pgolf

    own = getattr(getattr(pgolf, "__loader__", None), "code_bytes", None)
    return None if own is None else int(own)


def check_budget(report: ByteReport, allow_over: bool) -> bool:
    """True when the artifact fits; raises BudgetError when it does not, unless `allow_over`."""
    if report.fits:
        return True
    if not allow_over:
        raise BudgetError(f"artifact exceeds the {report.limit:,}-byte limit by {-report.headroom:,} bytes "
                          f"({report.format()}); set pack.allow_over_limit=true to write it anyway "
                          f"(it is then not a valid submission)")
    return False


# ------------------------------------------------------------------------------------------------ per-tensor bytes

REPORT_CODECS: tuple[str, ...] = ("zstd", "brotli", "rans", "rans-ctx")
"""Default codecs of `tensor_byte_report` (each tensor's codes compressed alone); zlib and lzma are slower/larger.
rans-ctx (the default artifact codec) tries brotli-11 twice per tensor: about 3 s per million codes."""


def tensor_byte_report(qs, codecs: tuple[str, ...] | list[str] = REPORT_CODECS) -> list[dict]:
    """One row per quantized tensor: raw code bytes (int8 storage), order-0 entropy bytes of the codes, the bytes
    each codec spends on the codes compressed alone ("rans" = order-0 `pgolf.pack.entropy.encode_codes`, "rans-ctx" =
    its `model="best"` stream, exactly what the rans-ctx container writes; others = the general compressor;
    "X+shuffle" equals "X" on int8 codes), and the gap to the entropy as a ratio - 1.

    Rows: {name, bits, shape, numel, raw_bytes, entropy_bytes, bytes: {codec: n}, gap: {codec: ratio - 1 or None}}.
    """
    from pgolf.pack.codecs import CODECS
    from pgolf.pack.container import ENTROPY_CODECS as ENTROPY_MODELS  # codec name → encode_codes model
    from pgolf.pack.entropy import encode_codes, order0_entropy_bytes

    for c in codecs:
        if c not in ENTROPY_MODELS and c.split("+")[0] not in CODECS:
            raise ValueError(f"unknown codec {c!r} for the byte report; valid: {', '.join(ENTROPY_MODELS)}, "
                             f"{', '.join(CODECS)}")
    rows = []
    for name, qt in qs.tensors.items():
        arr = qt.q.detach().cpu().contiguous().numpy()
        raw = arr.tobytes()
        h = order0_entropy_bytes(arr)
        sizes = {c: len(encode_codes(arr, model=ENTROPY_MODELS[c])) if c in ENTROPY_MODELS
                 else len(compress(raw, c.split("+")[0])) for c in codecs}
        rows.append({"name": name, "bits": qt.bits, "shape": list(arr.shape), "numel": int(arr.size),
                     "raw_bytes": len(raw), "entropy_bytes": h, "bytes": sizes,
                     "gap": {c: (n / h - 1 if h > 0 else None) for c, n in sizes.items()}})
    return rows


def byte_report_totals(rows: list[dict]) -> dict:
    """Sums of a `tensor_byte_report` (same keys; gap of the totals)."""
    codecs = list(rows[0]["bytes"]) if rows else []
    h = sum(r["entropy_bytes"] for r in rows)
    sizes = {c: sum(r["bytes"][c] for r in rows) for c in codecs}
    return {"name": "TOTAL", "bits": "", "shape": [], "numel": sum(r["numel"] for r in rows),
            "raw_bytes": sum(r["raw_bytes"] for r in rows), "entropy_bytes": h, "bytes": sizes,
            "gap": {c: (n / h - 1 if h > 0 else None) for c, n in sizes.items()}}


def format_byte_report(rows: list[dict]) -> str:
    """Fixed-width table of a `tensor_byte_report` plus a TOTAL line."""
    codecs = list(rows[0]["bytes"]) if rows else []
    cols = ["name", "bits", "shape", "raw", "entropy"] + [f"{c}" for c in codecs] + [f"gap_{c}" for c in codecs]
    table = []
    for r in [*rows, byte_report_totals(rows)]:
        cell = {"name": r["name"], "bits": str(r["bits"]), "shape": "x".join(map(str, r["shape"])),
                "raw": f"{r['raw_bytes']:,}", "entropy": f"{r['entropy_bytes']:,.0f}"}
        for c in codecs:
            cell[c] = f"{r['bytes'][c]:,}"
            g = r["gap"][c]
            cell[f"gap_{c}"] = "-" if g is None else f"{100 * g:+.2f}%"
        table.append(cell)
    widths = {c: max(len(c), *(len(t[c]) for t in table)) for c in cols}
    left = {"name", "shape"}
    fmt = lambda t: "  ".join(t[c].ljust(widths[c]) if c in left else t[c].rjust(widths[c]) for c in cols)  # noqa: E731
    lines = [fmt({c: c for c in cols})] + [fmt(t) for t in table]
    return "\n".join(lines)
