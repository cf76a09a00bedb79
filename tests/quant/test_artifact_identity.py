"""Byte-identical artifacts: the quantized state and the artifact bytes of fixed inputs are pinned (issue 14).

Inputs (tests/quant/identity.py): a seeded GPT-shaped state dict and seeded Hessians, independent of the model
code. Cases: 5 recipes (data-free SDClip, R0427 LQER + gates, PR #535 GPTQ with the percentile search, PR #1962
adaptive σ, R0322 GPTQ-lite) × 3 codecs (rans, rans-ctx, brotli), plus the budget fit on two recipes. A refactor
must leave every digest unchanged. A deliberate change of the codes (or of the container format) updates the
table in the same commit and names the change; regenerate with `python -m tests.quant.identity`.

History of deliberate changes:
* issue 13 tensor roles: the R0405+ σ-group recipes route attention by ".attn." only, so bigram.proj and
  ve_shared.proj take the matrix σ 12.85 instead of the attention σ 13 (sota-lqer, hessian-adaptive-clip digests;
  sdclip-rtn's codes are unchanged, its attention σ was already 12.85).
"""

from __future__ import annotations

import hashlib

import pytest
import torch

from tests.quant import identity

RECORDED_ON = ("AVX512", "2.13")
"""CPU kernel set and torch version the digests were recorded with: float reductions (std, matmul, Cholesky) may
round differently under other kernels, so elsewhere the digests are not expected to match and the test skips."""

EXPECTED = {
    "state:full-gptq": "b997825b45e4c0ed8a6fdd0d465564b50e1ea162d6dd15f9a9fb2f6959376741",
    "state:gptq-lite": "bcdc585f2c17b105aaa564f1ea03bd4f855487a408ff26d22a8ed6c42f67785d",
    "state:hessian-adaptive-clip": "c051581f3887c93632249669813dfff6b3ea8129f2d89c14be0e6b12985abe98",
    "state:sdclip-rtn": "a97a53b1018822be962161431d1b264b6c5f1ede5ee145b441bcdfa285130cc3",
    "state:sota-lqer": "da94f9ff8c67efa675fb3f942dab95df6453768950f5e26f72c9431cc59d2939",
    "artifact:sdclip-rtn:rans": "c6185347ada0e0e712228c13e099d2d3f8282740b7a978d4d509d09c2723b312",
    "artifact:sdclip-rtn:rans-ctx": "80ae3717ec9370871e8085fb92561c9283b1c4ad300bf1e488566a5c1b0b621e",
    "artifact:sdclip-rtn:brotli": "97c044c97a6bfd85986610586eb62e2bc5fa5bf46eed92dda65b312355df9238",
    "artifact:sota-lqer:rans": "7c9cc746f6c3c68eceb6500051eb59b6ba2a59a50bdaf38f8d41fc90c256a407",
    "artifact:sota-lqer:rans-ctx": "994e0392d925ea680a900ff0eac47c3c0a35e75d39bacea5fdccf16011b0734e",
    "artifact:sota-lqer:brotli": "9b5ab45359693dd678fb3c1276c1fa364cfa0190fd896c41fc4de03e596b0423",
    "artifact:full-gptq:rans": "a3ac26e71b76ca01e6cb2321a6ac110015eac23c20d6ed01975d22916eb16466",
    "artifact:full-gptq:rans-ctx": "d4c2655c578585890de4dbd60b8a80c347c50de1165cd43ff3ce7b117bc52b06",
    "artifact:full-gptq:brotli": "f60fff82772503913cf6549eb9d4f98ed78dd3cdf9e05eccdae8bc9a1bfbd5df",
    "artifact:hessian-adaptive-clip:rans": "39eb335cff2c5189155f7577d7c512506859c42ed79e4f277cda6936e3e87117",
    "artifact:hessian-adaptive-clip:rans-ctx": "3efd6b52597c939ea7393bf49a63593619f59be69381136f91a6083dbc5d3229",
    "artifact:hessian-adaptive-clip:brotli": "6b8e653b3b014f2c42e1daf35935e12d9a4523836029120ed64933d48710a103",
    "artifact:gptq-lite:rans": "be4d5891dfcb700d192ad51cbca0d11ca0cee6668c35c9f5e59f67b2393caa2d",
    "artifact:gptq-lite:rans-ctx": "6a270b9a8a5bfd8a55b8f641cb5bf72b37f2e184676fac570d90efe06fb8219c",
    "artifact:gptq-lite:brotli": "5436dee8f74d948de1ee6596a9ff1dd91aa7f949339be2ad7f896ea5268fc04a",
    "fit:sdclip-rtn:rans": "bc92ee91abfc16ee65d258d91f91e55a6e78da117e7acfed128a87ec17393408",
    "fit:sota-lqer:rans": "5eda030791a184444631181037a12d30cf0344e587583474e43d8cda1863a9bd",
}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    here = (torch.backends.cpu.get_cpu_capability(), ".".join(torch.__version__.split(".")[:2]))
    if here != RECORDED_ON:
        pytest.skip(f"digests recorded on {RECORDED_ON}, this is {here}: regenerate with python -m tests.quant.identity")
    torch.set_num_threads(1)


@pytest.mark.parametrize("name", sorted({r for r, _ in identity.CASES}))
def test_quantized_state_is_unchanged(name):
    assert identity.state_digest(identity.quantized(name)) == EXPECTED[f"state:{name}"]


@pytest.mark.parametrize("name,codec", identity.CASES)
def test_artifact_bytes_are_unchanged(name, codec):
    assert hashlib.sha256(identity.artifact(name, codec)).hexdigest() == EXPECTED[f"artifact:{name}:{codec}"]


@pytest.mark.parametrize("name,codec", identity.FIT_CASES)
def test_budget_fit_artifact_is_unchanged(name, codec):
    assert hashlib.sha256(identity.fit_artifact(name, codec)).hexdigest() == EXPECTED[f"fit:{name}:{codec}"]


def test_inputs_cover_every_role_and_rule():
    """The fixture exercises what the routing distinguishes: every role, gates, passthrough scalars, non-floats."""
    from pgolf.quant.recipes import tensor_role

    sd, hs = identity.inputs()
    roles = {tensor_role(n) for n in sd}
    assert {"embed", "attn", "mlp", "other"} <= roles
    assert any(".attn.gate." in n for n in sd) and any(t.dim() == 1 for t in sd.values())
    assert not sd["step"].is_floating_point() and set(hs) <= set(sd)
