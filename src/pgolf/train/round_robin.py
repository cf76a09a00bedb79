"""The baseline's distributed Muon (BASE `Muon.step` under torch.distributed, train.muon_impl = "round_robin"):
every rank holds every averaged gradient and momentum buffer, rank r orthogonalises the parameters with index
i % world == r, and one all_reduce(SUM) of a flat buffer hands every rank every update. Parallel Muon
(train/parallel_muon.py, "auto" under torchrun) replaces it; `Muon.step` imports this module only in a world of more
than one, so a configuration that never runs it leaves it out of its single-file script.

Run the tests: `pytest tests/train/test_parallel_muon.py -q` (round robin against one process and Parallel Muon).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.distributed as dist
from torch import Tensor



def shared_updates(params: list[Tensor], directions: dict[int, Tensor], orthogonalise: Callable[[Tensor], Tensor],
                   rank: int, world: int) -> dict[int, Tensor]:
    """Round-robin NS: rank r orthogonalises (`orthogonalise`, Muon's Newton–Schulz) the directions of params
    i % world == r; one all_reduce(SUM) shares the results.

    The flat buffer is bf16 on CUDA (what NS produces there; halves the traffic, as the baseline) and fp32 on CPU
    (gloo), so the shared updates are bit-identical to the ones a single process computes.
    """
    device = params[0].device
    flat = torch.zeros(sum(p.numel() for p in params), device=device,
                       dtype=torch.bfloat16 if device.type == "cuda" else torch.float32)
    offsets, off = [], 0
    for p in params:
        offsets.append(off)
        off += p.numel()
    for i, u in directions.items():
        if i % world == rank:
            x = orthogonalise(u)
            flat[offsets[i]:offsets[i] + x.numel()] = x.reshape(-1)
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    return {i: flat[offsets[i]:offsets[i] + params[i].numel()].view_as(params[i]) for i in directions}
