"""One peer's handshake state machine (WP 5.4.2-5.4.5, 5.1).

States follow the order of the Noise messages::

    ZEROED --create_initiation--> CREATED_INITIATION --consume_response--> (keys derived) ZEROED
    ZEROED --consume_initiation--> CONSUMED_INITIATION --create_response--> (keys derived) ZEROED

A new initiation may replace any state (either side may start over at any time).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from .constants import INITIATIONS_PER_SECOND, TAI64N_LEN
from .crypto import dh
from .errors import ProtocolError
from .messages import Initiation, Response
from .noise import (
    ZERO_PSK,
    OpenedInitiation,
    SymmetricState,
    build_initiation,
    build_response,
    open_response,
)
from .results import DropReason


class HandshakeState(enum.Enum):
    ZEROED = "zeroed"
    CREATED_INITIATION = "created initiation"
    CONSUMED_INITIATION = "consumed initiation"


@dataclass(slots=True)
class DerivedKeys:
    send_key: bytes
    receive_key: bytes
    is_initiator: bool
    local_index: int
    remote_index: int


class Handshake:
    """The handshake with one remote static key."""

    def __init__(self, remote_static: bytes, preshared_key: bytes | None = None) -> None:
        self.remote_static = remote_static
        self.preshared_key = preshared_key or ZERO_PSK
        self.static_static: bytes | None = None  # DH(S_local, S_remote), precomputed
        self.local_static_private = b""
        self.local_static_public = b""
        self.state = HandshakeState.ZEROED
        self.local_index = 0
        self.remote_index = 0
        self.ephemeral_private = b""
        self.remote_ephemeral = b""
        self.symmetric: SymmetricState | None = None
        # WP 5.1: greatest TAI64N received; kernel noise.c: last initiation consumption time.
        self.latest_timestamp = bytes(TAI64N_LEN)
        self.last_initiation_consumption: float | None = None

    def set_local_static(self, private_key: bytes, public_key: bytes) -> None:
        """Precompute DH(S_local, S_remote). A low-order remote key leaves it None: such a
        peer can never complete a handshake (kernel noise.c rejects all-zero DH)."""
        self.local_static_private, self.local_static_public = private_key, public_key
        try:
            self.static_static = dh(private_key, self.remote_static) if private_key else None
        except ProtocolError:
            self.static_static = None
        self.clear()

    @property
    def usable(self) -> bool:
        return self.static_static is not None

    def clear(self) -> None:
        self.state = HandshakeState.ZEROED
        self.ephemeral_private = b""
        self.remote_ephemeral = b""
        self.symmetric = None

    def create_initiation(
        self, local_index: int, ephemeral_private: bytes, timestamp: bytes
    ) -> Initiation:
        if self.static_static is None:
            raise ProtocolError(DropReason.LOW_ORDER_KEY, "all-zero static-static secret")
        message, state = build_initiation(
            sender=local_index,
            local_static_public=self.local_static_public,
            remote_static=self.remote_static,
            static_static=self.static_static,
            ephemeral_private=ephemeral_private,
            timestamp=timestamp,
        )
        self.state = HandshakeState.CREATED_INITIATION
        self.symmetric = state
        self.ephemeral_private = ephemeral_private
        self.local_index = local_index
        return message

    def consume_initiation(
        self, opened: OpenedInitiation, sender: int, now: float, *, check_timestamp: bool = True
    ) -> None:
        """Accept an authenticated initiation unless it is a replay or a flood (WP 5.1;
        kernel noise.c: timestamp must be strictly greater, and at most one initiation per
        1/INITIATIONS_PER_SECOND). ``check_timestamp=False`` is Checks.timestamp off."""
        if not check_timestamp:
            pass
        elif opened.timestamp <= self.latest_timestamp:
            raise ProtocolError(DropReason.REPLAYED_INITIATION, "timestamp not newer")
        elif (
            self.last_initiation_consumption is not None
            and now - self.last_initiation_consumption < 1.0 / INITIATIONS_PER_SECOND
        ):
            raise ProtocolError(DropReason.INITIATION_FLOOD, "initiations less than 20 ms apart")
        self.latest_timestamp = opened.timestamp
        self.last_initiation_consumption = now
        self.state = HandshakeState.CONSUMED_INITIATION
        self.symmetric = opened.state
        self.remote_ephemeral = opened.initiator_ephemeral
        self.remote_index = sender

    def create_response(
        self,
        local_index: int,
        ephemeral_private: bytes,
        *,
        dh: Callable[[bytes, bytes], bytes] = dh,
    ) -> Response:
        if self.state is not HandshakeState.CONSUMED_INITIATION or self.symmetric is None:
            raise ProtocolError(DropReason.NO_HANDSHAKE, "no initiation to respond to")
        message = build_response(
            sender=local_index,
            receiver=self.remote_index,
            state=self.symmetric,
            initiator_ephemeral=self.remote_ephemeral,
            initiator_static=self.remote_static,
            ephemeral_private=ephemeral_private,
            preshared_key=self.preshared_key,
            dh=dh,
        )
        self.ephemeral_private = ephemeral_private
        self.local_index = local_index
        return message

    def consume_response(self, message: Response) -> None:
        if self.state is not HandshakeState.CREATED_INITIATION or self.symmetric is None:
            raise ProtocolError(DropReason.NO_HANDSHAKE, "response without an initiation in flight")
        self.symmetric = open_response(
            message,
            self.symmetric,
            dh_ee=dh(self.ephemeral_private, message.ephemeral),
            dh_se=dh(self.local_static_private, message.ephemeral),
            preshared_key=self.preshared_key,
        )
        self.remote_index = message.sender

    def derive_keys(self, is_initiator: bool) -> DerivedKeys:
        """WP 5.4.5: split the chaining key; then forget all handshake state."""
        assert self.symmetric is not None
        first, second = self.symmetric.split()
        send, receive = (first, second) if is_initiator else (second, first)
        keys = DerivedKeys(send, receive, is_initiator, self.local_index, self.remote_index)
        self.clear()
        return keys
