"""Fixed inputs and digests for the artifact-identity test (tests/quant/test_artifact_identity.py).

The inputs are synthetic and independent of the model code: a state dict named like a GPT's (attention, MLP,
gates, bigram / value-embedding projections, the tied embedding, scalars) with seeded weights, and seeded
Hessians XᵀX/n. A refactor of the quant stage must leave every digest unchanged; a deliberate change of the codes
updates the table in the same commit and says why.

    python -m tests.quant.identity        # print the current digests as the test's table
"""

from __future__ import annotations

import dataclasses
import hashlib

import torch

# (recipe, codec) pairs whose full artifact bytes are pinned; the fit cases pin the budget fit's artifact
CASES = [(r, c) for r in ("sdclip-rtn", "sota-lqer", "full-gptq", "hessian-adaptive-clip", "gptq-lite")
         for c in ("rans", "rans-ctx", "brotli")]
FIT_CASES = [("sdclip-rtn", "rans"), ("sota-lqer", "rans")]
MANIFEST = {"identity": 1}


def inputs() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(state dict, Hessians) from fixed seeds: 2 blocks of a GPT-shaped model, dim 64."""
    g = torch.Generator().manual_seed(1234)
    shapes: dict[str, tuple[int, ...]] = {"tok_emb.weight": (128, 64), "bigram.proj.weight": (64, 32),
                                          "ve_shared.proj.weight": (64, 32)}
    for i in range(2):
        shapes |= {f"blocks.{i}.attn.c_q.weight": (64, 64), f"blocks.{i}.attn.c_k.weight": (32, 64),
                   f"blocks.{i}.attn.c_v.weight": (32, 64), f"blocks.{i}.attn.proj.weight": (64, 64),
                   f"blocks.{i}.attn.gate.weight": (4, 16), f"blocks.{i}.mlp.fc.weight": (128, 64),
                   f"blocks.{i}.mlp.proj.weight": (64, 128), f"blocks.{i}.attn_scale": (64,),
                   f"blocks.{i}.resid_mix": (2, 64)}
    sd: dict[str, torch.Tensor] = {}
    for name, shape in shapes.items():
        w = torch.randn(shape, generator=g) * 0.05
        if len(shape) == 2:  # a few outliers per matrix, as trained weights have
            idx = torch.randint(0, w.numel(), (max(1, w.numel() // 500),), generator=g)
            w.view(-1)[idx] *= 8.0
        sd[name] = w
    sd["step"] = torch.tensor(7, dtype=torch.int64)
    hessians = {}
    for name, w in sd.items():
        if w.dim() == 2 and w.numel() > 64:
            cols = w.shape[1]
            mix = torch.randn(cols, cols, generator=g) / cols ** 0.5 + torch.eye(cols)
            x = torch.randn(256, cols, generator=g) @ mix
            hessians[name] = x.T @ x / 256
    return sd, hessians


def small(recipe):
    """The recipe with the passthrough threshold lowered so the fixture's matrices are quantized."""
    return dataclasses.replace(recipe, passthrough_max_numel=256)


def state_digest(qs) -> str:
    """sha256 over every quantized tensor's codes, scale, bits, method and extras, and the passthrough tensors."""
    h = hashlib.sha256()
    for name, qt in qs.tensors.items():
        h.update(f"{name}|{qt.bits}|{qt.method}|{tuple(qt.q.shape)}|{qt.scale.dtype}".encode())
        h.update(qt.q.numpy().tobytes())
        h.update(qt.scale.numpy().tobytes())
        for k, v in sorted(qt.extras.items()):
            h.update(k.encode())
            h.update(v.contiguous().numpy().tobytes())
    for name, t in qs.passthrough.items():
        h.update(f"{name}|{t.dtype}".encode())
        h.update(t.contiguous().numpy().tobytes())
    h.update(repr(sorted(qs.dtypes.items())).encode())
    return h.hexdigest()


def quantized(name: str):
    from pgolf.quant.apply import quantize_state_dict
    from pgolf.quant.recipes import get_recipe

    sd, hs = inputs()
    recipe = small(get_recipe(name))
    return quantize_state_dict(sd, recipe, hessians=hs if recipe.needs_hessians else None)[0]


def artifact(name: str, codec: str) -> bytes:
    from pgolf.pack.container import encode_artifact

    return encode_artifact(quantized(name), dict(MANIFEST), codec)


def fit_artifact(name: str, codec: str) -> bytes:
    """The budget fit's artifact at 90 % of the recipe's own bytes."""
    from pgolf.pack.fit import fit_to_budget
    from pgolf.quant.recipes import get_recipe

    sd, hs = inputs()
    recipe = small(get_recipe(name))
    target = int(0.9 * len(artifact(name, codec)))
    return fit_to_budget(sd, recipe, target_model_bytes=target, codec=codec, manifest=dict(MANIFEST),
                         hessians=hs if recipe.needs_hessians else None).blob


def digests() -> dict[str, str]:
    out = {}
    for name in sorted({r for r, _ in CASES}):
        out[f"state:{name}"] = state_digest(quantized(name))
    for name, codec in CASES:
        out[f"artifact:{name}:{codec}"] = hashlib.sha256(artifact(name, codec)).hexdigest()
    for name, codec in FIT_CASES:
        out[f"fit:{name}:{codec}"] = hashlib.sha256(fit_artifact(name, codec)).hexdigest()
    return out


if __name__ == "__main__":
    torch.set_num_threads(1)
    for k, v in digests().items():
        print(f'    "{k}": "{v}",')
