"""The transparent client's pieces without the network: config, packet surgery, the
application rule, the flow table, the nftables script, the netlink messages."""

from __future__ import annotations

import ipaddress
import os
import random
import signal
import socket
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6

from tests.netns import genkey, processes, wait_for
from wgref.client import config as cfg
from wgref.client import netlink as nl
from wgref.client import nft, packet, procs
from wgref.client.flows import BYPASS, TUNNEL, Flow, FlowTable
from wgref.client.nfqueue import NFQA_VERDICT_HDR, NFQNL_MSG_VERDICT
from wgref.client.verdicts import VerdictWriter

KEY = genkey()
PEER = genkey()


def _conf(extra_interface: str = "", extra_peer: str = "") -> str:
    return (
        "[Interface]\n"
        f"PrivateKey = {KEY}\n"
        "Address = 10.99.0.2/32, fd99::2/128\n"
        f"{extra_interface}"
        "[Peer]\n"
        f"PublicKey = {PEER}\n"
        "Endpoint = 127.0.0.1:51820\n"
        "AllowedIPs = 0.0.0.0/0, ::/0\n"
        f"{extra_peer}"
    )


# ----------------------------------------------------------------- config


def test_config_full() -> None:
    c = cfg.parse(_conf(
        "DNS = 1.1.1.1, 9.9.9.9\nMTU = 1380\nListenPort = 51000\n#@wgref:KillSwitch = yes\n",
        f"PresharedKey = {genkey()}\nPersistentKeepalive = 25\n"
        "#@ws:AllowedApps = firefox, /usr/bin/curl\n"
        "DisallowedIPs = 192.168.0.0/16 # inline comment\n"
        "#@ws:DisallowedApps = chrome.exe\n"
        "# a plain comment = ignored\n"
    ), "x.conf")
    assert c.mtu == 1380 and c.listen_port == 51000 and c.kill_switch
    assert c.dns == ["1.1.1.1", "9.9.9.9"]
    [peer] = c.peers
    assert peer.allowed_apps == ["firefox", "/usr/bin/curl"]
    assert c.peer_allowed_apps(peer) == peer.allowed_apps
    assert peer.disallowed_apps == ["chrome.exe"]
    assert c.peer_disallowed_ips(peer) == [ipaddress.ip_network("192.168.0.0/16")]
    assert peer.endpoint == ("127.0.0.1", 51820)
    assert peer.preshared_key is not None and peer.persistent_keepalive == 25
    assert c.tunnel_address(4) == ipaddress.ip_interface("10.99.0.2/32")
    assert any("both set" in w for w in c.warnings)


@pytest.mark.parametrize(
    ("line", "where", "key"),
    [
        ("Frobnicate = 1", 5, "Frobnicate"),
        ("#@ws:Frobnicate = 1", 5, "Frobnicate"),
        ("AllowedIPs = 10.0.0.0/33", 5, "AllowedIPs"),
        ("DisallowedIPs = 10.0.0.x/8", 5, "DisallowedIPs"),
        ("PresharedKey = AAAA", 5, "PresharedKey"),
        ("PersistentKeepalive = 70000", 5, "PersistentKeepalive"),
        ("Endpoint = nowhere", 5, "Endpoint"),
        ("just words", 5, "just words"),
    ],
)
def test_config_errors_name_file_line_key(line: str, where: int, key: str) -> None:
    text = _conf().replace("Endpoint = 127.0.0.1:51820\n", "") + line + "\n"
    text += "Endpoint = 127.0.0.1:51820\n"
    lines = text.splitlines()
    number = lines.index(line) + 1
    with pytest.raises(cfg.ClientConfigError) as info:
        cfg.parse(text, "bad.conf")
    assert str(info.value).startswith(f"bad.conf:{number}: {key}:"), str(info.value)
    assert info.value.line == number and info.value.key == key


