"""The UAPI text protocol (wgref.uapi), sans-I/O; expected answers were observed from
wireguard-go v0.0.20220316 (xplatform: https://www.wireguard.com/xplatform/)."""

from __future__ import annotations

import errno
import re
import socket
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.pairs import (
    A_ADDR,
    A_TUN4,
    B_TUN4,
    SendDatagram,
    established_pair,
    ipv4_packet,
    make_pair,
)
from wgref.crypto import clamp, public_key
from wgref.device import Device
from wgref.results import Endpoint
from wgref.uapi import MemoryHost, UapiConnection, format_endpoint, parse_endpoint, request

PRIV = clamp(bytes(range(32)))
PUB = public_key(PRIV)
PEER_A = public_key(clamp(bytes([1]) * 32))
PEER_B = public_key(clamp(bytes([2]) * 32))
PSK = bytes([7]) * 32


def _setup(listen_port: int = 51820) -> tuple[Device, MemoryHost]:
    return Device(), MemoryHost(listen_port=listen_port)


def _config() -> str:
    return (
        f"set=1\nprivate_key={PRIV.hex()}\nlisten_port=51820\nfwmark=16\n"
        f"public_key={PEER_A.hex()}\npreshared_key={PSK.hex()}\nendpoint=127.0.0.1:1234\n"
        "replace_allowed_ips=true\nallowed_ip=10.0.0.0/24\nallowed_ip=fd00::/64\n"
        "allowed_ip=10.1.0.1/32\n"
        f"public_key={PEER_B.hex()}\nendpoint=[::ffff:1.2.3.4]:7\nallowed_ip=::ffff:1.2.3.4/96\n\n"
    )


def test_get_empty_device() -> None:
    device, host = _setup()
    assert request(device, host, "get=1\n\n") == "listen_port=51820\nerrno=0\n\n"
    assert request(device, MemoryHost(), "get=1\n\n") == "errno=0\n\n"


def test_set_then_get_as_wireguard_go() -> None:
    device, host = _setup()
    assert request(device, host, _config()) == "errno=0\n\n"
    zero = "0" * 64
    assert request(device, host, "get=1\n\n") == (
        f"private_key={PRIV.hex()}\nlisten_port=51820\nfwmark=16\n"
        f"public_key={PEER_A.hex()}\npreshared_key={PSK.hex()}\nprotocol_version=1\n"
        "endpoint=127.0.0.1:1234\nlast_handshake_time_sec=0\nlast_handshake_time_nsec=0\n"
        "tx_bytes=0\nrx_bytes=0\npersistent_keepalive_interval=0\n"
        "allowed_ip=10.0.0.0/24\nallowed_ip=fd00::/64\nallowed_ip=10.1.0.1/32\n"
        f"public_key={PEER_B.hex()}\npreshared_key={zero}\nprotocol_version=1\n"
        "endpoint=[::ffff:1.2.3.4]:7\nlast_handshake_time_sec=0\nlast_handshake_time_nsec=0\n"
        "tx_bytes=0\nrx_bytes=0\npersistent_keepalive_interval=0\n"
        "allowed_ip=::ffff:0.0.0.0/96\nerrno=0\n\n"
    )


def test_private_key_is_clamped_and_zero_clears_it() -> None:
    device, host = _setup()
    request(device, host, f"set=1\nprivate_key={'aa' * 32}\n\n")
    assert request(device, host, "get=1\n\n").startswith(f"private_key=a8{'aa' * 30}6a\n")
    request(device, host, f"set=1\nprivate_key={'00' * 32}\n\n")
    assert device.private_key is None


