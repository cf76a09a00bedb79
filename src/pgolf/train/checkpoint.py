"""Training checkpoints: everything a killed run needs to continue bit-identically, written atomically.

A checkpoint holds the model, every optimizer's state, the EMA, the data loader position, the step counter, the
training seconds spent and the depth-recurrence flag. It is written to a temporary file in the same folder and
renamed over the old one, so a kill at any moment leaves either the previous or the new checkpoint, never half of
one. It is read back with `torch.load(weights_only=True)`: no pickled code is ever executed.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_FORMAT = "pgolf-checkpoint-v1"


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format": CHECKPOINT_FORMAT, **state}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_checkpoint(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for corrupt files
        raise ValueError(f"checkpoint {path} could not be read ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a pgolf checkpoint (expected format {CHECKPOINT_FORMAT!r})")
    return state


def trained_weights(state: dict[str, Any], which: str | None = None) -> dict[str, torch.Tensor]:
    """The weights to quantize: `which` = "ema" | "raw"; None = the run's choice (state["weights"]["chosen"], made
    by train.ema_select), else the EMA weights when the run kept an EMA (as the records do), else the model's."""
    ema = state.get("ema")
    model = state["model"]
    if which not in (None, "ema", "raw"):
        raise ValueError(f"weights={which!r}: expected 'ema' or 'raw'")
    if which == "ema" and not ema:
        raise ValueError("weights='ema': this checkpoint kept no EMA (train.ema_decay = 0); use 'raw'")
    if which is None:
        which = (state.get("weights") or {}).get("chosen", "ema")
    if ema and which == "ema":
        return {k: ema[k].to(model[k].dtype) if k in ema else v for k, v in model.items()}
    return model
