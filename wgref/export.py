"""Write what a capture decode found, as pcapng files other tools read.

- :func:`write_plaintext`: the decrypted inner IP packets, one per frame (link type 101, raw
  IP), each at its outer frame's timestamp with a comment naming the outer frame and counter.
- :func:`write_with_keys`: the capture itself, one WireGuard message per frame (GSO
  super-frames cut into their segments), with the key log in a Decryption Secrets Block so that
  Wireshark and tshark open it decrypted.

Both files carry secrets and are created with mode 0600 (see :mod:`wgref.pcapng`).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

from .capture import LINKTYPE_RAW, WGKL_SECRETS_TYPE, iter_frames, resegment
from .decrypt import DecodedMessage, DecodeResult
from .pcapng import PcapNgWriter

__all__ = ["ExportCounts", "inner_packet", "write_plaintext", "write_with_keys"]


@dataclass(frozen=True)
class ExportCounts:
    frames: int  # frames written
    split: int  # input frames cut into several (GSO super-frames)


def inner_packet(plaintext: bytes) -> bytes | None:
    """The IP packet inside a decrypted transport plaintext, without WireGuard's padding
    (WP 5.4.6: zero-padded to a multiple of 16); None for a keepalive or non-IP data."""
    version = plaintext[0] >> 4 if plaintext else 0
    if version == 4 and len(plaintext) >= 20:
        total = struct.unpack_from(">H", plaintext, 2)[0]
    elif version == 6 and len(plaintext) >= 40:
        total = 40 + struct.unpack_from(">H", plaintext, 4)[0]
    else:
        return None
    return plaintext[:total] if total <= len(plaintext) else None


def _where(message: DecodedMessage) -> str:
    frame = message.frame
    where = f"outer frame {frame['frame']}"
    if message.segments > 1:
        where += f" (segment {frame['segment']} of {frame['segments']})"
    return where


def write_plaintext(result: DecodeResult, path: str | os.PathLike[str]) -> ExportCounts:
    """Write each decrypted transport message's inner IP packet; keepalives have none."""
    written = 0
    with PcapNgWriter(path) as out:
        for message in result.messages:
            packet = inner_packet(message.plaintext) if message.plaintext else None
            if packet is None:
                continue
            frame = message.frame
            comment = (
                f"wgref: {_where(message)}, {frame['outer']}, "
                f"receiver {frame['receiver_index']}, counter {frame['counter']}"
            )
            out.frame(LINKTYPE_RAW, message.datagram.time_ns, packet, comment)
            written += 1
    return ExportCounts(written, 0)


def write_with_keys(
    capture_path: str | os.PathLike[str],
    result: DecodeResult,
    keylog_text: str,
    path: str | os.PathLike[str],
) -> ExportCounts:
    """Copy the capture, every frame in order, cutting each GSO super-frame into one frame per
    message (same link layer and timestamp, lengths and checksums rebuilt), with the key log
    embedded ahead of the frames."""
    written = split = 0
    with PcapNgWriter(path) as out:
        if keylog_text:
            out.secrets(WGKL_SECRETS_TYPE, keylog_text.encode("ascii"))
        for frame in iter_frames(capture_path):
            segments = result.splits.get(frame.number)
            if segments is None:
                out.frame(frame.linktype, frame.time_ns, frame.data, wirelen=frame.wirelen)
                written += 1
                continue
            split += 1
            for index, data in enumerate(resegment(frame, segments), 1):
                comment = (
                    f"wgref: segment {index} of {len(segments)} of frame {frame.number}, "
                    f"a UDP GSO super-frame (segment size {len(segments[0])})"
                )
                out.frame(frame.linktype, frame.time_ns, data, comment)
                written += 1
    return ExportCounts(written, split)
