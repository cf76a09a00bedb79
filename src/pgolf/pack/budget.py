"""Bytes as the judge counts them: code bytes + compressed model bytes ≤ 16,000,000 decimal bytes (§6).

    report = ByteReport(model_bytes=len(blob), code_bytes=measure_code_bytes())
    print(report.format())   # model 15,815,847 + code 47,642 = 15,863,489 / 16,000,000 bytes (headroom 136,511)
    check_budget(report, allow_over=False)   # BudgetError when over the cap

Code bytes: the records count the *compressed* code of the script that runs (R0414/R0427 minify, lzma/brotli and
base85-wrap it: 122–158 KB of source count as 27.6–32.0 KB). Until pgolf ships its single-file submission bundle
(a later issue replaces `measure_code_bytes` with the size of that bundle), we count every .py file of the installed
pgolf package, concatenated in sorted path order, each preceded by its path, compressed with lzma-9 — unminified,
so an upper bound on what the bundle will cost.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

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


def code_bundle(package_root: Path | None = None) -> bytes:
    """Every .py file under the package root, sorted by relative path, each prefixed by a `# <path>` line."""
    if package_root is None:
        import pgolf

        package_root = Path(pgolf.__file__).resolve().parent
    root = Path(package_root)
    files = sorted((p for p in root.rglob("*.py") if "__pycache__" not in p.parts),
                   key=lambda p: p.relative_to(root).as_posix())
    if not files:
        raise ValueError(f"no .py files under {root}")
    parts = []
    for p in files:
        parts.append(f"# {p.relative_to(root).as_posix()}\n".encode())
        parts.append(p.read_bytes())
        parts.append(b"\n")
    return b"".join(parts)


def measure_code_bytes(package_root: Path | None = None, codec: str = "lzma") -> int:
    """Compressed size of the pgolf source a run needs (deterministic; see the module docstring)."""
    return len(compress(code_bundle(package_root), codec))


def check_budget(report: ByteReport, allow_over: bool) -> bool:
    """True when the artifact fits; raises BudgetError when it does not, unless `allow_over`."""
    if report.fits:
        return True
    if not allow_over:
        raise BudgetError(f"artifact exceeds the {report.limit:,}-byte limit by {-report.headroom:,} bytes "
                          f"({report.format()}); set pack.allow_over_limit=true to write it anyway "
                          f"(it is then not a valid submission)")
    return False
