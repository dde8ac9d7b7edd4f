"""Named faults: wgref with one behaviour broken on purpose, so each scenario check and probe
can be shown to fail a peer that gets wrong exactly what it checks (the harness's mutation
test: tests/harness/test_faults_netns.py; the table is in scenarios/README.md).

    python -m harness.faults --fault no-roam[,drop-udp...] -f IFNAME
    python -m harness run --client wgref --server wgref-fault:no-roam --scenario roaming
    python -m harness probe --server wgref-fault:no-replay-window --probe transport-replay

A fault peer is never part of the matrix unless asked for by name. A fault is either a
defence switched off through the Device's own switch (:class:`wgref.checks.Checks`, as
:mod:`harness.probes.sloppy` does), or a behaviour changed in the fault's own process before
the interface starts, at one of three places: what the device receives (datagrams before
:meth:`Device.receive_datagrams` sees them), what the interface emits (the output Batch,
before the TUN and the sockets), or the device's state and timers.
"""

from __future__ import annotations

import contextlib
import re
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from wgref.checks import ALL_CHECKS, Checks

from .peers.base import PeerDriver
from .peers.spec import negative_control
from .traffic import harness_python

PREFIX = "wgref-fault:"

# The hooks a fault can chain onto (each wraps what is installed before it).
Inbound = Callable[[Any, list[bytes], list[Any]],
                   tuple[list[bytes], list[Any]]]


@dataclass(frozen=True, slots=True)
class Fault:
    name: str
    does: str  # what the broken peer does wrong
    role: str  # where the mutation tests run it: "client", "server" or "both"
    caught_by: tuple[str, ...]  # the checks meant to catch it ("scenario/step" or "probe:X")
    install: Callable[[], None] | None = None  # changes this process's wgref
    checks_off: tuple[str, ...] = ()  # defences switched off (Checks.names() spelling)


# --------------------------------------------------------------------- hook points


def _patch(owner: Any, name: str, value: Any) -> Any:
    """Replace ``owner.name`` (a module global, a method) with ``value``; returns the old."""
    old = getattr(owner, name)
    setattr(owner, name, value)
    return old


Receive = Callable[[Any, list[bytes], list[Any]], None]


def _around_receive(around: Callable[[Receive, Any, list[bytes], list[Any]], None]) -> None:
    """Every batch of datagrams the device receives goes through ``around(receive, device,
    datagrams, sources)``, which calls ``receive(device, datagrams, sources)`` (the real
    :meth:`Device.receive_datagrams`) as it sees fit."""
    from wgref.device import Device

    received = Device.receive_datagrams

    def receive(self: Device, datagrams: list[bytes], sources: list[Any], now: float,
                out: Any) -> None:
        def inner(device: Any, datagrams: list[bytes], sources: list[Any]) -> None:
            received(device, datagrams, sources, now, out)
        around(inner, self, datagrams, sources)

    _patch(Device, "receive_datagrams", receive)


def _wrap_inbound(change: Inbound) -> None:
    """Datagrams as the interface reads them, changed before the device sees them."""
    def around(receive: Any, device: Any, datagrams: list[bytes],
               sources: list[Any]) -> None:
        receive(device, *change(device, datagrams, sources))
    _around_receive(around)


def _after_receive(then: Callable[[Any, dict[bytes, Any]], None]) -> None:
    """Run ``then(device, before)`` after every batch the device received; ``before`` maps
    each peer's public key to its endpoint before the batch."""
    def around(receive: Any, device: Any, datagrams: list[bytes],
               sources: list[Any]) -> None:
        before = {key: peer.endpoint for key, peer in device.peers.items()}
        receive(device, datagrams, sources)
        then(device, before)
    _around_receive(around)


def _wrap_outbound(change: Callable[[Any, Any], None]) -> None:
    """The output Batch (packets for the TUN, datagrams per destination) before it is
    written; ``change(interface, batch)`` edits it in place."""
    from wgref.interface import Interface

    flush = Interface._flush

    def patched(self: Interface, out: Any) -> None:
        change(self, out)
        flush(self, out)

    _patch(Interface, "_flush", patched)


def _keep_datagrams(keep: Callable[[bytes], bool]) -> Callable[[Any, Any], None]:
    def change(interface: Any, out: Any) -> None:
        sends = [(dst, [d for d in datagrams if keep(d)]) for dst, datagrams in out.sends]
        out.sends[:] = [(dst, datagrams) for dst, datagrams in sends if datagrams]
    return change


def _keep_packets(keep: Callable[[bytes], bool]) -> Callable[[Any, Any], None]:
    def change(interface: Any, out: Any) -> None:
        out.packets[:] = [p for p in out.packets if keep(p)]
    return change


