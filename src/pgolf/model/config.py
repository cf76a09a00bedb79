"""GPTConfig: every architecture switch of the Parameter Golf records as one typed, frozen dataclass.

Defaults reproduce the challenge baseline (9L × 512d, GQA 8/4, relu² MLP 2×, tied embeddings, U-Net skip weights,
softcap 30; docs/techniques.md#shapes). Record stacks are presets (src/pgolf/presets/*.toml).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class GPTConfig:
    vocab_size: int = 1024
    """Tokenizer vocabulary size; must equal the tokenizer's piece count."""
    num_layers: int = 9
    """Physical transformer blocks (virtual depth grows with depth recurrence)."""
    model_dim: int = 512
    num_heads: int = 8
    num_kv_heads: int = 4
    """Grouped-query attention: num_heads must be a multiple of num_kv_heads."""
    mlp_mult: float = 2.0
    """MLP hidden = round(mlp_mult · model_dim)."""
    mlp_act: Literal["relu2", "leaky_relu2"] = "relu2"
    """relu² (baseline) or LeakyReLU(0.5)² (PR #493, R0323+)."""
    rope_base: float = 10000.0
    rope_dims: int = 0
    """Rotary dims per head (partial RoPE, PR #315 uses 16 of 64); 0 = the full head dim."""
    rope_ntk_seq_len: int = 0
    """NTK-scaled RoPE base for sequences longer than this (R0322-era `Rotary` hard-codes 1024, so its 2048-token
    training runs use base·2^(rd/(rd−2)); R0427 runs ROPE_YARN=0); 0 = off."""
    qk_gain_init: float = 1.5
    """Initial per-head gain on RMS-normalised, rotated q (1.5 baseline, 4.0 R0405, 5.0 R0414/R0427)."""
    logit_softcap: float = 30.0
    """Logits are softcap·tanh(z/softcap) (Gemma-2 style, every record); 0 disables."""
    tie_embeddings: bool = True
    tied_embed_init_std: float = 0.005
    unet_skips: Literal["none", "weights", "gates"] = "weights"
    """U-Net skips between encoder and decoder halves: learned per-channel weights (BASE) or sigmoid gates (R0331+)."""
    ln_scale: bool = False
    """Scale each block's RMSNorm output by 1/sqrt(layer_idx+1) (PR #315)."""
    xsa_last_n: int = 0
    """Exclusive self-attention on the last N (virtual) layers (PR #198/#478); 0 = off."""
    smear_gate: Literal["none", "v1", "v2"] = "none"
    """SmearGate: v1 per-channel sigmoid gate (2026-03-19..R0331), v2 input-dependent gate (PR #1667, R0427)."""
    smear_bos_fix: bool = True
    """Do not smear (or bigram-hash) the previous document's last token into a BOS position (PR #1851)."""
    gate_window: int = 12
    """Leading residual dims that feed SmearGate v2 and the sparse attention gate (GATE_WINDOW, PR #1667/#1787)."""
    bigram_vocab_size: int = 0
    """BigramHash table rows (PR #162; 2048 in R0322, 3072 in R0325); 0 = off."""
    bigram_dim: int = 128
    ve_dim: int = 0
    """Shared value-embedding width (PR #374; 128 in R0322); 0 = off."""
    ve_layers: tuple[int, ...] = ()
    """Physical layers that add the value embedding to v (R0322: 9, 10)."""
    num_loops: int = 0
    """Depth recurrence: extra passes over layers loop_start..loop_end (R0405: 2 loops of 4..5)."""
    loop_start: int = 0
    loop_end: int = 0
    """Inclusive physical layer range that is looped."""
    parallel_start_layer: int = -1
    """Two-lane parallel residuals from this physical layer on (PR #1530 form, R0427 uses 8); -1 = off."""
    sparse_attn_gate: bool = False
    """Per-head output gate σ(scale·W·x[:12]) (PR #1787, R0427)."""
    sparse_attn_gate_scale: float = 1.0
    doc_isolation: bool = False
    """No attention across BOS boundaries (the records' VarLen training, PR #1530)."""
    bos_id: int = 1
    attention_backend: Literal["auto", "torch", "sdpa", "flash"] = "auto"
    """auto = torch: torch-native kernels (CUDA: varlen_attn for doc_isolation, SDPA flash for causal; CPU: SDPA);
    sdpa = SDPA with a dense document mask; flash = the flash-attn package (CUDA, optional, model/flash.py).
    model/attention.py."""
    cpu_kernels: Literal["fused", "torch"] = "fused"
    """Training on CPU: fused = model/fused.py's autograd kernels (softcapped head + CE, LeakyReLU², RMSNorm, RoPE:
    the same values, cheaper backward; BENCHMARKS.md), torch = the reference ops. No effect on CUDA; the GPU presets
    say torch, so their single-file scripts leave model/fused.py out (`GPT.fused_cpu_kernels` switches at run time)."""

    def __post_init__(self) -> None:
        if self.model_dim % self.num_heads:
            raise ValueError(f"model.model_dim={self.model_dim} must be divisible by model.num_heads={self.num_heads}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"model.num_heads={self.num_heads} must be a multiple of model.num_kv_heads={self.num_kv_heads}"
            )
        head_dim = self.model_dim // self.num_heads
        if self.rope_dims < 0 or self.rope_dims > head_dim or self.rope_dims % 2:
            raise ValueError(f"model.rope_dims={self.rope_dims} must be even and in [0, head_dim={head_dim}]")
        if self.num_loops:
            if not (0 <= self.loop_start <= self.loop_end < self.num_layers):
                raise ValueError(
                    f"model.loop_start={self.loop_start}..loop_end={self.loop_end} must lie in [0, {self.num_layers})"
                )
        if self.gate_window > self.model_dim:
            raise ValueError(f"model.gate_window={self.gate_window} must be <= model.model_dim={self.model_dim}")
        for layer in self.ve_layers:
            if not 0 <= layer < self.num_layers:
                raise ValueError(f"model.ve_layers contains {layer}; expected layers in [0, {self.num_layers})")
        if self.vocab_size > 65536:
            raise ValueError(f"model.vocab_size={self.vocab_size}: shards store uint16 tokens (≤ 65,536)")

    def modules_not_run(self, documents: bool = False) -> tuple[str, ...]:
        """The model/ modules a run of this config never imports, so its single-file script leaves them out
        (pgolf.experiments.closure): model/flash.py unless `attention_backend` is "flash", model/fused.py when
        `cpu_kernels` is "torch", model/documents.py unless `doc_isolation` or `documents` (the run isolates
        documents or decodes all the same: TTT-LoRA's eval sets doc_isolation on the model, model/generate.py's
        incremental decoding masks through it).
        tests/model/test_attention.py trains with each left out unimportable."""
        out = () if self.attention_backend == "flash" else ("pgolf.model.flash",)
        out += ("pgolf.model.fused",) if self.cpu_kernels == "torch" else ()
        return out if self.doc_isolation or documents else out + ("pgolf.model.documents",)

    @property
    def head_dim(self) -> int:
        return self.model_dim // self.num_heads

    @property
    def mlp_hidden(self) -> int:
        return int(round(self.mlp_mult * self.model_dim))
