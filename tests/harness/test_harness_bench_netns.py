"""The bench against real namespaces (root only): a short wireguard-go <-> wireguard-go and raw
veth bench writes every output with positive numbers (speed is never asserted), and the
external client mode records a run of a wg-quick + wireguard-go client in another namespace.
Both leave nothing behind."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness import cleanup, naming
from harness.shell import run
from tests.harness.support import netns_marks
from tests.netns import wait_for

REPO = Path(__file__).resolve().parents[2]
TOOLS = ("ip", "nft", "wg", "wireguard-go", "iperf3", "ping", "ss")

pytestmark = [
    *netns_marks(*TOOLS),
]


def harness(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=REPO, text=True,
                          capture_output=True, timeout=timeout, check=False)


def test_bench_smoke(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "bench"
    result = harness("bench", "--pairs", "veth,wireguard-go:wireguard-go",
                     "--tests", "tcp-up,tcp-down-p4,udp-up", "--repeat", "1", "--time", "2",
                     "--udp-rate", "200M", "--out", str(out), timeout=240)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    for name in ("bench.json", "bench.md", "bench.png"):
        assert (out / name).stat().st_size > 0, name
    data = json.loads((out / "bench.json").read_text())
    assert data["pair_order"] == ["veth", "wireguard-go->wireguard-go"]
    assert len(data["cells"]) == 6
    for cell in data["cells"]:
        assert cell["status"] == "ok", cell
        assert cell["throughput_mbps"]["mean"] > 0
        sample = cell["samples"][0]
        assert sample["received_bytes"] > 0 and (out / sample["raw"]).is_file()
        assert 0 <= sample["steal_percent"] <= 100  # the host's, during the run
        if cell["pair"] != "veth":
            assert sample["client_cpu"] > 0 and sample["server_cpu"] > 0
            assert cell["mbit_per_cpu_second"]["mean"] > 0
            # the traffic went through the tunnel: the server peer counted at least as much
            assert sample["tunnel_bytes"] >= sample["received_bytes"]
        if cell["test"] == "udp-up":
            assert 0 <= sample["lost_percent"] <= 100
    assert "wireguard-go → wireguard-go" in (out / "bench.md").read_text()
    assert "context only" in result.stdout or "context only" in (out / "bench.md").read_text()
    assert set(data["prefixes"]) == {"veth", "wireguard-go->wireguard-go"}
    for prefix in data["prefixes"].values():
        assert cleanup.find(prefix, force=True).empty()


def test_external_client(tmp_path: Path) -> None:
    """A simulated external client: wg-quick + wireguard-go in a namespace of its own, which
    holds the outer end of the bench's link (--outside-ns) instead of the root namespace."""
    if shutil.which("wg-quick") is None:
        pytest.skip("needs wg-quick")
    prefix = naming.new_prefix()
    outside = naming.namespace(prefix, "ext")
    out = tmp_path / "external"
    log = tmp_path / "external.log"
    run(["ip", "netns", "add", outside])
    conf = tmp_path / f"{prefix}c.conf"  # wg-quick names the interface after the file
    env = {**os.environ, "WG_QUICK_USERSPACE_IMPLEMENTATION": "wireguard-go",
           "WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD": "1"}
    with log.open("w") as log_file:
        bench = subprocess.Popen(
            [sys.executable, "-m", "harness", "bench", "--external", "--outside-ns", outside,
             "--wait", "40", "--time", "2", "--out", str(out)],
            cwd=REPO, stdout=log_file, stderr=subprocess.STDOUT, text=True)
    try:
        run(["ip", "link", "set", "lo", "up"], ns=outside)
        wait_for(lambda: "waiting up to" in log.read_text() or bench.poll() is not None, 30,
                 "the bench to wait for the tunnel")
        assert bench.poll() is None, log.read_text()
        assert "wg-quick up" in log.read_text()
        conf.write_text((out / "wgbench.conf").read_text())
        conf.chmod(0o600)
        up = subprocess.run(["ip", "netns", "exec", outside, "wg-quick", "up", str(conf)],
                            env=env, capture_output=True, text=True, timeout=30, check=False)
        assert up.returncode == 0, up.stderr
        client = run(["iperf3", "-c", "198.19.77.1", "-t", "2", "-J", "--connect-timeout",
                      "3000"], ns=outside, timeout=30, check=False)
        assert client.ok, client.describe()
        assert bench.wait(30) == 0, log.read_text()
    finally:
        subprocess.run(["ip", "netns", "exec", outside, "wg-quick", "down", str(conf)],
                       env=env, capture_output=True, timeout=30, check=False)
        if bench.poll() is None:
            bench.terminate()
            bench.wait(15)
        run(["ip", "netns", "del", outside], check=False)
    data = json.loads((out / "bench-external.json").read_text())
    assert data["status"] == "ok", data
    assert data["test"]["protocol"] == "tcp" and data["test"]["mbps_at_server"] > 0
    assert data["test"]["remote"] == "198.19.77.2"
    assert data["server_cpu_seconds"] > 0
    assert json.loads((out / "iperf3-server.json").read_text())["end"]
    assert cleanup.find(prefix, force=True).empty()
    assert cleanup.find(data["prefix"], force=True).empty()  # the server side is gone
    assert not run(["ip", "link", "show", naming.ifname(data["prefix"], "o")],
                   check=False).ok  # so is the outer end of its link
