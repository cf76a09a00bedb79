"""Attention kernels: document masks and cu_seqlens against brute force, SDPA paths against per-document runs.

    python -m pytest tests/model/test_attention.py -q
"""

from __future__ import annotations

import pytest
import torch

from pgolf.model.attention import AttentionContext, attend, build_attention_context
from pgolf.model.documents import document_causal_mask, document_cu_seqlens, document_starts

BOS = 1


def _rows() -> torch.Tensor:
    return torch.tensor([[1, 5, 6, 1, 7, 8, 9, 1],
                         [4, 4, 1, 5, 5, 5, 1, 2]])


def test_document_starts_and_mask_match_brute_force():
    idx = _rows()
    assert document_starts(idx, BOS).tolist() == [[0, 0, 0, 3, 3, 3, 3, 7], [0, 0, 2, 2, 2, 2, 6, 6]]
    mask = document_causal_mask(idx, BOS)
    assert mask.shape == (2, 1, 8, 8) and mask.dtype == torch.bool
    for b in range(2):
        starts = document_starts(idx, BOS)[b]
        for i in range(8):
            for j in range(8):
                assert bool(mask[b, 0, i, j]) == (starts[i] <= j <= i)


def test_cu_seqlens_cover_row_starts_and_every_bos():
    cu, max_len = document_cu_seqlens(_rows(), BOS)
    assert cu.dtype == torch.int32
    assert cu.tolist() == [0, 3, 7, 8, 10, 14, 16]
    assert max_len == 4


def _ctx(idx: torch.Tensor, doc_isolation: bool) -> AttentionContext:
    T = idx.size(1)
    cos, sin = torch.ones(1, T, 1, 4), torch.zeros(1, T, 1, 4)
    return build_attention_context(idx, cos, sin, doc_isolation=doc_isolation, bos_id=BOS, backend="auto")


def test_masked_sdpa_equals_running_each_document_alone():
    idx = _rows()[:1]  # documents [0:3], [3:7], [7:8]
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 8, h, 8, generator=gen) for h in (4, 2, 2))
    y = attend(q, k, v, _ctx(idx, doc_isolation=True))
    for s, e in [(0, 3), (3, 7), (7, 8)]:
        alone = attend(q[:, s:e], k[:, s:e], v[:, s:e], _ctx(idx[:, s:e], doc_isolation=False))
        torch.testing.assert_close(y[:, s:e], alone, rtol=1e-5, atol=1e-6)


def test_causal_sdpa_matches_explicit_softmax_with_gqa():
    gen = torch.Generator().manual_seed(1)
    q, k, v = torch.randn(2, 6, 4, 8, generator=gen), torch.randn(2, 6, 2, 8, generator=gen), torch.randn(2, 6, 2, 8,
                                                                                                        generator=gen)
    y = attend(q, k, v, _ctx(torch.zeros(2, 6, dtype=torch.long), doc_isolation=False))
    kr, vr = k.repeat_interleave(2, dim=2), v.repeat_interleave(2, dim=2)  # head h uses kv head h // 2
    scores = torch.einsum("bthd,bshd->bhts", q, kr) / 8 ** 0.5
    scores = scores.masked_fill(~torch.ones(6, 6, dtype=torch.bool).tril(), float("-inf"))
    ref = torch.einsum("bhts,bshd->bthd", scores.softmax(-1), vr)
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-6)


def test_flash_backend_refuses_cpu():
    with pytest.raises(RuntimeError, match="attention_backend='flash'"):
        build_attention_context(_rows(), torch.ones(1, 8, 1, 4), torch.zeros(1, 8, 1, 4), doc_isolation=False,
                                bos_id=BOS, backend="flash")


# ---- the torch-native varlen path --------------------------------------------------------------------------------

from pgolf.model import documents as docs_mod  # noqa: E402
from pgolf.model.attention import chosen_kernels  # noqa: E402
from pgolf.model.documents import VARLEN_BUCKET  # noqa: E402


def _reference_varlen(calls):
    """varlen_attn's contract (torch.nn.attention.varlen) in plain torch: causal attention within each cu_seqlens
    segment, GQA by head groups, output in the input dtype. Records every call's arguments."""

    def fake(q, k, v, cu_q, cu_k, max_q, max_k, *, window_size=(-1, -1), enable_gqa=False):
        calls.append(dict(dtype=q.dtype, window=window_size, gqa=enable_gqa, cu=cu_q.clone(), max_q=max_q))
        assert q.ndim == 3 and cu_q.dtype == torch.int32 and torch.equal(cu_q, cu_k)
        lengths = (cu_q[1:] - cu_q[:-1]).tolist()
        assert max(lengths) <= max_q == max_k
        out = torch.zeros_like(q)
        causal = window_size == (-1, 0)
        for s, n in zip(cu_q[:-1].tolist(), lengths):
            if n == 0:
                continue
            qs, ks, vs = (t[s:s + n].float().transpose(0, 1) for t in (q, k, v))  # (H, n, D)
            out[s:s + n] = torch.nn.functional.scaled_dot_product_attention(
                qs[None], ks[None], vs[None], is_causal=causal, enable_gqa=enable_gqa)[0].transpose(0, 1).to(q.dtype)
        return out

    return fake


