"""`wgref client` (the transparent client) against a real wireguard-go server, in network
namespaces: real nftables, NFQUEUE, conntrack.

Topology (every name carries a per-run prefix):

    client ns  ── veth ──  server ns: wireguard-go (10.99.0.1, fd99::1 on the tunnel),
    10.200.0.2             veth 10.200.0.1 (endpoint, target) and 10.200.0.3 (second target),
    fd20::2                fd20::1 / fd20::3; an echo server answering with the source address
                           it sees, so "tunnelled" (10.99.0.2 / fd99::2) and "direct"
                           (10.200.0.2 / fd20::2) are told apart.
    [lan ns ── veth ── client ns, for the forwarding test]

The client ns also routes 10.99.0.0/24 and fd99::/64 straight to the server, so a flow that
bypasses the tunnel still reaches the tunnel addresses directly. Two "applications" are two
copies of the Python interpreter named appA and appB running the same echo client. Root only;
every subprocess and wait is bounded and every test cleans up in `finally`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.netns import (
    REPO,
    SOCKET_DIR,
    genkey,
    netns_skip_reason,
    processes,
    pubkey,
    stop_processes,
    wait_for,
)

pytestmark = pytest.mark.netns

PORT = 7777
TUNNEL4, TUNNEL6 = "10.99.0.2", "fd99::2"
DIRECT4, DIRECT6 = "10.200.0.2", "fd20::2"
SERVER_ADDRESSES = ["10.200.0.1", "10.200.0.3", "10.99.0.1", "fd20::1", "fd20::3", "fd99::1"]
MTU = 1420

ECHO = r'''
"""serve PORT ADDR...: echo servers; tcp|udp HOST PORT SIZE: one exchange, prints OK/BAD SEEN."""
import socket, socketserver, sys, threading

class Handler(socketserver.BaseRequestHandler):
    def handle(self):
        self.request.settimeout(30)
        self.request.sendall(self.client_address[0].removeprefix("::ffff:").encode() + b"\n")
        while True:
            data = self.request.recv(65536)
            if not data:
                break
            self.request.sendall(data)

class Server(socketserver.ThreadingTCPServer):
    address_family = socket.AF_INET6
    allow_reuse_address = True
    daemon_threads = True
    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()

def udp_serve(address, port):
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind((address, port))  # replies leave from the address the request went to
    while True:
        data, peer = sock.recvfrom(65536)
        sock.sendto(peer[0].encode() + b"\n" + data, peer)

def payload(size):
    return bytes((i * 7 + 3) & 0xFF for i in range(size))

def tcp(host, port, size):
    data = payload(size)
    try:
        with socket.create_connection((host, port), timeout=8) as s:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            got = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                got += chunk
    except OSError as exc:
        print(f"ERROR {exc}")
        return
    seen, _, echoed = got.partition(b"\n")
    print(("OK " if echoed == data else "BAD ") + seen.decode())

def udp(host, port, size):
    data = payload(size)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.settimeout(1.5)
        s.connect((host, port))
        for _ in range(4):
            try:
                s.send(data)
                got = s.recv(65536)
            except OSError:
                continue
            seen, _, echoed = got.partition(b"\n")
            print(("OK " if echoed == data else "BAD ") + seen.decode())
            return
    print("TIMEOUT")

'''


ECHO_MAIN = r'''
if __name__ == "__main__":
    if sys.argv[1] == "serve":
        port = int(sys.argv[2])
        server = Server(("::", port), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        for address in sys.argv[3:]:
            threading.Thread(target=udp_serve, args=(address, port), daemon=True).start()
        print("ready", flush=True)
        threading.Event().wait()
    elif sys.argv[1] == "tcp":
        tcp(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        udp(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
'''


def _echo_source() -> str:
    return ECHO + ECHO_MAIN


_counter = iter(range(1000))


class ClientLab:
    """The namespaces, wireguard-go server, echo server and client of one test."""

    def __init__(self, tmp: Path, *, lan: bool = False) -> None:
        self.tmp = tmp
        self.id = f"{os.getpid() % 100000}{next(_counter)}"
        self.server_ns, self.client_ns = f"wgc-{self.id}-srv", f"wgc-{self.id}-cli"
        self.lan_ns = f"wgc-{self.id}-lan" if lan else None
        self.namespaces: list[str] = []
        self.procs: list[subprocess.Popen[bytes]] = []
        self.wg_if = f"wgc{self.id}s"[-15:]
        self.extra_sockets: list[Path] = []
        self.client: subprocess.Popen[bytes] | None = None
        self.status_socket = tmp / "status.sock"
        self.echo = tmp / "echo.py"
        self.echo.write_text(_echo_source())
        self.server_key, self.client_key = genkey(), genkey()
        self.psk = genkey()
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    # ---------------------------------------------------------------- plumbing

    def sh(self, ns: str | None, *argv: str, check: bool = True, timeout: float = 20,
           stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        cmd = (["ip", "netns", "exec", ns] if ns else []) + list(argv)
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                                input=stdin)
        if check and result.returncode != 0:
            raise AssertionError(f"{cmd} failed ({result.returncode}): {result.stderr.strip()}")
        return result

    def spawn(self, ns: str, argv: list[str], log: str) -> subprocess.Popen[bytes]:
        out = open(self.tmp / log, "wb")  # noqa: SIM115 - closed right after the fork
        proc = subprocess.Popen(["ip", "netns", "exec", ns, *argv], stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
                                env={**os.environ, "PYTHONPATH": str(REPO)})
        out.close()
        self.procs.append(proc)
        return proc

    def log(self, name: str) -> str:
        try:
            return (self.tmp / name).read_text(errors="replace")
        except OSError:
            return ""

    def _build(self) -> None:
        s, c = self.server_ns, self.client_ns
        for ns in filter(None, (s, c, self.lan_ns)):
            self.sh(None, "ip", "netns", "add", ns)
            self.namespaces.append(ns)
            self.sh(ns, "ip", "link", "set", "lo", "up")
        self.sh(None, "ip", "link", "add", "wgcv0", "netns", s, "type", "veth", "peer",
                "name", "wgcv1", "netns", c)
        for addr in ("10.200.0.1/24", "10.200.0.3/24"):
            self.sh(s, "ip", "addr", "add", addr, "dev", "wgcv0")
        for addr in ("fd20::1/64", "fd20::3/64"):
            self.sh(s, "ip", "addr", "add", addr, "dev", "wgcv0", "nodad")
        self.sh(c, "ip", "addr", "add", "10.200.0.2/24", "dev", "wgcv1")
        self.sh(c, "ip", "addr", "add", "fd20::2/64", "dev", "wgcv1", "nodad")
        self.sh(s, "ip", "link", "set", "wgcv0", "up")
        self.sh(c, "ip", "link", "set", "wgcv1", "up")
        # direct routes to the tunnel subnets, so bypassing flows still get there
        self.sh(c, "ip", "route", "add", "10.99.0.0/24", "via", "10.200.0.1")
        self.sh(c, "ip", "route", "add", "fd99::/64", "via", "fd20::1")
        if self.lan_ns:
            lan = self.lan_ns
            self.sh(None, "ip", "link", "add", "wgcl0", "netns", c, "type", "veth", "peer",
                    "name", "wgcl1", "netns", lan)
            self.sh(c, "ip", "addr", "add", "10.201.0.1/24", "dev", "wgcl0")
            self.sh(lan, "ip", "addr", "add", "10.201.0.2/24", "dev", "wgcl1")
            self.sh(c, "ip", "link", "set", "wgcl0", "up")
            self.sh(lan, "ip", "link", "set", "wgcl1", "up")
            self.sh(lan, "ip", "route", "add", "default", "via", "10.201.0.1")
            self.sh(c, "sysctl", "-qw", "net.ipv4.ip_forward=1")
            # the server knows the way back to the LAN only for direct (untunnelled) traffic
            self.sh(s, "ip", "route", "add", "10.201.0.0/24", "via", "10.200.0.2")
        wg = self.spawn(s, ["wireguard-go", "-f", self.wg_if], "wireguard-go.log")
        sock = SOCKET_DIR / f"{self.wg_if}.sock"
        wait_for(lambda: sock.exists() or wg.poll() is not None, 10, str(sock))
        assert wg.poll() is None, self.log("wireguard-go.log")
        self.set_server_psk(self.psk)
        for addr in ("10.99.0.1/24",):
            self.sh(s, "ip", "addr", "add", addr, "dev", self.wg_if)
        self.sh(s, "ip", "addr", "add", "fd99::1/64", "dev", self.wg_if, "nodad")
        self.sh(s, "ip", "link", "set", self.wg_if, "up", "mtu", str(MTU))
        echo = self.spawn(s, [sys.executable, str(self.echo), "serve", str(PORT),
                              *SERVER_ADDRESSES], "echo.log")
        wait_for(lambda: "ready" in self.log("echo.log") or echo.poll() is not None, 10,
                 "the echo server")
        real = os.path.realpath(sys.executable)
        for app in ("appA", "appB"):
            shutil.copy2(real, self.tmp / app)

    def set_server_psk(self, psk: str | None) -> None:
        psk_file = self.tmp / "server.psk"
        psk_file.write_text((psk or "") + "\n")
        argv = ["set", self.wg_if, "private-key", "/dev/stdin", "listen-port", "51820",
                "peer", pubkey(self.client_key), "allowed-ips", f"{TUNNEL4}/32,{TUNNEL6}/128"]
        if psk:
            argv += ["preshared-key", str(psk_file)]
        self.sh(self.server_ns, "wg", *argv, stdin=self.server_key + "\n")

    # ---------------------------------------------------------------- the client

    def config(self, extra_peer: str = "", *, psk: str | None = None, interface: str = "",
               allowed: str = "10.200.0.0/24, fd20::/64, 10.99.0.0/24, fd99::/64") -> Path:
        path = self.tmp / "client.conf"
        path.write_text(
            "[Interface]\n"
            f"PrivateKey = {self.client_key}\n"
            f"Address = {TUNNEL4}/32, {TUNNEL6}/128\n"
            "DNS = 10.99.0.1\n"
            f"MTU = {MTU}\n"
            f"{interface}"
            "\n[Peer]\n"
            f"PublicKey = {pubkey(self.server_key)}\n"
            f"PresharedKey = {psk or self.psk}\n"
            "Endpoint = 10.200.0.1:51820\n"
            f"AllowedIPs = {allowed}\n"
            "PersistentKeepalive = 25\n"
            f"{extra_peer}"
        )
        return path

    def start_client(self, config: Path, *args: str, handshake: bool = True) -> None:
        self.client = self.spawn(
            self.client_ns,
            [sys.executable, "-m", "wgref.client", str(config), "--foreground",
             "--socket", str(self.status_socket), *args],
            "client.log",
        )
        wait_for(lambda: "client up" in self.log("client.log") or self.client_exited(), 15,
                 "the client to start")
        assert not self.client_exited(), self.log("client.log")
        if handshake:
            wait_for(lambda: "handshake with peer" in self.log("client.log"), 10,
                     "the client's handshake")

    def verdict_helpers(self) -> list[int]:
        """The client's child processes: its verdict helper (wgref/client/verdicts.py)."""
        assert self.client is not None
        return [pid for pid, ppid in processes() if ppid == self.client.pid]

    def client_exited(self) -> bool:
        return self.client is not None and self.client.poll() is not None

    def stop_client(self, sig: int = signal.SIGTERM) -> int:
        assert self.client is not None
        self.client.send_signal(sig)
        return self.client.wait(timeout=10)

    def wgref(self, *args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
        return self.sh(self.client_ns, sys.executable, "-m", "wgref.client", *args,
                       check=False, timeout=timeout)

    def status(self) -> dict[str, object]:
        result = self.wgref("--status", "--json", "--socket", str(self.status_socket))
        assert result.returncode == 0, result.stderr
        document: dict[str, object] = json.loads(result.stdout)
        return document

    def tables(self, ns: str | None = None) -> str:
        return self.sh(ns or self.client_ns, "nft", "list", "ruleset").stdout

    def run_app(self, app: str, mode: str, host: str, size: int = 100,
                ns: str | None = None) -> str:
        argv = [str(self.tmp / app), str(self.echo), mode, host, str(PORT), str(size)]
        result = self.sh(ns or self.client_ns, *argv, check=False, timeout=40)
        return (result.stdout.strip() or result.stderr.strip()).splitlines()[-1]

    def iperf3_server(self) -> subprocess.Popen[bytes]:
        """A one-off iperf3 server on the server's tunnel address, listening when returned."""
        server = self.spawn(self.server_ns, ["iperf3", "-s", "-1", "-B", "10.99.0.1"],
                            "iperf3s.log")
        wait_for(lambda: bool(self.sh(self.server_ns, "ss", "-Hltn", "sport = :5201")
                              .stdout.strip()) or server.poll() is not None, 10, "iperf3 -s")
        return server

    def add_second_server(self) -> tuple[str, str]:
        """A second wireguard-go in the server namespace (port 51821, 10.98.0.1 on its
        tunnel, reached from the client ns by a direct route too); (its ifname, its key)."""
        ifname = f"wgc{self.id}t"[-15:]
        key = genkey()
        wg = self.spawn(self.server_ns, ["wireguard-go", "-f", ifname], "wireguard-go2.log")
        sock = SOCKET_DIR / f"{ifname}.sock"
        self.extra_sockets.append(sock)
        wait_for(lambda: sock.exists() or wg.poll() is not None, 10, str(sock))
        s = self.server_ns
        self.sh(s, "wg", "set", ifname, "private-key", "/dev/stdin", "listen-port", "51821",
                "peer", pubkey(self.client_key), "allowed-ips", f"{TUNNEL4}/32",
                stdin=key + "\n")
        self.sh(s, "ip", "addr", "add", "10.98.0.1/24", "dev", ifname)
        self.sh(s, "ip", "link", "set", ifname, "up", "mtu", str(MTU))
        # replies from 10.98.0.1 to the client's tunnel address leave through this server
        # (the first one's interface route to 10.99.0.0/24 would take them otherwise)
        self.sh(s, "ip", "rule", "add", "from", "10.98.0.1", "table", "98")
        self.sh(s, "ip", "route", "add", "10.99.0.0/24", "dev", ifname, "table", "98")
        self.sh(self.client_ns, "ip", "route", "add", "10.98.0.0/24", "via", "10.200.0.1")
        return ifname, key

    def server_transfer(self, ifname: str) -> tuple[int, int]:
        """(rx, tx) bytes the server interface counted for the client."""
        out = self.sh(self.server_ns, "wg", "show", ifname, "transfer").stdout.split()
        return (int(out[1]), int(out[2])) if len(out) >= 3 else (0, 0)

    def close(self) -> None:
        stop_processes(self.procs, grace=10)
        for ns in self.namespaces:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20)
        for sock in [SOCKET_DIR / f"{self.wg_if}.sock", *self.extra_sockets]:
            sock.unlink(missing_ok=True)


