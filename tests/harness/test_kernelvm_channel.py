"""The kernel-vm control channel: the guest's real server script against :meth:`KernelVM.run`.

The guest's ``serve`` function (:data:`harness.kernelvm.guest.SERVE`) runs here in the host's
busybox, the guest's shell, behind a proxy that loses or damages the first command line on its
way in, as a TCG guest's serial line was seen to (rarely) in CI. No root and no VM needed.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import pytest

from harness.kernelvm import guest
from harness.kernelvm.build import Artefacts
from harness.kernelvm.vm import KernelVM, VMError

BUSYBOX = shutil.which("busybox")
pytestmark = pytest.mark.skipif(BUSYBOX is None, reason="needs busybox (the guest's shell)")

Fault = Callable[[bytes], bytes | None]  # a RUN line in, what reaches the guest out (None: lost)


class Channel:
    """A guest server process and a VM object speaking to it through a faulty proxy."""

    def __init__(self, folder: Path, fault: Fault) -> None:
        assert BUSYBOX is not None
        bin_dir = folder / "bin"
        bin_dir.mkdir()
        for applet in ("sh", "base64", "sleep", "echo", "cat", "printf"):
            (bin_dir / applet).symlink_to(BUSYBOX)
        scratch = folder / "scratch"
        scratch.mkdir()
        self.scratch = scratch
        self.proc = subprocess.Popen(
            [BUSYBOX, "sh", "-c", f"{guest.SERVE}\nserve"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env={"PATH": str(bin_dir), "SCRATCH": str(scratch)})
        self.host, self.proxy = socket.socketpair()
        self.fault, self.faulted = fault, False
        self.threads = [threading.Thread(target=self._to_guest, daemon=True),
                        threading.Thread(target=self._to_host, daemon=True)]
        for thread in self.threads:
            thread.start()
        artefacts = Artefacts("test", "test", "0", folder, folder / "bzImage", None,
                              folder / "initramfs", ())
        self.vm = KernelVM(artefacts, "none", "kvtest", "52:54:00:00:00:01", folder)
        self.vm.attach_control(self.host)

    def _to_guest(self) -> None:
        assert self.proc.stdin is not None
        with contextlib.suppress(OSError):  # the server or the socket closed: the test is over
            self._copy_to_guest(self.proc.stdin)

    def _copy_to_guest(self, stdin: IO[bytes]) -> None:
        for line in self.proxy.makefile("rb"):
            if line.startswith(guest.RUN.encode()) and not self.faulted:
                self.faulted = True
                changed = self.fault(line)
                if changed is None:
                    continue
                line = changed
            stdin.write(line)
            stdin.flush()

    def _to_host(self) -> None:
        assert self.proc.stdout is not None
        try:
            for line in self.proc.stdout:
                self.proxy.sendall(line)
        except OSError:
            pass

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)
        self.host.close()
        self.proxy.close()


@pytest.fixture
def channel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
            request: pytest.FixtureRequest) -> Iterator[Channel]:
    monkeypatch.setattr(guest, "ACK_TIMEOUT", 0.5)
    fault: Fault = getattr(request, "param", lambda line: line)
    made = Channel(tmp_path, fault)
    try:
        yield made
    finally:
        made.close()


def test_commands_answer_in_order(channel: Channel) -> None:
    assert channel.vm.run("echo one; exit 3", timeout=10) == (3, "one\n")
    assert channel.vm.check("printf 'two\\nthree'", timeout=10) == "two\nthree"
    assert channel.vm.run("", timeout=10) == (0, "")


@pytest.mark.parametrize("channel", [lambda line: None], indirect=True)
def test_a_lost_command_is_sent_again(channel: Channel) -> None:
    marker = channel.scratch / "ran"
    assert channel.vm.run(f"echo x >> {marker}; echo done", timeout=10) == (0, "done\n")
    assert marker.read_text() == "x\n"
    log = channel.vm.qemu_log.read_text()
    assert f"no {guest.ACK} in 0.5 s, sent again (1)" in log


@pytest.mark.parametrize("channel", [lambda line: line[:len(line) // 2] + b"\n"], indirect=True)
def test_a_damaged_command_is_refused_by_the_guest_and_sent_again(channel: Channel) -> None:
    marker = channel.scratch / "ran"
    assert channel.vm.run(f"echo x >> {marker}; echo done", timeout=10) == (0, "done\n")
    assert marker.read_text() == "x\n"
    assert "arrived damaged (@@BAD 1 " in channel.vm.qemu_log.read_text()


@pytest.mark.parametrize("channel", [lambda line: line + line], indirect=True)
def test_a_command_received_twice_runs_once(channel: Channel) -> None:
    marker = channel.scratch / "ran"
    assert channel.vm.run(f"echo x >> {marker}; echo done", timeout=10) == (0, "done\n")
    # the duplicate's answer (the saved output again) comes before the next command's
    assert channel.vm.run(f"cat {marker}", timeout=10) == (0, "x\n")


def test_a_silent_guest_times_out_naming_the_resends(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(guest, "ACK_TIMEOUT", 0.3)
    made = Channel(tmp_path, lambda line: line)
    try:
        made.proc.kill()  # the server is gone; the host end stays open, as QEMU's does
        made.proc.wait(timeout=10)
        with pytest.raises(VMError, match=r"never acknowledged, sent \dx"):
            made.vm.run("true", timeout=1.5)
    finally:
        made.close()


def test_the_server_is_part_of_init() -> None:
    assert guest.SERVE in guest.INIT
    assert f"serve <{guest.CONTROL_TTY} >{guest.CONTROL_TTY}" in guest.INIT
