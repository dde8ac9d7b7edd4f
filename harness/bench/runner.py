"""Runs the bench: every selected pair is brought up once, then the repetitions are interleaved
(repetition -> test -> pair), so that a noisy neighbour slows every pair alike and the ratios
of one run stay fair. A run during which the hypervisor stole more CPU than ``max_steal``
(a neighbour on the host, which interleaving only evens out over many runs) is set aside and
measured again, at most ``remeasure`` times. Each iperf3 run is bounded in time; everything is
torn down at the end, on errors and on Ctrl-C/SIGTERM."""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..peers.base import PeerDriver, Unsupported
from ..results import now_iso, typed_command
from .baselines import Baseline
from .cpu import host_cpu_ticks, steal_percent
from .iperf import client_argv, fill_sample, load_json
from .lab import TOPOLOGY, LabError, PairLab, bring_up
from .model import ERROR, UNSUPPORTED, BenchRun, Cell, PairSpec, Sample, TestSpec

RUN_SLACK = 25.0  # seconds beyond -t that one iperf3 run may take (connect, UDP drain, JSON)
SETTLE_LIMIT = 4.0  # at most this long waiting for the peers to go idle between runs


class Interrupted(BaseException):
    """SIGTERM/SIGHUP during the bench: unwind like Ctrl-C so everything is torn down."""


@dataclass
class BenchOptions:
    pairs: list[PairSpec]
    tests: list[TestSpec]
    out: Path
    seconds: int = 5
    repeat: int = 3
    udp_rate: str = "1G"
    baselines: list[Baseline] = field(default_factory=list)
    max_steal: float | None = 5.0  # percent of the host's CPU time; None: never measure again
    remeasure: int = 2  # times one run may be measured again


Report = Callable[[str], None]


def why_unsupported(pair: PairSpec, drivers: dict[str, PeerDriver]) -> str | None:
    if pair.raw:
        return None
    reasons = []
    for role, name, cap in (("client", pair.client, "initiator"),
                            ("server", pair.server, "responder")):
        driver = drivers.get(name or "")
        if driver is None:
            reasons.append(f"{role} {name}: no such peer")
            continue
        missing = driver.unavailable()
        if missing:
            reasons.append(f"{role} {name}: {missing}")
        elif cap not in driver.capabilities:
            reasons.append(f"{role} {name} cannot be the {role} (not an {cap})")
    return "; ".join(reasons) or None


def settle(lab: PairLab) -> None:
    """Wait (bounded) until the peers stop burning CPU on what the last run left queued."""
    deadline = time.monotonic() + SETTLE_LIMIT
    before = [lab.cpu(role) for role in ("client", "server")]
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = [lab.cpu(role) for role in ("client", "server")]
        busy = any(a is not None and b is not None and b - a > 0.05
                   for a, b in zip(before, now, strict=True))
        if not busy:
            return
        before = now


def measure(lab: PairLab, test: TestSpec, repetition: int, options: BenchOptions,
            raw_dir: Path, suffix: str = "") -> Sample:
    sample = Sample(repetition)
    stem = f"{lab.pair.name.replace('->', '_to_')}-{test.name}-{repetition}{suffix}"
    try:
        server = lab.start_iperf_server(raw_dir / f"{stem}.server.log")
    except LabError as exc:
        sample.error = f"iperf3 server: {exc}"
        return sample
    argv = client_argv(test, lab.target, options.seconds, udp_rate=options.udp_rate)
    tunnel_before = lab.tunnel_bytes()
    cpu_before = {role: lab.cpu(role) for role in ("client", "server")}
    host_before = host_cpu_ticks()
    result = lab.client.run(argv, timeout=options.seconds + RUN_SLACK, check=False)
    sample.steal_percent = steal_percent(host_before, host_cpu_ticks())
    cpu_after = {role: lab.cpu(role) for role in ("client", "server")}
    server.stop(grace=2.0)
    tunnel_after = lab.tunnel_bytes()
    if tunnel_before is not None and tunnel_after is not None:
        sample.tunnel_bytes = tunnel_after - tunnel_before  # proof that it went through
    raw = raw_dir / f"{stem}.json"
    raw.write_text(result.stdout or result.stderr)
    sample.raw = str(raw.relative_to(options.out))
    try:
        fill_sample(sample, load_json(result.stdout), test.protocol)
    except ValueError:
        sample.error = result.describe()
    for role in ("client", "server"):
        before, after = cpu_before[role], cpu_after[role]
        if before is not None and after is not None:
            setattr(sample, f"{role}_cpu", round(after - before, 3))
    problem = lab.problem()
    if problem:
        sample.error = f"{sample.error}; {problem}" if sample.error else problem
    settle(lab)
    return sample


def disturbed(sample: Sample, max_steal: float | None) -> str | None:
    """Why a good run does not count (the host stole more CPU than ``max_steal`` percent
    during it), or None."""
    if (max_steal is None or not sample.ok or sample.steal_percent is None
            or sample.steal_percent <= max_steal):
        return None
    return f"host CPU steal {sample.steal_percent:.1f} % > {max_steal:g} %"


