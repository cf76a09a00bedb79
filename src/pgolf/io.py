"""The one atomic file write of pgolf: every file pgolf produces goes through `atomic_write`.

    atomic_write(path, b"bytes")                 # or a str (UTF-8), or a callable write(f) on a binary file
    atomic_write_json(path, obj)                 # indent 2, trailing newline
    remove_stale_temps(folder)                   # temp files left by a killed pgolf (their pid is gone)

The data goes to a temporary file in the destination folder (`.NAME.PID.RANDOM.tmp`), is flushed and fsynced, and
is renamed over `path`; the folder is then fsynced so the rename itself survives a power cut. A reader, or a run
killed at any instant, therefore sees the old file or the new one, never half of one. The temporary file is created
with mode 0666 minus the umask (the mode every other tool gives a new file; `tempfile.mkstemp` would give 0600), and
it is removed on any failure, Ctrl-C included. A full disk (or a quota, or a file-size limit) is one `DiskFullError`
naming the path, with the previous file left intact.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

_NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[0-9a-f]{8}\.tmp$")


class DiskFullError(OSError):
    """The disk (or quota, or file-size limit) ran out while writing `path`; the previous file is intact."""


class _Guard:
    """File wrapper that remembers the OSError a write raised, for writers (torch.save) that re-raise it as
    something vaguer."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self.error: OSError | None = None

    def write(self, b: Any) -> int:
        try:
            return self._f.write(b)
        except OSError as e:
            self.error = e
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)


def temp_path(path: Path) -> Path:
    """A fresh temporary name next to `path`, recognisable by `remove_stale_temps`."""
    return path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"


def atomic_write(path: str | os.PathLike, data: bytes | str | Callable[[BinaryIO], Any]) -> Path:
    """Write `data` to `path` atomically (see the module docstring) → path. Creates missing parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    guard: _Guard | None = None
    try:
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb") as f:  # 0666 & ~umask
            if callable(data):
                data(guard := _Guard(f))
            else:
                f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        cause = e if isinstance(e, OSError) else getattr(guard, "error", None)
        if getattr(cause, "errno", None) in _NO_SPACE:
            err = DiskFullError(f"cannot write {path}: {os.strerror(cause.errno)} (disk full, quota or file-size "
                                f"limit); the previous {path.name}, if any, is unchanged")
            err.errno = cause.errno
            raise err from None
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """`atomic_write` of `obj` as indented JSON plus a newline (non-JSON values such as Paths via str)."""
    return atomic_write(path, json.dumps(obj, indent=2, default=str) + "\n")


def remove_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files in `folder` that a dead pgolf process left (a kill -9 mid-write) → their paths.

    Only names made by `temp_path` whose process id no longer runs are touched, plus the `NAME.XXXXXXXX.tmp` files
    older pgolf versions made with mkstemp next to a file NAME that exists."""
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for p in folder.iterdir():
        m = _TEMP.match(p.name)
        legacy = (not m and p.name.endswith(".tmp") and p.name.count(".") >= 2
                  and (folder / p.name.rsplit(".", 2)[0]).exists())
        if (m and not _alive(int(m["pid"]))) or legacy:
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # this process has no write in flight while it cleans up
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # platforms without directory fds; filesystems refusing fsync on a folder
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