def _gone(pid: int) -> bool:
    return not Path(f"/proc/{pid}").exists()


@pytest.fixture(scope="module", autouse=True)
def _no_leftovers() -> Iterator[None]:
    reason = netns_skip_reason()
    if reason:
        pytest.skip(reason)
    if shutil.which("nft") is None:
        pytest.skip("nft is not installed")
    yield
    prefix = f"wgc-{os.getpid() % 100000}"
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                                timeout=10).stdout
    assert prefix not in namespaces, namespaces
    assert not list(SOCKET_DIR.glob(f"wgc{os.getpid() % 100000}*.sock"))


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[ClientLab]:
    lab = ClientLab(tmp_path)
    try:
        yield lab
    finally:
        lab.close()
        assert all(p.poll() is not None for p in lab.procs)


@pytest.fixture
def lan_lab(tmp_path: Path) -> Iterator[ClientLab]:
    lab = ClientLab(tmp_path, lan=True)
    try:
        yield lab
    finally:
        lab.close()


def _queued(lab: ClientLab) -> int:
    return int(str(lab.status()["queued"]))


def _from_sink(lab: ClientLab) -> int:
    return int(str(lab.status()["from_discard_device"]))


def _sink(lab: ClientLab) -> str:
    """The discard devices and the routing rules that lead to them (wgref/client/sink.py), as
    `ip` lists them: empty when none is there."""
    found = [lab.sh(lab.client_ns, "ip", *argv, check=False).stdout.strip()
             for argv in (("link", "show", "wgref-sink"), ("link", "show", "wgref-sink-udp"),
                          *((f"-{v}", "rule", "show", "table", t)
                            for v in (4, 6) for t in ("30567", "30568")))]
    return "\n".join(line for line in found if line)


