"""The recorder a mode reports to: every scored distribution and every parameter update, in call order.

    rec = ScoreRecorder()
    evaluate(model, tokens, target_bytes, cfg, seq_len=64, device="cpu", bos_id=1, recorder=rec)  # eval/modes.py
    rec.matrix(T, V)            # (T, V): the first distribution recorded at each position

`record_scores(positions, log_probs)` takes the full-vocabulary log-distributions (n, V) a mode scores (position
p = target index), `record_update(positions)` the targets a parameter update reads. The legality checker
(eval/legal.py `check_legal`) compares the recordings of perturbed runs; the scoring core (eval/score.py `Tally`)
only forwards to it, so it lives here, below both.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor


class ScoreRecorder:
    """Collects scored distributions and updates in call order (single process, CPU tensors)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Tensor]] = []  # ("score" | "update", positions)
        self.log_probs: dict[int, list[Tensor]] = {}

    def record_scores(self, positions: Tensor, log_probs: Tensor) -> None:
        positions = positions.reshape(-1).long().cpu()
        log_probs = log_probs.reshape(positions.numel(), -1).float().cpu()
        self.events.append(("score", positions))
        for p, lp in zip(positions.tolist(), log_probs):
            self.log_probs.setdefault(p, []).append(lp)

    def record_update(self, positions: Tensor | Sequence[int]) -> None:
        self.events.append(("update", torch.as_tensor(positions, dtype=torch.long).reshape(-1).cpu()))

    def num_updates(self) -> int:
        return sum(kind == "update" for kind, _ in self.events)

    def matrix(self, T: int, V: int) -> Tensor:
        """(T, V) first distribution recorded at each position; NaN rows where none was."""
        out = torch.full((T, V), float("nan"))
        for p, lps in self.log_probs.items():
            if 0 <= p < T and lps[0].numel() == V:
                out[p] = lps[0]
        return out
