"""`python -m harness run | merge | list | cleanup | ...`."""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import sys
import textwrap
import time
from pathlib import Path
from types import FrameType

from . import cleanup as cleanup_mod
from . import required
from .parallel import Job, default_jobs, run_jobs
from .peers import registry
from .peers.base import PeerDriver
from .peers.registry import all_drivers
from .peers.spec import slots
from .progress import make_progress
from .report import print_matrix, write_all
from .results import FAILING, CellResult, PeerInfo, RunResult, now_iso, typed_command
from .runner import Cell, CellRunner, Interrupted, TopologyFactory, plan
from .scenario import Scenario, ScenarioError, load_scenarios
from .shard import Shard, ShardError, code_version, parse_shard, plan_id, select

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ROOT / "scenarios"
BACKENDS = ("netns", "docker")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m harness",
                                     description="WireGuard interop harness")
    parser.add_argument("--scenarios-dir", type=Path, default=SCENARIOS,
                        help="folder of scenario *.toml files (default: %(default)s)")
    parser.add_argument("--peers-file", type=Path, action="append", default=None,
                        help="TOML file declaring config-file clients "
                        "(default: SCENARIOS/peers/*.toml)")
    sub = parser.add_subparsers(dest="command", required=True)
    run_p = sub.add_parser("run", help="run the matrix")
    run_p.add_argument("--client", action="append", default=[],
                       help="client peer(s) (repeatable or comma-separated; default: all)")
    run_p.add_argument("--server", action="append", default=[],
                       help="server peer(s) (default: all)")
    run_p.add_argument("--scenario", action="append", default=[],
                       help="scenario(s) (default: all non-slow ones)")
    run_p.add_argument("--slow", action="store_true", help="include slow scenarios (rekey)")
    run_p.add_argument("--out", type=Path, default=None,
                       help="output folder (default: results/interop-TIMESTAMP)")
    run_p.add_argument("--plain", action="store_true", help="plain progress lines, no rich")
    run_p.add_argument("--skip-unavailable", action="store_true",
                       help="leave peers that cannot run here out of the matrix")
    run_p.add_argument("--backend", choices=BACKENDS, default="netns",
                       help="hosts as network namespaces (default) or Docker containers")
    run_p.add_argument("--required", type=Path, default=None, metavar="FILE",
                       help="cells whose failure (or unsupported) fails the run, one "
                       "`CLIENT SERVER SCENARIO` a line (* matches any); other failures "
                       "only report")
    add_jobs_argument(run_p)
    run_p.add_argument("--shard", type=shard_arg, default=None, metavar="K/N",
                       help="run only shard K of N of the planned cells (a deterministic "
                       "split balanced by expected duration); combine the shards' folders "
                       "with `python -m harness merge`")
    merge_p = sub.add_parser("merge", help="combine --shard K/N run folders into one report")
    merge_p.add_argument("out", type=Path, metavar="OUT", help="the merged run folder")
    merge_p.add_argument("shards", type=Path, nargs="+", metavar="SHARD_DIR",
                         help="the shards' run folders (every shard of one plan)")
    list_p = sub.add_parser("list", help="list peers and scenarios")
    list_p.add_argument("--backend", choices=BACKENDS, default="netns")
    clean_p = sub.add_parser("cleanup", help="remove leftovers of killed runs")
    clean_p.add_argument("--prefix", default=None, help="only this run prefix (whXXXX)")
    clean_p.add_argument("--force", action="store_true",
                         help="also remove what live runs own")
    clean_p.add_argument("--dry-run", action="store_true", help="only list leftovers")
    from .bench.cli import add_arguments as add_bench_arguments

    add_bench_arguments(sub.add_parser("bench", help="throughput bench (iperf3 through the "
                                       "tunnel, per pair)"))
    from .html.cli import add_arguments as add_report_arguments

    add_report_arguments(sub.add_parser("report", help="write RUN_DIR/index.html (or compare "
                                        "two runs)"))
    from .docker.cli import add_arguments as add_images_arguments

    add_images_arguments(sub.add_parser("images", help="build the Docker backend's images "
                                        "(debian:bookworm-slim and the peers, from docker/)"))
    from .probes.cli import add_arguments as add_probe_arguments

    add_probe_arguments(sub.add_parser("probe", help="conformance probes against servers "
                                       "(packet-level, scapy + wgref's core)"))
    from .tools import add_arguments as add_tools_arguments

    add_tools_arguments(sub.add_parser("tools", help="build the pinned peers (boringtun-cli, "
                                       "current wireguard-go) into ~/.cache/wgref/tools"))
    return parser


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of cells, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def add_jobs_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--jobs", "-j", type=positive_int, default=default_jobs(), metavar="N",
                        help="cells at once (default here: %(default)s, four per core, at most "
                        "8; a cell with a VM counts for more, timing-sensitive cells run "
                        "alone; 1: one after the other)")


