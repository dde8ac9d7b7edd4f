"""TAI64N timestamps (WP 5.1) in the kernel's encoding.

Kernel noise.c ``tai64n_now``: seconds = 0x400000000000000a + Unix seconds (2^62 plus the 10 s
TAI-UTC offset of 1972), nanoseconds rounded down to a multiple of
rounddown_pow_of_two(NSEC_PER_SEC / INITIATIONS_PER_SECOND) = 2^24 ns, so that the timestamp
does not leak fine-grained clock information ("whitening").
"""

from __future__ import annotations

import struct

from .constants import TAI64N_LEN

TAI64_EPOCH = 0x400000000000000A
WHITENING_MASK = (1 << 24) - 1
_TAI64N = struct.Struct(">QI")


def tai64n(unix_time: float, whiten: bool = True) -> bytes:
    """The 12-byte big-endian TAI64N label of a Unix time."""
    seconds = int(unix_time // 1)
    nanoseconds = round((unix_time - seconds) * 1e9)
    if nanoseconds >= 1_000_000_000:
        seconds, nanoseconds = seconds + 1, nanoseconds - 1_000_000_000
    if whiten:
        nanoseconds &= ~WHITENING_MASK
    return _TAI64N.pack(TAI64_EPOCH + seconds, nanoseconds)


def decode_tai64n(label: bytes) -> tuple[int, int]:
    """(seconds since 1970 TAI, nanoseconds) of a 12-byte TAI64N label (seconds minus 2^62)."""
    if len(label) != TAI64N_LEN:
        raise ValueError(f"TAI64N is {TAI64N_LEN} bytes, got {len(label)}")
    seconds, nanoseconds = _TAI64N.unpack(label)
    return seconds - (1 << 62), nanoseconds
