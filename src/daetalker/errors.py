"""Errors a user can cause. Each names the offending file or key and the fix."""

from __future__ import annotations


class DaetalkerError(Exception):
    """Base class: the CLI prints these without a traceback and exits with code 2."""


class ConfigError(DaetalkerError):
    """A config file or override is wrong (unknown key, wrong type, bad value)."""


class AssetError(DaetalkerError):
    """A model asset is missing or its sha256 differs from the pinned one."""


class InputMediaError(DaetalkerError):
    """A video or audio file cannot be used (corrupt, silent, no face, ...)."""

    def __init__(self, path: object, reason: str, detail: str, fix: str = "") -> None:
        self.path = str(path)
        self.reason = reason
        self.detail = detail
        self.fix = fix
        msg = f"{self.path}: {reason}: {detail}"
        if fix:
            msg += f" (fix: {fix})"
        super().__init__(msg)


class ServiceError(DaetalkerError):
    """A local service (MLflow, S3, DVC remote) could not be started or reached."""


class CheckpointError(DaetalkerError):
    """A checkpoint is missing, torn or incompatible with the config."""


class IntegrityError(DaetalkerError):
    """A file no longer matches the sha256 recorded for it (altered, truncated or missing)."""
