"""Helpers for tests in network namespaces (a topology like the kernel's netns.sh).

Every name carries a run-specific prefix; :meth:`Lab.close` kills what it started, deletes its
namespaces and removes its sockets, whatever happened in the test.
"""

from __future__ import annotations

import base64
import itertools
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from tests.ci import in_ci

SOCKET_DIR = Path("/var/run/wireguard")
REPO = Path(__file__).resolve().parents[1]
_counter = itertools.count()


def netns_skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces, TUN)"
    for tool in ("ip", "wg", "wireguard-go", "ping"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if not os.path.exists("/dev/net/tun"):
        return "/dev/net/tun is missing"
    probe = f"wgt-probe-{os.getpid()}"
    try:
        subprocess.run(["ip", "netns", "add", probe], check=True, capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        reason = f"`ip netns add` does not work here: {exc} {detail.decode(errors='replace')}"
        if in_ci():
            pytest.fail(f"{reason.strip()} (CI=true: CI runs as root with namespaces)",
                        pytrace=False)
        return reason.strip()
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, timeout=10)
    return None


def require_netns() -> None:
    reason = netns_skip_reason()
    if reason:
        pytest.skip(reason)


def wait_for(condition: Callable[[], bool], timeout: float, what: str, step: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def holds_for(condition: Callable[[], bool], seconds: float, what: str,
              step: float = 0.1) -> None:
    """Assert that ``condition`` stays true over ``seconds`` (checked every ``step``): for
    things that must *not* happen, such as a daemon stopping."""
    deadline = time.monotonic() + seconds
    while True:
        if not condition():
            raise AssertionError(f"{what} stopped holding")
        if time.monotonic() >= deadline:
            return
        time.sleep(step)


def genkey() -> str:
    """A clamped private key, as `wg genkey` prints (usable as a PSK too)."""
    key = bytearray(os.urandom(32))
    key[0] &= 248
    key[31] = (key[31] & 127) | 64
    return base64.b64encode(bytes(key)).decode()


def pubkey(private: str) -> str:
    return subprocess.run(
        ["wg", "pubkey"], input=private, capture_output=True, text=True, check=True, timeout=10
    ).stdout.strip()


def processes() -> list[tuple[int, int]]:
    """(pid, parent pid) of every process now."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            found.append((int(entry.name), int(stat.rpartition(")")[2].split()[1])))
    return found


def stop_processes(procs: Sequence[subprocess.Popen[bytes]], grace: float) -> None:
    """SIGTERM every process still running, wait up to ``grace`` s for each, then SIGKILL."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def assert_no_leftovers() -> None:
    """No namespace or UAPI socket of this process's labs is left (Lab names carry the pid)."""
    pid = os.getpid() % 100000
    namespaces = subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, timeout=10
    ).stdout
    assert f"wgt-{pid}" not in namespaces, namespaces
    leftover = [p.name for p in SOCKET_DIR.glob(f"wgt{pid}*.sock")]
    assert not leftover, leftover


class Lab:
    """Namespaces, daemons and files of one test; ``close`` undoes all of it."""

    def __init__(self, tmp: Path, namespaces: int = 3) -> None:
        self.id = f"{os.getpid() % 100000}{next(_counter)}"
        self.tmp = tmp
        self.ns = [f"wgt-{self.id}-ns{i}" for i in range(namespaces)]
        self.procs: list[subprocess.Popen[bytes]] = []
        self.ifnames: list[str] = []
        self._created: list[str] = []
        try:
            for ns in self.ns:
                self.sh(None, "ip", "netns", "add", ns)
                self._created.append(ns)
                self.sh(ns, "ip", "link", "set", "lo", "up")
        except BaseException:
            self.close()
            raise

    def ifname(self, tag: str) -> str:
        name = f"wgt{self.id}{tag}"[-15:]
        self.ifnames.append(name)
        return name

    def sh(
        self, ns: str | None, *argv: str, check: bool = True, timeout: float = 20, **kw: object
    ) -> subprocess.CompletedProcess[str]:
        cmd = (["ip", "netns", "exec", ns] if ns else []) + list(argv)
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)  # type: ignore[call-overload]
        if check and result.returncode != 0:
            raise AssertionError(f"{cmd} failed ({result.returncode}): {result.stderr.strip()}")
        return result  # type: ignore[no-any-return]

    def wg(self, *argv: str, check: bool = True, stdin: str | None = None) -> str:
        return self.sh(None, "wg", *argv, check=check, input=stdin).stdout

    def start(
        self, kind: str, ns: str, ifname: str, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start ``wgref`` or ``wireguard-go`` in the foreground inside ``ns``."""
        if kind == "wgref":
            argv: Sequence[str] = [sys.executable, "-m", "wgref.interface", "-f", ifname]
        else:
            argv = ["wireguard-go", "-f", ifname]
        log = open(self.tmp / f"{ifname}.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, *argv],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env={**os.environ, **(env or {}), "PYTHONPATH": str(REPO)},
        )
        log.close()
        self.procs.append(proc)
        sock = SOCKET_DIR / f"{ifname}.sock"
        wait_for(lambda: sock.exists() or proc.poll() is not None, 10, f"{sock}")
        if proc.poll() is not None:
            raise AssertionError(f"{kind} {ifname} exited: {self.log(ifname)}")
        return proc

    def log(self, ifname: str) -> str:
        try:
            return (self.tmp / f"{ifname}.log").read_text(errors="replace")
        except OSError:
            return ""

    def close(self) -> None:
        stop_processes(self.procs, grace=5)
        for ns in self._created:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20)
        for name in self.ifnames:
            (SOCKET_DIR / f"{name}.sock").unlink(missing_ok=True)


class Pair:
    """netns.sh's topology: daemons (and their UDP sockets) in ns0 on loopback, link 1 moved
    to ns1 (192.168.241.1, fd00::1), link 2 to ns2 (.2, fd00::2)."""

    def __init__(self, lab: Lab, left: str = "wgref", right: str = "wireguard-go") -> None:
        self.lab = lab
        self.ns0, self.ns1, self.ns2 = lab.ns[:3]
        self.if1, self.if2 = lab.ifname("a"), lab.ifname("b")
        self.key1, self.key2 = genkey(), genkey()
        self.pub1, self.pub2 = pubkey(self.key1), pubkey(self.key2)
        self.proc1 = lab.start(left, self.ns0, self.if1, {"LOG_LEVEL": "verbose"})
        self.proc2 = lab.start(right, self.ns0, self.if2, {"LOG_LEVEL": "verbose"})
        for ifname, ns, addr4, addr6 in (
            (self.if1, self.ns1, "192.168.241.1/24", "fd00::1/112"),
            (self.if2, self.ns2, "192.168.241.2/24", "fd00::2/112"),
        ):
            lab.sh(self.ns0, "ip", "link", "set", ifname, "netns", ns)
            lab.sh(ns, "ip", "addr", "add", addr4, "dev", ifname)
            lab.sh(ns, "ip", "addr", "add", addr6, "dev", ifname, "nodad")
            lab.sh(ns, "ip", "link", "set", ifname, "up")

    def configure(
        self,
        *,
        psk1: str | None = None,
        psk2: str | None = None,
        host: str = "127.0.0.1",
        port1: int = 10001,
        port2: int = 10002,
        endpoint1: bool = True,
        endpoint2: bool = True,
    ) -> None:
        """Keys, ports, allowed ips; ``endpointN``: whether side N knows the other's endpoint."""
        fmt = f"[{host}]" if ":" in host else host
        for ifname, key, port, peer, psk, other_port, has_endpoint, addr in (
            (self.if1, self.key1, port1, self.pub2, psk1, port2, endpoint1, "2"),
            (self.if2, self.key2, port2, self.pub1, psk2, port1, endpoint2, "1"),
        ):
            argv = ["set", ifname, "private-key", "/dev/stdin", "listen-port", str(port)]
            argv += ["peer", peer, "allowed-ips", f"192.168.241.{addr}/32,fd00::{addr}/128"]
            if has_endpoint:
                argv += ["endpoint", f"{fmt}:{other_port}"]
            if psk:
                psk_file = self.lab.tmp / f"{ifname}.psk"
                psk_file.write_text(psk + "\n")
                argv += ["preshared-key", str(psk_file)]
            self.lab.wg(*argv, stdin=key + "\n")

    def ping(self, from_side: int, to: str, count: int = 1, size: int = 56) -> bool:
        ns = self.ns1 if from_side == 1 else self.ns2
        tool = ["ping", "-6"] if ":" in to else ["ping", "-4"]
        argv = [*tool, "-c", str(count), "-W", "2", "-i", "0.2", "-s", str(size), "-M", "do", to]
        return self.lab.sh(ns, *argv, check=False, timeout=10 + 3 * count).returncode == 0

    def latest_handshake(self, ifname: str) -> int:
        out = self.lab.wg("show", ifname, "latest-handshakes").split()
        return int(out[1]) if len(out) >= 2 else 0

    def endpoint_seen_by(self, ifname: str) -> str:
        out = self.lab.wg("show", ifname, "endpoints").split()
        return out[1] if len(out) >= 2 else ""