def test_config_bad_private_key_and_missing_keys(tmp_path: Path) -> None:
    with pytest.raises(cfg.ClientConfigError, match=r"c.conf:2: PrivateKey: not a base64 key"):
        cfg.parse(_conf().replace(KEY, "abc"), "c.conf")
    with pytest.raises(cfg.ClientConfigError, match="Endpoint: missing in"):
        cfg.parse(_conf().replace("Endpoint = 127.0.0.1:51820\n", ""), "c.conf")
    with pytest.raises(cfg.ClientConfigError, match=r"c.conf:8: PublicKey: missing in the "
                       r"\[Peer\] at line 8"):
        cfg.parse(_conf() + "[Peer]\n", "c.conf")
    with pytest.raises(cfg.ClientConfigError, match="unknown section"):
        cfg.parse("[Wat]\n", "c.conf")
    with pytest.raises(cfg.ClientConfigError, match="cannot read"):
        cfg.load(str(tmp_path / "missing.conf"))
    c = cfg.parse(_conf("PostUp = iptables ...\n"), "c.conf")
    assert any("PostUp: ignored" in w for w in c.warnings)


def test_cli_config_error_exit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from wgref.client import main

    path = tmp_path / "bad.conf"
    path.write_text(_conf(extra_peer="AllowedApps = x\nNope = 1\n"))
    assert main([str(path)]) == 1
    assert f"{path}:9: Nope: unknown key in [Peer]" in capsys.readouterr().err
    good = tmp_path / "good.conf"
    good.write_text(_conf())
    assert main([str(good), "--check"]) == 0


# ----------------------------------------------------------------- packets


def _scapy_ok(raw: bytes) -> None:
    """scapy recomputes every checksum; they must equal ours."""
    pkt = IP(raw) if raw[0] >> 4 == 4 else IPv6(raw)
    clone = pkt.copy()
    for layer in (IP, TCP, UDP, ICMP):
        if clone.haslayer(layer) and hasattr(clone[layer], "chksum"):
            del clone[layer].chksum
    if clone.haslayer(IPv6) and clone.haslayer(ICMPv6EchoRequest):
        del clone[ICMPv6EchoRequest].cksum
    assert bytes(clone.__class__(bytes(clone))) == raw


def test_checksum_matches_naive() -> None:
    rng = random.Random(1)
    for size in [*range(40), 1499, 1500]:
        data = bytes(rng.getrandbits(8) for _ in range(size))
        words = data + b"\0" * (size & 1)
        total = sum(struct.unpack(f">{len(words) // 2}H", words))
        while total >> 16:
            total = (total & 0xFFFF) + (total >> 16)
        assert packet.checksum(data) == ~total & 0xFFFF
    assert packet.checksum(b"\xff\xff") == 0


@pytest.mark.parametrize("version", [4, 6])
@pytest.mark.parametrize("kind", ["tcp", "udp", "icmp"])
def test_rewrite_fixes_checksums(version: int, kind: str) -> None:
    base: Any
    layer: Any
    if version == 4:
        base = IP(src="10.200.0.2", dst="10.200.0.1")
        new_src = ipaddress.ip_address("10.99.0.2").packed
    else:
        base = IPv6(src="fd20::2", dst="fd20::1")
        new_src = ipaddress.ip_address("fd99::2").packed
    if kind == "tcp":
        layer = TCP(sport=4000, dport=80, flags="S", options=[("MSS", 1460), ("SAckOK", b"")])
    elif kind == "udp":
        layer = UDP(sport=4000, dport=53)
    else:
        layer = ICMP(id=77) if version == 4 else ICMPv6EchoRequest(id=77)
    raw = bytes(base / layer / (b"x" * 33))
    info = packet.parse(raw)
    assert info is not None and info.sport in (4000, 77)
    out = packet.rewrite(raw, info, src=new_src, sport=5000, mss=1380)
    _scapy_ok(out)
    again = packet.parse(out)
    assert again is not None and again.src == new_src and again.sport == 5000
    if kind == "tcp":
        parsed = IP(out) if version == 4 else IPv6(out)
        assert dict(parsed[TCP].options)["MSS"] == 1380


@settings(max_examples=300, deadline=None, derandomize=True)
@given(version=st.sampled_from([4, 6]), kind=st.sampled_from(["tcp", "syn", "udp", "icmp"]),
       payload=st.binary(max_size=300), src=st.binary(min_size=16, max_size=16),
       dst=st.binary(min_size=16, max_size=16), port=st.integers(0, 0xFFFF),
       options=st.booleans())
