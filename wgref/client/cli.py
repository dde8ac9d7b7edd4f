"""``wgref client``: the command line of the transparent client."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from .. import __version__, eventloop, loglevel
from . import cgroup, conntrack, nft, sink, status
from .config import ClientConfigError, load
from .run import DEFAULT_QUEUE, Client

log = logging.getLogger("wgref.client")

LEVELS = {**loglevel.LEVELS, "info": logging.INFO}


def setup_logging(name: str) -> None:
    """The shared logging setup, with the client's default level (info)."""
    eventloop.setup_logging(name, "info", LEVELS)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wgref client",
        description="The transparent WireGuard client: no virtual adapter, nftables + NFQUEUE "
        "interception, per-application split tunnelling.",
        epilog=f"Also: {EXEC_USAGE} (start a program whose every flow is tunnelled).",
    )
    parser.add_argument("config", nargs="?", help="a wg-quick style CONFIG.conf")
    parser.add_argument("-f", "--foreground", action="store_true",
                        help="stay in the foreground (default: fork once the client is up)")
    parser.add_argument("--status", action="store_true",
                        help="print the running client's status (handshake, bytes, loss, rtt)")
    parser.add_argument("--json", action="store_true", help="with --status: print JSON")
    parser.add_argument("--cleanup", action="store_true",
                        help="remove what a crash or kill -9 left: the client's nftables "
                        "tables (also turns a kill switch off), its discard device, status "
                        "sockets nobody answers on, the client's conntrack marks")
    parser.add_argument("--socket", help="the status socket (default /run/wgref/client-NAME.sock)")
    parser.add_argument("--queue", type=int, default=DEFAULT_QUEUE,
                        help=f"the NFQUEUE numbers: N for TCP, N+1 for the rest (default "
                        f"{DEFAULT_QUEUE})")
    parser.add_argument("--forward", action="store_true",
                        help="also tunnel packets routed through this host (hotspot case)")
    parser.add_argument("--kill-switch", action="store_true",
                        help="while the client is down, block new flows to the tunnelled "
                        "destinations instead of letting them go direct")
    parser.add_argument("--no-discard-device", action="store_true",
                        help="queue every packet of tunnelled TCP connections and UDP flows "
                        f"too, rather than route them to the discard devices "
                        f"{' and '.join(sink.DEVICES)} and read them there (see README)")
    parser.add_argument("--check", action="store_true", help="only check the config")
    parser.add_argument("--version", action="version", version=f"wgref v{__version__}")
    return parser


def _status(args: argparse.Namespace) -> int:
    path = args.socket or (status.socket_path(args.config) if args.config else None)
    if path is None:
        try:
            names = sorted(n for n in os.listdir(status.STATUS_DIR) if n.startswith("client-"))
        except OSError:
            names = []
        if len(names) != 1:
            sys.stderr.write("wgref client --status: name the config (or --socket): "
                             f"{len(names)} clients found\n")
            return 1
        path = os.path.join(status.STATUS_DIR, names[0])
    try:
        document = status.query(path)
    except (OSError, ValueError) as exc:
        sys.stderr.write(f"wgref client --status: {path}: {exc} (is the client running?)\n")
        return 1
    sys.stdout.write(json.dumps(document, indent=1) + "\n" if args.json
                     else status.render(document))
    return 0


def _cleanup(args: argparse.Namespace) -> int:
    """What a crash or kill -9 leaves: the tables, the discard device, status sockets nobody
    answers on, and the client's conntrack marks."""
    tables = nft.present()
    try:
        nft.remove()
    except nft.NftError as exc:
        sys.stderr.write(f"wgref client --cleanup: {exc}\n")
        return 1
    removed = list(tables)
    if sink.present():
        try:
            sink.remove(nft.SINK_MARK)
        except sink.SinkError as exc:
            sys.stderr.write(f"wgref client --cleanup: {exc}\n")
            return 1
        removed += [f"device {device}" for device in sink.DEVICES]
    sockets = ([args.socket] if args.socket else
               [status.socket_path(args.config)] if args.config else status.stale_candidates())
    removed += [f"stale {path}" for path in sockets if status.remove_stale(path)]
    code = 0
    try:
        conntrack.forget_marks()
    except OSError as exc:
        sys.stderr.write(f"wgref client --cleanup: the conntrack marks stay: {exc}\n")
        code = 1
    sys.stdout.write(f"removed: {', '.join(removed)}\n" if removed else "nothing to remove\n")
    return code


