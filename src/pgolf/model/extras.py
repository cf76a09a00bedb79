"""Input-side extras of the records: SmearGate (v1, v2), BigramHash and shared value embeddings.

All three look at token identities (BigramHash and SmearGate also at the previous token), so each takes `idx`.
With the BOS fix (PR #1851/#1855) a BOS position is treated like position 0 of a fresh sequence: nothing from the
previous document is smeared or hashed into it, so with document-isolated attention a document's outputs do not
depend on what precedes it in the packed row.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pgolf.model.layers import CastedLinear, zero_init_linear


def _previous(x: Tensor, idx: Tensor, bos_id: int | None) -> Tensor:
    """x_{t−1} with zeros at t = 0 and, when bos_id is given, at BOS positions.  x (B, T, C) -> (B, T, C)."""
    prev = torch.cat([torch.zeros_like(x[:, :1]), x[:, :-1]], dim=1)
    if bos_id is not None:
        prev = prev * (idx != bos_id).unsqueeze(-1).to(prev.dtype)
    return prev


class SmearGate(nn.Module):
    """Mix the previous token's embedding into the current one.

    v1 (2026-03-19 → R0331): on the normalized embedding, x_t ← (1−g)⊙x_t + g⊙x_{t−1}, g = σ(gate) per channel
    (gate init 0 → g = 0.5), x_{−1} = 0.  Parameter: `smear.gate` (C,).
    v2 (PR #1667 → R0427): on the raw embedding before RMSNorm, x_t ← x_t + λ·σ(W·x_t[:window])·x_{t−1},
    W (1×window) and λ zero-init (identity at init).  Parameters: `smear.gate.weight` (1, window), `smear.lam` (1,).
    """

    def __init__(self, version: str, dim: int, window: int, bos_id: int | None) -> None:
        super().__init__()
        self.version, self.window, self.bos_id = version, window, bos_id
        if version == "v1":
            self.gate = nn.Parameter(torch.zeros(dim, dtype=torch.float32))
        elif version == "v2":
            self.gate = zero_init_linear(window, 1)
            self.lam = nn.Parameter(torch.zeros(1, dtype=torch.float32))
        else:
            raise ValueError(f"unknown SmearGate version {version!r}; expected 'v1' or 'v2'")

    def forward(self, x: Tensor, idx: Tensor) -> Tensor:
        prev = _previous(x, idx, self.bos_id)  # (B, T, C)
        if self.version == "v1":
            g = torch.sigmoid(self.gate.to(x.dtype))[None, None, :]
            return (1 - g) * x + g * prev
        g = self.lam.to(x.dtype) * torch.sigmoid(self.gate(x[..., : self.window])).to(x.dtype)  # (B, T, 1)
        return x + g * prev


class BigramHash(nn.Module):
    """Hashed bigram embedding added to tok_emb (PR #162; R0322–R0331).

    h_t = (36313·tok_t XOR 27191·tok_{t−1}) mod (V_b−1), h_0 = V_b−1 (also at BOS positions with the BOS fix);
    Embedding(V_b, d_b) zero-init → CastedLinear(d_b→C) → × scale (init 0.05). GPT._init_weights later makes
    `proj` orthogonal×1/√(2L), as the R0322 code does (docs/techniques.md#shapes).
    """

    def __init__(self, buckets: int, bigram_dim: int, dim: int, bos_id: int | None) -> None:
        super().__init__()
        self.buckets, self.bos_id = buckets, bos_id
        self.embed = nn.Embedding(buckets, bigram_dim)
        nn.init.zeros_(self.embed.weight)
        self.proj = CastedLinear(bigram_dim, dim)
        nn.init.zeros_(self.proj.weight)
        self.scale = nn.Parameter(torch.tensor(0.05, dtype=torch.float32))

    def hash(self, idx: Tensor) -> Tensor:
        """Bucket ids (B, T) int64; int32 arithmetic as in the records."""
        t = idx.to(torch.int32)
        mod = self.buckets - 1
        h = torch.full_like(t, mod)
        h[:, 1:] = torch.bitwise_xor(36313 * t[:, 1:], 27191 * t[:, :-1]) % mod
        if self.bos_id is not None:
            h = torch.where(t == self.bos_id, torch.full_like(h, mod), h)
        return h.long()

    def forward(self, idx: Tensor) -> Tensor:
        h = self.proj(self.embed(self.hash(idx)))  # (B, T, C)
        return h * self.scale.to(h.dtype)


class ValueEmbedding(nn.Module):
    """Shared value embedding added to v on selected layers (PR #374; R0322–R0331).

    Embedding(V, d_ve) N(0, 0.01) → CastedLinear(d_ve→kv_dim) → × scale (init 0.1); each layer multiplies by its
    own `ve_layer_scales[j]` (owned by GPT). `proj` is zeroed here and re-initialised orthogonal×1/√(2L) by
    GPT._init_weights, as in R0322.
    """

    def __init__(self, vocab_size: int, ve_dim: int, kv_dim: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, ve_dim)
        nn.init.normal_(self.embed.weight, std=0.01)
        self.proj = CastedLinear(ve_dim, kv_dim)
        nn.init.zeros_(self.proj.weight)
        self.scale = nn.Parameter(torch.tensor(0.1, dtype=torch.float32))

    def forward(self, idx: Tensor) -> Tensor:
        h = self.proj(self.embed(idx))  # (B, T, kv_dim)
        return h * self.scale.to(h.dtype)