def test_rewrite_updates_valid_checksums_as_summing_them_again(
        version: int, kind: str, payload: bytes, src: bytes, dst: bytes, port: int,
        options: bool) -> None:
    """RFC 1624's update of complete checksums gives the bytes a full recomputation gives,
    for the changes the client makes (addresses, port, echo identifier, MSS clamp)."""
    layer: Any
    base: Any = (IP(src="10.200.0.2", dst="10.200.0.1", options=b"\x01" * 4 if options
                    else b"") if version == 4 else IPv6(src="fd20::2", dst="fd20::1"))
    size = 4 if version == 4 else 16
    if kind in ("tcp", "syn"):
        layer = TCP(sport=4000, dport=80, flags="S" if kind == "syn" else "PA",
                    options=[("MSS", 1460), ("NOP", None), ("SAckOK", b"")] if options else [])
    elif kind == "udp":
        layer = UDP(sport=4000, dport=53)
    else:
        layer = ICMP(id=77) if version == 4 else ICMPv6EchoRequest(id=77)
    raw = bytes(base / layer / payload)
    results = []
    for valid in (False, True):
        info = packet.parse(raw)
        assert info is not None and not info.fragment
        results.append(packet.rewrite(raw, info, src=src[:size], dst=dst[:size], sport=port,
                                      mss=1380, valid=valid))
    assert results[0] == results[1]
    _scapy_ok(results[1])


@settings(max_examples=300, deadline=None, derandomize=True)
@given(version=st.sampled_from([4, 6]), kind=st.sampled_from(["tcp", "udp", "udp-nosum"]),
       payload=st.binary(max_size=300), new=st.tuples(
           st.binary(min_size=16, max_size=16), st.integers(0, 0xFFFF),
           st.binary(min_size=16, max_size=16), st.integers(0, 0xFFFF)),
       options=st.booleans())
def test_a_flows_translation_gives_the_bytes_of_a_rewrite(
        version: int, kind: str, payload: bytes, new: tuple[bytes, int, bytes, int],
        options: bool) -> None:
    """A flow's translation, worked out once, gives each packet of the flow the bytes the
    general rewrite gives it (RFC 1624 with the flow's constant change), IPv4 UDP without a
    checksum staying without one; a SYN (its MSS is clamped) and other protocols are left
    to the rewrite."""
    size = 4 if version == 4 else 16
    src, sport, dst, dport = new[0][:size], new[1], new[2][:size], new[3]
    base: Any = (IP(src="10.200.0.2", dst="10.200.0.1", options=b"\x01" * 4 if options
                    else b"") if version == 4 else IPv6(src="fd20::2", dst="fd20::1"))
    layer: Any = (TCP(sport=4000, dport=80, flags="PA", options=[("NOP", None)] * 4 * options)
                  if kind == "tcp" else UDP(sport=4000, dport=80))
    raw = bytearray(bytes(base / layer / payload))
    info = packet.parse(raw)
    assert info is not None
    if kind == "udp-nosum":
        if version == 6:
            return  # IPv6 UDP always has one (RFC 8200 8.1)
        raw[info.header_len + 6 : info.header_len + 8] = b"\0\0"
    translation = packet.Translation.between(
        version, info.proto, (info.src, 4000, info.dst, 80), (src, sport, dst, dport))
    expected = packet.rewrite(raw, info, src=src, dst=dst, sport=sport, dport=dport,
                              valid=True)
    info = packet.parse(raw)
    assert info is not None and translation.applies(info)
    translation.apply(raw, info)
    assert bytes(raw) == expected and (info.src, info.dst) == (src, dst)
    if kind == "udp-nosum":
        assert raw[info.header_len + 6 : info.header_len + 8] == b"\0\0"
    else:
        _scapy_ok(bytes(raw))
    syn = packet.parse(bytes(base / TCP(sport=4000, dport=80, flags="S")))
    ping = packet.parse(bytes(base / (ICMP(id=4000) if version == 4 else
                                      ICMPv6EchoRequest(id=4000))))
    assert syn is not None and ping is not None
    assert not packet.Translation.between(version, packet.TCP, (info.src, 4000, info.dst, 80),
                                          (src, sport, dst, dport)).applies(syn)
    assert not translation.applies(ping)