def measure_counted(lab: PairLab, cell: Cell, test: TestSpec, repetition: int,
                    options: BenchOptions, raw_dir: Path, report: Report) -> None:
    """One repetition of ``test`` on ``lab`` into ``cell``: measured again while the host
    disturbed it (:func:`disturbed`), at most ``options.remeasure`` times; the last one
    counts whatever its steal. Each attempt keeps its own raw file."""
    for attempt in range(options.remeasure + 1):
        sample = measure(lab, test, repetition, options, raw_dir,
                         suffix=f"-again{attempt}" if attempt else "")
        cell.samples.append(sample)
        reason = disturbed(sample, options.max_steal) if attempt < options.remeasure else None
        sample.set_aside = reason
        report(_line(repetition, options.repeat, test, lab.pair, sample))
        if reason is None:
            return


def run_bench(options: BenchOptions, drivers: dict[str, PeerDriver],
              report: Report = print) -> BenchRun:
    options.out.mkdir(parents=True, exist_ok=True)
    raw_dir = options.out / "raw"
    raw_dir.mkdir(exist_ok=True)
    bench = BenchRun(
        started=now_iso(), command=typed_command(), topology=TOPOLOGY,
        host={"kernel": platform.release(), "python": platform.python_version(),
              "machine": platform.machine(), "cpus": str(_cpus()),
              "tcp_congestion_control": _congestion_control()},
        settings={"seconds": options.seconds, "repeat": options.repeat,
                  "udp_rate": options.udp_rate, "iperf3": "-J, TCP/UDP, -R for download",
                  "max_steal_percent": options.max_steal, "remeasure": options.remeasure,
                  "order": "interleaved: repetition -> test -> pair"},
        pairs=[p.name for p in options.pairs], tests=[t.name for t in options.tests],
        baselines=[b.to_json() for b in options.baselines])
    for name in sorted({n for p in options.pairs for n in (p.client, p.server) if n}):
        driver = drivers.get(name)
        bench.peers[name] = driver.version() if driver else "unknown"
    for pair in options.pairs:
        for test in options.tests:
            bench.cells.append(Cell(pair.name, test.name))
    started = time.monotonic()
    labs: dict[str, PairLab] = {}
    try:
        for pair in options.pairs:
            reason = why_unsupported(pair, drivers)
            status = UNSUPPORTED
            if reason is None:
                report(f"setting up {pair.label}")
                try:
                    lab = bring_up(pair, drivers, options.out / "pairs" / _folder(pair))
                    labs[pair.name] = lab
                    bench.prefixes[pair.name] = lab.topology.prefix
                    continue
                except Unsupported as exc:
                    reason = str(exc)
                except LabError as exc:
                    status, reason = ERROR, f"setup: {exc}"
            bench.unsupported[pair.name] = reason if status == UNSUPPORTED else ""
            report(f"{pair.label}: {status}: {reason}")
            for test in options.tests:
                cell = bench.cell(pair.name, test.name)
                assert cell is not None
                cell.status, cell.reason = status, reason
        for repetition in range(1, options.repeat + 1):
            for test in options.tests:
                for name, lab in labs.items():
                    cell = bench.cell(name, test.name)
                    assert cell is not None
                    measure_counted(lab, cell, test, repetition, options, raw_dir, report)
    except (KeyboardInterrupt, Interrupted):
        bench.interrupted = True
    finally:
        for lab in labs.values():
            problems = lab.close()
            if problems:
                report(f"teardown of {lab.pair.label}: {'; '.join(problems)}")
        for cell in bench.cells:
            if cell.samples and not cell.good:
                cell.status = ERROR
                cell.reason = cell.reason or "; ".join(
                    sorted({s.error or "no data" for s in cell.samples}))[:500]
        bench.ended = now_iso()
        bench.seconds = round(time.monotonic() - started, 1)
    return bench


def _folder(pair: PairSpec) -> str:
    return pair.name.replace("->", "_to_")


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))


def _congestion_control() -> str:
    """The host's default TCP congestion control, which the topology's namespaces start with
    (tcp_cong.c: a new namespace takes init_net's): the TCP tests' sender uses it, and
    throughput against a published baseline depends on it (bbr paces, cubic does not)."""
    try:
        return Path("/proc/sys/net/ipv4/tcp_congestion_control").read_text().strip() or "?"
    except OSError:
        return "?"


def _line(repetition: int, repeat: int, test: TestSpec, pair: PairSpec, sample: Sample) -> str:
    head = f"[{repetition}/{repeat}] {test.name:<12} {pair.label:<40}"
    if sample.error is not None or sample.mbps <= 0:
        return f"{head} error: {(sample.error or 'no data')[:200]}"
    text = f"{head} {sample.mbps:9.1f} Mbit/s"
    if sample.lost_percent is not None:
        text += f"  loss {sample.lost_percent:5.1f} %"
    if sample.peer_cpu is not None:
        text += f"  cpu c {sample.client_cpu:.2f} s / s {sample.server_cpu:.2f} s"
    if sample.steal_percent:
        text += f"  steal {sample.steal_percent:.1f} %"
    if sample.set_aside:
        text += f"  ({sample.set_aside}: measured again)"
    return text