def shard_arg(text: str) -> Shard:
    try:
        return parse_shard(text)
    except ShardError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix(f"--shard {text!r}: ")) from None


def _split(values: list[str]) -> list[str]:
    return [v for value in values for v in value.split(",") if v]


def _drivers(args: argparse.Namespace) -> list[PeerDriver]:
    files = args.peers_file
    if files is None:
        files = sorted((args.scenarios_dir / "peers").glob("*.toml"))
    if getattr(args, "backend", "netns") == "docker":
        from .docker.client import DockerUnavailable, sdk
        from .docker.drivers import docker_drivers

        try:
            sdk()
        except DockerUnavailable as exc:
            raise SystemExit(f"error: {exc}") from None
        return docker_drivers(files)
    return all_drivers(files)


def _select(drivers: list[PeerDriver], names: list[str], what: str) -> list[PeerDriver]:
    if not names:
        return drivers
    try:
        return registry.select(drivers, names, what)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None


def _scenarios(args: argparse.Namespace, names: list[str], slow: bool) -> list[Scenario]:
    try:
        scenarios = load_scenarios(args.scenarios_dir)
    except ScenarioError as exc:
        raise SystemExit(f"error: {exc}") from exc
    if names:
        by_name = {s.name: s for s in scenarios}
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise SystemExit(f"unknown scenario {', '.join(unknown)} "
                             f"(known: {', '.join(by_name)})")
        return [by_name[n] for n in names]
    return [s for s in scenarios if slow or not s.slow]


def cmd_list(args: argparse.Namespace) -> int:
    drivers = _drivers(args)
    print("peers:")
    for driver in drivers:
        reason = driver.unavailable()
        state = "available" if reason is None else f"unavailable: {reason}"
        roles = "/".join(r for r in ("initiator", "responder") if r in driver.capabilities)
        print(f"  {driver.name:<22} {roles:<20} {state}")
        if reason is None:
            print(f"  {'':<22} {driver.version()}")
    print("scenarios:")
    width = max(60, shutil.get_terminal_size().columns)
    for sc in _scenarios(args, [], slow=True):
        head = f"  {sc.name:<20}{' (slow)' if sc.slow else '':<8} "
        print(textwrap.fill(first_sentence(sc.description), width, initial_indent=head,
                            subsequent_indent=" " * len(head), break_long_words=False,
                            break_on_hyphens=False))
    return 0


def first_sentence(text: str) -> str:
    """The first sentence of a description, whole, on one line."""
    flat = " ".join(text.split())
    end = flat.find(". ")
    return flat if end < 0 else flat[:end + 1]


