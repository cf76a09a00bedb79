"""quant/qat.py: STE fake-quant of every tensor the exporter quantizes (CastedLinear via weight_fn; the tied
embedding, bigram/VE tables and gates via a `weight` property), switched by tensor flags that torch.compile does not
fold, exactly equal to the exported artifact's forward for RTN-exact recipes, and following the exporter's
Hessian-chosen σ / bits for adaptive / mixed-precision recipes.

    python -m pytest tests/quant/test_qat.py -q
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from pgolf.model.gpt import GPT
from pgolf.pack.container import decode_artifact, encode_artifact
from pgolf.quant.apply import dequantize_state, quantize_state_dict
from pgolf.quant.methods import METHODS
from pgolf.quant.hessian import collect_hessians
from pgolf.quant.qat import FakeQuantWeight, fake_quant_rule, fp16_round, install_qat, sdclip_fake
from pgolf.quant.recipe_file import recipe_from_dict
from pgolf.quant.recipes import RECIPES
from pgolf.train.config import TrainConfig
from pgolf.train.loop import train
from tests.model.conftest import randomize, tiny_config

V = 64
CFG = dict(model_dim=64, num_heads=4, num_kv_heads=2, vocab_size=V)
# Bigram table, value embeddings, sparse attention gates and SmearGate v2: every non-CastedLinear tensor kind.
EXTRAS = dict(CFG, bigram_vocab_size=64, bigram_dim=32, ve_dim=32, ve_layers=(2, 3), sparse_attn_gate=True,
              smear_gate="v2", gate_window=8)
# The registered sdclip-rtn (embedding int8 k=20 included), threshold lowered so the tiny model is quantized.
SDCLIP_RTN = dataclasses.replace(RECIPES["sdclip-rtn"], passthrough_max_numel=1024)
# RTN-exact on every tensor kind: embedding int7 SDClip (as per-layer-clip / sota-lqer), int6 SDClip matrices,
# row-absmax int5 on the rest (bigram / VE projections), BASE int8 on tables, int8 per-row gates.
EXACT_ALL = recipe_from_dict({
    "name": "exact-all", "passthrough_max_numel": 256, "gate_pattern": "*gate.weight",
    "rules": [{"role": "embed", "method": "sdclip_rtn", "bits": 7, "params": {"clip_sigma": 14.0}},
              {"role": "mlp", "method": "sdclip_rtn", "bits": 6, "params": {"clip_sigma": 11.5}},
              {"role": "attn", "method": "rtn", "bits": 5, "pattern": "*.proj.weight"},
              {"role": "attn", "method": "sdclip_rtn", "bits": 6, "params": {"clip_sigma": 13.0}},
              {"role": "*", "method": "int8_percentile", "bits": 8}]})
# Hessian-chosen σ and bits (hessian-mixed-precision without LQER), thresholds lowered for the tiny model.
ADAPTIVE = dataclasses.replace(RECIPES["hessian-mixed-precision"], passthrough_max_numel=1024, lqer_top_k=0)


def _model(**cfg) -> GPT:
    torch.manual_seed(0)
    return randomize(GPT(tiny_config(**(cfg or CFG))), std=0.1).eval()


def _x() -> torch.Tensor:
    return torch.randint(0, V, (2, 16), generator=torch.Generator().manual_seed(1))


def _compile_works(backend: str = "eager") -> bool:
    try:
        return bool(torch.compile(lambda t: t * 2, backend=backend)(torch.ones(2)).sum() == 4)
    except Exception:  # noqa: BLE001 - any failure means this build cannot compile
        return False


def test_fp16_round_is_the_fp16_cast():
    gen = torch.Generator().manual_seed(0)
    x = torch.exp(torch.empty(100_000).uniform_(math.log(2.0 ** -30), math.log(6.0e4), generator=gen))
    h = torch.arange(1, 0x7C00, dtype=torch.int16).view(torch.float16).float()  # every positive finite fp16
    ties = (h[:-1] + h[1:]) / 2  # exact midpoints: round-half-to-even decides
    for t in (x, -x, h, ties, -ties, torch.zeros(3)):
        assert torch.equal(fp16_round(t), t.half().float())


RULES = [("sdclip_rtn", 6, {"clip_sigma": 12.85}), ("rtn", 5, {}), ("int8_percentile", 8, {}),
         ("gate_int8_row", 8, {})]


@pytest.mark.skipif(not _compile_works("inductor"), reason="torch.compile's inductor is unavailable on this build")
def test_export_rules_under_inductor_equal_the_exporter():
    """Inductor keeps fused fp16 casts in fp32; the rules must still round the scale to fp16 as the exporter does."""
    torch.set_num_threads(1)
    w = torch.randn(32, 64, generator=torch.Generator().manual_seed(0)) * 0.05
    flag = torch.tensor(1.0)
    fns = [FakeQuantWeight(fake_quant_rule(m, b, p)[0], flag) for m, b, p in RULES]
    outs = torch.compile(lambda t: [f(t) for f in fns], backend="inductor")(w)
    for (method, bits, params), out in zip(RULES, outs):
        qt, _ = METHODS[method](w, bits=bits, **params)
        assert torch.equal(out, qt.dequantize()), method


def test_enabling_qat_changes_the_forward_and_off_is_identity():
    torch.set_num_threads(1)
    model, x = _model(), _x()
    keys = list(model.state_dict())
    raw_emb = model.tok_emb.weight
    with torch.no_grad():
        ref = model(x, x)
        qat = install_qat(model, SDCLIP_RTN)
        assert qat.tensors and all(qat.tensors.values())  # every quantized tensor exactly aligned
        assert qat.specs["tok_emb.weight"].hook == "property" and not qat.uncovered
        assert list(model.state_dict()) == keys  # hooks add nothing to the state dict
        assert torch.equal(model(x, x), ref)  # flag 0: bit-identical
        qat.enable()
        on = model(x, x)
        # the tied table is fake-quantized wherever GPT reads it (lookup and tied head): the export rule, exactly
        assert torch.equal(model.tok_emb.weight, sdclip_fake(raw_emb, 20.0, 8))
    assert not torch.equal(on, ref)
    model(x, x).backward()  # STE: gradients flow to the fp32 masters, the embedding through lookup and head
    assert model.blocks[0].mlp.fc.weight.grad.abs().sum() > 0
    assert raw_emb.grad is not None and raw_emb.grad.abs().sum() > 0


def test_ste_value_is_exactly_the_rule_and_gradient_is_identity():
    w = (torch.randn(8, 16) * 3).requires_grad_()
    flag = torch.tensor(1.0)
    fq = FakeQuantWeight(lambda t: sdclip_fake(t, 2.0, 4), flag)  # heavy clipping: far-from-w outputs
    out = fq(w)
    assert torch.equal(out, sdclip_fake(w.detach(), 2.0, 4))
    out.sum().backward()
    assert torch.equal(w.grad, torch.ones_like(w))
    flag.fill_(0.0)
    assert torch.equal(fq(w), w)


def test_unhooked_restores_the_plain_parameters_for_optimizer_grouping():
    model = _model()
    before = {k: [id(p) for p in v] for k, v in model.optimizer_groups().items()}
    qat = install_qat(model, SDCLIP_RTN)
    assert not isinstance(model.tok_emb.weight, torch.nn.Parameter)  # the fake-quant view
    with qat.unhooked(model):
        assert {k: [id(p) for p in v] for k, v in model.optimizer_groups().items()} == before
    assert not isinstance(model.tok_emb.weight, torch.nn.Parameter)
    qat.remove(model)
    assert type(model.tok_emb) is torch.nn.Embedding and isinstance(model.tok_emb.weight, torch.nn.Parameter)


@pytest.mark.skipif(not _compile_works(), reason="torch.compile is unavailable on this build")
def test_toggle_and_grid_change_after_torch_compile_change_the_output():
    torch.set_num_threads(1)
    model, x = _model(**EXTRAS), _x()
    qat = install_qat(model, ADAPTIVE)
    assert {"tok_emb.weight", "bigram.embed.weight", "ve_shared.embed.weight"} <= set(qat.specs)
    compiled = torch.compile(model, backend="eager")
    name = "blocks.0.mlp.fc.weight"
    with torch.no_grad():
        off = compiled(x, x)
        qat.enable()
        on = compiled(x, x)
        qat.apply_overrides({name: {"clip_sigma": 3.0, "bits": 5}})  # σ / bits are tensors too: no stale grid
        regrid = compiled(x, x)
        eager_regrid = model(x, x)
        qat.enable(False)
        off2 = compiled(x, x)
    assert not torch.equal(on, off) and not torch.equal(regrid, on)
    assert torch.equal(off, off2)
    assert torch.allclose(regrid, eager_regrid, atol=1e-6)


class _Loader:
    def __init__(self) -> None:
        self.gen = torch.Generator().manual_seed(0)

    def next_batch(self, tokens, seq_len, accum):
        x = torch.randint(0, V, (tokens // seq_len, seq_len + 1), generator=self.gen)
        return x[:, :-1], x[:, 1:]

    def state_dict(self):
        return {"gen": self.gen.get_state()}

    def load_state_dict(self, state):
        self.gen.set_state(state["gen"])


class _Log:
    def __init__(self) -> None:
        self.events = []

    def event(self, kind, **kw):
        self.events.append((kind, kw))

    def step(self, *a, **k): ...
    def start_bar(self, *a, **k): ...
    def update_bar(self, *a, **k): ...
    def close_bar(self, *a, **k): ...


def _train(model, qat, run_dir, iterations=6, resume=False):
    cfg = TrainConfig(max_wallclock_seconds=0, iterations=iterations, train_batch_tokens=128, train_seq_len=16,
                      warmdown_frac=0.5, qat_threshold=0.5, log_every=100, tied_embed_lr=0.05)
    log = _Log()
    result = train(cfg, model, _Loader(), logger=log, run_dir=run_dir, device=torch.device("cpu"), qat=qat,
                   resume=resume)
    return result, [k for k, _ in log.events]


@pytest.mark.parametrize("recipe,cfg", [(SDCLIP_RTN, CFG), (EXACT_ALL, EXTRAS),
                                        (EXACT_ALL, {**EXTRAS, "tie_embeddings": False})],
                         ids=["sdclip-rtn", "exact-all", "exact-all-untied"])
def test_qat_forward_equals_the_exported_artifact_model(tmp_path, recipe, cfg):
    torch.set_num_threads(1)
    model, x = _model(**cfg), _x()
    qat = install_qat(model, recipe)
    result, events = _train(model, qat, tmp_path)
    assert "qat" in events and qat.enabled and result.qat["tensors"]
    assert all(qat.tensors.values()) and not qat.uncovered
    if recipe is EXACT_ALL:  # every tensor kind is covered: tables and gates through the weight property
        hooked = {n for n, s in qat.specs.items() if s.hook == "property"}
        assert ("lm_head.weight" in qat.specs) == (not cfg.get("tie_embeddings", True))
        assert {"tok_emb.weight", "bigram.embed.weight", "ve_shared.embed.weight",
                "blocks.0.attn.gate.weight"} <= hooked  # (the 1×8 SmearGate is below the gate size window)
    qs, _ = quantize_state_dict(model.state_dict(), recipe)
    assert set(qat.tensors) == set(qs.tensors)  # QAT fake-quantizes exactly what the exporter quantizes
    # passthrough tensors are fp16 in the artifact: give the trained model the same rounding, then compare
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name not in qat.tensors:
                p.copy_(p.half().float())
        qat_out = model(x, x)
    qs2, _ = decode_artifact(encode_artifact(qs, {"recipe": recipe.name}, "zlib"))
    exported = GPT(tiny_config(**cfg))
    exported.load_state_dict(dequantize_state(qs2), strict=True)
    with torch.no_grad():
        assert torch.equal(exported.eval()(x, x), qat_out)


def _calib() -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    return [torch.randint(0, V, (4, 16), generator=gen) for _ in range(2)]


def test_qat_uses_the_sigma_and_bits_the_exporter_computes_from_the_same_hessians():
    torch.set_num_threads(1)
    model = _model()
    qat = install_qat(model, ADAPTIVE, calib_batches=_calib)
    assert qat.needs_hessians
    info = qat.switch_on(model)
    assert qat.enabled and info["overrides"] > 0 and qat.calibration["tokens"] == 2 * 4 * 16
    qat.enable(False)
    hs = collect_hessians(model, _calib())  # the plain model, as the exporter's calibration sees it
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    _, rows = quantize_state_dict(state, ADAPTIVE, hessians=hs.h)
    exported = {r["name"]: r for r in rows if r["method"] == "sdclip_gptq" and r["role"] in ("mlp", "attn")}
    assert exported and set(exported) == set(qat.overrides)
    for name, row in exported.items():
        spec = qat.specs[name]
        assert (spec.sigma, spec.bits) == (row["sigma"], row["bits"]), name
    assert {qat.specs[n].bits for n in exported} == {5, 6, 7}  # mixed precision really moved the bits
    assert len({qat.specs[n].sigma for n in exported}) > 2  # adaptive σ really moved the clips
    # the installed grid is the override's, not the rule's base σ / bits
    name = next(iter(exported))
    fc = model.get_submodule(name.removesuffix(".weight"))
    qat.enable()
    with torch.no_grad():
        assert torch.equal(fc.weight_fn(fc.weight), sdclip_fake(fc.weight, qat.specs[name].sigma,
                                                                qat.specs[name].bits))


def test_switch_on_in_training_records_choices_and_resume_keeps_them(tmp_path):
    torch.set_num_threads(1)
    calls = []

    def batches():
        calls.append(1)
        return _calib()

    model = _model()
    qat = install_qat(model, ADAPTIVE, calib_batches=batches)
    result, events = _train(model, qat, tmp_path, iterations=6)
    assert calls == [1] and "qat" in events
    rec = result.qat
    assert rec["step"] == 5 and rec["calibration"]["tokens"] == 128 and rec["enabled"]
    assert {rec["tensors"][n]["bits"] for n in qat.overrides} == {5, 6, 7}
    assert rec["tensors"]["tok_emb.weight"] == {"method": "sdclip_gptq", "bits": 7, "sigma": 14.0, "exact": False,
                                                "hook": "property"}
    # resume from the checkpoint: the same σ / bits come back from the checkpoint, no recalibration
    model2 = _model()
    qat2 = install_qat(model2, ADAPTIVE, calib_batches=batches)
    result2, _ = _train(model2, qat2, tmp_path, iterations=8, resume=True)
    assert calls == [1] and qat2.enabled and qat2.overrides == qat.overrides
    assert result2.qat["step"] == 5 and result2.steps == 8


def test_adaptive_recipe_without_calibration_batches_is_a_clear_error():
    model = _model()
    qat = install_qat(model, ADAPTIVE)
    with pytest.raises(ValueError, match="calibration batches"):
        qat.switch_on(model)
    assert not qat.enabled
