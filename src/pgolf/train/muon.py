"""Muon: momentum + Newton–Schulz orthogonalisation for the 2-D weight matrices (docs/techniques.md#muon).

Per parameter and step (BASE `Muon.step`, R0405+ additions marked):
    buf = μ·buf + g                           momentum buffer (μ read from the group every step → warmup)
    u   = g + μ·buf  (Nesterov)  or  buf
    u  /= ‖u_row‖₂                            MuonEq-R, only with row_normalize (PR #1217, R0405+)
    u   = NS(u)                               ≈ U Vᵀ of u = U S Vᵀ
    p  *= 1 − lr·wd                           decoupled weight decay (R0322+)
    p  -= lr · max(1, rows/cols)^½ · u

Under torch.distributed (world > 1) the Newton–Schulz work is shared as in the baseline (train/round_robin.py): rank
r orthogonalises the parameters with index i % world == r, writes them into one flat buffer and a single
all_reduce(SUM) hands every rank every update. Gradients must already be averaged across ranks (train/distributed.py
does it), so momentum buffers are identical everywhere; every rank keeps all of them, which makes rank 0's
state_dict a complete checkpoint.

Run the tests: `pytest tests/train/test_muon.py -q`.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.distributed as dist
from torch import Tensor

CLASSIC_COEFFS: tuple[float, float, float] = (3.4445, -4.7750, 2.0315)
"""Keller Jordan's quintic (a, b, c), used for all 5 steps (BASE…R0414). Maximises the slope at 0 at the price of
singular values that land in roughly [0.7, 1.1] rather than exactly 1."""

POLAR_EXPRESS_COEFFS: tuple[tuple[float, float, float], ...] = (
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
)
"""Polar Express (Amsel et al. 2025): one minimax-optimal (a, b, c) per step; PR #1344 → #1787, R0427 `_PE_COEFFS`.
The records iterate `for a, b, c in _PE_COEFFS[:steps]`, so asking them for more than 5 steps silently runs 5; pgolf
refuses more steps than tuples instead (`check_coeff_steps`), and runs exactly the record's iteration otherwise."""


def check_coeff_steps(coeffs: str, steps: int, field: str = "train.muon_backend_steps") -> None:
    """Raise ValueError unless `steps` Newton–Schulz iterations exist for the `coeffs` schedule."""
    if coeffs not in ("classic", "polar_express"):
        raise ValueError(f"unknown Newton–Schulz coeffs {coeffs!r}; choose 'classic' or 'polar_express'")
    if steps < 1:
        raise ValueError(f"{field}={steps} must be ≥ 1")
    if coeffs == "polar_express" and steps > len(POLAR_EXPRESS_COEFFS):
        raise ValueError(
            f"{field}={steps} but the Polar Express schedule has {len(POLAR_EXPRESS_COEFFS)} coefficient tuples "
            f"(R0427 `_PE_COEFFS`, which stops after them); use ≤ {len(POLAR_EXPRESS_COEFFS)} steps or "
            "muon_coeffs='classic'")


def _coeff_schedule(coeffs: str, steps: int) -> list[tuple[float, float, float]]:
    check_coeff_steps(coeffs, steps, field="steps")
    if coeffs == "classic":
        return [CLASSIC_COEFFS] * steps
    return list(POLAR_EXPRESS_COEFFS[:steps])


NS_DTYPES = ("auto", "bf16", "fp32")


def cpu_has_native_bf16() -> bool:
    """True where the CPU multiplies bf16 natively (AVX512-BF16 or AMX): there bf16 NS is ~4× faster than fp32."""
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


