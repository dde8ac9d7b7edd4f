"""CPU time of peer processes from /proc: utime + stime of every process in a session; and
the host's CPU steal (time a virtual machine's CPUs were ready to run but the hypervisor ran
something else: proc(5), /proc/stat ``steal``).

Each peer runs as a background process in its own session (the harness starts it with
``start_new_session``), so the session id catches helper processes too; threads are counted
in their process's own stat line."""

from __future__ import annotations

import os
from pathlib import Path

PROC = Path("/proc")


def clock_ticks() -> int:
    return os.sysconf("SC_CLK_TCK")


def parse_stat(text: str) -> tuple[int, int, int]:
    """(session id, utime, stime) in clock ticks from a /proc/PID/stat line. The command name
    may contain spaces and parentheses, so fields are counted after its last ')'."""
    fields = text.rsplit(")", 1)[1].split()
    # after the name: state(0) ppid(1) pgrp(2) session(3) ... utime(11) stime(12)
    return int(fields[3]), int(fields[11]), int(fields[12])


def session_cpu_seconds(session: int, proc: Path = PROC) -> float:
    """CPU-seconds used so far by the live processes of ``session`` (0 when none is left)."""
    ticks = 0
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            sid, utime, stime = parse_stat((entry / "stat").read_text())
        except (OSError, ValueError, IndexError):
            continue
        if sid == session:
            ticks += utime + stime
    return ticks / clock_ticks()


def process_cpu_seconds(pid: int, proc: Path = PROC) -> float | None:
    """utime + stime of one process, or None when it is gone."""
    try:
        _, utime, stime = parse_stat((proc / str(pid) / "stat").read_text())
    except (OSError, ValueError, IndexError):
        return None
    return (utime + stime) / clock_ticks()


def host_cpu_ticks(proc: Path = PROC) -> tuple[int, int] | None:
    """(all ticks, steal ticks) of every CPU so far, from the ``cpu`` line of /proc/stat
    (user nice system idle iowait irq softirq steal; guest time is inside user and nice and
    is not added again). None when it cannot be read."""
    try:
        with (proc / "stat").open() as stat:
            fields = stat.readline().split()
    except OSError:
        return None
    if len(fields) < 9 or fields[0] != "cpu":
        return None
    try:
        ticks = [int(v) for v in fields[1:9]]
    except ValueError:
        return None
    return sum(ticks), ticks[7]


def steal_percent(before: tuple[int, int] | None,
                  after: tuple[int, int] | None) -> float | None:
    """The share of CPU time stolen by the hypervisor between two :func:`host_cpu_ticks`."""
    if before is None or after is None or after[0] <= before[0]:
        return None
    return round(100.0 * (after[1] - before[1]) / (after[0] - before[0]), 1)
