"""The `wgref` command line.

    wgref genkey | pubkey | genpsk           like `wg genkey`, `wg pubkey`, `wg genpsk`
    wgref decrypt CAPTURE [--keylog F] [--json]
    wgref [-f|--foreground] IFNAME           a userspace interface, like `wireguard-go IFNAME`
"""

from __future__ import annotations

import argparse
import json
import os
import stat
import sys
from typing import TYPE_CHECKING, Any, TextIO

from . import __version__
from .crypto import generate_private_key, generate_psk, key_from_base64, key_to_base64, public_key
from .errors import ConfigError

if TYPE_CHECKING:  # decrypt's modules need scapy (the `capture` extra): imported when used
    from .decrypt import DecodeResult
    from .keylog import KeyLog

SUBCOMMANDS = ("genkey", "pubkey", "genpsk", "decrypt", "client", "allowed-ips")

USAGE = """\
usage: wgref [-f|--foreground] [--keylog FILE] INTERFACE-NAME
       wgref genkey | pubkey | genpsk
       wgref decrypt CAPTURE [--keylog FILE]... [--json]
       wgref client CONFIG.conf [--foreground] | --status | --cleanup
       wgref allowed-ips --allowed PREFIXES --disallowed PREFIXES
       wgref --version | --help

  INTERFACE-NAME   create a userspace WireGuard interface, configured with `wg`
                   (the socket is /var/run/wireguard/INTERFACE-NAME.sock)
  genkey           print a new private key (base64)
  pubkey           read a private key on stdin, print its public key
  genpsk           print a new preshared key
  decrypt          decode and decrypt the WireGuard frames of a pcap/pcapng capture
  client           the transparent client: no virtual adapter, per-application tunnelling
  allowed-ips      print AllowedIPs equal to allowed minus disallowed prefixes
  --keylog FILE    (interface) append a Wireshark key log of every handshake, mode 0600

environment:
  LOG_LEVEL        verbose | error | silent, as wireguard-go (debug = verbose; default error;
                   `wgref client` also takes info, its default)
  WG_KEYLOG_FILE   like --keylog
"""

CAPTURE_EXTRA = "wgref decrypt needs scapy: pip install 'wgref[capture]' (or '.[capture]')"
WORLD_ACCESSIBLE = (
    "Warning: writing to world accessible file.\n"
    "Consider setting the umask to 077 and trying again.\n"
)


def _warn_if_world_accessible(out: TextIO, err: TextIO) -> None:
    """What wg(8) does before printing a secret key: warn when stdout is a regular file that
    others may read (wg's genkey.c checks S_IRWXO)."""
    try:
        mode = os.fstat(out.fileno()).st_mode
    except (OSError, ValueError, AttributeError):
        return  # not a real file (a pipe wrapper, a StringIO)
    if stat.S_ISREG(mode) and mode & stat.S_IRWXO:
        err.write(WORLD_ACCESSIBLE)


def _genkey(out: TextIO, err: TextIO) -> int:
    _warn_if_world_accessible(out, err)
    out.write(key_to_base64(generate_private_key()) + "\n")
    return 0


def _genpsk(out: TextIO, err: TextIO) -> int:
    _warn_if_world_accessible(out, err)
    out.write(key_to_base64(generate_psk()) + "\n")
    return 0


def _pubkey(stdin: TextIO, out: TextIO, err: TextIO) -> int:
    try:
        private = key_from_base64(stdin.read(), "private key")
    except ConfigError:
        err.write("wgref: Key is not the correct length or format\n")
        return 1
    out.write(key_to_base64(public_key(private)) + "\n")
    return 0


