"""Parallel Muon (PR #399): 1 process = Muon; 2 and 4 gloo processes = single-process Muon = pgolf's round-robin
distributed Muon, with global-norm clipping; the reduce-scatter fallback; checkpoints in Muon's layout; and the
communication volume formula against the bytes the collectives actually carry.

    python -m pytest tests/train/test_parallel_muon.py -q
"""

from __future__ import annotations

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from pgolf.train import parallel_muon as pmod
from pgolf.train.distributed import average_gradients
from pgolf.train.muon import Muon
from pgolf.train.optim import clip_gradients, reduce_gradients
from pgolf.train.parallel_muon import ParallelMuon, communication_bytes

# same-shape groups of 3, 2, 1, 5 (5 pads to 6 / 8 rows at 2 / 4 ranks) and a 3-D parameter
SHAPES = [(16, 32)] * 3 + [(48, 16)] * 2 + [(24, 24)] + [(32, 8)] * 5 + [(2, 8, 12)]
STEPS = 3
KW = dict(lr=0.03, momentum=0.9, nesterov=True, coeffs="polar_express", row_normalize=True, weight_decay=0.1)


def _randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _problem():
    params = [_randn(*s, seed=100 + i) for i, s in enumerate(SHAPES)]
    grads = [[_randn(*s, seed=1000 + 50 * k + i) for i, s in enumerate(SHAPES)] for k in range(STEPS)]
    vec = [_randn(7, seed=3000 + k) for k in range(STEPS)]  # an AdamW-side gradient, only clipped
    return params, grads, vec


def _rank_grad(g: torch.Tensor, k: int, i: int, rank: int, ws: int) -> torch.Tensor:
    """Rank r's gradient: g + (r − (W−1)/2)·δ, so the average over ranks is g (to rounding)."""
    return g + (rank - (ws - 1) / 2) * _randn(*g.shape, seed=5000 + 50 * k + i)


def _run(opt_cls, *, rank=0, ws=1, clip=0.0, dist_grads=False, **extra):
    params, grads, vec = _problem()
    ps = [torch.nn.Parameter(p.clone()) for p in params]
    v = torch.nn.Parameter(torch.zeros(7))
    opt = opt_cls(ps, **KW, **extra)
    clipped = []
    for k in range(STEPS):
        for i, (p, g) in enumerate(zip(ps, grads[k])):
            p.grad = _rank_grad(g, k, i, rank, ws) if dist_grads else g.clone()
        v.grad = vec[k].clone()
        if opt_cls is ParallelMuon:
            reduce_gradients([*ps, v], [opt])
            if clip:
                clip_gradients([*ps, v], [opt], clip)
        else:
            if dist_grads:
                average_gradients([*ps, v])
            if clip:
                torch.nn.utils.clip_grad_norm_([*ps, v], clip)
        clipped.append(v.grad.clone())
        opt.step()
        opt.zero_grad(set_to_none=True)
    return [p.detach().clone() for p in ps], clipped, opt


def _assert_all_close(a, b, atol):
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=atol)


def test_single_process_equals_muon():
    ref, _, _ = _run(Muon)
    got, _, _ = _run(ParallelMuon)
    _assert_all_close(got, ref, 1e-6)


def test_single_process_clipping_equals_clip_grad_norm():
    ref, ref_v, _ = _run(Muon, clip=2.0)
    got, got_v, _ = _run(ParallelMuon, clip=2.0)
    _assert_all_close(got, ref, 1e-6)
    _assert_all_close(got_v, ref_v, 1e-6)
    unclipped, _, _ = _run(Muon)
    assert max((a - b).abs().max() for a, b in zip(ref, unclipped)) > 1e-4  # the clip did bite


def test_a_matrix_without_gradient_is_left_alone():
    """As Muon: no decay, no update for a parameter whose .grad is None; its bank-mates step normally."""
    params, grads, _ = _problem()
    outs = []
    for cls in (Muon, ParallelMuon):
        ps = [torch.nn.Parameter(p.clone()) for p in params]
        opt = cls(ps, **KW)
        for i, (p, g) in enumerate(zip(ps, grads[0])):
            p.grad = None if i == 1 else g.clone()  # index 1 shares its (16, 32) bank with 0 and 2
        opt.step()
        outs.append([p.detach().clone() for p in ps])
    assert torch.equal(outs[1][1], params[1])
    _assert_all_close(outs[1], outs[0], 1e-6)


