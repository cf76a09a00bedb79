"""Plain, rank-0, parseable logging: one `key:value` line per event, mirrored to a log file; or a live tqdm bar.

Library code receives a `RunLogger`; nothing logs at import time. On a terminal (progress="auto") training shows a
tqdm bar with loss, tokens/s and ETA, and only milestone lines are printed; otherwise every event is a plain line.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, TextIO


def format_kv(event: str, fields: dict[str, Any]) -> str:
    parts = [event]
    for k, v in fields.items():
        if isinstance(v, float):
            v = f"{v:.6g}" if abs(v) < 1e5 else f"{v:.1f}"
        parts.append(f"{k}:{v}")
    return " ".join(parts)


class RunLogger:
    """key:value lines to stdout (rank 0) and to an optional log file; an optional tqdm bar for long loops."""

    def __init__(self, log_path: Path | None = None, *, enabled: bool = True, progress: str = "auto",
                 stream: TextIO | None = None):
        self.enabled = enabled
        self.stream = stream or sys.stdout
        self.bar_mode = enabled and (progress == "bar" or (progress == "auto" and self.stream.isatty()))
        self.progress_mode = ("bar" if self.bar_mode else "lines") if enabled else False
        """What long steps take as `progress=` (pgolf.progress): a bar on a terminal, periodic lines otherwise."""
        self._file = open(log_path, "a", encoding="utf-8") if (enabled and log_path) else None
        self._bar = None
        self._last_step_line = time.time()

    # ---- events
    def line(self, text: str, *, console: bool = True) -> None:
        if not self.enabled:
            return
        if self._file:
            self._file.write(text + "\n")
            self._file.flush()
        if console:
            if self._bar is not None:
                self._bar.write(text)
            else:
                print(text, file=self.stream, flush=True)

    def event(self, event: str, **fields: Any) -> None:
        self.line(format_kv(event, fields))

    def step(self, event: str, **fields: Any) -> None:
        """A frequent event: a plain line without a bar; file-only (plus the bar's postfix) with a bar."""
        self._last_step_line = time.time()
        self.line(format_kv(event, fields), console=not self.bar_mode)

    def step_due(self) -> bool:
        """Without a bar: True when PGOLF_PROGRESS_EVERY seconds (pgolf.progress, default 10) passed since the last
        step line, so slow steps still show progress between the logged ones."""
        if not self.enabled or self.bar_mode:
            return False
        from pgolf.progress import _interval

        return time.time() - self._last_step_line >= _interval()

    # ---- progress bar
    def start_bar(self, total: float, desc: str, unit: str = "s") -> None:
        if self.bar_mode:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, file=self.stream, dynamic_ncols=True,
                             bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f}{unit} [{elapsed}<{remaining}{postfix}]")

    def update_bar(self, n: float, **postfix: Any) -> None:
        if self._bar is not None:
            self._bar.n = min(n, self._bar.total)
            self._bar.set_postfix({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in postfix.items()},
                                  refresh=True)

    def close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def close(self) -> None:
        self.close_bar()
        if self._file:
            self._file.close()
            self._file = None