def _on_signal(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(f"signal {signum}")


def cmd_run(args: argparse.Namespace) -> int:
    rules = required_list(args.required)  # a bad list is reported before anything runs
    if os.geteuid() != 0:
        print("error: the harness needs root (network namespaces)", file=sys.stderr)
        return 2
    drivers = _drivers(args)
    clients = _select(drivers, _split(args.client), "client")
    servers = _select(drivers, _split(args.server), "server")
    if not args.client:
        clients = [d for d in clients if "initiator" in d.capabilities]
    if not args.server:
        servers = [d for d in servers if "responder" in d.capabilities]
    if args.skip_unavailable:
        keep = required.named_peers(rules or [])
        clients = [d for d in clients if d.unavailable() is None or d.name in keep]
        servers = [d for d in servers if d.unavailable() is None or d.name in keep]
    scenarios = _scenarios(args, _split(args.scenario), args.slow)
    out = args.out or Path("results") / time.strftime("interop-%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    run = RunResult(started=now_iso(), command=typed_command(),
                    host={"node": platform.node(), "kernel": platform.release(),
                          "python": platform.python_version(), "machine": platform.machine(),
                          "backend": args.backend})
    topology = None
    if args.backend == "docker":
        from .docker.backend import topology_factory

        topology = topology_factory(out)
    seen: dict[str, PeerDriver] = {d.name: d for d in [*clients, *servers]}
    for driver in seen.values():
        reason = driver.unavailable()
        run.peers.append(PeerInfo(driver.name, driver.version(), reason is None, reason,
                                  sorted(driver.capabilities)))
    run.scenarios = [{"name": s.name, "description": s.description, "slow": s.slow,
                      "path": str(s.path) if s.path else None} for s in scenarios]
    cells = plan(clients, servers, scenarios)
    if args.shard is not None:
        cells = _shard(run, cells, args.shard)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    started = time.monotonic()
    progress = make_progress(len(cells), plain=args.plain or not sys.stdout.isatty())
    try:
        run.cells, run.interrupted = run_jobs(_jobs(cells, out, topology), args.jobs, progress)
    finally:
        progress.close()
        run.ended = now_iso()
        run.seconds = round(time.monotonic() - started, 1)
        paths = write_all(run, out)
        from .html import write_report_quietly

        page = write_report_quietly(out)
        if page is not None:
            paths["html"] = out / page.name
    print_matrix(run)
    print(f"reports: {', '.join(str(p) for p in paths.values())}; per-test folders in {out}")
    if run.interrupted:
        print("interrupted: the matrix is incomplete", file=sys.stderr)
        return 130
    return exit_code(run.cells, rules)


def required_list(path: Path | None) -> list[required.Pattern] | None:
    if path is None:
        return None
    try:
        return required.load(path)
    except required.RequiredError as exc:
        raise SystemExit(f"error: --required: {exc}") from None


def exit_code(cells: list[CellResult], rules: list[required.Pattern] | None) -> int:
    """1 when a cell failed or errored; with a required list, 1 only when a required cell
    failed, errored or was unsupported (the others are reported)."""
    if rules is None:
        return 1 if any(c.status in FAILING for c in cells) else 0
    for line in required.unmatched(rules, cells):
        print(f"note: required {line} ({line.where}) matches no cell of this run")
    problems = required.failures(rules, cells)
    for problem in problems:
        print(problem, file=sys.stderr)
    others = [c for c in cells if c.status in FAILING and not any(r.matches(c) for r in rules)]
    if others:
        print(f"{len(others)} failed cell(s) outside the required list (reported only)")
    return 1 if problems else 0


def cell_job(cell: Cell, out: Path, topology: TopologyFactory | None = None) -> Job:
    """One matrix cell for the scheduler (also the mutation test's)."""
    return Job(lambda progress: CellRunner(cell, out, progress, topology),
               exclusive=cell.scenario.exclusive,
               slots=slots(cell.client.name) + slots(cell.server.name) - 1)


def _jobs(cells: list[Cell], out: Path, topology: TopologyFactory | None) -> list[Job]:
    return [cell_job(cell, out, topology) for cell in cells]


def _shard(run: RunResult, cells: list[Cell], shard: Shard) -> list[Cell]:
    """This shard's cells, with what `harness merge` checks recorded in the run."""
    keys = [f"{c.client.name} -> {c.server.name}: {c.scenario.name}" for c in cells]
    run.shard = {"index": shard.index, "count": shard.count, "plan": plan_id(keys),
                 "version": code_version(), "order": keys}
    return [cells[i] for i in select(cells, shard)]


def cmd_merge(args: argparse.Namespace) -> int:
    from .merge import MergeError, merge

    try:
        run, paths = merge(args.out, args.shards)
    except MergeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print_matrix(run)
    print(f"merged {len(args.shards)} shards ({len(run.cells)} cells): "
          f"{', '.join(str(p) for p in paths.values())}")
    return 1 if run.failed or run.interrupted else 0


def cmd_cleanup(args: argparse.Namespace) -> int:
    if args.dry_run:
        left = cleanup_mod.find(args.prefix, args.force)
    else:
        left = cleanup_mod.cleanup(args.prefix, args.force)
    if left.empty():
        print("nothing left behind")
        return 0
    verb = "found" if args.dry_run else "removed"
    for line in left.lines():
        print(f"{verb} {line}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "list":
        return cmd_list(args)
    if args.command == "cleanup":
        return cmd_cleanup(args)
    if args.command == "merge":
        return cmd_merge(args)
    if args.command == "images":
        from .docker.cli import cmd_images

        return cmd_images(args)
    if args.command == "report":
        from .html.cli import cmd_report

        return cmd_report(args)
    if args.command == "bench":
        from .bench.cli import cmd_bench

        return cmd_bench(args)
    if args.command == "tools":
        from .tools import cmd_tools

        return cmd_tools(args)
    if args.command == "probe":
        from .probes.cli import cmd_probe

        return cmd_probe(args, _drivers(args))
    return cmd_run(args)
