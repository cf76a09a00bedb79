"""Progress of long steps: a tqdm bar on a terminal, a plain line every few seconds otherwise, silent unless asked.

    for name, t in track(tensors.items(), "quantize", enabled=progress, total=len(tensors), unit="tensor"):
        ...
    with task("tokenizer", enabled=progress) as note:      # one step without a count (e.g. a C++ call)
        train_tokenizer(...)                               # → "tokenizer: done in 12.3 s"
    say("fit round 2: slack 0.04 %", enabled=progress)     # a one-off line, printed in both modes

`enabled` is what library functions take as their `progress=` argument (default False: library code called from
user code prints nothing unless asked): False/None = silent; True or "auto" = a bar when stderr is a terminal,
else lines; "bar" / "lines" force one. `pgolf run` passes its logger's mode (run.progress: auto|bar|lines), so a
terminal shows a live bar per phase and a log file or pipe gets a line every `PGOLF_PROGRESS_EVERY` seconds
(default 10). Fast paths print nothing: a bar appears only after a second, the first plain line only after the
interval, and a loop that printed a line ends with a "done" line. Everything goes to stderr, as tqdm's bars do;
rank 0 only where the caller says so (`enabled=... and rank == 0`).
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from typing import Any, Iterable, Iterator, TextIO, TypeVar

T = TypeVar("T")
BAR_DELAY_S = 1.0


def mode(enabled: Any, stream: TextIO | None = None) -> str | None:
    """"bar", "lines" or None for an `enabled` argument (see the module docstring)."""
    if not enabled:
        return None
    if enabled in ("bar", "lines"):
        return enabled
    if enabled is True or enabled == "auto":
        s = stream or sys.stderr
        return "bar" if getattr(s, "isatty", lambda: False)() else "lines"
    raise ValueError(f"progress={enabled!r}: expected False, True, 'auto', 'bar' or 'lines'")


def _interval() -> float:
    raw = os.environ.get("PGOLF_PROGRESS_EVERY", "10")
    try:
        return max(0.0, float(raw))
    except ValueError:
        raise ValueError(f"PGOLF_PROGRESS_EVERY={raw!r}: expected seconds (a number)") from None


def _fmt_s(s: float) -> str:
    return f"{s:.0f} s" if s >= 10 else f"{s:.1f} s"


class Progress:
    """A counter over `total` items (or unknown total) that renders as a bar or as periodic lines."""

    def __init__(self, desc: str, total: float | None = None, *, enabled: Any = False, unit: str = "it",
                 stream: TextIO | None = None):
        self.desc, self.total, self.unit = desc, total, unit
        self.stream = stream or sys.stderr
        self.mode = mode(enabled, self.stream)
        self.n = 0.0
        self._shown = -1.0  # the count the last plain line showed
        self.t0 = self._last = time.perf_counter()
        self._every = _interval() if self.mode == "lines" else 0.0
        self._bar = None
        if self.mode == "bar":
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, file=self.stream, dynamic_ncols=True,
                             delay=BAR_DELAY_S, leave=True)

    def update(self, n: float = 1) -> None:
        self.n += n
        if self._bar is not None:
            self._bar.update(n)
        elif self.mode == "lines":
            now = time.perf_counter()
            if now - self._last >= self._every:
                self._last = now
                self._line(now)

    def _line(self, now: float, done: bool = False) -> None:
        self._shown = self.n
        el = now - self.t0
        if self.total:
            pct = 100.0 * self.n / self.total
            eta = "" if done or not self.n else f", ETA {_fmt_s(el * (self.total - self.n) / self.n)}"
            head = f"{self.desc}: {self.n:,.0f}/{self.total:,.0f} {self.unit} ({pct:.0f} %), {_fmt_s(el)}{eta}"
        else:
            head = f"{self.desc}: {self.n:,.0f} {self.unit}, {_fmt_s(el)}"
        print(head + (" done" if done else ""), file=self.stream, flush=True)

    def print_line(self, text: str) -> None:
        """A line that does not break the bar (printed in both modes)."""
        if self._bar is not None:
            self._bar.write(text, file=self.stream)
        elif self.mode == "lines":
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self.mode == "lines" and self._shown >= 0 and self._shown != self.n:
            self._line(time.perf_counter(), done=True)  # a loop that printed says it finished; a fast one stays silent
        self.mode = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def track(items: Iterable[T], desc: str, *, enabled: Any = False, total: float | None = None,
          unit: str = "it") -> Iterator[T]:
    """Iterate `items`, showing progress when `enabled` (a plain pass-through when not)."""
    if not mode(enabled):
        yield from items
        return
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with Progress(desc, total, enabled=enabled, unit=unit) as p:
        for x in items:
            yield x
            p.update(1)


def say(text: str, *, enabled: Any = False) -> None:
    """One line to stderr when progress is on (a bar mode prints it too: one-off events, e.g. a fit round)."""
    if mode(enabled):
        print(text, file=sys.stderr, flush=True)


@contextmanager
def task(desc: str, *, enabled: Any = False, min_seconds: float = 2.0) -> Iterator[None]:
    """A step without a count: "<desc> …" first, "<desc>: done in X s" after if it took ≥ `min_seconds`."""
    if not mode(enabled):
        yield
        return
    print(f"{desc} …", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    yield
    if time.perf_counter() - t0 >= min_seconds:
        print(f"{desc}: done in {_fmt_s(time.perf_counter() - t0)}", file=sys.stderr, flush=True)