def test_mss_is_only_lowered() -> None:
    raw = bytes(IP(src="1.1.1.1", dst="2.2.2.2") / TCP(flags="S", options=[("MSS", 1200)]))
    info = packet.parse(raw)
    assert info is not None
    assert dict(IP(packet.rewrite(raw, info, mss=1380))[TCP].options)["MSS"] == 1200


@pytest.mark.parametrize("version", [4, 6])
def test_fragment_and_reassemble(version: int) -> None:
    base = IP(src="10.0.0.1", dst="10.0.0.2") if version == 4 else IPv6(src="fd::1", dst="fd::2")
    raw = bytes(base / UDP(sport=1, dport=2) / os.urandom(5000))
    info = packet.parse(raw)
    assert info is not None
    pieces = packet.fragment(raw, info, 1420)
    assert len(pieces) == 4 and all(len(p) <= 1420 for p in pieces)
    reassembler = packet.Reassembler()
    results = []
    for piece in reversed(pieces):  # out of order
        piece_info = packet.parse(piece)
        assert piece_info is not None and piece_info.fragment
        results.append(reassembler.add(piece, piece_info, 0.0))
    assert results[:-1] == [None] * 3
    assert results[-1] == raw


def test_too_big_and_icmp_error_rewrite() -> None:
    raw = bytes(IP(src="10.200.0.2", dst="10.200.0.1", flags="DF") / UDP(sport=1, dport=2)
                / (b"y" * 2000))
    info = packet.parse(raw)
    assert info is not None
    icmp = packet.too_big(raw, info, 1420, ipaddress.ip_address("10.99.0.2").packed)
    parsed = IP(icmp)
    assert parsed[ICMP].type == 3 and parsed[ICMP].code == 4 and parsed[ICMP].nexthopmtu == 1420
    _scapy_ok(icmp)
    # an ICMP port unreachable from the tunnel quoting the rewritten packet
    sent = bytes(IP(src="10.99.0.2", dst="10.200.0.1") / UDP(sport=5000, dport=2) / b"q")
    error = bytes(IP(src="10.200.0.1", dst="10.99.0.2") / ICMP(type=3, code=3) / sent)
    einfo = packet.parse(error)
    assert einfo is not None
    quoted = packet.quoted(error, einfo)
    assert quoted is not None and (quoted.sport, quoted.dport) == (5000, 2)
    host = ipaddress.ip_address("10.200.0.2").packed
    out = IP(packet.rewrite_icmp_error(error, einfo, quoted, host, 1234))
    assert out.dst == "10.200.0.2" and out[ICMP].payload.src == "10.200.0.2"
    assert out[ICMP].payload.payload.sport == 1234
    assert packet.checksum(bytes(out)[20:]) == 0  # the ICMP checksum holds
    assert packet.checksum(bytes(out)[28:48]) == 0  # and the quoted IPv4 header's



def test_parse_rejects_garbage() -> None:
    rng = random.Random(3)
    for _ in range(2000):  # random bytes never pass the header's length checks
        data = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 80)))
        assert packet.parse(data) is None, data.hex()
    whole = bytes(IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1, dport=2) / (b"x" * 40))
    assert packet.parse(whole) is not None
    for cut in range(len(whole)):  # a packet shorter than its header says is refused
        assert packet.parse(whole[:cut]) is None, cut


# ----------------------------------------------------------------- applications