def _protocol(packet: bytes) -> int:
    """The IP protocol (IPv4) or first next header (IPv6) of an inner packet."""
    if packet and packet[0] >> 4 == 4 and len(packet) >= 20:
        return packet[9]
    if packet and packet[0] >> 4 == 6 and len(packet) >= 40:
        return packet[6]
    return -1


# --------------------------------------------------------------------- the faults


def _deliver_nothing() -> None:
    _wrap_outbound(_keep_packets(lambda packet: False))


def _drop_udp() -> None:
    _wrap_outbound(_keep_packets(lambda packet: _protocol(packet) != 17))


def _drop_icmp() -> None:
    _wrap_outbound(_keep_packets(lambda packet: _protocol(packet) not in (1, 58)))


def _drop_above(limit: int) -> Callable[[], None]:
    def install() -> None:
        _wrap_outbound(_keep_datagrams(lambda data: len(data) <= limit))
        _wrap_inbound(lambda device, datagrams, sources: (
            [d for d in datagrams if len(d) <= limit],
            [s for d, s in zip(datagrams, sources, strict=True) if len(d) <= limit]))
    return install


def _wrong_source_port() -> None:
    """Every datagram leaves from listen port + 1 (a second socket), not the port the peer
    sent to: a NAT in front of the peer drops the replies."""
    sockets: dict[tuple[int, int], socket.socket] = {}

    def change(interface: Any, out: Any) -> None:
        port = interface.listen_port
        for endpoint, datagrams in out.sends:
            destination = endpoint.address
            family = socket.AF_INET6 if ":" in destination[0] else socket.AF_INET
            sock = sockets.get((family, port))
            if sock is None:
                sock = socket.socket(family, socket.SOCK_DGRAM)
                sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", port + 1))
                sockets[(family, port)] = sock
            for data in datagrams:
                with contextlib.suppress(OSError):
                    sock.sendto(data, destination)
        out.sends.clear()

    _wrap_outbound(change)


def _no_roam() -> None:
    """An endpoint, once learned, is kept: authenticated packets from a new address do not
    move it (the Device's own ``roaming`` switch learns no endpoint at all, so an
    endpoint-less server could not even answer its first peer)."""
    def restore(device: Any, before: dict[bytes, Any]) -> None:
        for key, peer in device.peers.items():
            if before.get(key) is not None:
                peer.endpoint = before[key]
    _after_receive(restore)


def _ignore_reserved() -> None:
    """The reserved header bytes are ignored where the type is read; mac1 still covers the
    bytes as received. (The Device's ``reserved`` switch zeroes them before mac1, so a
    handshake message with reserved bytes set fails mac1 there and is dropped anyway.)"""
    from wgref import device, messages

    strict = messages.message_type

    def lenient(data: bytes) -> int:
        return strict(data[:1] + b"\0\0\0" + data[4:] if len(data) >= 4 else data)

    for module in (device, messages):
        _patch(module, "message_type", lenient)
    _wrap_inbound(lambda dev, datagrams, sources: (
        [d[:1] + b"\0\0\0" + d[4:] if d[:1] == b"\x04" and len(d) >= 32 else d
         for d in datagrams], sources))


def _no_passive_keepalive() -> None:
    def disarm(device: Any, before: dict[bytes, Any]) -> None:
        for peer in device.peers.values():
            peer.timers.send_keepalive = None
            peer.need_another_keepalive = False
    _after_receive(disarm)


def _hide_handshake() -> None:
    from wgref.device import Device

    complete = Device._handshake_complete

    def patched(self: Device, peer: Any, now: float, out: Any) -> None:
        complete(self, peer, now, out)
        peer.last_handshake = None

    _patch(Device, "_handshake_complete", patched)


def _claim_handshake() -> None:
    import time

    from wgref.device import Device

    add = Device.add_peer

    def patched(self: Device, public_key: bytes, **kwargs: Any) -> Any:
        peer = add(self, public_key, **kwargs)
        if peer.last_handshake is None:
            peer.last_handshake = time.time()
        return peer

    _patch(Device, "add_peer", patched)


def _no_rebind() -> None:
    """Listen-port changes are ignored once a handshake completed."""
    from wgref.interface import Interface

    rebind = Interface.set_listen_port

    def patched(self: Interface, port: int) -> None:
        if any(p.last_handshake for p in self.device.peers.values()):
            return
        rebind(self, port)

    _patch(Interface, "set_listen_port", patched)


def _route_everything() -> None:
    """Every address belongs to the only peer, both ways (as a 0/0 allowed-ips)."""
    from wgref.allowedips import AllowedIPs

    lookup = AllowedIPs.lookup

    def patched(self: AllowedIPs[Any], address: bytes) -> Any:
        found = lookup(self, address)
        if found is not None:
            return found
        owners = [peer for peer, _ in self._by_peer.values()]
        return owners[0] if len(owners) == 1 else None

    _patch(AllowedIPs, "lookup", patched)