# ----------------------------------------------------------------- per-application rules


def test_allowed_apps_tcp_udp_v4_v6(lab: ClientLab) -> None:
    lab.start_client(lab.config("#@ws:AllowedApps = appA\n"))
    for host, tunnel, direct in (("10.200.0.1", TUNNEL4, DIRECT4),
                                 ("fd20::1", TUNNEL6, DIRECT6)):
        for mode in ("tcp", "udp"):
            assert lab.run_app("appA", mode, host) == f"OK {tunnel}", lab.log("client.log")
            assert lab.run_app("appB", mode, host) == f"OK {direct}", lab.log("client.log")
    # the tunnel subnet itself: appA through the tunnel, appB over the direct route
    assert lab.run_app("appA", "tcp", "10.99.0.1") == f"OK {TUNNEL4}"
    assert lab.run_app("appB", "tcp", "10.99.0.1") == f"OK {DIRECT4}"
    log = lab.log("client.log")
    assert re.search(r"tcp 10\.200\.0\.2:\d+ -> 10\.200\.0\.1:7777: tunnel \(appA\[\d+\] in "
                     r"AllowedApps\)", log), log
    assert re.search(r"bypass \(appB\[\d+\] not in AllowedApps\)", log), log
    # A bypassed flow leaves user space after its first packet: 2 MB over TCP by appB adds
    # only its first packet (and perhaps a retransmitted SYN) to the queue counter.
    before = _queued(lab)
    assert lab.run_app("appB", "tcp", "10.200.0.1", 2_000_000) == f"OK {DIRECT4}"
    assert _queued(lab) - before <= 3
    # ...while a tunnelled one is all in user space: its first packet queued, the rest read
    # from the discard device as GSO super-packets (fewer packets than segments, but every
    # byte through the tunnel).
    before, sunk = _queued(lab), _from_sink(lab)
    sent = int(str(lab.status()["tx_bytes"]))
    assert lab.run_app("appA", "tcp", "10.200.0.1", 200_000) == f"OK {TUNNEL4}"
    assert _queued(lab) - before <= 3
    assert _from_sink(lab) - sunk > 5
    assert int(str(lab.status()["tx_bytes"])) - sent > 200_000
    # the echo came back as merged packets received through lo (rp_filter is off here), the
    # ACKs and lone segments after the first answer too; the first plain ACK went through
    # the raw socket and marked the connection in conntrack, so the host's packets of it
    # kept going to the queue (the echo names the tunnel address), none let out directly
    doc = lab.status()
    assert int(str(doc["merged_through_lo"])) > 0
    assert int(str(doc["answers_through_lo"])) > 0
    assert doc["discard_devices"] == ["wgref-sink", "wgref-sink-udp"]
    assert doc["discard_device_dropped"] == 0
    assert lab.run_app("appA", "tcp", "10.200.0.1") == f"OK {TUNNEL4}"  # a short one too


def test_without_the_discard_device_tunnelled_connections_are_queued(lab: ClientLab) -> None:
    lab.start_client(lab.config("#@ws:AllowedApps = appA\n"), "--no-discard-device")
    assert _sink(lab) == ""
    assert lab.status()["discard_devices"] == []
    for host, tunnel in (("10.200.0.1", TUNNEL4), ("fd20::1", TUNNEL6)):
        before = _queued(lab)
        assert lab.run_app("appA", "tcp", host, 200_000) == f"OK {tunnel}"
        assert _queued(lab) - before > 5  # GSO super-packets, each with its verdict
    assert _from_sink(lab) == 0
    assert lab.run_app("appB", "tcp", "10.200.0.1") == f"OK {DIRECT4}"


def test_disallowed_apps(lab: ClientLab) -> None:
    lab.start_client(lab.config("DisallowedApps = APPB.exe\n"))  # bare form, name rule
    for host, tunnel, direct in (("10.200.0.1", TUNNEL4, DIRECT4),
                                 ("fd20::1", TUNNEL6, DIRECT6)):
        for mode in ("tcp", "udp"):
            assert lab.run_app("appA", mode, host) == f"OK {tunnel}"
            assert lab.run_app("appB", mode, host) == f"OK {direct}"


def test_allowed_apps_by_path(lab: ClientLab) -> None:
    lab.start_client(lab.config(f"#@ws:AllowedApps = {lab.tmp / 'appB'}\n"))
    assert lab.run_app("appB", "tcp", "10.200.0.1") == f"OK {TUNNEL4}"
    assert lab.run_app("appA", "tcp", "10.200.0.1") == f"OK {DIRECT4}"


