"""`python -m harness bench` (and `python -m harness.bench`): the throughput bench."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

from ..peers.base import PeerDriver
from ..peers.registry import all_drivers
from .baselines import BaselineError, load_baselines
from .model import DEFAULT_PAIRS, DEFAULT_TESTS, TESTS, PairSpec, parse_pair
from .runner import BenchOptions, Interrupted, run_bench


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pairs = ",".join(p.name.replace("->", ":") for p in DEFAULT_PAIRS)
    parser.add_argument("--pairs", action="append", default=[],
                        help=f"pairs CLIENT:SERVER or veth (repeatable or comma-separated; "
                        f"default: {pairs})")
    parser.add_argument("--tests", action="append", default=[],
                        help=f"tests (default: {','.join(DEFAULT_TESTS)}; "
                        f"known: {','.join(TESTS)})")
    parser.add_argument("--time", type=int, default=5, metavar="SECONDS",
                        help="iperf3 -t of each run (default: %(default)s)")
    parser.add_argument("--repeat", type=int, default=3, metavar="N",
                        help="runs of each pair x test (default: %(default)s)")
    parser.add_argument("--max-steal", type=float, default=5.0, metavar="PERCENT",
                        help="measure a run again when the hypervisor stole more than this "
                        "share of the CPU during it (/proc/stat steal; default: %(default)s; "
                        "100 never measures again)")
    parser.add_argument("--remeasure", type=int, default=2, metavar="N",
                        help="times one run may be measured again for --max-steal (default: "
                        "%(default)s); the last one counts")
    parser.add_argument("--udp-rate", default="1G",
                        help="iperf3 -b of the UDP tests (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default: results/bench-TIMESTAMP)")
    parser.add_argument("--no-chart", action="store_true", help="skip the PNG chart")
    parser.add_argument("--from-json", type=Path, default=None, metavar="BENCH_JSON",
                        help="measure nothing: re-render the table, bench.md and bench.png of "
                        "an earlier run next to its bench.json")
    ext = parser.add_argument_group("external client mode")
    ext.add_argument("--external", action="store_true",
                     help="bring up only the server side and wait for a client from outside")
    ext.add_argument("--server-peer", default="wireguard-go",
                     help="the server's WireGuard peer in --external mode (default: "
                     "%(default)s; or wgref)")
    ext.add_argument("--wait", type=float, default=300.0, metavar="SECONDS",
                     help="how long --external waits for the client's run (default: "
                     "%(default)s)")
    ext.add_argument("--outside-ns", default=None, metavar="NS",
                     help="put the outer end of the link in this existing namespace instead "
                     "of the root namespace (to simulate an external client)")


def _split(values: list[str]) -> list[str]:
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


def _on_signal(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(f"signal {signum}")


def _drivers() -> dict[str, PeerDriver]:
    return {d.name: d for d in all_drivers()}


def _pairs(names: list[str], drivers: dict[str, PeerDriver]) -> list[PairSpec]:
    if not names:
        return list(DEFAULT_PAIRS)
    pairs = []
    for name in names:
        try:
            pair = parse_pair(name)
        except ValueError as exc:
            raise SystemExit(f"error: {exc}") from exc
        unknown = [n for n in (pair.client, pair.server) if n and n not in drivers]
        if unknown:
            raise SystemExit(f"error: unknown peer {', '.join(unknown)} "
                             f"(known: {', '.join(drivers)})")
        if pair not in pairs:
            pairs.append(pair)
    return pairs


def _rerender(path: Path, chart: bool) -> int:
    from .model import load_bench
    from .report import print_table, write_chart, write_markdown

    try:
        bench = load_bench(path)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"error: cannot read {path}: {exc}", file=sys.stderr)
        return 2
    print_table(bench)
    write_markdown(bench, path.parent / "bench.md")
    if chart:
        write_chart(bench, path.parent / "bench.png")
    print(f"outputs: {path.parent / 'bench.md'}" + ("" if not chart else
                                                    f", {path.parent / 'bench.png'}"))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    if args.from_json is not None:
        return _rerender(args.from_json, not args.no_chart)
    if os.geteuid() != 0:
        print("error: the bench needs root (network namespaces)", file=sys.stderr)
        return 2
    if args.time < 1 or args.repeat < 1:
        print("error: --time and --repeat must be at least 1", file=sys.stderr)
        return 2
    if not 0 <= args.max_steal <= 100 or args.remeasure < 0:
        print("error: --max-steal must be a percentage (0-100) and --remeasure at least 0",
              file=sys.stderr)
        return 2
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    drivers = _drivers()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    if args.external:
        return _external(args, drivers, stamp)
    tests = _split(args.tests) or list(DEFAULT_TESTS)
    unknown = [t for t in tests if t not in TESTS]
    if unknown:
        print(f"error: unknown test {', '.join(unknown)} (known: {', '.join(TESTS)})",
              file=sys.stderr)
        return 2
    try:
        baselines = load_baselines()
    except BaselineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = args.out or Path("results") / f"bench-{stamp}"
    options = BenchOptions(pairs=_pairs(_split(args.pairs), drivers),
                           tests=[TESTS[t] for t in tests], out=out, seconds=args.time,
                           repeat=args.repeat, udp_rate=args.udp_rate, baselines=baselines,
                           max_steal=None if args.max_steal >= 100 else args.max_steal,
                           remeasure=args.remeasure)
    budget = len(options.pairs) * len(tests) * args.repeat * (args.time + 2)
    print(f"bench: {len(options.pairs)} pairs x {len(tests)} tests x {args.repeat} runs of "
          f"{args.time} s (about {budget // 60} min {budget % 60} s); output in {out}",
          flush=True)
    from .report import print_table, write_all

    bench = run_bench(options, drivers, report=_say)
    paths = write_all(bench, out, chart=not args.no_chart)
    from ..html import write_report_quietly

    page = write_report_quietly(out)
    if page is not None:
        paths["html"] = page
    print_table(bench)
    print(f"outputs: {', '.join(str(p) for p in paths.values())}; iperf3 JSON in {out}/raw")
    if bench.interrupted:
        print("interrupted: the bench is incomplete", file=sys.stderr)
        return 130
    return 1 if bench.failed else 0


def _say(text: str) -> None:
    print(text, flush=True)


def _external(args: argparse.Namespace, drivers: dict[str, PeerDriver], stamp: str) -> int:
    from .external import serve_external

    driver = drivers.get(args.server_peer)
    if driver is None or "responder" not in driver.capabilities:
        print(f"error: --server-peer must be a responder with an interface (wireguard-go, "
              f"wgref), not {args.server_peer!r}", file=sys.stderr)
        return 2
    reason = driver.unavailable()
    if reason:
        print(f"error: {driver.name}: {reason}", file=sys.stderr)
        return 2
    out = args.out or Path("results") / f"bench-external-{stamp}"
    try:
        result = serve_external(driver, out, wait=args.wait, seconds=args.time,
                                outside_ns=args.outside_ns, say=_say)
    except (KeyboardInterrupt, Interrupted):
        print("interrupted", file=sys.stderr)
        return 130
    _print_external(result.to_json())
    print(f"recorded: {out / 'bench-external.json'}")
    return 0 if result.status == "ok" else 1


def _print_external(data: dict[str, Any]) -> None:
    test = data.get("test") or {}
    if data["status"] != "ok":
        print(f"external client: {data['status']}: {data['reason']}")
        return
    cpu = data.get("server_cpu_seconds")
    print(f"external client from {test.get('remote')}: {test.get('protocol')} "
          f"{test.get('direction')}, {test.get('streams')} stream(s), "
          f"{test.get('seconds')} s: {test.get('mbps_at_server', 0.0):.1f} Mbit/s at the server"
          + (f", server peer CPU {cpu:.2f} s" if cpu is not None else ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.bench",
                                     description="WireGuard throughput bench (iperf3)")
    add_arguments(parser)
    return cmd_bench(parser.parse_args(argv))
