"""GPT: the Parameter Golf model family, from the 2026-03-11 baseline to the 2026-04-27 record, switched by GPTConfig.

    model = GPT(GPTConfig())                 # baseline 9L×512, GQA 8/4, relu² 2×, tied, U-Net skips: 17,059,912 params
    loss = model(idx, targets)               # scalar mean CE (fp32) over all positions
    logits = model(idx)                      # (B, T, V) fp32 logits after the softcap
    nll = model.per_token_loss(idx, targets) # (B, T) fp32 NLL in nats, for evaluation
    model.set_looping(True)                  # depth recurrence on (cfg.num_loops > 0)

Forward (docs/techniques.md): x = tok_emb(idx) [+ BigramHash] [SmearGate v2]; x0 = rms_norm(x) [SmearGate v1];
blocks in virtual order with U-Net skips (encoder = first ⌊V/2⌋ virtual layers, decoder pops skips in reverse),
two-lane parallel residuals in decoder layers with physical index ≥ parallel_start_layer (PR #1530, R0427);
rms_norm → tied head F.linear(x, tok_emb.weight) (or lm_head) → softcap·tanh(z/softcap) → CE in fp32.

Virtual order with looping active (R0405: loops 2 over 4..5 → 15 virtual layers):
[0..loop_start−1] + [loop_start..loop_end]×(num_loops+1) + [loop_end+1..L−1]. The number of skip weights is fixed
by the looped depth, so switching looping on never changes the parameter set. LN scale uses the physical index
(R0405+); XSA on the last N *virtual* layers (R0331); value embeddings on the physical layers in cfg.ve_layers.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pgolf.model.attention import build_attention_context
from pgolf.model.config import GPTConfig
from pgolf.model.extras import BigramHash, SmearGate, ValueEmbedding
from pgolf.model.layers import Block, CastedLinear, Rotary, rms_norm

if TYPE_CHECKING:
    from pgolf.model.generate import KVCache

COUNT_KEYS = ("tok_emb", "attn", "mlp", "control", "skips", "smear", "bigram", "value_embed", "lm_head")


def virtual_layers(cfg: GPTConfig, looping: bool) -> list[int]:
    """Physical block index of every virtual layer, in execution order."""
    L = cfg.num_layers
    if not (looping and cfg.num_loops > 0):
        return list(range(L))
    loop = list(range(cfg.loop_start, cfg.loop_end + 1))
    return list(range(cfg.loop_start)) + loop * (cfg.num_loops + 1) + list(range(cfg.loop_end + 1, L))


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        C, L = cfg.model_dim, cfg.num_layers
        kv_dim = cfg.num_kv_heads * cfg.head_dim
        bos = cfg.bos_id if cfg.smear_bos_fix else None
        self.tok_emb = nn.Embedding(cfg.vocab_size, C)
        self.bigram = BigramHash(cfg.bigram_vocab_size, cfg.bigram_dim, C, bos) if cfg.bigram_vocab_size else None
        self.smear = SmearGate(cfg.smear_gate, C, cfg.gate_window, bos) if cfg.smear_gate != "none" else None
        self.blocks = nn.ModuleList([Block(cfg, i) for i in range(L)])
        self.rotary = Rotary(cfg.rope_dims or cfg.head_dim, cfg.rope_base, cfg.rope_ntk_seq_len)

        # Value embeddings (PR #374, R0322): one shared table, one learned scale per target layer.
        self.ve_shared = ValueEmbedding(cfg.vocab_size, cfg.ve_dim, kv_dim) if cfg.ve_dim and cfg.ve_layers else None
        self.ve_layer_scales = nn.ParameterList(
            [nn.Parameter(torch.ones(1, dtype=torch.float32)) for _ in cfg.ve_layers] if self.ve_shared else []
        )
        self._ve_slot = {layer: j for j, layer in enumerate(cfg.ve_layers)} if self.ve_shared else {}

        # U-Net skips sized for the deepest virtual stack (R0405: 7 encoder / 8 decoder → 7 pairs).
        deepest = virtual_layers(cfg, looping=True)
        self.num_skips = min(len(deepest) // 2, len(deepest) - len(deepest) // 2) if cfg.unet_skips != "none" else 0
        if self.num_skips:
            self.skip_weights = nn.Parameter(torch.ones(self.num_skips, C, dtype=torch.float32))
        if cfg.unet_skips == "gates" and self.num_skips:  # R0331/R0405+: lerp(w⊙skip, x, σ(g)), g init 0
            self.skip_gates = nn.Parameter(torch.zeros(self.num_skips, C, dtype=torch.float32))

        # Parallel residual lambdas for every physical layer, as R0427 allocates them (44 + 22 params at 11L).
        if cfg.parallel_start_layer >= 0:
            self.parallel_post_lambdas = nn.Parameter(torch.ones(L, 2, 2, dtype=torch.float32))
            self.parallel_resid_lambdas = nn.Parameter(torch.full((L, 2), 1.1, dtype=torch.float32))

        self.lm_head = None if cfg.tie_embeddings else CastedLinear(C, cfg.vocab_size)
        if self.lm_head is not None:
            self.lm_head._zero_init = True  # baseline: untied head starts at zero
        self.looping_active = False
        self.fused_cpu_kernels = cfg.cpu_kernels == "fused"
        self._init_weights()

    def _init_weights(self) -> None:
        """R0322+ `GPT._init_weights` (docs/techniques.md#shapes).

        Tied tok_emb ~ N(0, tied_embed_init_std). Linears flagged _zero_init stay zero (attn/MLP out-projections,
        gates, untied head); every other linear with both dims ≥ 64 is orthogonal (gain 1), and those named *.proj
        (bigram.proj, ve_shared.proj) are then scaled by 1/√(2L). Smaller linears keep PyTorch's default init and an
        untied tok_emb keeps nn.Embedding's N(0, 1), as in the records.
        """
        if self.cfg.tie_embeddings:
            nn.init.normal_(self.tok_emb.weight, mean=0.0, std=self.cfg.tied_embed_init_std)
        proj_scale = 1.0 / math.sqrt(2 * self.cfg.num_layers)
        with torch.no_grad():
            for name, module in self.named_modules():
                if not isinstance(module, nn.Linear):
                    continue
                if getattr(module, "_zero_init", False):
                    nn.init.zeros_(module.weight)
                elif min(module.weight.shape) >= 64:
                    nn.init.orthogonal_(module.weight, gain=1.0)
                    if name.endswith(".proj"):
                        module.weight.mul_(proj_scale)

    # ----------------------------------------------------------------------------------------------------- forward

    @property
    def fused_cpu_kernels(self) -> bool:
        """model/fused.py kernels on CPU (training loss, MLP activation); False = the reference ops everywhere."""
        return self._fused

    @fused_cpu_kernels.setter
    def fused_cpu_kernels(self, on: bool) -> None:
        self._fused = bool(on)
        for block in self.blocks:
            block.mlp.fused = block.attn.fused = self._fused

    def set_looping(self, active: bool) -> None:
        """Depth recurrence on/off (R0405 turns it on at ENABLE_LOOPING_AT); a no-op when cfg.num_loops == 0."""
        self.looping_active = bool(active) and self.cfg.num_loops > 0

    def _skip(self, d: int, x: Tensor, skip: Tensor) -> Tensor:
        w = self.skip_weights[d].to(x.dtype)[None, None, :]
        if self.cfg.unet_skips == "gates":
            g = torch.sigmoid(self.skip_gates[d].to(x.dtype))[None, None, :]
            return torch.lerp(w * skip, x, g)
        if self._fused and self.training and x.device.type == "cpu" and torch.is_grad_enabled():
            return torch.addcmul(x, w, skip)  # one pass, not mul + add (the CPU training path, Block._folds)
        return x + w * skip

    def _embed(self, idx: Tensor) -> Tensor:
        """x0 (B, T, C): tok_emb [+ BigramHash] [SmearGate v2] → rms_norm [SmearGate v1]."""
        x = self.tok_emb(idx)  # (B, T, C)
        if self.bigram is not None:
            x = x + self.bigram(idx)
        if self.smear is not None and self.cfg.smear_gate == "v2":
            x = self.smear(x, idx)
        x = rms_norm(x, self._fused)
        if self.smear is not None and self.cfg.smear_gate == "v1":
            x = self.smear(x, idx)
        return x

    def hidden(self, idx: Tensor, cache: KVCache | None = None) -> Tensor:
        """Final normalized hidden states (B, T, C) before the LM head.

        With `cache` (a model/generate.py KVCache, incremental decoding) idx holds only the T new tokens; the cache
        supplies the earlier tokens and every virtual layer's keys/values, so the result equals
        hidden(all tokens)[:, -T:].
        """
        cfg = self.cfg
        T = idx.size(1)
        if cache is None:
            past, ctx_idx = 0, idx
            x = self._embed(idx)
        else:
            past = cache.length
            if cfg.rope_ntk_seq_len and past + T > cfg.rope_ntk_seq_len:
                raise ValueError(f"cached decoding past model.rope_ntk_seq_len={cfg.rope_ntk_seq_len}: the NTK rope "
                                 "base depends on the full length, so the cached keys would be stale")
            ctx_idx = cache.append_tokens(idx)  # (B, past + T)
            left = min(past, 2)  # BigramHash and SmearGate v2 reach two tokens back
            x = self._embed(ctx_idx[:, past - left :])[:, left:]
        x0 = x
        cos, sin = self.rotary(past + T, idx.device)
        cos, sin = cos[:, past:], sin[:, past:]
        ctx = build_attention_context(ctx_idx, cos, sin, doc_isolation=cfg.doc_isolation, bos_id=cfg.bos_id,
                                      backend=cfg.attention_backend, cache=cache)
        ve_base = self.ve_shared(idx) if self.ve_shared is not None else None  # (B, T, kv_dim)

        order = virtual_layers(cfg, self.looping_active)
        V, n_enc = len(order), len(order) // 2
        skips: list[Tensor] = []
        lanes: tuple[Tensor, Tensor] | None = None
        for v, i in enumerate(order):
            ctx.layer = v  # KV-cache slot (incremental decoding)
            ve = None
            if ve_base is not None and i in self._ve_slot:
                ve = ve_base * self.ve_layer_scales[self._ve_slot[i]].to(ve_base.dtype)
            xsa = v >= V - cfg.xsa_last_n
            block = self.blocks[i]
            if v < n_enc:
                x = block(x, x0, ctx, xsa=xsa, ve=ve)
                skips.append(x)
                continue
            d = v - n_enc  # decoder slot
            parallel = 0 <= cfg.parallel_start_layer <= i
            if parallel and lanes is None:
                lanes = (x, x)
            elif not parallel and lanes is not None:  # a sequential layer after parallel ones: merge the lanes
                x, lanes = 0.5 * (lanes[0] + lanes[1]), None
            if lanes is not None:
                lane0 = self._skip(d, lanes[0], skips.pop()) if d < self.num_skips and skips else lanes[0]
                lanes = block.forward_parallel(lane0, lanes[1], x0, ctx, self.parallel_resid_lambdas[i],
                                               self.parallel_post_lambdas[i], xsa=xsa, ve=ve)
            else:
                if d < self.num_skips and skips:
                    x = self._skip(d, x, skips.pop())
                x = block(x, x0, ctx, xsa=xsa, ve=ve)
        if lanes is not None:
            x = 0.5 * (lanes[0] + lanes[1])  # PARALLEL_FINAL_LANE=mean (R0427)
        return rms_norm(x, self._fused)

    def logits(self, idx: Tensor, cache: KVCache | None = None) -> Tensor:
        """fp32 logits (B, T, V) after the softcap (Gemma-2 style, every record); `cache` as in `hidden`."""
        h = self.hidden(idx, cache)
        if self.lm_head is None:
            z = F.linear(h, self.tok_emb.weight.to(h.dtype))  # (B, T, V) tied head
        else:
            z = self.lm_head(h)  # through the module, so hooks and weight_fn see it
        z = z.float()
        cap = self.cfg.logit_softcap
        return cap * torch.tanh(z / cap) if cap > 0 else z

    def forward(self, idx: Tensor, targets: Tensor | None = None) -> Tensor:
        if targets is not None and self._fused_head_ok(idx):
            h = self.hidden(idx)
            w = self.tok_emb.weight if self.lm_head is None else self.lm_head.weight
            if self.lm_head is not None and self.lm_head.weight_fn is not None:
                w = self.lm_head.weight_fn(w)  # QAT fake-quant of an untied head
            amp = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None
            if amp is None:
                w = w.to(h.dtype)
            from pgolf.model.fused import linear_softcap_cross_entropy  # where used: GPTConfig.cpu_kernels

            return linear_softcap_cross_entropy(h.reshape(-1, h.size(-1)), w, targets, self.cfg.logit_softcap,
                                                dtype=amp)  # under CPU autocast: bf16 matmuls, fp32 softmax
        logits = self.logits(idx)
        if targets is None:
            return logits
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))

    def _fused_head_ok(self, idx: Tensor) -> bool:
        """CPU training loss through model/fused.py (chunked head + softcap + CE); CUDA keeps the reference ops, and
        an untied head with forward hooks (calibration) goes through its module."""
        if idx.device.type != "cpu" or not self.fused_cpu_kernels:
            return False
        return self.lm_head is None or not (self.lm_head._forward_hooks or self.lm_head._forward_pre_hooks)

    def per_token_loss(self, idx: Tensor, targets: Tensor) -> Tensor:
        """fp32 NLL in nats, (B, T), no reduction."""
        logits = self.logits(idx)
        nll = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), reduction="none")
        return nll.reshape(targets.shape)

    # ------------------------------------------------------------------------------------------ optimizer / counts

    def optimizer_groups(self) -> dict[str, list[nn.Parameter]]:
        """Every parameter exactly once: "matrix" (CastedLinear weights → Muon), "embed" (tok_emb, bigram/VE tables →
        AdamW tied_embed_lr), "head" (untied lm_head), "scalar" (vectors, scalars, gates, skips, lambdas → AdamW)."""
        head = {id(self.lm_head.weight)} if self.lm_head is not None else set()
        matrix = {id(m.weight) for m in self.modules() if isinstance(m, CastedLinear)} - head
        embed = {id(m.weight) for m in self.modules() if isinstance(m, nn.Embedding)}
        groups: dict[str, list[nn.Parameter]] = {"matrix": [], "embed": [], "head": [], "scalar": []}
        for p in self.parameters():
            key = ("head" if id(p) in head else "matrix" if id(p) in matrix
                   else "embed" if id(p) in embed else "scalar")
            groups[key].append(p)
        return groups

    def parameter_counts(self) -> dict[str, int]:
        """Parameter count per component (COUNT_KEYS) plus "total"; components sum to the total."""
        counts = dict.fromkeys(COUNT_KEYS, 0)
        for name, p in self.named_parameters():
            counts[_component(name)] += p.numel()
        counts["total"] = sum(p.numel() for p in self.parameters())
        return counts


def _component(name: str) -> str:
    """Map a parameter name to its COUNT_KEYS component."""
    prefixes = (("tok_emb.", "tok_emb"), ("lm_head.", "lm_head"), ("bigram.", "bigram"), ("ve_", "value_embed"),
                ("smear.", "smear"), ("skip_", "skips"))
    for prefix, key in prefixes:
        if name.startswith(prefix):
            return key
    if ".attn.c_" in name or ".attn.proj." in name:
        return "attn"
    if ".mlp." in name:
        return "mlp"
    return "control"  # q_gain, attn_scale, mlp_scale, resid_mix, sparse attention gates, parallel lambdas


def format_parameter_counts(counts: dict[str, int]) -> str:
    """Human-readable table: one `name  count  share` line per non-empty component, total first."""
    total = counts.get("total", sum(v for k, v in counts.items() if k != "total"))
    lines = [f"params total: {total:,}"]
    for key, value in counts.items():
        if key != "total" and value:
            lines.append(f"  {key:<12} {value:>12,}  {100.0 * value / max(total, 1):6.2f}%")
    return "\n".join(lines)
