"""Per-document LoRA test-time training (R0414/R0427 `BatchedTTTLoRA`, `forward_ttt`) and its phased
variant with global SGD over already-scored documents (R0414/R0427 `eval_val_ttt_phased`).

    res = evaluate(model, val_tokens, target_bytes, EvalConfig(mode="ttt-lora"), seq_len=2048, device="cuda",
                   bos_id=1)

Documents are the BOS-delimited spans of eval/score.py `document_spans` (a document owns the targets up to the
next BOS). Batches of ttt_lora_batch_docs documents (consecutive, or by length: below) get one adapter slot per
document:
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
  Adapter initialisation is seeded (below), so a start state never depends on the data.

Adapter start state: slot initial A values come from a seeded pool of ttt_lora_batch_docs draws and document d
(stream index) starts from pool entry d mod ttt_lora_batch_docs, so its start state depends on its stream position
alone, never on which other documents share its batch. (The records draw A per slot; with a length-sorted queue a
later BOS then re-sorts the queue, moves an earlier document to another slot and changes its scores, which
check_legal catches.)

Document order (cfg.lora_order):
* "stream" (default): batches of consecutive documents in stream order. Every mode and option is strictly causal.
* "length": the records' queue (R0414/R0427: globally sorted by length, longest batches first), which keeps
  padding small. Each document is then adapted in a batch of documents from anywhere in the stream, including later
  ones. That is legal only if nothing crosses documents: one adapter slot per document, B zeroed and A restored at
  every batch, a fresh AdamW per batch (its update is element-wise, so slots do not interact), and a start state
  that depends only on the document's own stream index (above). A document's scores are then the ones it gets in
  stream order (tests/eval/test_lora.py checks that, and `check_legal` passes). Two options break it, and
  EvalConfig refuses them with "length": warm-start A (A trained on a later, longer document carries into an
  earlier one: `check_legal` flags the combination, see the tests) and the phased mode (the global SGD would train
  on the longest documents and then score shorter, earlier ones). The records ran exactly those combinations; they
  satisfy score-before-update (condition 3) but not strict stream-order causality (condition 1).

Warm-start A and ranks: with ttt_lora_warm_start_a, document batch k starts from the A that batch k − lanes ended
with (lanes = cfg.ttt_lora_lanes, or the world size when 0 — the records, where each GPU carries its own A, so the
score depends on the number of GPUs). Batches go round-robin to ranks (lane l on rank l mod world size); with a
fixed lanes value a single process keeps each lane's A and swaps it in, so any world size dividing lanes gives
the same scores. Forwards run under bf16 autocast on CUDA.

Phased (R0414/R0427): the first phased_prefix_docs documents are split at phased_num_phases cumulative boundaries; after
the documents up to a boundary are scored, all base parameters take one epoch of SGD (lr phased_lr cosine over
ttt_chunk_tokens chunks, momentum ttt_momentum, clip ttt_grad_clip, document-isolated attention) on those
documents' tokens, a fresh LoRA is built, and the remaining documents are adapted on the updated base.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pgolf.eval.config import EvalConfig
from pgolf.eval.score import Tally, autocast, document_spans, window_batch
from pgolf.eval.ttt import cosine_lr, sgd_on_rows, trainable_parameters, training_rows
from pgolf.model.gpt import virtual_layers
from pgolf.train.distributed import world

if TYPE_CHECKING:
    from pgolf.eval.modes import ModeContext


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
    def reset(self, warm_start_a: bool, init_rows: Tensor | None = None) -> None:
        """B ← 0; unless warm_start_a, A ← its initial values (slot j from pool entry init_rows[j])."""
        self.B.zero_()
        if not warm_start_a:
            self.A.copy_(self.A_init if init_rows is None else self.A_init[init_rows])


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

    def adapters(self) -> list[BatchedLoRA]:
        return [m for m in self.modules() if isinstance(m, BatchedLoRA)]

    def reset(self, warm_start_a: bool, init_rows: Tensor | None = None) -> None:
        for m in self.adapters():
            m.reset(warm_start_a, init_rows)

    def a_state(self) -> list[Tensor]:
        """Copies of every A (a warm-start lane's carried state)."""
        return [m.A.detach().clone() for m in self.adapters()]

    @torch.no_grad()
    def load_a(self, state: list[Tensor] | None) -> None:
        """Set every A from a_state() output, or to its initial values when state is None."""
        for i, m in enumerate(self.adapters()):
            m.A.copy_(m.A_init if state is None else state[i])


def adapt_documents(model: nn.Module, lora: DocumentLoRA, tokens: Tensor, spans: list[tuple[int, int]],
                    doc_ids: list[int], tally: Tally, cfg: EvalConfig, *, seq_len: int,
                    amp: torch.dtype | None = None) -> None:
    """Score-first LoRA TTT on one batch of documents (slot j = spans[j], stream index doc_ids[j]); see the
    module doc."""
    bsz = lora.head.A.shape[0]
    init_rows = torch.arange(bsz)
    init_rows[: len(doc_ids)] = torch.tensor(doc_ids) % bsz
    lora.reset(cfg.ttt_lora_warm_start_a, init_rows.to(lora.head.A.device))
    opt = torch.optim.AdamW(lora.parameters(), lr=cfg.ttt_lora_lr, betas=(0.0, cfg.ttt_lora_beta2), eps=1e-10,
                            weight_decay=cfg.ttt_lora_weight_decay)
    K, dev = cfg.ttt_lora_chunk, tokens.device
    n_chunks = [math.ceil((e - s) / K) for s, e in spans]
    for ci in range(max(n_chunks)):
        active = [j for j, n in enumerate(n_chunks) if ci < n]
        wins = []  # windows (start, chunk end, chunk start) in target indices, as eval/score.py window_table's
        for j in active:
            s, e = spans[j]
            cs, ce = s + ci * K, min(s + (ci + 1) * K, e)
            # context: the last ≤ seq_len tokens before the *nominal* chunk end cs + K, so a BOS inside the chunk
            # (the document's end) cannot change the context of the chunk's earlier targets
            wins.append((max(s, cs + K - seq_len), ce, cs))
        w = torch.tensor(wins, device=dev)  # (b, 3)
        x, y, mask, pos = window_batch(tokens, w, int((w[:, 1] - w[:, 0]).max()))
        rows = torch.tensor(active, device=dev)
        train = torch.tensor([ci < n_chunks[j] - 1 for j in active], device=dev)  # doc has a next chunk
        with torch.set_grad_enabled(bool(train.any()) and cfg.ttt_lora_lr > 0):
            with autocast(dev, amp):
                logits = lora.logits(model, x, rows)
            nll = tally.add(logits, y, mask, pos)  # scores committed here
        if not nll.requires_grad:
            continue
        tmask = mask & train[:, None]
        loss = ((nll * tmask).sum(1) / tmask.sum(1).clamp(min=1)).sum()  # Σ_docs mean over the chunk
        if tally.recorder is not None:  # the step reads each training doc's tokens s+1..ce (targets s..ce−1)
            tally.record_update(torch.cat([torch.arange(spans[j][0], int(c)) for j, (_, c, _), t
                                                    in zip(active, wins, train.tolist()) if t]))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def global_sgd(model: nn.Module, tokens: Tensor, end: int, cfg: EvalConfig, *, seq_len: int, recorder,
               amp: torch.dtype | None = None) -> None:
    """Phased TTT's global step: one epoch of SGD on all base parameters over targets [0, end) (the scored
    documents), cosine lr over ttt_chunk_tokens chunks, document-isolated attention (R0427)."""
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
                        lr=cosine_lr(cfg.phased_lr, ci, N), grad_clip=cfg.ttt_grad_clip, recorder=recorder, amp=amp)
    finally:
        model.cfg = saved
        for p in params:
            p.requires_grad_(False)