def test_state_dict_is_muons_layout_and_resumes():
    """ParallelMuon's checkpoint loads into Muon (and back) and the continued run equals an uninterrupted one."""
    params, grads, _ = _problem()
    ps = [torch.nn.Parameter(p.clone()) for p in params]
    opt = ParallelMuon(ps, **KW)
    for p, g in zip(ps, grads[0]):
        p.grad = g.clone()
    opt.step()
    sd = opt.state_dict()
    assert set(sd["state"]) == set(range(len(SHAPES)))
    assert all(sd["state"][i]["momentum_buffer"].shape == SHAPES[i] for i in range(len(SHAPES)))
    qs = [torch.nn.Parameter(p.detach().clone()) for p in ps]
    muon = Muon(qs, **KW)
    muon.load_state_dict(sd)
    back = ParallelMuon(ps, **KW)
    back.load_state_dict(muon.state_dict())
    for k in (1, 2):
        for p, q, g in zip(ps, qs, grads[k]):
            p.grad, q.grad = g.clone(), g.clone()
        back.step()
        muon.step()
    ref, _, _ = _run(Muon)
    _assert_all_close([p.detach() for p in ps], ref, 1e-6)
    _assert_all_close([q.detach() for q in qs], ref, 1e-6)


def test_communication_formula():
    c = communication_bytes([(4, 8)] * 3 + [(2, 2)], world_size=2, cuda=True)
    assert c["matrix_params"] == 3 * 32 + 4 and c["padded_params"] == 4 * 32 + 2 * 4
    assert c["round_robin_bytes"] == pytest.approx(2 * 0.5 * 100 * (4 + 2))
    assert c["parallel_bytes"] == pytest.approx(0.5 * 136 * (4 + 2))


# ---- multi-process gloo --------------------------------------------------------------------------------------------


class _Counter:
    """Wraps the collectives and records the bytes of each call's buffer."""

    def __init__(self, monkey):
        self.calls: list[tuple[str, int]] = []
        for name in ("all_reduce", "reduce_scatter_single", "all_gather_single", "reduce_scatter_tensor",
                     "all_gather_into_tensor"):
            fn = getattr(dist, name, None)
            if fn is not None:
                monkey.append((name, fn))
                setattr(dist, name, self._wrap(name, fn))

    def _wrap(self, name, fn):
        def wrapped(*args, **kwargs):
            big = max((a for a in args if isinstance(a, torch.Tensor)), key=lambda t: t.numel())
            self.calls.append((name, big.numel() * big.element_size()))
            return fn(*args, **kwargs)
        return wrapped


def _worker(rank: int, ws: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=ws)
    try:
        res = {}
        res["rr"], res["rr_v"], _ = _run(Muon, rank=rank, ws=ws, clip=2.0, dist_grads=True)
        res["pm"], res["pm_v"], opt = _run(ParallelMuon, rank=rank, ws=ws, clip=2.0, dist_grads=True)
        res["state"] = opt.state_dict()  # collective: every rank
        if ws == 2:  # the all_reduce + slice fallback (some gloo builds have no reduce-scatter)
            res["fb"], _, _ = _run(ParallelMuon, rank=rank, ws=ws, clip=2.0, dist_grads=True,
                                   native_reduce_scatter=False)
        saved: list = []
        counter = _Counter(saved)
        try:
            _run_one_step_each(rank, ws)
        finally:
            for name, fn in saved:
                setattr(dist, name, fn)
        res["calls"] = counter.calls
        res["fallback"] = dict(pmod._FALLBACK)
        torch.save(res, f"{out}.{rank}")
        dist.barrier()  # no rank tears gloo down early (that can SIGABRT the other)
    finally:
        dist.destroy_process_group()


def _run_one_step_each(rank: int, ws: int) -> None:
    """One unclipped step of each scheme with the counter installed; markers separate them in the log."""
    params, grads, _ = _problem()
    for cls in (Muon, ParallelMuon):
        ps = [torch.nn.Parameter(p.clone()) for p in params]
        opt = cls(ps, **KW)
        for p, g in zip(ps, grads[0]):
            p.grad = g.clone()
        dist.barrier()  # not counted: barrier is not wrapped
        if cls is Muon:
            average_gradients(ps)
        else:
            reduce_gradients(ps, [opt])
        opt.step()
        dist.all_reduce(torch.zeros(1))  # marker: 4 bytes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("ws", [2, 4])
