"""What a local pipeline run shows: one line per step, a bar for the running one; the rest goes to log files.

kfp.local prints its executor JSON, every task's output and warnings to the
console (about 1,200 lines for a demo). :class:`StepConsole` takes the
process's ``sys.stdout``/``sys.stderr`` while the pipeline runs, writes every
line to the log file of the step it belongs to (``LOGS/NN-<task>.log``) and
prints to the terminal only::

    ok      train-dae            212.4 s   demo-out/logs/05-train-dae.log
    cached  extract-latents        0.0 s   (inputs unchanged)

with a progress bar for the step that is running (its tqdm percentage when it
prints one, else the time so far).
"""

from __future__ import annotations

import io
import logging
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_START = re.compile(r"Executing task '([^']+)'")
_END = re.compile(r"Task '([^']+)' finished with status (\w+)")
_CACHED = re.compile(r"Task (\S+) cache hit")
_PERCENT = re.compile(r"(\d{1,3})%\|")


@dataclass
class Step:
    name: str
    log: Path
    started: float = field(default_factory=time.monotonic)
    status: str = "running"
    seconds: float = 0.0


class StepConsole(io.TextIOBase):
    """A stand-in for stdout/stderr during a pipeline run (see the module docstring)."""

    def __init__(self, log_dir: Path, terminal: TextIO | None = None, bar: bool | None = None) -> None:
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for old in self.log_dir.glob("[0-9][0-9]-*.log"):  # an earlier run's steps, numbered differently
            if old.name != "00-pipeline.log":
                old.unlink()
        self.terminal = terminal or sys.__stderr__
        self.bar = self.terminal.isatty() if bar is None else bar
        self.steps: list[Step] = []
        self._pending = ""
        self._log = open(self.log_dir / "00-pipeline.log", "a")
        self._saved: tuple[TextIO, TextIO] | None = None
        # kfp.local says "Task x cache hit" at INFO on the root logger, outside its own log context
        self._handler = logging.StreamHandler(self)
        self._root_level = logging.WARNING

    # -- io.TextIOBase
    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._pending += text
        *lines, self._pending = re.split(r"[\r\n]", self._pending)
        for line in lines:
            self._line(line)
        return len(text)

    def flush(self) -> None:
        self._log.flush()

    # -- context manager: take and give back the process's streams
    def __enter__(self) -> "StepConsole":
        self._saved = (sys.stdout, sys.stderr)
        sys.stdout = sys.stderr = self
        root = logging.getLogger()
        self._root_level = root.level
        root.addHandler(self._handler)
        root.setLevel(logging.INFO)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pending:
            self._line(self._pending)
        sys.stdout, sys.stderr = self._saved
        logging.getLogger().removeHandler(self._handler)
        logging.getLogger().setLevel(self._root_level)
        running = self.current
        if running is not None and running.status == "running":
            self._finish(running, "stopped" if exc[0] else "ok")
        self._clear_bar()
        self._log.close()

    @property
    def current(self) -> Step | None:
        return self.steps[-1] if self.steps else None

    # -- parsing
    def _line(self, raw: str) -> None:
        line = _ANSI.sub("", raw)
        if m := _START.search(line):
            self._start(m.group(1))
        self._log.write(line + "\n")
        if m := _END.search(line):
            step = self._step(m.group(1))
            if step is not None:
                self._finish(step, "ok" if m.group(2) == "SUCCESS" else "FAILED")
        elif m := _CACHED.search(line):
            self._cached(m.group(1))
        elif self.bar and self.current is not None and self.current.status == "running":
            pct = _PERCENT.findall(line)
            self._draw_bar(self.current, int(pct[-1]) if pct else None)

    def _step(self, name: str) -> Step | None:
        return next((s for s in reversed(self.steps) if s.name == name), None)

    def _start(self, name: str) -> None:
        step = Step(name, self.log_dir / f"{len(self.steps) + 1:02d}-{name}.log")
        self.steps.append(step)
        self._log.close()
        self._log = open(step.log, "w")
        if self.bar:
            self._draw_bar(step, None)

    def _finish(self, step: Step, status: str) -> None:
        step.status, step.seconds = status, time.monotonic() - step.started
        self._log.flush()
        self._print(f"{status:<7} {step.name:<24} {step.seconds:7.1f} s   {step.log}")

    def _cached(self, name: str) -> None:
        step = Step(name, self.log_dir / "00-pipeline.log", status="cached")
        self.steps.append(step)
        self._print(f"{'cached':<7} {name:<24} {0.0:7.1f} s   (inputs unchanged since an earlier run; --no-cache "
                    "reruns it)")

    # -- terminal
    def _print(self, text: str) -> None:
        self._clear_bar()
        self.terminal.write(text + "\n")
        self.terminal.flush()

    def _draw_bar(self, step: Step, percent: int | None) -> None:
        elapsed = time.monotonic() - step.started
        if percent is None:
            text = f"running {step.name} {elapsed:6.0f} s"
        else:
            filled = percent * 30 // 100
            text = f"running {step.name} [{'#' * filled}{'.' * (30 - filled)}] {percent:3d}% {elapsed:6.0f} s"
        self.terminal.write("\r" + text[:120] + "\033[K")
        self.terminal.flush()

    def _clear_bar(self) -> None:
        if self.bar:
            self.terminal.write("\r\033[K")
            self.terminal.flush()

    def summary(self) -> dict[str, int]:
        """How many steps ended in each status."""
        out: dict[str, int] = {}
        for s in self.steps:
            out[s.status] = out.get(s.status, 0) + 1
        return out