def test_app_matching_rule() -> None:
    firefox = procs.Process(10, "firefox", "/usr/lib/firefox/firefox")
    script = procs.Process(11, "appA", "/usr/bin/python3.11")
    long_name = procs.Process(12, "a-very-long-pro", "/opt/x/a-very-long-program-name")
    assert procs.app_matches("firefox", firefox)
    assert procs.app_matches("FireFox.EXE", firefox)  # names: case-insensitive, .exe ignored
    assert procs.app_matches("/usr/lib/firefox/firefox", firefox)  # paths: exact
    assert procs.app_matches("/usr/lib/firefox/", firefox)  # directory prefix
    assert not procs.app_matches("/usr/lib/Firefox/firefox", firefox)  # paths: case matters
    assert not procs.app_matches("/usr/lib/fire", firefox)
    assert not procs.app_matches("fire", firefox)  # no substrings
    assert procs.app_matches("appa", script)  # comm (a #! script's name)
    assert procs.app_matches("python3.11", script)  # the executable's file name
    assert procs.app_matches("a-very-long-program-name", long_name)
    assert not procs.any_matches(["x", "y"], [firefox, script])
    assert procs.any_matches(["x", "firefox"], [script, firefox])


def test_socket_lookup_finds_our_socket() -> None:
    import socket

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        with socket.create_connection(server.getsockname()) as client:
            local, remote = client.getsockname(), client.getpeername()
            inodes = procs.socket_inodes(
                packet.TCP, 4, ipaddress.ip_address(local[0]).packed, local[1],
                ipaddress.ip_address(remote[0]).packed, remote[1])
            assert inodes
            owners = procs.owners(inodes[:1])
            assert [p.pid for p in owners] == [os.getpid()]


# ----------------------------------------------------------------- flows


def _flow(sport: int, src: bytes = b"\x0a\0\0\x02", decision: str = TUNNEL) -> Flow:
    return Flow(packet.UDP, 4, src, sport, b"\x0a\0\0\x01", 53, decision, "test",
                nat_src=b"\x0a\x63\0\x02")


def test_flow_table_nat_ports_and_expiry() -> None:
    table = FlowTable(random.Random(0))
    a = table.add(_flow(4000), 0.0)
    b = table.add(_flow(4000, src=b"\x0a\0\0\x03"), 0.0)  # same port, another host
    assert a.nat_sport == 4000 and b.nat_sport != 4000
    assert table.inbound[b.reverse_key] is b and table.inbound[a.reverse_key] is a
    table.add(_flow(5000, decision=BYPASS), 0.0)
    assert table.count(TUNNEL) == 2 and table.count(BYPASS) == 1
    assert table.expire(150.0) == 1  # bypass entries go first
    assert table.expire(1000.0) == 2 and not table.inbound


def test_config_several_peers_and_inheritance() -> None:
    other = genkey()
    c = cfg.parse(_conf("#@ws:DisallowedApps = ssh\nDisallowedIPs = 10.9.0.0/16\n",
                        "#@ws:AllowedApps = firefox\n")
                  + f"[Peer]\nPublicKey = {other}\nEndpoint = 127.0.0.2:51820\n"
                    "AllowedIPs = 10.0.0.0/8\nDisallowedIPs = 10.1.0.0/16\n", "m.conf")
    first, second = c.peers
    assert first.line == 6 and second.line == 11
    assert c.peer_allowed_apps(first) == ["firefox"] and c.peer_disallowed_apps(first) == ["ssh"]
    assert c.peer_allowed_apps(second) == [] and c.peer_disallowed_apps(second) == ["ssh"]
    assert [str(n) for n in c.peer_disallowed_ips(second)] == ["10.9.0.0/16", "10.1.0.0/16"]
    assert second.endpoint == ("127.0.0.2", 51820)


