"""`pgolf eval` reaches every evaluation option (dotted --eval.* overrides, lora_order, the wallclock cap message);
`pgolf check-legal` checks the artifact with overrides, prints its coverage, and checks a third-party mode.

    python -m pytest tests/eval/test_cli_eval.py -q
"""

from __future__ import annotations

import pytest

from pgolf.cli import main
from tests.conftest import smoke_args

TINY_LORA = ["--eval.ttt_lora_rank", "4", "--eval.ttt_lora_batch_docs", "8", "--eval.ttt_lora_chunk", "32"]


@pytest.fixture(scope="module")
def artifact(tiny_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    assert main(["run", *smoke_args(tiny_dataset.data_dir, out, "smoke")]) == 0
    return str(out / "smoke" / "model.pgolf")


def _eval(capsys, *argv) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main(["eval", *argv])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_length_ordered_lora_from_the_cli(artifact, capsys):
    common = [artifact, "--mode", "ttt-lora", "--val-max-tokens", "1024", *TINY_LORA,
              "--eval.ttt_lora_warm_start_a", "false"]
    rc, out_len, _ = _eval(capsys, *common, "--eval.lora_order", "length")
    assert rc == 0 and "eval_timing" in out_len and "seconds_lora" in out_len and "tokens_per_s" in out_len
    rc, out_stream, _ = _eval(capsys, *common)
    assert rc == 0

    def bpb(out: str) -> float:
        return float(out.split("val_bpb:")[1].split()[0])

    assert bpb(out_len) == pytest.approx(bpb(out_stream), abs=2e-8)  # same scores, other batching (8 decimals)


def test_unsafe_combination_is_one_clear_error(artifact, capsys):
    rc, _, err = _eval(capsys, artifact, "--mode", "ttt-lora", "--val-max-tokens", "1024",
                       "--eval.lora_order", "length")
    assert rc == 2 and "ttt_lora_warm_start_a=true is refused" in err and "Traceback" not in err


def test_wallclock_cap_is_one_clear_line(artifact, capsys):
    rc, _, err = _eval(capsys, artifact, "--mode", "sliding", "--val-max-tokens", "2048", "--batch-seqs", "1",
                       "--max-seconds", "1e-6")
    assert rc == 1
    assert err.startswith("pgolf eval: eval mode sliding: projected") and "exceeds max_seconds=1e-06s" in err


def _check_legal(capsys, *argv) -> tuple[int, str]:
    capsys.readouterr()
    rc = main(["check-legal", *argv])
    return rc, capsys.readouterr().out


def test_check_legal_on_the_artifact_with_overrides_prints_coverage(artifact, capsys):
    rc, out = _check_legal(capsys, artifact, "--mode", "ttt-sgd", "--tokens", "256", "--seq-len", "32",
                           "--eval.ttt_chunk_tokens", "64", "--eval.stride", "16", "--eval.ttt_epochs", "1")
    assert rc == 0 and "ttt-sgd     PASS" in out and "informative:ok" in out and "returned_score:ok" in out
    coverage = out.split("coverage:")[1].splitlines()[0]
    assert "chunk 4/4" in coverage and "document" in coverage and "in 256 tokens, seq_len 32, bytes lut" in coverage
    assert int(coverage.split("updates ")[1].split()[0]) > 0  # the overridden chunking really trained
    rc, out = _check_legal(capsys, artifact, "--mode", "ttt-sgd", "--tokens", "128", "--seq-len", "32")
    assert rc == 0 and "no parameter update ran" in out  # the artifact's own 32,768-token chunks: said, not hidden


def test_check_legal_catches_a_third_party_mode(artifact, capsys):
    rc, out = _check_legal(capsys, artifact, "--mode-module", "tests.eval.legal_modes:peek_last_chunk",
                           "--chunk-tokens", "64", "--tokens", "256", "--seq-len", "32",
                           "--eval.ttt_chunk_tokens", "64")
    assert rc == 1 and "FAIL" in out and "causal:VIOLATED" in out and "chunk 4/4" in out
    rc, out = _check_legal(capsys, artifact, "--mode-module", "tests.eval.legal_modes:legal_chunked_sgd",
                           "--chunk-tokens", "64", "--tokens", "256", "--seq-len", "32",
                           "--eval.ttt_chunk_tokens", "64")
    assert rc == 0 and "PASS" in out


def test_check_legal_on_caseops_data_uses_the_byte_sidecar(capsys):
    """A --preset model (no artifact) on CaseOps data: --model.* overrides shape it, dotted values before any
    ARTIFACT are not taken for one, and the bytes are the sidecar's."""
    from tests.data.test_caseops import CASEOPS_SAMPLE, need_fixture

    need_fixture()
    rc, out = _check_legal(capsys, "--data.data_dir", str(CASEOPS_SAMPLE), "--model.vocab_size", "8192",
                           "--data.vocab_size", "8192", "--mode", "ttt-sgd", "--tokens", "256", "--seq-len", "32",
                           "--eval.ttt_chunk_tokens", "64", "--eval.stride", "16")
    assert rc == 0 and "ttt-sgd     PASS" in out and "chunk 4/4" in out and "bytes sidecar" in out


def test_check_legal_refuses_model_overrides_with_an_artifact(artifact, capsys):
    capsys.readouterr()
    assert main(["check-legal", artifact, "--model.num_layers", "3"]) == 2
    assert "its model is fixed by" in capsys.readouterr().err
