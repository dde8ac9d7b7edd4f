"""The probes' message crafting and mutation, checked against wgref's own responder (no root,
no sockets): valid messages are accepted, each mutation is rejected for the right reason."""

from __future__ import annotations

import ipaddress
import struct

import pytest

from harness.probes import craft
from harness.probes.client import reply_to
from harness.probes.craft import Initiator
from harness.probes.docs import index, render
from harness.probes.oracle import ListenerOracle, LogOracle
from harness.probes.registry import PROBES, select
from harness.probes.wire import Datagram
from wgref.constants import INITIATION_SIZE, REJECT_AFTER_MESSAGES
from wgref.crypto import generate_private_key, public_key
from wgref.device import Device
from wgref.messages import INITIATION_MAC1_OFFSET
from wgref.results import Batch
from wgref.tai64n import decode_tai64n

SOURCE = ("198.18.1.2", 40000)


@pytest.fixture()
def pair() -> tuple[Initiator, Device]:
    server_private, probe_private = generate_private_key(), generate_private_key()
    server = Device(server_private)
    server.add_peer(public_key(probe_private),
                    allowed_ips=[ipaddress.ip_network(f"{craft.CLIENT_INNER}/32")])
    return Initiator(probe_private, public_key(server_private)), server


def _response(out: Batch) -> bytes:
    sends = out.datagrams()
    assert len(sends) == 1, out
    return sends[0][1]


def _session(initiator: Initiator, server: Device, now: float = 10.0) -> craft.Session:
    pending = initiator.initiation()
    response = _response(server.receive_datagram(pending.data, SOURCE, now))
    return initiator.complete(pending, response)


def test_valid_initiation_completes_a_session(pair: tuple[Initiator, Device]) -> None:
    initiator, server = pair
    session = _session(initiator, server)
    tag_packet = craft.udp_packet(craft.CLIENT_INNER, craft.SERVER_INNER, 20001,
                                  craft.LISTEN_PORT, b"probe 20001")
    delivered = server.receive_datagram(session.seal(tag_packet), SOURCE, 10.1).packets
    assert delivered == [tag_packet]
    inner = craft.parse_inner_udp(delivered[0] + bytes(5))  # padding is ignored
    assert inner == craft.InnerUdp(craft.CLIENT_INNER, craft.SERVER_INNER, 20001,
                                   craft.LISTEN_PORT, b"probe 20001")


def test_server_keepalive_opens_with_the_session(pair: tuple[Initiator, Device]) -> None:
    initiator, server = pair
    session = _session(initiator, server)
    server.receive_datagram(session.seal(craft.icmp_echo_reply(craft.CLIENT_INNER,
                                                               craft.SERVER_INNER)), SOURCE, 11)
    actions = server.handle_timer(21.5)
    keepalive = _response(actions)
    assert session.open(keepalive) == b""
    assert session.open(craft.flip_bit(keepalive, -1)) is None


@pytest.mark.parametrize("mutate, reason", [
    (lambda d, k: craft.flip_bit(d, INITIATION_MAC1_OFFSET), "bad-mac1"),
    (lambda d, k: craft.remac(craft.with_reserved(d, 1), k), "bad-reserved"),
    (lambda d, k: craft.remac(craft.with_reserved(d, 0x010000), k), "bad-reserved"),
    (lambda d, k: craft.resized(d, 147), "bad-size"),
    (lambda d, k: craft.resized(d, 149), "bad-size"),
])
def test_initiation_mutations_are_rejected(pair: tuple[Initiator, Device], mutate: object,
                                           reason: str) -> None:
    initiator, server = pair
    pending = initiator.initiation()
    bad = mutate(pending.data, initiator.server_public)  # type: ignore[operator]
    assert bad != pending.data
    assert not server.receive_datagram(bad, SOURCE, 1.0).sends
    assert server.dropped[reason] == 1
    assert server.receive_datagram(pending.data, SOURCE, 1.1).sends  # the original is fine


def test_reserved_mutation_sets_only_header_bytes() -> None:
    data = bytes([1, 0, 0, 0]) + bytes(range(144))
    assert craft.with_reserved(data, 1)[:4] == bytes([1, 0, 0, 1])
    assert craft.with_reserved(data, 0x010000)[:4] == bytes([1, 1, 0, 0])
    assert craft.with_reserved(data, 1)[4:] == data[4:]


def test_remac_keeps_the_body_and_zeroes_mac2(pair: tuple[Initiator, Device]) -> None:
    initiator, _ = pair
    pending = initiator.initiation()
    again = craft.remac(pending.data, initiator.server_public)
    assert again == pending.data  # no cookie yet: mac2 was zero and mac1 is the same
    assert len(again) == INITIATION_SIZE


def test_replayed_and_old_initiations_are_rejected(pair: tuple[Initiator, Device]) -> None:
    initiator, server = pair
    first = initiator.initiation()
    assert server.receive_datagram(first.data, SOURCE, 1.0)
    assert not server.receive_datagram(first.data, SOURCE, 2.0).sends
    older = initiator.initiation(ts=craft.timestamp(-5.0))
    assert not server.receive_datagram(older.data, SOURCE, 3.0).sends
    assert server.dropped["replayed-initiation"] == 2


