"""Bounded retries for registry calls to the MLflow server.

The MLflow client retries a refused connection on its own for minutes
(``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` = 7 with doubling back-off). A promotion
must instead fail within a known time with a clear error, so while registry
code runs :func:`bounded_http` turns the client's own retries off and this
module retries transient failures ``tries`` times with back-off. Errors that
retrying cannot fix (unknown model, bad argument) are raised at once.
"""

from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, TypeVar

from daetalker.errors import ServiceError

T = TypeVar("T")

# Server-side error codes that may go away on their own; MLflow also uses
# INTERNAL_ERROR for "could not connect", which is what an outage looks like.
_TRANSIENT_CODES = {"INTERNAL_ERROR", "TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED", "DEADLINE_EXCEEDED"}


@dataclass(frozen=True)
class RetryPolicy:
    tries: int = 4
    first_delay_s: float = 1.0
    factor: float = 2.0  # delays 1, 2, 4 s: a promotion gives up ~7 s after the server went away
    request_timeout_s: int = 30  # one HTTP request

    def delays(self) -> list[float]:
        return [self.first_delay_s * self.factor**i for i in range(self.tries - 1)]


def is_transient(exc: BaseException) -> bool:
    import requests
    from mlflow.exceptions import MlflowException

    if isinstance(exc, (requests.ConnectionError, requests.Timeout, ConnectionError, TimeoutError)):
        return True
    if isinstance(exc, MlflowException):
        return exc.error_code in _TRANSIENT_CODES
    return False


def call(what: str, fn: Callable[[], T], policy: RetryPolicy) -> T:
    """``fn()``, retried on transient errors; then :class:`ServiceError` naming ``what``."""
    last: BaseException | None = None
    for delay in [*policy.delays(), None]:
        try:
            return fn()
        except Exception as e:
            if not is_transient(e):
                raise
            last = e
        if delay is not None:
            time.sleep(delay)
    raise ServiceError(
        f"MLflow did not answer '{what}' in {policy.tries} tries over {sum(policy.delays()):.1f} s: "
        f"{_short(last)} (fix: check the server, e.g. `daetalker mlflow status`, then rerun; "
        f"an interrupted promotion is reconciled by the next registry command)"
    ) from last


def _short(e: BaseException | None) -> str:
    text = " ".join(str(e).split()) if e else ""
    return text if len(text) <= 300 else f"{text[:180]} ... {text[-110:]}"  # the cause is at the end


_env_lock = threading.Lock()
_env_users = 0
_env_saved: dict[str, str | None] = {}


@contextmanager
def bounded_http(policy: RetryPolicy) -> Iterator[None]:
    """No client-side HTTP retries, a per-request timeout and no run links on stdout while the block runs.

    Reference-counted so that concurrent promotions in one process (threads)
    share one setting and the last one out restores the caller's environment.
    """
    global _env_users
    wanted = {
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": str(policy.request_timeout_s),
        # Closing an audit run would print a "View run" link into the command's output.
        "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
    }
    with _env_lock:
        if _env_users == 0:
            _env_saved.update({k: os.environ.get(k) for k in wanted})
            os.environ.update(wanted)
        _env_users += 1
    try:
        yield
    finally:
        with _env_lock:
            _env_users -= 1
            if _env_users == 0:
                for k, v in _env_saved.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v
                _env_saved.clear()
