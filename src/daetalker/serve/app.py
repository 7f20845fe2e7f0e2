"""The HTTP routes, over one :class:`~daetalker.serve.champion.Champion`.

``POST /invocations`` takes MLflow's DataFrame JSON (``dataframe_records`` or
``dataframe_split``) with the pyfunc's columns and answers
``{"predictions": [{"video", "n_frames", "duration_s"}]}``, as MLflow's scoring
server would, so one client works against either. ``GET /health``,
``GET /version`` and ``POST /reload`` (follow the alias now).

Every error is ``{"error_code", "message"}`` with a status a client can act
on: 400 malformed, 413 too large or too long, 415 not JSON, 422 unreadable
audio, 429 queue full, 503 timed out or registry unreachable. A failure the
server did not expect is logged with its traceback under an id and answered
500 with that id only: no response carries a stack trace or a server path.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from typing import Any, Awaitable, Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from daetalker.config.serve import ServeConfig
from daetalker.errors import DaetalkerError
from daetalker.registry.clips import ClipError, parse_rows
from daetalker.serve.admission import Admission, Refused
from daetalker.serve.champion import Champion

log = logging.getLogger(__name__)
Handler = Callable[[Request], Awaitable[JSONResponse]]


class BadRequest(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code = status, code


def error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error_code": code, "message": message}, status_code=status, headers=headers)


def json_errors(handler: Handler) -> Handler:
    """Turn every exception of ``handler`` into a JSON answer without a traceback."""

    async def wrapped(request: Request) -> JSONResponse:
        try:
            return await handler(request)
        except BadRequest as e:
            return error(e.status, e.code, str(e))
        except ClipError as e:
            return error(e.status, "INVALID_INPUT" if e.status < 413 else "TOO_LARGE", e.message)
        except Refused as e:
            return error(e.status, e.code, str(e), {"Retry-After": str(e.retry_after_s)})
        except DaetalkerError as e:  # GenerationTimeout, ServiceError from a reload
            code = "TIMED_OUT" if type(e).__name__ == "GenerationTimeout" else "UNAVAILABLE"
            log.warning("request %s %s: 503 %s: %s", request.method, request.url.path, code, e)
            return error(503, code, str(e).splitlines()[0][:500], {"Retry-After": "10"})
        except Exception:
            ref = uuid.uuid4().hex[:12]
            log.exception("request %s %s failed (error id %s)", request.method, request.url.path, ref)
            return error(500, "INTERNAL_ERROR", f"the server failed on this request (error id {ref}, in its log)")

    return wrapped


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to pass ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BadRequest(413, "TOO_LARGE", f"request body of {int(declared)} bytes; this server takes at most {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BadRequest(413, "TOO_LARGE", f"request body over {limit} bytes, the most this server takes")
        chunks.append(chunk)
    return b"".join(chunks)


def to_frame(body: bytes) -> Any:
    """MLflow's DataFrame JSON -> DataFrame (strings stay strings)."""
    import pandas as pd

    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, ValueError) as e:
        raise BadRequest(400, "MALFORMED_REQUEST", f"the body is not JSON ({str(e)[:120]})") from None
    keys = sorted(doc) if isinstance(doc, dict) else []
    if keys == ["dataframe_records"] and isinstance(doc["dataframe_records"], list) \
            and all(isinstance(r, dict) for r in doc["dataframe_records"]):
        return pd.DataFrame.from_records(doc["dataframe_records"])
    split = doc.get("dataframe_split") if keys == ["dataframe_split"] else None
    if isinstance(split, dict) and isinstance(split.get("columns"), list) and isinstance(split.get("data"), list) \
            and set(split) <= {"columns", "data", "index"} and all(isinstance(r, list) for r in split["data"]):
        try:
            return pd.DataFrame(split["data"], columns=[str(c) for c in split["columns"]])
        except ValueError as e:
            raise BadRequest(400, "MALFORMED_REQUEST", f"dataframe_split: {str(e)[:120]}") from None
    raise BadRequest(400, "MALFORMED_REQUEST", 'expected {"dataframe_records": [{"audio": BASE64, ...}]} or '
                     '{"dataframe_split": {"columns": [...], "data": [[...]]}}')  # fmt: skip


def build_app(champion: Champion, cfg: ServeConfig) -> Starlette:
    admission = Admission(cfg.max_concurrent, cfg.max_queue)

    @json_errors
    async def invocations(request: Request) -> JSONResponse:
        started = time.monotonic()
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "application/json":
            raise BadRequest(415, "UNSUPPORTED_MEDIA_TYPE", f"content type {kind or 'none'!r}: send application/json")
        served = champion.current  # this request finishes on this version, whatever a reload does meanwhile
        body = await read_body(request, cfg.max_body_bytes)
        # JSON and base64 of megabytes: off the event loop, so /health stays quick; malformed requests never queue
        clips = await asyncio.to_thread(lambda: parse_rows(to_frame(body), served.model.limits))
        deadline = started + cfg.request_timeout_s
        async with admission.slot(deadline - time.monotonic()):
            out = await asyncio.to_thread(served.model.render, clips, deadline)
        return JSONResponse({"predictions": out})

    @json_errors
    async def health(request: Request) -> JSONResponse:
        served = champion.current
        return JSONResponse({"status": "ok", "model": served.name, "version": served.version,
                             "running": admission.running, "waiting": admission.waiting})  # fmt: skip

    @json_errors
    async def version(request: Request) -> JSONResponse:
        return JSONResponse({**champion.current.describe(), "follows_alias": champion.follows_alias})

    @json_errors
    async def reload(request: Request) -> JSONResponse:
        return JSONResponse(await asyncio.to_thread(champion.reload))

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        return error(exc.status_code, "NOT_FOUND" if exc.status_code == 404 else "BAD_METHOD", str(exc.detail))

    routes = [Route("/invocations", invocations, methods=["POST"]), Route("/health", health, methods=["GET"]),
              Route("/version", version, methods=["GET"]), Route("/reload", reload, methods=["POST"])]  # fmt: skip
    return Starlette(routes=routes, exception_handlers={HTTPException: http_error})
