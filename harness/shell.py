"""Running commands, in the root namespace or inside a harness namespace, with bounded time."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


class CommandError(RuntimeError):
    """A command failed; the message carries the command line and the tail of its output."""


@dataclass(slots=True)
class Result:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def describe(self) -> str:
        tail = (self.stderr.strip() or self.stdout.strip())[-400:]
        return f"`{shlex.join(self.argv)}` exited {self.returncode}: {tail or '(no output)'}"


def in_netns(ns: str | None, argv: Sequence[str]) -> list[str]:
    return ["ip", "netns", "exec", ns, *argv] if ns else list(argv)


def run(
    argv: Sequence[str],
    *,
    ns: str | None = None,
    timeout: float = 30.0,
    check: bool = True,
    input_text: str | None = None,
    env: Mapping[str, str] | None = None,
) -> Result:
    """Run a command to completion; a timeout kills it and counts as a failure."""
    full = in_netns(ns, argv)
    started = time.monotonic()
    merged = {**os.environ, **env} if env else None
    try:
        proc = subprocess.run(
            full,
            input=input_text,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=merged,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else ""
        result = Result(full, -9, out, f"timed out after {timeout:g} s", timeout)
        if check:
            raise CommandError(result.describe()) from None
        return result
    except FileNotFoundError as exc:
        result = Result(full, 127, "", str(exc), 0.0)
        if check:
            raise CommandError(result.describe()) from None
        return result
    result = Result(full, proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started)
    if check and not result.ok:
        raise CommandError(result.describe())
    return result


class Process(Protocol):
    """What a Background needs of its process: a subprocess.Popen, or a program started
    elsewhere (harness.docker.commands.ExecProcess: in a container, through the engine)."""

    pid: int

    @property
    def returncode(self) -> int | None: ...

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...


@dataclass
class Background:
    """A long-running process (a peer daemon, a capture, a traffic generator)."""

    name: str
    argv: list[str]
    log: Path
    proc: Process = field(repr=False)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, chars: int = 600) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return text[-chars:].strip()

    def stop(self, sig: int = signal.SIGTERM, grace: float = 3.0) -> int | None:
        """Signal the whole process group, wait ``grace`` seconds, then SIGKILL it."""
        if self.proc.poll() is None:
            _signal_group(self.proc.pid, sig)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                _signal_group(self.proc.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(grace)
        return self.proc.returncode

    def wait(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def spawn(
    name: str,
    argv: Sequence[str],
    log: Path,
    *,
    ns: str | None = None,
    env: Mapping[str, str] | None = None,
) -> Background:
    """Start a process in its own session (so its whole group can be stopped), output to log."""
    full = in_netns(ns, argv)
    log.parent.mkdir(parents=True, exist_ok=True)
    merged = {**os.environ, **(env or {})}
    with log.open("ab") as out:
        out.write(f"# {shlex.join(full)}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            full,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=merged,
            start_new_session=True,
        )
    return Background(name, full, log, proc)
