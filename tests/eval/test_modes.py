"""Evaluation modes: dispatch and the registry, standard/sliding windows, doc mode = per-document standalone
scoring, caps.

    python -m pytest tests/eval/test_modes.py -q
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from pgolf.eval.config import EvalConfig
from pgolf.eval.legal import ScoreRecorder
from pgolf.eval.modes import MODES, EvalTimeout, evaluate
from pgolf.eval.score import document_spans
from pgolf.model.config import GPTConfig
from pgolf.model.gpt import GPT
from tests.eval.test_bpb import make_lut, score_standard, tbytes

V, BOS = 64, 1
DOC_STARTS = (0, 40, 90, 200, 230)  # document lengths 40, 50, 110, 30, 70


def tiny_model(seed: int = 0, **overrides) -> GPT:
    """2 layers, dim 32, with the zero-init output projections randomised so every layer matters."""
    torch.manual_seed(seed)
    cfg = dict(vocab_size=V, num_layers=2, model_dim=32, num_heads=2, num_kv_heads=1, smear_gate="v1",
               bos_id=BOS)
    model = GPT(GPTConfig(**{**cfg, **overrides}))
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2 and not p.abs().sum():
                p.normal_(0, 0.05)
    return model.eval()


def stream(n: int = 300, starts=DOC_STARTS, seed: int = 1) -> torch.Tensor:
    toks = torch.randint(2, V, (n,), generator=torch.Generator().manual_seed(seed))
    toks[[s for s in starts if s < n]] = BOS
    return toks


def run(model, toks, mode, seq_len=32, **kw):
    return evaluate(model, toks, tbytes(toks), EvalConfig(mode=mode, **kw), seq_len=seq_len, device="cpu",
                    bos_id=BOS)


def test_unknown_mode_lists_modes():
    with pytest.raises(ValueError, match="ttt-phased"):
        EvalConfig(mode="nope")
    cfg = EvalConfig()
    object.__setattr__(cfg, "mode", "nope")
    with pytest.raises(ValueError, match="standard.*sliding.*doc"):
        evaluate(tiny_model(), stream(), tbytes(stream()), cfg, seq_len=32, device="cpu", bos_id=BOS)
    assert tuple(MODES)[:6] == ("standard", "sliding", "doc", "ttt-sgd", "ttt-lora", "ttt-phased")


@pytest.mark.parametrize("stride", [8, 32])
def test_sliding_is_standard_with_a_stride(stride):
    """One window core: "sliding" with stride S scores exactly what "standard" with stride S does (any batching);
    "sliding" with stride 0 takes the records' 64 (clipped to seq_len)."""
    model, toks = tiny_model(), stream()
    res = run(model, toks, "sliding", stride=stride, batch_seqs=3)
    ref = run(model, toks, "standard", stride=stride, batch_seqs=5)
    assert (res.num_tokens, res.num_bytes) == (ref.num_tokens, ref.num_bytes) == (299, int(tbytes(toks)[1:].sum()))
    assert res.val_loss == pytest.approx(ref.val_loss, rel=1e-9)
    assert {"seconds_total", "tokens_per_s", "seconds_score"} <= set(res.timing)
    assert run(model, toks, "sliding").mode == "sliding(seq_len=32,stride=32)"
    assert run(model, toks, "sliding").val_loss == pytest.approx(run(model, toks, "standard").val_loss, rel=1e-9)


def test_a_registered_mode_is_reachable_by_name_and_by_path():
    from pgolf.eval.modes import register_mode, resolve_mode, sliding_mode

    register_mode("test-sliding", sliding_mode)
    toks = stream()
    a = run(tiny_model(), toks, "test-sliding", stride=8)
    b = evaluate(tiny_model(), toks, tbytes(toks), EvalConfig(mode="pgolf.eval.modes:sliding_mode", stride=8),
                 seq_len=32, device="cpu", bos_id=BOS)
    assert a.val_loss == b.val_loss == run(tiny_model(), toks, "sliding", stride=8).val_loss
    assert resolve_mode("ttt-sgd").__name__ == "run_ttt_sgd"  # TTT modes load on first use
    with pytest.raises(ValueError, match="already registered"):
        register_mode("sliding", lambda model, ctx: "x")
    with pytest.raises(ValueError, match="cannot import 'nope'"):
        resolve_mode("pgolf.eval.modes:nope")


def test_document_spans_partition_targets():
    toks = stream()
    spans = document_spans(toks, BOS)
    assert spans == [(0, 40), (40, 90), (90, 200), (200, 230), (230, 299)]
    no_bos = toks.clone()
    no_bos[0] = 5
    assert document_spans(no_bos, BOS)[0] == (0, 40)


@pytest.mark.parametrize("stride", [0, 8])
def test_doc_mode_equals_standalone_documents(stride):
    model, toks, lut = tiny_model(), stream(), make_lut(V)
    res = run(model, toks, "doc", stride=stride, batch_seqs=4)
    nll = tok = byt = 0
    for s, e in document_spans(toks, BOS):  # each document alone, from its BOS, incl. the next BOS as target
        r = score_standard(model, toks[s : e + 1], lut, seq_len=32, stride=stride)
        nll, tok, byt = nll + r.val_loss * r.num_tokens, tok + r.num_tokens, byt + r.num_bytes
    assert (res.num_tokens, res.num_bytes) == (tok, byt) == (299, byt)
    assert res.val_loss * res.num_tokens == pytest.approx(nll, rel=1e-6)