def test_disallowed_ips(lab: ClientLab) -> None:
    lab.start_client(lab.config("#@ws:AllowedApps = appA\n"
                                "#@ws:DisallowedIPs = 10.200.0.3/32, fd20::3/128\n"))
    assert lab.run_app("appA", "tcp", "10.200.0.1") == f"OK {TUNNEL4}"
    assert lab.run_app("appA", "tcp", "10.200.0.3") == f"OK {DIRECT4}"
    assert lab.run_app("appA", "udp", "10.200.0.3") == f"OK {DIRECT4}"
    assert lab.run_app("appA", "tcp", "fd20::1") == f"OK {TUNNEL6}"
    assert lab.run_app("appA", "tcp", "fd20::3") == f"OK {DIRECT6}"
    # the kernel never queues them: they are not in the tables' sets
    before = _queued(lab)
    assert lab.run_app("appA", "tcp", "10.200.0.3", 100_000) == f"OK {DIRECT4}"
    assert _queued(lab) == before


# ----------------------------------------------------------------- keys


def test_preshared_key_and_status(lab: ClientLab) -> None:
    lab.start_client(lab.config("#@ws:AllowedApps = appA\n"))
    assert lab.run_app("appA", "udp", "10.99.0.1") == f"OK {TUNNEL4}"
    doc = lab.status()
    assert doc["handshake_age"] is not None and float(str(doc["handshake_age"])) < 30
    assert int(str(doc["rx_bytes"])) > 0 and int(str(doc["tx_bytes"])) > 0
    assert doc["rtt_ms"] is not None
    text = lab.wgref("--status", "--socket", str(lab.status_socket)).stdout
    for label in ("latest handshake:", "transfer:", "estimated loss:", "estimated rtt:"):
        assert label in text, text


def test_wrong_preshared_key(lab: ClientLab) -> None:
    lab.start_client(lab.config("#@ws:AllowedApps = appA\n", psk=genkey()), handshake=False)
    assert lab.run_app("appA", "tcp", "10.200.0.1") == "ERROR timed out"
    wait_for(lambda: "does not authenticate" in lab.log("client.log"), 10, "the PSK error")
    assert "PresharedKey" in lab.log("client.log")
    assert lab.status()["handshake_age"] is None
    # nothing leaked: appB still goes direct
    assert lab.run_app("appB", "tcp", "10.200.0.1") == f"OK {DIRECT4}"


# ----------------------------------------------------------------- sizes, MSS, ICMP


def test_large_packets_and_mss_clamp(lab: ClientLab) -> None:
    # count SYNs by their MSS as the server receives them from the tunnel
    lab.sh(lab.server_ns, "nft", "-f", "-", stdin=(
        "table inet mss {\n chain input {\n  type filter hook input priority 0;\n"
        f'  iifname "{lab.wg_if}" meta nfproto ipv4 tcp flags syn '
        f"tcp option maxseg size > {MTU - 40} counter name big\n"
        f'  iifname "{lab.wg_if}" meta nfproto ipv6 tcp flags syn '
        f"tcp option maxseg size > {MTU - 60} counter name big\n"
        f'  iifname "{lab.wg_if}" tcp flags syn counter name syns\n }}\n'
        " counter big {}\n counter syns {}\n}\n"))
    lab.start_client(lab.config("#@ws:AllowedApps = appA\n"))
    for host, tunnel in (("10.99.0.1", TUNNEL4), ("fd99::1", TUNNEL6)):
        assert lab.run_app("appA", "tcp", host, 1_000_000) == f"OK {tunnel}"
        for size in (1400, 3000, 20000):
            assert lab.run_app("appA", "udp", host, size) == f"OK {tunnel}", size
    counters = lab.sh(lab.server_ns, "nft", "list", "counters").stdout
    big = re.search(r"counter big \{\s*packets (\d+)", counters)
    every = re.search(r"counter syns \{\s*packets (\d+)", counters)
    assert big and every, counters
    assert int(big.group(1)) == 0 and int(every.group(1)) >= 2, counters


def test_ping_through_the_tunnel(lab: ClientLab) -> None:
    lab.start_client(lab.config())  # no app rules: every application
    for target in ("10.99.0.1", "fd99::1"):
        result = lab.sh(lab.client_ns, "ping", "-c", "2", "-W", "2", "-i", "0.3", target,
                        check=False)
        assert result.returncode == 0, result.stdout + lab.log("client.log")
    assert lab.run_app("appB", "tcp", "10.200.0.1") == f"OK {TUNNEL4}"


def test_iperf3_tcp_through_the_client(lab: ClientLab) -> None:
    lab.start_client(lab.config("#@ws:AllowedApps = iperf3\n"))
    server = lab.iperf3_server()
    result = lab.sh(lab.client_ns, "iperf3", "-c", "10.99.0.1", "-t", "3", "-J", check=False,
                    timeout=40)
    server.wait(timeout=15)
    assert result.returncode == 0, result.stdout[-2000:] + lab.log("client.log")
    # Throughput is the bench's business (`python -m harness bench --pairs
    # wgref:wireguard-go,wgref-client:wireguard-go`): here only that iperf3's bytes arrived
    # and went through the tunnel.
    received = json.loads(result.stdout)["end"]["sum_received"]["bytes"]
    assert received > 0
    assert int(str(lab.status()["tx_bytes"])) >= received
    assert int(str(lab.status()["flows_tunnel"])) >= 1


GSO_SEND = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_UDP, 103, 1000)  # UDP_SEGMENT: one send, three datagrams
s.settimeout(3)
s.connect((sys.argv[1], int(sys.argv[2])))
s.send(bytes(range(250)) * 12)
print(sorted(len(s.recv(4096)) for _ in range(3)))
"""


def test_udp_flows_are_read_from_their_discard_device(lab: ClientLab) -> None:
    """A tunnelled UDP flow's datagrams go to wgref-sink-udp, whose transmit checksumming is
    off: the kernel completes each checksum (the sender left it to the device) and cuts a
    UDP GSO send into datagrams before the client reads them; none is queued but the
    flow's first."""
    lab.start_client(lab.config("#@ws:AllowedApps = iperf3\n"))
    server = lab.iperf3_server()
    queued, sunk = _queued(lab), _from_sink(lab)
    result = lab.sh(lab.client_ns, "iperf3", "-c", "10.99.0.1", "-u", "-b", "20M", "-l",
                    "1200", "-t", "2", "-J", check=False, timeout=40)
    server.wait(timeout=15)
    assert result.returncode == 0, result.stdout[-2000:] + lab.log("client.log")
    end = json.loads(result.stdout)["end"]["sum_received"]
    # each datagram that arrived passed the server's checksum check (udp.c drops the rest)
    assert end["packets"] > 2000 and end["lost_percent"] < 5, end
    assert _from_sink(lab) - sunk >= end["packets"]
    # iperf3's control connection and the UDP flow: their first packets only
    assert _queued(lab) - queued <= 6
    doc = lab.status()
    assert doc["discard_device_dropped"] == 0 and doc["malformed"] == 0, doc
    script = lab.tmp / "gso.py"
    script.write_text(GSO_SEND)
    assert lab.stop_client() == 0
    lab.start_client(lab.config())  # every application
    sunk = _from_sink(lab)
    result = lab.sh(lab.client_ns, sys.executable, str(script), "10.99.0.1", str(PORT),
                    check=False)
    # the echo server's three answers: "10.99.0.2\n" and 1,000 bytes each
    assert result.stdout.strip() == "[1010, 1010, 1010]", result.stdout + result.stderr
    assert _from_sink(lab) - sunk == 3


