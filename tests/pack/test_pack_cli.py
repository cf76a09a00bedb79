"""`pgolf pack` re-encodes with a verified round trip; `pgolf info` and tensor_byte_report print per-tensor bytes.

    python -m pytest tests/pack/test_pack_cli.py -q
"""

from __future__ import annotations

import torch

from pgolf.cli import main
from pgolf.pack.budget import byte_report_totals, format_byte_report, tensor_byte_report
from pgolf.pack.container import artifact_codec, decode_artifact, encode_artifact, write_artifact
from pgolf.quant.apply import QuantizedState
from pgolf.quant.primitives import QuantizedTensor


def _qs() -> QuantizedState:
    g = torch.Generator().manual_seed(0)
    q = torch.clamp(torch.round(torch.randn(64, 300, generator=g) * 4), -31, 31).to(torch.int8)
    qs = QuantizedState(tensors={"w": QuantizedTensor(q=q, scale=torch.rand(64).half(), bits=6, method="rtn"),
                                 "c": QuantizedTensor(q=torch.zeros(2, 3, dtype=torch.int8),
                                                      scale=torch.ones(2).half(), bits=2, method="rtn")},
                        passthrough={"p": torch.randn(10).half()})
    qs.dtypes.update({"w": "float32", "c": "float32", "p": "float32"})
    return qs


def test_tensor_byte_report_rows_and_totals():
    rows = tensor_byte_report(_qs(), ["zlib", "brotli+shuffle", "rans"])
    w, c = rows
    assert w["name"] == "w" and w["raw_bytes"] == 64 * 300 and w["numel"] == 64 * 300
    assert w["entropy_bytes"] < w["bytes"]["rans"] < 1.01 * w["entropy_bytes"] + 100
    assert c["entropy_bytes"] == 0 and c["gap"]["rans"] is None
    tot = byte_report_totals(rows)
    assert tot["bytes"]["zlib"] == w["bytes"]["zlib"] + c["bytes"]["zlib"]
    text = format_byte_report(rows)
    assert "TOTAL" in text and "gap_rans" in text


def test_pack_and_info_cli(tmp_path, capsys):
    src = tmp_path / "a.pgolf"
    write_artifact(src, encode_artifact(_qs(), {"codec": "zlib"}, "zlib"))
    out = tmp_path / "b.pgolf"
    assert main(["pack", str(src), "--codec", "rans", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "round trip bit-exact" in text and "TOTAL" in text
    blob = out.read_bytes()
    assert artifact_codec(blob) == "rans" and decode_artifact(blob)[1]["codec"] == "rans"
    assert main(["pack", str(src), "--codec", "zstd+shuffle", "--codecs", "none"]) == 0
    assert "dry run" in capsys.readouterr().out
    assert main(["pack", str(src), "--codec", "gzip"]) == 2
    assert main(["info", str(out), "--codecs", "zstd,rans"]) == 0
    text = capsys.readouterr().out
    assert "gap_zstd" in text and "artifact codec rans" in text