@pytest.fixture
def fake_varlen(monkeypatch):
    """Route backend 'auto' through the varlen branch on CPU, with the reference kernel above."""
    calls: list[dict] = []
    monkeypatch.setattr(docs_mod, "want_varlen", lambda backend, device: backend in ("auto", "torch"))
    monkeypatch.setitem(docs_mod._VARLEN, "varlen", _reference_varlen(calls))
    return calls


def test_bucketed_cu_seqlens_pad_with_empty_segments():
    cu, max_len = document_cu_seqlens(_rows(), BOS, bucket=VARLEN_BUCKET)
    assert cu.numel() == VARLEN_BUCKET and max_len == 4
    assert cu[:7].tolist() == [0, 3, 7, 8, 10, 14, 16] and (cu[7:] == 16).all()


def test_varlen_path_equals_masked_sdpa_in_bf16(fake_varlen):
    idx = _rows()
    gen = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(2, 8, h, 16, generator=gen) for h in (4, 2, 2))
    ref = attend(q, k, v, _ctx(idx, doc_isolation=True))  # fp32, no autocast: SDPA + mask, the kernel is not used
    assert not fake_varlen
    y = attend(q.bfloat16(), k.bfloat16(), v.bfloat16(), _ctx(idx, doc_isolation=True))
    assert len(fake_varlen) == 1 and fake_varlen[0]["window"] == (-1, 0) and fake_varlen[0]["gqa"]
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), ref, rtol=0, atol=2e-2)  # bf16 tolerance
    with torch.autocast("cpu", dtype=torch.bfloat16):  # fp32 inputs under autocast: cast, as SDPA would
        y2 = attend(q, k, v, _ctx(idx, doc_isolation=True))
    assert fake_varlen[-1]["dtype"] == torch.bfloat16 and y2.dtype == torch.bfloat16
    torch.testing.assert_close(y2.float(), ref, rtol=0, atol=2e-2)
    attend(q.bfloat16(), k.bfloat16(), v.bfloat16(), _ctx(idx, doc_isolation=False))  # causal: SDPA, not varlen
    assert len(fake_varlen) == 2


def test_model_logits_agree_across_backends(make_model, fake_varlen):
    """Document-isolated GPT: 'sdpa' (dense mask), 'auto' through varlen, each under bf16 autocast, vs fp32 SDPA."""
    idx = torch.tensor([[1, 5, 6, 1, 7, 8, 9, 10, 1, 11, 12, 13], [4, 4, 1, 5, 5, 5, 1, 2, 3, 1, 9, 9]])
    logits = {}
    for backend in ("sdpa", "auto"):
        model = make_model(doc_isolation=True, attention_backend=backend)
        with torch.no_grad():
            logits[f"{backend}_fp32"] = model(idx).float()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                logits[backend] = model(idx).float()
    assert fake_varlen, "the varlen branch never ran"
    ref = logits["sdpa_fp32"]
    assert torch.equal(logits["auto_fp32"], ref)  # fp32 without autocast: both take SDPA + mask
    scale = ref.abs().max()
    for name in ("sdpa", "auto"):
        assert (logits[name] - ref).abs().max() < 0.05 * scale, name  # bf16 tolerance on the logits


def test_chosen_kernels_and_unknown_backend():
    cpu = torch.device("cpu")
    assert chosen_kernels("auto", cpu)["documents"] == "SDPA + block-diagonal mask"
    assert chosen_kernels("sdpa", cpu) == chosen_kernels("auto", cpu)
    with pytest.raises(ValueError, match="attention_backend='xformers'"):
        build_attention_context(_rows(), torch.ones(1, 8, 1, 4), torch.zeros(1, 8, 1, 4), doc_isolation=False,
                                bos_id=BOS, backend="xformers")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (torch varlen_attn)")
