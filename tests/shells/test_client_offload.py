"""The client's batch data path without the network: GSO super-packets cut for the tunnel,
segments merged for injection, checksums, and the verdicts of one read sent in one go."""

from __future__ import annotations

import socket
import struct

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.packet import Packet

from wgref.client import netlink as nl
from wgref.client import offload, packet
from wgref.client.nfqueue import (
    HOOK_OUTPUT,
    NF_ACCEPT,
    NF_DROP,
    NFQA_IFINDEX_INDEV,
    NFQA_IFINDEX_OUTDEV,
    NFQA_MARK,
    NFQA_PACKET_HDR,
    NFQA_PAYLOAD,
    NFQA_SKB_CSUMNOTREADY,
    NFQA_SKB_GSO,
    NFQA_SKB_INFO,
    NFQA_VERDICT_HDR,
    NFQNL_MSG_PACKET,
    NFQNL_MSG_VERDICT,
    NFQNL_MSG_VERDICT_BATCH,
    RECV_SIZE,
    RECV_SLOTS,
    NfQueue,
    QueuedPacket,
)
from wgref.client.verdicts import VerdictWriter
from wgref.mmsg import Slots


def _super_packet(version: int, size: int) -> bytes:
    ip = IP(src="10.99.0.2", dst="10.0.0.1") if version == 4 else IPv6(src="fd99::2",
                                                                        dst="fd00::1")
    data = bytes((i * 7) & 0xFF for i in range(size))
    tcp = TCP(sport=40000, dport=5201, seq=1000, flags="PA",
              options=[("NOP", None), ("NOP", None), ("Timestamp", (1, 2))])
    return bytes(ip / tcp / data)