def test_doc_mode_has_no_context_from_previous_documents():
    model = tiny_model()
    a, b = stream(), stream()
    b[5:39] = torch.randint(2, V, (34,), generator=torch.Generator().manual_seed(9))  # rewrite document 0
    ra, rb = ScoreRecorder(), ScoreRecorder()
    for toks, rec in ((a, ra), (b, rb)):
        evaluate(model, toks, tbytes(toks), EvalConfig(mode="doc"), seq_len=32, device="cpu", bos_id=BOS,
                 recorder=rec)
    for p in range(40, 299):  # every later document's distributions are identical
        torch.testing.assert_close(ra.log_probs[p][0], rb.log_probs[p][0], rtol=0, atol=1e-5)


SMALL = dict(stride=8, batch_seqs=2, ttt_chunk_tokens=64, ttt_epochs=1, ttt_batch_seqs=4, ttt_lora_rank=4,
             ttt_lora_alpha=8.0, ttt_lora_chunk=16, ttt_lora_batch_docs=1, phased_prefix_docs=2,
             phased_num_phases=1)
PHASES = {"standard": {"score"}, "sliding": {"score"}, "doc": {"score"}, "ttt-sgd": {"score", "train"},
          "ttt-lora": {"lora"}, "ttt-phased": {"lora", "global_sgd"}}
PER_PHASE = {"ttt-phased": {"phase1", "phase2"}}  # 2 prefix docs, 1 phase: the prefix, then the rest


@pytest.mark.parametrize("mode", MODES)
def test_max_seconds_projection_stops_with_clear_error(mode):
    with pytest.raises(EvalTimeout, match=rf"eval mode {mode}: projected .*s exceeds max_seconds=1e-06s "
                                          r"\(measured .* for 2/\d+ (batches|chunks|document batches)\); lower"):
        evaluate(tiny_model(), stream(), tbytes(stream()), EvalConfig(mode=mode, **SMALL), seq_len=32, device="cpu",
                 bos_id=BOS, max_seconds=1e-6)
    with pytest.raises(EvalTimeout):  # the cap defaults to eval.max_seconds
        evaluate(tiny_model(), stream(), tbytes(stream()), EvalConfig(mode=mode, max_seconds=1e-6, **SMALL),
                 seq_len=32, device="cpu", bos_id=BOS)
    res = evaluate(tiny_model(), stream(), tbytes(stream()), EvalConfig(mode=mode, max_seconds=1e-6, **SMALL),
                   seq_len=32, device="cpu", bos_id=BOS, max_seconds=0)  # explicit 0 = no cap
    assert res.num_tokens == 299 and dataclasses.is_dataclass(res)


@pytest.mark.parametrize("mode", MODES)
def test_time_and_throughput_are_reported(mode):
    res = run(tiny_model(), stream(), mode, **SMALL)
    stages = PHASES[mode] | PER_PHASE.get(mode, set())
    assert {f"seconds_{p}" for p in stages} | {"seconds_total", "tokens_per_s"} == set(res.timing)
    assert res.timing["tokens_per_s"] == pytest.approx(res.num_tokens / res.timing["seconds_total"], rel=1e-9)
    assert all(v > 0 for v in res.timing.values())
    assert sum(res.timing[f"seconds_{p}"] for p in PHASES[mode]) <= res.timing["seconds_total"]
    if mode in PER_PHASE:  # the phases bracket all the LoRA and global SGD time, within the total
        phases = sum(res.timing[f"seconds_{p}"] for p in PER_PHASE[mode])
        assert res.timing["seconds_lora"] + res.timing["seconds_global_sgd"] <= phases <= res.timing["seconds_total"]


@pytest.mark.parametrize("mode", MODES)
def test_bf16_autocast_path(mode):
    """The CUDA code path (bf16 autocast, fp32 masters) run on CPU: same targets and bytes, near-fp32 loss."""
    model, toks = tiny_model(), stream()
    lut = tbytes(toks)
    cfg = EvalConfig(mode=mode, **{**SMALL, "ttt_lora_lr": 1e-2, "ttt_lr": 0.05})
    ref = evaluate(model, toks, lut, cfg, seq_len=32, device="cpu", bos_id=BOS)
    res = evaluate(model, toks, lut, cfg, seq_len=32, device="cpu", bos_id=BOS, amp=torch.bfloat16)
    assert (res.num_tokens, res.num_bytes) == (ref.num_tokens, ref.num_bytes) == (299, ref.num_bytes)
    assert res.val_loss == pytest.approx(ref.val_loss, rel=1e-2)
    assert res.val_loss != ref.val_loss  # bf16 really ran


def test_eval_imports_run_one_way():
    """score ← modes, score ← ttt/lora: the TTT modes plug into the registry without importing it, and the registry
    loads them only when one is used (no import circle; the checker stays out of the scoring path)."""
    import subprocess
    import sys

    code = ("import sys, importlib; m = sys.argv[1]; importlib.import_module(m); "
            "print(' '.join(sorted(k for k in sys.modules if k.startswith('pgolf.eval.'))))")
    loaded = {m: set(subprocess.run([sys.executable, "-c", code, m], capture_output=True, text=True,
                                    check=True).stdout.split())
              for m in ("pgolf.eval.modes", "pgolf.eval.lora")}  # two fresh interpreters: a few seconds
    assert loaded["pgolf.eval.modes"] == {"pgolf.eval.modes", "pgolf.eval.score", "pgolf.eval.config"}
    assert {"pgolf.eval.ttt", "pgolf.eval.score"} <= loaded["pgolf.eval.lora"]  # lora builds on ttt's SGD
    assert not {"pgolf.eval.modes", "pgolf.eval.legal"} & loaded["pgolf.eval.lora"]
