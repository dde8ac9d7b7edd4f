"""Device(checks=...): each defence can be switched off on its own (for negative controls:
harness/probes/sloppy.py and the harness's broken-peer faults), and is on by default."""

from __future__ import annotations

import pytest

from tests.pairs import A_ADDR, A_TUN4, B_TUN4, established_pair, ipv4_packet, make_pair
from wgref.checks import ALL_CHECKS, Checks
from wgref.cookie import CookieMaker


def v4(payload: bytes = b"x") -> bytes:
    return ipv4_packet(A_TUN4, B_TUN4, payload)


def test_all_checks_on_by_default() -> None:
    pair = make_pair()
    assert pair.a.device.checks == ALL_CHECKS == Checks()
    assert all(getattr(ALL_CHECKS, name.replace("-", "_")) for name in Checks.names())


def test_without_names_the_checks_and_rejects_unknown_ones() -> None:
    assert Checks.without("low-order", "replay") == Checks(low_order=False, replay=False)
    with pytest.raises(ValueError, match=r"unknown checks \['nope'\]"):
        Checks.without("nope")


@pytest.mark.parametrize("replay", [True, False])
def test_replay_check(replay: bool) -> None:
    pair = established_pair(b_kwargs={"checks": Checks(replay=replay)})
    pair.a.send(v4(), pair.now)
    (data,) = pair.a.take_outbox()
    pair.b.receive(data, A_ADDR, pair.now)
    pair.b.receive(data, A_ADDR, pair.now)
    assert len(pair.b.delivered) == (1 if replay else 2)
    assert pair.b.device.dropped["replay"] == (1 if replay else 0)


@pytest.mark.parametrize("crypto_routing", [True, False])
def test_crypto_routing_check(crypto_routing: bool) -> None:
    pair = established_pair(b_kwargs={"checks": Checks(crypto_routing=crypto_routing)})
    pair.a.send(ipv4_packet("10.0.0.99", B_TUN4, b"spoofed"), pair.now)
    pair.roundtrip()
    assert len(pair.b.delivered) == (0 if crypto_routing else 1)


@pytest.mark.parametrize("roaming", [True, False])
def test_roaming_check(roaming: bool) -> None:
    pair = established_pair(b_kwargs={"checks": Checks(roaming=roaming)})
    pair.a.send(v4(), pair.now)
    (data,) = pair.a.take_outbox()
    pair.b.receive(data, ("192.0.2.50", 6000), pair.now)
    assert (pair.peer_ba.endpoint[:2] == ("192.0.2.50", 6000)) is roaming  # type: ignore[index]


@pytest.mark.parametrize("timestamp", [True, False])
def test_timestamp_check(timestamp: bool) -> None:
    pair = make_pair(b_kwargs={"checks": Checks(timestamp=timestamp)})
    pair.a.send(v4(), pair.now)
    (initiation,) = pair.a.take_outbox()
    pair.b.receive(initiation, A_ADDR, pair.now)
    pair.b.take_outbox()
    pair.b.receive(initiation, A_ADDR, pair.now + 1)  # the same timestamp again
    assert len(pair.b.take_outbox()) == (0 if timestamp else 1)


@pytest.mark.parametrize("mac1", [True, False])
def test_mac1_check(mac1: bool) -> None:
    pair = make_pair(b_kwargs={"checks": Checks(mac1=mac1)})
    pair.a.send(v4(), pair.now)
    (initiation,) = pair.a.take_outbox()
    bad = initiation[:116] + bytes(16) + initiation[132:]
    pair.b.receive(bad, A_ADDR, pair.now)
    assert len(pair.b.take_outbox()) == (0 if mac1 else 1)


@pytest.mark.parametrize("reserved", [True, False])
def test_reserved_check(reserved: bool) -> None:
    pair = established_pair(b_kwargs={"checks": Checks(reserved=reserved)})
    pair.a.send(v4(), pair.now)
    (data,) = pair.a.take_outbox()
    pair.b.receive(data[:1] + b"\x01" + data[2:], A_ADDR, pair.now)
    assert len(pair.b.delivered) == (0 if reserved else 1)


@pytest.mark.parametrize("persistent_keepalive", [True, False])
def test_persistent_keepalive_check(persistent_keepalive: bool) -> None:
    pair = established_pair(
        keepalive_a=10, a_kwargs={"checks": Checks(persistent_keepalive=persistent_keepalive)}
    )
    start = pair.now
    pair.run(start + 25)
    sent = [d for t, d in pair.a.sent_data(since=start + 1)]
    assert bool(sent) is persistent_keepalive


def test_low_order_check_off_answers_a_low_order_ephemeral() -> None:
    for low_order in (True, False):
        pair = make_pair(b_kwargs={"checks": Checks(low_order=low_order)})
        pair.a.send(v4(), pair.now)
        (initiation,) = pair.a.take_outbox()
        # An all-zero ephemeral is low order: DH(b, 0) is all zero. Re-MAC it for B.
        body = initiation[:8] + bytes(32) + initiation[40:116]
        forged = CookieMaker.for_peer(pair.b.public_key).add_macs(body, pair.now)
        pair.b.receive(forged, A_ADDR, pair.now)
        # Strict: dropped as low order; sloppy: it goes on and fails to decrypt (the static
        # was sealed under the real ephemeral), so it is no longer a low-order drop.
        assert (pair.b.device.dropped["low-order-key"] == 1) is low_order