LEAK_TABLE = """table ip wgc_leak {
    chain out {
        type filter hook postrouting priority 300; policy accept;
        oifname "wgcv1" ip daddr 10.99.0.0/24 counter
    }
}
"""


def _leaked(lab: ClientLab) -> int:
    """Packets for the tunnel's subnet that left the client's namespace unencrypted (those
    the client queues and drops never get to this hook, those it reads from the discard
    device get here routed to it)."""
    listing = lab.sh(lab.client_ns, "nft", "list", "table", "ip", "wgc_leak").stdout
    found = re.search(r"counter packets (\d+)", listing)
    assert found is not None, listing
    return int(found.group(1))


@pytest.mark.parametrize("reverse", [False, True], ids=["upload", "download"])
def test_conntrack_flush_mid_transfer_neither_leaks_nor_stalls(lab: ClientLab,
                                                                reverse: bool) -> None:
    """The client's conntrack entries are flushed (as `conntrack -F` does) in the middle of a
    transfer. The next packet from the tunnel goes in through ``lo`` and starts the entry
    again; it must mark it as the client's, or the host's packets (then in the entry's reply
    direction) would be let out directly, outside the tunnel."""
    lab.start_client(lab.config("#@ws:AllowedApps = iperf3\n"))
    lab.sh(lab.client_ns, "nft", "-f", "-", stdin=LEAK_TABLE)
    server = lab.iperf3_server()
    argv = ["iperf3", "-c", "10.99.0.1", "-t", "6", "-J", *(["-R"] if reverse else [])]
    transfer = lab.spawn(lab.client_ns, argv, "iperf3c.log")
    counter = "rx_bytes" if reverse else "tx_bytes"
    wait_for(lambda: int(str(lab.status()[counter])) > 4 << 20 or transfer.poll() is not None,
             15, "the transfer under way")
    assert transfer.poll() is None, lab.log("iperf3c.log")
    lab.sh(lab.client_ns, sys.executable, "-c",
           "from wgref.client.conntrack import forget_marks; forget_marks()")
    code = transfer.wait(timeout=40)
    leaked = _leaked(lab)
    assert leaked == 0, f"{leaked} packets for the tunnel's subnet left outside the tunnel"
    report = json.loads(lab.log("iperf3c.log"))
    assert code == 0 and "error" not in report, lab.log("iperf3c.log")[-2000:]
    assert report["end"]["sum_received"]["bytes"] > 4 << 20
    server.wait(timeout=15)
    assert _marked_conntrack(lab)  # the connection's entry was started again, marked


# ----------------------------------------------------------------- teardown


def test_sigterm_removes_everything(lab: ClientLab) -> None:
    before = lab.tables()
    lab.start_client(lab.config("#@ws:AllowedApps = appA\n"))
    assert "wgref_client" in lab.tables()
    assert "wgref-sink" in _sink(lab) and "wgref-sink-udp" in _sink(lab)
    assert "ipproto udp lookup 30568" in _sink(lab) and "lookup 30567" in _sink(lab)
    assert lab.run_app("appB", "udp", "10.200.0.1") == f"OK {DIRECT4}"  # a bypass flow
    assert lab.run_app("appA", "tcp", "10.200.0.1") == f"OK {TUNNEL4}"  # a tunnelled one
    assert _marked_conntrack(lab)
    helpers = lab.verdict_helpers()
    assert len(helpers) == 1
    assert lab.stop_client() == 0
    wait_for(lambda: _gone(helpers[0]), 5, "the verdict helper to exit with the client")
    assert lab.tables() == before
    assert _sink(lab) == ""
    assert not lab.status_socket.exists()
    assert not _marked_conntrack(lab)
    assert lab.run_app("appA", "tcp", "10.200.0.1") == f"OK {DIRECT4}"


def test_client_sends_verdicts_itself_when_its_helper_dies(lab: ClientLab) -> None:
    # (the connections' data queued too, as without the discard device)
    lab.start_client(lab.config("#@ws:AllowedApps = appA\n"), "--no-discard-device")
    assert lab.run_app("appA", "tcp", "10.200.0.1", size=200_000) == f"OK {TUNNEL4}"
    (helper,) = lab.verdict_helpers()
    os.kill(helper, signal.SIGTERM)
    wait_for(lambda: not lab.verdict_helpers() or _zombie(helper), 5, "the helper to die")
    for _ in range(3):  # new flows and bulk data: every verdict now from the client itself
        assert lab.run_app("appA", "tcp", "10.200.0.1", size=200_000) == f"OK {TUNNEL4}"
    assert lab.run_app("appB", "tcp", "10.200.0.1") == f"OK {DIRECT4}"
    assert "stopped taking verdicts" in lab.log("client.log")
    assert lab.stop_client() == 0


def _client_processes(config: Path) -> list[int]:
    found = []
    for pid, _ppid in processes():
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"wgref.client" in argv and str(config).encode() in argv:
            found.append(pid)
    return found


def test_background_client_and_its_verdict_helper(lab: ClientLab) -> None:
    before = lab.tables()
    config = lab.config("#@ws:AllowedApps = appA\n")
    log = lab.tmp / "background.log"
    with log.open("wb") as out:  # (the daemon keeps stdout and stderr: not pipes here)
        code = subprocess.run(["ip", "netns", "exec", lab.client_ns, sys.executable, "-m",
                               "wgref.client", str(config), "--socket", str(lab.status_socket)],
                              stdin=subprocess.DEVNULL, stdout=out, stderr=out, cwd=REPO,
                              timeout=30, check=False).returncode  # returns once up
    pids = _client_processes(config)
    try:
        assert code == 0, log.read_text()
        assert lab.run_app("appA", "tcp", "10.200.0.1", size=200_000) == f"OK {TUNNEL4}"
        assert int(str(lab.status()["queued"])) > 0
        # the daemon leads its own session; the verdict helper, forked before the daemon
        # was, does not, and outlives the process that forked it until the daemon stops
        daemons = [pid for pid in pids if os.getsid(pid) == pid]
        assert len(daemons) == 1 and len(pids) == 2, pids
        os.kill(daemons[0], signal.SIGTERM)
        wait_for(lambda: all(_gone(pid) or _zombie(pid) for pid in pids), 10,
                 "the daemon and its helper to exit")
        assert lab.tables() == before
        assert not lab.status_socket.exists()
    finally:
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except OSError:
        return True


def _marked_conntrack(lab: ClientLab) -> list[str]:
    """conntrack entries of the client ns that carry one of the client's mark bits (bypass,
    injected, tunnelled)."""
    table = lab.sh(lab.client_ns, "cat", "/proc/net/nf_conntrack").stdout
    return [line for line in table.splitlines()
            if (m := re.search(r"mark=(\d+)", line)) and int(m.group(1)) & 0x70000000]