def test_cuda_varlen_equals_masked_sdpa():
    dev = torch.device("cuda")
    idx = _rows().to(dev).repeat(2, 16)  # (4, 128): many documents per row
    gen = torch.Generator(device=dev).manual_seed(3)
    q, k, v = (torch.randn(4, 128, h, 64, generator=gen, device=dev, dtype=torch.bfloat16) for h in (8, 4, 4))
    T = idx.size(1)
    cos, sin = torch.ones(1, T, 1, 16, device=dev), torch.zeros(1, T, 1, 16, device=dev)
    ctx = build_attention_context(idx, cos, sin, doc_isolation=True, bos_id=BOS, backend="auto")
    assert ctx.use_varlen
    y = attend(q, k, v, ctx)
    ref = attend(q, k, v, build_attention_context(idx, cos, sin, doc_isolation=True, bos_id=BOS, backend="sdpa"))
    torch.testing.assert_close(y.float(), ref.float(), rtol=0, atol=2e-2)


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
def test_masked_sdpa_equals_flex_attention_document_mask():
    """A third implementation of the same rule: flex_attention (eager, forward) with a document block mask."""
    flex = pytest.importorskip("torch.nn.attention.flex_attention")
    idx = _rows()
    gen = torch.Generator().manual_seed(4)
    q, k, v = (torch.randn(2, 8, h, 16, generator=gen) for h in (4, 2, 2))
    starts = document_starts(idx, BOS)
    bm = flex.create_block_mask(lambda b, h, qi, ki: (ki <= qi) & (ki >= starts[b, qi]), 2, None, 8, 8, device="cpu")
    ref = flex.flex_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), block_mask=bm,
                              enable_gqa=True).transpose(1, 2)
    torch.testing.assert_close(attend(q, k, v, _ctx(idx, doc_isolation=True)), ref, rtol=1e-5, atol=1e-5)



# ---- the optional modules: documents.py and flash.py stay out of a run that does not take their branches ----------

TRAIN_STEP = r'''
def train_step(doc_isolation, cpu_kernels="fused"):
    """Loss and gradient sum of one forward+backward of a tiny GPT (backend 'auto', CPU, fp32)."""
    import torch
    from pgolf.model.gpt import GPT
    from tests.model.conftest import randomize, tiny_config

    torch.manual_seed(0)
    model = randomize(GPT(tiny_config(doc_isolation=doc_isolation, attention_backend="auto", cpu_kernels=cpu_kernels)))
    idx = torch.tensor([[1, 5, 6, 1, 7, 8, 9, 10, 1, 11, 12, 13], [4, 4, 1, 5, 5, 5, 1, 2, 3, 1, 9, 9]])
    loss = model(idx, torch.roll(idx, -1, dims=1))
    loss.backward()
    return [loss.item(), sum(float(p.grad.double().sum()) for p in model.parameters() if p.grad is not None)]
'''

# One fresh interpreter: per case, pgolf.model is imported anew with that case's modules blocked (`import m` raises).
OPTIONAL_CHILD = TRAIN_STEP + r'''
import json, sys
import torch
torch.set_num_threads(1)
out = []
for doc_isolation, kernels, mods in json.loads(sys.argv[1]):
    for m in [m for m in sys.modules if m.startswith(("pgolf.model", "tests.model"))]:
        del sys.modules[m]
    sys.modules.update({m: None for m in mods})
    out.append(train_step(doc_isolation, kernels))
    for m in mods:
        del sys.modules[m]
print(json.dumps(out))
'''


def _run_child(code: str, *args: str):
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", code, *args], cwd=root, env=env, capture_output=True, text=True,
                          timeout=300)


def test_gpt_trains_without_the_attention_modules_it_does_not_run():
    """`GPTConfig.modules_not_run`: without document isolation neither documents.py nor flash.py is imported, with
    it only flash.py is not (backend 'auto'), with the reference CPU ops not fused.py either; the same loss and
    gradients as a normal run, in a fresh interpreter."""
    import json

    from pgolf.model.config import GPTConfig

    assert GPTConfig().modules_not_run() == ("pgolf.model.flash", "pgolf.model.documents")
    assert GPTConfig(doc_isolation=True).modules_not_run() == ("pgolf.model.flash",)
    assert GPTConfig().modules_not_run(documents=True) == ("pgolf.model.flash",)
    assert GPTConfig(attention_backend="flash").modules_not_run() == ("pgolf.model.documents",)
    assert GPTConfig(cpu_kernels="torch").modules_not_run() == ("pgolf.model.flash", "pgolf.model.fused",
                                                                 "pgolf.model.documents")
    runs = ((False, "fused"), (True, "fused"), (False, "torch"))
    cases = [(doc, k, list(GPTConfig(doc_isolation=doc, cpu_kernels=k).modules_not_run())) for doc, k in runs]
    proc = _run_child(OPTIONAL_CHILD, json.dumps(cases))
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    scope: dict = {}
    exec(TRAIN_STEP, scope)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the child
    try:
        assert got == [scope["train_step"](*r) for r in runs]
    finally:
        torch.set_num_threads(threads)
    assert got[0][0] != got[1][0]  # document isolation changed the loss: its branch really ran


def test_a_blocked_documents_module_fails_loudly():
    """The blocking is real: a document-isolated model fails to import the blocked documents.py."""
    proc = _run_child(TRAIN_STEP + "import sys\nsys.modules['pgolf.model.documents'] = None\ntrain_step(True)\n")
    assert proc.returncode != 0 and "pgolf.model.documents" in proc.stderr
