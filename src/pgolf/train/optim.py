"""Optimizers for a model: Muon for the matrices, AdamW for embeddings, the untied head and scalars (BASE, R0322).

The model decides which parameter is which (`model.optimizer_groups()` → {"matrix", "embed", "head", "scalar"});
this file maps each group to an optimizer and its TrainConfig hyper-parameters in one table:

    group    optimizer  lr                                         weight decay
    matrix   Muon       matrix_lr                                  muon_wd
    embed    AdamW      tied_embed_lr (tied) · embed_lr (untied)   embed_wd
    head     AdamW      head_lr                                    adam_wd
    scalar   AdamW      scalar_lr                                  adam_wd

Every param group records `base_lr`; schedules set `lr = base_lr · multiplier` (`apply_lr_multiplier`).
Run the tests: `pytest tests/train/test_optim.py -q`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from pgolf.train.config import TrainConfig
from pgolf.train.distributed import average_gradients, world
from pgolf.train.muon import Muon

GROUP_KEYS = ("matrix", "embed", "head", "scalar")


def _tied(model: nn.Module, groups: dict[str, list[nn.Parameter]]) -> bool:
    """The model config's tie_embeddings; without a config, tied means "no separate head parameters"."""
    tie = getattr(getattr(model, "cfg", None), "tie_embeddings", None)
    return bool(tie) if tie is not None else not groups.get("head")


def build_optimizers(model: nn.Module, cfg: TrainConfig) -> list[torch.optim.Optimizer]:
    """[Muon(matrix), AdamW(embed, head, scalar)]; empty groups are left out, every parameter appears exactly once."""
    groups = model.optimizer_groups()
    unknown = set(groups) - set(GROUP_KEYS)
    if unknown:
        raise ValueError(f"model.optimizer_groups() returned unknown keys {sorted(unknown)}; expected {GROUP_KEYS}")
    seen: set[int] = set()
    for key in GROUP_KEYS:
        for p in groups.get(key, []):
            if id(p) in seen:
                raise ValueError(f"a parameter of shape {tuple(p.shape)} appears in more than one optimizer group")
            seen.add(id(p))
    missing = [tuple(p.shape) for p in model.parameters() if p.requires_grad and id(p) not in seen]
    if missing:
        raise ValueError(f"trainable parameters missing from model.optimizer_groups(): shapes {missing}")

    optimizers: list[torch.optim.Optimizer] = []
    if groups.get("matrix"):
        muon_cls = Muon  # a world of one, or train.muon_impl="round_robin" (train/round_robin.py)
        if cfg.muon_impl == "parallel" or (cfg.muon_impl == "auto" and world()[1] > 1):  # PR #399, R0323+
            from pgolf.train.parallel_muon import ParallelMuon

            muon_cls = ParallelMuon
        optimizers.append(muon_cls(groups["matrix"], lr=cfg.matrix_lr, momentum=cfg.muon_momentum,
                                   nesterov=cfg.muon_nesterov, backend_steps=cfg.muon_backend_steps,
                                   coeffs=cfg.muon_coeffs, row_normalize=cfg.muon_row_normalize,
                                   weight_decay=cfg.muon_wd, ns_dtype=cfg.muon_ns_dtype))
    embed_lr = cfg.tied_embed_lr if _tied(model, groups) else cfg.embed_lr
    adam_groups = [
        {"params": groups.get("embed", []), "lr": embed_lr, "weight_decay": cfg.embed_wd, "name": "embed"},
        {"params": groups.get("head", []), "lr": cfg.head_lr, "weight_decay": cfg.adam_wd, "name": "head"},
        {"params": groups.get("scalar", []), "lr": cfg.scalar_lr, "weight_decay": cfg.adam_wd, "name": "scalar"},
    ]
    adam_groups = [g for g in adam_groups if g["params"]]
    if adam_groups:
        on_cuda = all(g_p.is_cuda for g in adam_groups for g_p in g["params"])
        optimizers.append(torch.optim.AdamW(adam_groups, betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_eps,
                                            fused=True if on_cuda else None))
    for opt in optimizers:
        for group in opt.param_groups:
            group["base_lr"] = group["lr"]
    return optimizers


def apply_lr_multiplier(optimizers: list[torch.optim.Optimizer], mult: float) -> None:
    """group["lr"] = group["base_lr"] · mult for every param group (the warmdown schedule, schedule.py)."""
    for opt in optimizers:
        for group in opt.param_groups:
            group["lr"] = group["base_lr"] * mult


def set_muon_momentum(optimizers: list[torch.optim.Optimizer], momentum: float) -> None:
    """Set the momentum of every Muon param group (momentum warmup, schedule.muon_momentum_at)."""
    for opt in optimizers:
        if isinstance(opt, Muon):
            for group in opt.param_groups:
                group["momentum"] = momentum


# ---- the training loop's gradient phase ------------------------------------------------------------------------------


def _sharded(optimizers: Sequence[torch.optim.Optimizer]) -> list[torch.optim.Optimizer]:
    """The optimizers that hold their parameters' gradients as per-rank shards (Parallel Muon's marker)."""
    return [opt for opt in optimizers if getattr(opt, "shards_gradients", False)]


def reduce_gradients(params: Sequence[nn.Parameter], optimizers: Sequence[torch.optim.Optimizer]) -> None:
    """Start the Parallel Muon reduce-scatters and average every other gradient (one flat all-reduce)."""
    banked: set[int] = set()
    for opt in _sharded(optimizers):
        opt.launch_reduce_scatters()
        banked |= opt.param_ids()
    average_gradients([p for p in params if id(p) not in banked])


@torch.no_grad()
def clip_gradients(params: Sequence[nn.Parameter], optimizers: Sequence[torch.optim.Optimizer],
                   max_norm: float) -> torch.Tensor:
    """Global-norm clip of the averaged gradients, as `torch.nn.utils.clip_grad_norm_` in one process (Parallel
    Muon's shards: `parallel_muon.clip_sharded`). Returns the total norm (before clipping)."""
    sharded = _sharded(optimizers)
    if not sharded:
        return torch.nn.utils.clip_grad_norm_(list(params), max_norm)
    from pgolf.train.parallel_muon import clip_sharded

    return clip_sharded(params, sharded, max_norm)


def step_order(optimizers: Sequence[torch.optim.Optimizer]) -> list[torch.optim.Optimizer]:
    """Optimizers in stepping order: Parallel Muon last, so its reduce-scatters overlap the other steps (R0323)."""
    return sorted(optimizers, key=lambda o: getattr(o, "shards_gradients", False))
