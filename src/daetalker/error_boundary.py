"""The CLI's one error boundary: a user's mistake is a message, a bug is a traceback.

- :class:`~daetalker.errors.DaetalkerError` (bad input, config, path, missing
  model...) prints ``error: <what, which file, the fix>`` and exits 2.
- An ``OSError`` that names a file (missing, a folder where a file was expected,
  no permission, disk full) is the user's environment, not a bug: the same, with
  a fix per errno.
- SIGTERM raises :class:`Terminated`, so every ``finally`` and ``except
  BaseException`` runs (partial files and temporary folders are removed, child
  processes killed) before the process exits 143, as Ctrl-C already does.
- Anything else is a bug: its traceback, then a line asking to report it; exit 1.

``DAETALKER_DEBUG=1`` shows the traceback of expected errors too.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
import traceback
from typing import Callable

from daetalker.errors import DaetalkerError

EXIT_USER = 2  # click's code for usage errors too
EXIT_BUG = 1
REPORT = ("this is a bug in daetalker {version}, not a mistake in your input: please report it with the "
          "command line and the traceback above")

_OS_FIX = {
    errno.ENOENT: "check the path; it does not exist",
    errno.EISDIR: "give a file path, not a folder",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EACCES: "choose a path you may read/write, or fix its permissions",
    errno.EPERM: "choose a path you may read/write, or fix its permissions",
    errno.EEXIST: "remove it or choose another path",
    errno.ENOSPC: "free disk space or write elsewhere",
    errno.EROFS: "the file system is read-only; write elsewhere",
    errno.ENAMETOOLONG: "use a shorter path",
}


class Terminated(BaseException):
    """SIGTERM (or SIGHUP) arrived: unwinds the stack like KeyboardInterrupt so cleanup runs."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"terminated by {signal.Signals(signum).name}")
        self.signum = signum


def _raise_terminated(signum: int, _frame: object) -> None:
    signal.signal(signum, signal.SIG_DFL)  # a second signal kills at once, cleanup or not
    raise Terminated(signum)


def os_error_message(e: OSError) -> str | None:
    """``path: what (fix: ...)`` for an OSError about a named file; None when it names none."""
    if not e.filename:
        return None
    where = f"{e.filename} -> {e.filename2}" if e.filename2 else str(e.filename)
    fix = _OS_FIX.get(e.errno or 0, "check the path and its permissions")
    return f"{where}: {e.strerror or e} (fix: {fix})"


def expected_message(e: BaseException) -> str | None:
    """The message of an error the user can fix, or None for a bug."""
    if isinstance(e, DaetalkerError):
        return str(e)
    if isinstance(e, OSError):
        return os_error_message(e)
    return None


def run(main: Callable[[], object], print_error: Callable[[str], None]) -> int:
    """Call ``main`` inside the boundary; returns the exit code."""
    from daetalker import __version__

    debug = os.environ.get("DAETALKER_DEBUG", "") not in ("", "0")
    previous = {s: signal.signal(s, _raise_terminated) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        main()
        return 0
    except SystemExit as e:  # click's own exits: usage errors (2), --help (0)
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except Terminated as e:
        print_error(f"stopped: {e}; partial outputs were removed")
        return 128 + e.signum
    except KeyboardInterrupt:
        print_error("interrupted; partial outputs were removed")
        return 130
    except Exception as e:
        message = expected_message(e)
        if message is None or debug:
            traceback.print_exc()
        if message is None:
            print(REPORT.format(version=__version__), file=sys.stderr)
            return EXIT_BUG
        print_error(message)
        return EXIT_USER
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
