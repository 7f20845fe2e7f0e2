"""Run the app: load the model first (``/health`` answers only once it can serve), then uvicorn.

Binds 127.0.0.1 unless told otherwise: the server has no authentication of
its own, so another address belongs behind something that has (a cluster
Service reached through an authenticating ingress, or a port-forward).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
from typing import AsyncIterator

from daetalker.config.serve import ServeConfig
from daetalker.error_boundary import Terminated
from daetalker.registry.clips import ClipLimits
from daetalker.serve.app import build_app
from daetalker.serve.champion import Champion

log = logging.getLogger(__name__)


async def _poll(champion: Champion, every_s: float) -> None:
    """Follow the alias every ``every_s`` seconds; a failed read keeps the served version."""
    while True:
        await asyncio.sleep(every_s)
        try:
            result = await asyncio.to_thread(champion.reload)
            if result["changed"]:
                log.info("alias moved: serving %s", result["current"])
        except Exception as e:  # the registry may be down for a while: keep serving, say why
            log.warning("reload of %s failed: %s", champion.source, str(e).splitlines()[0][:300])


def serve(source: str, cfg: ServeConfig, tracking_uri: str | None = None) -> None:
    """Load ``source`` (bundle folder or ``models:/...``) and serve it until SIGINT/SIGTERM."""
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    limits = ClipLimits(max_audio_seconds=cfg.max_audio_seconds, max_clips=cfg.max_clips)
    champion = Champion(source, limits, tracking_uri)
    app = build_app(champion, cfg)

    @contextlib.asynccontextmanager
    async def lifespan(_app: object) -> AsyncIterator[None]:
        task = asyncio.create_task(_poll(champion, cfg.reload_poll_s)) if cfg.reload_poll_s and champion.follows_alias \
            else None  # fmt: skip
        try:
            yield
        finally:
            if task is not None:
                task.cancel()

    app.router.lifespan_context = lifespan
    url = f"http://{cfg.host}:{cfg.port}"
    print(json.dumps({"url": url, **champion.current.describe()}), flush=True)  # for scripts: where and what
    try:
        uvicorn.Server(uvicorn.Config(app, host=cfg.host, port=cfg.port, log_level="info", timeout_keep_alive=5,
                                      server_header=False)).run()  # fmt: skip
    except Terminated:  # uvicorn re-raises SIGTERM once in-flight requests are answered: a normal stop
        log.info("stopped by SIGTERM after the requests in flight were answered")
    finally:
        champion.close()
    sys.stdout.flush()