def test_kill9_then_cleanup(lab: ClientLab) -> None:
    before = lab.tables()
    lab.start_client(lab.config("#@ws:AllowedApps = appA\n"))
    assert lab.run_app("appA", "tcp", "10.200.0.1") == f"OK {TUNNEL4}"
    assert lab.run_app("appB", "udp", "10.200.0.1") == f"OK {DIRECT4}"  # a bypass flow
    assert _marked_conntrack(lab)
    helpers = lab.verdict_helpers()
    lab.stop_client(signal.SIGKILL)
    # the verdict helper reads end-of-file when its client dies, and exits
    wait_for(lambda: all(_gone(pid) for pid in helpers), 5, "the verdict helper to exit")
    assert "wgref_client" in lab.tables() and lab.status_socket.exists()
    assert "wgref-sink" in _sink(lab)
    # fail-open while down (no kill switch): the queue rules let new flows' packets through
    assert lab.run_app("appA", "tcp", "10.200.0.1") == f"OK {DIRECT4}"
    result = lab.wgref("--cleanup", "--socket", str(lab.status_socket))
    assert result.returncode == 0 and "removed" in result.stdout, result.stderr
    assert f"stale {lab.status_socket}" in result.stdout, result.stdout
    assert "device wgref-sink," in result.stdout and "device wgref-sink-udp" in result.stdout, \
        result.stdout
    assert _sink(lab) == ""
    assert not lab.status_socket.exists()
    assert not _marked_conntrack(lab)
    assert lab.tables() == before
    assert lab.run_app("appA", "tcp", "10.200.0.1") == f"OK {DIRECT4}"
    assert lab.wgref("--cleanup").stdout.strip() == "nothing to remove"


def test_restart_after_kill9_replaces_stale_tables(lab: ClientLab) -> None:
    config = lab.config("#@ws:AllowedApps = appA\n")
    lab.start_client(config)
    lab.stop_client(signal.SIGKILL)
    lab.start_client(config)
    assert "removing tables left by an earlier run" in lab.log("client.log")
    assert lab.run_app("appA", "tcp", "10.200.0.1") == f"OK {TUNNEL4}"
    assert lab.tables().count("table ip wgref_client") == 1
    assert lab.stop_client() == 0
    assert "wgref_client" not in lab.tables()


def test_kill_switch(lab: ClientLab) -> None:
    lab.start_client(lab.config("#@ws:AllowedApps = appA\n", interface="#@wgref:KillSwitch = on\n"))
    assert lab.run_app("appA", "tcp", "10.200.0.1") == f"OK {TUNNEL4}"
    lab.stop_client(signal.SIGKILL)
    assert lab.run_app("appA", "tcp", "10.200.0.1") == "ERROR timed out"  # no leak
    assert lab.run_app("appA", "udp", "10.200.0.1") == "TIMEOUT"
    assert lab.wgref("--cleanup").returncode == 0
    assert _sink(lab) == ""
    assert lab.run_app("appA", "tcp", "10.200.0.1") == f"OK {DIRECT4}"


# ----------------------------------------------------------------- forwarding


def test_forwarded_traffic(lan_lab: ClientLab) -> None:
    lab = lan_lab
    assert lab.lan_ns is not None
    # without --forward the LAN host is routed directly
    lab.start_client(lab.config("#@ws:AllowedApps = appA\n"))
    assert lab.run_app("appB", "tcp", "10.200.0.1", ns=lab.lan_ns) == "OK 10.201.0.2"
    assert lab.stop_client() == 0
    lab.start_client(lab.config("#@ws:AllowedApps = appA\n"), "--forward")
    for mode in ("tcp", "udp"):
        assert lab.run_app("appB", mode, "10.200.0.1", ns=lab.lan_ns) == f"OK {TUNNEL4}"
    assert lab.run_app("appB", "tcp", "10.99.0.1", 300_000, ns=lab.lan_ns) == f"OK {TUNNEL4}"
    # the client host's own applications keep their rule
    assert lab.run_app("appB", "tcp", "10.200.0.1") == f"OK {DIRECT4}"


# ----------------------------------------------------------------- several peers


def test_two_peers_routed_by_destination(lab: ClientLab) -> None:
    ifname2, key2 = lab.add_second_server()
    second = ("\n[Peer]\n"
              f"PublicKey = {pubkey(key2)}\n"
              "Endpoint = 10.200.0.1:51821\n"
              "AllowedIPs = 10.98.0.0/24\n"
              "#@ws:AllowedApps = appB\n")
    lab.start_client(lab.config("#@ws:AllowedApps = appA\n" + second,
                                allowed="10.99.0.0/24"))
    wait_for(lambda: lab.log("client.log").count("handshake with peer") >= 2, 10,
             "both handshakes")
    before1, before2 = lab.server_transfer(lab.wg_if), lab.server_transfer(ifname2)
    # each peer's own application rule: appA through peer 1, appB through peer 2
    assert lab.run_app("appA", "tcp", "10.99.0.1", 50_000) == f"OK {TUNNEL4}"
    assert lab.run_app("appB", "tcp", "10.99.0.1") == f"OK {DIRECT4}"
    assert lab.run_app("appB", "tcp", "10.98.0.1", 50_000) == f"OK {TUNNEL4}"
    assert lab.run_app("appA", "tcp", "10.98.0.1") == f"OK {DIRECT4}"
    after1, after2 = lab.server_transfer(lab.wg_if), lab.server_transfer(ifname2)
    assert after1[0] - before1[0] > 50_000 and after2[0] - before2[0] > 50_000
    # --status per peer
    doc = lab.status()
    peers = doc["peers"]
    assert isinstance(peers, list) and len(peers) == 2
    assert [p["allowed_ips"] for p in peers] == [["10.99.0.0/24"], ["10.98.0.0/24"]]
    assert all(int(p["tx_bytes"]) > 50_000 and p["handshake_age"] is not None for p in peers)
    assert peers[1]["endpoint"] == "10.200.0.1:51821"
    text = lab.wgref("--status", "--socket", str(lab.status_socket)).stdout
    assert text.count("peer: ") == 2 and "10.98.0.0/24" in text, text


# ----------------------------------------------------------------- config files


def test_config_with_byte_order_mark_runs(lab: ClientLab) -> None:
    path = lab.config("#@ws:AllowedApps = appA\n")
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes().replace(b"\n", b"\r\n"))
    lab.start_client(path)
    assert lab.run_app("appA", "tcp", "10.200.0.1") == f"OK {TUNNEL4}"


def test_duplicate_key_config_refused_before_anything_changes(lab: ClientLab) -> None:
    before = lab.tables()
    path = lab.config("#@ws:AllowedApps = appA\nEndpoint = 10.200.0.3:51820\n")
    result = lab.wgref(str(path), "--foreground", "--socket", str(lab.status_socket))
    assert result.returncode == 1
    assert f"{path}:14: Endpoint: given twice in this section (first at line 10)" in \
        result.stderr, result.stderr
    assert lab.tables() == before and not lab.status_socket.exists()


# ----------------------------------------------------------------- exec (cgroup v2)

FORKING = r'''
import os, subprocess, sys
echo, host = sys.argv[1], sys.argv[2]
pid = os.fork()
if pid == 0:  # the child: its own exchange, then exit
    os.execv(sys.executable, [sys.executable, echo, "tcp", host, "7777", "100"])
child = subprocess.run([sys.executable, echo, "udp", host, "7777", "100"],
                       capture_output=True, text=True, timeout=30).stdout.strip()
os.waitpid(pid, 0)
print("grandchild", child, flush=True)
'''


