"""Traffic through the tunnel from a host namespace: ping, TCP/UDP echo checks and bulk
transfers (iperf3). Every call is bounded in time and count."""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .shell import Background
from .topology import Host

ECHO_PORT = 7000
IPERF_PORT = 5201
_PING_RE = re.compile(r"(\d+) packets transmitted, (\d+) received")
_PING_ERRORS_RE = re.compile(r"\+(\d+) errors")  # ICMP errors ping got back
_PING_ERROR_LINE_RE = re.compile(r"^From (\S+) icmp_seq=\d+ (.+)$", re.MULTILINE)


@dataclass(slots=True)
class TrafficResult:
    ok: bool
    detail: str
    measurements: dict[str, float]


def _python_env() -> dict[str, str]:
    """So that `python -m harness.echo` works even when the harness is not installed."""
    root = str(Path(__file__).resolve().parent.parent)
    path = os.environ.get("PYTHONPATH")
    return {"PYTHONPATH": f"{root}:{path}" if path else root}


def harness_python(module: str, *args: str) -> list[str]:
    return ["env", *(f"{k}={v}" for k, v in _python_env().items()), sys.executable, "-m",
            module, *args]


def ping(host: Host, dst: str, *, count: int = 3, size: int = 56, dont_fragment: bool = False,
         source: str | None = None, timeout: float = 10.0, min_replies: int = 1,
         interval: float = 0.2, min_errors: int | None = None) -> TrafficResult:
    """``ok`` when at least ``min_replies`` replies came back, or, with ``min_errors``, at
    least that many ICMP errors (e.g. "Destination Host Unreachable")."""
    argv = ["ping", "-n", "-c", str(count), "-i", str(interval), "-s", str(size),
            "-w", str(max(1, int(timeout)))]
    if ":" in dst:
        argv.insert(1, "-6")
    if dont_fragment:
        argv += ["-M", "do"]
    if source:
        argv += ["-I", source]
    result = host.run([*argv, dst], timeout=timeout + 5, check=False)
    match = _PING_RE.search(result.stdout)
    sent, got = (int(match.group(1)), int(match.group(2))) if match else (0, 0)
    errors_match = _PING_ERRORS_RE.search(result.stdout)
    errors = int(errors_match.group(1)) if errors_match else 0
    ok = got >= min_replies if min_errors is None else errors >= min_errors
    detail = f"ping {dst} (size {size}{', DF' if dont_fragment else ''}): {got}/{sent} replies"
    if errors:
        first = _PING_ERROR_LINE_RE.search(result.stdout)
        detail += f", {errors} ICMP errors"
        if first:
            detail += f" (from {first.group(1)}: {first.group(2)})"
    if not match:
        detail += f" ({result.describe()})"
    return TrafficResult(ok, detail, {"ping_sent": sent, "ping_received": got,
                                      "ping_errors": errors})


def parse_echo(output: str, what: str) -> TrafficResult:
    line = output.strip().splitlines()[-1] if output.strip() else ""
    try:
        data: dict[str, Any] = json.loads(line)
    except ValueError:
        return TrafficResult(False, f"{what}: no result ({output.strip()[-300:]!r})", {})
    measurements = {"bytes_echoed": float(data.get("received", 0)),
                    "seconds": float(data.get("seconds", 0.0))}
    if data.get("ok"):
        return TrafficResult(True, f"{what}: {data['received']} bytes echoed intact",
                             measurements)
    return TrafficResult(False, f"{what}: {data.get('error')}", measurements)


def echo_check(host: Host, proto: str, dst: str, *, port: int = ECHO_PORT, size: int = 65536,
               count: int = 3, timeout: float = 10.0) -> TrafficResult:
    args = [proto, dst, str(port), "--timeout", str(timeout)]
    args += ["--bytes", str(size)] if proto == "tcp" else ["--count", str(count), "--size",
                                                           str(size)]
    result = host.run(harness_python("harness.echo", *args), timeout=timeout + 10, check=False)
    return parse_echo(result.stdout + result.stderr, f"{proto} echo to {dst}:{port}")


def start_echo_server(host: Host, log: Path, port: int = ECHO_PORT) -> Background:
    return host.spawn("echo", harness_python("harness.echo", "serve", "--port", str(port)), log)


def start_iperf_server(host: Host, log: Path, port: int = IPERF_PORT) -> Background:
    return host.spawn("iperf3-server", ["iperf3", "-s", "-p", str(port)], log)


def start_transfer(host: Host, dst: str, seconds: float, log: Path, *,
                   port: int = IPERF_PORT, bitrate: str = "20M") -> Background:
    """A bounded iperf3 TCP transfer (rate-limited so the peers keep CPU for the rest)."""
    argv = ["iperf3", "-c", dst, "-p", str(port), "-t", str(int(seconds)), "-b", bitrate,
            "-J", "--connect-timeout", "5000"]
    return host.spawn("iperf3-client", argv, log)


def transfer_result(proc: Background) -> TrafficResult:
    text = proc.log.read_text(errors="replace")
    # iperf3 -J prints one document whose outer braces start a line; a log reused by a run
    # into the same folder holds earlier ones before it: read the last.
    start = text.rfind("\n{") + 1 or text.find("{")
    try:
        data: dict[str, Any] = json.loads(text[start:]) if start >= 0 else {}
    except ValueError:
        data = {}
    end = data.get("end", {})
    received = end.get("sum_received", {}).get("bytes", 0)
    seconds = end.get("sum_received", {}).get("seconds", 0.0)
    error = data.get("error")
    if proc.proc.returncode != 0 or error or not received:
        reason = error or f"iperf3 exited {proc.proc.returncode}: {text[-300:].strip()}"
        return TrafficResult(False, f"transfer failed: {reason}",
                             {"transfer_bytes": float(received)})
    mbps = received * 8 / seconds / 1e6 if seconds else 0.0
    return TrafficResult(True, f"transfer: {received} bytes in {seconds:.1f} s "
                         f"({mbps:.1f} Mbit/s)",
                         {"transfer_bytes": float(received), "transfer_mbps": round(mbps, 2)})
