"""Fused CPU kernels (model/fused.py) against the reference ops: values and gradients, and the GPT loss with them.

    python -m pytest tests/model/test_fused.py -q
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pgolf.model.fused import leaky_relu_square, linear_softcap_cross_entropy, rms_norm_scaled, rotary
from pgolf.model.gpt import GPT
from pgolf.model.layers import Block, Rotary, apply_rotary, rms_norm
from tests.model.conftest import ALL_ON, randomize, tiny_config


def _grads(fn, *xs):
    for x in xs:
        x.grad = None
    out = fn()
    out.backward()
    return out.detach(), [x.grad.clone() for x in xs]


@pytest.mark.parametrize("cap, n, chunk", [(30.0, 300, 64), (30.0, 64, 512), (0.0, 100, 32), (5.0, 97, 10)])
def test_linear_softcap_ce_matches_reference(cap, n, chunk):
    gen = torch.Generator().manual_seed(0)
    h = torch.randn(n, 24, generator=gen).requires_grad_()
    w = (torch.randn(50, 24, generator=gen) * 2.0).requires_grad_()  # large logits: the softcap matters
    y = torch.randint(0, 50, (n,), generator=gen)

    def ref():
        z = F.linear(h, w)
        return F.cross_entropy(cap * torch.tanh(z / cap) if cap else z, y)

    l_ref, (gh_ref, gw_ref) = _grads(ref, h, w)
    l_f, (gh, gw) = _grads(lambda: linear_softcap_cross_entropy(h, w, y, cap, chunk), h, w)
    torch.testing.assert_close(l_f, l_ref, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(gh, gh_ref, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(gw, gw_ref, rtol=1e-4, atol=1e-6)
    _, (gh2,) = _grads(lambda: 3.0 * linear_softcap_cross_entropy(h, w.detach(), y, cap, chunk), h)
    torch.testing.assert_close(gh2, 3.0 * gh_ref, rtol=1e-4, atol=1e-6)  # backward scales by grad_output


@pytest.mark.parametrize("cap", [30.0, 0.0])
def test_linear_softcap_ce_in_bf16_matches_autocast_reference(cap):
    """dtype=bf16 (training under CPU autocast): the reference is autocast's own path (bf16 F.linear, fp32 softcap
    and CE); the gradients come back in fp32, the masters' dtype."""
    gen = torch.Generator().manual_seed(3)
    h = torch.randn(300, 32, generator=gen).requires_grad_()
    w = (torch.randn(50, 32, generator=gen) * 0.5).requires_grad_()
    y = torch.randint(0, 50, (300,), generator=gen)

    def ref():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            z = F.linear(h, w).float()
        return F.cross_entropy(cap * torch.tanh(z / cap) if cap else z, y)

    l_ref, (gh_ref, gw_ref) = _grads(ref, h, w)
    l_f, (gh, gw) = _grads(lambda: linear_softcap_cross_entropy(h, w, y, cap, 64, dtype=torch.bfloat16), h, w)
    assert gh.dtype == gw.dtype == torch.float32
    torch.testing.assert_close(l_f, l_ref, rtol=1e-5, atol=1e-5)  # same bf16 logits, fp32 from there on
    torch.testing.assert_close(gh, gh_ref, rtol=2e-2, atol=1e-4)  # bf16 gradient matmuls (rounded differently)
    torch.testing.assert_close(gw, gw_ref, rtol=2e-2, atol=1e-4)
    _, (gh32, _) = _grads(lambda: linear_softcap_cross_entropy(h, w, y, cap, 64), h, w)
    assert not torch.equal(gh, gh32)  # it did run in bf16
    with pytest.raises(ValueError, match="h is torch.float32 but w is torch.bfloat16"):
        linear_softcap_cross_entropy(h, w.detach().bfloat16(), y, cap)