def _decrypt_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wgref decrypt",
        description="Decode and decrypt the WireGuard frames of a pcap or pcapng capture. "
        "Keys come from Wireshark key logs (--keylog) and from Decryption Secrets Blocks "
        "embedded in a pcapng file.",
    )
    parser.add_argument("capture", help="pcap or pcapng file")
    parser.add_argument(
        "--keylog",
        action="append",
        default=[],
        metavar="FILE",
        help="Wireshark WireGuard key log (may be repeated)",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per frame")
    return parser


def _decrypt(argv: list[str], out: TextIO, err: TextIO) -> int:
    args = _decrypt_parser().parse_args(argv)
    try:
        from .capture import CaptureError, read_capture
        from .decrypt import decode_capture
        from .keylog import KeyLogError, load_keylog, parse_keylog
    except ImportError as exc:
        if exc.name is None or not exc.name.startswith("scapy"):
            raise
        err.write(f"{CAPTURE_EXTRA}\n")
        return 1
    try:
        capture = read_capture(args.capture)
        keylog = parse_keylog(capture.embedded_keylog, f"{args.capture} (embedded secrets)")
        for path in args.keylog:
            keylog = keylog.merge(load_keylog(path))
    except (CaptureError, KeyLogError, OSError) as exc:
        err.write(f"wgref decrypt: {exc}\n")
        return 1
    result = decode_capture(capture, keylog)
    if args.json:
        for frame in result.frames:
            out.write(json.dumps(frame) + "\n")
    else:
        _print_table(result, out)
    return _report_problems(result, keylog, err)


def _report_problems(result: DecodeResult, keylog: KeyLog, err: TextIO) -> int:
    status = 0
    if not result.frames:
        err.write("wgref decrypt: no WireGuard frames found in the capture\n")
        return 1
    if result.failed_handshakes:
        frames = ", ".join(map(str, result.failed_handshakes))
        err.write(
            f"wgref decrypt: handshake response in frame(s) {frames} did not authenticate: "
            "wrong keys or wrong preshared key\n"
        )
        status = 1
    if result.undecrypted:
        shown = ", ".join(map(str, result.undecrypted[:10]))
        more = "..." if len(result.undecrypted) > 10 else ""
        err.write(
            f"wgref decrypt: {len(result.undecrypted)} transport frame(s) not decrypted "
            f"({shown}{more}): no completed handshake with these keys\n"
        )
        status = 1
    if not (keylog.static_private_keys or keylog.ephemerals):
        err.write("wgref decrypt: no keys given: frames decoded, nothing decrypted\n")
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
    detail = f" {inner['src']} -> {inner['dst']} proto {inner['ip_proto']}"
    if "icmp_type" in inner:
        detail += f" icmp type {inner['icmp_type']}"
    if "sport" in inner:
        detail += f" ports {inner['sport']} -> {inner['dport']}"
    return text + detail + f" ({inner['ip_total_len']} bytes)"


def _print_table(result: DecodeResult, out: TextIO) -> None:
    from .decrypt import TYPE_NAMES

    if not result.frames:
        return
    start = result.frames[0]["time"]
    out.write(f"{'frame':>5}  {'time':>10}  {'outer':<44} {'type':<12} details\n")
    for frame in result.frames:
        out.write(
            f"{frame['frame']:>5}  {frame['time'] - start:>10.6f}  {frame['outer']:<44} "
            f"{TYPE_NAMES[frame['type']]:<12} {_describe(frame)}\n"
        )


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    out, err = sys.stdout, sys.stderr
    if not args or args[0] in ("-h", "--help", "help"):
        (out if args else err).write(USAGE)
        return 0 if args else 2
    if args[0] in ("-v", "--version", "version"):
        out.write(f"wgref v{__version__}\n\nUserspace WireGuard in Python (clean-room).\n")
        return 0
    command = args[0]
    if command in ("genkey", "genpsk", "pubkey") and len(args) > 1:
        err.write(f"wgref {command}: unexpected argument {args[1]}\nUsage: wgref {command}\n")
        return 1
    if command == "genkey":
        return _genkey(out, err)
    if command == "genpsk":
        return _genpsk(out, err)
    if command == "pubkey":
        return _pubkey(sys.stdin, out, err)
    if command == "decrypt":
        return _decrypt(args[1:], out, err)
    if command == "client":
        from .client import main as client_main

        status: int = client_main(args[1:])
        return status
    if command == "allowed-ips":
        from .allowedips_calc import main as calc_main

        status = calc_main(args[1:])
        return status
    from .interface import main as interface_main

    status = interface_main(args)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
