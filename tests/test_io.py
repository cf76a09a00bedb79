"""pgolf.io: the one atomic write (umask, cleanup, full disk, stale temps)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pgolf.io import DiskFullError, atomic_write, atomic_write_json, remove_stale_temps, temp_path


def test_atomic_write_honours_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        p = atomic_write(tmp_path / "a.bin", b"abc")
    finally:
        os.umask(old)
    assert p.read_bytes() == b"abc"
    assert p.stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600
    old = os.umask(0o077)
    try:
        atomic_write(tmp_path / "b.json", "{}")
    finally:
        os.umask(old)
    assert (tmp_path / "b.json").stat().st_mode & 0o777 == 0o600


def test_failed_writer_keeps_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    p = tmp_path / "x.json"
    atomic_write_json(p, {"v": 1})

    def boom(f):
        f.write(b"partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(p, boom)
    assert p.read_text() == '{\n  "v": 1\n}\n'
    assert sorted(x.name for x in tmp_path.iterdir()) == ["x.json"]


def test_full_disk_is_one_clear_error_and_the_old_file_survives(tmp_path: Path) -> None:
    # A real write failure: a file-size limit (EFBIG), the same path a full disk (ENOSPC) takes, in a child process.
    target = tmp_path / "ckpt.pt"
    target.write_bytes(b"old checkpoint")
    code = textwrap.dedent(f"""
        import resource, signal, torch
        from pgolf.io import atomic_write, DiskFullError
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, 50_000))
        try:
            atomic_write({str(target)!r}, lambda f: torch.save({{"w": torch.zeros(100_000)}}, f))
        except DiskFullError as e:
            print("ERR", e)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ERR cannot write " + str(target)), out.stdout
    assert "unchanged" in out.stdout and "Traceback" not in out.stderr
    assert target.read_bytes() == b"old checkpoint"
    assert [x.name for x in tmp_path.iterdir()] == ["ckpt.pt"]
    assert issubclass(DiskFullError, OSError)


def test_remove_stale_temps_only_touches_dead_writers(tmp_path: Path) -> None:
    (tmp_path / "checkpoint.pt").write_bytes(b"c")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    stale = tmp_path / f".checkpoint.pt.{dead_pid}.0123abcd.tmp"
    stale.write_bytes(b"half")
    legacy = tmp_path / "checkpoint.pt.k3j_x9a2.tmp"  # mkstemp name of older pgolf versions
    legacy.write_bytes(b"half")
    live = tmp_path / f".run.json.{os.getppid()}.0123abcd.tmp"  # the parent process is alive
    live.write_bytes(b"in flight")
    unrelated = tmp_path / "notes.tmp"
    unrelated.write_bytes(b"user file")
    removed = remove_stale_temps(tmp_path)
    assert sorted(removed) == sorted([stale, legacy])
    assert live.exists() and unrelated.exists() and (tmp_path / "checkpoint.pt").exists()
    assert temp_path(tmp_path / "a").name.startswith(f".a.{os.getpid()}.")
