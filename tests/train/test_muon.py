"""Muon and Newton–Schulz: singular-value bands, batching, the update rule by hand, MuonEq-R, decoupled weight
decay, and 2 processes (shared orthogonalisation over gloo) = 1 process.

    python -m pytest tests/train/test_muon.py -q
"""

from __future__ import annotations

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from pgolf.train.muon import CLASSIC_COEFFS, POLAR_EXPRESS_COEFFS, Muon, zeropower_via_newtonschulz


def _svals(x: torch.Tensor) -> torch.Tensor:
    return torch.linalg.svdvals(x.double())


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_coefficient_tables():
    assert CLASSIC_COEFFS == (3.4445, -4.7750, 2.0315)
    assert len(POLAR_EXPRESS_COEFFS) == 5 and POLAR_EXPRESS_COEFFS[0][0] == pytest.approx(8.156554524902461)
    with pytest.raises(ValueError, match="classic"):
        zeropower_via_newtonschulz(_randn(4, 8), coeffs="nope")


@pytest.mark.parametrize("shape", [(64, 128), (128, 64)])
def test_singular_values_in_band(shape):
    """5 classic steps put every singular value of a Gaussian matrix in ≈[0.68, 1.13]; Polar Express in
    ≈[0.86, 1.14], a tighter band around 1 (measured worst |σ−1|: classic ≈ 0.32, Polar Express ≈ 0.14)."""
    G = _randn(*shape, seed=1)
    classic = _svals(zeropower_via_newtonschulz(G, 5, "classic"))
    polar = _svals(zeropower_via_newtonschulz(G, 5, "polar_express"))
    assert classic.min() > 0.65 and classic.max() < 1.16
    assert polar.min() > 0.84 and polar.max() < 1.16
    assert (polar - 1).abs().max() < 0.6 * (classic - 1).abs().max()
    # the input's singular values spread over a ~5× range; after NS they are all near 1
    assert _svals(G).max() / _svals(G).min() > 4


def test_orthogonalisation_keeps_singular_vectors_and_shape():
    G = _randn(64, 128, seed=2)
    X = zeropower_via_newtonschulz(G)
    assert X.shape == G.shape and X.dtype == G.dtype
    U, _, Vh = torch.linalg.svd(G.double(), full_matrices=False)
    # X ≈ U diag(σ') Vᵀ: UᵀXV is diagonal
    core = U.T @ X.double() @ Vh.T
    off = core - torch.diag(torch.diagonal(core))
    assert off.abs().max() < 1e-4


def _record_polar_express(G: torch.Tensor, steps: int) -> torch.Tensor:
    """R0427's iteration as written there (`for a, b, c in _PE_COEFFS[:steps]`), in fp32 as pgolf runs it on CPU."""
    X = G.float()
    X = X / (X.norm(dim=(-2, -1), keepdim=True) + 1e-7)
    transposed = G.size(-2) > G.size(-1)
    if transposed:
        X = X.mT
    for a, b, c in POLAR_EXPRESS_COEFFS[:steps]:
        A = X @ X.mT
        B = b * A + c * (A @ A)
        X = a * X + B @ X
    return X.mT if transposed else X


@pytest.mark.parametrize("shape", [(32, 48), (48, 32), (3, 16, 40)])
@pytest.mark.parametrize("steps", [1, 3, 5])
def test_polar_express_is_bit_identical_to_the_record_formula(shape, steps):
    G = _randn(*shape, seed=3)
    assert torch.equal(zeropower_via_newtonschulz(G, steps, "polar_express"), _record_polar_express(G, steps))


def test_polar_express_refuses_more_steps_than_tuples():
    """R0427 stops after its 5 tuples; repeating the last one (pgolf before) differed by up to 0.078. Refuse."""
    with pytest.raises(ValueError, match=r"muon_backend_steps=7 .* 5 coefficient tuples"):
        Muon([torch.nn.Parameter(torch.zeros(4, 4))], lr=0.1, backend_steps=7, coeffs="polar_express")
    with pytest.raises(ValueError, match="5 coefficient tuples"):
        zeropower_via_newtonschulz(_randn(8, 8), 6, "polar_express")
    with pytest.raises(ValueError, match="≥ 1"):
        zeropower_via_newtonschulz(_randn(8, 8), 0, "classic")
    zeropower_via_newtonschulz(_randn(8, 8), 7, "classic")  # the classic quintic has no such limit
    from pgolf.train.config import TrainConfig
    with pytest.raises(ValueError, match="train.muon_backend_steps=6"):
        TrainConfig(muon_backend_steps=6, muon_coeffs="polar_express")


