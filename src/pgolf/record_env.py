"""The records' hyperparameter environment variables → dotted config fields (`pgolf run --from-env`), so a record's
run command ports directly."""

from __future__ import annotations

from typing import Any, Mapping

from pgolf.config import Text


ENV_FIELDS: dict[str, str] = {
    # data
    "VOCAB_SIZE": "model.vocab_size",
    "DATA_PATH": "data.data_dir",
    "TOKENIZER_PATH": "data.tokenizer_path",
    # model
    "NUM_LAYERS": "model.num_layers",
    "MODEL_DIM": "model.model_dim",
    "NUM_HEADS": "model.num_heads",
    "NUM_KV_HEADS": "model.num_kv_heads",
    "MLP_MULT": "model.mlp_mult",
    "ROPE_BASE": "model.rope_base",
    "ROPE_DIMS": "model.rope_dims",
    "QK_GAIN_INIT": "model.qk_gain_init",
    "LOGIT_SOFTCAP": "model.logit_softcap",
    "TIE_EMBEDDINGS": "model.tie_embeddings",
    "TIED_EMBED_INIT_STD": "model.tied_embed_init_std",
    "XSA_LAST_N": "model.xsa_last_n",
    "BIGRAM_VOCAB_SIZE": "model.bigram_vocab_size",
    "BIGRAM_DIM": "model.bigram_dim",
    "VE_DIM": "model.ve_dim",
    "VE_LAYERS": "model.ve_layers",
    "NUM_LOOPS": "model.num_loops",
    "LOOP_START": "model.loop_start",
    "LOOP_END": "model.loop_end",
    "PARALLEL_START_LAYER": "model.parallel_start_layer",
    "SPARSE_ATTN_GATE_ENABLED": "model.sparse_attn_gate",
    "SPARSE_ATTN_GATE_SCALE": "model.sparse_attn_gate_scale",
    # train
    "SEED": "train.seed",
    "ITERATIONS": "train.iterations",
    "MAX_WALLCLOCK_SECONDS": "train.max_wallclock_seconds",
    "GPTQ_RESERVE_SECONDS": "train.calib_reserve_seconds",
    "TRAIN_BATCH_TOKENS": "train.train_batch_tokens",
    "TRAIN_SEQ_LEN": "train.train_seq_len",
    "MATRIX_LR": "train.matrix_lr",
    "MUON_MOMENTUM": "train.muon_momentum",
    "MUON_MOMENTUM_WARMUP_START": "train.muon_momentum_warmup_start",
    "MUON_MOMENTUM_WARMUP_STEPS": "train.muon_momentum_warmup_steps",
    "MUON_BACKEND_STEPS": "train.muon_backend_steps",
    "MUON_ROW_NORMALIZE": "train.muon_row_normalize",
    "MUON_WD": "train.muon_wd",
    "TIED_EMBED_LR": "train.tied_embed_lr",
    "EMBED_LR": "train.embed_lr",
    "HEAD_LR": "train.head_lr",
    "SCALAR_LR": "train.scalar_lr",
    "BETA1": "train.adam_beta1",
    "BETA2": "train.adam_beta2",
    "ADAM_EPS": "train.adam_eps",
    "ADAM_WD": "train.adam_wd",
    "EMBED_WD": "train.embed_wd",
    "GRAD_CLIP_NORM": "train.grad_clip_norm",
    "WARMDOWN_FRAC": "train.warmdown_frac",
    "MIN_LR": "train.min_lr",
    "EMA_DECAY": "train.ema_decay",
    "ENABLE_LOOPING_AT": "train.enable_looping_at",
    "VAL_LOSS_EVERY": "train.val_every",
    "TRAIN_LOG_EVERY": "train.log_every",
    # eval
    "EVAL_SEQ_LEN": "eval.seq_len",
    "EVAL_STRIDE": "eval.stride",
    # pack
    "COMPRESSOR": "pack.codec",
}

# Record variables whose meaning pgolf expresses differently: named so `--from-env` can say what to do instead.
ENV_UNSUPPORTED: dict[str, str] = {
    "WARMDOWN_ITERS": "use train.warmdown_frac (pgolf's schedule is a fraction of the wallclock budget, R0405+)",
    "WARMUP_STEPS": "compile warm-up steps are not replayed by pgolf; nothing to set",
    "RUN_ID": "use run.name",
}


def env_layer(environ: Mapping[str, str]) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Translate the records' hyperparameter environment variables into a config layer.

    Returns the layer and notes about record variables that were seen but have no pgolf equivalent."""
    out: dict[str, dict[str, Any]] = {}
    for var, dotted in ENV_FIELDS.items():
        if var in environ:
            section, key = dotted.split(".")
            value: Any = environ[var]
            if var == "COMPRESSOR" and value == "pergroup":
                raise ValueError("COMPRESSOR=pergroup (R0427's per-group lrzip) is not a run codec: the default "
                                 "rans-ctx is smaller on every group (bench/pack_vs_lrzip.py); to reproduce the "
                                 "record's bytes, re-encode the artifact with `pgolf pack ARTIFACT --codec lrzip-groups`")
            out.setdefault(section, {})[key] = Text(value)
    notes = [f"ignored {var}={environ[var]}: {advice}" for var, advice in ENV_UNSUPPORTED.items() if var in environ]
    if "VOCAB_SIZE" in environ:
        out.setdefault("data", {})["vocab_size"] = Text(environ["VOCAB_SIZE"])
    return out, notes
