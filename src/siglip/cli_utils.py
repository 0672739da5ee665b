"""What the ``siglip`` command and ``python -m siglip.train`` share: the one-line error report, flag checks and
logging on stderr. (``cli.py`` sits above ``siglip.train``, so the shared pieces live here, below both.)"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import Any

log = logging.getLogger("siglip")


class CLIError(Exception):
    """A user-facing failure: printed as one line, exit code 1."""


def positive(name: str, value: int | None) -> int | None:
    """``value`` when it is None or at least 1, else a CLIError naming the flag."""
    if value is not None and value < 1:
        raise CLIError(f"{name} must be at least 1, got {value}")
    return value


def configure_logging(quiet: bool) -> None:
    """Messages of the "siglip" logger on the current stderr (re-bound on every call, for in-process use)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("siglip: %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(logging.WARNING if quiet else logging.INFO)
    log.propagate = False


def run_reporting_errors(command: Callable[[Any], int], args: Any) -> int:
    """Run a command; a user-facing failure becomes ``siglip: error: <first line>`` (and up to five more lines
    of detail) on stderr and exit code 1, Ctrl-C exit code 130, a closed stdout pipe exit code 141 and no message.
    Programming errors keep their traceback."""
    from .files import CheckpointError
    from .store import StoreError

    try:
        code = command(args)
        sys.stdout.flush()  # here, where a closed pipe is caught, rather than at exit
        return code
    except BrokenPipeError:  # the reader of stdout is gone (`siglip classify ... | head`): stop quietly
        _discard_stdout()
        return 141  # what a shell reports for a tool that SIGPIPE stopped
    except KeyboardInterrupt as e:  # a job that saved its work says what it kept (jobs.JobInterrupted)
        print(f"siglip: interrupted: {e}" if str(e) else "siglip: interrupted", file=sys.stderr)
        return 130
    except (CLIError, CheckpointError, StoreError, ValueError, FileNotFoundError, OSError) as e:
        message = str(e).strip().splitlines()
        print(f"siglip: error: {message[0] if message else type(e).__name__}", file=sys.stderr)
        for line in message[1:6]:
            print(f"  {line}", file=sys.stderr)
        return 1


def _discard_stdout() -> None:
    """Point stdout at /dev/null, so that flushing it at exit raises no second BrokenPipeError."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # not a real file (an in-process caller's stream)
        pass
