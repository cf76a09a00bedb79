"""Parallel Muon (PR #399, R0323+): banked gradients, reduce-scatter, batched Newton–Schulz on a shard, all-gather.

The update is Muon's (train/muon.py, same hyper-parameters, same formula); only where the work happens changes.
The round-robin scheme of the baseline (`Muon` under torch.distributed) needs the gradients averaged first (one
all-reduce of every matrix gradient) and then a second all-reduce of a flat buffer of updates. Parallel Muon replaces
both with one reduce-scatter and one all-gather:

1. **Banks.** The matrices of a param group are grouped by shape; each group's gradients are copied into one
   contiguous 3-D bank (B, rows, cols), padded along B to a multiple of the world size (the records keep the weights
   themselves in banks — `qo_bank`, `kv_bank`, … — pgolf keeps per-layer weights, so quantization and state_dict
   names are unchanged, and banks only the gradients and updates).
2. **Reduce-scatter** (`launch_reduce_scatters`, right after the backward, asynchronous, biggest bank first): rank r
   receives the summed gradients of bank rows [r·B/W, (r+1)·B/W) — the only ones it will orthogonalise.
3. **Momentum and Newton–Schulz on the shard**, batched (`zeropower_via_newtonschulz` on a (B/W, rows, cols) tensor
   is one `torch.bmm` per matmul). Each rank keeps the momentum of its own rows only.
4. **All-gather** of the orthogonalised shards, asynchronous: bank k's all-gather runs while bank k+1 is
   orthogonalised; the updates are applied when it lands.

The records launch step 2 after the backward rather than from gradient hooks during it, and so does pgolf: with the
model under torch.compile the backward is one graph whose gradients all appear at its end, so hooks would gain
nothing. What overlaps is the reduce-scatter with the AdamW step (the loop steps AdamW first) and each all-gather
with the next bank's Newton–Schulz.

Differences from the record, on purpose: gradients are reduce-scattered in their own dtype (fp32, the record casts to
bf16) and summed then divided by the world size (the record uses ReduceOp.AVG, which gloo lacks on some builds), so
the result equals single-process Muon to float rounding; updates are all-gathered in bf16 on CUDA (what Newton–Schulz
produces there: lossless) and fp32 on CPU. Global-norm clipping (`clip_gradients`) uses the norm of the *averaged*
gradients, as a single process would; the record clips each rank's local gradients before the reduce-scatter.

Communication per step and rank (`communication_bytes`): round-robin = all-reduce of N fp32 gradients + all-reduce of
N update values; parallel = reduce-scatter of N' fp32 + all-gather of N' update values (N' = N padded to whole
shards). A ring all-reduce moves 2·(W−1)/W of its buffer per rank, a reduce-scatter or all-gather (W−1)/W, so
Parallel Muon moves about half the bytes, and does 1/W of the Newton–Schulz work on each rank instead of
≈1/W with per-matrix granularity.

A parameter left without a gradient in a step is neither decayed nor updated, as in `Muon`; its momentum rows are
decayed with a zero gradient when other matrices of its bank have one (Muon leaves them untouched).

Checkpoints: `state_dict()` gathers the momentum shards (a collective: call it on every rank) and returns the
ordinary per-parameter `momentum_buffer` layout of `Muon`, so checkpoints move freely between the two.

Run the tests: `pytest tests/train/test_parallel_muon.py -q`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from pgolf.train.distributed import world
from pgolf.train.muon import Muon, newton_schulz_dtype, zeropower_via_newtonschulz


def _reduce_scatter(out: Tensor, inp: Tensor, *, async_op: bool, native: bool = True) -> Any:
    """Sum-reduce-scatter of `inp` (W·n, …) into `out` (n, …) on every rank.

    Native `reduce_scatter_single` (torch ≥ 2.13; `reduce_scatter_tensor` before). Some gloo builds lack
    reduce-scatter: there (or with native=False) it is the documented equivalent, an all_reduce of the whole input
    and this rank's slice of it (twice the traffic, synchronous)."""
    if native:
        fn = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor
        try:
            return fn(out, inp, op=dist.ReduceOp.SUM, async_op=async_op)
        except (RuntimeError, NotImplementedError) as exc:
            if dist.get_backend() != "gloo":
                raise
            _FALLBACK["reduce_scatter"] = f"{type(exc).__name__}: {exc}"
    dist.all_reduce(inp, op=dist.ReduceOp.SUM)
    out.copy_(inp.chunk(dist.get_world_size())[dist.get_rank()])
    return None


