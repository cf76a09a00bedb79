"""How often the legality checker (pgolf.eval.legal) catches each deliberately illegal evaluation, over many seeds,
and what a check costs.

    OMP_NUM_THREADS=1 python bench/check_legal.py --seeds 10

Variants (tests/eval/legal_modes.py): a leak confined to the last of 4 or 16 TTT chunks (the last chunk trains on
itself, unreported, before it is scored; or its targets get +1 on the realized token's logit), a mode that records
a legal pass but returns a train-then-score score, an anti-causal model (a GPT reading each row right to left),
train-then-score with no update reported. Each seed draws a new tiny GPT (2 layers, dim 32, the zero-initialised
projections randomised) and a new token stream. The check is the default one: one perturbed token per unit (the
returned-score variant: one token, as its unit is the base run's recorded score).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.eval.legal_modes


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=10)
    args = p.parse_args()

    from pgolf.eval.config import EvalConfig
    from pgolf.eval.legal import check_legal
    from tests.eval import legal_modes as lm
    from tests.eval.test_bpb import tbytes
    from tests.eval.test_legal import BOS, TOY, check
    from tests.eval.test_modes import stream, tiny_model

    def last_chunk(fn, n):
        def run(s):
            C = 64 // n
            return check(fn, tiny_model(s), stream(65, starts=(0, 25, 45), seed=s + 1), seq_len=16,
                         stride=min(8, C), chunk_tokens=C, ttt_chunk_tokens=C, ttt_lr=0.1)
        return run

    def returned(s):
        cfg = EvalConfig(**{**TOY, "ttt_chunk_tokens": 32, "ttt_lr": 0.1})
        return check_legal(lm.returned_cheat(cfg, seq_len=16, bos_id=BOS), tiny_model(s),
                           stream(129, starts=(0, 50, 90), seed=s + 1), tbytes, positions=[100])

    variants = [
        ("train last chunk first, 4 chunks", "causal", last_chunk(lm.train_last_chunk_first, 4)),
        ("train last chunk first, 16 chunks", "causal", last_chunk(lm.train_last_chunk_first, 16)),
        ("peek in the last chunk, 4 chunks", "causal", last_chunk(lm.peek_last_chunk, 4)),
        ("peek in the last chunk, 16 chunks", "causal", last_chunk(lm.peek_last_chunk, 16)),
        ("records legal, returns train-then-score", "returned_score", returned),
        ("anti-causal model (sliding)", "causal",
         lambda s: check("sliding", lm.Flipped(tiny_model(s)), stream(130, seed=s + 1))),
        ("train-then-score, updates unreported", "causal",
         lambda s: check(lm.train_then_score_unreported, tiny_model(s), stream(200, starts=(0, 90), seed=s + 1),
                         chunk_tokens=64)),
    ]
    print("| variant | caught by | caught | perturbed tokens | s per check |\n|---|---|---|---|---|")
    for name, key, run in variants:
        caught, perturbed, t0 = 0, 0, time.perf_counter()
        for s in range(args.seeds):
            report = run(s)
            caught += not report.checks[key]
            perturbed += len(report.positions)
        sec = (time.perf_counter() - t0) / args.seeds
        print(f"| {name} | {key} | {caught}/{args.seeds} | {perturbed / args.seeds:.0f} | {sec:.2f} |", flush=True)


if __name__ == "__main__":
    main()
