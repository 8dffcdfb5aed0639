"""Writing files whole or not at all: text, JSON, bytes, or any writer through a temporary path.

Every output of medseg (run-directory files, checkpoints, predictions, exports, pictures, caches) goes through
:func:`atomic_path`: a temporary file beside the target, fsynced, given the usual permissions, renamed over the
target, its folder fsynced. Readers see the old file or the new one, never a partial one; on an error (or a kill)
no partial target is left, and a temporary file left by a killed writer is removed by the next writer of that target.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

TMP_SUFFIX = ".tmp"


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = TMP_SUFFIX) -> Iterator[Path]:
    """A temporary file beside ``path`` to write; when the block succeeds it is fsynced and renamed over ``path``.

    ``suffix`` lets writers that choose the format by name (``.nii.gz``, ``.png``, ``.onnx``) see the right one. The
    file gets the usual permissions (``0o666`` minus the umask), not ``mkstemp``'s private ``0o600``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, 0o666 & ~umask())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def remove_stale_temporaries(path: str | Path) -> None:
    """Delete temporary files a killed writer of ``path`` left beside it (``.<name>.*.tmp``)."""
    path = Path(path)
    for stale in path.parent.glob(f".{path.name}.*{TMP_SUFFIX}"):
        if stale.is_file():
            stale.unlink(missing_ok=True)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write text to ``path`` whole or not at all."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_bytes(path: str | Path, data: bytes | memoryview) -> None:
    """Write ``data`` to ``path`` whole or not at all; temporaries of an earlier, killed writer are removed first."""
    remove_stale_temporaries(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """``obj`` as indented JSON (numpy scalars/arrays and paths allowed), written whole or not at all."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (best effort: not every file system lets a folder be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def umask() -> int:
    """The process umask (read without changing it for longer than two calls)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


@contextlib.contextmanager
def claim(path: str | Path) -> Iterator[str | None]:
    """Claim ``path`` for writing among processes: yields None when this process holds the claim, else who holds it
    (``pid N on host``). The claim is a lock file beside ``path``; one left by a process that died on this host is
    taken over."""
    import socket

    path = Path(path)
    lock = path.parent / f".{path.name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    me = f"{os.getpid()} {socket.gethostname()}"
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = lock.read_text(errors="replace").split() if lock.is_file() else []
            pid, host = (holder + ["", ""])[:2]
            if host == socket.gethostname() and pid.isdigit() and not process_alive(int(pid)):
                lock.unlink(missing_ok=True)  # a claim left by a killed process
                continue
            yield f"pid {pid or '?'} on {host or '?'}"
            return
        with os.fdopen(fd, "w") as fh:
            fh.write(me)
        try:
            yield None
        finally:
            lock.unlink(missing_ok=True)
        return
    yield "another process"


def process_alive(pid: int) -> bool:
    """Whether a process with this id exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