EXEC_USAGE = "wgref client exec CONFIG [--socket PATH] -- COMMAND [ARG...]"


def _exec(argv: list[str]) -> int:
    """Run COMMAND in the running client's cgroup: its flows (and its children's) to the
    tunnelled destinations are tunnelled whatever AllowedApps says, decided in the kernel."""
    parser = argparse.ArgumentParser(
        prog="wgref client exec", usage=EXEC_USAGE,
        description="Start COMMAND with every flow it and its children open to a tunnelled "
        "destination going through the running client of CONFIG.")
    parser.add_argument("config", help="the CONFIG.conf the client was started with")
    parser.add_argument("--socket", help="the client's status socket (default "
                        "/run/wgref/client-NAME.sock)")
    split = argv.index("--") if "--" in argv else len(argv)
    try:
        args = parser.parse_args(argv[:split])
    except SystemExit as exc:
        return int(exc.code or 0)
    command = argv[split + 1 :]
    if not command:
        sys.stderr.write(f"usage: {EXEC_USAGE}\nwgref client exec: no COMMAND given\n")
        return 2
    path = args.socket or status.socket_path(args.config)
    try:
        document = status.query(path)
    except (OSError, ValueError) as exc:
        sys.stderr.write(f"wgref client exec: {path}: {exc} (is the client of {args.config} "
                         "running?)\n")
        return 1
    name = document.get("exec_cgroup")
    if not isinstance(name, str) or not name:
        sys.stderr.write("wgref client exec: the running client has no cgroup (see its log); "
                         "use AllowedApps instead\n")
        return 1
    try:
        cgroup.join(name)
    except OSError as exc:
        sys.stderr.write(f"wgref client exec: {exc}\n")
        return 1
    try:
        os.execvp(command[0], command)
    except OSError as exc:
        sys.stderr.write(f"wgref client exec: {command[0]}: {exc.strerror}\n")
        return 127
    return 0  # pragma: no cover - execvp does not return


def main(argv: list[str]) -> int:
    if argv[:1] == ["exec"]:
        return _exec(argv[1:])
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    if args.status:
        return _status(args)
    if args.cleanup:
        return _cleanup(args)
    if not args.config:
        parser.print_usage(sys.stderr)
        return 2
    try:
        config = load(args.config)
    except ClientConfigError as exc:
        sys.stderr.write(f"wgref client: {exc}\n")
        return 1
    if args.check:
        sys.stdout.write(f"{args.config}: OK\n")
        return 0
    name = os.path.splitext(os.path.basename(args.config))[0]
    setup_logging(name)
    for warning in config.warnings:
        log.warning("%s", warning)
    if os.geteuid() != 0:
        sys.stderr.write("wgref client: needs root (nftables, NFQUEUE, raw sockets)\n")
        return 1
    # Before the status socket and the tables appear: from then on a SIGTERM must find the
    # loop's handler, and the collection here can take a while.
    eventloop.serve_long_lived()
    try:
        client = Client(config, queue=args.queue, status_path=args.socket,
                        forward=args.forward or None, kill_switch=args.kill_switch or None,
                        discard_device=not args.no_discard_device)
    except (OSError, nft.NftError, ValueError) as exc:
        log.error("cannot start: %s", exc)
        sys.stderr.write(f"wgref client: cannot start: {exc}\n")
        return 1
    if not args.foreground:
        sys.stdout.flush()
        sys.stderr.flush()
        if os.fork() > 0:
            return 0  # the parent returns once the client is up; the child keeps it
        os.setsid()
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
    code = 0
    try:
        client.run()
    except Exception:
        log.exception("fatal error")
        code = 1
    finally:
        client.close()
    if not args.foreground:
        sys.stdout.flush()
        os._exit(code)
    return code
