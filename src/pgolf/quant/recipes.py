"""Quantization recipes as data: one registry dict of frozen dataclasses (style.md rule 9).

A recipe says, per tensor role, which registered method (`methods.METHODS`) quantizes it at how many bits
with which parameters. Rules are tried in order; the first whose role (and optional name glob) matches wins.
Float tensors with at most `passthrough_max_numel` elements, and every non-float tensor, are kept as is (floats
stored fp16; names matching `keep_fp32_patterns` stay fp32, as BASE keeps its control tensors).

    recipe = get_recipe("int8-baseline")       # a registered name
    recipe = get_recipe("my_recipe.toml")      # or a file with the same fields:

    name = "int6-rtn"
    description = "per-row RTN int6, int8 embeddings"
    [[rules]]
    role = "embed"
    method = "int8_percentile"
    bits = 8
    [[rules]]
    role = "*"
    method = "rtn"
    bits = 6

Methods (`methods.METHODS`, one spec each): the data-free `int8_percentile`, `rtn`, `gptq_lite` (R0322),
`sdclip_rtn`, `gate_int8_row` and the Hessian methods `gptq_clip_search` (R0325: 5-percentile search around GPTQ)
and `sdclip_gptq` (R0405+: GPTQ on the SDClip grid k·std(row)/cr, param `clip_sigma`, optional `hessian_lambda` for
R0406). Roles come from the recipe's pattern table (`roles`: ROLE_TABLES). Recipe-level switches add the cross-tensor
steps: `adaptive_clip` (PR #1962 σ), `mixed_precision` (int5/6/7 by sensitivity, `mixed_precision_split`),
`lqer_top_k` (R0427 LQER) and `gate_pattern` (R0427 int8 per-row gates, checked before the passthrough rule).
`calib_*` give the calibration defaults (one for all: DEFAULT_CALIB_SEQS); `QuantConfig.calib_*` override them. A
file's `[[amend]]` tables and `--quant.ROLE.KNOB` change one role's rule (quant/amend.py, `recipe_for`).

The types are in quant/recipe_types.py (re-exported here); a .toml recipe is read by quant/recipe_file.py, which
a run of a registered recipe never imports.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from pgolf.quant.recipe_types import (  # noqa: F401  (the recipe types, re-exported for the stage's callers)
    BASE_FP32_PATTERNS, CLASSIFY_ROLES, DEFAULT_CALIB_SEQS, GROUP_ROLES, PASSTHROUGH, ROLE_TABLES, ROLES, QuantRecipe,
    RoleTable, TensorRule, tensor_role,
)


RECIPES: dict[str, QuantRecipe] = {
    "int8-baseline": QuantRecipe(
        name="int8-baseline",
        description="BASE: per-row int8 with the 99.99984th-percentile clip, fp16 scales; small tensors fp16 "
                    "(control tensors fp32); zlib-9",
        rules=(TensorRule(role="*", method="int8_percentile", bits=8, params={"percentile": 99.99984}),),
        passthrough_max_numel=65_536,
        codec_hint="zlib",
        keep_fp32_patterns=BASE_FP32_PATTERNS,
    ),
    "gptq-lite": QuantRecipe(
        name="gptq-lite",
        description="R0322 / PR #414: int6 GPTQ-lite (best of 5 clip percentiles per matrix, RTN) on mlp+attn; "
                    "embed and other large tensors int8 99.99984 pct; zstd-22",
        rules=(TensorRule(role="mlp", method="gptq_lite", bits=6),
               TensorRule(role="attn", method="gptq_lite", bits=6),
               TensorRule(role="*", method="int8_percentile", bits=8, params={"percentile": 99.99984})),
        codec_hint="zstd",
    ),
    "full-gptq": QuantRecipe(
        name="full-gptq",
        description="PR #535: full Hessian GPTQ int6 with the 5-percentile search wrapped around GPTQ on mlp+attn "
                    "(train-data calibration), embed int8 pct; lzma",
        rules=(TensorRule(role="mlp", method="gptq_clip_search", bits=6),
               TensorRule(role="attn", method="gptq_clip_search", bits=6),
               TensorRule(role="*", method="int8_percentile", bits=8, params={"percentile": 99.99984})),
        codec_hint="lzma", calib_source="train",
    ),
    "ar-calib-gptq": QuantRecipe(
        name="ar-calib-gptq",
        description="R0325 / PR #728→#1019: full GPTQ int6 (percentile search) with self-generated calibration "
                    "64×2048 at T=0.8, embed int8 pct; lzma-9",
        rules=(TensorRule(role="mlp", method="gptq_clip_search", bits=6),
               TensorRule(role="attn", method="gptq_clip_search", bits=6),
               TensorRule(role="*", method="int8_percentile", bits=8, params={"percentile": 99.99984})),
        codec_hint="lzma", calib_source="selfgen", calib_seqs=64, calib_seq_len=2048, calib_temperature=0.8,
        calib_damp=0.01,
    ),
    "sdclip": QuantRecipe(
        name="sdclip",
        description="R0405: GPTQ on the SDClip grid, int6 k=12.85 on matrices, tied embed int8 k=20 with GPTQ from "
                    "the final-norm Hessian; other large tensors int8 pct; brotli",
        rules=(TensorRule(role="embed", method="sdclip_gptq", bits=8, params={"clip_sigma": 20.0}),
               TensorRule(role="mlp", method="sdclip_gptq", bits=6, params={"clip_sigma": 12.85}),
               TensorRule(role="attn", method="sdclip_gptq", bits=6, params={"clip_sigma": 12.85}),
               TensorRule(role="other", method="sdclip_gptq", bits=6, params={"clip_sigma": 12.85},
                          pattern="*.proj.weight"),  # MATRIX_CLIP_SIGMAS: bigram / VE projections
               TensorRule(role="*", method="int8_percentile", bits=8, params={"percentile": 99.99984})),
        codec_hint="brotli", calib_source="train", roles="groups",
    ),
    "sdclip-rtn": QuantRecipe(
        name="sdclip-rtn",
        description="sdclip without GPTQ (ours): RTN on the SDClip grid, int6 k=12.85 matrices, embed int8 k=20; "
                    "data-free, so QAT (quant/qat.py) reproduces its export rule exactly",
        rules=(TensorRule(role="embed", method="sdclip_rtn", bits=8, params={"clip_sigma": 20.0}),
               TensorRule(role="mlp", method="sdclip_rtn", bits=6, params={"clip_sigma": 12.85}),
               TensorRule(role="attn", method="sdclip_rtn", bits=6, params={"clip_sigma": 12.85}),
               TensorRule(role="other", method="sdclip_rtn", bits=6, params={"clip_sigma": 12.85},
                          pattern="*.proj.weight"),  # MATRIX_CLIP_SIGMAS: bigram / VE projections
               TensorRule(role="*", method="int8_percentile", bits=8, params={"percentile": 99.99984})),
        codec_hint="brotli", roles="groups",
    ),
    "per-layer-clip": QuantRecipe(
        name="per-layer-clip",
        description="PR #1586 / R0414: SDClip GPTQ with per-group σ: MLP 12 / attn 13 int6, embed int7 15; "
                    "brotli",
        rules=(TensorRule(role="embed", method="sdclip_gptq", bits=7, params={"clip_sigma": 15.0}),
               TensorRule(role="mlp", method="sdclip_gptq", bits=6, params={"clip_sigma": 12.0}),
               TensorRule(role="attn", method="sdclip_gptq", bits=6, params={"clip_sigma": 13.0}),
               TensorRule(role="other", method="sdclip_gptq", bits=6, params={"clip_sigma": 12.85},
                          pattern="*.proj.weight"),  # MATRIX_CLIP_SIGMAS: bigram / VE projections
               TensorRule(role="*", method="int8_percentile", bits=8, params={"percentile": 99.99984})),
        codec_hint="brotli", calib_source="train", roles="groups",
    ),
    "hessian-adaptive-clip": QuantRecipe(
        name="hessian-adaptive-clip",
        description="PR #1962: R0427 stack with adaptive σ = clamp(exp(−0.15·log sens + offset), 6, 24), offset "
                    "bisected to keep the numel-weighted log-mean of MLP 11.5 / attn 13; embed int7 14 fixed; "
                    "LQER asym r4 top-3; int8 gates",
        rules=(TensorRule(role="embed", method="sdclip_gptq", bits=7, params={"clip_sigma": 14.0}),
               TensorRule(role="mlp", method="sdclip_gptq", bits=6, params={"clip_sigma": 11.5}),
               TensorRule(role="attn", method="sdclip_gptq", bits=6, params={"clip_sigma": 13.0}),
               TensorRule(role="other", method="sdclip_gptq", bits=6, params={"clip_sigma": 12.85},
                          pattern="*.proj.weight"),  # MATRIX_CLIP_SIGMAS: bigram / VE projections
               TensorRule(role="*", method="int8_percentile", bits=8, params={"percentile": 99.99984})),
        codec_hint="brotli", calib_source="train", roles="groups", gate_pattern="blocks.*.attn.gate.weight",
        adaptive_clip=True, lqer_top_k=3, lqer_rank=4,
    ),
    "hessian-mixed-precision": QuantRecipe(
        name="hessian-mixed-precision",
        description="PR #1962 ablation: adaptive σ + int5/6/7 by Hessian sensitivity (25/50/25 % of parameters, "
                    "mean 6 bits) on mlp/attn; embed int7 14; LQER; int8 gates (reported negative)",
        rules=(TensorRule(role="embed", method="sdclip_gptq", bits=7, params={"clip_sigma": 14.0}),
               TensorRule(role="mlp", method="sdclip_gptq", bits=6, params={"clip_sigma": 11.5}),
               TensorRule(role="attn", method="sdclip_gptq", bits=6, params={"clip_sigma": 13.0}),
               TensorRule(role="other", method="sdclip_gptq", bits=6, params={"clip_sigma": 12.85},
                          pattern="*.proj.weight"),  # MATRIX_CLIP_SIGMAS: bigram / VE projections
               TensorRule(role="*", method="int8_percentile", bits=8, params={"percentile": 99.99984})),
        codec_hint="brotli", calib_source="train", roles="groups", gate_pattern="blocks.*.attn.gate.weight",
        adaptive_clip=True, mixed_precision=True, lqer_top_k=3, lqer_rank=4,
    ),
    "sota-lqer": QuantRecipe(
        name="sota-lqer",
        description="R0427: SDClip GPTQ MLP 11.5 / attn 13 int6, embed int7 14, + LQER asym rank 4 on the top-3 "
                    "tensors by ‖E‖_F, int8 per-row attention gates; brotli (R0427 used per-group lrzip)",
        rules=(TensorRule(role="embed", method="sdclip_gptq", bits=7, params={"clip_sigma": 14.0}),
               TensorRule(role="mlp", method="sdclip_gptq", bits=6, params={"clip_sigma": 11.5}),
               TensorRule(role="attn", method="sdclip_gptq", bits=6, params={"clip_sigma": 13.0}),
               TensorRule(role="other", method="sdclip_gptq", bits=6, params={"clip_sigma": 12.85},
                          pattern="*.proj.weight"),  # MATRIX_CLIP_SIGMAS: bigram / VE projections
               TensorRule(role="*", method="int8_percentile", bits=8, params={"percentile": 99.99984})),
        codec_hint="brotli", calib_source="train", roles="groups", gate_pattern="blocks.*.attn.gate.weight",
        lqer_top_k=3, lqer_rank=4,
    ),
}


def get_recipe(name_or_path: str | Path) -> QuantRecipe:
    """A registered recipe by name, or one loaded from a .toml file with QuantRecipe's fields (quant/recipe_file.py:
    a registered `base` and `[[amend]]` tables)."""
    key = str(name_or_path)
    if key in RECIPES:
        return RECIPES[key]
    path = Path(key)
    if path.suffix == ".toml":
        from pgolf.quant.recipe_file import load_recipe_file

        return load_recipe_file(path, RECIPES)
    raise ValueError(f"unknown quantization recipe {key!r}; valid names: {', '.join(RECIPES)} (or a .toml file)")


def recipe_for(quant: Any) -> QuantRecipe:
    """The recipe a QuantConfig selects: `quant.recipe` with its per-role overrides (`quant.rule_overrides`,
    from `--quant.ROLE.KNOB VALUE`) applied; the name records the overrides, e.g. "sota-lqer[mlp.bits=5]"."""
    recipe = get_recipe(quant.recipe)
    spec = getattr(quant, "rule_overrides", "")
    if not spec:
        return recipe
    from pgolf.quant.amend import apply_role_overrides, parse_role_overrides

    rules = apply_role_overrides(recipe.rules, parse_role_overrides(spec, ROLES))
    return dataclasses.replace(recipe, name=f"{recipe.name}[{spec}]", rules=rules,
                               description=f"{recipe.description}; overridden: {spec}").validate()
