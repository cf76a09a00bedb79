"""The pipeline stages wired end to end: data → model → train → quantize → pack → round-trip score.

Each `*_stage` function takes what it needs and returns what the next one needs; `run_pipeline` strings them
together for `pgolf run`, and the CLI verbs `train`, `quantize` and `eval` call the same functions. The number
reported as the score is always the round trip: the artifact is written, read back from disk, decoded, loaded into a
fresh model and evaluated.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

import pgolf
from pgolf.config import RunConfig, config_from_dict
from pgolf.data.bytes import BYTES_LUT, ByteLUT, build_byte_lut, validation_bytes
from pgolf.data.corpus import DatasetInfo
from pgolf.data.dataset import resolve_dataset
from pgolf.data.loader import DistributedTokenLoader, load_validation_tokens
from pgolf.data.shards import check_token_ids
from pgolf.data.tokenizer import load_tokenizer
from pgolf.eval.modes import evaluate
from pgolf.eval.score import EvalResult
from pgolf.eval.roundtrip import check_score, load_model_from_artifact
from pgolf.io import atomic_write_json
from pgolf.log import RunLogger
from pgolf.model.gpt import GPT, format_parameter_counts
from pgolf.pack.budget import ByteReport, check_budget, script_code_bytes
from pgolf.pack.container import encode_artifact, write_artifact
from pgolf.quant.apply import quantize_state_dict
from pgolf.quant.recipes import recipe_for
from pgolf.train.checkpoint import CHECKPOINT_NAME, load_checkpoint, trained_weights
from pgolf.train.distributed import DistInfo, barrier
from pgolf.train.loop import TrainResult, train

ARTIFACT_NAME = "model.pgolf"
RUN_RECORD = "run.json"


# ------------------------------------------------------------------------------------------------ run record

def _git_sha() -> dict[str, Any]:
    """{"sha", "dirty"} of the checkout pgolf runs from (None, None outside a git checkout). git looks upwards from
    the package's folder (the single-file script's folder, where `pgolf.__file__` is the script: a fixed number of
    parents would not exist for a script at /x/train_gpt.py)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(Path(pgolf.__file__).resolve().parent), *args],
                              capture_output=True, text=True, timeout=5).stdout.strip()

    try:
        sha = git("rev-parse", "HEAD") or None
        return {"sha": sha, "dirty": bool(git("status", "--porcelain", "--untracked-files=no")) if sha else None}
    except (OSError, subprocess.SubprocessError):
        return {"sha": None, "dirty": None}


def environment_info() -> dict[str, Any]:
    cuda = torch.cuda.is_available()
    return {"pgolf": pgolf.__version__, "python": platform.python_version(), "torch": torch.__version__,
            "numpy": np.__version__, "platform": platform.platform(), "cpu_count": os.cpu_count(),
            "cuda": torch.version.cuda if cuda else None, "gpu": torch.cuda.get_device_name(0) if cuda else None,
            "git": _git_sha()}



def sha256_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# ------------------------------------------------------------------------------------------------ stages

@dataclass
class DataBundle:
    dataset: DatasetInfo
    lut: ByteLUT
    val_tokens: torch.Tensor
    tokenizer_sha256: str
    target_bytes: torch.Tensor
    """Bytes credited per val token (entry i: token i as a target; eval/score.py): the dataset's val byte sidecar
    or the tokenizer LUT (data/bytes.py validation_bytes)."""
    byte_accounting: str = BYTES_LUT
    """"sidecar" (the dataset's val byte sidecar, CaseOps) or "lut" (the tokenizer's piece table)."""

    def record(self) -> dict[str, Any]:
        """run.json "data"."""
        return {"dir": str(self.dataset.data_dir), "train_tokens": self.dataset.num_train_tokens,
                "val_tokens": self.val_tokens.numel() - 1, "tokenizer_sha256": self.tokenizer_sha256,
                "bytes": self.byte_accounting}


