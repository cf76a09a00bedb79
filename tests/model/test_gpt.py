"""GPT: parameter counts vs the records, causality, document isolation, looping, optimizer groups, names, init.

    python -m pytest tests/model/test_gpt.py -q
"""

from __future__ import annotations

import math
import re
import subprocess
import sys

import pytest
import torch

from pgolf.model.config import GPTConfig
from pgolf.model.gpt import COUNT_KEYS, GPT, format_parameter_counts, virtual_layers
from pgolf.model.layers import CastedLinear
from tests.model.conftest import ALL_ON, randomize, tiny_config

R0322 = dict(num_layers=11, mlp_mult=3.0, bigram_vocab_size=2048, bigram_dim=128, ve_dim=128, ve_layers=(9, 10),
             smear_gate="v1", xsa_last_n=4, rope_dims=16, ln_scale=True)
R0405 = dict(vocab_size=8192, num_layers=11, mlp_mult=4.0, mlp_act="leaky_relu2", rope_dims=16, ln_scale=True,
             num_loops=2, loop_start=4, loop_end=5, unet_skips="gates", xsa_last_n=11)
R0427 = dict(vocab_size=8192, num_layers=11, mlp_mult=4.0, mlp_act="leaky_relu2", rope_dims=16, qk_gain_init=5.0,
             ln_scale=True, xsa_last_n=17, smear_gate="v2", sparse_attn_gate=True, sparse_attn_gate_scale=0.5,
             num_loops=2, loop_start=3, loop_end=5, parallel_start_layer=8, unet_skips="gates", doc_isolation=True)


# ------------------------------------------------------------------------------------------------ parameter counts

@pytest.mark.parametrize("overrides, expected", [
    ({}, 17_059_912),  # challenge baseline (docs/techniques.md#shapes)
    (R0322, 26_993_756),  # 2026-03-22 record `model_params:` line
    (R0405, 35_943_512),  # 2026-04-05 record: 7 skip pairs of the 15-layer looped stack
    (R0427, 35_945_671),  # 2026-04-27 record
])
def test_parameter_counts_match_the_records(overrides, expected):
    counts = GPT(GPTConfig(**overrides)).parameter_counts()
    assert counts["total"] == expected
    assert sum(counts[k] for k in COUNT_KEYS) == counts["total"]
    assert format_parameter_counts(counts).splitlines()[0] == f"params total: {expected:,}"


def test_r0322_breakdown_matches_the_hand_count():
    counts = GPT(GPTConfig(**R0322)).parameter_counts()
    assert counts["bigram"] == 262_144 + 65_536 + 1
    assert counts["value_embed"] == 131_072 + 32_768 + 1 + 2
    assert counts["smear"] == 512 and counts["skips"] == 5 * 512 and counts["control"] == 11 * 2_056


# ------------------------------------------------------------------------------------------------------ causality

COMBOS = {
    "baseline": {},
    "looping": dict(num_layers=5, num_loops=2, loop_start=1, loop_end=2),
    "xsa_partial_rope": dict(xsa_last_n=2, rope_dims=4),
    "smear_v1_bigram": dict(smear_gate="v1", bigram_vocab_size=32),
    "smear_v2_ve": dict(smear_gate="v2", ve_dim=8, ve_layers=(1, 3)),
    "parallel_gates": dict(parallel_start_layer=2, unet_skips="gates", sparse_attn_gate=True),
    "all_on": ALL_ON,
    "all_on_doc_isolation": {**ALL_ON, "doc_isolation": True},
}


@pytest.mark.parametrize("name", list(COMBOS))
def test_perturbing_token_t_leaves_earlier_logits_unchanged(make_model, name):
    model = make_model(**COMBOS[name])
    model.set_looping(True)
    idx = torch.randint(2, 64, (2, 16), generator=torch.Generator().manual_seed(1))
    idx[:, 5] = 1  # a BOS inside the row
    t = 9
    changed = idx.clone()
    changed[:, t] = (idx[:, t] + 7) % 62 + 2
    with torch.no_grad():
        a, b = model(idx), model(changed)
    torch.testing.assert_close(a[:, :t], b[:, :t], rtol=0, atol=1e-5)
    assert (a[:, t:] - b[:, t:]).abs().max() > 1e-3  # the perturbation does reach position t and later


