"""Receive-side replay protection for transport-data counters (WP 5.4.6).

An RFC 6479 sliding window: a ring of 64-bit blocks indexed by ``counter >> 6``. Advancing the
window zeroes only the blocks it moves past; the bitmap as a whole is never shifted.
"""

from typing import Final

from wgref.constants import REJECT_AFTER_MESSAGES

__all__ = [
    "COUNTER_BITS_TOTAL",
    "COUNTER_REDUNDANT_BITS",
    "COUNTER_WINDOW_SIZE",
    "REJECT_AFTER_MESSAGES",
    "ReplayWindow",
]

# Kernel drivers/net/wireguard messages.h / receive.c counter_validate (64-bit values).
COUNTER_BITS_TOTAL: Final = 8192
COUNTER_REDUNDANT_BITS: Final = 64
COUNTER_WINDOW_SIZE: Final = COUNTER_BITS_TOTAL - COUNTER_REDUNDANT_BITS

_BLOCK_SHIFT: Final = 6  # log2(COUNTER_REDUNDANT_BITS)
_BLOCK_BITS_MASK: Final = COUNTER_REDUNDANT_BITS - 1
_BLOCKS: Final = COUNTER_BITS_TOTAL // COUNTER_REDUNDANT_BITS
_BLOCKS_MASK: Final = _BLOCKS - 1


class ReplayWindow:
    """Replay window over the last ``COUNTER_WINDOW_SIZE + 1`` counters (WP 5.4.6).

    With ``top`` the highest counter accepted so far, a counter ``c < top`` is accepted once iff
    ``top - c <= COUNTER_WINDOW_SIZE``. Feed it only counters of authenticated packets.
    """

    __slots__ = ("_bitmap", "_top", "_zeros")

    def __init__(self) -> None:
        self._zeros: Final[list[int]] = [0] * _BLOCKS
        self._bitmap: list[int] = [0] * _BLOCKS
        # A fresh window behaves as top == 0 with no bit set, so counter 0 is accepted once.
        self._top = 0

    def reset(self) -> None:
        self._bitmap[:] = self._zeros
        self._top = 0

    def check_and_update(self, counter: int, limit: int = REJECT_AFTER_MESSAGES) -> bool:
        """Return True and record ``counter`` if new and in range; False otherwise."""
        # WP 6.1: counters at or beyond REJECT_AFTER_MESSAGES are never accepted.
        if not 0 <= counter < limit:
            return False
        top = self._top
        bitmap = self._bitmap
        if counter > top:
            # RFC 6479: zero the blocks between the old top's block and the new one.
            new = counter >> _BLOCK_SHIFT
            diff = new - (top >> _BLOCK_SHIFT)
            if diff:
                if diff == 1:
                    bitmap[new & _BLOCKS_MASK] = 0
                elif diff >= _BLOCKS:
                    bitmap[:] = self._zeros
                else:
                    for i in range(new - diff + 1, new + 1):
                        bitmap[i & _BLOCKS_MASK] = 0
            self._top = counter
        elif top - counter > COUNTER_WINDOW_SIZE:
            return False  # too old: behind the window
        index = (counter >> _BLOCK_SHIFT) & _BLOCKS_MASK
        bit = 1 << (counter & _BLOCK_BITS_MASK)
        block = bitmap[index]
        if block & bit:
            return False  # replay
        bitmap[index] = block | bit
        return True
