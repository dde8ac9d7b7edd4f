"""One throw-away QEMU VM running Debian's kernel, attached to a tap device in a namespace.

The VM has no disk: the kernel boots the initramfs from :mod:`.build`, whose /init loads the
modules, waits for the random pool and serves shell commands on the second serial port. QEMU
runs inside the namespace (``ip netns exec``) as a direct child in its own process group and
writes a pidfile, so it is stopped by PID; deleting the namespace kills it too.

Acceleration: KVM where the CPU has vmx/svm and /dev/kvm is usable, TCG otherwise (and after
a KVM boot failed once: some /dev/kvm shims cannot run this kernel). ``$WGREF_KERNEL_VM_ACCEL``
(``kvm`` or ``tcg``) forces one.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from . import guest
from .build import Artefacts

QEMU = "qemu-system-x86_64"
SEABIOS = ("/usr/share/seabios/bios-256k.bin", "/usr/share/qemu/bios-256k.bin")
QBOOT = "/usr/share/qemu/qboot.rom"
CMDLINE = ("console=ttyS0 panic=-1 quiet loglevel=4 mitigations=off "
           "i8042.noaux i8042.nokbd i8042.nopnp")
KVM_BOOT_TIMEOUT = 20.0
_kvm_failed = False  # a KVM boot failed in this process: use TCG from then on


class VMError(RuntimeError):
    """The VM did not boot, died, or a guest command failed or timed out."""


class GuestCommandFailed(VMError):
    """A guest command ran and exited non-zero (the script's fault, not the VM's)."""


@dataclass(frozen=True, slots=True)
class Accel:
    name: str  # "kvm" or "tcg"
    reason: str


def choose_accel() -> Accel:
    forced = os.environ.get("WGREF_KERNEL_VM_ACCEL", "").strip().lower()
    if forced in ("kvm", "tcg"):
        return Accel(forced, "forced by WGREF_KERNEL_VM_ACCEL")
    if _kvm_failed:
        return Accel("tcg", "a KVM boot failed earlier in this run")
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return Accel("tcg", "no usable /dev/kvm")
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        flags = ""
    if " vmx" not in flags and " svm" not in flags:
        return Accel("tcg", "/dev/kvm exists but the CPU shows no vmx/svm (a nested shim)")
    return Accel("kvm", "the CPU has hardware virtualisation and /dev/kvm is usable")


def qemu_missing() -> str | None:
    if shutil.which(QEMU) is None:
        return f"{QEMU} is not installed (apt-get install qemu-system-x86)"
    return None


def firmware_args() -> list[str]:
    """SeaBIOS when it is installed (QEMU's default); else qboot, which QEMU ships itself."""
    if any(Path(path).is_file() for path in SEABIOS):
        return []
    if Path(QBOOT).is_file():
        return ["-bios", QBOOT]
    return []


def kill_pidfile(pidfile: Path, grace: float = 3.0) -> bool:
    """Stop the QEMU named in a pidfile (TERM, then KILL); True when one was running."""
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    if b"qemu" not in cmdline or str(pidfile).encode() not in cmdline:
        return False  # the PID was reused by something else
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if not Path(f"/proc/{pid}").exists():
                return True
            time.sleep(0.05)
    return True


class _LineReader:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def readline(self, deadline: float) -> str | None:
        """One line (without the newline), or None when the deadline passed."""
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(min(left, 0.5))
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                raise VMError("the VM closed its control channel (QEMU exited?)")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.decode(errors="replace").rstrip("\r")


class KernelVM:
    """A VM whose virtio-net is the tap ``tap`` in namespace ``namespace``."""

    def __init__(self, artefacts: Artefacts, namespace: str, tap: str, mac: str, folder: Path,
                 *, memory_mb: int = 256, cpus: int = 2, boot_timeout: float = 90.0,
                 tap_mtu: int = 1500) -> None:
        self.artefacts = artefacts
        self.namespace = namespace
        self.tap = tap
        self.mac = mac
        self.folder = folder
        self.memory_mb = memory_mb
        self.cpus = cpus
        self.boot_timeout = boot_timeout
        self.tap_mtu = tap_mtu
        self.console_log = folder / f"{tap}-console.log"
        self.qemu_log = folder / f"{tap}-qemu.log"
        self.pidfile = folder / f"{tap}-qemu.pid"
        self.accel: Accel | None = None
        self.boot_seconds: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._reader: _LineReader | None = None
        self._sockdir: Path | None = None
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._tap_created = False

    # -- life cycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Boot, wait until the guest's control channel answers, set the guest's clock."""
        error = qemu_missing()
        if error:
            raise VMError(error)
        self.folder.mkdir(parents=True, exist_ok=True)
        accel = choose_accel()
        try:
            self._boot(accel)
        except VMError as exc:
            if accel.name != "kvm" or os.environ.get("WGREF_KERNEL_VM_ACCEL"):
                raise
            global _kvm_failed
            _kvm_failed = True
            self._teardown()
            fallback = Accel("tcg", f"KVM boot failed ({str(exc)[:120]}); fell back to TCG")
            self._boot(fallback)
        self.run(f"date -u -s @{int(time.time())} >/dev/null", timeout=10)

    def _boot(self, accel: Accel) -> None:
        self.accel = accel
        self._make_tap()
        self._sockdir = Path(tempfile.mkdtemp(prefix="wgkvm-"))
        ctl = self._sockdir / "ctl.sock"
        self.pidfile.unlink(missing_ok=True)
        argv = self.qemu_argv(accel, ctl)
        started = time.monotonic()
        with self.qemu_log.open("ab") as log:
            log.write(f"# accel {accel.name}: {accel.reason}\n# {' '.join(argv)}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                ["ip", "netns", "exec", self.namespace, *argv], stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        # a real KVM boot takes seconds; a broken /dev/kvm shim hangs: give up on it early
        limit = min(self.boot_timeout, KVM_BOOT_TIMEOUT) if accel.name == "kvm" else (
            self.boot_timeout)
        deadline = started + limit
        self._connect(ctl, deadline)
        self._wait_ready(deadline)
        self.boot_seconds = time.monotonic() - started

    def qemu_argv(self, accel: Accel, ctl: Path) -> list[str]:
        art = self.artefacts
        return [
            QEMU, "-name", f"wgref-kernel-vm-{self.tap}", "-nodefaults", "-no-user-config",
            "-display", "none", "-monitor", "none", "-no-reboot",
            "-machine", f"pc,accel={accel.name}",
            "-cpu", "host" if accel.name == "kvm" else "qemu64",
            "-smp", str(self.cpus), "-m", str(self.memory_mb),
            *firmware_args(),
            "-kernel", str(art.kernel), "-initrd", str(art.initramfs), "-append", CMDLINE,
            "-serial", f"file:{self.console_log}",
            "-chardev", f"socket,id=ctl,path={ctl},server=on,wait=off",
            "-serial", "chardev:ctl",
            "-device", "virtio-rng-pci",
            "-netdev", f"tap,id=net0,ifname={self.tap},script=no,downscript=no",
            "-device", f"virtio-net-pci,netdev=net0,mac={self.mac},romfile=",
            "-pidfile", str(self.pidfile),
        ]

    def _make_tap(self) -> None:
        if self._tap_created:
            return
        ns = ["ip", "netns", "exec", self.namespace]
        for argv in (["ip", "tuntap", "add", "dev", self.tap, "mode", "tap"],
                     ["ip", "link", "set", self.tap, "mtu", str(self.tap_mtu), "up"]):
            proc = subprocess.run([*ns, *argv], capture_output=True, text=True, timeout=15,
                                  check=False)
            if proc.returncode != 0:
                raise VMError(f"cannot create tap {self.tap} in {self.namespace}: "
                              f"{proc.stderr.strip()}")
            self._tap_created = True

    def _connect(self, ctl: Path, deadline: float) -> None:
        while time.monotonic() < deadline:
            self._check_alive("while starting")
            if ctl.exists():
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    sock.connect(str(ctl))
                except OSError:
                    sock.close()
                else:
                    self.attach_control(sock)
                    return
            time.sleep(0.02)
        raise VMError(f"QEMU made no control socket within {self.boot_timeout:g} s")

    def attach_control(self, sock: socket.socket) -> None:
        """Speak the control protocol (:mod:`.guest`) over ``sock``: QEMU's ttyS1 socket."""
        self._sock = sock
        self._reader = _LineReader(sock)

    def _wait_ready(self, deadline: float) -> None:
        assert self._sock is not None and self._reader is not None
        next_poke = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            self._check_alive("while booting")
            line = self._reader.readline(min(deadline, next_poke))
            if line is not None and line.strip() == guest.READY:
                return
            if time.monotonic() >= next_poke:
                if self.accel and self.accel.name == "kvm":
                    error = next((line for line in self.qemu_tail(4000).splitlines()
                                  if "KVM internal error" in line), None)
                    if error:
                        raise VMError(f"KVM cannot run this kernel here: {error.strip()}")
                self._sock.sendall(b"\n")
                next_poke = time.monotonic() + 1.0
        raise VMError(f"the guest did not become ready in time "
                      f"(accel {self.accel.name if self.accel else '?'}); "
                      f"console: {self.console_tail()}")

    def _check_alive(self, when: str) -> None:
        if self._proc is not None and self._proc.poll() is not None:
            raise VMError(f"QEMU exited {when} (status {self._proc.returncode}): "
                          f"{self.qemu_tail()} / console: {self.console_tail()}")

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def problem(self) -> str | None:
        if self._proc is None:
            return "not started"
        if self._proc.poll() is not None:
            return (f"QEMU exited with status {self._proc.returncode}: {self.qemu_tail()}; "
                    f"console: {self.console_tail()}")
        return None

    def console_tail(self, chars: int = 800) -> str:
        return _tail(self.console_log, chars)

    def qemu_tail(self, chars: int = 400) -> str:
        return _tail(self.qemu_log, chars)

    def keep_logs(self, tag: str) -> list[Path]:
        """Rename this VM's console and QEMU logs aside (``NAME.TAG.log``) so that another VM
        on the same tap writes fresh ones; the renamed paths."""
        kept = []
        for path in (self.console_log, self.qemu_log):
            if path.exists():
                target = path.with_name(f"{path.stem}.{tag}{path.suffix}")
                path.replace(target)
                kept.append(target)
        return kept

    def stop(self) -> None:
        """Stop QEMU (by PID) and remove the tap; safe to call twice."""
        self._teardown()

    def _teardown(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
            self._reader = None
        if self._proc is not None:
            if self._proc.poll() is None:
                _signal_group(self._proc.pid, signal.SIGTERM)
                try:
                    self._proc.wait(5)
                except subprocess.TimeoutExpired:
                    _signal_group(self._proc.pid, signal.SIGKILL)
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        self._proc.wait(5)
            self._proc = None
        kill_pidfile(self.pidfile)
        if self._tap_created:
            subprocess.run(["ip", "netns", "exec", self.namespace, "ip", "link", "del",
                            self.tap], capture_output=True, timeout=15, check=False)
            self._tap_created = False
        if self._sockdir is not None:
            shutil.rmtree(self._sockdir, ignore_errors=True)
            self._sockdir = None

    def __enter__(self) -> KernelVM:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the control channel ---------------------------------------------------------------

    def run(self, script: str, *, timeout: float = 30.0) -> tuple[int, str]:
        """Run a shell script in the guest: (exit status, stdout and stderr together)."""
        with self._lock:
            if self._sock is None or self._reader is None:
                raise VMError("the VM is not running")
            ident = next(self._ids)
            payload = base64.b64encode(script.encode()).decode()
            request = f"{guest.RUN} {ident} {len(payload)} {payload}\n".encode()
            self._sock.sendall(request)
            deadline = time.monotonic() + timeout
            resend_at = time.monotonic() + guest.ACK_TIMEOUT
            acked, resent = False, 0
            collecting = False
            chunks: list[str] = []
            while True:
                try:
                    line = self._reader.readline(deadline if acked else min(deadline, resend_at))
                except (VMError, OSError) as exc:
                    time.sleep(0.5)  # let QEMU finish exiting, so problem() can say why
                    raise VMError(f"{exc}; {self.problem() or 'QEMU still runs'}; "
                                  f"console: {self.console_tail()}") from exc
                if line is None:
                    if not acked and time.monotonic() < deadline:
                        resent += 1
                        self._note(f"command {ident}: no {guest.ACK} in {guest.ACK_TIMEOUT:g} s, "
                                   f"sent again ({resent})")
                        self._sock.sendall(request)
                        resend_at = time.monotonic() + guest.ACK_TIMEOUT
                        continue
                    self._check_alive("during a command")
                    state = "acknowledged" if acked else f"never acknowledged, sent {resent + 1}x"
                    raise VMError(f"guest command timed out after {timeout:g} s ({state}): "
                                  f"{script[:120]!r}; console: {self.console_tail(400)}")
                if line == f"{guest.ACK} {ident}":
                    acked = True
                elif line.startswith(f"{guest.BAD} {ident} ") and not acked:
                    resent += 1
                    self._note(f"command {ident} arrived damaged ({line}), sent again ({resent})")
                    self._sock.sendall(request)
                    resend_at = time.monotonic() + guest.ACK_TIMEOUT
                elif line == f"{guest.OUT} {ident}":
                    collecting, chunks = True, []
                elif collecting and line.startswith(f"{guest.END} {ident} "):
                    rc = int(line.split()[2])
                    text = base64.b64decode("".join(chunks)).decode(errors="replace")
                    return rc, text
                elif collecting:
                    chunks.append(line.strip())

    def _note(self, text: str) -> None:
        """A line about the control channel in the QEMU log, kept with the run's artefacts."""
        with self.qemu_log.open("a") as log:
            log.write(f"# control channel: {text}\n")

    def check(self, script: str, *, timeout: float = 30.0) -> str:
        """Like :meth:`run`, but a non-zero status raises VMError."""
        rc, out = self.run(script, timeout=timeout)
        if rc != 0:
            raise GuestCommandFailed(f"guest command exited {rc}: {script[:160]!r}: "
                                     f"{out.strip()[-400:]}")
        return out

    def write_file(self, path: str, data: str, mode: int = 0o600) -> None:
        """A file in the guest (keys, configurations), sent inside the command channel."""
        encoded = base64.b64encode(data.encode()).decode()
        self.check(f"umask 077; printf '%s' '{encoded}' | base64 -d > '{path}' && "
                   f"chmod {mode:o} '{path}'")


def _tail(path: Path, chars: int) -> str:
    try:
        return path.read_text(errors="replace")[-chars:].strip()
    except OSError:
        return ""


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