# ---------------------------------------------------------------------------------------------- document isolation

def _docs(lengths, seed=3):
    gen = torch.Generator().manual_seed(seed)
    docs = [torch.randint(2, 64, (n,), generator=gen) for n in lengths]
    for d in docs:
        d[0] = 1  # every document starts with BOS
    return docs


ISOLATION_COMBOS = {
    "baseline": dict(doc_isolation=True),
    "no_bigram_no_smear": {**ALL_ON, "smear_gate": "none", "bigram_vocab_size": 0, "doc_isolation": True},
}


@pytest.mark.parametrize("name", list(ISOLATION_COMBOS))
def test_packed_documents_equal_documents_run_alone(make_model, name):
    model = make_model(**ISOLATION_COMBOS[name])
    model.set_looping(True)
    docs = _docs([5, 7, 4])
    packed = torch.cat(docs)[None]  # (1, 16)
    with torch.no_grad():
        out = model(packed)[0]
        start = 0
        for d in docs:
            alone = model(d[None])[0]
            torch.testing.assert_close(out[start:start + len(d)], alone, rtol=1e-5, atol=1e-5)
            start += len(d)
        # a row that starts mid-document: its first segment is everything before the first BOS
        tail = torch.cat([docs[0][2:], docs[1]])[None]
        torch.testing.assert_close(model(tail)[0, 3:], model(docs[1][None])[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("smear", ["v1", "v2"])
def test_bos_fix_makes_a_document_independent_of_the_previous_one(make_model, smear):
    docs = _docs([6, 8])
    packed = torch.cat(docs)[None]
    other = packed.clone()
    other[0, 1:6] = (other[0, 1:6] + 5) % 62 + 2  # rewrite the previous document (keeping its BOS)
    other[0, 5] = 63  # its last token, the one that smear/bigram would carry into the next BOS
    for fix, expect_equal in [(True, True), (False, False)]:
        model = make_model(smear_gate=smear, bigram_vocab_size=32, smear_bos_fix=fix, doc_isolation=True)
        with torch.no_grad():
            a, b = model(packed)[0, 6:], model(other)[0, 6:]
        assert torch.allclose(a, b, atol=1e-5) == expect_equal, f"bos_fix={fix}"


def test_doc_isolation_changes_nothing_without_bos(make_model):
    idx = torch.randint(2, 64, (2, 12), generator=torch.Generator().manual_seed(4))
    a, b = make_model(), make_model(doc_isolation=True)
    with torch.no_grad():
        torch.testing.assert_close(a(idx), b(idx), rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------------------------------------- looping

def test_virtual_layer_orders_match_the_records():
    r0405 = GPTConfig(num_layers=11, num_loops=2, loop_start=4, loop_end=5)
    assert virtual_layers(r0405, True) == [0, 1, 2, 3, 4, 5, 4, 5, 4, 5, 6, 7, 8, 9, 10]
    assert virtual_layers(r0405, False) == list(range(11))
    assert len(virtual_layers(GPTConfig(**R0427), True)) == 17
    assert GPT(GPTConfig(**R0427)).num_skips == 8  # enc 8 / dec 9 virtual layers (docs/techniques.md#components)


def test_set_looping_changes_the_forward_only_when_loops_exist(make_model):
    idx = torch.randint(2, 64, (2, 10), generator=torch.Generator().manual_seed(5))
    looped = make_model(num_layers=5, num_loops=2, loop_start=1, loop_end=2)
    names = [n for n, _ in looped.named_parameters()]
    with torch.no_grad():
        off = looped(idx)
        looped.set_looping(True)
        assert looped.looping_active
        on = looped(idx)
        looped.set_looping(False)
        torch.testing.assert_close(looped(idx), off)
    assert (on - off).abs().max() > 1e-3
    assert names == [n for n, _ in looped.named_parameters()]

    flat = make_model()
    with torch.no_grad():
        before = flat(idx)
        flat.set_looping(True)
        assert not flat.looping_active
        torch.testing.assert_close(flat(idx), before)


# ------------------------------------------------------------------------------------------------- loss and grads

def test_loss_at_init_is_close_to_log_vocab(make_model):
    for overrides in ({}, ALL_ON, {**ALL_ON, "tie_embeddings": True}):
        model = make_model(random=False, **overrides)
        idx = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(6))
        with torch.no_grad():
            loss = model(idx, torch.roll(idx, -1, dims=1))
        assert loss.dtype == torch.float32 and abs(loss.item() - math.log(64)) < 0.05, overrides


def test_per_token_loss_mean_equals_forward_loss_and_logits_are_softcapped(make_model):
    model = make_model(**ALL_ON)
    with torch.no_grad():
        for p in model.parameters():  # large logits, so the softcap binds
            p.mul_(3.0)
    idx = torch.randint(0, 64, (3, 12), generator=torch.Generator().manual_seed(7))
    tgt = torch.randint(0, 64, (3, 12), generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        nll = model.per_token_loss(idx, tgt)
        logits = model(idx)
        assert nll.shape == (3, 12) and nll.dtype == torch.float32
        torch.testing.assert_close(nll.mean(), model(idx, tgt))
    assert logits.shape == (3, 12, 64) and logits.dtype == torch.float32
    assert logits.abs().max() <= model.cfg.logit_softcap


@pytest.mark.parametrize("looping", [False, True])
def test_backward_gives_finite_grads_to_every_parameter(make_model, looping):
    model = make_model(**ALL_ON).train()
    model.set_looping(looping)
    idx = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(9))
    model(idx, torch.roll(idx, -1, dims=1)).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_bf16_autocast_forward_backward(make_model):
    model = make_model(**{**ALL_ON, "doc_isolation": True}).train()
    idx = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(10))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(idx, torch.roll(idx, -1, dims=1))
        logits = model(idx)
    loss.backward()
    assert loss.dtype == torch.float32 and logits.dtype == torch.float32 and torch.isfinite(loss)
    assert all(p.dtype == torch.float32 for p in model.parameters())


# ----------------------------------------------------------------------------------------- optimizer groups, names

@pytest.mark.parametrize("tied", [True, False])
def test_optimizer_groups_cover_every_parameter_exactly_once(make_model, tied):
    model = make_model(**{**ALL_ON, "smear_gate": "v2", "tie_embeddings": tied})
    groups = model.optimizer_groups()
    assert set(groups) == {"matrix", "embed", "head", "scalar"}
    ids = [id(p) for ps in groups.values() for p in ps]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    names = {id(p): n for n, p in model.named_parameters()}
    by_group = {k: {names[id(p)] for p in ps} for k, ps in groups.items()}
    assert {"blocks.0.attn.c_q.weight", "blocks.4.mlp.proj.weight", "bigram.proj.weight",
            "ve_shared.proj.weight"} <= by_group["matrix"]
    assert by_group["embed"] == {"tok_emb.weight", "bigram.embed.weight", "ve_shared.embed.weight"}
    assert by_group["head"] == (set() if tied else {"lm_head.weight"})
    assert {"smear.gate.weight", "smear.lam", "blocks.0.attn.gate.weight", "blocks.0.resid_mix", "skip_gates",
            "parallel_post_lambdas", "ve_layer_scales.0", "bigram.scale"} <= by_group["scalar"]
    assert all(p.ndim == 2 for p in groups["matrix"])


def test_state_dict_names_follow_the_records(make_model):
    model = make_model(**{**ALL_ON, "smear_gate": "v1"})
    keys = set(model.state_dict())
    expected = {"tok_emb.weight", "lm_head.weight", "skip_weights", "skip_gates", "smear.gate", "bigram.embed.weight",
                "bigram.proj.weight", "bigram.scale", "ve_shared.embed.weight", "ve_shared.proj.weight",
                "ve_shared.scale", "ve_layer_scales.0", "ve_layer_scales.1", "parallel_post_lambdas",
                "parallel_resid_lambdas"}
    for i in range(5):
        expected |= {f"blocks.{i}.{s}" for s in ("attn.c_q.weight", "attn.c_k.weight", "attn.c_v.weight",
                                                 "attn.proj.weight", "attn.q_gain", "attn.gate.weight",
                                                 "mlp.fc.weight", "mlp.proj.weight", "attn_scale", "mlp_scale",
                                                 "resid_mix")}
    assert keys == expected  # nothing else: no rotary caches or other seq-len-dependent buffers
    assert not any(re.search("rotary|inv_freq|cos|sin", k) for k in keys)


# ------------------------------------------------------------------------------------------------------------ init

def test_init_follows_the_records():
    cfg = GPTConfig(num_layers=2, model_dim=128, num_heads=2, num_kv_heads=1, vocab_size=96, bigram_vocab_size=64,
                    bigram_dim=64, ve_dim=64, ve_layers=(1,), smear_gate="v2", sparse_attn_gate=True)
    torch.manual_seed(0)
    model = GPT(cfg)
    torch.manual_seed(0)
    again = GPT(cfg)
    for (name, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), f"init not deterministic: {name}"
    blk = model.blocks[0]
    for w in (blk.attn.proj.weight, blk.mlp.proj.weight, blk.attn.gate.weight, model.smear.gate.weight):
        assert not w.any()
    eye = torch.eye(64)
    torch.testing.assert_close(blk.attn.c_q.weight @ blk.attn.c_q.weight.T, torch.eye(128), atol=1e-5, rtol=0)
    torch.testing.assert_close(blk.attn.c_k.weight @ blk.attn.c_k.weight.T, eye, atol=1e-5, rtol=0)
    scaled = model.bigram.proj.weight * math.sqrt(2 * cfg.num_layers)  # orthogonal × 1/√(2L) (R0322)
    torch.testing.assert_close(scaled.T @ scaled, eye, atol=1e-5, rtol=0)
    assert not model.bigram.embed.weight.any() and model.bigram.scale.item() == pytest.approx(0.05)
    assert model.tok_emb.weight.std().item() == pytest.approx(cfg.tied_embed_init_std, rel=0.1)
    assert model.ve_shared.embed.weight.std().item() == pytest.approx(0.01, rel=0.1)


def test_import_does_not_touch_cuda():
    code = ("import torch, pgolf.model.gpt\n"
            "assert not torch.cuda.is_initialized()\n"
            "import sys; assert not any(m.startswith('flash_attn') for m in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


def test_tiny_config_defaults_are_valid():
    assert tiny_config().head_dim == 8 and randomize(GPT(tiny_config())) is not None


def test_hooks_see_every_casted_linear_including_the_untied_head(make_model):
    model = make_model(**ALL_ON)
    seen: set[str] = set()
    for name, module in model.named_modules():
        if isinstance(module, CastedLinear):
            module.register_forward_hook(lambda m, inp, out, name=name: seen.add(name))
    with torch.no_grad():
        model(torch.randint(0, 64, (1, 8)))
    assert seen == {n for n, m in model.named_modules() if isinstance(m, CastedLinear)}
    assert "lm_head" in seen and "bigram.proj" in seen and "ve_shared.proj" in seen


def test_training_forward_after_an_inference_mode_forward(make_model):
    """generate() and the records' scoring run under torch.inference_mode; the rotary cache must not leak into the
    next training step (it raised "Inference tensors cannot be saved for backward")."""
    model = make_model(**ALL_ON)
    idx = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        ref = model(idx)
    model.train()
    loss = model(idx[:, :-1], idx[:, 1:])
    loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    model.eval()
    torch.testing.assert_close(model(idx), ref, rtol=0, atol=0)
