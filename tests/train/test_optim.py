"""build_optimizers: every parameter in exactly one optimizer with the TrainConfig hyper-parameters, base_lr recorded,
LR multiplier and Muon momentum setters; AdamW groups match torch.optim.AdamW.

    python -m pytest tests/train/test_optim.py -q
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from pgolf.train.config import TrainConfig
from pgolf.train.muon import Muon
from pgolf.train.optim import apply_lr_multiplier, build_optimizers, set_muon_momentum


class FakeGPT(nn.Module):
    """The shape of pgolf.model.gpt.GPT's optimizer_groups() contract, without the model."""

    def __init__(self, tie: bool = True) -> None:
        super().__init__()
        self.cfg = SimpleNamespace(tie_embeddings=tie)
        self.tok_emb = nn.Embedding(32, 8)
        self.fc = nn.Linear(8, 16, bias=False)
        self.proj = nn.Linear(16, 8, bias=False)
        self.norm_scale = nn.Parameter(torch.ones(8))
        self.gate = nn.Parameter(torch.zeros(()))
        self.lm_head = None if tie else nn.Linear(8, 32, bias=False)

    def optimizer_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"matrix": [self.fc.weight, self.proj.weight], "embed": [self.tok_emb.weight],
                "head": [] if self.lm_head is None else [self.lm_head.weight],
                "scalar": [self.norm_scale, self.gate]}


CFG = TrainConfig(matrix_lr=0.02, muon_momentum=0.97, muon_coeffs="polar_express", muon_row_normalize=True,
                  muon_wd=0.095, tied_embed_lr=0.03, embed_lr=0.6, head_lr=0.008, scalar_lr=0.02, adam_wd=0.02,
                  embed_wd=0.085, adam_beta2=0.99)


def _groups_by_name(opts):
    return {g.get("name", "matrix"): g for o in opts for g in o.param_groups}


@pytest.mark.parametrize("tie", [True, False])
def test_every_parameter_exactly_once(tie):
    model = FakeGPT(tie)
    opts = build_optimizers(model, CFG)
    ids = [id(p) for o in opts for g in o.param_groups for p in g["params"]]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in model.parameters()}
    for o in opts:
        for g in o.param_groups:
            assert g["base_lr"] == g["lr"]


def test_hyperparameters_per_group():
    opts = build_optimizers(FakeGPT(tie=False), CFG)
    assert isinstance(opts[0], Muon) and isinstance(opts[1], torch.optim.AdamW)
    g = _groups_by_name(opts)
    m = g["matrix"]
    assert (m["lr"], m["momentum"], m["coeffs"], m["row_normalize"], m["weight_decay"], m["nesterov"]) == \
        (0.02, 0.97, "polar_express", True, 0.095, True)
    assert (g["embed"]["lr"], g["embed"]["weight_decay"]) == (0.6, 0.085)  # untied → embed_lr
    assert (g["head"]["lr"], g["scalar"]["lr"], g["scalar"]["weight_decay"]) == (0.008, 0.02, 0.02)
    assert g["scalar"]["betas"] == (0.9, 0.99) and g["scalar"]["eps"] == 1e-8
    tied = _groups_by_name(build_optimizers(FakeGPT(tie=True), CFG))
    assert tied["embed"]["lr"] == 0.03 and "head" not in tied  # empty head group skipped


def test_lr_multiplier_and_momentum_setters():
    opts = build_optimizers(FakeGPT(), CFG)
    apply_lr_multiplier(opts, 0.25)
    apply_lr_multiplier(opts, 0.5)  # always relative to base_lr, never compounding
    for o in opts:
        for g in o.param_groups:
            assert g["lr"] == pytest.approx(0.5 * g["base_lr"])
    set_muon_momentum(opts, 0.88)
    assert opts[0].param_groups[0]["momentum"] == 0.88
    assert "momentum" not in opts[1].param_groups[0]


def test_adamw_groups_match_torch_reference():
    """Three steps of our AdamW groups equal a hand-built torch.optim.AdamW on the same parameters."""
    torch.manual_seed(0)
    model, ref = FakeGPT(), FakeGPT()
    ref.load_state_dict(model.state_dict())
    ours = build_optimizers(model, CFG)[1]
    theirs = torch.optim.AdamW([{"params": [ref.tok_emb.weight], "lr": 0.03, "weight_decay": 0.085},
                                {"params": [ref.norm_scale, ref.gate], "lr": 0.02, "weight_decay": 0.02}],
                               betas=(0.9, 0.99), eps=1e-8)
    for _ in range(3):
        for m in (model, ref):
            m.zero_grad()
            (m.tok_emb.weight.square().sum() + m.norm_scale.sum() * m.gate.exp()).backward()
        ours.step()
        theirs.step()
    for name, p in model.named_parameters():
        torch.testing.assert_close(p, dict(ref.named_parameters())[name], rtol=0, atol=0)


def test_rejects_missing_or_duplicated_parameters():
    class Missing(FakeGPT):
        def optimizer_groups(self):
            groups = super().optimizer_groups()
            groups["scalar"] = groups["scalar"][:1]
            return groups

    class Duplicated(FakeGPT):
        def optimizer_groups(self):
            groups = super().optimizer_groups()
            groups["scalar"].append(self.fc.weight)
            return groups

    with pytest.raises(ValueError, match="missing"):
        build_optimizers(Missing(), CFG)
    with pytest.raises(ValueError, match="more than one"):
        build_optimizers(Duplicated(), CFG)
