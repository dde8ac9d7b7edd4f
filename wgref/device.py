"""The sans-I/O WireGuard device: peers, cryptokey routing, sessions and timers.

Theory of operation. The device never touches a socket, a TUN or a clock. The I/O shell calls

* :meth:`Device.receive_datagram` with ``(bytes, source address, now)`` for every UDP datagram,
* :meth:`Device.send_packet` with ``(ip packet, now)`` for every packet read from the tunnel,
* :meth:`Device.handle_timer` with ``now`` whenever :meth:`Device.next_timer` is due,

and each returns a list of actions: :class:`SendDatagram` (write these bytes to that address)
and :class:`Deliver` (write this IP packet to the tunnel); :class:`HandshakeSecrets` appears
only when ``keylog`` is on. ``now`` is any monotonic clock in seconds; wall-clock values
(TAI64N timestamps, last-handshake times) are ``now + epoch_offset``.

Malformed, unauthenticated or unwanted datagrams never raise: they are dropped and counted in
:attr:`Device.dropped` by reason (the reasons of :class:`~wgref.errors.ProtocolError`).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import random
import struct
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag

from .allowedips import AllowedIPs
from .checks import ALL_CHECKS, Checks
from .constants import (
    DEFAULT_MTU,
    KEEPALIVE_TIMEOUT,
    MAX_TIMER_HANDSHAKES,
    MESSAGE_COOKIE_REPLY,
    MESSAGE_INITIATION,
    PADDING_MULTIPLE,
    REJECT_AFTER_MESSAGES,
    REJECT_AFTER_TIME,
    REKEY_AFTER_MESSAGES,
    REKEY_AFTER_TIME,
    REKEY_TIMEOUT,
    REKEY_TIMEOUT_JITTER_MAX,
    TRANSPORT_HEADER_SIZE,
    UNDER_LOAD_THRESHOLD,
    ZERO_KEYS_AFTER,
)
from .cookie import CookieChecker, CookieMaker, LoadMonitor, RateLimiter
from .crypto import clamp, dh, public_key
from .errors import ProtocolError
from .handshake import DerivedKeys, Handshake, HandshakeState
from .keypair import Keypair
from .messages import (
    CookieReply,
    Initiation,
    Response,
    message_type,
    parse,
    transport_header,
    unpack_transport_header,
)
from .noise import open_initiation
from .peer import Address, Peer
from .tai64n import tai64n

log = logging.getLogger("wgref.device")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_NONCE = struct.Struct("<4xQ")


@dataclass(frozen=True, slots=True)
class SendDatagram:
    """Send ``data`` as one UDP datagram to ``destination``."""

    destination: Address
    data: bytes
    peer: Peer | None  # None for a cookie reply to a source we have no peer for


@dataclass(frozen=True, slots=True)
class Deliver:
    """Deliver ``packet`` (an IPv4 or IPv6 packet, padding removed) to the tunnel."""

    packet: bytes
    peer: Peer


@dataclass(frozen=True, slots=True)
class HandshakeSecrets:
    """The secrets of one handshake message we made, for a Wireshark key log."""

    local_static_private: bytes
    remote_static_public: bytes
    local_ephemeral_private: bytes
    preshared_key: bytes | None


Action = SendDatagram | Deliver | HandshakeSecrets


def padded_length(length: int, mtu: int) -> int:
    """WP 5.4.6; kernel send.c calculate_skb_padding: pad to a multiple of 16, capped at the
    MTU; a packet longer than the MTU is padded as if it were ``length % mtu`` long."""
    if mtu <= 0:
        return -(-length // PADDING_MULTIPLE) * PADDING_MULTIPLE
    last_unit = length % mtu if length > mtu else length
    padded = min(mtu, -(-last_unit // PADDING_MULTIPLE) * PADDING_MULTIPLE)
    return length + max(0, padded - last_unit)


def inner_length(packet: bytes) -> int:
    """The length an IP header claims, for trimming padding; raises ProtocolError."""
    if not packet:
        return 0
    version = packet[0] >> 4
    if version == 4 and len(packet) >= 20:
        total = (packet[2] << 8) | packet[3]
        if 20 <= total <= len(packet):
            return total
    elif version == 6 and len(packet) >= 40:
        total = 40 + ((packet[4] << 8) | packet[5])
        if total <= len(packet):
            return total
    raise ProtocolError("bad-inner-packet", "not a whole IPv4/IPv6 packet")


def source_address(packet: bytes) -> bytes:
    return packet[12:16] if packet[0] >> 4 == 4 else packet[8:24]


def destination_address(packet: bytes) -> bytes | None:
    if not packet:
        return None
    version = packet[0] >> 4
    if version == 4 and len(packet) >= 20:
        return packet[16:20]
    if version == 6 and len(packet) >= 40:
        return packet[24:40]
    return None


class RandomIndices:
    """Random 32-bit session indices (WP 5.4.2: I_i is a random 32-bit value)."""

    def __init__(self, rng: Callable[[int], bytes] = os.urandom) -> None:
        self._rng = rng

    def __call__(self, taken: Callable[[int], bool]) -> int:
        while True:
            index: int = int.from_bytes(self._rng(4), "little")
            if not taken(index):
                return index


class Device:
    """A WireGuard interface's protocol state (see the module docstring)."""

    def __init__(
        self,
        private_key: bytes | None = None,
        *,
        mtu: int = DEFAULT_MTU,
        epoch_offset: float = 0.0,
        rng: random.Random | None = None,
        random_bytes: Callable[[int], bytes] = os.urandom,
        index_allocator: Callable[[Callable[[int], bool]], int] | None = None,
        under_load_threshold: int = UNDER_LOAD_THRESHOLD,
        keylog: bool = False,
        checks: Checks = ALL_CHECKS,
    ) -> None:
        self.checks = checks
        self.mtu = mtu
        self.epoch_offset = epoch_offset
        self.keylog = keylog
        self.rng = rng or random.SystemRandom()
        self.random_bytes = random_bytes
        self.allocate_index = index_allocator or RandomIndices(random_bytes)
        self.peers: dict[bytes, Peer] = {}
        self.allowed_ips: AllowedIPs[Peer] = AllowedIPs()
        self.dropped: Counter[str] = Counter()
        self.load = LoadMonitor(threshold=under_load_threshold)
        self.ratelimiter = RateLimiter()
        self._indices: dict[int, tuple[Peer, Keypair | None]] = {}
        self.private_key: bytes | None = None
        self.public_key: bytes | None = None
        self.cookie_checker: CookieChecker | None = None
        if private_key is not None:
            self.set_private_key(private_key)

    # ----------------------------------------------------------------- configuration

    def set_private_key(self, private_key: bytes | None) -> None:
        """Change (or clear) the static key. Peers whose public key equals ours are removed;
        every session is expired for sending so the next packet starts a handshake
        (as `wg set private-key` does)."""
        if private_key is not None:
            private_key = clamp(private_key)
            if private_key == self.private_key:
                return
        self.private_key = private_key
        self.public_key = public_key(private_key) if private_key else None
        self.cookie_checker = (
            CookieChecker.for_static(self.public_key, self.random_bytes)
            if self.public_key
            else None
        )
        for peer in list(self.peers.values()):
            if peer.public_key == self.public_key:
                self.remove_peer(peer.public_key)
                continue
            self._forget_handshake(peer)
            peer.handshake.set_local_static(private_key or b"", self.public_key or b"")
            self._expire_for_sending(peer)

    def add_peer(
        self,
        public_key: bytes,
        *,
        preshared_key: bytes | None = None,
        endpoint: Address | None = None,
        persistent_keepalive: int | None = None,
        allowed_ips: Iterable[Network] = (),
    ) -> Peer:
        """Add a peer, or update an existing one (arguments left as None stay unchanged)."""
        if len(public_key) != 32:
            raise ValueError("a public key is 32 bytes")
        peer = self.peers.get(public_key)
        if peer is None:
            handshake = Handshake(public_key, preshared_key)
            handshake.set_local_static(self.private_key or b"", self.public_key or b"")
            peer = Peer(public_key, handshake, CookieMaker.for_peer(public_key))
            self.peers[public_key] = peer
        elif preshared_key is not None:
            peer.handshake.preshared_key = preshared_key
        if endpoint is not None:
            peer.endpoint = endpoint
        if persistent_keepalive is not None:
            peer.persistent_keepalive = persistent_keepalive
        for network in allowed_ips:
            self.allowed_ips.insert(network, peer)
        return peer

    def remove_peer(self, public_key: bytes) -> None:
        peer = self.peers.pop(public_key, None)
        if peer is None:
            return
        self.allowed_ips.remove_peer(peer)
        self._forget_handshake(peer)
        for keypair in peer.keypairs.clear():
            self._indices.pop(keypair.local_index, None)
        peer.staged.clear()
        peer.timers.clear()

    def set_preshared_key(self, peer: Peer, preshared_key: bytes | None) -> None:
        peer.handshake.preshared_key = preshared_key or bytes(32)

    # ----------------------------------------------------------------- outbound

    def send_packet(self, packet: bytes, now: float) -> list[Action]:
        """Route an IP packet from the tunnel to its peer by destination (WP 3)."""
        destination = destination_address(packet)
        if destination is None:
            self.dropped["bad-outbound-packet"] += 1
            return []
        peer = self.allowed_ips.lookup(destination)
        if peer is None:
            self.dropped["no-route"] += 1
            return []
        peer.staged.append(packet)
        return self._send_staged(peer, now)

    def send_keepalive(self, peer: Peer, now: float) -> list[Action]:
        """Send an empty transport message (starting a handshake if there is no session)."""
        if not peer.staged:
            peer.staged.append(b"")
        return self._send_staged(peer, now)

    def initiate_handshake(self, peer: Peer, now: float, *, force: bool = False) -> list[Action]:
        """Start a handshake now; ``force`` skips the once-per-REKEY_TIMEOUT limit (WP 6.1),
        as an explicit user request (BoringTun's force_resend) may."""
        if force:
            peer.last_sent_handshake = None
        return self._initiate(peer, now, retry=False)

    def _send_staged(self, peer: Peer, now: float) -> list[Action]:
        keypair = peer.keypairs.current
        if keypair is None or not keypair.can_send(now) or peer.endpoint is None:
            return self._initiate(peer, now, retry=False)
        actions: list[Action] = []
        endpoint = peer.endpoint
        sent_data = False
        mtu = self.mtu
        header = transport_header
        sender = keypair.sender
        while peer.staged:
            packet = peer.staged.popleft()
            if keypair.send_counter >= REJECT_AFTER_MESSAGES:
                peer.staged.appendleft(packet)
                break
            size = len(packet)
            if size:
                sent_data = True
                padded = padded_length(size, mtu)
                if padded != size:
                    packet += bytes(padded - size)
            counter = keypair.next_counter()
            data = header(keypair.remote_index, counter) + sender.encrypt(
                _NONCE.pack(counter), packet, None
            )
            peer.tx_bytes += len(data)
            actions.append(SendDatagram(endpoint, data, peer))
        if actions:
            self._timers_authenticated_sent(peer, now)
            # Kernel timers.c wg_timers_data_sent.
            if sent_data and peer.timers.new_handshake is None:
                peer.timers.new_handshake = now + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT + self._jitter()
        # WP 6.2: rekey on message count (both sides) or age (initiator only).
        # Packets left staged (the keypair ran out of counters) also need a new session.
        if (
            keypair.send_counter > REKEY_AFTER_MESSAGES
            or (keypair.is_initiator and now - keypair.created > REKEY_AFTER_TIME)
            or peer.staged
        ):
            actions += self._initiate(peer, now, retry=False)
        return actions

    def _dh(self, private_key: bytes, public: bytes) -> bytes:
        try:
            return dh(private_key, public)
        except ProtocolError:
            if self.checks.low_order:
                raise
            return bytes(32)

    def _jitter(self) -> float:
        return self.rng.uniform(0.0, REKEY_TIMEOUT_JITTER_MAX)

    def _initiate(self, peer: Peer, now: float, *, retry: bool) -> list[Action]:
        """Send a handshake initiation, at most once per REKEY_TIMEOUT (WP 6.1)."""
        if not retry:
            peer.handshake_attempts = 0
        if self.private_key is None or not peer.handshake.usable or peer.endpoint is None:
            return []
        if peer.last_sent_handshake is not None and (
            now - peer.last_sent_handshake < REKEY_TIMEOUT
        ):
            return []
        self._forget_handshake(peer)
        index = self.allocate_index(self._indices.__contains__)
        ephemeral = clamp(self.random_bytes(32))
        message = peer.handshake.create_initiation(
            index, ephemeral, tai64n(now + self.epoch_offset)
        )
        self._indices[index] = (peer, None)
        data = peer.cookie.add_macs(message.to_bytes()[:116], now)
        peer.last_sent_handshake = now
        peer.initiation_sent_at = now
        peer.tx_bytes += len(data)
        # Kernel timers.c wg_timers_handshake_initiated.
        peer.timers.retransmit_handshake = now + REKEY_TIMEOUT + self._jitter()
        self._timers_authenticated_sent(peer, now)
        log.debug("%r - Sending handshake initiation", peer)
        actions: list[Action] = [SendDatagram(peer.endpoint, data, peer)]
        if self.keylog:
            actions.append(self._secrets(peer, ephemeral))
        return actions

    def _secrets(self, peer: Peer, ephemeral: bytes) -> HandshakeSecrets:
        assert self.private_key is not None
        return HandshakeSecrets(self.private_key, peer.public_key, ephemeral, peer.preshared_key)

    # ----------------------------------------------------------------- inbound

    def receive_datagram(self, data: bytes, source: Address, now: float) -> list[Action]:
        """Process one UDP datagram; never raises for bad input (drops and counts it)."""
        try:
            if not self.checks.reserved and len(data) >= 4:
                data = data[:1] + bytes(3) + data[4:]
            kind = message_type(data)
            if kind == 4:
                return self._receive_transport(data, source, now)
            if self.private_key is None or self.cookie_checker is None:
                raise ProtocolError("no-private-key", "interface has no private key")
            if kind == MESSAGE_COOKIE_REPLY:
                return self._receive_cookie_reply(data, now)
            return self._receive_handshake(kind, data, source, now)
        except ProtocolError as exc:
            self.dropped[exc.reason] += 1
            log.debug("dropped datagram from %s: %s", source, exc)
            return []

    def _receive_handshake(
        self, kind: int, data: bytes, source: Address, now: float
    ) -> list[Action]:
        checker = self.cookie_checker
        assert checker is not None
        # WP 5.3 and kernel receive.c: mac1 first; under load, mac2 or a cookie reply, then
        # a per-source token bucket.
        if self.checks.mac1 and not checker.check_mac1(data):
            raise ProtocolError("bad-mac1", "mac1 is not for our public key")
        if self.load.record_handshake(now) and self.checks.cookie_replies:
            if not checker.check_mac2(data, source, now):
                reply = checker.make_reply(data, source, now)
                self.dropped["cookie-sent"] += 1
                return [SendDatagram(source, reply.to_bytes(), None)]
            if not self.ratelimiter.allow(source[0], now):
                raise ProtocolError("ratelimited", f"too many handshakes from {source[0]}")
        if kind == MESSAGE_INITIATION:
            message = parse(data)
            assert isinstance(message, Initiation)
            return self._receive_initiation(message, len(data), source, now)
        message2 = parse(data)
        assert isinstance(message2, Response)
        return self._receive_response(message2, len(data), source, now)

    def _static_static(self, initiator_static: bytes) -> bytes:
        peer = self.peers.get(initiator_static)
        if peer is None:
            raise ProtocolError("unknown-peer", "initiation from a key we do not know")
        if peer.handshake.static_static is None:
            raise ProtocolError("low-order-key", "peer key gives an all-zero shared secret")
        return peer.handshake.static_static

    def _receive_initiation(
        self, message: Initiation, size: int, source: Address, now: float
    ) -> list[Action]:
        assert self.private_key is not None and self.public_key is not None
        opened = open_initiation(
            message,
            self.public_key,
            self._dh(self.private_key, message.ephemeral),
            self._static_static,
        )
        peer = self.peers[opened.initiator_static]
        peer.handshake.consume_initiation(
            opened, message.sender, now, check_timestamp=self.checks.timestamp
        )
        self._free_handshake_index(peer)  # an initiation of ours in flight is abandoned
        peer.endpoint = source  # WP 6.5: roam to the source of an authenticated message
        peer.rx_bytes += size
        self._timers_authenticated_received(peer, now)
        # Respond at once (WP 5.4.3) and derive the responder's keypair, kept as "next".
        index = self.allocate_index(self._indices.__contains__)
        ephemeral = clamp(self.random_bytes(32))
        response = peer.handshake.create_response(index, ephemeral, dh=self._dh)
        data = peer.cookie.add_macs(response.to_bytes()[:60], now)
        self._install_keypair(peer, peer.handshake.derive_keys(is_initiator=False), now)
        # Kernel send.c: a response also counts as a handshake sent, so a responder does not
        # start its own initiation within REKEY_TIMEOUT while the initiator confirms.
        peer.last_sent_handshake = now
        peer.tx_bytes += len(data)
        self._timers_authenticated_sent(peer, now)
        log.debug("%r - Received handshake initiation, sending response", peer)
        actions: list[Action] = [SendDatagram(source, data, peer)]
        if self.keylog:
            actions.append(self._secrets(peer, ephemeral))
        return actions

    def _receive_response(
        self, message: Response, size: int, source: Address, now: float
    ) -> list[Action]:
        entry = self._indices.get(message.receiver)
        if entry is None or entry[1] is not None:
            raise ProtocolError("unknown-index", f"response to index {message.receiver:08x}")
        peer = entry[0]
        peer.handshake.consume_response(message)
        self._indices.pop(message.receiver, None)
        self._install_keypair(peer, peer.handshake.derive_keys(is_initiator=True), now)
        peer.endpoint = source
        peer.rx_bytes += size
        if peer.initiation_sent_at is not None:
            peer.rtt = now - peer.initiation_sent_at
        self._handshake_complete(peer, now)
        self._timers_authenticated_received(peer, now)
        log.debug("%r - Received handshake response", peer)
        # WP 6.4 / kernel: the initiator confirms the session with data, or a keepalive.
        return self.send_keepalive(peer, now)

    def _receive_cookie_reply(self, data: bytes, now: float) -> list[Action]:
        message = parse(data)
        assert isinstance(message, CookieReply)
        entry = self._indices.get(message.receiver)
        if entry is None:
            raise ProtocolError("unknown-index", "cookie reply for an unknown index")
        # WP 6.6: store the cookie; the retransmit timer sends the next initiation.
        entry[0].cookie.consume_reply(message, now)
        return []

    def _receive_transport(self, data: bytes, source: Address, now: float) -> list[Action]:
        receiver, counter = unpack_transport_header(data)
        entry = self._indices.get(receiver)
        keypair = None if entry is None else entry[1]
        if entry is None or keypair is None:
            raise ProtocolError("unknown-index", f"transport for index {receiver:08x}")
        peer = entry[0]
        if not keypair.can_receive(now) or counter >= REJECT_AFTER_MESSAGES:
            raise ProtocolError("expired-keypair", "session too old to receive on")
        try:
            plaintext = keypair.receiver.decrypt(
                _NONCE.pack(counter), data[TRANSPORT_HEADER_SIZE:], None
            )
        except InvalidTag:
            raise ProtocolError("decrypt-failed", "transport does not authenticate") from None
        # WP 5.4.6: the replay window is checked after authentication.
        if self.checks.replay and not keypair.replay.check_and_update(
            counter, REJECT_AFTER_MESSAGES
        ):
            raise ProtocolError("replay", f"counter {counter} already seen or too old")
        keypair.receive_count += 1
        if counter > keypair.receive_top:
            keypair.receive_top = counter
        actions: list[Action] = []
        if keypair is peer.keypairs.next:
            for old in peer.keypairs.confirm_next(keypair):
                self._indices.pop(old.local_index, None)
            self._handshake_complete(peer, now)
            actions += self._send_staged_if_any(peer, now)
        if self.checks.roaming:
            peer.endpoint = source  # WP 6.5: roaming, on authenticated packets only
        peer.rx_bytes += len(data)
        self._timers_authenticated_received(peer, now)
        # WP 6.2: the initiator rekeys when the session nears REJECT_AFTER_TIME.
        if (
            keypair.is_initiator
            and keypair is peer.keypairs.current
            and now - keypair.created
            > REJECT_AFTER_TIME - KEEPALIVE_TIMEOUT - REKEY_TIMEOUT
        ):
            actions += self._initiate(peer, now, retry=False)
        if not plaintext:
            return actions  # a keepalive
        # Kernel timers.c wg_timers_data_received.
        if peer.timers.send_keepalive is None:
            peer.timers.send_keepalive = now + KEEPALIVE_TIMEOUT
        else:
            peer.need_another_keepalive = True
        length = inner_length(plaintext)
        packet = plaintext[:length]
        # WP 3: cryptokey routing on receive, the inner source must belong to this peer.
        owner = self.allowed_ips.lookup(source_address(packet))
        if self.checks.crypto_routing and owner is not peer:
            self.dropped["crypto-rp"] += 1
            return actions
        actions.append(Deliver(packet, peer))
        return actions

    def _send_staged_if_any(self, peer: Peer, now: float) -> list[Action]:
        return self._send_staged(peer, now) if peer.staged else []

    # ----------------------------------------------------------------- sessions

    def _install_keypair(self, peer: Peer, keys: DerivedKeys, now: float) -> None:
        keypair = Keypair(
            keys.send_key,
            keys.receive_key,
            now,
            keys.is_initiator,
            keys.local_index,
            keys.remote_index,
        )
        for old in peer.keypairs.install(keypair):
            self._indices.pop(old.local_index, None)
        self._indices[keypair.local_index] = (peer, keypair)
        # Kernel timers.c wg_timers_session_derived.
        peer.timers.zero_key_material = now + ZERO_KEYS_AFTER

    def _handshake_complete(self, peer: Peer, now: float) -> None:
        # Kernel timers.c wg_timers_handshake_complete.
        peer.timers.retransmit_handshake = None
        peer.handshake_attempts = 0
        peer.last_handshake = now + self.epoch_offset

    def _free_handshake_index(self, peer: Peer) -> None:
        """Free the index of a handshake in flight (not of an installed keypair)."""
        entry = self._indices.get(peer.handshake.local_index)
        if entry is not None and entry[1] is None and entry[0] is peer:
            del self._indices[peer.handshake.local_index]

    def _forget_handshake(self, peer: Peer) -> None:
        self._free_handshake_index(peer)
        peer.handshake.clear()

    def _expire_for_sending(self, peer: Peer) -> None:
        for keypair in (peer.keypairs.current, peer.keypairs.next):
            if keypair is not None:
                keypair.send_counter = REJECT_AFTER_MESSAGES
        peer.last_sent_handshake = None

    # ----------------------------------------------------------------- timers

    def _timers_authenticated_sent(self, peer: Peer, now: float) -> None:
        # Kernel timers.c: any_authenticated_packet_sent + _traversal.
        peer.timers.send_keepalive = None
        if peer.persistent_keepalive:
            peer.timers.persistent_keepalive = now + peer.persistent_keepalive

    def _timers_authenticated_received(self, peer: Peer, now: float) -> None:
        # Kernel timers.c: any_authenticated_packet_received + _traversal.
        peer.timers.new_handshake = None
        if peer.persistent_keepalive:
            peer.timers.persistent_keepalive = now + peer.persistent_keepalive

    def next_timer(self) -> float | None:
        """The earliest deadline over all peers, or None."""
        deadlines = [t for peer in self.peers.values() if (t := peer.timers.earliest()) is not None]
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> list[Action]:
        """Run every timer that is due at ``now`` (WP 6)."""
        actions: list[Action] = []
        for peer in list(self.peers.values()):
            actions += self._peer_timers(peer, now)
        return actions

    def _peer_timers(self, peer: Peer, now: float) -> list[Action]:
        timers = peer.timers
        actions: list[Action] = []
        if timers.retransmit_handshake is not None and timers.retransmit_handshake <= now:
            timers.retransmit_handshake = None
            if peer.handshake_attempts > MAX_TIMER_HANDSHAKES:
                # WP 6.4: give up after REKEY_ATTEMPT_TIME; forget queued packets.
                log.debug("%r - Handshake did not complete, giving up", peer)
                peer.staged.clear()
                timers.send_keepalive = None
                self._forget_handshake(peer)
                if timers.zero_key_material is None:
                    timers.zero_key_material = now + ZERO_KEYS_AFTER
            else:
                peer.handshake_attempts += 1
                log.debug("%r - Handshake did not complete, retrying", peer)
                actions += self._initiate(peer, now, retry=True)
        if timers.send_keepalive is not None and timers.send_keepalive <= now:
            timers.send_keepalive = None
            keypair = peer.keypairs.current
            if keypair is not None and keypair.can_send(now):
                actions += self.send_keepalive(peer, now)
            if peer.need_another_keepalive:
                peer.need_another_keepalive = False
                timers.send_keepalive = now + KEEPALIVE_TIMEOUT
        if timers.new_handshake is not None and timers.new_handshake <= now:
            timers.new_handshake = None
            log.debug("%r - No reply to data, starting a new handshake", peer)
            actions += self._initiate(peer, now, retry=False)
        if timers.zero_key_material is not None and timers.zero_key_material <= now:
            timers.zero_key_material = None
            log.debug("%r - Zeroing all keys", peer)
            for keypair in peer.keypairs.clear():
                self._indices.pop(keypair.local_index, None)
            self._forget_handshake(peer)
        if timers.persistent_keepalive is not None and timers.persistent_keepalive <= now:
            timers.persistent_keepalive = None
            if peer.persistent_keepalive and self.checks.persistent_keepalive:
                actions += self.send_keepalive(peer, now)
        return actions


__all__ = [
    "Action",
    "Deliver",
    "Device",
    "HandshakeSecrets",
    "HandshakeState",
    "SendDatagram",
    "padded_length",
]