def test_gloo_parallel_muon_equals_single_process_and_round_robin(tmp_path, ws):
    single, single_v, single_opt = _run(Muon, clip=2.0)
    single_state = single_opt.state_dict()["state"]
    out = str(tmp_path / "res")
    mp.spawn(_worker, args=(ws, _free_port(), out), nprocs=ws, join=True)
    n = sum(torch.Size(s).numel() for s in SHAPES)
    c = communication_bytes(SHAPES, ws, cuda=False)
    for rank in range(ws):
        res = torch.load(f"{out}.{rank}")
        _assert_all_close(res["pm"], single, 1e-5)  # = one process with the averaged gradients
        _assert_all_close(res["pm"], res["rr"], 1e-5)  # = pgolf's round-robin distributed Muon
        if ws == 2:
            _assert_all_close(res["fb"], res["pm"], 1e-6)  # all_reduce + slice fallback = native reduce-scatter
        _assert_all_close(res["pm_v"], single_v, 1e-5)  # the clip used the global norm of averaged gradients
        assert not res["fallback"]  # this gloo build has a native reduce-scatter
        assert set(res["state"]["state"]) == set(single_state) == set(range(len(SHAPES)))
        for i, st in single_state.items():  # the gathered momentum shards = one process's momentum buffers
            torch.testing.assert_close(res["state"]["state"][i]["momentum_buffer"], st["momentum_buffer"],
                                       rtol=0, atol=1e-5)
        # bytes the collectives carried: round-robin = N fp32 grads + N fp32 updates, all-reduced;
        # parallel = padded banks reduce-scattered then all-gathered (fp32 on CPU)
        calls = res["calls"]
        marks = [i for i, (_, b) in enumerate(calls) if b == 4]
        rr, pm = calls[:marks[0]], calls[marks[0] + 1:marks[1]]
        assert {name for name, _ in rr} == {"all_reduce"} and sum(b for _, b in rr) == 2 * 4 * n
        assert sum(b for _, b in pm) == 2 * 4 * c["padded_params"]
        assert not any(name == "all_reduce" for name, _ in pm)
    # every rank ends with the same weights and the same complete momentum state
    r0 = torch.load(f"{out}.0")
    for rank in range(1, ws):
        other = torch.load(f"{out}.{rank}")
        _assert_all_close(other["pm"], r0["pm"], 0)
        for i in r0["state"]["state"]:
            mine, theirs = other["state"]["state"][i], r0["state"]["state"][i]
            assert torch.equal(mine["momentum_buffer"], theirs["momentum_buffer"])


def test_train_config_selects_the_implementation():
    from pgolf.train.config import TrainConfig
    from pgolf.train.optim import build_optimizers

    class _Two(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = torch.nn.Parameter(torch.zeros(4, 4)), torch.nn.Parameter(torch.zeros(4))

        def optimizer_groups(self):
            return {"matrix": [self.a], "embed": [], "head": [], "scalar": [self.b]}

    kinds = {impl: type(build_optimizers(_Two(), TrainConfig(muon_impl=impl))[0])
             for impl in ("auto", "round_robin", "parallel")}
    assert kinds == {"auto": Muon, "round_robin": Muon, "parallel": ParallelMuon}  # auto: parallel only if world > 1
    with pytest.raises(ValueError, match="train.muon_impl='ddp'"):
        TrainConfig(muon_impl="ddp")


# One fresh interpreter per configuration: the module TrainConfig.modules_not_run names is blocked in sys.modules
# (`import m` raises ImportError), as the single-file script of that configuration leaves it out.
_BLOCKED_CHILD = r"""
import json, sys
impl, blocked = sys.argv[1], json.loads(sys.argv[2])
sys.modules.update({m: None for m in blocked})
import torch
from pgolf.train.config import TrainConfig
from pgolf.train.optim import build_optimizers, clip_gradients, reduce_gradients, step_order

class Two(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a, self.c = torch.nn.Parameter(torch.randn(8, 4)), torch.nn.Parameter(torch.randn(8, 4))
        self.b = torch.nn.Parameter(torch.randn(4))

    def optimizer_groups(self):
        return {"matrix": [self.a, self.c], "embed": [], "head": [], "scalar": [self.b]}

model = Two()
opts = build_optimizers(model, TrainConfig(muon_impl=impl, muon_ns_dtype="fp32"))
params = list(model.parameters())
for step in range(3):
    loss = ((model.a @ model.b).square().sum() + (model.c @ model.b).sin().sum())
    loss.backward()
    reduce_gradients(params, opts)
    clip_gradients(params, opts, 0.5)
    for o in step_order(opts):
        o.step()
        o.zero_grad(set_to_none=True)
print(json.dumps([type(opts[0]).__name__, [p.detach().double().sum().item() for p in params]]))
"""


def test_training_runs_with_the_muon_module_it_does_not_run_unimportable():
    import json
    import subprocess
    import sys
    from pathlib import Path

    from pgolf.train.config import TrainConfig

    root = Path(__file__).resolve().parents[2]
    runs = {}
    for impl in ("auto", "round_robin", "parallel"):
        blocked = list(TrainConfig(muon_impl=impl).modules_not_run())
        assert blocked == (["pgolf.train.parallel_muon"] if impl == "round_robin" else ["pgolf.train.round_robin"])
        p = subprocess.run([sys.executable, "-c", _BLOCKED_CHILD, impl, json.dumps(blocked)], cwd=root,
                           capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr
        runs[impl] = json.loads(p.stdout.strip().splitlines()[-1])
    assert [runs[i][0] for i in runs] == ["Muon", "Muon", "ParallelMuon"]  # a world of one: auto is Muon
    assert runs["auto"][1] == runs["round_robin"][1]  # the same optimizer, bit for bit
    assert runs["parallel"][1] == pytest.approx(runs["auto"][1], rel=1e-5)  # batched NS: float rounding
