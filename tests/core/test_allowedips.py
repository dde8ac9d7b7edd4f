"""Tests for the cryptokey routing table (WP 3)."""

from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wgref.allowedips import AllowedIPs, Network


class Peer:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"Peer({self.name})"

    # Deliberately equal to every other Peer: the table must compare by identity.
    def __eq__(self, other: object) -> bool:
        return isinstance(other, Peer)

    def __hash__(self) -> int:
        return 0


def net(s: str) -> Network:
    return ip_network(s, strict=False)


def look(t: AllowedIPs[Peer], s: str) -> Peer | None:
    return t.lookup(ip_address(s).packed)


def test_v4_basic_and_overlap() -> None:
    a, b, c = Peer("a"), Peer("b"), Peer("c")
    t: AllowedIPs[Peer] = AllowedIPs()
    t.insert(net("10.0.0.0/8"), a)
    t.insert(net("10.1.0.0/16"), b)
    t.insert(net("10.1.2.3/32"), c)
    assert look(t, "10.2.3.4") is a
    assert look(t, "10.1.9.9") is b
    assert look(t, "10.1.2.3") is c
    assert look(t, "10.1.2.4") is b
    assert look(t, "11.0.0.0") is None
    assert look(t, "::a01:203") is None
    assert t.lookup(IPv4Address("10.1.2.3")) is c
    assert t.lookup(bytearray(b"\x0a\x01\x02\x03")) is c
    assert t.lookup(memoryview(b"\x00\x0a\x01\x02\x03")[1:]) is c
    assert len(t) == 3


def test_default_routes() -> None:
    a, b = Peer("a"), Peer("b")
    t: AllowedIPs[Peer] = AllowedIPs()
    t.insert(net("0.0.0.0/0"), a)
    t.insert(net("::/0"), b)
    assert look(t, "1.2.3.4") is a
    assert look(t, "255.255.255.255") is a
    assert look(t, "0.0.0.0") is a
    assert look(t, "2001:db8::1") is b
    assert look(t, "::") is b
    assert t.lookup(IPv6Address("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")) is b


def test_v6_basic_and_overlap() -> None:
    a, b, c = Peer("a"), Peer("b"), Peer("c")
    t: AllowedIPs[Peer] = AllowedIPs()
    t.insert(net("2001:db8::/32"), a)
    t.insert(net("2001:db8:1::/48"), b)
    t.insert(net("2001:db8:1::1/128"), c)
    assert look(t, "2001:db8:2::1") is a
    assert look(t, "2001:db8:1::2") is b
    assert look(t, "2001:db8:1::1") is c
    assert look(t, "2001:db9::") is None
    # The IPv4 table is separate even where the integer values coincide.
    assert look(t, "32.1.13.184") is None


def test_host_bits_are_masked() -> None:
    a = Peer("a")
    t: AllowedIPs[Peer] = AllowedIPs()
    t.insert(net("192.168.1.77/24"), a)
    t.insert(net("fd00::1234/64"), a)
    assert t.entries_for(a) == [IPv4Network("192.168.1.0/24"), IPv6Network("fd00::/64")]
    assert look(t, "192.168.1.1") is a
    assert look(t, "fd00::ffff") is a
    assert t.remove(net("192.168.1.1/24"), a)
    assert look(t, "192.168.1.1") is None


def test_reassignment() -> None:
    a, b = Peer("a"), Peer("b")
    t: AllowedIPs[Peer] = AllowedIPs()
    t.insert(net("10.0.0.0/24"), a)
    t.insert(net("10.0.1.0/24"), a)
    t.insert(net("10.0.0.0/24"), b)
    assert look(t, "10.0.0.1") is b
    assert t.entries_for(a) == [net("10.0.1.0/24")]
    assert t.entries_for(b) == [net("10.0.0.0/24")]
    assert len(t) == 2
    t.insert(net("10.0.0.0/24"), b)  # same peer again: no change
    assert len(t) == 2
    t.insert(net("10.0.1.0/24"), b)
    assert t.entries_for(a) == []
    assert t.entries_for(b) == [net("10.0.0.0/24"), net("10.0.1.0/24")]


def test_remove() -> None:
    a, b = Peer("a"), Peer("b")
    t: AllowedIPs[Peer] = AllowedIPs()
    t.insert(net("10.0.0.0/8"), a)
    t.insert(net("10.0.0.0/16"), b)
    assert not t.remove(net("10.0.0.0/16"), a)  # belongs to b
    assert not t.remove(net("10.0.0.0/24"), b)  # not present
    assert look(t, "10.0.0.1") is b
    assert t.remove(net("10.0.0.0/16"), b)
    assert not t.remove(net("10.0.0.0/16"), b)
    assert look(t, "10.0.0.1") is a
    assert len(t) == 1
    assert t.entries_for(b) == []