def data_stage(cfg: RunConfig, dist_info: DistInfo, logger: RunLogger, *, require_train: bool = True) -> DataBundle:
    """Resolve (and on first use prepare) the dataset, check the tokenizer against the model, load validation and
    its per-token bytes (the sidecar if the dataset has one, else the LUT). require_train=False: eval-only data."""
    if dist_info.is_main:
        dataset = resolve_dataset(cfg.data, require_train=require_train, progress=logger.progress_mode)
    barrier()
    if not dist_info.is_main:
        dataset = resolve_dataset(cfg.data, require_train=require_train)
    sp = load_tokenizer(dataset.tokenizer_path)
    lut = build_byte_lut(sp, cfg.model.vocab_size, name=str(dataset.tokenizer_path))
    check_token_ids([*dataset.train_files, *dataset.val_files], cfg.model.vocab_size)  # shard, offset, vocab
    val_tokens = load_validation_tokens(dataset.val_files, cfg.eval_seq_len, cfg.data.val_max_tokens)
    data = DataBundle(dataset, lut, val_tokens, sha256_file(dataset.tokenizer_path),
                      *validation_bytes(dataset, sp, val_tokens, lut))
    info = data.record()
    logger.event("data", dir=info["dir"], train_tokens=info["train_tokens"], val_tokens=info["val_tokens"],
                 vocab=cfg.model.vocab_size, bytes="LUT" if data.byte_accounting == BYTES_LUT else info["bytes"])
    return data


def build_model(cfg: RunConfig, device: torch.device) -> GPT:
    torch.manual_seed(cfg.train.seed)
    return GPT(cfg.model).to(device)


def score(model: torch.nn.Module, data: DataBundle, cfg: RunConfig, device: torch.device, *,
          stride: int | None = None, progress: bool = False, ecfg: Any = None) -> EvalResult:
    """val_bpb of `model` on data's val tokens with the EvalConfig `ecfg` (e.g. cfg.eval: the configured mode,
    capped at its max_seconds); by default the "standard" mode with eval.stride (or `stride`), never capped."""
    ecfg = ecfg or replace(cfg.eval, mode="standard", stride=cfg.eval.stride if stride is None else stride,
                           max_seconds=0)
    return evaluate(model, data.val_tokens, data.target_bytes, ecfg, seq_len=cfg.eval_seq_len, device=device,
                    bos_id=cfg.model.bos_id, progress=progress)


def train_stage(cfg: RunConfig, data: DataBundle, run_dir: Path, dist_info: DistInfo, logger: RunLogger,
                *, resume: bool = False) -> tuple[GPT, TrainResult]:
    model = build_model(cfg, dist_info.device)
    counts = model.parameter_counts()
    logger.event("model", **counts)
    for line in format_parameter_counts(counts).splitlines():
        logger.line(line)
    loader = DistributedTokenLoader(data.dataset.train_files, dist_info.rank, dist_info.world_size)
    val_fn = (lambda m: score(m, data, cfg, dist_info.device, stride=0)) if cfg.train.val_every else None
    qat = None
    if cfg.train.qat_threshold > 0:  # late QAT with the export rule of the configured recipe (quant/qat.py)
        from pgolf.quant.calibration import calibration_batches
        from pgolf.quant.qat import install_qat

        recipe = recipe_for(cfg.quant)
        # Adaptive-σ / mixed-bits recipes: Hessians at QAT switch-on from the same training tokens the exporter's
        # "train" calibration reads (a fresh rank-0 loader, so every rank sees the same batches).
        calib = cfg.quant.calibration_for(recipe, cfg.train.train_seq_len, seqs=cfg.train.qat_calib_seqs)
        seqs, seq_len = calib.seqs, calib.seq_len

        def qat_batches() -> list[torch.Tensor]:
            return calibration_batches(
                "train", loader=DistributedTokenLoader(data.dataset.train_files, 0, 1),
                vocab_size=cfg.model.vocab_size, num_seqs=seqs, seq_len=seq_len,
                batch_size=calib.batch_size).batches

        qat = install_qat(model, recipe, calib_batches=qat_batches)
    # End of training: raw vs EMA weights scored exactly as the pre-quant score (train.ema_select, issue 18).
    select_fn = ((lambda m: score(m, data, cfg, dist_info.device, progress=logger.progress_mode))  # raw vs EMA
                 if cfg.train.ema_decay > 0 else None)
    result = train(cfg.train, model, loader, logger=logger, run_dir=run_dir, device=dist_info.device,
                   resume=resume, val_fn=val_fn, config_dict=cfg.to_dict(), qat=qat, select_fn=select_fn)
    if qat is not None:
        qat.remove(model)  # the trained fp32 weights go to the quantizer; the forward is plain again
    return model, result


def counted_code_bytes(cfg: RunConfig | None) -> int:
    """Code bytes charged against the cap: inside the single-file script its own size, else the size of the script
    `pgolf bundle` writes for `cfg` (the bundler is tooling: never imported inside the script, nor by pack/)."""
    own = script_code_bytes()
    if own is not None:
        return own
    from pgolf.experiments.bundle import measure_code_bytes

    return measure_code_bytes(cfg)