BAD = [
    ("set=1\nprivate_key=abc\n\n", -errno.EINVAL),
    (f"set=1\nprivate_key={'zz' * 32}\n\n", -errno.EINVAL),
    (f"set=1\nprivate_key={PRIV.hex()}00\n\n", -errno.EINVAL),
    ("set=1\nfoo=bar\n\n", -errno.EINVAL),
    ("set=1\nfoo\n\n", -errno.EPROTO),
    ("set=1\n=x\n\n", -errno.EINVAL),
    ("set=1\nlisten_port=70000\n\n", -errno.EINVAL),
    ("set=1\nlisten_port=-1\n\n", -errno.EINVAL),
    ("set=1\nlisten_port=+5\n\n", -errno.EINVAL),
    ("set=1\nlisten_port= 5\n\n", -errno.EINVAL),
    ("set=1\nfwmark=0x10\n\n", -errno.EINVAL),
    ("set=1\nfwmark=4294967296\n\n", -errno.EINVAL),
    ("set=1\nreplace_peers=false\n\n", -errno.EINVAL),
    ("set=1\nendpoint=1.2.3.4:5\n\n", -errno.EINVAL),
    ("set=1\nallowed_ip=1.2.3.4/32\n\n", -errno.EINVAL),
    ("set=1\nprotocol_version=1\n\n", -errno.EINVAL),
    ("set=1\nPRIVATE_KEY=" + PRIV.hex() + "\n\n", -errno.EINVAL),
    ("get=1\nfoo=bar\n\n", -errno.EINVAL),
]
PEER_BAD = [
    "endpoint=foo",
    "endpoint=1.2.3.4",
    "endpoint=1.2.3.4:99999",
    "endpoint=[::1:5",
    "endpoint=::1:5",
    "endpoint=localhost:5",
    "endpoint=[1.2.3.4]:5",
    "endpoint=01.2.3.4:5",
    "endpoint=1.2.3.4:+5",
    "endpoint=[fe80::1%nosuchif0]:5",
    "endpoint=",
    "endpoint=1.2.3.4:5 ",
    "allowed_ip=1.2.3.4",
    "allowed_ip=1.2.3.4/33",
    "allowed_ip=foo/24",
    "allowed_ip=01.2.3.4/8",
    "allowed_ip=fe80::1%lo/64",
    "allowed_ip=::/129",
    "allowed_ip=",
    "persistent_keepalive_interval=65536",
    "persistent_keepalive_interval=-1",
    "protocol_version=2",
    "protocol_version=01",
    "preshared_key=abc",
    "remove=false",
    "remove=TRUE",
    "replace_allowed_ips=maybe",
    "update_only=false",
    f"private_key={PRIV.hex()}",
    "listen_port=1",
    "fwmark=1",
    "replace_peers=true",
    "rx_bytes=1",
    "last_handshake_time_sec=1",
    "foo=1",
]


@pytest.mark.parametrize(("text", "code"), BAD)
def test_bad_input_errno(text: str, code: int) -> None:
    device, host = _setup()
    assert request(device, host, text) == f"errno={code}\n\n"


@pytest.mark.parametrize("line", PEER_BAD)
def test_bad_peer_line_errno(line: str) -> None:
    device, host = _setup()
    answer = request(device, host, f"set=1\npublic_key={PEER_A.hex()}\n{line}\n\n")
    assert answer == "errno=-22\n\n"


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("1.2.3.4:0", "1.2.3.4:0"),
        ("1.2.3.4:05", "1.2.3.4:5"),
        ("[0:0::1]:5", "[::1]:5"),
        ("[FD00::1]:5", "[fd00::1]:5"),
        ("[::ffff:1.2.3.4]:5", "[::ffff:1.2.3.4]:5"),
        ("[fe80::1%2]:5", "[fe80::1]:5"),
        ("[fe80::1%lo]:5", "[fe80::1]:5"),
    ],
)
def test_endpoint_forms(value: str, shown: str) -> None:
    assert format_endpoint(parse_endpoint(value)) == shown


