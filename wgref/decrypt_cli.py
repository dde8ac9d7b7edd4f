"""`wgref decrypt`: decode and decrypt a capture's WireGuard frames, print them (a table or
JSON lines), and optionally write the decrypted inner packets or the capture with its key log
embedded. Exit status 0 when everything decoded, 1 when something did not (keys missing or
wrong, a capture cut short), 2 for bad usage."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, TextIO

from .capture import Capture, CaptureError, read_capture
from .decrypt import IP_PROTOCOL_NAMES, TYPE_NAMES, DecodeResult, decode_capture, named
from .export import write_plaintext, write_with_keys
from .keylog import KeyLog, KeyLogError, format_keylog, load_keylog, parse_keylog

__all__ = ["main"]

PROG = "wgref decrypt"


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Decode and decrypt the WireGuard frames of a pcap or pcapng capture "
        "(gzipped too). Keys come from Wireshark key logs (--keylog) and from Decryption "
        "Secrets Blocks embedded in a pcapng file. UDP GSO/GRO super-frames (several "
        "WireGuard messages in one captured datagram, as senders using UDP_SEGMENT produce) "
        "are cut into their messages.",
        epilog="Exit status: 0 when every frame decoded, 1 when some did not (missing or "
        "wrong keys, a capture cut short) or an input cannot be read, 2 for bad usage. "
        "Files written with --write and --write-dsb carry secrets: they are created 0600.",
    )
    parser.add_argument("capture", help="pcap or pcapng file")
    parser.add_argument(
        "--keylog",
        action="append",
        default=[],
        metavar="FILE",
        help="Wireshark WireGuard key log (may be repeated)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help='one JSON object per WireGuard message, with names ("type": "transport", '
        '"ip_proto": "tcp")',
    )
    parser.add_argument(
        "--write",
        metavar="OUT.pcapng",
        help="write the decrypted inner IP packets, one per frame, at the outer frames' "
        "timestamps, each with a comment naming the outer frame and counter",
    )
    parser.add_argument(
        "--write-dsb",
        metavar="OUT.pcapng",
        help="write the capture with one WireGuard message per frame (super-frames cut) and "
        "the key log embedded as a Decryption Secrets Block: Wireshark opens it decrypted",
    )
    return parser


def _load(args: argparse.Namespace) -> tuple[Capture, KeyLog]:
    capture = read_capture(args.capture)
    keylog = parse_keylog(capture.embedded_keylog, f"{args.capture} (embedded secrets)")
    for path in args.keylog:
        try:
            keylog = keylog.merge(load_keylog(path))
        except OSError as exc:
            raise KeyLogError(path, 0, f"cannot read key log ({exc.strerror or exc})") from None
    return capture, keylog


def _error(exc: Exception) -> str:
    if isinstance(exc, KeyLogError) and exc.line == 0:
        return f"{exc.source}: {exc.problem}"
    return str(exc)


def main(argv: list[str], out: TextIO, err: TextIO) -> int:
    args = parser().parse_args(argv)
    try:
        capture, keylog = _load(args)
    except (CaptureError, KeyLogError) as exc:
        err.write(f"{PROG}: {_error(exc)}\n")
        return 1
    result = decode_capture(capture, keylog)
    try:
        if args.json:
            for frame in result.frames:
                out.write(json.dumps(named(frame)) + "\n")
        else:
            _print_table(result, out)
        out.flush()
    except BrokenPipeError:  # `| head`: the reader has what it wanted
        _silence(out)
    status = _report_problems(args.capture, capture, result, keylog, err)
    try:
        if args.write:
            counts = write_plaintext(result, args.write)
            err.write(f"{PROG}: wrote {counts.frames} decrypted inner packets to {args.write}\n")
        if args.write_dsb:
            counts = write_with_keys(args.capture, result, format_keylog(keylog), args.write_dsb)
            err.write(
                f"{PROG}: wrote {counts.frames} frames ({counts.split} super-frames cut) with "
                f"the key log embedded to {args.write_dsb}\n"
            )
    except (OSError, CaptureError) as exc:
        name = getattr(exc, "filename", None)
        reason = getattr(exc, "strerror", None) or exc
        err.write(f"{PROG}: cannot write {name or 'the output'}: {reason}\n")
        return 1
    return status


def _silence(out: TextIO) -> None:
    """Point the process's stdout at /dev/null so the exit flush raises nothing."""
    if out is sys.stdout:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def _report_problems(
    name: str, capture: Capture, result: DecodeResult, keylog: KeyLog, err: TextIO
) -> int:
    status = 0
    if capture.cut_short_after is not None:
        err.write(
            f"{PROG}: {name}: capture cut short after frame {capture.cut_short_after} "
            "(the file ends inside the next record)\n"
        )
        status = 1
    if not result.frames:
        err.write(f"{PROG}: no WireGuard frames found in the capture\n")
        return 1
    if result.failed_handshakes:
        frames = ", ".join(map(str, result.failed_handshakes))
        err.write(
            f"{PROG}: handshake response in frame(s) {frames} did not authenticate: "
            "wrong keys or wrong preshared key\n"
        )
        status = 1
    if result.undecrypted:
        numbers = list(dict.fromkeys(result.undecrypted))
        shown = ", ".join(map(str, numbers[:10])) + ("..." if len(numbers) > 10 else "")
        err.write(
            f"{PROG}: {len(result.undecrypted)} transport message(s) not decrypted "
            f"(frame(s) {shown}): no completed handshake with these keys\n"
        )
        status = 1
    if not (keylog.static_private_keys or keylog.ephemerals):
        err.write(f"{PROG}: no keys given: frames decoded, nothing decrypted\n")
    return status


