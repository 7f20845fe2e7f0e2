"""Process-group plumbing shared by the local servers.

Each server runs as the leader of its own session (``start_new_session``), so
its pid is also its process-group id and stopping it means signalling the whole
group: MLflow spawns uvicorn workers that would otherwise be orphaned.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port the kernel reports free right now (the caller binds it soon after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    """True if a server could listen on ``port`` now (TIME_WAIT leftovers do not count,
    as servers bind with SO_REUSEADDR)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def read_pid(pid_file: Path, expect: str | None = None) -> int | None:
    """The pid recorded in ``pid_file`` if that process group still runs, else None.

    ``expect``: a word its command line must contain, so that a pid reused by an
    unrelated process after a reboot is not mistaken for the server.
    """
    try:
        pid = int(Path(pid_file).read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    if not group_alive(pid):
        return None
    cmdline = Path(f"/proc/{pid}/cmdline")
    if expect and cmdline.exists():
        try:
            argv = cmdline.read_bytes()
        except OSError:
            return None
        if argv and expect.encode() not in argv:  # empty: an exited leader, members left
            return None
    return pid


def _reap(pid: int) -> None:
    # A server this very process started stays a zombie until waited for, and a
    # zombie still answers kill(pid, 0); reap it if it is our child.
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) pids in process group ``pgid``.

    Reads /proc on Linux so that zombies left under an init that does not reap
    them do not count as running; elsewhere falls back to ``killpg(pgid, 0)``.
    """
    _reap(pgid)
    proc = Path("/proc")
    if not (proc / "self" / "stat").exists():
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return []
        return [pgid]
    members = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # exited while we looked
            continue
        # Fields after the parenthesised command name: state ppid pgrp ...
        fields = stat[stat.rfind(")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return members


def group_alive(pgid: int) -> bool:
    return bool(group_members(pgid))


def stop_group(pgid: int, timeout: float = 15.0) -> bool:
    """SIGTERM the group, wait up to ``timeout`` s, then SIGKILL. True if it had to kill."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not group_alive(pgid):
            return False
        time.sleep(0.1)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + 5.0
    while group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return True


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = Path(path).read_text(errors="replace")
    except FileNotFoundError:
        return "(no log written)"
    return "\n".join(text.splitlines()[-lines:])
