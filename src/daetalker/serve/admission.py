"""Generation slots and a bounded queue in front of them (one asyncio event loop).

A request takes a slot or waits for one; when ``max_concurrent`` run and
``max_queue`` wait, the next is refused at once with 429 (retry later), and a
request still waiting at its deadline gets 503. Generation is CPU-bound, so a
slot is held until its worker thread has really finished, also after a
timeout: the count of running generations never lies.
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from typing import AsyncIterator


class Refused(Exception):
    """A request the server will not take now: ``status`` 429 or 503, ``retry_after_s`` a hint."""

    def __init__(self, status: int, code: str, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.retry_after_s = retry_after_s


class Admission:
    def __init__(self, max_concurrent: int, max_queue: int) -> None:
        assert max_concurrent >= 1 and max_queue >= 0
        self.max_concurrent = max_concurrent
        self.max_queue = max_queue
        self._slots = asyncio.Semaphore(max_concurrent)
        self.inside = 0  # running + waiting
        self.running = 0

    @property
    def waiting(self) -> int:
        return self.inside - self.running

    @asynccontextmanager
    async def slot(self, wait_s: float) -> AsyncIterator[None]:
        """Hold a generation slot inside the block; wait at most ``wait_s`` for it."""
        if self.inside >= self.max_concurrent + self.max_queue:
            raise Refused(429, "TOO_MANY_REQUESTS", f"the server is busy: {self.running} generation(s) running and "
                          f"{self.waiting} waiting, the most it holds; retry later", retry_after_s=5)  # fmt: skip
        self.inside += 1
        try:
            try:
                await asyncio.wait_for(self._slots.acquire(), timeout=max(wait_s, 0.0))
            except TimeoutError:
                raise Refused(503, "TIMED_OUT_WAITING", f"no generation slot freed within the request's limit "
                              f"({wait_s:.0f} s left); retry later", retry_after_s=10) from None  # fmt: skip
            self.running += 1
            try:
                yield
            finally:
                self.running -= 1
                self._slots.release()
        finally:
            self.inside -= 1
