"""The `wgref` command line.

    wgref genkey | pubkey | genpsk           like `wg genkey`, `wg pubkey`, `wg genpsk`
    wgref decrypt CAPTURE [--keylog F] [--json] [--write OUT] [--write-dsb OUT]
    wgref [-f|--foreground] IFNAME           a userspace interface, like `wireguard-go IFNAME`
"""

from __future__ import annotations

import os
import stat
import sys
from typing import TextIO

from . import __version__
from .crypto import generate_private_key, generate_psk, key_from_base64, key_to_base64, public_key
from .errors import ConfigError

SUBCOMMANDS = ("genkey", "pubkey", "genpsk", "decrypt", "client", "allowed-ips")

USAGE = """\
usage: wgref [-f|--foreground] [--keylog FILE] INTERFACE-NAME
       wgref genkey | pubkey | genpsk
       wgref decrypt CAPTURE [--keylog FILE]... [--json] [--write OUT.pcapng]
                     [--write-dsb OUT.pcapng]
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


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    out, err = sys.stdout, sys.stderr
    if not args:
        err.write(f"wgref: give an INTERFACE-NAME or a command\n{USAGE}")
        return 2
    if args[0] in ("-h", "--help", "help"):
        out.write(USAGE)
        return 0
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
        try:
            from .decrypt_cli import main as decrypt_main
        except ImportError as exc:
            if exc.name is None or not exc.name.startswith("scapy"):
                raise
            err.write(f"{CAPTURE_EXTRA}\n")
            return 1
        return decrypt_main(args[1:], out, err)
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