def test_exec_tunnels_a_program_and_its_children(lab: ClientLab) -> None:
    config = lab.config("#@ws:AllowedApps = nothing-matches\n")
    lab.start_client(config)
    doc = lab.status()
    assert doc["exec_cgroup"] == "wgref-client-client", doc
    # without exec: appB is not in AllowedApps, so direct
    assert lab.run_app("appB", "tcp", "10.200.0.1") == f"OK {DIRECT4}"
    forking = lab.tmp / "forking.py"
    forking.write_text(FORKING)
    result = lab.wgref("exec", str(config), "--socket", str(lab.status_socket), "--",
                       str(lab.tmp / "appB"), str(forking), str(lab.echo), "10.200.0.1",
                       timeout=60)
    lines = result.stdout.split("\n")
    assert result.returncode == 0, result.stderr + lab.log("client.log")
    assert f"OK {TUNNEL4}" in lines, result.stdout  # the forked child (TCP)
    assert f"grandchild OK {TUNNEL4}" in lines, result.stdout  # its child process (UDP)
    assert "started by wgref client exec" in lab.log("client.log")
    # the same program outside exec still goes direct
    assert lab.run_app("appB", "tcp", "10.200.0.1") == f"OK {DIRECT4}"
    # the cgroup goes with the client
    assert lab.stop_client() == 0
    assert "stays" not in lab.log("client.log")


def test_exec_errors_name_what_is_wrong(lab: ClientLab) -> None:
    config = lab.config()
    result = lab.wgref("exec", str(config), "--socket", str(lab.status_socket), "--", "true")
    assert result.returncode == 1 and "is the client of" in result.stderr, result.stderr
    result = lab.wgref("exec", str(config))
    assert result.returncode == 2 and "no COMMAND given" in result.stderr, result.stderr


# ----------------------------------------------------------------- DNS

DNS = r'''
"""serve ADDR ANSWER: a DNS responder (UDP and TCP 53) answering every A query with ANSWER;
ask MODE RESOLVER NAME: one query, prints the answer's address (or ERROR)."""
import socket, struct, sys, threading

def answer(query, address):
    ident, _flags, qd = struct.unpack(">HHH", query[:6])
    end = 12
    while query[end]:
        end += query[end] + 1
    question = query[12 : end + 5]
    record = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 60, 4) + socket.inet_aton(address)
    return struct.pack(">HHHHHH", ident, 0x8180, 1, 1, 0, 0) + question + record

def family(addr):
    return socket.AF_INET6 if ":" in addr else socket.AF_INET

def serve(addr, reply):
    udp = socket.socket(family(addr), socket.SOCK_DGRAM)
    udp.bind((addr, 53))
    tcp = socket.socket(family(addr), socket.SOCK_STREAM)
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind((addr, 53))
    tcp.listen(8)
    def tcp_loop():
        while True:
            conn, _ = tcp.accept()
            with conn:
                conn.settimeout(5)
                size = struct.unpack(">H", conn.recv(2))[0]
                data = b""
                while len(data) < size:
                    data += conn.recv(size - len(data))
                out = answer(data, reply)
                conn.sendall(struct.pack(">H", len(out)) + out)
    threading.Thread(target=tcp_loop, daemon=True).start()
    print("ready", flush=True)
    while True:
        data, peer = udp.recvfrom(2048)
        udp.sendto(answer(data, reply), peer)

def ask(mode, resolver, name):
    query = struct.pack(">HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)
    query += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    query += struct.pack(">HH", 1, 1)
    try:
        if mode == "udp":
            with socket.socket(family(resolver), socket.SOCK_DGRAM) as s:
                s.settimeout(3)
                s.sendto(query, (resolver, 53))
                data, source = s.recvfrom(2048)
                assert source[0] == resolver, source  # the answer is from whom we asked
        else:
            with socket.create_connection((resolver, 53), timeout=5) as s:
                s.sendall(struct.pack(">H", len(query)) + query)
                data = s.recv(2048)[2:]
    except (OSError, AssertionError) as exc:
        print(f"ERROR {exc}")
        return
    print(socket.inet_ntoa(data[-4:]))

if sys.argv[1] == "serve":
    serve(sys.argv[2], sys.argv[3])
else:
    ask(sys.argv[2], sys.argv[3], sys.argv[4])
'''


class DnsLab:
    """Resolvers in the server namespace (each answering every A query with its own address)
    and one query from an app in the client namespace."""

    def __init__(self, lab: ClientLab, resolvers: dict[str, str]) -> None:
        self.lab = lab
        self.script = lab.tmp / "dns.py"
        self.script.write_text(DNS)
        for address, reply in resolvers.items():
            log = f"dns-{address.replace(':', '_')}.log"
            proc = lab.spawn(lab.server_ns,
                             [sys.executable, str(self.script), "serve", address, reply], log)

            def up(log: str = log, proc: subprocess.Popen[bytes] = proc) -> bool:
                return "ready" in lab.log(log) or proc.poll() is not None

            wait_for(up, 10, log)
            assert proc.poll() is None, lab.log(log)

    def ask(self, app: str, mode: str, resolver: str) -> str:
        result = self.lab.sh(self.lab.client_ns, str(self.lab.tmp / app), str(self.script),
                             "ask", mode, resolver, "www.example.test", check=False,
                             timeout=30)
        return (result.stdout.strip() or result.stderr.strip()).splitlines()[-1]


def test_dns_of_tunnelled_apps_goes_through_the_tunnel(lab: ClientLab) -> None:
    # the tunnel's resolver answers 10.1.1.1; the host's (outside the tunnel) 10.2.2.2
    dns = DnsLab(lab, {"10.99.0.1": "10.1.1.1", "10.200.0.3": "10.2.2.2"})
    resolv = Path("/etc/resolv.conf").read_bytes() if Path("/etc/resolv.conf").exists() else b""
    lab.start_client(lab.config("#@ws:AllowedApps = appA\n", allowed="10.99.0.0/24"))
    assert "DNS = 10.99.0.1: queries of tunnelled applications go there" in \
        lab.log("client.log")
    for mode in ("udp", "tcp"):
        assert dns.ask("appA", mode, "10.200.0.3") == "10.1.1.1", lab.log("client.log")
        assert dns.ask("appB", mode, "10.200.0.3") == "10.2.2.2", lab.log("client.log")
    # a resolver inside the tunnel that is not the DNS server: redirected all the same
    assert dns.ask("appA", "udp", "10.99.0.5") == "10.1.1.1", lab.log("client.log")
    log = lab.log("client.log")
    assert re.search(r"udp 10\.200\.0\.2:\d+ -> 10\.200\.0\.3:53: tunnel \(DNS to 10\.99\.0\.1: "
                     r"appA\[\d+\] in AllowedApps\)", log), log
    # other traffic to the host's resolver address is not tunnelled (not in AllowedIPs)
    assert lab.run_app("appA", "tcp", "10.200.0.3") == f"OK {DIRECT4}"
    # the host's resolver configuration is untouched
    now = Path("/etc/resolv.conf").read_bytes() if Path("/etc/resolv.conf").exists() else b""
    assert now == resolv