@dataclass
class PackResult:
    path: Path
    bytes_report: ByteReport
    tensor_report: list[dict]
    quantize_seconds: float
    """Quantize + encode wall time, excluding the calibration forwards (see `calibration`)."""
    calibration: dict[str, Any] | None = None
    """For Hessian recipes: source, seconds, tokens, batches, valid_for_record, note (run.json quant.calibration)."""
    fit: dict[str, Any] | None = None
    """With pack.budget: the budget fit's target, bytes, slack, rounds and per-tensor choices (pack/fit.py)."""


def calibration_stage(cfg: RunConfig, state_dict: dict[str, torch.Tensor], recipe: Any, *,
                      dataset: DatasetInfo | None = None, val_tokens: torch.Tensor | None = None,
                      looping_active: bool = False, device: torch.device | None = None,
                      logger: RunLogger | None = None,
                      progress: Any = False) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Hessians for a GPTQ recipe: rebuild the model from `state_dict`, draw calibration tokens, collect XᵀX.

    Source = quant.calib_source, else the recipe's record default. "train" reads a *fresh* DistributedTokenLoader
    over the train shards (rank 0, from the start of the stream, not the continuation of the training loader):
    in the records this happens inside the wallclock reserve; here, run after training, it is only record-valid
    when train.calib_reserve_seconds covers the measured calibration time (on CPU it usually does not, so
    valid_for_record is False). "val" is never record-valid (PR #728). "selfgen"/"random" are.
    """
    from pgolf.quant.calibration import calibration_batches
    from pgolf.quant.hessian import collect_hessians

    c = cfg.quant.calibration_for(recipe, cfg.train.train_seq_len)
    source, seqs, seq_len, temperature = c.source, c.seqs, c.seq_len, c.temperature
    device = device or torch.device("cpu")
    model = GPT(cfg.model).to(device)
    model.load_state_dict(state_dict, strict=True)
    model.set_looping(looping_active)
    model.eval()
    kwargs: dict[str, Any] = {}
    if source == "train":
        if dataset is None:
            raise ValueError("train-data calibration needs the dataset (data.data_dir)")
        kwargs["loader"] = DistributedTokenLoader(dataset.train_files, 0, 1)
    elif source == "val":
        if val_tokens is None:
            if dataset is None:
                raise ValueError("val-data calibration needs the dataset (data.data_dir)")
            val_tokens = load_validation_tokens(dataset.val_files, seq_len, seqs * seq_len)
        kwargs["val_tokens"] = val_tokens
    from pgolf.progress import task, track

    with task(f"calibration: {seqs} × {seq_len} {source} tokens", enabled=progress):
        calib = calibration_batches(source, model=model, vocab_size=cfg.model.vocab_size, num_seqs=seqs,
                                    seq_len=seq_len, batch_size=c.batch_size, seed=c.seed,
                                    temperature=temperature, **kwargs)
    hs = collect_hessians(model, track(calib.batches, "calibration Hessians", enabled=progress, unit="batch"))
    seconds = calib.seconds + hs.seconds
    valid = calib.valid_for_record and (source != "train" or cfg.train.calib_reserve_seconds >= seconds)
    info = {"source": source, "seqs": seqs, "seq_len": seq_len, "tokens": hs.num_tokens, "batches": hs.num_batches,
            "temperature": temperature if source == "selfgen" else None,
            "token_seconds": round(calib.seconds, 3), "hessian_seconds": round(hs.seconds, 3),
            "seconds": round(seconds, 3), "valid_for_record": valid, "note": calib.note}
    if source == "train" and not valid:
        info["note"] += (f"; here collected after training in {seconds:.1f} s, outside the wallclock reserve "
                         f"(train.calib_reserve_seconds={cfg.train.calib_reserve_seconds})")
    if logger is not None:
        logger.event("calibration", **{k: v for k, v in info.items() if k != "note"})
    return {k: v.detach().float().cpu() for k, v in hs.h.items()}, info


def quantize_stage(cfg: RunConfig, state_dict: dict[str, torch.Tensor], run_dir: Path, logger: RunLogger, *,
                   tokenizer_sha256: str | None = None, artifact_path: Path | None = None,
                   looping_active: bool = False, progress: bool = False, dataset: DatasetInfo | None = None,
                   val_tokens: torch.Tensor | None = None, device: torch.device | None = None,
                   byte_accounting: str | None = None) -> PackResult:
    """Quantize with the configured recipe, pack with the configured codec, write the artifact atomically.

    Hessian recipes first run `calibration_stage` (needs `dataset` for train/val sources); its time is reported
    apart from the quantize time.
    """
    recipe = recipe_for(cfg.quant)
    state_dict = {k: v.detach().cpu() for k, v in state_dict.items()}
    hessians, calibration = None, None
    if recipe.needs_hessians:
        hessians, calibration = calibration_stage(cfg, state_dict, recipe, dataset=dataset, val_tokens=val_tokens,
                                                  looping_active=looping_active, device=device, logger=logger,
                                                  progress=progress)
    t0 = time.perf_counter()
    manifest = {
        "model": asdict(cfg.model), "recipe": recipe.name, "codec": cfg.pack.codec,
        "tokenizer_sha256": tokenizer_sha256, "pgolf_version": pgolf.__version__, "config": cfg.to_dict(),
        "looping_active": looping_active, "recipe_spec": asdict(recipe),
        "byte_accounting": byte_accounting,  # "sidecar" | "lut" | None (unknown); pgolf eval refuses a mismatch
    }
    code_bytes = counted_code_bytes(cfg)  # the counted script of this configuration
    fit_info = None
    if cfg.pack.budget:  # fit per-tensor bits/σ to the byte budget with the real encoder (pack/fit.py)
        from pgolf.pack.fit import FitError, fit_to_budget

        if cfg.pack.budget <= code_bytes:
            raise FitError(f"pack.budget={cfg.pack.budget:,} bytes does not even hold the {code_bytes:,} code bytes "
                           "(the counted single-file script); nothing is left for the model")
        fit = fit_to_budget(state_dict, recipe, target_model_bytes=cfg.pack.budget - code_bytes,
                            codec=cfg.pack.codec, manifest=manifest, hessians=hessians,
                            sigma_multipliers=cfg.pack.fit_sigma_multipliers, bits_delta=cfg.pack.fit_bits_delta,
                            progress=progress)
        blob, tensor_report, fit_info = fit.blob, fit.rows, fit.info
        logger.event("fit", budget=cfg.pack.budget, code=code_bytes, model=len(blob),
                     slack=cfg.pack.budget - code_bytes - len(blob),
                     slack_pct=round(100 * (cfg.pack.budget - code_bytes - len(blob)) / cfg.pack.budget, 4),
                     rounds=len(fit.info["rounds"]), tensors=fit.info["fitted_tensors"],
                     candidates=fit.info["candidates"], pruned=fit.info["pruned_ones"],
                     bits=",".join(f"{b}:{n}" for b, n in fit.info["bits_numel"].items()),
                     seconds=fit.info["seconds"])
    else:
        qstate, tensor_report = quantize_state_dict(state_dict, recipe, hessians=hessians, progress=progress)
        blob = encode_artifact(qstate, manifest, cfg.pack.codec, progress=progress)
    report = ByteReport(model_bytes=len(blob), code_bytes=code_bytes, limit=cfg.pack.byte_limit)
    seconds = time.perf_counter() - t0
    logger.event("quantize", recipe=recipe.name, codec=cfg.pack.codec, seconds=round(seconds, 2))
    logger.event("bytes", model=report.model_bytes, code=report.code_bytes, total=report.total,
                 limit=report.limit, headroom=report.headroom)
    check_budget(report, allow_over=cfg.pack.allow_over_limit)
    path = Path(artifact_path or Path(run_dir) / ARTIFACT_NAME)
    write_artifact(path, blob)
    return PackResult(path, report, tensor_report, seconds, calibration, fit_info)


def roundtrip_stage(artifact_path: Path, cfg: RunConfig, data: DataBundle, device: torch.device,
                    logger: RunLogger, *, progress: bool = False) -> EvalResult:
    """Read the artifact back from disk, rebuild the model from its bytes alone, and score it."""
    blob = Path(artifact_path).read_bytes()
    model, manifest = load_model_from_artifact(blob, device=device)
    if data.tokenizer_sha256 and manifest.get("tokenizer_sha256") not in (None, data.tokenizer_sha256):
        logger.event("warning", note="artifact was trained with a different tokenizer file than the one scored")
    if manifest.get("byte_accounting") not in (None, data.byte_accounting):
        raise ValueError(f"{artifact_path}: the artifact was scored with byte accounting "
                         f"{manifest['byte_accounting']!r} but {data.dataset.data_dir} gives {data.byte_accounting!r} "
                         "(a CaseOps model needs its val byte sidecar; a plain model the tokenizer's LUT): "
                         "point --data-dir at the data the model was trained on")
    res = score(model, data, cfg, device, progress=progress, ecfg=cfg.eval)
    check_score(res.val_loss, res.val_bpb)  # a NaN score is an error (rc 2), never a result
    return res


# ------------------------------------------------------------------------------------------------ pgolf run

def run_pipeline(cfg: RunConfig, run_dir: Path, dist_info: DistInfo, logger: RunLogger, *,
                 resume: bool = False, preset: str | None = None) -> dict[str, Any]:
    t_start = time.time()
    run_dir.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {"format": "pgolf-run-v1", "preset": preset, "config": cfg.to_dict(),
                              "env": environment_info(), "world_size": dist_info.world_size}
    data = data_stage(cfg, dist_info, logger)
    record["data"] = data.record()
    model, result = train_stage(cfg, data, run_dir, dist_info, logger, resume=resume)
    weights = result.weights or {}  # raw vs EMA val scores and the choice (train.ema_select)
    record.update(params=model.parameter_counts(), train=result.to_dict(), weights=result.weights)
    chosen = weights.get(weights.get("chosen", ""))
    # The weight selection already scored the chosen weights with this same scorer: reuse it.
    pre = EvalResult(**chosen) if chosen else score(model, data, cfg, dist_info.device, progress=logger.progress_mode)
    logger.event("prequant", val_loss=round(pre.val_loss, 6), val_bpb=round(pre.val_bpb, 6),
                 eval_s=round(pre.seconds, 2), weights=weights.get("chosen", "raw"))
    record["prequant"] = asdict(pre)
    if dist_info.is_main:
        packed = quantize_stage(cfg, model.state_dict(), run_dir, logger, tokenizer_sha256=data.tokenizer_sha256,
                                looping_active=model.looping_active, dataset=data.dataset,
                                val_tokens=data.val_tokens, device=dist_info.device,
                                byte_accounting=data.byte_accounting, progress=logger.progress_mode)
        record["bytes"] = packed.bytes_report.to_dict()
        record["quant"] = {"recipe": cfg.quant.recipe, "seconds": packed.quantize_seconds,
                           "calibration": packed.calibration, "fit": packed.fit,
                           "tensors": packed.tensor_report}
    barrier()
    artifact = run_dir / ARTIFACT_NAME
    rt = roundtrip_stage(artifact, cfg, data, dist_info.device, logger, progress=logger.progress_mode)
    record.update(roundtrip=asdict(rt), quant_gap_bpb=rt.val_bpb - pre.val_bpb, artifact=str(artifact),
                  wall_seconds=time.time() - t_start)
    logger.event("final_roundtrip", val_loss=f"{rt.val_loss:.8f}", val_bpb=f"{rt.val_bpb:.8f}",
                 mode=rt.mode, tokens=rt.num_tokens, bytes=rt.num_bytes)
    if dist_info.is_main:
        logger.line(f"pre-quant val_bpb {pre.val_bpb:.6f} | round-trip val_bpb {rt.val_bpb:.6f} | "
                    f"quantization gap {rt.val_bpb - pre.val_bpb:+.6f}")
        logger.line(packed.bytes_report.format())
        logger.line(f"run directory: {run_dir}  (artifact {ARTIFACT_NAME}, {RUN_RECORD}, train.log)")
        atomic_write_json(run_dir / RUN_RECORD, record)
    return record


def load_run_or_checkpoint(path: Path, weights: str | None = None) -> tuple[RunConfig, dict[str, torch.Tensor],
                                                                           Path, bool]:
    """A run directory (with checkpoint.pt) or a checkpoint file → (config, weights, run dir, looping active).

    weights: "ema" | "raw" | None (the run's choice, train.ema_select; checkpoint.trained_weights)."""
    path = Path(path)
    ckpt = path / CHECKPOINT_NAME if path.is_dir() else path
    if not ckpt.is_file():
        raise FileNotFoundError(f"{path}: expected a run directory containing {CHECKPOINT_NAME} or a checkpoint file")
    state = load_checkpoint(ckpt)
    if not state.get("config"):
        raise ValueError(f"checkpoint {ckpt} carries no configuration")
    return (config_from_dict(state["config"]), trained_weights(state, weights), ckpt.parent,
            bool(state.get("looping_active")))
