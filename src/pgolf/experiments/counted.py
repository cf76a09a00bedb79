"""The counted form of the single-file script: the minified bundle compressed (raw LZMA2 preset 9e as R0325, or
brotli q11) and carried as a latin-1 str literal under a PEP 263 coding line, decoded by
`exec(lzma.decompress('...'.encode('latin-1'), ...))`. One source byte per compressed byte plus ≈1 % escapes, where
the records' base85 wrapper (R0405) costs 25 %."""

from __future__ import annotations

import ast
import lzma

COUNTED_CODECS = ("auto", "lzma", "brotli")
""""auto" (the default): whichever of lzma and brotli gives the shorter script (brotli on pgolf's scripts today,
≈2 % shorter; R0427 wraps its code with brotli q11 too)."""

_LZMA_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME, "pb": 0, "lp": 0}]
"""Raw LZMA2 (no .xz container: ~60 bytes less), pb = lp = 0 for text (~150 bytes less on the sota script); LZMA2
chunks carry lc/lp/pb, so the wrapper decodes with the default LZMA2 filter."""


def compress_payload(data: bytes, codec: str) -> bytes:
    if codec == "lzma":
        return lzma.compress(data, format=lzma.FORMAT_RAW, filters=_LZMA_FILTERS)
    if codec == "brotli":
        import brotli

        return brotli.compress(data, quality=11)
    raise ValueError(f"unknown counted-code codec {codec!r}; valid: {', '.join(COUNTED_CODECS)}")


COUNTED_COOKIE = b"# -*- coding: latin-1 -*-\n"
"""The counted script is decoded as latin-1 (PEP 263), so a str literal carries the compressed bytes one source
byte per payload byte: base85 (the records' wrapper) costs 25 %, this ≈ 1.2 % (escapes)."""


def latin1_literal(payload: bytes) -> bytes:
    """A triple-quoted str literal whose latin-1 encoding is `payload`: backslash, CR and NUL escaped (the tokenizer
    would translate CR, and rejects NUL), a quote escaped only where it could close the literal; LF stays raw."""
    out = bytearray(b"'''")
    n = len(payload)
    for i, b in enumerate(payload):
        if b == 0x5C:
            out += b"\\\\"
        elif b == 0x0D:
            out += b"\\r"
        elif b == 0x00:
            out += b"\\x00" if i + 1 < n and 0x30 <= payload[i + 1] <= 0x37 else b"\\0"
        elif b == 0x27 and (i + 1 == n or payload[i + 1] == 0x27):
            out += b"\\'"
        else:
            out.append(b)
    out += b"'''"
    return bytes(out)


def wrap_counted(payload: bytes, codec: str) -> bytes:
    """The self-extracting form: the compressed minified bundle as a latin-1 str literal, decompressed and exec'd."""
    lit = latin1_literal(payload)
    if codec == "lzma":
        return (COUNTED_COOKIE + b"import lzma as L\nexec(L.decompress(" + lit
                + b".encode('latin-1'),L.FORMAT_RAW,filters=[{'id':L.FILTER_LZMA2}]))\n")
    if codec == "brotli":
        return COUNTED_COOKIE + b"import brotli as R\nexec(R.decompress(" + lit + b".encode('latin-1')))\n"
    raise ValueError(f"unknown counted-code codec {codec!r}; valid: {', '.join(COUNTED_CODECS)}")


def counted_script(minified: bytes, codec: str = "auto") -> bytes:
    """The counted form of a minified script: compressed with `codec` and wrapped; "auto" keeps the shorter of the
    lzma and brotli forms (lzma on a tie)."""
    if codec == "auto":
        return min((counted_script(minified, c) for c in ("lzma", "brotli")), key=len)
    return wrap_counted(compress_payload(minified, codec), codec)


def counted_codec(script: bytes) -> str:
    """Which compressor a counted script (`wrap_counted`) uses: "lzma" or "brotli"."""
    return "brotli" if b"import brotli" in script[:80] else "lzma"


def unwrap_counted(script: bytes) -> bytes:
    """The minified bundle a counted script (`wrap_counted`) carries: its literal decoded and decompressed."""
    if not script.startswith(COUNTED_COOKIE):
        raise ValueError("not a counted pgolf script (no latin-1 coding line)")
    tree = ast.parse(script.decode("latin-1"))
    lit = next((n.func.value.value for n in ast.walk(tree) if isinstance(n, ast.Call)
                and isinstance(n.func, ast.Attribute) and n.func.attr == "encode"
                and isinstance(n.func.value, ast.Constant) and isinstance(n.func.value.value, str)), None)
    if lit is None:
        raise ValueError("not a counted pgolf script (no '...'.encode('latin-1') payload)")
    data = lit.encode("latin-1")
    if counted_codec(script) == "brotli":
        import brotli

        return brotli.decompress(data)
    return lzma.decompress(data, format=lzma.FORMAT_RAW, filters=[{"id": lzma.FILTER_LZMA2}])