def test_gpt_loss_under_cpu_autocast_uses_the_fused_head_within_bf16_rounding():
    torch.manual_seed(0)
    model = randomize(GPT(tiny_config(**ALL_ON)), std=0.1).train()
    idx = torch.randint(0, 64, (3, 20), generator=torch.Generator().manual_seed(4))
    x, y = idx[:, :-1], idx[:, 1:]

    def run(fused: bool, amp: bool):
        model.fused_cpu_kernels = fused
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            loss = model(x, y)
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    l_ref, g_ref = run(False, True)
    l_f, g_f = run(True, True)
    l_32, _ = run(True, False)
    assert l_f != l_32  # bf16 really ran
    torch.testing.assert_close(l_f, l_ref, rtol=1e-3, atol=1e-3)
    for name in g_ref:
        assert g_f[name].dtype == torch.float32
        scale = g_ref[name].abs().max().item()
        assert (g_f[name] - g_ref[name]).abs().max().item() <= 0.05 * scale + 1e-6, name


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("scale", [1.0, 1 / 3 ** 0.5])
def test_rms_norm_forward_matches_and_backward_matches(dtype, scale):
    gen = torch.Generator().manual_seed(6)
    x = (torch.randn(4, 7, 3, 48, generator=gen) * 3.0).to(dtype).requires_grad_()
    g = torch.randn(4, 7, 3, 48, generator=gen).to(dtype)

    def ref():
        n = F.rms_norm(x, (48,))
        return n * scale if scale != 1.0 else n

    y_ref, y = ref(), rms_norm_scaled(x, scale)
    assert y.dtype == dtype
    if scale == 1.0:  # aten's ops exactly
        assert torch.equal(y, y_ref)
    else:  # x·(r·s) for (x·r)·s: one rounding apart (fp32), at most one bf16 ulp
        tol_f = dict(rtol=1e-6, atol=0) if dtype == torch.float32 else dict(rtol=2 ** -7, atol=0)
        torch.testing.assert_close(y, y_ref, **tol_f)
    (gx_ref,) = torch.autograd.grad(y_ref, x, g)
    (gx,) = torch.autograd.grad(rms_norm_scaled(x, scale), x, g)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(gx.float(), gx_ref.float(), **tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rope_dims", [8, 16])  # partial and full RoPE on head_dim 16
def test_rotary_is_bit_identical_forward_and_backward(dtype, rope_dims):
    cos, sin = Rotary(rope_dims, 10000.0)(12, torch.device("cpu"))
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(3, 12, 4, 16, generator=gen).to(dtype).requires_grad_()
    g = torch.randn(3, 12, 4, 16, generator=gen).to(dtype)
    y_ref, y = apply_rotary(x, cos, sin), rotary(x, cos, sin)
    assert y.dtype == dtype and torch.equal(y, y_ref)
    assert torch.equal(torch.autograd.grad(y, x, g)[0], torch.autograd.grad(y_ref, x, g)[0])


@pytest.mark.parametrize("slope", [0.5, 0.0])
def test_leaky_relu_square_is_bit_identical(slope):
    x = torch.randn(64, 40, generator=torch.Generator().manual_seed(1)).requires_grad_()
    g = torch.randn(64, 40, generator=torch.Generator().manual_seed(2))

    def ref():
        a = F.leaky_relu(x, slope) if slope else torch.relu(x)
        return (a.square() * g).sum()

    out_ref, (gx_ref,) = _grads(ref, x)
    assert torch.equal(leaky_relu_square(x, slope), (F.leaky_relu(x, slope) if slope else torch.relu(x)).square())
    out, (gx,) = _grads(lambda: (leaky_relu_square(x, slope) * g).sum(), x)
    assert torch.equal(gx, gx_ref)


@pytest.mark.parametrize("overrides", [{}, ALL_ON, {**ALL_ON, "tie_embeddings": True, "logit_softcap": 0.0}])
def test_gpt_loss_and_grads_with_fused_kernels_match_the_reference_ops(overrides):
    torch.manual_seed(0)
    model = randomize(GPT(tiny_config(**overrides))).train()
    idx = torch.randint(0, 64, (3, 20), generator=torch.Generator().manual_seed(4))
    x, y = idx[:, :-1], idx[:, 1:]

    def run(fused: bool):
        model.fused_cpu_kernels = fused
        model.zero_grad(set_to_none=True)
        loss = model(x, y)
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    l_ref, g_ref = run(False)
    l_f, g_f = run(True)
    assert model.blocks[0].mlp.fused
    torch.testing.assert_close(l_f, l_ref, rtol=1e-6, atol=1e-6)
    for name in g_ref:
        torch.testing.assert_close(g_f[name], g_ref[name], rtol=1e-4, atol=1e-6, msg=name)
    model.eval()
    with torch.no_grad():  # the reference formula of the loss, from the logits
        logits = model(x)
        torch.testing.assert_close(model(x, y), F.cross_entropy(logits.reshape(-1, 64), y.reshape(-1)),
                                   rtol=1e-6, atol=1e-6)


def test_untied_head_qat_weight_fn_goes_through_the_fused_loss():
    torch.manual_seed(0)
    model = randomize(GPT(tiny_config(tie_embeddings=False))).train()
    model.lm_head.weight_fn = torch.round  # a visible weight map (QAT installs fake-quant here)
    idx = torch.randint(0, 64, (2, 10), generator=torch.Generator().manual_seed(5))
    fused = model(idx[:, :-1], idx[:, 1:])
    model.fused_cpu_kernels = False
    torch.testing.assert_close(fused, model(idx[:, :-1], idx[:, 1:]), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("ln_scale", [True, False])
def test_block_is_the_records_formula_bit_for_bit(ln_scale):
    """x_in = m0·x + m1·x0; x = x_in + s_a ⊙ attn(norm(x_in)·ln); out = x + s_m ⊙ mlp(norm(x)·ln), in their op order
    (ln = 1 skips the ×1.0 pass, which is exact)."""
    torch.manual_seed(0)
    cfg = tiny_config(ln_scale=ln_scale)
    model = randomize(GPT(cfg))
    block: Block = model.blocks[2]
    gen = torch.Generator().manual_seed(6)
    x, x0 = torch.randn(2, 9, 32, generator=gen), torch.randn(2, 9, 32, generator=gen)
    from pgolf.model.attention import build_attention_context

    idx = torch.zeros(2, 9, dtype=torch.long)
    cos, sin = model.rotary(9, x.device)
    ctx = build_attention_context(idx, cos, sin, doc_isolation=False, bos_id=1, backend="sdpa")
    with torch.no_grad():
        out = block(x, x0, ctx)
        ln = block.ln_scale
        x_in = block.resid_mix[0][None, None, :] * x + block.resid_mix[1][None, None, :] * x0
        h = x_in + block.attn_scale[None, None, :] * block.attn(rms_norm(x_in) * ln, ctx)
        ref = h + block.mlp_scale[None, None, :] * block.mlp(rms_norm(h) * ln)
    assert torch.equal(out, ref)


def _block_case(ln_scale: bool = True):
    from pgolf.model.attention import build_attention_context

    torch.manual_seed(0)
    model = randomize(GPT(tiny_config(ln_scale=ln_scale))).train()
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(2, 9, 32, generator=gen).requires_grad_()
    x0 = torch.randn(2, 9, 32, generator=gen).requires_grad_()
    cos, sin = model.rotary(9, x.device)
    ctx = build_attention_context(torch.zeros(2, 9, dtype=torch.long), cos, sin, doc_isolation=False, bos_id=1,
                                  backend="sdpa")
    return model, model.blocks[2], x, x0, ctx


def test_casted_linear_out_scale_is_the_scale_on_the_output():
    from pgolf.model.layers import CastedLinear

    gen = torch.Generator().manual_seed(2)
    lin = CastedLinear(16, 12)
    s, x = torch.randn(12, generator=gen).requires_grad_(), torch.randn(3, 5, 16, generator=gen)
    (gs_ref,) = torch.autograd.grad((s * lin(x)).square().sum(), s)
    y = lin(x, out_scale=s)
    torch.testing.assert_close(y, s * lin(x), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(torch.autograd.grad(y.square().sum(), s)[0], gs_ref, rtol=1e-5, atol=1e-5)


def test_block_training_path_folds_the_scales_and_matches_the_formula():
    """In training on CPU the block folds attn/mlp scales into the projections, the LN scale into the norm and the
    residual mix into an addcmul: values and every gradient equal the records' formula within float rounding, and
    the folded path really ran (it is not bit-identical to it)."""
    model, block, x, x0, ctx = _block_case()
    params = [x, x0, *block.parameters()]

    def run(fused: bool):
        model.fused_cpu_kernels = fused
        out = block(x, x0, ctx)
        return out.detach(), torch.autograd.grad(out.square().sum(), params)

    (y_ref, g_ref), (y, g) = run(False), run(True)
    assert not torch.equal(y, y_ref)  # the folded ops ran
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-6 * y_ref.abs().max().item())
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * b.abs().max().item())
    block.eval()  # eval mode keeps the records' ops bit for bit, fused kernels on or not
    with torch.no_grad():
        e_fused = block(x, x0, ctx)
        model.fused_cpu_kernels = False
        assert torch.equal(e_fused, block(x, x0, ctx))


def test_block_training_path_keeps_the_scale_after_a_forward_hook():
    """TTT's LoRA adds its output in a forward hook on attn/mlp, before the block's scale: with such a hook the
    training path must not fold the scale into the projection (the hook's addition would escape the scale)."""
    model, block, x, x0, ctx = _block_case()
    bump = torch.randn(2, 9, 32, generator=torch.Generator().manual_seed(9))
    for m in (block.attn, block.mlp):
        m.register_forward_hook(lambda mod, args, out: out + bump)

    def run(fused: bool):
        model.fused_cpu_kernels = fused
        return block(x, x0, ctx).detach()  # autograd recording: the training path

    y_ref = run(False)
    torch.testing.assert_close(run(True), y_ref, rtol=1e-5, atol=1e-6 * y_ref.abs().max().item())
    assert not block._folds(x, block.attn) and not block._folds(x, block.mlp)


def test_block_norm_under_cpu_autocast_is_written_in_bf16_once():
    """Under CPU bf16 autocast the training path's block norm comes out in bf16 (the value each linear would have
    cast it to), and the block's loss and gradients stay within bf16 rounding of the reference ops."""
    model, block, x, x0, ctx = _block_case()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        n = block._norm(x)
        assert n.dtype == torch.bfloat16
        ref = (F.rms_norm(x.detach(), (32,)) * block.ln_scale).to(torch.bfloat16)
        torch.testing.assert_close(n.float(), ref.float(), rtol=2 ** -7, atol=0)
        params = [x, *block.parameters()]

        def run(fused: bool):
            model.fused_cpu_kernels = fused
            out = block(x, x0, ctx).float()
            return torch.autograd.grad(out.square().sum(), params)

        for a, b in zip(run(True), run(False)):
            assert (a - b).abs().max() <= 0.05 * b.abs().max() + 1e-6


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("slope", [0.5, 0.0])
def test_linear_leaky_relu_square_is_bit_identical_to_fc_then_activation(dtype, slope):
    """The fc + LeakyReLU² node (its ×2 moved onto W and W's gradient, exact) against fc then leaky_relu_square."""
    from pgolf.model.fused import linear_leaky_relu_square

    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 7, 24, generator=gen).to(dtype).requires_grad_()
    w = (torch.randn(40, 24, generator=gen) * 0.3).to(dtype).requires_grad_()
    g = torch.randn(2, 7, 40, generator=gen).to(dtype)
    ref = leaky_relu_square(F.linear(x, w), slope)
    y = linear_leaky_relu_square(x, w, slope)
    assert torch.equal(y, ref)
    for a, b in zip(torch.autograd.grad(y, (x, w), g), torch.autograd.grad(ref, (x, w), g)):
        assert torch.equal(a, b)


def test_fused_fc_node_uses_the_qat_weight_fn_and_steps_aside_for_hooks():
    """The fc + LeakyReLU² node reads fc's weight through its weight_fn (QAT fake-quant) like the module does, and a
    forward hook on fc (calibration) sends the MLP back through the module, so the hook sees the call."""
    model, block, x, x0, ctx = _block_case()
    fc = block.mlp.fc
    fc.weight_fn = lambda w: torch.round(w * 8) / 8  # a fake-quant stand-in

    def run(fused: bool):
        model.fused_cpu_kernels = fused
        return block(x, x0, ctx).detach()

    y_ref = run(False)
    torch.testing.assert_close(run(True), y_ref, rtol=1e-5, atol=1e-6 * y_ref.abs().max().item())
    seen = []
    fc.register_forward_hook(lambda m, args, out: seen.append(args[0].shape))
    run(True)
    assert seen == [x.shape]