def test_timestamps_are_not_whitened_and_increase() -> None:
    stamps = [craft.timestamp() for _ in range(50)]
    assert stamps == sorted(stamps)
    assert len(set(stamps)) > 1
    assert decode_tai64n(craft.timestamp(-5.0))[0] < decode_tai64n(stamps[0])[0]


@pytest.mark.parametrize("point", list(craft.LOW_ORDER_POINTS.values()))
def test_low_order_initiation_is_well_formed_but_rejected(
        pair: tuple[Initiator, Device], point: bytes) -> None:
    initiator, server = pair
    data = initiator.low_order_initiation(point)
    assert len(data) == INITIATION_SIZE and data[8:40] == point
    assert not server.receive_datagram(data, SOURCE, 1.0).sends
    assert server.dropped["low-order-key"] == 1


def test_transport_mutations(pair: tuple[Initiator, Device]) -> None:
    initiator, server = pair
    session = _session(initiator, server)
    packet = craft.udp_packet(craft.CLIENT_INNER, craft.SERVER_INNER, 1, 2, b"x")
    good = session.seal(packet)
    assert craft.with_receiver(good, 7)[4:8] == struct.pack("<I", 7)
    assert craft.with_receiver(good, 7)[8:] == good[8:]
    for bad, reason in ((craft.flip_bit(good, 19), "decrypt-failed"),
                        (craft.with_reserved(good, 1), "bad-reserved"),
                        (craft.with_receiver(good, session.remote_index ^ 1), "unknown-index"),
                        (session.seal(packet, REJECT_AFTER_MESSAGES), "expired-keypair")):
        assert not server.receive_datagram(bad, SOURCE, 11).packets
        assert server.dropped[reason] >= 1, reason
    assert server.receive_datagram(good, SOURCE, 11).packets
    assert not server.receive_datagram(good, SOURCE, 11).packets  # a replay
    alien = craft.udp_packet(craft.ALIEN_INNER, craft.SERVER_INNER, 1, 2, b"x")
    assert not server.receive_datagram(session.seal(alien), SOURCE, 11).packets
    assert server.dropped["crypto-rp"] == 1


def test_explicit_counters_leave_the_sequence_alone(pair: tuple[Initiator, Device]) -> None:
    initiator, server = pair
    session = _session(initiator, server)
    session.seal(b"", 99)
    assert session.send_counter == 0
    session.seal(b"")
    assert session.send_counter == 1


def test_cookie_reply_is_taken_and_adds_mac2(pair: tuple[Initiator, Device]) -> None:
    initiator, _ = pair
    from wgref.cookie import CookieChecker

    checker = CookieChecker.for_static(initiator.server_public)
    pending = initiator.initiation()
    reply = checker.make_reply(pending.data, SOURCE, 1.0).to_bytes()
    assert reply_to(pending.sender)(Datagram(reply, SOURCE, 0.0, False))
    initiator.take_cookie(pending, reply)
    assert initiator.has_cookie
    again = initiator.initiation()
    assert checker.check_mac2(again.data, SOURCE, 1.0)
    assert not checker.check_mac2(again.data, ("198.18.3.2", 40000), 1.0)


def test_kind_names() -> None:
    assert craft.kind_name(b"\x01\x00") == "initiation"
    assert craft.kind_name(b"\x09") == "type-9"
    assert craft.kind_name(b"") == "empty"


def test_oracles_read_their_files(tmp_path: object) -> None:
    from pathlib import Path

    folder = Path(str(tmp_path))
    listener = folder / "delivered.jsonl"
    listener.write_text('{"t": 1, "src": "198.19.77.2", "sport": 20001, "size": 3}\n{"t"')
    assert ListenerOracle(listener, 7001).count("198.19.77.2", 20001) == 1
    log = folder / "mitm.log"
    log.write_text("listening\nudp ('198.19.77.2', 20001) -> ('198.19.77.1', 7001) 11 bytes\n"
                   "udp ('198.19.77.2', 20002) -> ('198.19.77.1', 7000) 11 bytes\n")
    oracle = LogOracle(log, 7001)
    assert oracle.tags() == [("198.19.77.2", 20001)]
    assert oracle.wait("198.19.77.2", 20002, 0.1) == 0


def test_every_probe_is_documented_and_selectable() -> None:
    from pathlib import Path

    docs = Path(__file__).resolve().parents[2] / "scenarios" / "probes"
    names = [p.name for p in PROBES]
    assert len(set(names)) == len(names)
    for probe in PROBES:  # rendered by `python -m harness.probes.docs`
        assert (docs / f"{probe.name}.md").read_text() == render(probe), probe.name
    assert (docs / "README.md").read_text() == index()
    assert [p.name for p in select([], slow=False)] == [p.name for p in PROBES if not p.slow]
    assert any(p.slow for p in PROBES)
    with pytest.raises(ValueError, match="unknown probe"):
        select(["nope"], slow=False)