def test_allowed_ip_forms_and_order() -> None:
    device, host = _setup()
    text = (
        f"set=1\npublic_key={PEER_A.hex()}\nallowed_ip=10.9.0.0/16\nallowed_ip=fd00::1/128\n"
        "allowed_ip=10.1.0.0/16\nallowed_ip=10.9.0.0/16\nallowed_ip=1.2.3.4/+8\n"
        "allowed_ip=1.2.3.5/024\nallowed_ip=FD00::/8\n"
        f"public_key={PEER_B.hex()}\nallowed_ip=10.1.0.0/16\n\n"
    )
    assert request(device, host, text) == "errno=0\n\n"
    get = request(device, host, "get=1\n\n")
    a, b = get.split("public_key=")[1:]
    # A re-added prefix moves to the end; a prefix taken by another peer leaves.
    assert [x for x in a.splitlines() if x.startswith("allowed_ip")] == [
        "allowed_ip=fd00::1/128",
        "allowed_ip=10.9.0.0/16",
        "allowed_ip=1.0.0.0/8",
        "allowed_ip=1.2.3.0/24",
        "allowed_ip=fd00::/8",
    ]
    assert "allowed_ip=10.1.0.0/16" in b


def test_partial_application_and_skip_to_blank_line() -> None:
    device, host = _setup()
    answer = request(
        device,
        host,
        "set=1\nlisten_port=51822\nfoo=bar\nfwmark=5\n\nget=1\n\n",
    )
    assert answer.startswith("errno=-22\n\nlisten_port=51822\nerrno=0")
    assert host.fwmark == 0


def test_remove_update_only_replace_and_own_key() -> None:
    device, host = _setup()
    request(device, host, _config())
    text = (
        f"set=1\npublic_key={PEER_B.hex()}\nremove=true\nendpoint=1.1.1.1:1\n"
        f"public_key={PUB.hex()}\nallowed_ip=10.7.0.0/16\n"
        f"public_key={PEER_B.hex()}\nupdate_only=true\nallowed_ip=10.8.0.0/16\n"
        f"public_key={PEER_A.hex()}\nupdate_only=true\nreplace_allowed_ips=true\n"
        "allowed_ip=10.5.0.0/16\n\n"
    )
    assert request(device, host, text) == "errno=0\n\n"
    assert list(device.peers) == [PEER_A]
    assert [str(n) for n in device.allowed_ips.entries_for(device.peers[PEER_A])] == ["10.5.0.0/16"]
    request(device, host, "set=1\nreplace_peers=true\n\n")
    assert not device.peers


def test_unknown_operation_closes() -> None:
    for text in ("get=2\n\n", "foo=1\n\n", "\n\n", "set=1\r\n\r\n"):
        connection = UapiConnection(*_setup())
        answer, _ = connection.feed(text.encode(), 0.0)
        assert answer == b"" and connection.closed


def test_byte_by_byte_equals_whole() -> None:
    device, host = _setup()
    connection = UapiConnection(device, host)
    answers = b""
    for byte in (_config() + "get=1\n\n").encode():
        answers += connection.feed(bytes([byte]), 0.0)[0]
    device2, host2 = _setup()
    assert answers.decode() == request(device2, host2, _config() + "get=1\n\n")


def test_listen_port_error_is_errno() -> None:
    class Busy(MemoryHost):
        def set_listen_port(self, port: int) -> None:
            raise OSError(errno.EADDRINUSE, "in use")

    assert request(Device(), Busy(), "set=1\nlisten_port=1\n\n") == "errno=-98\n\n"


def test_persistent_keepalive_sends_at_once() -> None:
    device, host = _setup()
    request(device, host, _config())
    connection = UapiConnection(device, host)
    _, out = connection.feed(
        f"set=1\npublic_key={PEER_A.hex()}\npersistent_keepalive_interval=25\n\n".encode(), 1.0
    )
    sent = out.datagrams()
    assert len(sent) == 1 and len(sent[0][1]) == 148  # a handshake initiation
    assert sent[0][0] == Endpoint("127.0.0.1", 1234)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(max_size=80), max_size=8))