def test_config_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "bom.conf"
    path.write_bytes(b"\xef\xbb\xbf" + _conf().encode())
    c = cfg.load(str(path))
    assert c.private_key and len(c.peers) == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (_conf() + "[Interface]\n", r"d.conf:8: \[Interface\]: a second \[Interface\] \(the "
         r"first is at line 1\)"),
        (_conf("MTU = 1400\nmtu = 1380\n"), r"d.conf:5: mtu: given twice in this section "
         r"\(first at line 4\)"),
        (_conf(extra_peer="Endpoint = 127.0.0.1:1\n"),
         r"d.conf:8: Endpoint: given twice in this section \(first at line 6\)"),
        (_conf() + f"[Peer]\nPublicKey = {PEER}\n",
         r"d.conf:9: PublicKey: the same peer as the \[Peer\] at line 4"),
        (_conf().replace(PEER, "A" * 43 + "="),
         r"d.conf:5: PublicKey: the all-zero key is no peer's public key"),
        (_conf("#@ws:MTU = 1300\n"),
         r"d.conf:4: MTU: a wg-quick key inside a #@ws: comment"),
        (_conf(extra_peer=f"#@wgref:PresharedKey = {genkey()}\n"),
         r"d.conf:8: PresharedKey: a wg-quick key inside a #@wgref: comment"),
    ],
)
def test_config_refuses_ambiguous_files(text: str, message: str) -> None:
    with pytest.raises(cfg.ClientConfigError, match=message):
        cfg.parse(text, "d.conf")


def test_config_repeatable_keys_add_up() -> None:
    c = cfg.parse(_conf(extra_peer="AllowedIPs = 192.0.2.0/24\n"), "r.conf")
    assert [str(n) for n in c.peers[0].allowed_ips] == ["0.0.0.0/0", "::/0", "192.0.2.0/24"]


# ----------------------------------------------------------------- nftables, netlink


def test_table_script() -> None:
    rules = nft.Rules(7, [ipaddress.IPv4Network("10.0.0.0/8")], [], forward=True)
    text = nft.table_script("ip", rules.allowed4, rules)
    assert "table ip wgref_client" in text and "elements = { 10.0.0.0/8 }" in text
    assert "hook forward" in text and "jump to_queue" in text
    assert "meta l4proto tcp ip daddr @allowed jump to_queue_tcp" in text
    assert "        ip daddr @allowed jump to_queue\n" in text
    assert (f"meta mark {nft.OWN_MARK:#x} ct mark set ct mark or {nft.CT_INJECTED:#x} accept"
            in text)
    # answers of connections started from outside are never queued (output and forward)
    assert text.count(f"ct direction reply ct mark and {nft.CT_INJECTED:#x} == 0 accept") == 2
    assert "delete table ip6 wgref_client" in nft.delete_script()
    assert "chain sink" not in text


def test_table_script_with_the_discard_device() -> None:
    """Tunnelled TCP connections and UDP flows: never queued once marked, routed again to
    the discard devices by a mark set in a route chain after the queue's; an ICMP error about
    one (it shares the connection's conntrack entry and mark) is still queued."""
    rules = nft.Rules(7, [ipaddress.IPv4Network("10.0.0.0/8")], [], sink=True)
    text = nft.table_script("ip", rules.allowed4, rules)
    skip = (f"ct mark and {nft.CT_TUNNEL:#x} == {nft.CT_TUNNEL:#x}"
            " meta l4proto { tcp, udp } accept")
    assert text.index("chain output {") < text.index(skip) < text.index("jump to_queue_tcp")
    sink = text.split("chain sink {")[1].split("\n    }")[0]
    assert f"type route hook output priority {nft.PRIORITY + 5}" in sink
    assert f"meta mark {nft.TUNNEL_MARK:#x} ct mark set ct mark or {nft.CT_TUNNEL:#x}" in sink
    assert f"meta l4proto {{ tcp, udp }} meta mark set {nft.SINK_MARK:#x}" in sink


def test_netlink_roundtrip() -> None:
    body = nl.nfgen(0, 300) + nl.attr(NFQA_VERDICT_HDR, struct.pack(">II", 1, 42))
    data = nl.message((3 << 8) | NFQNL_MSG_VERDICT, nl.NLM_F_REQUEST, 9, body)
    [(kind, _flags, seq, payload)] = list(nl.messages(data + data[:5]))
    assert kind == (3 << 8) | NFQNL_MSG_VERDICT and seq == 9
    assert bytes(payload[2:4]) == (300).to_bytes(2, "big")
    attrs = nl.attributes(payload[4:])
    assert struct.unpack(">II", attrs[NFQA_VERDICT_HDR]) == (1, 42)