def test_dns_over_ipv6_of_tunnelled_apps_goes_through_the_tunnel(lab: ClientLab) -> None:
    """`DNS =` with an IPv6 server: IPv6 queries of a tunnelled app (UDP and TCP) go to it
    through the tunnel, an untunnelled app's reach the host's IPv6 resolver."""
    dns = DnsLab(lab, {"fd99::1": "10.1.1.6", "fd20::3": "10.2.2.6"})
    config = lab.config("#@ws:AllowedApps = appA\n", allowed="10.99.0.0/24, fd99::/64")
    config.write_text(config.read_text().replace("DNS = 10.99.0.1\n",
                                                 "DNS = 10.99.0.1, fd99::1\n"))
    lab.start_client(config)
    assert "DNS = fd99::1: queries of tunnelled applications go there" in lab.log("client.log")
    for mode in ("udp", "tcp"):
        assert dns.ask("appA", mode, "fd20::3") == "10.1.1.6", lab.log("client.log")
        assert dns.ask("appB", mode, "fd20::3") == "10.2.2.6", lab.log("client.log")
    log = lab.log("client.log")
    assert re.search(r"udp \[fd20::2\]:\d+ -> \[fd20::3\]:53: tunnel \(DNS to fd99::1: "
                     r"appA\[\d+\] in AllowedApps\)", log), log


# ----------------------------------------------------------------- other protocols, ICMP

RAW = r'''
"""serve: echo IP protocol 253 back to its sender, report ICMP errors received (as
"icmp TYPE CODE from SRC"), and a UDP port (7778) that answers twice, the second time late;
send HOST: one protocol-253 exchange, prints "from SRC seen SEEN"; late HOST: one UDP
exchange with port 7778, then the socket is closed before the second answer."""
import socket, sys, threading, time

def serve():
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, 253)
    icmp = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("10.99.0.1", 7778))
    def errors():
        while True:
            data, peer = icmp.recvfrom(65536)
            ihl = (data[0] & 15) * 4
            if data[ihl] in (3, 11):
                print(f"icmp {data[ihl]} {data[ihl + 1]} from {peer[0]}", flush=True)
    def late():
        while True:
            data, peer = udp.recvfrom(2048)
            udp.sendto(b"first", peer)
            time.sleep(0.5)  # behaviour, not a wait: the second answer comes late
            udp.sendto(b"second", peer)
    threading.Thread(target=errors, daemon=True).start()
    threading.Thread(target=late, daemon=True).start()
    print("ready", flush=True)
    while True:
        data, peer = raw.recvfrom(65536)
        raw.sendto(b"seen " + peer[0].encode(), (peer[0], 0))

def send(host):
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, 253) as s:
        s.settimeout(3)
        s.sendto(b"hello", (host, 0))
        try:
            data, peer = s.recvfrom(65536)
        except OSError as exc:
            print(f"ERROR {exc}")
            return
        ihl = (data[0] & 15) * 4
        print(f"from {peer[0]} {data[ihl:].decode()}")

def late(host):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        s.sendto(b"hi", (host, 7778))
        print(s.recv(100).decode())

globals()[sys.argv[1]](*sys.argv[2:])
'''


def test_other_protocols_and_icmp_errors_are_tunnelled(lab: ClientLab) -> None:
    script = lab.tmp / "raw.py"
    script.write_text(RAW)
    server = lab.spawn(lab.server_ns, [sys.executable, str(script), "serve"], "raw.log")
    wait_for(lambda: "ready" in lab.log("raw.log") or server.poll() is not None, 10, "raw.log")
    lab.start_client(lab.config())  # every application
    result = lab.sh(lab.client_ns, sys.executable, str(script), "send", "10.99.0.1",
                    check=False)
    # the server saw the tunnel address; the answer came back through the tunnel
    assert result.stdout.strip() == f"from 10.99.0.1 seen {TUNNEL4}", \
        result.stdout + result.stderr + lab.log("client.log")
    assert re.search(r"protocol 253 10\.200\.0\.2:0 -> 10\.99\.0\.1:0: tunnel", lab.log(
        "client.log")), lab.log("client.log")
    # the host's port unreachable for the late answer goes back through the tunnel, from
    # the tunnel address
    result = lab.sh(lab.client_ns, sys.executable, str(script), "late", "10.99.0.1",
                    check=False)
    assert result.stdout.strip() == "first", result.stdout + result.stderr
    wait_for(lambda: f"icmp 3 3 from {TUNNEL4}" in lab.log("raw.log"), 10,
             "the port unreachable at the server: " + lab.log("raw.log"))


def test_df_over_mtu_gets_fragmentation_needed(lab: ClientLab) -> None:
    lab.start_client(lab.config())
    # 1400 bytes of ICMP data: a 1428-byte packet, over the tunnel's 1420, with DF
    result = lab.sh(lab.client_ns, "ping", "-c", "1", "-W", "2", "-M", "do", "-s", "1400",
                    "10.99.0.1", check=False)
    assert result.returncode != 0
    assert "mtu = 1420" in result.stdout + result.stderr, result.stdout + result.stderr
    # the host learnt the path MTU: without DF the same size is fragmented and answered
    result = lab.sh(lab.client_ns, "ping", "-c", "1", "-W", "2", "-M", "dont", "-s", "1400",
                    "10.99.0.1", check=False)
    assert result.returncode == 0, result.stdout + lab.log("client.log")


def test_connections_from_outside_are_answered_directly(lab: ClientLab) -> None:
    """A server on the client host, reached directly from a tunnelled address: its answers
    (replies of a connection the host did not start) go back the way they came."""
    server = lab.spawn(lab.client_ns, [sys.executable, str(lab.echo), "serve", str(PORT),
                                       "10.200.0.2"], "host-echo.log")
    wait_for(lambda: "ready" in lab.log("host-echo.log") or server.poll() is not None, 10,
             "the host's echo server")
    lab.start_client(lab.config())  # every application, 10.200.0.0/24 tunnelled
    for mode in ("tcp", "udp"):
        argv = [sys.executable, str(lab.echo), mode, "10.200.0.2", str(PORT), "100"]
        result = lab.sh(lab.server_ns, *argv, check=False, timeout=40)
        assert result.stdout.strip() == "OK 10.200.0.1", result.stdout + lab.log("client.log")
    result = lab.sh(lab.server_ns, "ping", "-c", "1", "-W", "2", "10.200.0.2", check=False)
    assert result.returncode == 0, result.stdout
    # and the host's own flows to the same address still go through the tunnel
    assert lab.run_app("appA", "tcp", "10.200.0.1") == f"OK {TUNNEL4}"


def test_strict_reverse_path_filter_falls_back_to_the_raw_socket(lab: ClientLab) -> None:
    for name in ("all", "lo"):
        lab.sh(lab.client_ns, "sysctl", "-qw", f"net.ipv4.conf.{name}.rp_filter=1")
    lab.start_client(lab.config("#@ws:AllowedApps = appA\n"))
    assert "rp_filter is strict on lo" in lab.log("client.log")
    assert lab.run_app("appA", "tcp", "10.99.0.1", 300_000) == f"OK {TUNNEL4}"
    doc = lab.status()
    assert int(str(doc["merged_through_lo"])) == 0 and int(str(doc["injected"])) > 0
    assert int(str(doc["answers_through_lo"])) == 0
