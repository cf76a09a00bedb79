"""Byte-identical artifacts: the quantized state and the artifact bytes of fixed inputs are pinned (issue 14).

Inputs (tests/quant/identity.py): a seeded GPT-shaped state dict and seeded Hessians, independent of the model
code. Cases: 5 recipes (data-free SDClip, R0427 LQER + gates, PR #535 GPTQ with the percentile search, PR #1962
adaptive σ, R0322 GPTQ-lite) × 3 codecs (rans, rans-ctx, brotli), plus the budget fit on two recipes. A refactor
must leave every digest unchanged. A deliberate change of the codes (or of the container format) updates the
table in the same commit and names the change; regenerate with `python -m tests.quant.identity`.

History of deliberate changes: (none yet)
"""

from __future__ import annotations

import hashlib

import pytest
import torch

from tests.quant import identity

EXPECTED = {
    "state:full-gptq": "b997825b45e4c0ed8a6fdd0d465564b50e1ea162d6dd15f9a9fb2f6959376741",
    "state:gptq-lite": "bcdc585f2c17b105aaa564f1ea03bd4f855487a408ff26d22a8ed6c42f67785d",
    "state:hessian-adaptive-clip": "e7b61173d2e050bd8f9cbbf60e5719f8ccb4a8cd07ecd88d5df2fe3447535f4d",
    "state:sdclip-rtn": "a97a53b1018822be962161431d1b264b6c5f1ede5ee145b441bcdfa285130cc3",
    "state:sota-lqer": "ae15255af0e2ff82291adfbf912691b390711ad719b28f9e71d84c7d0286dff1",
    "artifact:sdclip-rtn:rans": "c6185347ada0e0e712228c13e099d2d3f8282740b7a978d4d509d09c2723b312",
    "artifact:sdclip-rtn:rans-ctx": "80ae3717ec9370871e8085fb92561c9283b1c4ad300bf1e488566a5c1b0b621e",
    "artifact:sdclip-rtn:brotli": "97c044c97a6bfd85986610586eb62e2bc5fa5bf46eed92dda65b312355df9238",
    "artifact:sota-lqer:rans": "f87df269cfb53e18b6b5549db8edb38a7cc87e230fc38fa94417f9c151fe26f5",
    "artifact:sota-lqer:rans-ctx": "1390f0aae50e86e3c1549275cfe9add844ab596118541bc2aeb7dfe8ff4a1487",
    "artifact:sota-lqer:brotli": "e92597319db7d99964bdc4cb019c76be159f6f7a5c9a2e3356c239321675719d",
    "artifact:full-gptq:rans": "a3ac26e71b76ca01e6cb2321a6ac110015eac23c20d6ed01975d22916eb16466",
    "artifact:full-gptq:rans-ctx": "d4c2655c578585890de4dbd60b8a80c347c50de1165cd43ff3ce7b117bc52b06",
    "artifact:full-gptq:brotli": "f60fff82772503913cf6549eb9d4f98ed78dd3cdf9e05eccdae8bc9a1bfbd5df",
    "artifact:hessian-adaptive-clip:rans": "6343427873b8f49524977592737a677fda072107886ce63d56cb9c780a7e8607",
    "artifact:hessian-adaptive-clip:rans-ctx": "c0a12e2f8e6d11941deb91a05c00de00e42c708f68c32a0d4eb0cfa2aad33a4d",
    "artifact:hessian-adaptive-clip:brotli": "43a530d29a5a1539fae96ca0d4b209fdee8e8e6ffaf9476b03a2a11e222253f9",
    "artifact:gptq-lite:rans": "be4d5891dfcb700d192ad51cbca0d11ca0cee6668c35c9f5e59f67b2393caa2d",
    "artifact:gptq-lite:rans-ctx": "6a270b9a8a5bfd8a55b8f641cb5bf72b37f2e184676fac570d90efe06fb8219c",
    "artifact:gptq-lite:brotli": "5436dee8f74d948de1ee6596a9ff1dd91aa7f949339be2ad7f896ea5268fc04a",
    "fit:sdclip-rtn:rans": "bc92ee91abfc16ee65d258d91f91e55a6e78da117e7acfed128a87ec17393408",
    "fit:sota-lqer:rans": "c59fa62634aed7cedf0bf99e8a69cd897c501713dc9444efefcf6dff65ce63b1",
}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
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
