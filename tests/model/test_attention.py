"""Attention kernels: document masks and cu_seqlens against brute force, SDPA paths against per-document runs.

    python -m pytest tests/model/test_attention.py -q
"""

from __future__ import annotations

import pytest
import torch

from pgolf.model.attention import (AttentionContext, attend, build_attention_context, document_causal_mask,
                                   document_cu_seqlens, document_starts)

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
