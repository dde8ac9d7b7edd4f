"""`wgref IFNAME` against wireguard-go and the stock `wg`, in network namespaces (netns.sh-like).

Root only; every subprocess and wait is bounded, and every fixture cleans up in `finally`.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.netns import (
    REPO,
    SOCKET_DIR,
    Lab,
    Pair,
    assert_no_leftovers,
    genkey,
    holds_for,
    pubkey,
    require_netns,
    wait_for,
)

pytestmark = pytest.mark.netns

BIG_MTU = 34816 - 1500 + 1420


@pytest.fixture(scope="module", autouse=True)
def _no_leftovers() -> Iterator[None]:
    require_netns()
    yield
    assert_no_leftovers()


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    lab = Lab(tmp_path, namespaces=4)
    try:
        yield lab
    finally:
        lab.close()
        for proc in lab.procs:
            assert proc.poll() is not None


def _pair(lab: Lab, left: str = "wgref", right: str = "wireguard-go") -> Pair:
    return Pair(lab, left, right)


# ----------------------------------------------------------------- data path


@pytest.mark.parametrize("outer", ["127.0.0.1", "::1"])
@pytest.mark.parametrize("initiator", [1, 2])
def test_ping_with_psk(lab: Lab, outer: str, initiator: int) -> None:
    pair = _pair(lab)
    psk = genkey()
    # Only the initiator knows the endpoint: the responder learns it (WP 6.5).
    pair.configure(
        psk1=psk, psk2=psk, host=outer, endpoint1=initiator == 1, endpoint2=initiator == 2
    )
    target = "192.168.241.2" if initiator == 1 else "192.168.241.1"
    assert pair.ping(initiator, target, count=2), lab.log(pair.if1)
    target6 = "fd00::2" if initiator == 1 else "fd00::1"
    assert pair.ping(initiator, target6, count=2)
    assert pair.ping(3 - initiator, "fd00::1" if initiator == 1 else "fd00::2")
    assert pair.latest_handshake(pair.if1) > 0 and pair.latest_handshake(pair.if2) > 0
    expected = f"[{outer}]" if ":" in outer else outer
    assert pair.endpoint_seen_by(pair.if1).startswith(expected)
    assert pair.endpoint_seen_by(pair.if2).startswith(expected)


def test_wrong_psk_never_handshakes(lab: Lab) -> None:
    pair = _pair(lab)
    pair.configure(psk1=genkey(), psk2=genkey())
    assert not pair.ping(1, "192.168.241.2", count=2)
    assert not pair.ping(2, "192.168.241.1", count=1)
    assert pair.latest_handshake(pair.if1) == 0
    assert pair.latest_handshake(pair.if2) == 0


@pytest.mark.parametrize("mtu", [1420, BIG_MTU])
def test_mtu(lab: Lab, mtu: int) -> None:
    pair = _pair(lab)
    pair.configure()
    for ns, ifname in ((pair.ns1, pair.if1), (pair.ns2, pair.if2)):
        lab.sh(ns, "ip", "link", "set", ifname, "mtu", str(mtu))
    # wgref polls the MTU every second: wait until a full-size packet goes through.
    wait_for(lambda: pair.ping(1, "192.168.241.2", size=mtu - 28, count=1), 10,
             f"a {mtu}-byte packet through wgref")
    assert pair.ping(2, "192.168.241.1", size=mtu - 28)
    assert pair.ping(1, "fd00::2", size=mtu - 48)
    assert pair.ping(2, "fd00::1", size=mtu - 48)


def test_roaming_v4_and_v6(lab: Lab) -> None:
    pair = _pair(lab)
    pair.configure(endpoint2=False)
    assert pair.ping(1, "192.168.241.2")
    assert pair.endpoint_seen_by(pair.if2) == "127.0.0.1:10001"
    # wgref moves to another port: wireguard-go follows (WP 6.5).
    lab.wg("set", pair.if1, "listen-port", "10003")
    assert pair.ping(1, "192.168.241.2")
    assert pair.endpoint_seen_by(pair.if2) == "127.0.0.1:10003"
    # wireguard-go moves: wgref follows.
    lab.wg("set", pair.if2, "listen-port", "10004")
    lab.wg("set", pair.if1, "peer", pair.pub2, "endpoint", "127.0.0.1:10004")
    assert pair.ping(2, "192.168.241.1")
    assert pair.endpoint_seen_by(pair.if1) == "127.0.0.1:10004"
    # IPv6 outer addresses, both ways.
    lab.wg("set", pair.if1, "peer", pair.pub2, "endpoint", "[::1]:10004")
    assert pair.ping(1, "fd00::2")
    assert pair.endpoint_seen_by(pair.if2) == "[::1]:10003"
    lab.wg("set", pair.if2, "listen-port", "10005")
    lab.wg("set", pair.if2, "peer", pair.pub1, "endpoint", "[::1]:10003")
    assert pair.ping(2, "fd00::1")
    assert pair.endpoint_seen_by(pair.if1) == "[::1]:10005"


def test_crypto_rp(lab: Lab) -> None:
    pair = _pair(lab)
    pair.configure()
    lab.wg("set", pair.if1, "peer", pair.pub2, "allowed-ips", "192.168.241.0/24,fd00::2/128")
    assert pair.ping(2, "192.168.241.1")
    fake = pubkey(genkey())
    lab.wg("set", pair.if1, "peer", fake, "allowed-ips", "192.168.241.2/32")
    assert not pair.ping(2, "192.168.241.1")  # the source now belongs to the fake peer
    lab.wg("set", pair.if1, "peer", fake, "remove")
    assert pair.ping(2, "192.168.241.1")


def test_private_key_change_then_handshake(lab: Lab) -> None:
    pair = _pair(lab)
    psk = genkey()
    pair.configure(psk1=psk, psk2=psk, endpoint2=False)
    assert pair.ping(1, "192.168.241.2")
    key3 = genkey()
    lab.wg("set", pair.if1, "private-key", "/dev/stdin", stdin=key3 + "\n")
    psk_file = lab.tmp / "psk"
    psk_file.write_text(psk + "\n")
    lab.wg(
        "set",
        pair.if2,
        "peer",
        pubkey(key3),
        "preshared-key",
        str(psk_file),
        "allowed-ips",
        "192.168.241.1/32",
        "peer",
        pair.pub1,
        "remove",
    )
    assert pair.ping(1, "192.168.241.2")


def test_persistent_keepalive_starts_handshake(lab: Lab) -> None:
    pair = _pair(lab)
    pair.configure()
    assert pair.latest_handshake(pair.if1) == 0
    lab.wg("set", pair.if1, "peer", pair.pub2, "persistent-keepalive", "25")
    wait_for(lambda: pair.latest_handshake(pair.if1) > 0, 3, "a handshake after keepalive")


def test_nat_keepalive(lab: Lab) -> None:
    """ns1 (wgref) -- router ns0 (SNAT, 2 s conntrack) -- ns2 (wireguard-go): a persistent
    keepalive of 1 s keeps the NAT mapping, so ns2 can still reach ns1 later."""
    router, ns1, ns2 = lab.ns[0], lab.ns[1], lab.ns[2]
    if1, if2 = lab.ifname("a"), lab.ifname("b")
    for ns, peer_ns, subnet in ((ns1, router, "1"), (ns2, router, "2")):
        veth = f"v{lab.id}{subnet}"[-15:]
        lab.sh(
            None,
            "ip",
            "link",
            "add",
            veth,
            "netns",
            ns,
            "type",
            "veth",
            "peer",
            "name",
            f"r{veth}"[:15],
            "netns",
            peer_ns,
        )
        lab.sh(ns, "ip", "addr", "add", f"10.0.{subnet}.100/24", "dev", veth)
        lab.sh(ns, "ip", "link", "set", veth, "up")
        lab.sh(ns, "ip", "route", "add", "default", "via", f"10.0.{subnet}.1")
        lab.sh(peer_ns, "ip", "addr", "add", f"10.0.{subnet}.1/24", "dev", f"r{veth}"[:15])
        lab.sh(peer_ns, "ip", "link", "set", f"r{veth}"[:15], "up")
    lab.sh(
        router,
        "sysctl",
        "-qw",
        "net.ipv4.ip_forward=1",
        "net.netfilter.nf_conntrack_udp_timeout=2",
        "net.netfilter.nf_conntrack_udp_timeout_stream=2",
    )
    lab.sh(
        router,
        "nft",
        "add table ip nat; add chain ip nat post "
        "{ type nat hook postrouting priority 100 ; }; "
        "add rule ip nat post ip saddr 10.0.1.0/24 masquerade",
    )
    lab.start("wgref", ns1, if1)
    lab.start("wireguard-go", ns2, if2)
    key1, key2 = genkey(), genkey()
    pub1, pub2 = pubkey(key1), pubkey(key2)
    lab.wg(
        "set",
        if1,
        "private-key",
        "/dev/stdin",
        "listen-port",
        "1",
        "peer",
        pub2,
        "allowed-ips",
        "192.168.241.2/32",
        "endpoint",
        "10.0.2.100:2",
        stdin=key1 + "\n",
    )
    lab.wg(
        "set",
        if2,
        "private-key",
        "/dev/stdin",
        "listen-port",
        "2",
        "peer",
        pub1,
        "allowed-ips",
        "192.168.241.1/32",
        stdin=key2 + "\n",
    )
    for ns, ifname, addr in ((ns1, if1, "1"), (ns2, if2, "2")):
        lab.sh(ns, "ip", "addr", "add", f"192.168.241.{addr}/24", "dev", ifname)
        lab.sh(ns, "ip", "link", "set", ifname, "up")
    assert lab.sh(ns1, "ping", "-c", "1", "-W", "2", "192.168.241.2", check=False).returncode == 0
    endpoints = lab.wg("show", if2, "endpoints").split()
    assert endpoints[1].startswith("10.0.2.1:"), endpoints  # seen through the NAT
    lab.wg("set", if1, "peer", pub2, "persistent-keepalive", "1")
    # Three keepalives (32 bytes each) arrive over > 2 s, the conntrack timeout: only they
    # keep the mapping.
    rx = _rx_bytes(lab, if2, pub1)
    wait_for(lambda: _rx_bytes(lab, if2, pub1) >= rx + 3 * 32, 10, "three keepalives")
    assert lab.sh(ns2, "ping", "-c", "1", "-W", "2", "192.168.241.1", check=False).returncode == 0


def _rx_bytes(lab: Lab, ifname: str, public_key: str) -> int:
    for line in lab.wg("show", ifname, "transfer").splitlines():
        key, rx, _ = line.split()
        if key == public_key:
            return int(rx)
    raise AssertionError(f"{ifname} has no peer {public_key}")


# ----------------------------------------------------------------- UAPI through `wg`


def _conf_big_peer(private: str, peer: str) -> str:
    # One peer with 130,560 allowed ips (255 * 512): `wg` has to send a very large request.
    ips = [f"10.{a}.{b}.0/24" for a in range(255) for b in range(256)]
    ips += [f"fd00:{a:x}:{b:x}::/48" for a in range(255) for b in range(256)]
    lines = [f"AllowedIPs = {', '.join(ips[i : i + 1000])}" for i in range(0, len(ips), 1000)]
    return (
        f"[Interface]\nPrivateKey = {private}\n\n[Peer]\nPublicKey = {peer}\n"
        + "\n".join(lines)
        + "\n"
    )


def test_uapi_large_configs(lab: Lab) -> None:
    ifname = lab.ifname("a")
    lab.start("wgref", lab.ns[0], ifname)
    conf = lab.tmp / "big.conf"
    conf.write_text(_conf_big_peer(genkey(), pubkey(genkey())))
    lab.sh(None, "wg", "setconf", ifname, str(conf), timeout=120)
    out = lab.sh(None, "wg", "show", ifname, "allowed-ips", timeout=120).stdout
    assert len(out.split()) - 1 == 130560
    # 40 peers x 52 allowed ips.
    parts = [f"[Interface]\nPrivateKey = {genkey()}\n"]
    for p in range(40):
        ips = ", ".join(f"10.{p}.{i}.0/24" for i in range(52))
        parts.append(f"[Peer]\nPublicKey = {pubkey(genkey())}\nAllowedIPs = {ips}\n")
    conf.write_text("\n".join(parts))
    lab.sh(None, "wg", "setconf", ifname, str(conf), timeout=60)
    lines = lab.sh(None, "wg", "show", ifname, "allowed-ips").stdout.splitlines()
    assert len(lines) == 40 and all(len(line.split()) == 53 for line in lines)


def test_uapi_show_missing_and_showconf_roundtrip(lab: Lab) -> None:
    assert lab.sh(None, "wg", "show", f"wgt{lab.id}none", check=False).returncode != 0
    if1, if2 = lab.ifname("a"), lab.ifname("b")
    lab.start("wgref", lab.ns[0], if1)
    lab.start("wireguard-go", lab.ns[1], if2)
    conf = (
        f"[Interface]\nListenPort = 51820\nFwMark = 0x10\nPrivateKey = {genkey()}\n\n"
        f"[Peer]\nPublicKey = {pubkey(genkey())}\nPresharedKey = {genkey()}\n"
        "AllowedIPs = 10.0.0.0/24, fd00::/64, 10.1.0.1/32\nEndpoint = [::1]:9\n\n"
        f"[Peer]\nPublicKey = {pubkey(genkey())}\nAllowedIPs = 0.0.0.0/0\n"
        "Endpoint = 127.0.0.1:9\n"
    )
    path = lab.tmp / "a.conf"
    path.write_text(conf)
    for ifname in (if1, if2):
        lab.wg("setconf", ifname, str(path))
    shown = lab.wg("showconf", if1)
    # wireguard-go lists peers in Go map order, which varies from call to call.
    assert _sections(shown) == _sections(lab.wg("showconf", if2)) == _sections(conf)
    # Byte for byte, get=1 as wireguard-go answers it (wireguard-go lists peers in Go map
    # order, which varies from call to call: compare the peer blocks as a set).
    assert _blocks(_uapi(if1, b"get=1\n\n")) == _blocks(_uapi(if2, b"get=1\n\n"))
    for bad in (
        b"set=1\nfoo=bar\n\n",
        b"set=1\nlisten_port=x\n\n",
        b"set=1\nfoo\n\n",
        b"set=1\npublic_key=00\n\n",
        b"get=1\nx=y\n\n",
    ):
        assert _uapi(if1, bad) == _uapi(if2, bad)
    assert _blocks(_uapi(if1, b"get=1\n\n")) == _blocks(_uapi(if2, b"get=1\n\n"))
    # With a single peer the whole answer is identical.
    for ifname in (if1, if2):
        lab.wg("set", ifname, "peer", conf.split("PublicKey = ")[2].split()[0], "remove")
        assert b"allowed_ip=0.0.0.0/0" not in _uapi(ifname, b"get=1\n\n")
    assert _uapi(if1, b"get=1\n\n") == _uapi(if2, b"get=1\n\n")


def _blocks(answer: bytes) -> tuple[bytes, frozenset[bytes], bytes]:
    """(interface lines, the set of peer blocks, the errno trailer) of a get=1 answer."""
    body, _, trailer = answer.rpartition(b"errno=")
    head, *peers = body.split(b"public_key=")
    return head, frozenset(peers), trailer


def _sections(conf: str) -> tuple[str, frozenset[str]]:
    head, *peers = conf.strip().split("\n[Peer]\n")
    return head, frozenset(peer.strip() for peer in peers)


def _uapi(ifname: str, request: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(str(SOCKET_DIR / f"{ifname}.sock"))
        sock.sendall(request)
        answer = b""
        while not answer.endswith(b"\n\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
        return answer


# ----------------------------------------------------------------- daemon life cycle


def test_daemon_background_and_link_deletion(lab: Lab) -> None:
    ifname = lab.ifname("a")
    sock = SOCKET_DIR / f"{ifname}.sock"
    # The daemon keeps our stdout (as wireguard-go does): give it /dev/null, not a pipe.
    # If the test fails early, deleting the namespaces deletes the link and stops it.
    result = subprocess.run(
        ["ip", "netns", "exec", lab.ns[0], sys.executable, "-m", "wgref.interface", ifname],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=20,
    )
    assert result.returncode == 0 and sock.exists()
    assert oct(sock.stat().st_mode & 0o777) == "0o700"
    lab.sh(lab.ns[0], "ip", "link", "set", ifname, "netns", lab.ns[1])
    # moving the link must not stop the daemon (it checks its link every second)
    holds_for(lambda: sock.exists() and "listening port" in lab.wg("show", ifname, check=False),
              1.5, "the daemon serving after its link moved")
    lab.sh(lab.ns[1], "ip", "link", "del", ifname)
    wait_for(lambda: not sock.exists(), 5, "the daemon to remove its socket")


def test_daemon_stops_on_signal_and_socket_removal(lab: Lab) -> None:
    if1, if2 = lab.ifname("a"), lab.ifname("b")
    proc = lab.start("wgref", lab.ns[0], if1)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=5) == 0
    assert not (SOCKET_DIR / f"{if1}.sock").exists()
    proc = lab.start("wgref", lab.ns[0], if2)
    (SOCKET_DIR / f"{if2}.sock").unlink()
    assert proc.wait(timeout=5) == 0
    assert if2 not in lab.sh(lab.ns[0], "ip", "link").stdout


# ----------------------------------------------------------------- key log, throughput


def test_tshark_decrypts_with_keylog(lab: Lab) -> None:
    keylog = lab.tmp / "keylog"
    capture = lab.tmp / "cap.pcapng"
    ns0, ns1, ns2 = lab.ns[:3]
    if1, if2 = lab.ifname("a"), lab.ifname("b")
    lab.start("wgref", ns0, if1, {"WG_KEYLOG_FILE": str(keylog)})
    lab.start("wireguard-go", ns0, if2)
    pair = Pair.__new__(Pair)
    pair.lab, pair.ns0, pair.ns1, pair.ns2, pair.if1, pair.if2 = lab, ns0, ns1, ns2, if1, if2
    pair.key1, pair.key2 = genkey(), genkey()
    pair.pub1, pair.pub2 = pubkey(pair.key1), pubkey(pair.key2)
    for ifname, ns, addr in ((if1, ns1, "1"), (if2, ns2, "2")):
        lab.sh(ns0, "ip", "link", "set", ifname, "netns", ns)
        lab.sh(ns, "ip", "addr", "add", f"192.168.241.{addr}/24", "dev", ifname)
        lab.sh(ns, "ip", "link", "set", ifname, "up")
    pair.configure()
    tshark = subprocess.Popen(
        ["ip", "netns", "exec", ns0, "tshark", "-q", "-i", "lo", "-f", "udp", "-w", str(capture)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )

    def decrypted_icmp() -> list[str]:
        out = subprocess.run(
            ["tshark", "-r", str(capture), "-o", f"wg.keylog_file:{keylog}",
             "-d", "udp.port==10001,wg", "-d", "udp.port==10002,wg", "-Y", "icmp"],
            capture_output=True, text=True, timeout=60,
        ).stdout
        return out.splitlines()

    try:
        # dumpcap writes the file header once it captures
        wait_for(lambda: capture.exists() and capture.stat().st_size > 0, 15, "tshark to start")
        assert pair.ping(1, "192.168.241.2", count=3)
        assert "LOCAL_EPHEMERAL_PRIVATE_KEY=" in keylog.read_text()
        # 3 requests + 3 replies, decrypted, once the capture file holds them
        wait_for(lambda: len(decrypted_icmp()) >= 6, 20, "six decrypted ICMP packets",
                 step=0.5)
    finally:
        tshark.send_signal(signal.SIGINT)
        try:
            tshark.wait(timeout=10)
        except subprocess.TimeoutExpired:
            tshark.kill()
            tshark.wait(timeout=5)
    decrypted = decrypted_icmp()
    assert len(decrypted) >= 6, decrypted


def test_iperf3_through_wgref(lab: Lab, record_property: object) -> None:
    pair = _pair(lab)
    pair.configure()
    server = subprocess.Popen(
        ["ip", "netns", "exec", pair.ns2, "iperf3", "-s", "-1", "-B", "192.168.241.2"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    lab.procs.append(server)
    wait_for(lambda: ":5201 " in lab.sh(pair.ns2, "ss", "-Hltn").stdout, 10,
             "iperf3 to listen")
    assert pair.ping(1, "192.168.241.2")
    result = lab.sh(pair.ns1, "iperf3", "-c", "192.168.241.2", "-t", "3", "-J", timeout=30)
    summary = json.loads(result.stdout)["end"]["sum_received"]
    assert summary["bytes"] > 0
    # The bytes really went through wgref: its peer counter saw at least as much.
    tx = int(lab.wg("show", pair.if1, "transfer").split()[2])
    assert tx >= summary["bytes"]
    rtt = lab.sh(pair.ns1, "ping", "-c", "5", "-i", "0.2", "192.168.241.2").stdout
    print("\nping through wgref:", rtt.strip().splitlines()[-1])
    mbits = summary["bits_per_second"] / 1e6
    print(f"\niperf3 TCP wgref -> wireguard-go: {mbits:.1f} Mbit/s")