def phase_boundaries(num_docs: int, prefix_docs: int, num_phases: int) -> list[int]:
    """Cumulative document counts after which the global SGD runs (R0427: 833/1666/2500 of 2500 docs)."""
    prefix = min(prefix_docs, num_docs)
    return sorted({prefix * k // num_phases for k in range(1, num_phases + 1)} - {0})


def document_queue(spans: list[tuple[int, int]], order: str) -> list[int]:
    """Document indices in processing order: stream order, or by length, longest first (ties in stream order)."""
    if order == "stream":
        return list(range(len(spans)))
    if order == "length":
        return sorted(range(len(spans)), key=lambda d: (spans[d][0] - spans[d][1], d))
    raise ValueError(f"eval.lora_order={order!r} is not one of ('stream', 'length')")


def run_ttt_lora(model: nn.Module, ctx: ModeContext) -> str:
    """The "ttt-lora" mode: per-document LoRA TTT over ctx.tokens into ctx.tally; see the module doc."""
    return _lora_modes(model, ctx, phased=False)


def run_ttt_phased(model: nn.Module, ctx: ModeContext) -> str:
    """The "ttt-phased" mode: LoRA TTT with global SGD phases over already-scored documents."""
    return _lora_modes(model, ctx, phased=True)


def _lora_modes(model: nn.Module, ctx: ModeContext, *, phased: bool) -> str:
    cfg, seq_len, tokens, tally, clock, amp = ctx.cfg, ctx.seq_len, ctx.tokens, ctx.tally, ctx.clock, ctx.amp
    if cfg.ttt_lora_chunk > seq_len:
        raise ValueError(f"eval.ttt_lora_chunk={cfg.ttt_lora_chunk} must be ≤ seq_len={seq_len}")
    if phased and cfg.lora_order != "stream":
        raise ValueError(f"eval.lora_order={cfg.lora_order!r} is not supported with ttt-phased (stream only)")
    rank, size = world()
    lanes = cfg.ttt_lora_lanes or size
    if lanes % size:
        raise ValueError(f"eval.ttt_lora_lanes={cfg.ttt_lora_lanes} must be a multiple of the world size {size}")
    swap = cfg.ttt_lora_warm_start_a and lanes > size  # this rank runs several warm-start chains
    model = copy.deepcopy(model).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    spans = document_spans(tokens.cpu(), ctx.bos_id)
    queue = document_queue(spans, cfg.lora_order)
    bsz = cfg.ttt_lora_batch_docs
    cuts = phase_boundaries(len(spans), cfg.phased_prefix_docs, cfg.phased_num_phases) if phased else []
    segments = list(zip([0] + cuts, cuts + [len(spans)]))
    segments = [(a, b) for a, b in segments if b > a]
    batches = [[queue[a:min(a + bsz, hi)] for a in range(lo, hi, bsz)] for lo, hi in segments]
    total, done = sum(len(b) for b in batches), 0
    bar = None
    if ctx.progress and rank == 0:
        from pgolf.progress import Progress

        bar = Progress(f"ttt-{'phased' if phased else 'lora'}", total, enabled=ctx.progress, unit="batch")
    lora = DocumentLoRA(model, bsz, cfg.ttt_lora_rank, cfg.ttt_lora_alpha).to(tokens.device)
    try:
        for seg, ((lo, hi), seg_batches) in enumerate(zip(segments, batches)):
            t0 = time.perf_counter()
            lane_a: dict[int, list[Tensor]] = {}
            for k, docs in enumerate(seg_batches):
                lane = k % lanes
                if lane % size == rank:
                    if swap:
                        lora.load_a(lane_a.get(lane))
                    adapt_documents(model, lora, tokens, [spans[d] for d in docs], docs, tally, cfg,
                                    seq_len=seq_len, amp=amp)
                    if swap:
                        lane_a[lane] = lora.a_state()
                done += 1
                if bar is not None:
                    bar.update(1)
                clock.tick(done, total, "document batches")
            t1 = time.perf_counter()
            clock.add("lora", t1 - t0)
            if hi in cuts and hi < len(spans):  # phase boundary with documents left to adapt
                global_sgd(model, tokens, spans[queue[hi - 1]][1], cfg, seq_len=seq_len, recorder=tally.recorder,
                           amp=amp)
                lora.detach_hooks()
                lora = DocumentLoRA(model, bsz, cfg.ttt_lora_rank, cfg.ttt_lora_alpha).to(tokens.device)
                clock.add("global_sgd", time.perf_counter() - t1)
            if phased:  # R0427 logs each phase's end; here each phase's LoRA + global SGD seconds
                clock.add(f"phase{seg + 1}", time.perf_counter() - t0)
                if bar is not None:
                    bar.print_line(f"ttt-phased: phase {seg + 1}/{len(segments)} done in "
                                   f"{time.perf_counter() - t0:.1f} s ({done}/{total} document batches)")
    finally:
        lora.detach_hooks()
        if bar is not None:
            bar.close()
    name = "ttt-phased" if phased else "ttt-lora"
    return f"{name}(seq_len={seq_len},chunk={cfg.ttt_lora_chunk},rank={cfg.ttt_lora_rank})"