def _lenient_size() -> None:
    from wgref.messages import _SIZES

    def resize(device: Any, datagrams: list[bytes], sources: list[Any]
               ) -> tuple[list[bytes], list[Any]]:
        out = []
        for data in datagrams:
            size = _SIZES.get(int.from_bytes(data[:4], "little")) if len(data) >= 4 else None
            if size is not None and len(data) != size:
                data = data[:size].ljust(size, b"\x00")
            out.append(data)
        return out, sources

    _wrap_inbound(resize)


def _no_reject_after() -> None:
    from wgref import device

    _patch(device, "REJECT_AFTER_MESSAGES", 1 << 65)


def _no_rekey() -> None:
    from wgref import timers

    _patch(timers, "REKEY_AFTER_TIME", 1e9)


def _any_receiver_index() -> None:
    """A transport message for an unknown index is tried on the only peer's session."""
    def redirect(device: Any, datagrams: list[bytes], sources: list[Any]
                 ) -> tuple[list[bytes], list[Any]]:
        indices = device._indices
        peers = list(device.peers.values())
        out = []
        for data in datagrams:
            if (len(data) >= 32 and data[0] == 4 and len(peers) == 1
                    and int.from_bytes(data[4:8], "little") not in indices
                    and peers[0].keypairs.current is not None):
                index = peers[0].keypairs.current.local_index
                data = data[:4] + index.to_bytes(4, "little") + data[8:]
            out.append(data)
        return out, sources

    _wrap_inbound(redirect)


def _replay_before_auth() -> None:
    """The counter of a transport message is recorded before it is authenticated, so a
    forgery uses up the counter of the authentic packet."""
    from cryptography.exceptions import InvalidTag

    def consume(device: Any, datagrams: list[bytes], sources: list[Any]
                ) -> tuple[list[bytes], list[Any]]:
        indices = device._indices
        for data in datagrams:
            if len(data) < 32 or data[0] != 4:
                continue
            entry = indices.get(int.from_bytes(data[4:8], "little"))
            keypair = entry[1] if entry is not None else None
            if keypair is None:
                continue
            counter = int.from_bytes(data[8:16], "little")
            try:
                keypair.receiver.decrypt(bytes(4) + data[8:16], data[16:], None)
            except InvalidTag:
                keypair.replay.check_and_update(counter)
        return datagrams, sources

    _wrap_inbound(consume)


FAULTS: dict[str, Fault] = {f.name: f for f in (
    Fault("deliver-nothing", "completes handshakes but writes nothing to its tunnel",
          "server", ("handshake/tcp echo client -> server",), _deliver_nothing),
    Fault("drop-udp", "does not deliver inner UDP", "server",
          ("handshake/udp echo client -> server",), _drop_udp),
    Fault("drop-icmp", "does not deliver inner ICMP/ICMPv6", "server",
          ("handshake/ping client -> server",), _drop_icmp),
    Fault("hide-handshake", "`wg show` never reports a handshake (latest-handshake 0)",
          "both", ("handshake/handshake seen",), _hide_handshake),
    Fault("claim-handshake", "`wg show` reports a handshake that never happened", "server",
          ("psk-mismatch/latest-handshake stays 0",), _claim_handshake),
    Fault("no-roam", "keeps the first endpoint it learned (does not roam, WP 6.5)",
          "server", ("roaming/server follows the client",), _no_roam),
    Fault("no-passive-keepalive", "never sends a passive keepalive (WP 6.5)", "client",
          ("keepalive/passive keepalive from the client", "probe:passive-keepalive"),
          _no_passive_keepalive),
    Fault("ignore-persistent-keepalive", "accepts persistent-keepalive but never sends one",
          "client", ("keepalive/server reaches the client through the NAT",),
          checks_off=("persistent-keepalive",)),
    Fault("no-rebind", "ignores listen-port changes once a handshake completed", "client",
          ("listen-port/server sees the new port",), _no_rebind),
    Fault("drop-above-1200", "drops datagrams above 1200 bytes, both ways", "server",
          ("mtu/1420-byte packets client -> server", "transfer/transfer completed"),
          _drop_above(1200)),
    Fault("no-cookie-reply", "never goes under load: no cookie replies, no rate limit "
          "(WP 5.3)", "server",
          ("cookie-under-load/server under load answers with cookies",
           "flood-stop/cookie replies counted", "probe:cookie-under-load"),
          checks_off=("cookie-replies",)),
    Fault("wrong-source-port", "sends every datagram from listen port + 1", "server",
          ("keepalive/ping client -> server",), _wrong_source_port),
    Fault("no-crypto-rp", "delivers packets from any inner source (no cryptokey-routing "
          "check on receive)", "server", ("probe:crypto-rp",),
          checks_off=("crypto-routing",)),
    Fault("route-everything", "treats every address as its only peer's, both ways (as a "
          "0/0 allowed-ips)", "server",
          ("crypto-rp/inner source outside allowed-ips is dropped",),
          _route_everything),
    Fault("no-replay-window", "accepts every transport counter again", "server",
          ("probe:transport-replay", "probe:counter-behind-window", "probe:roaming-spoof"),
          checks_off=("replay",)),
    Fault("no-timestamp-check", "accepts replayed and old initiations, no 50/s limit",
          "server", ("probe:initiation-replay", "probe:initiation-old-timestamp",
                     "probe:initiation-rate-limit"),
          checks_off=("timestamp",)),
    Fault("no-mac1", "answers initiations whatever their mac1", "server",
          ("probe:bad-mac1",), checks_off=("mac1",)),
    Fault("accept-low-order", "accepts a low-order ephemeral (all-zero DH)", "server",
          ("probe:low-order-ephemeral",), checks_off=("low-order",)),
    Fault("ignore-reserved", "ignores the reserved header bytes", "server",
          ("probe:reserved-initiation", "probe:reserved-transport"), _ignore_reserved),
    Fault("lenient-size", "cuts or pads handshake messages of the wrong size", "server",
          ("probe:wrong-size",), _lenient_size),
    Fault("no-reject-after", "accepts counters at and beyond REJECT_AFTER_MESSAGES",
          "server", ("probe:counter-reject-after",), _no_reject_after),
    Fault("any-receiver-index", "tries a transport message for an unknown index on its "
          "only session", "server", ("probe:unknown-receiver-index",), _any_receiver_index),
    Fault("replay-before-auth", "records a counter before authenticating the packet",
          "server", ("probe:ciphertext-bitflip",), _replay_before_auth),
    Fault("no-rekey", "never rekeys after REKEY_AFTER_TIME", "server",
          ("probe:rekey-after-time", "rekey/new handshake (rekey)"), _no_rekey),
)}