def test_exec_rule_matches_the_cgroup_and_marks() -> None:
    message = nft._exec_rule_message("ip", 0x1234567890, 4)
    [(kind, _flags, seq, payload)] = list(nl.messages(message))
    assert kind == (nft.NFNL_SUBSYS_NFTABLES << 8) | nft.NFT_MSG_NEWRULE and seq == 4
    attrs = nl.attributes(payload[4:])
    assert bytes(attrs[nft.NFTA_RULE_CHAIN]) == b"exec\0"
    body = bytes(attrs[nft.NFTA_RULE_EXPRESSIONS])
    names = [n for n in (b"socket", b"cmp", b"immediate", b"meta") if n + b"\0" in body]
    assert names == [b"socket", b"cmp", b"immediate", b"meta"]
    assert struct.pack("=Q", 0x1234567890) in body and struct.pack("=I", nft.EXEC_MARK) in body
    text = nft.table_script("ip", [ipaddress.IPv4Network("10.0.0.0/8")], nft.Rules(7, [], []))
    assert f"hook output priority {nft.PRIORITY - 1}" in text and "chain exec" in text


def test_conntrack_flush_filters_by_the_clients_mark() -> None:
    from wgref.client import conntrack

    [(kind, flags, _seq, payload)] = list(nl.messages(conntrack.flush_message(0x20, 0x20)))
    assert kind == (1 << 8) | 2 and flags & nl.NLM_F_ACK
    attrs = nl.attributes(payload[4:])
    assert bytes(payload[:1]) == b"\0"  # AF_UNSPEC: every family
    assert struct.unpack(">I", attrs[conntrack.CTA_MARK]) == (0x20,)
    assert struct.unpack(">I", attrs[conntrack.CTA_MARK_MASK]) == (0x20,)


def test_stale_status_socket(tmp_path: Path) -> None:
    import socket

    from wgref.client import status

    path = str(tmp_path / "client-x.sock")
    assert not status.remove_stale(path)  # nothing there
    live = status.listen(path)
    try:
        assert not status.remove_stale(path) and os.path.exists(path)  # answered: kept
    finally:
        live.close()
    assert status.remove_stale(path) and not os.path.exists(path)  # nobody answers
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as other:
        other.bind(path)  # bound but not listening: stale too
        assert status.remove_stale(path)


# ----------------------------------------------------------------- the verdict helper


def _children(pid: int) -> list[int]:
    return [child for child, parent in processes() if parent == pid]


def _reap(pid: int, timeout: float = 10.0) -> None:
    """Wait (bounded) for the child ``pid`` to exit, and reap it; kill it if it does not."""
    try:
        wait_for(lambda: os.waitpid(pid, os.WNOHANG) != (0, 0), timeout,
                 f"process {pid} to exit on SIGTERM")
    except BaseException:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise


def test_verdict_helper_copies_messages_in_order_and_exits_on_close() -> None:
    # A socketpair stands in for the queue's netlink socket: what the helper writes to it
    # arrives at the other end, one datagram a message, in order.
    netlink, far = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    writer = VerdictWriter(netlink)
    try:
        assert writer.pid in _children(os.getpid())
        messages = [bytes([n]) * (20 + n) for n in range(50)]
        for message in messages:
            assert writer.send(message)
        far.settimeout(5)
        assert [far.recv(4096) for _ in messages] == messages
    finally:
        writer.close()
    assert writer.pid not in _children(os.getpid())  # exited and reaped
    assert not writer.send(b"late")  # closed: the caller sends itself
    netlink.close()
    far.close()


def test_a_dead_verdict_helper_hands_the_sending_back() -> None:
    netlink, far = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    # A Python SIGTERM handler here, as the client (and a harness run in this process) has:
    # the helper must not inherit it, even when the signal comes before it has started.
    previous = signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        writer = VerdictWriter(netlink)
    finally:
        signal.signal(signal.SIGTERM, previous)
    try:
        os.kill(writer.pid, signal.SIGTERM)  # at once: the helper may not have started yet
        _reap(writer.pid)
        assert not writer.send(b"verdict")
        assert not writer.alive
    finally:
        writer.close()
        netlink.close()
        far.close()
