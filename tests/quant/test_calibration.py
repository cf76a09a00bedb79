"""quant/calibration.py: every source gives ⌈n/b⌉ (≤b, L) batches, the right legality flag, and clear errors.

    python -m pytest tests/quant/test_calibration.py -q
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pgolf.data.loader import DistributedTokenLoader
from pgolf.data.shards import write_shard
from pgolf.model.generate import generate
from pgolf.model.gpt import GPT
from pgolf.quant.calibration import SOURCES, calibration_batches
from tests.model.conftest import randomize, tiny_config

SIZES = dict(vocab_size=64, num_seqs=10, seq_len=8, batch_size=4)


def _check_shapes(data, source: str) -> torch.Tensor:
    assert data.source == source and data.seconds >= 0 and data.note
    assert [tuple(b.shape) for b in data.batches] == [(4, 8), (4, 8), (2, 8)]
    tokens = torch.cat(data.batches)
    assert tokens.dtype == torch.long and 0 <= int(tokens.min()) and int(tokens.max()) < 64
    return tokens


def test_random_source_is_seeded_uniform_tokens():
    data = calibration_batches("random", seed=3, **SIZES)
    tokens = _check_shapes(data, "random")
    assert data.valid_for_record
    assert torch.equal(tokens, torch.cat(calibration_batches("random", seed=3, **SIZES).batches))
    assert not torch.equal(tokens, torch.cat(calibration_batches("random", seed=4, **SIZES).batches))


def test_val_source_takes_the_leading_tokens_and_is_flagged_not_record_legal():
    val = torch.arange(200) % 64
    data = calibration_batches("val", val_tokens=val, **SIZES)
    tokens = _check_shapes(data, "val")
    assert torch.equal(tokens.reshape(-1), val[:80])
    assert not data.valid_for_record and "#728" in data.note
    with pytest.raises(ValueError, match="val_tokens has 50 tokens"):
        calibration_batches("val", val_tokens=val[:50], **SIZES)


def test_train_source_continues_the_loader_stream(tmp_path):
    stream = np.arange(1000, dtype=np.uint16) % 64
    write_shard(tmp_path / "train_000.bin", stream)
    loader = DistributedTokenLoader([tmp_path / "train_000.bin"])
    loader.next_batch(32, 8, 1)  # training consumed one step of 32 tokens
    data = calibration_batches("train", loader=loader, **SIZES)
    tokens = _check_shapes(data, "train")
    assert data.valid_for_record and "reserve" in data.note
    # steps of 4 rows × 8 tokens from offset 32; the last step's rows are cut to num_seqs
    assert torch.equal(tokens.reshape(-1), torch.from_numpy(stream[32:112].astype(np.int64)))
    assert loader.position == 32 + 3 * 32
    loader.next_batch(64, 8, 2)  # first of two micro-steps
    with pytest.raises(ValueError, match="mid optimizer step"):
        calibration_batches("train", loader=loader, **SIZES)


def test_selfgen_source_is_generate_from_the_model():
    torch.manual_seed(0)
    model = randomize(GPT(tiny_config()).eval())
    data = calibration_batches("selfgen", model=model, seed=5, temperature=0.8, **SIZES)
    tokens = _check_shapes(data, "selfgen")
    assert data.valid_for_record and "#1019" in data.note
    assert torch.equal(tokens, generate(model, 10, 8, temperature=0.8, batch_size=4, seed=5))
    with pytest.raises(ValueError, match="model's vocab_size is 64"):
        calibration_batches("selfgen", model=model, **{**SIZES, "vocab_size": 128})


def test_unknown_source_and_missing_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="valid sources: train, val, selfgen, random"):
        calibration_batches("gibbs", **SIZES)
    assert SOURCES == ("train", "val", "selfgen", "random")
    for source, arg in (("train", "loader="), ("val", "val_tokens="), ("selfgen", "model=")):
        with pytest.raises(ValueError, match=f"'{source}' needs the {arg}"):
            calibration_batches(source, **SIZES)
    with pytest.raises(ValueError, match="must all be positive"):
        calibration_batches("random", **{**SIZES, "num_seqs": 0})


def test_only_selfgen_calibration_needs_model_generate(tmp_path):
    # the single-file script of a configuration without selfgen calibration leaves model/generate.py out
    # (pgolf.experiments.closure.excluded_modules); train/val/random calibration must run with it unimportable
    import subprocess
    import sys
    from pathlib import Path

    from pgolf.config import RunConfig
    from pgolf.experiments.closure import excluded_modules
    from pgolf.quant.config import QuantConfig

    assert "pgolf.model.generate" in excluded_modules(RunConfig(quant=QuantConfig(recipe="sota-lqer")))
    assert "pgolf.model.generate" not in excluded_modules(RunConfig(quant=QuantConfig(recipe="ar-calib-gptq")))
    assert "pgolf.model.generate" not in excluded_modules(  # a selfgen override of a train-calibrated recipe
        RunConfig(quant=QuantConfig(recipe="sota-lqer", calib_source="selfgen")))
    child = ("import sys, torch\nsys.modules['pgolf.model.generate'] = None\n"
             "from pgolf.quant.calibration import calibration_batches\n"
             "c = calibration_batches('random', vocab_size=64, num_seqs=3, seq_len=8, batch_size=2, seed=1)\n"
             "print(sum(int(b.sum()) for b in c.batches))\n"
             "m = torch.nn.Linear(1, 1)\nm.cfg = type('C', (), {'vocab_size': 64})()\n"
             "try:\n    calibration_batches('selfgen', model=m, vocab_size=64, num_seqs=1, seq_len=2, batch_size=1)\n"
             "except ImportError:\n    print('selfgen needs generate')\n")
    root = Path(__file__).resolve().parents[2]
    p = subprocess.run([sys.executable, "-c", child], cwd=root, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    ref = calibration_batches("random", vocab_size=64, num_seqs=3, seq_len=8, batch_size=2, seed=1)
    assert p.stdout.split() == [str(sum(int(b.sum()) for b in ref.batches)), "selfgen", "needs", "generate"]
