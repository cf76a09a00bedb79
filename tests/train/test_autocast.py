"""train.autocast: which dtype each rule picks, that the loop really trains in it, and bf16 training tracks fp32.

    python -m pytest tests/train/test_autocast.py -q
"""

from __future__ import annotations

import pytest
import torch

from pgolf.log import RunLogger
from pgolf.model.config import GPTConfig
from pgolf.model.gpt import GPT
from pgolf.model.layers import CastedLinear
from pgolf.train import loop as loop_module
from pgolf.train.config import TrainConfig
from pgolf.train.loop import autocast_dtype, train


class _PatternLoader:
    """Rows of x[t+1] = (5·x[t] + 3) mod V, with 30 % of the tokens replaced at random (an entropy floor), from
    random starts (seeded per call)."""

    def __init__(self, vocab: int):
        self.vocab, self.pos = vocab, 0

    def next_batch(self, global_tokens, seq_len, grad_accum_steps):
        gen = torch.Generator().manual_seed(self.pos)
        self.pos += 1
        rows = global_tokens // seq_len
        x = torch.empty(rows, seq_len + 1, dtype=torch.long)
        x[:, 0] = torch.randint(0, self.vocab, (rows,), generator=gen)
        for t in range(seq_len):
            x[:, t + 1] = (5 * x[:, t] + 3) % self.vocab
        noise = torch.rand(x.shape, generator=gen) < 0.3
        x[noise] = torch.randint(0, self.vocab, (int(noise.sum()),), generator=gen)
        return x[:, :-1], x[:, 1:]

    def state_dict(self):
        return {"pos": self.pos}

    def load_state_dict(self, d):
        self.pos = d["pos"]


def _model() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=64, num_layers=2, model_dim=64, num_heads=4, num_kv_heads=2, mlp_mult=2.0,
                         mlp_act="leaky_relu2", xsa_last_n=1, bigram_vocab_size=32, bigram_dim=16,
                         smear_gate="v2", gate_window=8, bos_id=1))


def _train(tmp_path, autocast: str, steps: int = 40, dtypes: set | None = None):
    model = _model()
    if dtypes is not None:  # record the dtype every CastedLinear computes in
        for m in model.modules():
            if isinstance(m, CastedLinear):
                m.register_forward_hook(lambda mod, inp, out: dtypes.add(out.dtype))
    cfg = TrainConfig(max_wallclock_seconds=0, iterations=steps, train_seq_len=32, train_batch_tokens=256,
                      warmdown_frac=0.3, ema_decay=0.9, grad_clip_norm=0.3, muon_ns_dtype="fp32", log_every=1000,
                      autocast=autocast)
    res = train(cfg, model, _PatternLoader(64), logger=RunLogger(None, enabled=False), run_dir=tmp_path / autocast,
                device=torch.device("cpu"))
    return res, model


def test_rules():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert autocast_dtype("off", cpu) is None and autocast_dtype("off", cuda) is None
    assert autocast_dtype("bf16", cpu) is torch.bfloat16 and autocast_dtype("auto", cuda) is torch.bfloat16


@pytest.mark.parametrize("native", [True, False])
def test_auto_on_cpu_follows_native_bf16(monkeypatch, native):
    monkeypatch.setattr(loop_module, "cpu_has_native_bf16", lambda: native)
    assert autocast_dtype("auto", torch.device("cpu")) is (torch.bfloat16 if native else None)


def test_bad_value_names_the_field():
    with pytest.raises(ValueError, match="train.autocast='fp16'"):
        TrainConfig(autocast="fp16")  # type: ignore[arg-type]


def test_off_trains_in_fp32_and_bf16_tracks_it(tmp_path):
    seen_off, seen_bf16 = set(), set()
    off, _ = _train(tmp_path, "off", dtypes=seen_off)
    bf16, m_bf16 = _train(tmp_path, "bf16", dtypes=seen_bf16)
    assert seen_off == {torch.float32} and seen_bf16 == {torch.bfloat16}
    assert all(p.dtype == torch.float32 for p in m_bf16.parameters())  # fp32 masters under autocast
    mean = lambda xs: sum(xs) / len(xs)
    for res in (off, bf16):
        assert mean(res.step_loss[-10:]) < mean(res.step_loss[:3]) - 1.0, res.step_loss  # both learn
    assert off.step_loss != bf16.step_loss  # a different computation...
    assert abs(off.step_loss[0] - bf16.step_loss[0]) < 0.01  # same model and batch at step 1: rounding only
    assert abs(mean(off.step_loss[-10:]) - mean(bf16.step_loss[-10:])) < 0.05  # ...that tracks fp32
