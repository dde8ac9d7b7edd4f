"""`python -m harness probe --server X [--probe NAME] [--slow] [--out DIR] [--merge]`."""

from __future__ import annotations

import argparse
import os
import platform
import signal
import sys
import time
from pathlib import Path

from .. import required
from ..cli import exit_code, required_list
from ..parallel import Job, run_jobs
from ..peers import registry
from ..peers.base import PeerDriver
from ..peers.spec import slots
from ..progress import make_progress
from ..report import print_matrix, write_all
from ..results import PeerInfo, RunResult, load_results, now_iso, typed_command
from ..runner import Interrupted
from . import report
from .base import Probe
from .registry import PROBES, select
from .runner import ProbeCell, scenario_name


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--server", action="append", default=[],
                        help="server peer(s) (repeatable or comma-separated; default: every "
                        "responder)")
    parser.add_argument("--probe", action="append", default=[],
                        help="probe(s) (default: all non-slow ones); --probe list shows them")
    parser.add_argument("--slow", action="store_true", help="include slow probes (rekey)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default: results/probes-TIMESTAMP)")
    parser.add_argument("--merge", action="store_true",
                        help="add the probe cells to OUT/results.json of an earlier "
                        "`harness run` and rewrite its reports (one matrix)")
    parser.add_argument("--plain", action="store_true", help="plain progress lines")
    parser.add_argument("--required", type=Path, default=None, metavar="FILE",
                        help="cells whose failure (or unsupported) fails the run, one "
                        "`probe SERVER probe:NAME` a line (* matches any); other failures "
                        "only report")
    parser.add_argument("--skip-unavailable", action="store_true",
                        help="leave servers that cannot run here out of the table")
    from ..cli import add_jobs_argument

    add_jobs_argument(parser)


def _split(values: list[str]) -> list[str]:
    return [v for value in values for v in value.split(",") if v]


def _servers(drivers: list[PeerDriver], args: argparse.Namespace) -> list[PeerDriver]:
    names = _split(args.server)
    if names:
        try:
            servers = registry.select(drivers, names, "server")
        except ValueError as exc:
            raise SystemExit(str(exc)) from None
    else:
        servers = [d for d in drivers if "responder" in d.capabilities]
    if args.skip_unavailable:
        keep = required.named_peers(required_list(args.required) or [])
        servers = [d for d in servers if d.unavailable() is None or d.name in keep]
    return servers



def _list() -> int:
    for probe in PROBES:
        print(f"{probe.name:<26}{' (slow)' if probe.slow else '':<8} {probe.section}")
        print(f"{'':<34} sends: {probe.sends}")
        print(f"{'':<34} must: {probe.requirement}")
    return 0


def _on_signal(signum: int, frame: object) -> None:
    raise Interrupted(f"signal {signum}")


def probe_job(driver: PeerDriver, probe: Probe, out: Path) -> Job:
    """One probe cell for the scheduler (also the mutation test's)."""
    return Job(lambda progress: ProbeCell(driver, probe, out, progress),
               exclusive=probe.exclusive, slots=slots(driver.name))


def _run_result(out: Path, merge: bool) -> RunResult:
    existing = out / "results.json"
    if merge and existing.exists():
        return load_results(existing)
    return RunResult(started=now_iso(), command=typed_command(),
                     host={"kernel": platform.release(), "python": platform.python_version(),
                           "machine": platform.machine()})


def cmd_probe(args: argparse.Namespace, drivers: list[PeerDriver]) -> int:
    if _split(args.probe) == ["list"]:
        return _list()
    if os.geteuid() != 0:
        print("error: the probes need root (network namespaces)", file=sys.stderr)
        return 2
    try:
        probes = select(_split(args.probe), args.slow)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from exc
    servers = _servers(drivers, args)
    out = args.out or Path("results") / time.strftime("probes-%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    run = _run_result(out, args.merge)
    known = {p.name for p in run.peers}
    for driver in servers:
        if driver.name not in known:
            reason = driver.unavailable()
            run.peers.append(PeerInfo(driver.name, driver.version(), reason is None, reason,
                                      sorted(driver.capabilities)))
    names = {scenario_name(p) for p in probes}
    server_names = {d.name for d in servers}
    run.scenarios = [s for s in run.scenarios if s.get("name") not in names]
    run.scenarios += [{"name": scenario_name(p), "description": p.requirement, "slow": p.slow,
                       "path": f"scenarios/probes/{p.name}.md"} for p in probes]
    run.cells = [c for c in run.cells  # a re-run replaces the cells it repeats
                 if not (c.scenario in names and c.server in server_names)]
    cells = [(driver, probe) for probe in probes for driver in servers]
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    started = time.monotonic()
    progress = make_progress(len(cells), plain=args.plain or not sys.stdout.isatty())
    probe_run = RunResult(started=now_iso())
    try:
        probe_run.cells, run.interrupted = run_jobs(
            [probe_job(driver, probe, out) for driver, probe in cells], args.jobs, progress)
    finally:
        progress.close()
        probe_run.ended = run.ended = now_iso()
        probe_run.seconds = round(time.monotonic() - started, 1)
        run.seconds = round(run.seconds + probe_run.seconds, 1)
        run.cells += probe_run.cells
        paths = write_all(run, out)
        (out / "probes.md").write_text(report.markdown(probe_run, probes))
        from ..html import write_report_quietly

        page = write_report_quietly(out)
        if page is not None:
            paths["html"] = page
    print_matrix(run)
    print(report.text(probe_run, probes))
    print(f"reports: {', '.join(str(p) for p in paths.values())}, {out / 'probes.md'}; "
          f"per-probe folders (pcaps, events.jsonl, logs) in {out}")
    if run.interrupted:
        print("interrupted: the table is incomplete", file=sys.stderr)
        return 130
    return exit_code(probe_run.cells, required_list(args.required))
