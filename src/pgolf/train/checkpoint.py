"""Training checkpoints: everything a killed run needs to continue bit-identically, written atomically.

A checkpoint holds the model, every optimizer's state, the EMA, the data loader position, the step counter, the
training seconds spent and the depth-recurrence flag. It is written to a temporary file in the same folder and
renamed over the old one (`pgolf.io.atomic_write`), so a kill at any moment leaves either the previous or the new
checkpoint, never half of one. A state holding NaN/inf is never written (`NonFiniteState`: the last finite
checkpoint stays, and the error names its step) nor read back. It is read with `torch.load(weights_only=True)`: no
pickled code is ever executed. `check_resumable` names the model fields / tensor shapes that stop a resume.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from pgolf.io import atomic_write

CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_FORMAT = "pgolf-checkpoint-v1"


class NonFiniteState(ValueError):
    """A checkpoint would hold (or holds) NaN/inf weights or optimizer state: it is never written or accepted."""


def non_finite_tensors(state: Any, prefix: str = "") -> list[str]:
    """Dotted names of the floating tensors in a nested state (dicts, lists, tensors) holding NaN or inf."""
    if isinstance(state, torch.Tensor):
        bad = state.is_floating_point() and state.numel() and not bool(torch.isfinite(state).all())
        return [prefix or "<tensor>"] if bad else []
    items = state.items() if isinstance(state, dict) else enumerate(state) if isinstance(state, (list, tuple)) else ()
    return [n for k, v in items for n in non_finite_tensors(v, f"{prefix}.{k}" if prefix else str(k))]


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write `state` atomically (`pgolf.io.atomic_write`); NonFiniteState (nothing written, the previous checkpoint
    kept) when the model, EMA or optimizer state holds NaN/inf."""
    path = Path(path)
    bad = non_finite_tensors({k: state.get(k) for k in ("model", "ema", "optimizers")})
    if bad:
        raise NonFiniteState(
            f"training diverged: at step {state.get('step')} {len(bad)} tensor(s) hold NaN/inf "
            f"({', '.join(bad[:3])}{', …' if len(bad) > 3 else ''}); nothing was written, {_kept(path)}. Lower the "
            "learning rates or set train.grad_clip_norm")
    atomic_write(path, lambda f: torch.save({"format": CHECKPOINT_FORMAT, **state}, f))


def _kept(path: Path) -> str:
    if not path.is_file():
        return "and no earlier checkpoint exists"
    try:
        step = torch.load(path, map_location="cpu", weights_only=True).get("step")
    except Exception:  # noqa: BLE001 - only for the message
        step = "?"
    return f"the last finite checkpoint {path} (step {step}) is kept"


def check_resumable(state: dict[str, Any], config: dict[str, Any] | None, model: torch.nn.Module) -> None:
    """ValueError naming what differs when a checkpoint cannot continue this run: the model config fields, then the
    tensor shapes (train/eval/pack settings may change on resume: e.g. more iterations)."""
    old = (state.get("config") or {}).get("model") or {}
    new = (config or {}).get("model") or {}
    norm = lambda v: list(v) if isinstance(v, tuple) else v  # noqa: E731  (JSON lists vs tuples)
    diff = sorted(k for k in set(old) | set(new) if norm(old.get(k)) != norm(new.get(k)))
    if old and new and diff:
        raise ValueError("cannot resume: the checkpoint's model differs from this run's in "
                         + ", ".join(f"model.{k} ({old.get(k)!r} → {new.get(k)!r})" for k in diff[:6]))
    mine = model.state_dict()
    theirs = state["model"]
    missing, extra = sorted(set(mine) - set(theirs)), sorted(set(theirs) - set(mine))
    shapes = [k for k in mine if k in theirs and tuple(mine[k].shape) != tuple(theirs[k].shape)]
    if missing or extra or shapes:
        raise ValueError("cannot resume: the checkpoint's tensors do not fit this model (missing "
                         f"{missing[:3]}, unexpected {extra[:3]}, other shapes "
                         + ", ".join(f"{k} {list(theirs[k].shape)} vs {list(mine[k].shape)}" for k in shapes[:3]) + ")")


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
    if not isinstance(state.get("model"), dict):
        raise ValueError(f"checkpoint {path} holds no model state")
    bad = non_finite_tensors({k: state.get(k) for k in ("model", "ema")})
    if bad:
        raise NonFiniteState(f"checkpoint {path} (step {state.get('step')}) holds NaN/inf weights in {len(bad)} "
                             f"tensor(s) ({', '.join(bad[:3])}); it cannot be resumed or quantized")
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
