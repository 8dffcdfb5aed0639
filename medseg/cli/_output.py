"""How commands talk to the user: one console per stream, never hard-wrapped, and errors as one line.

Rich hard-wraps text at 80 columns when the stream is not a terminal (logs, CI); ``soft_wrap`` keeps every message
one line there. Tables keep rich's layout.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.markup import escape

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def describe(error: BaseException) -> str:
    """One line for an error: ``path: No such file or directory`` instead of ``[Errno 2] ...: 'path'``."""
    if isinstance(error, OSError) and error.strerror and error.filename is not None:
        text = f"{error.filename}: {error.strerror}"
        return f"{text} (and {error.filename2})" if error.filename2 is not None else text
    text = str(error) or type(error).__name__
    return text


def fail(command: str, message: str) -> int:
    """Print ``medseg <command>: error: <message>`` (one line per line of the message) on stderr; returns 1."""
    err.print(f"[bold red]medseg {command}: error:[/] {escape(message)}")
    return 1


def warn(command: str, message: str) -> None:
    err.print(f"[yellow]medseg {command}: warning:[/] {escape(message)}")


def known_error(error: BaseException) -> BaseException | None:
    """The user-facing cause of ``error`` (bad input, config, data, run dir, file system), or None for a bug."""
    from medseg.data.discovery import DatasetError

    cause = error
    # Hydra wraps a constructor's error (e.g. "data.spacing must be ...") in an InstantiationException
    while type(cause).__name__ == "InstantiationException" and cause.__cause__ is not None:
        cause = cause.__cause__
    return cause if isinstance(cause, (DatasetError, ValueError, FloatingPointError, OSError)) else None


def guarded(command: str, fn: Callable[[], Any]) -> Any:
    """Run ``fn``; a known user error becomes one red line and exit code 1 instead of a traceback."""
    try:
        return fn()
    except Exception as error:
        cause = known_error(error)
        if cause is None:
            raise
        raise SystemExit(fail(command, describe(cause))) from None