def test_remove_peer_and_clear() -> None:
    a, b = Peer("a"), Peer("b")
    t: AllowedIPs[Peer] = AllowedIPs()
    for s in ("10.0.0.0/8", "10.1.0.0/16", "fd00::/8", "fd00:1::/32"):
        t.insert(net(s), a)
    t.insert(net("10.1.1.0/24"), b)
    t.insert(net("0.0.0.0/0"), b)
    t.remove_peer(a)
    t.remove_peer(a)
    assert len(t) == 2
    assert t.entries_for(a) == []
    assert look(t, "10.1.1.1") is b
    assert look(t, "10.1.2.1") is b
    assert look(t, "fd00::1") is None
    t.clear()
    assert len(t) == 0
    assert look(t, "10.1.1.1") is None
    assert t.entries_for(b) == []


def test_bad_input() -> None:
    t: AllowedIPs[Peer] = AllowedIPs()
    with pytest.raises(ValueError):
        t.lookup(b"\x01\x02\x03")
    with pytest.raises(TypeError):
        t.insert("10.0.0.0/8", Peer("a"))  # type: ignore[arg-type]


def test_many_prefixes_one_peer() -> None:
    a, b = Peer("a"), Peer("b")
    t: AllowedIPs[Peer] = AllowedIPs()
    nets: list[Network] = []
    for i in range(65_280):  # 255 * 256 IPv4 /16s and IPv6 /48s
        nets.append(IPv4Network(((i + 256) << 16, 16)))
        nets.append(IPv6Network(((0x2001_0DB8 << 96) | (i << 80), 48)))
    assert len(nets) == 130_560
    for n in nets:
        t.insert(n, a)
    t.insert(net("0.0.0.0/0"), b)
    assert len(t) == 130_561
    assert t.entries_for(a) == nets
    for n in nets[::997]:
        assert t.lookup(n.network_address.packed) is a
        assert t.lookup(n.broadcast_address) is a
    assert look(t, "0.255.255.255") is b
    assert look(t, "2001:db9::") is None
    t.remove_peer(a)
    assert len(t) == 1
    assert look(t, "1.2.3.4") is b


# --- randomized comparison against a naive longest-match scan ---------------------------------

_PEERS = [Peer(str(i)) for i in range(4)]


@st.composite
def _prefix(draw: st.DrawFn, bits: int) -> Network:
    plen = draw(st.integers(0, bits))
    # Cluster addresses so overlaps are common.
    high = draw(st.integers(0, 3)) << (bits - 2)
    addr = high | draw(st.integers(0, (1 << (bits - 2)) - 1))
    addr &= ((1 << plen) - 1) << (bits - plen)
    return IPv4Network((addr, plen)) if bits == 32 else IPv6Network((addr, plen))


def _naive(table: dict[Network, Peer], address: IPv4Address | IPv6Address) -> Peer | None:
    best: tuple[int, Peer] | None = None
    for n, p in table.items():
        if (
            n.version == address.version
            and address in n
            and (best is None or n.prefixlen > best[0])
        ):
            best = (n.prefixlen, p)
    return None if best is None else best[1]


_Op = tuple[str, Network, int, int]


def _ops(bits: int) -> st.SearchStrategy[list[_Op]]:
    return st.lists(
        st.tuples(
            st.sampled_from(["insert", "insert", "insert", "remove", "remove_peer"]),
            _prefix(bits),
            st.integers(0, len(_PEERS) - 1),
            st.integers(-1, 1000),  # for remove: index of an existing prefix, or -1 for `n`
        ),
        max_size=60,
    )


def _check(ops: list[_Op], probes: list[int], bits: int) -> None:
    t: AllowedIPs[Peer] = AllowedIPs()
    model: dict[Network, Peer] = {}
    for op, n, pi, pick in ops:
        peer = _PEERS[pi]
        if op == "remove" and pick >= 0 and model:
            n = list(model)[pick % len(model)]
        if op == "insert":
            t.insert(n, peer)
            model[n] = peer
        elif op == "remove":
            expected = model.get(n) is peer
            assert t.remove(n, peer) is expected
            if expected:
                del model[n]
        else:
            t.remove_peer(peer)
            model = {k: v for k, v in model.items() if v is not peer}
    assert len(t) == len(model)
    for p in _PEERS:
        assert set(t.entries_for(p)) == {k for k, v in model.items() if v is p}
    addrs: list[IPv4Address | IPv6Address] = [
        IPv4Address(x) if bits == 32 else IPv6Address(x) for x in probes
    ]
    for n in model:
        addrs += [n.network_address, n.broadcast_address]
    for a in addrs:
        assert t.lookup(a.packed) is _naive(model, a), a
        assert t.lookup(a) is _naive(model, a), a


@settings(max_examples=200, deadline=None)
@given(_ops(32), st.lists(st.integers(0, 2**32 - 1), max_size=20))
def test_random_v4(ops: list[_Op], probes: list[int]) -> None:
    _check(ops, probes, 32)


@settings(max_examples=200, deadline=None)
@given(_ops(128), st.lists(st.integers(0, 2**128 - 1), max_size=20))
def test_random_v6(ops: list[_Op], probes: list[int]) -> None:
    _check(ops, probes, 128)