@pytest.mark.parametrize("version", [4, 6])
def test_segment_then_merge_roundtrip(version: int) -> None:
    whole = _super_packet(version, 60_000)
    tcp_off = 20 if version == 4 else 40
    segments = offload.segment(whole, tcp_off, 1368)
    assert len(segments) == -(-60_000 // 1368)
    for seg in segments:
        parsed = (IP if version == 4 else IPv6)(seg)
        assert len(parsed[TCP].payload) <= 1368
        check = parsed.copy()
        del check[TCP].chksum
        if version == 4:
            del check[IP].chksum
        assert bytes(check.__class__(bytes(check))) == seg  # both checksums as scapy has them
    assert [p[TCP].flags.P for p in map(IP if version == 4 else IPv6, segments)][-1]
    [merged] = offload.merge(segments)
    assert merged.gso_size == 1368 and len(merged.payloads) == len(segments)
    assert merged.packet == segments[0]
    buf = bytearray(merged.joined())
    offload.finish_tcp(buf, tcp_off)
    assert bytes(buf) == whole


def test_merge_leaves_other_packets_alone() -> None:
    syn = bytes(IP(src="1.2.3.4", dst="5.6.7.8") / TCP(flags="S"))
    [out] = offload.merge([syn])
    assert out.packet == syn and out.gso_size == 0 and out.joined() == syn


@pytest.mark.parametrize("size", [0, 1, 1367, 60_001])
def test_finish_tcp_matches_scapy(size: int) -> None:
    good = bytes(IP(src="1.2.3.4", dst="5.6.7.8") / TCP(sport=1, dport=2) / (b"\xfe" * size))
    buf = bytearray(good)
    buf[10:12], buf[36:38] = b"\0\0", b"\x12\x34"
    offload.finish_tcp(buf, 20)
    assert bytes(buf) == good


def test_mss_option_read() -> None:
    raw = bytes(IP(src="1.2.3.4", dst="5.6.7.8") / TCP(flags="SA", options=[("MSS", 1200)]))
    info = packet.parse(raw)
    assert info is not None and packet.mss_option(raw, info) == 1200
    ack = bytes(IP(src="1.2.3.4", dst="5.6.7.8") / TCP(flags="A"))
    info = packet.parse(ack)
    assert info is not None and packet.mss_option(ack, info) is None


def test_pure_ack() -> None:
    def pure(pkt: Packet) -> bool:
        raw = bytes(pkt)
        info = packet.parse(raw)
        assert info is not None
        return packet.pure_ack(raw, info)

    ip = IP(src="1.2.3.4", dst="5.6.7.8")
    assert pure(ip / TCP(flags="A", options=[("Timestamp", (1, 2))]))
    assert pure(IPv6(src="::1", dst="::2") / TCP(flags="A"))
    assert not pure(ip / TCP(flags="A") / b"x")
    assert not pure(ip / TCP(flags="FA"))
    assert not pure(ip / TCP(flags="S"))
    assert not pure(ip / UDP())


@pytest.mark.parametrize("helper", [False, True], ids=["direct", "verdict-helper"])
def test_verdicts_single_first_then_one_batch_drop(helper: bool) -> None:
    ours, kernel = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with ours, kernel:
        queue = _queue_on(ours)
        queue.writer = VerdictWriter(ours) if helper else None
        queue.drop(10)
        queue.verdict(11, NF_ACCEPT, 0x1234)
        queue.drop(12)
        queue.drop(9)
        queue.flush()
        kernel.settimeout(5)
        sent = list(nl.messages(kernel.recv(65536)))
        queue.flush()  # nothing left: nothing sent
        queue.close()  # (the helper, if any, exits; the socket was ours to close)
        kernel.setblocking(False)
        with pytest.raises(BlockingIOError):
            kernel.recv(65536)
    kinds = [kind & 0xFF for kind, _f, _s, _p in sent]
    assert kinds == [NFQNL_MSG_VERDICT, NFQNL_MSG_VERDICT_BATCH]
    single, batch = (nl.attributes(p[4:]) for _k, _f, _s, p in sent)
    assert struct.unpack(">II", single[NFQA_VERDICT_HDR]) == (NF_ACCEPT, 11)
    assert struct.unpack(">I", single[NFQA_MARK]) == (0x1234,)
    assert struct.unpack(">II", batch[NFQA_VERDICT_HDR]) == (NF_DROP, 12)
    assert all(bytes(p[2:4]) == (7).to_bytes(2, "big") for _k, _f, _s, p in sent)


def _verdicts(sock: socket.socket, count: int) -> list[tuple[int, int, int]]:
    """(message kind, verdict, packet id) of the next ``count`` verdict messages on ``sock``."""
    sock.settimeout(5)
    found: list[tuple[int, int, int]] = []
    while len(found) < count:
        for kind, _f, _s, payload in nl.messages(sock.recv(65536)):
            verdict, packet_id = struct.unpack(">II", nl.attributes(payload[4:])[NFQA_VERDICT_HDR])
            found.append((kind & 0xFF, verdict, packet_id))
    return found


def test_pure_acks_dropped_alone_past_the_helper() -> None:
    """Drops of pure ACKs alone go straight to the queue, each by its own verdict: a batch
    drop could overtake the helper and drop a packet it has yet to accept. A flush with
    anything else goes through the helper, with the batch drop."""
    ours, kernel = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with ours, kernel:
        queue = _queue_on(ours)
        queue.writer = VerdictWriter(ours)
        handed: list[bytes] = []
        send = queue.writer.send
        queue.writer.send = lambda data: handed.append(data) or send(data)  # type: ignore[method-assign]
        queue.verdict(11, NF_ACCEPT, 0x1234)
        queue.drop(10, pure_ack=True)
        queue.drop(12)
        queue.flush()
        assert len(handed) == 1
        assert _verdicts(kernel, 2) == [(NFQNL_MSG_VERDICT, NF_ACCEPT, 11),
                                        (NFQNL_MSG_VERDICT_BATCH, NF_DROP, 12)]
        queue.drop(14, pure_ack=True)
        queue.drop(13, pure_ack=True)
        queue.flush()
        assert len(handed) == 1  # not through the helper
        assert _verdicts(kernel, 2) == [(NFQNL_MSG_VERDICT, NF_DROP, 14),
                                        (NFQNL_MSG_VERDICT, NF_DROP, 13)]
        queue.drop(15, pure_ack=True)
        queue.drop(16)  # data: its freeing sends the socket's next segments
        queue.flush()
        assert len(handed) == 2
        assert _verdicts(kernel, 1) == [(NFQNL_MSG_VERDICT_BATCH, NF_DROP, 16)]
        queue.close()


def queued_message(packet_id: int, payload: bytes, *, mark: int | None = None,
                   skb_info: int | None = None, header: bool = True,
                   kind: int = NFQNL_MSG_PACKET) -> bytes:
    """A packet message as nfnetlink_queue sends it (nfnetlink_queue.c
    nfqnl_build_packet_message: the packet header first, the payload last)."""
    attrs = [nl.attr(NFQA_PACKET_HDR, struct.pack(">IHB", packet_id, 0x0800, HOOK_OUTPUT))
             ] if header else []
    if mark is not None:
        attrs.append(nl.attr(NFQA_MARK, struct.pack(">I", mark)))
    attrs += [nl.attr(NFQA_IFINDEX_OUTDEV, struct.pack(">I", 3)),
              nl.attr(NFQA_IFINDEX_INDEV | nl.NLA_F_NESTED, b"\x01")]  # malformed: skipped
    if skb_info is not None:
        attrs.append(nl.attr(NFQA_SKB_INFO, struct.pack(">I", skb_info)))
    attrs.append(nl.attr(NFQA_PAYLOAD, payload))
    return nl.message((3 << 8) | kind, 0, 0, nl.nfgen(socket.AF_UNSPEC, 7) + b"".join(attrs))


def _queue_on(sock: socket.socket) -> NfQueue:
    """An NfQueue reading from ``sock`` (one end of a socket pair) instead of the kernel."""
    queue = NfQueue.__new__(NfQueue)
    queue.number, queue.sock, queue.writer = 7, sock, None
    queue._nfgen = nl.nfgen(0, 7)
    queue._clear_verdicts()
    queue._slots = Slots(RECV_SLOTS, RECV_SIZE)
    queue._buffer = queue._slots.buffer
    queue._view = memoryview(queue._buffer)
    return queue


def test_receive_reads_packet_messages() -> None:
    """Each datagram may hold several messages; messages of other kinds and packets without
    a packet header are skipped; the flags of NFQA_SKB_INFO come through."""
    data = bytes(IP(src="10.0.0.1", dst="10.99.0.9") / TCP() / (b"u" * 1400))
    ours, kernel = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with ours, kernel:
        ours.setblocking(False)
        queue = _queue_on(ours)
        kernel.send(queued_message(1, data, mark=0x77)
                    + queued_message(2, data, header=False)
                    + queued_message(3, data, kind=NFQNL_MSG_VERDICT))
        kernel.send(queued_message(4, data[:60], skb_info=NFQA_SKB_GSO | NFQA_SKB_CSUMNOTREADY))
        kernel.send(queued_message(5, b"", skb_info=NFQA_SKB_CSUMNOTREADY))
        got = queue.receive(64)
    assert got == [
        QueuedPacket(1, HOOK_OUTPUT, data, 0x77, 0, 3, gso=False, csum_partial=False),
        QueuedPacket(4, HOOK_OUTPUT, data[:60], 0, 0, 3, gso=True, csum_partial=True),
        QueuedPacket(5, HOOK_OUTPUT, b"", 0, 0, 3, gso=False, csum_partial=True),
    ]


def test_partial_checksum_and_vnet_header_for_lo() -> None:
    good = bytes(IP(src="1.2.3.4", dst="5.6.7.8") / TCP(sport=1, dport=2) / (b"\x01" * 3000))
    buf = bytearray(good)
    buf[10:12], buf[36:38] = b"\0\0", b"\0\0"
    offload.partial_tcp(buf, 20)
    assert buf[10:12] == good[10:12]  # the IPv4 header checksum is whole
    # the TCP field holds the pseudo-header sum (addresses, protocol, TCP length)
    pseudo = (0x0102 + 0x0304 + 0x0506 + 0x0708 + 6 + len(good) - 20) % 0xFFFF
    assert int.from_bytes(buf[36:38], "big") == pseudo
    flags, gso_type, hdr_len, gso_size, start, offset = struct.unpack(
        "=BBHHHH", offload.vnet_header(4, 20, 40, 1368, link=14))
    assert (flags, gso_type, hdr_len, gso_size, start, offset) == (1, 1, 54, 1368, 34, 16)
    assert struct.unpack("=BBHHHH", offload.vnet_header(6, 40, 60, 1348))[1] == 4


def test_merge_keeps_interleaved_flows_apart() -> None:
    """Segments of two flows alternating (as several streams arrive): one merged packet per
    flow, each equal to its flow's segments joined."""
    tcp_off = 20
    flows = []
    for sport in (40000, 40001):
        whole = bytes(IP(src="10.0.0.1", dst="10.99.0.2") / TCP(sport=sport, dport=5201,
                                                                seq=7, flags="A")
                      / (bytes([sport & 0xFF]) * 13_680))
        flows.append((whole, offload.segment(whole, tcp_off, 1368)))
    interleaved = [seg for pair in zip(flows[0][1], flows[1][1], strict=True) for seg in pair]
    merged = offload.merge(interleaved)
    assert [m.packet for m in merged] == [flows[0][1][0], flows[1][1][0]]
    for m, (whole, segments) in zip(merged, flows, strict=True):
        assert m.gso_size == 1368 and len(m.payloads) == len(segments)
        buf = bytearray(m.joined())
        offload.finish_tcp(buf, tcp_off)
        assert bytes(buf) == whole


_TS = [("NOP", None), ("NOP", None), ("Timestamp", (7, 9))]


def _ack(number: int, *, sport: int = 5201, flags: str = "A",
         options: list[tuple[str, object]] | None = None, data: bytes = b"",
         version: int = 4) -> bytes:
    ip = IP(src="10.0.0.1", dst="10.99.0.2") if version == 4 else IPv6(src="fd00::1",
                                                                       dst="fd99::2")
    tcp = TCP(sport=sport, dport=40000, seq=1, ack=number, flags=flags,
              options=_TS if options is None else options)
    return bytes(ip / tcp / data)


@pytest.mark.parametrize("version", [4, 6])
def test_thin_acks_keeps_the_latest_pure_ack_of_a_flow(version: int) -> None:
    acks = [_ack(n, version=version) for n in (1000, 2000, 3000)]
    assert offload.thin_acks(acks) == acks[2:]
    plain = [_ack(n, options=[], version=version) for n in (1000, 2000)]
    assert offload.thin_acks(plain) == plain[1:]


def test_thin_acks_keeps_what_the_receiver_acts_on() -> None:
    # duplicate ACKs (fast retransmit counts them) and window updates: equal numbers
    dupes = [_ack(1000), _ack(1000), _ack(1000)]
    assert offload.thin_acks(dupes) == dupes
    # a SACK block, another flag, data: kept, and the ACK before them is kept too
    sack = _ack(1500, options=[("NOP", None), ("NOP", None), ("SAck", (3000, 4000))])
    for other in (sack, _ack(1500, flags="FA"), _ack(1500, flags="AE"), _ack(1500, data=b"x")):
        batch = [_ack(1000), other, _ack(2000)]
        assert offload.thin_acks(batch) == batch
    # a lower number later (reordered): nothing superseded
    backwards = [_ack(2000), _ack(1000)]
    assert offload.thin_acks(backwards) == backwards
    # not TCP, not IP: left alone
    udp = bytes(IP(src="10.0.0.1", dst="10.99.0.2") / (b"\0" * 30))
    assert offload.thin_acks([udp, b"", b"\x99" * 40]) == [udp, b"", b"\x99" * 40]


def test_thin_acks_flows_apart_and_sequence_wrap() -> None:
    batch = [_ack(100, sport=1), _ack(100, sport=2), _ack(200, sport=1), _ack(300, sport=2)]
    assert offload.thin_acks(batch) == [batch[2], batch[3]]
    wrapped = [_ack(0xFFFF_FF00), _ack(0x10)]  # 0x10 is after 0xFFFFFF00 (RFC 1982)
    assert offload.thin_acks(wrapped) == wrapped[1:]
