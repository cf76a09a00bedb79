"""Per-document LoRA test-time training (R0414/R0427 `BatchedTTTLoRA`, `forward_ttt`; §5.3) and its phased
variant with global SGD over already-scored documents (R0414/R0427 `eval_val_ttt_phased`; §5.4).

    res = evaluate(model, val_tokens, lut, EvalConfig(mode="ttt-lora"), seq_len=2048, device="cuda", bos_id=1)

Documents are the BOS-delimited spans of eval/modes.py `document_spans` (a document owns the targets up to the
next BOS). Batches of ttt_lora_batch_docs consecutive documents each get one adapter slot per document:
* LoRA (`BatchedLoRA`: A (bsz, r, in) ~ U(±1/√in), B (bsz, out, r) = 0, output (x Aᵀ) Bᵀ · alpha/r) on Q, K, V
  (input: the normalized block input n), O (n → added to the attention output), MLP (its normalized input →
  added to its output) for every virtual layer slot, and on the LM head (final hidden → added to the pre-softcap
  logits). Attached with forward hooks on the model's modules, so model files are untouched.
* Per chunk ci of ttt_lora_chunk targets: the context is the last ≤ seq_len tokens of the document before the
  chunk's nominal end (R0427 `_compute_chunk_window` clips the end to the document first, which lets a BOS inside
  the chunk shift the context of the targets before it: a future-token dependence check_legal detects); the
  chunk's targets are scored (committed), then — unless it is the document's last chunk — one AdamW step
  (lr ttt_lora_lr, betas (0, ttt_lora_beta2), eps 1e-10, wd ttt_lora_weight_decay) on Σ_docs mean_chunk NLL.
  A document's scores depend only on its own prefix.
* Reset per batch: B ← 0; A keeps its trained values with ttt_lora_warm_start_a (R0427), else its initial values.
  Adapter initialisation is seeded, so a slot's start state never depends on the data.

Order: documents are processed in stream order (the records sort the queue by length, longest first). With a
warm-started A, phased global SGD or slot-dependent initial A, a length-sorted queue makes a document's score depend
on documents that come *later* in the stream (already scored, so condition 3 holds, but not stream-order
condition 1 — `check_legal` would flag it); stream order keeps every mode strictly causal.

Phased (§5.4): the first phased_prefix_docs documents are split at phased_num_phases cumulative boundaries; after
the documents up to a boundary are scored, all base parameters take one epoch of SGD (lr phased_lr cosine over
ttt_chunk_tokens chunks, momentum ttt_momentum, clip ttt_grad_clip, document-isolated attention) on those
documents' tokens, a fresh LoRA is built, and the remaining documents are adapted on the updated base.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pgolf.eval.config import EvalConfig
from pgolf.eval.modes import Clock, Tally, document_spans, world
from pgolf.eval.ttt import cosine_lr, sgd_on_rows, trainable_parameters, training_rows
from pgolf.model.gpt import virtual_layers


class BatchedLoRA(nn.Module):
    """One adapter per batch slot: (x Aᵀ) Bᵀ · scale for x (b, T, in) and slot indices rows (b,)."""

    def __init__(self, bsz: int, in_features: int, out_features: int, rank: int, scale: float,
                 generator: torch.Generator) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(in_features)
        self.A = nn.Parameter((torch.rand(bsz, rank, in_features, generator=generator) * 2 - 1) * bound)
        self.B = nn.Parameter(torch.zeros(bsz, out_features, rank))
        self.register_buffer("A_init", self.A.detach().clone(), persistent=False)
        self.scale = scale

    def forward(self, x: Tensor, rows: Tensor) -> Tensor:
        A, B = self.A[rows].to(x.dtype), self.B[rows].to(x.dtype)  # (b, r, in), (b, out, r)
        return (x @ A.transpose(1, 2)) @ B.transpose(1, 2) * self.scale  # (b, T, out)

    @torch.no_grad()
    def reset(self, warm_start_a: bool) -> None:
        self.B.zero_()
        if not warm_start_a:
            self.A.copy_(self.A_init)


class DocumentLoRA(nn.Module):
    """LoRA adapters for every virtual layer slot of a GPT plus its head, applied through forward hooks.

    Each physical block's attention/MLP call count within a forward selects its virtual slot (depth recurrence
    calls a block several times). Hooks are no-ops while `rows` is None (plain base-model forwards).
    """

    def __init__(self, model: nn.Module, bsz: int, rank: int, alpha: float, seed: int = 0) -> None:
        super().__init__()
        cfg = model.cfg
        C, kv = cfg.model_dim, cfg.num_kv_heads * cfg.head_dim
        order = virtual_layers(cfg, model.looping_active)
        g = torch.Generator().manual_seed(seed)
        s = alpha / rank

        def make(in_f: int, out_f: int) -> nn.ModuleList:
            return nn.ModuleList([BatchedLoRA(bsz, in_f, out_f, rank, s, g) for _ in order])

        self.q, self.k, self.v, self.o, self.mlp = make(C, C), make(C, kv), make(C, kv), make(C, C), make(C, C)
        self.head = BatchedLoRA(bsz, C, cfg.vocab_size, rank, s, g)
        self.slots = {i: [v for v, j in enumerate(order) if j == i] for i in set(order)}
        self.rows: Tensor | None = None
        self._attn_calls: dict[int, int] = {}
        self._mlp_calls: dict[int, int] = {}
        self._handles: list = []
        for i, block in enumerate(model.blocks):
            if i in self.slots:
                self._hook(i, block)

    def _hook(self, i: int, block: nn.Module) -> None:
        def slot(calls: dict[int, int]) -> int:
            return self.slots[i][calls[i] - 1]

        def count(calls: dict[int, int]):
            def pre(module, args):
                if self.rows is not None:
                    calls[i] = calls.get(i, 0) + 1
            return pre

        def add(adapters: nn.ModuleList, calls: dict[int, int]):
            def post(module, args, out):
                if self.rows is None:
                    return out
                return out + adapters[slot(calls)](args[0], self.rows).to(out.dtype)
            return post

        attn, h = block.attn, self._handles
        h.append(attn.register_forward_pre_hook(count(self._attn_calls)))
        h.append(block.mlp.register_forward_pre_hook(count(self._mlp_calls)))
        h.append(attn.c_q.register_forward_hook(add(self.q, self._attn_calls)))
        h.append(attn.c_k.register_forward_hook(add(self.k, self._attn_calls)))
        h.append(attn.c_v.register_forward_hook(add(self.v, self._attn_calls)))
        h.append(attn.register_forward_hook(add(self.o, self._attn_calls)))  # O: n → attention output
        h.append(block.mlp.register_forward_hook(add(self.mlp, self._mlp_calls)))

    def detach_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def logits(self, model: nn.Module, idx: Tensor, rows: Tensor) -> Tensor:
        """GPT.logits with every adapter of slot rows[b] on row b; the head adapter adds to the pre-softcap z."""
        self.rows = rows
        self._attn_calls.clear()  # cleared in place: the hooks hold these dicts
        self._mlp_calls.clear()
        try:
            h = model.hidden(idx)  # (b, T, C)
        finally:
            self.rows = None
        z = F.linear(h, model.tok_emb.weight.to(h.dtype)) if model.lm_head is None else model.lm_head(h)
        z = z.float() + self.head(h, rows).float()  # (b, T, V)
        cap = model.cfg.logit_softcap
        return cap * torch.tanh(z / cap) if cap > 0 else z

    def reset(self, warm_start_a: bool) -> None:
        for m in self.modules():
            if isinstance(m, BatchedLoRA):
                m.reset(warm_start_a)


def adapt_documents(model: nn.Module, lora: DocumentLoRA, tokens: Tensor, spans: list[tuple[int, int]],
                    tally: Tally, cfg: EvalConfig, *, seq_len: int) -> None:
    """Score-first LoRA TTT on one batch of documents (slot j = spans[j]); see the module doc."""
    lora.reset(cfg.ttt_lora_warm_start_a)
    opt = torch.optim.AdamW(lora.parameters(), lr=cfg.ttt_lora_lr, betas=(0.0, cfg.ttt_lora_beta2), eps=1e-10,
                            weight_decay=cfg.ttt_lora_weight_decay)
    K, dev = cfg.ttt_lora_chunk, tokens.device
    n_chunks = [math.ceil((e - s) / K) for s, e in spans]
    for ci in range(max(n_chunks)):
        active = [j for j, n in enumerate(n_chunks) if ci < n]
        wins = []  # (window start, chunk start, chunk end) in target indices
        for j in active:
            s, e = spans[j]
            cs, ce = s + ci * K, min(s + (ci + 1) * K, e)
            # context: the last ≤ seq_len tokens before the *nominal* chunk end cs + K, so a BOS inside the chunk
            # (the document's end) cannot change the context of the chunk's earlier targets
            wins.append((max(s, cs + K - seq_len), cs, ce))
        w = torch.tensor(wins, device=dev)  # (b, 3)
        L = int((w[:, 2] - w[:, 0]).max())
        pos = w[:, :1] + torch.arange(L, device=dev)  # (b, L)
        valid = pos < w[:, 2:3]
        mask = valid & (pos >= w[:, 1:2])
        pos = torch.where(valid, pos, 0)
        x, y = torch.where(valid, tokens[pos], 0), torch.where(valid, tokens[pos + 1], 0)
        rows = torch.tensor(active, device=dev)
        train = torch.tensor([ci < n_chunks[j] - 1 for j in active], device=dev)  # doc has a next chunk
        with torch.set_grad_enabled(bool(train.any()) and cfg.ttt_lora_lr > 0):
            nll = tally.add(lora.logits(model, x, rows), x, y, mask, pos)  # scores committed here
        if not nll.requires_grad:
            continue
        tmask = mask & train[:, None]
        loss = ((nll * tmask).sum(1) / tmask.sum(1).clamp(min=1)).sum()  # Σ_docs mean over the chunk
        if tally.recorder is not None:  # the step reads each training doc's tokens s+1..ce (targets s..ce−1)
            tally.recorder.record_update(torch.cat([torch.arange(spans[j][0], int(c)) for j, (_, _, c), t
                                                    in zip(active, wins, train.tolist()) if t]))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def global_sgd(model: nn.Module, tokens: Tensor, end: int, cfg: EvalConfig, *, seq_len: int, recorder) -> None:
    """Phased TTT's global step: one epoch of SGD on all base parameters over targets [0, end) (the scored
    documents), cosine lr over ttt_chunk_tokens chunks, document-isolated attention (§5.4)."""
    saved = model.cfg
    if dataclasses.is_dataclass(saved) and hasattr(saved, "doc_isolation"):
        model.cfg = dataclasses.replace(saved, doc_isolation=True)
    params = trainable_parameters(model, 0)
    opt = torch.optim.SGD(params, lr=cfg.phased_lr, momentum=cfg.ttt_momentum)
    C = cfg.ttt_chunk_tokens
    N = math.ceil(end / C)
    try:
        for ci in range(N):
            rows = training_rows(ci * C, min((ci + 1) * C, end), seq_len)
            sgd_on_rows(model, tokens, rows, opt, params, seq_len=seq_len, batch_seqs=cfg.ttt_batch_seqs,
                        lr=cosine_lr(cfg.phased_lr, ci, N), grad_clip=cfg.ttt_grad_clip, recorder=recorder)
    finally:
        model.cfg = saved
        for p in params:
            p.requires_grad_(False)


def phase_boundaries(num_docs: int, prefix_docs: int, num_phases: int) -> list[int]:
    """Cumulative document counts after which the global SGD runs (R0427: 833/1666/2500 of 2500 docs)."""
    prefix = min(prefix_docs, num_docs)
    return sorted({prefix * k // num_phases for k in range(1, num_phases + 1)} - {0})


def run_ttt_lora(model: nn.Module, tokens: Tensor, tally: Tally, cfg: EvalConfig, *, seq_len: int, bos_id: int,
                 clock: Clock, phased: bool = False, progress: bool = False) -> None:
    """Per-document LoRA TTT (optionally phased) over the device tensor `tokens` into `tally`."""
    if cfg.ttt_lora_chunk > seq_len:
        raise ValueError(f"eval.ttt_lora_chunk={cfg.ttt_lora_chunk} must be ≤ seq_len={seq_len}")
    model = copy.deepcopy(model).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    spans = document_spans(tokens.cpu(), bos_id)
    bsz = cfg.ttt_lora_batch_docs
    cuts = phase_boundaries(len(spans), cfg.phased_prefix_docs, cfg.phased_num_phases) if phased else []
    segments = list(zip([0] + cuts, cuts + [len(spans)]))
    segments = [(a, b) for a, b in segments if b > a]
    rank, size = world()
    batches = [[(a, min(a + bsz, hi)) for a in range(lo, hi, bsz)] for lo, hi in segments]
    total, done = sum(len(b) for b in batches), 0
    bar = None
    if progress and rank == 0:
        from tqdm import tqdm

        bar = tqdm(total=total, desc=f"ttt-{'phased' if phased else 'lora'}", unit="batch", dynamic_ncols=True)
    lora = DocumentLoRA(model, bsz, cfg.ttt_lora_rank, cfg.ttt_lora_alpha).to(tokens.device)
    try:
        for seg, ((lo, hi), seg_batches) in enumerate(zip(segments, batches)):
            t0 = time.perf_counter()
            for k, (a, b) in enumerate(seg_batches):
                if k % size == rank:
                    adapt_documents(model, lora, tokens, spans[a:b], tally, cfg, seq_len=seq_len)
                done += 1
                if bar is not None:
                    bar.update(1)
                clock.tick(done, total, "document batches")
            t1 = time.perf_counter()
            clock.add("lora", t1 - t0)
            if hi in cuts and hi < len(spans):  # phase boundary with documents left to adapt
                global_sgd(model, tokens, spans[hi - 1][1], cfg, seq_len=seq_len, recorder=tally.recorder)
                lora.detach_hooks()
                lora = DocumentLoRA(model, bsz, cfg.ttt_lora_rank, cfg.ttt_lora_alpha).to(tokens.device)
                clock.add("global_sgd", time.perf_counter() - t1)
    finally:
        lora.detach_hooks()
        if bar is not None:
            bar.close()