def newton_schulz_dtype(choice: str | None, device: torch.device) -> torch.dtype:
    """The Newton–Schulz dtype. None: bf16 on CUDA (every record), fp32 on CPU (tight, deterministic tests).
    "auto": bf16 on CUDA and on CPUs with native bf16 matmuls, else fp32. "bf16" / "fp32": as named."""
    if choice not in (None, *NS_DTYPES):
        raise ValueError(f"train.muon_ns_dtype={choice!r}; expected one of {', '.join(NS_DTYPES)}")
    if choice == "bf16" or (choice is not None and choice != "fp32" and device.type == "cpu" and cpu_has_native_bf16()):
        return torch.bfloat16
    if choice == "fp32":
        return torch.float32
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def zeropower_via_newtonschulz(G: Tensor, steps: int = 5, coeffs: str = "classic",
                               dtype: torch.dtype | None = None) -> Tensor:
    """Approximate the orthogonal polar factor U Vᵀ of G (..., m, n) with `steps` quintic Newton–Schulz iterations.

    `dtype` None: bf16 on CUDA, as every record does (tensor cores; NS is robust to the rounding), fp32 on CPU
    (bf16 matmuls are emulated on many CPUs, and fp32 keeps tests tight); `newton_schulz_dtype` picks bf16 on CPUs that have
    native bf16 (train.muon_ns_dtype = "auto"). Returns a tensor of G's dtype. Batched inputs are orthogonalised per
    matrix.
    """
    assert G.ndim >= 2, f"Newton–Schulz needs a matrix, got shape {tuple(G.shape)}"
    X = G.to(dtype or (torch.bfloat16 if G.is_cuda else torch.float32))
    X = X / (X.norm(dim=(-2, -1), keepdim=True) + 1e-7)  # spectral norm ≤ Frobenius norm = 1
    transposed = G.size(-2) > G.size(-1)
    if transposed:  # iterate on the wide side: A = X Xᵀ is then the smaller Gram matrix
        X = X.mT
        if X.dtype == torch.bfloat16 and not X.is_cuda:
            X = X.contiguous()  # CPU bf16 GEMMs on the transposed view: 1.5× slower (1,536 × 512: 60 → 39 ms)
    # CPU bf16: the affine terms in the GEMM epilogues (addmm/baddbmm, torch.optim.Muon's form), two fewer passes
    # per product. Elsewhere the records' expressions, op for op.
    epilogue = X.dtype == torch.bfloat16 and not X.is_cuda and X.ndim <= 3
    for a, b, c in _coeff_schedule(coeffs, steps):
        A = X @ X.mT  # (..., m, m)
        if epilogue:
            mm = torch.addmm if X.ndim == 2 else torch.baddbmm
            X = mm(X, mm(A, A, A, beta=b, alpha=c), X, beta=a)
            continue
        B = b * A + c * (A @ A)
        X = a * X + B @ X  # (..., m, n)
    if transposed:
        X = X.mT
    return X.to(G.dtype)


class Muon(torch.optim.Optimizer):
    """Muon for matrix parameters; see the module docstring for the update. `lr`/`momentum` are read from the param
    group at every step, so a loop may set `group["lr"]` and `group["momentum"]` for schedules and warmup."""

    def __init__(self, params: Iterable[Tensor] | Iterable[dict], lr: float, momentum: float = 0.95,
                 nesterov: bool = True, backend_steps: int = 5, coeffs: str = "classic",
                 row_normalize: bool = False, weight_decay: float = 0.0, ns_dtype: str | None = None) -> None:
        if lr < 0 or not 0.0 <= momentum < 1.0 or weight_decay < 0:
            raise ValueError(f"Muon needs lr ≥ 0, 0 ≤ momentum < 1, weight_decay ≥ 0 "
                             f"(got lr={lr}, momentum={momentum}, weight_decay={weight_decay})")
        check_coeff_steps(coeffs, backend_steps)  # a bad name or too many Polar Express steps fails at construction
        defaults = dict(lr=lr, momentum=momentum, nesterov=nesterov, backend_steps=backend_steps, coeffs=coeffs,
                        row_normalize=row_normalize, weight_decay=weight_decay, ns_dtype=ns_dtype)
        newton_schulz_dtype(ns_dtype, torch.device("cpu"))  # a bad name fails at construction
        super().__init__(params, defaults)
        for group in self.param_groups:
            for p in group["params"]:
                if p.ndim < 2:
                    raise ValueError(f"Muon only takes matrices (ndim ≥ 2); got a parameter of shape {tuple(p.shape)}"
                                     " — give vectors and scalars to AdamW")

    def _direction(self, p: Tensor, group: dict) -> Tensor:
        """Momentum update (on every rank) and the pre-orthogonalisation direction u of one parameter."""
        g = p.grad
        state = self.state[p]
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros_like(g)
        buf = state["momentum_buffer"]
        mu = group["momentum"]
        buf.mul_(mu).add_(g)
        u = g.add(buf, alpha=mu) if group["nesterov"] else buf
        if group["row_normalize"]:  # MuonEq-R: equalise row norms before NS (PR #1217)
            u = u / u.norm(dim=-1, keepdim=True).clamp_min(1e-7)
        return u

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
        for group in self.param_groups:
            params = group["params"]
            if not params:
                continue
            directions = {i: self._direction(p, group) for i, p in enumerate(params) if p.grad is not None}
            orthogonalise = lambda u: zeropower_via_newtonschulz(  # noqa: E731
                u, group["backend_steps"], group["coeffs"], newton_schulz_dtype(group.get("ns_dtype"), u.device))
            if distributed:  # the baseline's round robin (train.muon_impl="round_robin"; "auto" there is Parallel Muon)
                from pgolf.train.round_robin import shared_updates

                updates = shared_updates(params, directions, orthogonalise, rank, world)
            else:
                updates = {i: orthogonalise(u) for i, u in directions.items()}
            lr, wd = group["lr"], group["weight_decay"]
            for i, u in updates.items():
                p = params[i]
                scale = max(1.0, p.size(-2) / p.size(-1)) ** 0.5  # (rows, cols) of each matrix
                if wd:
                    p.mul_(1.0 - lr * wd)
                p.add_(u.to(p.dtype), alpha=-lr * scale)
        return loss
