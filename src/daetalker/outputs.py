"""Writing a user's outputs safely: never over an input, never half a file.

Every command that writes checks its output paths with :func:`refuse_inputs`
before any work, and writes each final file through :func:`atomic_path`: the
bytes go to a hidden ``.NAME.PID.partial`` file beside the target, renamed over
it only once complete. An exception, Ctrl-C or SIGTERM (the CLI turns it into
an exception, see :mod:`daetalker.error_boundary`) removes the partial file, so
the target is either the old file or the whole new one.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping

from daetalker.errors import DaetalkerError


class OutputError(DaetalkerError):
    """An output path would overwrite an input, or cannot be written as asked."""


def _overlap(out: Path, inp: Path) -> str | None:
    """How ``out`` collides with ``inp`` ("is" or "is inside"), or None."""
    if out == inp or (out.exists() and inp.exists() and os.path.samefile(out, inp)):
        return "is"  # samefile: a hard link or a bind mount names the same file
    if out.is_relative_to(inp):
        return "is inside"  # writing into an input folder changes the input (a bundle's hashes, a dataset)
    return None


def refuse_inputs(option: str, out: Path | str, inputs: Mapping[str, Path | str | None]) -> Path:
    """``out`` resolved, after checking it is none of ``inputs`` (option name -> path), nor inside or around one.

    Symlinks are resolved first, so a link to an input is caught too. Raises
    :class:`OutputError` naming both options and the fix.
    """
    target = Path(out).expanduser().resolve()
    for name, given in inputs.items():
        if given is None or str(given).startswith("models:/"):
            continue
        src = Path(given).expanduser().resolve()
        how = _overlap(target, src)
        if how:
            where = f"outside {given}" if how == "is inside" else f"other than {given}"
            raise OutputError(f"{option} {out}: {how} the input {name} {given}; writing there would change "
                              f"what you gave as input (fix: choose an {option} {where})")
    return target


def require_file_target(option: str, out: Path | str, suffixes: tuple[str, ...] = ()) -> Path:
    """``out`` as a file path to write: not an existing folder, with one of ``suffixes`` if given."""
    path = Path(out)
    if path.is_dir():
        raise OutputError(f"{option} {out}: is a folder; give a file path (fix: e.g. {option} "
                          f"{path / ('out' + (suffixes[0] if suffixes else ''))})")
    if suffixes and path.suffix.lower() not in suffixes:
        raise OutputError(f"{option} {out}: must end with {' or '.join(suffixes)} (fix: {option} "
                          f"{path.with_suffix(suffixes[0])})")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"{option} {out}: {parent} is a file, not a folder (fix: choose another {option})")
    return path


def require_dir_target(option: str, out: Path | str) -> Path:
    """``out`` as a folder to write into: it may exist, but not as a file."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{option} {out}: is a file; this command writes a folder (fix: give a folder path)")
    return path


def partial_path(out: Path) -> Path:
    """The hidden file a write of ``out`` goes to first (same folder: the rename is atomic)."""
    return out.with_name(f".{out.name}.{os.getpid()}.partial{out.suffix}")


@contextmanager
def atomic_path(out: Path | str) -> Iterator[Path]:
    """Yield a partial path to write; on success it replaces ``out``, on any exit by error it is removed."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_path(out)
    try:
        yield tmp
        os.replace(tmp, out)
    except BaseException:  # Ctrl-C and SIGTERM (raised as Terminated) too
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: Path | str, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)