def _describe(frame: dict[str, Any]) -> str:
    kind = frame["type"]
    if kind == 1:
        text = f"sender={frame['sender_index']}"
        if "initiator_static_pub" in frame:
            text += f" static={frame['initiator_static_pub']} ns={frame['tai64n_nanoseconds']}"
        return text
    if kind == 2:
        text = f"sender={frame['sender_index']} receiver={frame['receiver_index']}"
        if "handshake_ok" in frame:
            text += " handshake ok" if frame["handshake_ok"] else " handshake FAILED"
        return text
    if kind == 3:
        return f"receiver={frame['receiver_index']}"
    text = f"receiver={frame['receiver_index']} counter={frame['counter']}"
    inner = frame.get("inner")
    if inner is None:
        return text + " (not decrypted)"
    if inner["kind"] == "keepalive":
        return text + " keepalive"
    if inner["kind"] == "unknown":
        return text + f" {inner['plaintext_len_padded']} bytes, not IP"
    proto = IP_PROTOCOL_NAMES.get(inner["ip_proto"], f"proto {inner['ip_proto']}")
    detail = f" {inner['src']} -> {inner['dst']} {proto}"
    if "icmp_type" in inner:
        detail += f" type {inner['icmp_type']}"
    if "sport" in inner:
        detail += f" ports {inner['sport']} -> {inner['dport']}"
    return text + detail + f" ({inner['ip_total_len']} bytes)"


def _print_table(result: DecodeResult, out: TextIO) -> None:
    if not result.frames:
        return
    start = result.frames[0]["time"]
    out.write(f"{'frame':>8}  {'time':>10}  {'outer':<44} {'type':<12} details\n")
    for frame in result.frames:
        number = str(frame["frame"])
        if "segment" in frame:  # one message of a GSO super-frame: frame.segment
            number += f".{frame['segment']}"
        out.write(
            f"{number:>8}  {frame['time'] - start:>10.6f}  {frame['outer']:<44} "
            f"{TYPE_NAMES[frame['type']]:<12} {_describe(frame)}\n"
        )