_PARAMETRIC = {re.compile(r"drop-above-(\d+)"): "drop-above-1200"}


def fault(name: str) -> Fault:
    """The named fault (``drop-above-N`` for any N); raises ValueError naming the known."""
    if name in FAULTS:
        return FAULTS[name]
    for pattern, example in _PARAMETRIC.items():
        match = pattern.fullmatch(name)
        if match:
            template = FAULTS[example]
            limit = int(match.group(1))
            return Fault(name, template.does.replace("1200", str(limit)), template.role,
                         template.caught_by, _drop_above(limit))
    raise ValueError(f"unknown fault {name!r} (known: {', '.join(FAULTS)}, drop-above-N)")


def fault_table() -> str:
    """The fault table of scenarios/README.md (a test keeps the two the same)."""
    lines = ["| fault | what the peer does wrong | caught by |", "|---|---|---|"]
    for one in FAULTS.values():
        caught = "; ".join(c.replace("probe:", "probe ") for c in one.caught_by)
        lines.append(f"| `{one.name}` | {one.does} | {caught} |")
    return "\n".join(lines)


def fault_driver(names: str) -> PeerDriver:
    """The peer ``wgref-fault:NAME[+NAME...]``: wgref with those faults installed."""
    faults = [fault(n) for n in names.split("+") if n]
    if not faults:
        raise ValueError(f"{PREFIX} needs a fault name (known: {', '.join(FAULTS)})")

    def command() -> list[str] | None:
        return harness_python("harness.faults", "--fault", ",".join(f.name for f in faults))

    return negative_control(PREFIX + names, command).driver()


def driver_for(name: str) -> PeerDriver | None:
    """The fault peer a name asks for (``wgref-fault:...``), or None for other names."""
    return fault_driver(name[len(PREFIX):]) if name.startswith(PREFIX) else None


def main(argv: list[str]) -> int:
    args = list(argv)
    names: list[str] = []
    while len(args) >= 2 and args[0] == "--fault":
        names += [n for n in args[1].split(",") if n]
        args = args[2:]
    try:
        faults = [fault(n) for n in names]
    except ValueError as exc:
        print(f"harness.faults: {exc}", file=sys.stderr)
        return 2
    for one in faults:
        if one.install is not None:
            one.install()
    print(f"wgref-fault: {', '.join(f'{f.name} ({f.does})' for f in faults) or 'none'}",
          flush=True)
    from wgref.interface import main as interface_main

    return interface_main(args, checks=checks_for(faults))


def checks_for(faults: list[Fault]) -> Checks:
    """The Device's switch for these faults: every defence on but theirs."""
    off = [name for one in faults for name in one.checks_off]
    return Checks.without(*off) if off else ALL_CHECKS


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
