"""iperf3 command lines and the reading of its JSON (-J) output."""

from __future__ import annotations

import json
from typing import Any

from .model import Sample, TestSpec

PORT = 5201


def client_argv(test: TestSpec, target: str, seconds: int, *, udp_rate: str = "1G",
                port: int = PORT) -> list[str]:
    argv = ["iperf3", "-c", target, "-p", str(port), "-t", str(seconds), "-J",
            "--connect-timeout", "3000"]
    if test.streams > 1:
        argv += ["-P", str(test.streams)]
    if test.reverse:
        argv.append("-R")
    if test.protocol == "udp":
        argv += ["-u", "-b", udp_rate]
    return argv


def server_argv(*, port: int = PORT, bind: str | None = None, json_out: bool = False) -> list[str]:
    """A one-off server: it serves one test and exits, so a failed run never leaves a busy
    server behind for the next one."""
    argv = ["iperf3", "-s", "-p", str(port), "--one-off"]
    if bind:
        argv += ["-B", bind]
    if json_out:
        argv.append("-J")
    return argv


def load_json(text: str) -> dict[str, Any]:
    """The JSON document in iperf3's output (a log may have lines before it)."""
    start = text.find("{")
    if start < 0:
        raise ValueError(f"no JSON in iperf3 output: {text.strip()[-200:]!r}")
    data, _ = json.JSONDecoder().raw_decode(text[start:])
    if not isinstance(data, dict):
        raise ValueError("iperf3 output is not a JSON object")
    return data


def fill_sample(sample: Sample, data: dict[str, Any], protocol: str) -> Sample:
    """Throughput (what the receiver got), loss and retransmits from a client's -J output."""
    error = data.get("error")
    end: dict[str, Any] = data.get("end") or {}
    received: dict[str, Any] = end.get("sum_received") or {}
    sent: dict[str, Any] = end.get("sum_sent") or {}
    if protocol == "udp" and not received:
        received = end.get("sum") or {}  # older iperf3: one "sum" with the receiver's view
    sample.received_bytes = int(received.get("bytes", 0))
    sample.seconds = float(received.get("seconds", 0.0))
    sample.mbps = float(received.get("bits_per_second", 0.0)) / 1e6
    sample.sent_mbps = float(sent.get("bits_per_second", 0.0)) / 1e6
    if protocol == "udp":
        sample.lost_percent = float(received.get("lost_percent", 0.0))
        sample.jitter_ms = float(received.get("jitter_ms", 0.0))
    elif "retransmits" in sent:
        sample.retransmits = int(sent["retransmits"])
    if error:
        sample.error = str(error)
    elif sample.mbps <= 0:
        sample.error = "iperf3 reported no data received"
    return sample


def describe_server(data: dict[str, Any]) -> dict[str, Any]:
    """What a server-side -J document says about the test that ran against it."""
    start: dict[str, Any] = data.get("start") or {}
    test: dict[str, Any] = start.get("test_start") or {}
    end: dict[str, Any] = data.get("end") or {}
    received: dict[str, Any] = end.get("sum_received") or end.get("sum") or {}
    sent: dict[str, Any] = end.get("sum_sent") or {}
    reverse = bool(test.get("reverse", 0))
    # the server receives on an upload and sends on a download (-R)
    mbps = float((sent if reverse else received).get("bits_per_second", 0.0)) / 1e6
    connected = start.get("connected") or [{}]
    return {
        "protocol": str(test.get("protocol", "?")).lower(),
        "streams": int(test.get("num_streams", 0)),
        "direction": "download (server sends, -R)" if reverse else "upload (server receives)",
        "seconds": float(test.get("duration", 0)),
        "mbps_at_server": mbps,
        "udp_lost_percent": received.get("lost_percent"),
        "remote": connected[0].get("remote_host"),
        "error": data.get("error"),
    }
