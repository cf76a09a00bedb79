"""Distributed evaluation: 2 gloo processes give the single-process result for every mode, TTT modes included.

    python -m pytest tests/eval/test_distributed.py -q

Both ranks run every case in one forked process group (a few seconds). Token and byte counts must agree exactly.
Losses agree to rel 1e-7: the scoring modes are bit-identical (float64 sums over fp32 per-token NLLs), and in the
SGD modes (ttt-sgd, ttt-phased) each step's gradient is the sum of the two ranks' partial gradients instead of one
sum over the batch, which changes fp32 rounding; after a few steps the losses differ by ~1.5e-9 relative (measured),
so 1e-7 leaves a margin while any real difference in batching or normalisation (≥ 1e-5 here) fails.
"""

from __future__ import annotations


import pytest
import torch

from pgolf.eval.config import EvalConfig
from pgolf.eval.modes import EvalTimeout, evaluate
from tests.eval.test_bpb import run_ranks, tbytes
from tests.eval.test_modes import BOS, V, stream, tiny_model

pytestmark = pytest.mark.slow

# doc starts → 7 documents; seq_len 32; SGD chunks of 96 targets = 3 training rows, batches of 3 (2 + 1 per rank)
STARTS = (0, 40, 90, 150, 200, 230, 290)
COMMON = dict(stride=8, batch_seqs=3, ttt_chunk_tokens=96, ttt_epochs=2, ttt_batch_seqs=3, ttt_lr=0.05,
              ttt_lora_rank=4, ttt_lora_alpha=8.0, ttt_lora_chunk=16, ttt_lora_lr=1e-2, ttt_lora_batch_docs=2,
              phased_prefix_docs=4, phased_num_phases=2, phased_lr=0.05)
CASES = {
    "standard": dict(mode="standard"),
    "sliding": dict(mode="sliding"),
    "doc": dict(mode="doc"),
    "ttt-sgd": dict(mode="ttt-sgd"),
    "ttt-sgd-freeze": dict(mode="ttt-sgd", ttt_freeze_blocks=1),
    "ttt-lora": dict(mode="ttt-lora", ttt_lora_warm_start_a=False),
    "ttt-lora-length": dict(mode="ttt-lora", ttt_lora_warm_start_a=False, lora_order="length"),
    "ttt-lora-warm": dict(mode="ttt-lora", ttt_lora_warm_start_a=True, ttt_lora_lanes=2),
    "ttt-phased": dict(mode="ttt-phased", ttt_lora_warm_start_a=False),
    # one document per batch so the 3-document suffix has a lane carrying A across two batches
    "ttt-phased-warm": dict(mode="ttt-phased", ttt_lora_warm_start_a=True, ttt_lora_lanes=2, ttt_lora_batch_docs=1),
    # lanes 0 = one warm-start chain per rank: on 2 ranks this is lanes=2, so it matches one process with lanes=2
    "ttt-lora-warm-per-rank": dict(mode="ttt-lora", ttt_lora_warm_start_a=True, ttt_lora_lanes=0),
}


def _run(name: str, **extra):
    cfg = EvalConfig(**{**COMMON, **CASES[name], **extra})
    toks = stream(320, starts=STARTS)
    return evaluate(tiny_model(), toks, tbytes(toks), cfg, seq_len=32, device="cpu",
                    bos_id=BOS)


def _worker(rank: int, world: int, init_file: str, out_file: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        out = {}
        for name in CASES:
            r = _run(name)
            out[name] = (r.val_loss, r.val_bpb, r.num_tokens, r.num_bytes)
        for mode in ("sliding", "ttt-sgd", "ttt-lora"):  # the cap stops every rank, none is left waiting
            try:
                _run(mode, max_seconds=1e-6)
                out[f"timeout-{mode}"] = "finished"
            except EvalTimeout as e:
                out[f"timeout-{mode}"] = str(e)
        try:  # 3 warm-start chains cannot be split over 2 ranks: every rank refuses before any collective
            _run("ttt-lora-warm", ttt_lora_lanes=3)
            out["lanes-3"] = "finished"
        except ValueError as e:
            out["lanes-3"] = str(e)
        torch.save(out, f"{out_file}.{rank}")
        dist.barrier()  # no rank tears gloo down early (that can SIGABRT the other)
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dist")
    out = tmp / "res"
    run_ranks(_worker, 2, str(tmp / "init"), str(out), timeout=120)
    return [torch.load(f"{out}.{r}") for r in range(2)]


@pytest.mark.parametrize("name", list(CASES))
def test_two_ranks_equal_one_process(two_ranks, name):
    ref_name = "ttt-lora-warm" if name == "ttt-lora-warm-per-rank" else name  # lanes=2 in one process
    ref = _run(ref_name)
    for res in two_ranks:  # both ranks report the all-reduced totals
        loss, bpb, n_tok, n_bytes = res[name]
        assert (n_tok, n_bytes) == (ref.num_tokens, ref.num_bytes) == (319, ref.num_bytes)
        assert loss == pytest.approx(ref.val_loss, rel=1e-7)
        assert bpb == pytest.approx(ref.val_bpb, rel=1e-7)


def test_cases_are_not_trivially_equal():
    """The TTT cases really adapt, by ≥ 10× the equality tolerance (else agreeing with one process proves little)."""
    sliding, doc = _run("sliding").val_loss, _run("doc").val_loss
    for name in ("ttt-sgd", "ttt-sgd-freeze"):
        assert abs(_run(name).val_loss - sliding) > 1e-6 * sliding, name
    for name in ("ttt-lora", "ttt-lora-warm", "ttt-phased", "ttt-phased-warm"):
        assert abs(_run(name).val_loss - doc) > 1e-6 * doc, name
    # one warm-start chain over all batches differs from two: A really carries, and lanes matter
    for name in ("ttt-lora-warm", "ttt-phased-warm"):
        assert _run(name, ttt_lora_lanes=1).val_loss != pytest.approx(_run(name).val_loss, rel=1e-6), name


def test_wallclock_cap_stops_every_rank(two_ranks):
    for res in two_ranks:
        for mode in ("sliding", "ttt-sgd", "ttt-lora"):
            assert "exceeds max_seconds=1e-06s" in res[f"timeout-{mode}"], res[f"timeout-{mode}"]


def test_lanes_must_divide_over_ranks(two_ranks):
    for res in two_ranks:
        assert res["lanes-3"] == "eval.ttt_lora_lanes=3 must be a multiple of the world size 2"
