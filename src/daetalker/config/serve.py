"""Config of ``daetalker serve``: where it listens and what one request may cost.

Not part of a bundle's :class:`~daetalker.config.Config` (a model does not
decide how it is served): ``daetalker serve --config FILE --set serve.KEY=VALUE``
layers defaults <- YAML file (a ``serve:`` section) <- overrides.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from daetalker.config.base import from_dict, load_yaml, merge, parse_override
from daetalker.errors import ConfigError

LOOPBACK = "127.0.0.1"


@dataclass
class ServeConfig:
    host: str = LOOPBACK  # another address only behind something that authenticates (a cluster Service)
    port: int = 8090
    max_body_mb: float = 16.0  # request body; ~11 MB of base64 is a minute of 16-bit 48 kHz stereo wav
    max_audio_seconds: float = 30.0  # all clips of one request together
    max_clips: int = 4  # rows of one request
    max_concurrent: int = 1  # generations at once: on a CPU one already uses every core
    max_queue: int = 4  # requests waiting for a generation slot; one more is answered 429
    request_timeout_s: float = 300.0  # waiting + rendering; past it the request is answered 503 and stopped
    reload_poll_s: float = 0.0  # > 0: follow the alias every this many seconds, besides POST /reload

    def __post_init__(self) -> None:
        positive = {"max_body_mb": self.max_body_mb, "max_audio_seconds": self.max_audio_seconds,
                    "max_clips": self.max_clips, "max_concurrent": self.max_concurrent,
                    "request_timeout_s": self.request_timeout_s}  # fmt: skip
        for key, value in positive.items():
            if not value > 0:
                raise ConfigError(f"serve.{key}: must be > 0, got {value}")
        if self.max_queue < 0 or self.reload_poll_s < 0:
            raise ConfigError("serve.max_queue and serve.reload_poll_s: must be >= 0")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"serve.port: {self.port} is not a TCP port (0-65535)")

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)


def load_serve_config(path: Path | None = None, overrides: Iterable[str] = ()) -> ServeConfig:
    """Defaults <- the ``serve:`` section of ``path`` <- ``serve.KEY=VALUE`` overrides."""
    data: dict = {}
    if path is not None:
        data = load_yaml(Path(path))
    for expr in overrides:
        if not expr.startswith("serve."):
            raise ConfigError(f"--set {expr}: serving options are serve.KEY=VALUE (e.g. serve.max_concurrent=2)")
        data = merge(data, parse_override(expr))
    unknown = set(data) - {"serve"}
    if unknown:
        raise ConfigError(f"{path}: unknown section(s) {sorted(unknown)}; a serving config has only `serve:`")
    return from_dict(ServeConfig, data.get("serve") or {}, prefix="serve")
