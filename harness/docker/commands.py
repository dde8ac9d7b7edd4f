"""Commands in a container through the engine's exec API (create, start with the output
streamed back, inspect for the exit status): the engine may run on another machine.

* :meth:`ContainerShell.run` bounds a command with coreutils' ``timeout`` inside the container
  (the engine has no exec timeout) and returns its stdout, stderr and status.
* :meth:`ContainerShell.spawn` starts a long-running one in a session of its own
  (``setsid``), records its pid in a file inside the container, and streams its output into
  the log here; :meth:`ExecBackground.stop` signals that session inside the container (TERM,
  then KILL after the grace time), as the netns backend signals a process group.
"""

from __future__ import annotations

import contextlib
import itertools
import re
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..shell import Background, CommandError, Result

CONTAINER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PYTHON_IN_IMAGE = "python3"
TIMED_OUT = (124, 137)  # timeout(1): the command was stopped at its time (TERM, then KILL)
KILL_AFTER = 2.0  # seconds between timeout(1)'s TERM and KILL
# sh -c SCRIPT PIDFILE ARGV...: record the pid (= the session's id under setsid), become ARGV
RECORD_PID = 'echo $$ > "$0" && exec "$@"'
# sh -c SCRIPT PIDFILE SIGNAL: signal the session (waiting briefly for its pid file)
SIGNAL_SESSION = ('i=0; while [ ! -s "$0" ] && [ $i -lt 20 ]; do sleep 0.05; i=$((i+1)); done; '
                  'pid=$(cat "$0") && { kill -s "$1" -- "-$pid" 2>/dev/null || '
                  'kill -s "$1" "$pid"; }')
_serial = itertools.count(1)


class ExecProcess:
    """A started exec, answering like :class:`subprocess.Popen` (poll, wait, returncode)."""

    def __init__(self, api: Any, exec_id: str) -> None:
        self.api = api
        self.exec_id = exec_id
        self.pid = 0  # inside the container; signalled through its pid file
        self.returncode: int | None = None
        self.done = threading.Event()

    def finish(self) -> None:
        code = 255
        with contextlib.suppress(Exception):  # the engine went away: an unknown failure
            code = self.api.exec_inspect(self.exec_id).get("ExitCode")
            code = 255 if code is None else int(code)
        self.returncode = code
        self.done.set()

    def poll(self) -> int | None:
        return self.returncode if self.done.is_set() else None

    def wait(self, timeout: float | None = None) -> int:
        if not self.done.wait(timeout):
            raise subprocess.TimeoutExpired(self.exec_id, timeout or 0.0)
        assert self.returncode is not None
        return self.returncode


@dataclass
class ExecBackground(Background):
    """A program started by :meth:`ContainerShell.spawn`."""

    shell: ContainerShell | None = field(default=None, repr=False)
    pidfile: str = ""

    def stop(self, sig: int = signal.SIGTERM, grace: float = 3.0) -> int | None:
        assert isinstance(self.proc, ExecProcess) and self.shell is not None
        for signum in (sig, signal.SIGKILL):
            if self.proc.poll() is not None:
                break
            self.shell.run(["sh", "-c", SIGNAL_SESSION, self.pidfile,
                            signal.Signals(signum).name.removeprefix("SIG")],
                           timeout=grace + 5, check=False, clean=False)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(grace)
        return self.proc.returncode


def container_argv(argv: Sequence[str], env: dict[str, str] | None = None,
                   pythons: set[str] | None = None) -> list[str]:
    """``argv`` as it runs inside a container: a clean environment (PATH and ``env`` only)
    and the host's Python (any of ``pythons``) replaced by the image's."""
    words = [PYTHON_IN_IMAGE if word in (pythons or set()) else word for word in argv]
    extra = [f"{k}={v}" for k, v in (env or {}).items()]
    return ["env", "-i", f"PATH={CONTAINER_PATH}", "HOME=/root", *extra, *words]



class ContainerShell:
    """Runs commands in one container through the engine's API."""

    def __init__(self, api: Any, container: str, workdir: str, pythons: set[str]) -> None:
        self.api = api
        self.container = container
        self.workdir = workdir
        self.pythons = pythons

    def _start(self, argv: list[str], *, demux: bool) -> tuple[ExecProcess, Iterator[Any]]:
        exec_id = self.api.exec_create(self.container, argv, workdir=self.workdir)["Id"]
        # stream=True: the SDK lifts the client's read timeout for the stream
        stream = self.api.exec_start(exec_id, stream=True, demux=demux)
        return ExecProcess(self.api, exec_id), stream

    def run(self, argv: Sequence[str], *, timeout: float = 30.0, check: bool = True,
            input_text: str | None = None, clean: bool = True) -> Result:
        """Run to completion (``timeout`` seconds at most); ``clean``: in the clean
        environment of :func:`container_argv`."""
        words = container_argv(argv, pythons=self.pythons) if clean else list(argv)
        full = ["timeout", "-k", f"{KILL_AFTER:g}", f"{timeout:g}", *words]
        if input_text is not None:
            full = ["sh", "-c", 'printf %s "$0" | "$@"', input_text, *full]
        started = time.monotonic()
        try:
            proc, stream = self._start(full, demux=True)
            out, err = bytearray(), bytearray()
            for chunk_out, chunk_err in stream:
                out += chunk_out or b""
                err += chunk_err or b""
            proc.finish()
        except Exception as exc:  # the SDK's errors: the engine or the container went away
            result = Result(list(argv), 255, "", f"docker exec in {self.container}: {exc}",
                            time.monotonic() - started)
            if check:
                raise CommandError(result.describe()) from None
            return result
        seconds = time.monotonic() - started
        code = proc.returncode if proc.returncode is not None else 255
        stdout, stderr = out.decode(errors="replace"), err.decode(errors="replace")
        if code in TIMED_OUT and seconds >= timeout:
            code, stderr = -9, f"timed out after {timeout:g} s"
        result = Result(list(argv), code, stdout, stderr, seconds)
        if check and not result.ok:
            raise CommandError(result.describe())
        return result

    def spawn(self, name: str, argv: Sequence[str], log: Path,
              env: dict[str, str] | None = None) -> ExecBackground:
        """Start ``argv`` in a session of its own; its output goes to ``log``."""
        words = container_argv(argv, env, pythons=self.pythons)
        pidfile = f"/run/wgref-{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}-{next(_serial)}.pid"
        full = ["setsid", "-w", "sh", "-c", RECORD_PID, pidfile, *words]
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            out.write(f"# {shlex.join(words)}\n".encode())
        try:
            proc, stream = self._start(full, demux=False)
        except Exception as exc:  # the SDK's errors
            raise CommandError(f"docker exec in {self.container}: {exc}") from None
        thread = threading.Thread(target=_drain, args=(stream, proc, log),
                                  name=f"exec-{name}", daemon=True)
        thread.start()
        return ExecBackground(name, words, log, proc, shell=self, pidfile=pidfile)


def _drain(stream: Iterator[bytes], proc: ExecProcess, log: Path) -> None:
    """Write a spawned program's output as it comes; record its status at the end."""
    try:
        with log.open("ab") as out:
            for chunk in stream:
                out.write(chunk)
                out.flush()
    except Exception as exc:  # the engine went away mid-stream
        with contextlib.suppress(OSError), log.open("a") as out_text:
            out_text.write(f"\n# output stream lost: {exc}\n")
    finally:
        proc.finish()