def test_garbage_never_crashes(lines: list[str]) -> None:
    device, host = _setup()
    connection = UapiConnection(device, host)
    text = "set=1\n" + "\n".join(line.replace("\n", "") for line in lines) + "\n\nget=1\n\n"
    answer, _ = connection.feed(text.encode(errors="replace"), 0.0)
    assert answer.endswith(b"\n\n")
    # the set request is answered with an errno line (0, or the error), whatever it held
    assert re.match(rb"errno=(0|-\d+)\n\n", answer), answer


@pytest.mark.netns
def test_get_matches_wireguard_go(tmp_path: Path) -> None:
    """The same set request given to wireguard-go and to wgref.uapi: identical get=1."""
    from tests.netns import SOCKET_DIR, Lab, require_netns

    require_netns()
    lab = Lab(tmp_path, namespaces=1)
    try:
        ifname = lab.ifname("u")
        lab.start("wireguard-go", lab.ns[0], ifname)

        def talk(text: str) -> str:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(5)
                sock.connect(str(SOCKET_DIR / f"{ifname}.sock"))
                sock.sendall(text.encode())
                out = b""
                while not out.endswith(b"\n\n"):
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    out += chunk
                return out.decode()

        one_peer = _config().split(f"public_key={PEER_B.hex()}")[0] + "\n"
        device, host = _setup()
        for text in (one_peer, "set=1\nfoo=bar\n\n", f"set=1\nprivate_key={'aa' * 32}\n\n"):
            assert talk(text) == request(device, host, text)
            assert talk("get=1\n\n") == request(device, host, "get=1\n\n")
    finally:
        lab.close()


def _uapi_set(device: Device, peer_public: bytes, lines: str, now: float) -> list[bytes]:
    connection = UapiConnection(device, MemoryHost())
    answer, out = connection.feed(f"set=1\npublic_key={peer_public.hex()}\n{lines}\n".encode(), now)
    assert answer == b"errno=0\n\n"
    return [data for _, data in out.datagrams()]


def test_endpoint_arriving_sends_what_was_staged() -> None:
    """netlink.c set_peer ends with wg_packet_send_staged_packets (wireguard-go's
    handlePostConfig likewise): a packet staged while the peer had no endpoint starts the
    handshake as soon as ``endpoint=`` arrives."""
    pair = make_pair(b_knows_a_endpoint=False)
    b = pair.b.device
    assert not b.send_packet(ipv4_packet(B_TUN4, A_TUN4, b"early"), pair.now).sends
    assert len(pair.peer_ba.staged) == 1
    sent = _uapi_set(b, pair.a.public_key, f"endpoint={A_ADDR[0]}:{A_ADDR[1]}\n", pair.now)
    assert [len(d) for d in sent] == [148]  # the initiation; the packet follows the handshake
    pair.b.outbox.extend(SendDatagram(Endpoint(*A_ADDR), d) for d in sent)
    pair.roundtrip()
    assert [d.packet for d in pair.a.delivered] == [ipv4_packet(B_TUN4, A_TUN4, b"early")]


def test_keepalive_at_once_only_when_persistent_keepalive_turns_on() -> None:
    """netlink.c set_peer: send_keepalive = !old interval && new interval."""
    pair = established_pair()
    a, peer_b = pair.a.device, pair.b.public_key
    on = _uapi_set(a, peer_b, "persistent_keepalive_interval=25\n", pair.now)
    assert [len(d) for d in on] == [32]  # a keepalive on the session
    assert _uapi_set(a, peer_b, "persistent_keepalive_interval=30\n", pair.now + 1) == []
    assert _uapi_set(a, peer_b, "persistent_keepalive_interval=30\n", pair.now + 2) == []
    assert _uapi_set(a, peer_b, "persistent_keepalive_interval=0\n", pair.now + 3) == []
    assert pair.peer_ab.timers.persistent_keepalive is None
    assert [len(d) for d in _uapi_set(a, peer_b, "persistent_keepalive_interval=5\n", 1e4)] == [
        148  # no usable session any more: the keepalive starts a handshake
    ]