_FALLBACK: dict[str, str] = {}
"""Collectives that fell back to all_reduce + slice in this process (gloo only), with the error that caused it."""


def _all_gather(out: Tensor, inp: Tensor, *, async_op: bool) -> Any:
    fn = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
    return fn(out, inp, async_op=async_op)


@dataclass
class _Bank:
    """Same-shape matrices of one param group: contiguous gradient / update banks and this rank's momentum shard."""

    params: list[Tensor]
    group_index: int  # into optimizer.param_groups (load_state_dict replaces the group dicts)
    rows: int  # padded_B / world: matrices per rank
    grads: Tensor  # (padded_B, r, c) gradient bank, the reduce-scatter input
    shard: Tensor  # (rows, r, c) this rank's summed (then averaged) gradients
    momentum: Tensor  # (rows, r, c) momentum of this rank's matrices
    updates: Tensor  # (padded_B, r, c) all-gathered orthogonalised updates
    scale: float  # max(1, r/c)^½
    handle: Any = None
    reduced: bool = False
    active: list[bool] = field(default_factory=list)  # per param: had a gradient this step

    @property
    def count(self) -> int:
        return len(self.params)


class ParallelMuon(Muon):
    """Muon with the Parallel Muon distribution (module docstring). Same arguments and update as `Muon`; a world of
    one runs the same banked, batched code without communication.

    Call order per step: backward → `launch_reduce_scatters()` (optional; `step` launches them if not) →
    [`grad_sq_norm` / `scale_grads` for clipping] → `step()`. Matrix gradients must NOT be all-reduced beforehand
    (it would be correct, only wasted traffic): `pgolf.train.optim.reduce_gradients` averages everything else."""

    shards_gradients = True
    """The training loop's gradient phase (pgolf.train.optim) asks for this marker, not for the class: a
    configuration that never builds a ParallelMuon (train.muon_impl="round_robin") leaves this module out of its
    single-file script."""

    def __init__(self, params: Iterable[Tensor] | Iterable[dict], lr: float, momentum: float = 0.95,
                 nesterov: bool = True, backend_steps: int = 5, coeffs: str = "classic",
                 row_normalize: bool = False, weight_decay: float = 0.0, native_reduce_scatter: bool = True,
                 ns_dtype: str | None = None) -> None:
        super().__init__(params, lr=lr, momentum=momentum, nesterov=nesterov, backend_steps=backend_steps,
                         coeffs=coeffs, row_normalize=row_normalize, weight_decay=weight_decay, ns_dtype=ns_dtype)
        self._banks: list[_Bank] | None = None
        self._world: tuple[int, int] = (0, 1)
        self._native_rs = native_reduce_scatter
        self._launched = False

    # ---- banks ------------------------------------------------------------------------------------------------------

    def _build(self) -> list[_Bank]:
        rank, ws = self._world = world()
        banks: list[_Bank] = []
        for gi, group in enumerate(self.param_groups):
            by_shape: dict[tuple, list[Tensor]] = {}
            for p in group["params"]:
                by_shape.setdefault((tuple(p.shape), p.dtype, p.device), []).append(p)
            for (shape, dtype, device), ps in by_shape.items():
                rows = -(-len(ps) // ws)  # ceil
                update_dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
                grads = torch.zeros(rows * ws, *shape, dtype=dtype, device=device)
                banks.append(_Bank(
                    params=ps, group_index=gi, rows=rows, grads=grads,
                    shard=grads if ws == 1 else torch.zeros(rows, *shape, dtype=dtype, device=device),
                    momentum=torch.zeros(rows, *shape, dtype=dtype, device=device),
                    updates=torch.zeros(rows * ws, *shape, dtype=update_dtype, device=device),
                    scale=max(1.0, shape[-2] / shape[-1]) ** 0.5,
                ))
        banks.sort(key=lambda b: -b.grads.numel())  # biggest reduce-scatter first, as the record
        self._banks = banks
        self._adopt_loaded_state()
        return banks

    def banks(self) -> list[_Bank]:
        if self._banks is None or self._world != world():
            self._build()
        return self._banks  # type: ignore[return-value]

    def param_ids(self) -> set[int]:
        return {id(p) for group in self.param_groups for p in group["params"]}

    def _owned(self, bank: _Bank) -> slice:
        """Rows of the bank (real matrices, padding excluded) whose momentum this rank holds."""
        lo = self._world[0] * bank.rows
        return slice(min(lo, bank.count), min(lo + bank.rows, bank.count))

    # ---- phase 1: reduce-scatter ------------------------------------------------------------------------------------

    @torch.no_grad()
    def launch_reduce_scatters(self) -> None:
        """Copy every gradient into its bank and start the (asynchronous) reduce-scatters. Call after backward."""
        _, ws = world()
        self._launched = True
        for bank in self.banks():
            bank.active = [p.grad is not None for p in bank.params]
            if not any(bank.active):
                bank.handle, bank.reduced = None, True
                continue
            rows = bank.grads.unbind(0)
            if all(bank.active):  # one foreach copy per bank rather than one kernel per matrix
                torch._foreach_copy_(list(rows[:bank.count]), [p.grad for p in bank.params])
            else:
                for k, p in enumerate(bank.params):
                    if p.grad is None:
                        rows[k].zero_()
                    else:
                        rows[k].copy_(p.grad)
            bank.grads[bank.count:].zero_()
            bank.reduced = False
            if ws > 1:
                bank.handle = _reduce_scatter(bank.shard, bank.grads, async_op=True, native=self._native_rs)

    def _finish_reduce(self, bank: _Bank) -> None:
        if bank.reduced:
            return
        if bank.handle is not None:
            bank.handle.wait()
            bank.handle = None
        _, ws = self._world
        if ws > 1:
            bank.shard.div_(ws)  # SUM then divide, as average_gradients (gloo has no AVG on every build)
        bank.reduced = True

    # ---- clipping ---------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def grad_sq_norm(self) -> Tensor:
        """Σ‖g‖² of the averaged gradients of this rank's shard (fp32 scalar); sum it over ranks for the global norm."""
        total = torch.zeros((), dtype=torch.float32, device=self.banks()[0].grads.device)
        for bank in self.banks():
            self._finish_reduce(bank)
            if any(bank.active):
                total += bank.shard.float().square().sum()
        return total

    @torch.no_grad()
    def scale_grads(self, coef: Tensor | float) -> None:
        for bank in self.banks():
            self._finish_reduce(bank)
            bank.shard.mul_(coef)

    # ---- phase 2: momentum, Newton–Schulz, all-gather ---------------------------------------------------------------

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if not self._launched:  # used without the loop's reduce_gradients: start the reduce-scatters now
            self.launch_reduce_scatters()
        banks = self.banks()
        _, ws = self._world
        pending: tuple[_Bank, Any] | None = None
        for bank in banks:
            if not any(bank.active):
                continue
            self._finish_reduce(bank)
            group = self.param_groups[bank.group_index]
            u = self._shard_direction(bank, group)
            x = zeropower_via_newtonschulz(u, group["backend_steps"], group["coeffs"],  # (rows, r, c): batched
                                           newton_schulz_dtype(group.get("ns_dtype"), u.device))
            if ws > 1:
                handle = _all_gather(bank.updates, x.to(bank.updates.dtype).contiguous(), async_op=True)
                if pending is not None:
                    self._apply(*pending)
                pending = (bank, handle)
            else:
                bank.updates.copy_(x)
                self._apply(bank, None)
        if pending is not None:
            self._apply(*pending)
        for bank in banks:
            bank.active = []
        self._launched = False
        return loss

    def _shard_direction(self, bank: _Bank, group: dict) -> Tensor:
        """Muon's momentum update on this rank's rows (train/muon.py `_direction`, batched)."""
        g, buf = bank.shard, bank.momentum
        mu = group["momentum"]
        buf.mul_(mu).add_(g)
        u = g.add(buf, alpha=mu) if group["nesterov"] else buf
        if group["row_normalize"]:
            u = u / u.norm(dim=-1, keepdim=True).clamp_min(1e-7)
        return u

    def _apply(self, bank: _Bank, handle: Any) -> None:
        if handle is not None:
            handle.wait()
        group = self.param_groups[bank.group_index]
        lr, wd = group["lr"], group["weight_decay"]
        params = [p for p, on in zip(bank.params, bank.active) if on]
        updates = [bank.updates[k].to(p.dtype) for k, p in enumerate(bank.params) if bank.active[k]]
        if wd:
            torch._foreach_mul_(params, 1.0 - lr * wd)
        torch._foreach_add_(params, updates, alpha=-lr * bank.scale)

    # ---- checkpoints ------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def state_dict(self) -> dict[str, Any]:  # type: ignore[override]
        """Muon's layout (one full `momentum_buffer` per parameter). Collective under torch.distributed: every rank
        must call it (all ranks get the complete state)."""
        _, ws = self._world
        for bank in self.banks():
            if ws > 1:
                full = torch.zeros_like(bank.grads)
                _all_gather(full, bank.momentum, async_op=False)
            else:
                full = bank.momentum
            for k, p in enumerate(bank.params):
                self.state[p]["momentum_buffer"] = full[k].clone()
        sd = super().state_dict()
        self.state.clear()
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:  # type: ignore[override]
        super().load_state_dict(state_dict)  # fills self.state[p]["momentum_buffer"] (full) for every parameter
        if self._banks is not None:
            self._adopt_loaded_state()

    @torch.no_grad()
    def _adopt_loaded_state(self) -> None:
        """Move loaded full momentum buffers into this rank's shards (then drop them)."""
        if not self.state:
            return
        for bank in self._banks or []:
            owned = self._owned(bank)
            for k in range(owned.start, owned.stop):
                buf = self.state.get(bank.params[k], {}).get("momentum_buffer")
                if buf is not None:
                    bank.momentum[k - owned.start].copy_(buf)
        self.state.clear()


@torch.no_grad()
def clip_sharded(params: Sequence[Tensor], sharded: Sequence[ParallelMuon], max_norm: float) -> Tensor:
    """Global-norm clip of the averaged gradients when Parallel Muon holds its matrices' gradients as shards
    (`pgolf.train.optim.clip_gradients`): the shards contribute Σ‖g‖² summed over ranks, as
    `torch.nn.utils.clip_grad_norm_` in one process would see. Returns the total norm (before clipping)."""
    banked = set().union(*(opt.param_ids() for opt in sharded))
    others = [p.grad for p in params if id(p) not in banked and p.grad is not None]
    sq = sum((opt.grad_sq_norm() for opt in sharded), torch.zeros(()))
    device = others[0].device if others else sharded[0].banks()[0].grads.device
    sq = sq.to(device)
    if world()[1] > 1:
        dist.all_reduce(sq, op=dist.ReduceOp.SUM)
    replicated = sum((g.float().square().sum() for g in others), torch.zeros((), device=device))
    total = (replicated + sq).sqrt()
    coef = (max_norm / (total + 1e-6)).clamp(max=1.0)
    if others:
        torch._foreach_mul_(others, coef)
    for opt in sharded:
        opt.scale_grads(coef)
    return total


# ---- communication volume --------------------------------------------------------------------------------------------


def communication_bytes(shapes: Sequence[Sequence[int]], world_size: int, *, cuda: bool = True,
                        grad_bytes: int = 4) -> dict[str, float]:
    """Bytes each rank sends per optimizer step for the Muon matrices, ring algorithms (NCCL / gloo).

    round_robin: all-reduce of the N fp32 gradients (train/distributed.py) + all-reduce of the flat update buffer
    (bf16 on CUDA, fp32 on CPU); each all-reduce sends 2·(W−1)/W of its buffer. parallel: reduce-scatter of the
    padded gradient banks + all-gather of the padded update banks; each sends (W−1)/W of its buffer."""
    w = world_size
    upd = 2 if cuda else 4
    n = sum(_numel(s) for s in shapes)
    by_shape: dict[tuple, int] = {}
    for s in shapes:
        by_shape[tuple(s)] = by_shape.get(tuple(s), 0) + 1
    padded = sum(-(-count // w) * w * _numel(s) for s, count in by_shape.items())
    ring = (w - 1) / w
    return {
        "matrix_params": n,
        "padded_params": padded,
        "round_robin_bytes": 2 * ring * n * (grad_bytes + upd),
        "parallel_bytes": ring * padded * (grad_bytes + upd),
    }


def _numel(shape: Sequence[int]) -> int:
    out = 1
    for d in shape:
        out *= int(d)
    return out