@pytest.mark.parametrize("coeffs", ["classic", "polar_express"])
def test_batched_equals_per_matrix(coeffs):
    G = _randn(3, 24, 40, seed=4)
    batched = zeropower_via_newtonschulz(G, 5, coeffs)
    for k in range(3):
        torch.testing.assert_close(batched[k], zeropower_via_newtonschulz(G[k], 5, coeffs), rtol=1e-5, atol=1e-6)
    tall = zeropower_via_newtonschulz(G.mT, 5, coeffs)  # rows > cols: transposed internally
    torch.testing.assert_close(tall, batched.mT, rtol=1e-5, atol=1e-6)


def test_one_step_equals_hand_computation():
    """momentum=0, no Nesterov: p ← p − lr·max(1, rows/cols)^½·NS(g)."""
    p0, g = _randn(96, 32, seed=5), _randn(96, 32, seed=6)
    p = torch.nn.Parameter(p0.clone())
    p.grad = g.clone()
    Muon([p], lr=0.1, momentum=0.0, nesterov=False).step()
    expected = p0 - 0.1 * (96 / 32) ** 0.5 * zeropower_via_newtonschulz(g)
    torch.testing.assert_close(p.detach(), expected, rtol=0, atol=1e-6)


def test_nesterov_momentum_two_steps_by_hand():
    p0, g1, g2 = _randn(16, 24, seed=7), _randn(16, 24, seed=8), _randn(16, 24, seed=9)
    p = torch.nn.Parameter(p0.clone())
    opt = Muon([p], lr=0.05, momentum=0.9, nesterov=True)
    ns = zeropower_via_newtonschulz
    p.grad = g1.clone()
    opt.step()
    opt.param_groups[0]["momentum"] = 0.5  # momentum is read from the group each step (warmup)
    p.grad = g2.clone()
    opt.step()
    buf1 = g1
    buf2 = 0.5 * buf1 + g2
    expected = p0 - 0.05 * ns(g1 + 0.9 * buf1) - 0.05 * ns(g2 + 0.5 * buf2)
    torch.testing.assert_close(p.detach(), expected, rtol=0, atol=1e-6)


def _one_step(g: torch.Tensor, **kw) -> torch.Tensor:
    p = torch.nn.Parameter(torch.zeros_like(g))
    p.grad = g.clone()
    Muon([p], lr=1.0, momentum=0.0, nesterov=False, **kw).step()
    return -p.detach()


def test_row_normalize_changes_update_and_is_row_scale_invariant():
    g = _randn(32, 64, seed=10)
    row_scale = torch.logspace(-2, 2, 32).unsqueeze(1)  # (32, 1) positive, 4 decades
    plain = _one_step(g * row_scale)
    eq = _one_step(g * row_scale, row_normalize=True)
    assert (plain - eq).abs().max() > 0.05
    torch.testing.assert_close(eq, _one_step(g, row_normalize=True), rtol=0, atol=1e-5)
    assert (plain - _one_step(g)).abs().max() > 0.05  # without MuonEq-R, row scales do change the update


def test_weight_decay_is_decoupled():
    """p ← p·(1 − lr·wd) − lr·scale·NS(g): the gradient direction does not see the weights."""
    p0, g = _randn(20, 20, seed=11), _randn(20, 20, seed=12)
    lr, wd = 0.1, 0.5
    p = torch.nn.Parameter(p0.clone())
    p.grad = g.clone()
    Muon([p], lr=lr, momentum=0.0, nesterov=False, weight_decay=wd).step()
    torch.testing.assert_close(p.detach(), p0 * (1 - lr * wd) - lr * zeropower_via_newtonschulz(g), rtol=0, atol=1e-6)
    q = torch.nn.Parameter(p0.clone())  # a zero gradient leaves pure shrinkage
    q.grad = torch.zeros_like(p0)
    Muon([q], lr=lr, momentum=0.0, weight_decay=wd).step()
    torch.testing.assert_close(q.detach(), p0 * (1 - lr * wd))


def test_rejects_vectors():
    with pytest.raises(ValueError, match="AdamW"):
        Muon([torch.nn.Parameter(torch.zeros(8))], lr=0.1)


# ---- distributed: 2 gloo processes == 1 process --------------------------------------------------------------------

SHAPES = [(16, 32), (48, 16), (24, 24), (2, 8, 12), (32, 8)]  # odd count: rank 0 owns 3, rank 1 owns 2


