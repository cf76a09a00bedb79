"""GPTQ calibration token sources (docs/techniques.md#calibration): train / val / selfgen / random.

    calib = calibration_batches("selfgen", model=model, vocab_size=1024, num_seqs=64, seq_len=2048, batch_size=8)
    hessians = collect_hessians(model, calib.batches)            # quant/hessian.py

* train — the next batches of the training DistributedTokenLoader (2026-03-29; R0405 64 batches, R0414/R0427 16):
  legal only inside the training wallclock reserve (`train.calib_reserve_seconds`); after the 600 s it was ruled
  illegal (PR #535 and followers).
* val — validation tokens (original PR #728): not record-legal, PR #728 was withdrawn (recreated as #1019).
* selfgen — model/generate.py samples at T = 0.8 (R0325/R0331 AR calibration): legal ("confirmed legal by organizer
  on PR #1019"), run after the training timer.
* random — uniform tokens in [0, V), seeded: legal (PR #756 ablation: +0.002 BPB vs val data).

Every source returns ⌈num_seqs / batch_size⌉ batches of (≤ batch_size, seq_len) int64 tokens.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from pgolf.data.loader import DistributedTokenLoader

SOURCES = ("train", "val", "selfgen", "random")

_NOTES = {  # run.json's quant.calibration.note; the reasons at length: docs/techniques.md#calibration
    "train": "training stream: legal only inside the training wallclock reserve (train.calib_reserve_seconds; "
             "PR #535)",
    "val": "validation data: not record-legal (PR #728, withdrawn); ablations only",
    "selfgen": "AR self-generated from the trained model: legal (R0325, PR #1019)",
    "random": "uniform random tokens (PR #756 ablation: +0.002 BPB vs val data)",
}


@dataclass
class CalibrationData:
    batches: list[Tensor]
    """Token batches (≤ batch_size, seq_len) int64 (selfgen: on the model's device, else CPU)."""
    source: str
    seconds: float
    valid_for_record: bool
    """False when a record submission may not use this source (val data)."""
    note: str


def calibration_batches(
    source: str,
    *,
    model: nn.Module | None = None,
    loader: DistributedTokenLoader | None = None,
    val_tokens: Tensor | None = None,
    vocab_size: int,
    num_seqs: int,
    seq_len: int,
    batch_size: int,
    seed: int = 0,
    temperature: float = 0.8,
) -> CalibrationData:
    """num_seqs sequences of seq_len tokens from `source`, in batches of batch_size rows.

    train: needs `loader` (advanced by ⌈num_seqs / batch_size⌉ steps of batch_size rows per rank — the records'
    `train_loader.next_batch` continuation). val: needs `val_tokens` (1-D; its first num_seqs·seq_len tokens).
    selfgen: needs `model` (a GPT; sampled with `temperature` and `seed` on the model's device). random: seeded.
    """
    if source not in SOURCES:
        raise ValueError(f"unknown calibration source {source!r}; valid sources: {', '.join(SOURCES)}")
    if min(num_seqs, seq_len, batch_size, vocab_size) <= 0:
        raise ValueError(f"num_seqs={num_seqs}, seq_len={seq_len}, batch_size={batch_size}, "
                         f"vocab_size={vocab_size} must all be positive")
    needed = {"train": ("loader", loader), "val": ("val_tokens", val_tokens), "selfgen": ("model", model)}
    if source in needed and needed[source][1] is None:
        raise ValueError(f"calibration source {source!r} needs the {needed[source][0]}= argument")
    t0 = time.perf_counter()
    num_batches = math.ceil(num_seqs / batch_size)
    if source == "train":
        tokens = _from_loader(loader, num_seqs, seq_len, batch_size)
    elif source == "val":
        tokens = _from_val(val_tokens, num_seqs, seq_len)
    elif source == "selfgen":
        cfg_vocab = model.cfg.vocab_size
        if cfg_vocab != vocab_size:
            raise ValueError(f"vocab_size={vocab_size} but the model's vocab_size is {cfg_vocab}")
        from pgolf.model.generate import generate  # here: a script without selfgen calibration leaves it out

        device = next(model.parameters()).device
        tokens = generate(model, num_seqs, seq_len, temperature=temperature, batch_size=batch_size, seed=seed,
                          device=device)
    else:
        gen = torch.Generator().manual_seed(seed)
        tokens = torch.randint(0, vocab_size, (num_seqs, seq_len), generator=gen, dtype=torch.long)
    batches = [tokens[i * batch_size : (i + 1) * batch_size] for i in range(num_batches)]
    return CalibrationData(batches, source, time.perf_counter() - t0, source != "val", _NOTES[source])


def _from_loader(loader: DistributedTokenLoader, num_seqs: int, seq_len: int, batch_size: int) -> Tensor:
    """The loader's next batches, batch_size rows each on this rank (one optimizer step of batch_size·L·W tokens)."""
    if loader.micro_step:
        raise ValueError(f"the train loader is mid optimizer step (micro_step={loader.micro_step}); draw calibration "
                         "batches between optimizer steps")
    rows = []
    global_tokens = batch_size * seq_len * loader.world_size
    for _ in range(math.ceil(num_seqs / batch_size)):
        x, _y = loader.next_batch(global_tokens, seq_len, 1)  # (batch_size, seq_len)
        rows.append(x)
    return torch.cat(rows)[:num_seqs]


def _from_val(val_tokens: Tensor, num_seqs: int, seq_len: int) -> Tensor:
    """The first num_seqs·seq_len validation tokens as (num_seqs, seq_len)."""
    need = num_seqs * seq_len
    flat = val_tokens.reshape(-1)
    if flat.numel() < need:
        raise ValueError(f"val_tokens has {flat.numel()} tokens; num_seqs·seq_len = {num_seqs}·{seq_len} = {need}")
    return flat[:need].to(torch.long).reshape(num_seqs, seq_len)
