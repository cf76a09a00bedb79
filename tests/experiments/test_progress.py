"""pgolf.progress: silent unless asked, periodic lines off a terminal, a tqdm bar on one.

    python -m pytest tests/experiments/test_progress.py -q
"""

from __future__ import annotations

import io

import pytest

from pgolf import progress as pg


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_modes_and_bad_values():
    assert pg.mode(False) is None and pg.mode(None) is None
    assert pg.mode("lines") == "lines" and pg.mode("bar") == "bar"
    assert pg.mode(True, io.StringIO()) == "lines" and pg.mode("auto", FakeTTY()) == "bar"
    with pytest.raises(ValueError, match="progress='yes'"):
        pg.mode("yes")


def test_silent_by_default_and_pass_through(capsys):
    assert list(pg.track(range(5), "x")) == [0, 1, 2, 3, 4]
    pg.say("hidden")
    with pg.task("step"):
        pass
    assert capsys.readouterr().err == ""


def test_lines_are_periodic_and_a_fast_loop_prints_nothing(monkeypatch, capsys):
    monkeypatch.setenv("PGOLF_PROGRESS_EVERY", "3600")
    assert list(pg.track(range(100), "fast", enabled="lines")) == list(range(100))
    assert capsys.readouterr().err == ""  # nothing per item, nothing at all under the interval
    monkeypatch.setenv("PGOLF_PROGRESS_EVERY", "0")
    out = io.StringIO()
    with pg.Progress("quantize", 4, enabled="lines", unit="tensor", stream=out) as p:
        for _ in range(4):
            p.update(1)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("quantize: 1/4 tensor (25 %)") and "ETA" in lines[0]
    assert lines[-1].startswith("quantize: 4/4 tensor (100 %)") and "done" not in lines[-1]  # shown: no repeat
    out = io.StringIO()
    with pg.Progress("encode", 3, enabled="lines", stream=out) as p:
        p.update(1)
        p._every = 3600
        p.update(2)
    assert out.getvalue().splitlines()[-1].startswith("encode: 3/3 it (100 %)") and out.getvalue().endswith("done\n")
    monkeypatch.setenv("PGOLF_PROGRESS_EVERY", "soon")
    with pytest.raises(ValueError, match="PGOLF_PROGRESS_EVERY='soon'"):
        pg.Progress("x", 1, enabled="lines")


def test_bar_on_a_terminal():
    out = FakeTTY()
    with pg.Progress("eval", 3, enabled="auto", unit="batch", stream=out) as p:
        assert p.mode == "bar"
        p._bar.delay = 0  # draw at once (normally after BAR_DELAY_S)
        for _ in range(3):
            p.update(1)
    assert "eval" in out.getvalue() and "3/3" in out.getvalue()


def test_say_and_task_print_when_asked(capsys):
    pg.say("fit round 1: slack +12", enabled="lines")
    with pg.task("tokenizer", enabled=True, min_seconds=0.0):
        pass
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "fit round 1: slack +12" and err[1] == "tokenizer …" and err[2].startswith("tokenizer: done in")
