"""One alias change at a time per registered model.

Locally (and on a cluster whose state folder is a shared ReadWriteMany volume
with POSIX locks, e.g. NFSv4) the lock is ``flock`` on
``<state>/registry/<model>.lock``. The kernel drops it when its holder dies, so
a crashed promotion never leaves a stale lock. On a cluster without a shared
volume, run the promote step with KFP parallelism 1 for the pipeline (and
promote by hand only through that pipeline); this package's ``README.md`` has the
details.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from daetalker.errors import ServiceError
from daetalker.registry.audit_log import now_iso

DEFAULT_TIMEOUT_S = 600.0  # a promotion takes seconds; a queue of them a few minutes at most


@contextmanager
def model_lock(path: Path, owner: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> Iterator[None]:
    """Hold ``path`` exclusively; :class:`ServiceError` naming the holder after ``timeout_s``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout_s
    with open(path, "a+") as fh:
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = path.read_text().strip() or "unknown"
                    raise ServiceError(
                        f"{path}: another registry change holds this lock ({holder}) for over {timeout_s:.0f} s "
                        f"(fix: wait for it to finish and rerun; the lock frees itself when its process ends)"
                    ) from None
                time.sleep(0.05)
        try:
            fh.seek(0)
            fh.truncate()
            fh.write(json.dumps({"owner": owner, "pid": os.getpid(), "host": socket.gethostname(), "since": now_iso()}))
            fh.flush()
            yield
        finally:
            fh.seek(0)
            fh.truncate()
            fcntl.flock(fh, fcntl.LOCK_UN)