def _problem() -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
    params = [_randn(*s, seed=100 + i) for i, s in enumerate(SHAPES)]
    grads = [[_randn(*s, seed=200 + 10 * k + i) for i, s in enumerate(SHAPES)] for k in range(3)]
    return params, grads


def _run_muon(params: list[torch.Tensor], grads: list[list[torch.Tensor]]) -> list[torch.Tensor]:
    ps = [torch.nn.Parameter(p.clone()) for p in params]
    opt = Muon(ps, lr=0.03, momentum=0.9, nesterov=True, coeffs="polar_express", row_normalize=True,
               weight_decay=0.1)
    for step_grads in grads:
        for p, g in zip(ps, step_grads):
            p.grad = g.clone()
        opt.step()
    return [p.detach().clone() for p in ps]


def _worker(rank: int, world: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        result = _run_muon(*_problem())
        torch.save(result, f"{out}.{rank}")
        dist.barrier()  # no rank tears gloo down early (that can SIGABRT the other)
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_equal_one(tmp_path):
    single = _run_muon(*_problem())
    out = str(tmp_path / "result")
    mp.spawn(_worker, args=(2, _free_port(), out), nprocs=2, join=True)
    for rank in range(2):
        shared = torch.load(f"{out}.{rank}")
        for a, b in zip(shared, single):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_newton_schulz_dtype_choice_and_bf16_stays_close():
    from pgolf.train.muon import cpu_has_native_bf16, newton_schulz_dtype

    cpu = torch.device("cpu")
    assert newton_schulz_dtype(None, cpu) == torch.float32  # the library default: tight fp32 on CPU
    assert newton_schulz_dtype("fp32", cpu) == torch.float32 and newton_schulz_dtype("bf16", cpu) == torch.bfloat16
    assert newton_schulz_dtype("auto", cpu) == (torch.bfloat16 if cpu_has_native_bf16() else torch.float32)
    assert newton_schulz_dtype("auto", torch.device("cuda")) == torch.bfloat16
    with pytest.raises(ValueError, match="muon_ns_dtype"):
        newton_schulz_dtype("fp16", cpu)
    with pytest.raises(ValueError, match="muon_ns_dtype"):
        Muon([torch.nn.Parameter(torch.zeros(4, 4))], lr=0.1, ns_dtype="half")
    g = torch.randn(96, 160, generator=torch.Generator().manual_seed(0))
    x32 = zeropower_via_newtonschulz(g, 5, dtype=torch.float32)
    x16 = zeropower_via_newtonschulz(g, 5, dtype=torch.bfloat16)
    assert x16.dtype == torch.float32  # returned in G's dtype
    assert (x16 - x32).norm() / x32.norm() < 0.05  # bf16 NS (the records' precision): the same update to ~3 %
    assert not torch.equal(x16, x32)
    # a tall matrix iterates on a contiguous copy of its transpose on CPU in bf16: the same as the wide one's NS
    tall = zeropower_via_newtonschulz(g.mT, 5, dtype=torch.bfloat16)
    assert torch.equal(tall, zeropower_via_newtonschulz(g.mT.contiguous(), 5, dtype=torch.bfloat16))
    assert torch.equal(tall, x16.mT)


def test_cpu_bf16_newton_schulz_epilogue_form_matches_the_records_expressions():
    """On CPU in bf16 the NS step runs as addmm/baddbmm (b·A + c·A², a·X + B·X in the GEMM epilogue): the same
    iteration as the records' expressions within bf16 rounding, and a batch agrees with its matrices one by one."""
    from pgolf.train.muon import _coeff_schedule

    g = torch.randn(3, 96, 160, generator=torch.Generator().manual_seed(1))

    def records(G):  # the records' expressions, op for op, in bf16
        X = G.bfloat16()
        X = X / (X.norm(dim=(-2, -1), keepdim=True) + 1e-7)
        for a, b, c in _coeff_schedule("classic", 5):
            A = X @ X.mT
            B = b * A + c * (A @ A)
            X = a * X + B @ X
        return X.float()

    batched = zeropower_via_newtonschulz(g, 5, dtype=torch.bfloat16)
    for i in range(3):
        single = zeropower_via_newtonschulz(g[i], 5, dtype=torch.bfloat16)
        ref = records(g[i])
        assert not torch.equal(single, ref)  # the epilogue form really ran
        # bf16 NS amplifies rounding (~3 %, as bf16 against fp32 above): the two forms agree to that level
        assert (single - ref).norm() / ref.norm() < 0.05
        assert (batched[i] - single).norm() / single.norm() < 0.05
