"""boringtun-cli and current wireguard-go, built by harness.tools, as real peers of wgref in
network namespaces (root only): scenario cells both ways, what boringtun's counters cannot show,
probes, and a bench with both reference pairs and wgref's ratios to each."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness import cleanup, naming
from harness.keys import keypair
from harness.peers.base import InterfaceConfig, PeerDriver, PeerEntry, Unsupported
from harness.peers.uapi import boringtun_cli, wgref, wireguard_go
from harness.probes.registry import select
from harness.probes.runner import ProbeCell
from harness.results import CellResult
from harness.runner import Cell, CellRunner
from harness.scenario import load_scenario
from harness.shell import run
from harness.topology import Topology
from tests.harness.conftest import REPO, needs_tools
from tests.harness.support import Quiet, netns_marks

SCENARIOS = REPO / "scenarios"
TOOLS = ("ip", "nft", "wg", "dumpcap", "ping", "iperf3")

pytestmark = [
    *netns_marks(*TOOLS),
    needs_tools("boringtun-cli", "wireguard-go"),
]
PINNED = {"boringtun-cli": boringtun_cli, "wireguard-go": wireguard_go}


def _cell(client: PeerDriver, server: PeerDriver, scenario: str, out: Path) -> CellResult:
    result = CellRunner(Cell(client, server, load_scenario(SCENARIOS / f"{scenario}.toml")),
                        out, Quiet()).run()
    assert result.prefix not in run(["ip", "netns", "list"]).stdout
    assert cleanup.find(result.prefix, force=True).empty()
    return result


@pytest.mark.parametrize("name", sorted(PINNED))
@pytest.mark.parametrize("wgref_is", ["client", "server"])
def test_handshake_with_wgref(name: str, wgref_is: str, tmp_path: Path) -> None:
    """The handshake scenario both ways (.ci/run runs the other core scenarios)."""
    peer = PINNED[name]()
    assert peer.unavailable() is None, peer.unavailable()
    client, server = (wgref(), peer) if wgref_is == "client" else (peer, wgref())
    result = _cell(client, server, "handshake", tmp_path)
    assert result.status == "pass", result.reason
    assert all(s.status == "pass" for s in result.steps), result.steps
    role = "server" if wgref_is == "client" else "client"
    log = Path(result.folder or "") / f"{role}-{name}.log"
    assert log.stat().st_size > 0  # the peer ran and logged in the foreground


def test_boringtun_server_keepalive_skips_only_the_passive_step(tmp_path: Path) -> None:
    """Its rx counter ignores keepalives (inner bytes only): the passive step is skipped with
    that reason; the persistent keepalive and the NAT control still run."""
    result = _cell(wgref(), boringtun_cli(), "keepalive", tmp_path)
    assert result.status == "pass", result.reason
    skipped = [s for s in result.steps if s.status == "skipped"]
    assert [s.label for s in skipped] == ["passive keepalive from the client"]
    assert "boringtun-cli lacks wire-counters (its UAPI rx_bytes/tx_bytes count the inner " \
           "IP packets only" in skipped[0].detail
    # every other step of the scenario (scenarios/keepalive.toml) ran and passed
    assert len(result.steps) == len(load_scenario(SCENARIOS / "keepalive.toml").steps)
    assert [s.status for s in result.steps if s not in skipped] == ["pass"] * (
        len(result.steps) - 1)


def test_boringtun_client_is_never_sent_a_peer_update(tmp_path: Path) -> None:
    """`wg set` on an existing peer would panic boringtun: the keepalive cell is unsupported
    with that reason, and the driver itself refuses the update (the peer stays healthy)."""
    result = _cell(boringtun_cli(), wgref(), "keepalive", tmp_path)
    assert result.status == "unsupported"
    assert "boringtun-cli lacks peer-update (`wg set` on an existing peer panics" in result.reason
    topo = Topology(naming.new_prefix())
    try:
        host = topo.add_host("client")
        topo.up()
        config = InterfaceConfig(naming.ifname(topo.prefix, "wgc"), keypair().private,
                                 ("198.19.77.2/24",), None, 1420,
                                 [PeerEntry(keypair().public, ("198.19.77.1/32",))])
        instance = boringtun_cli().start(host, config, tmp_path)
        try:
            with pytest.raises(Unsupported, match="lacks peer-update"):
                instance.set_peer(config.peers[0].public_key, **{"persistent-keepalive": "1"})
            assert instance.problem() is None
            assert instance.state().peers[config.peers[0].public_key] is not None
        finally:
            instance.stop()
    finally:
        topo.down()


@pytest.mark.parametrize("name", sorted(PINNED))
def test_fast_probes_pass(name: str, tmp_path: Path) -> None:
    for probe in select(["initiation-replay", "transport-replay", "ciphertext-bitflip"],
                        slow=False):
        result = ProbeCell(PINNED[name](), probe, tmp_path, Quiet()).run()
        assert result.status == "pass", f"{probe.name}: {result.reason}"
        assert cleanup.find(result.prefix, force=True).empty()


def test_bench_ratios_to_both_references(tmp_path: Path) -> None:
    """A one-second bench of both reference pairs and wgref against each: bench.json carries
    wgref's ratio to each reference (the same test with the reference in wgref's place)."""
    out = tmp_path / "bench"
    pairs = "boringtun:boringtun,wireguard-go:wireguard-go,wgref:boringtun,wgref:wireguard-go"
    result = subprocess.run(
        [sys.executable, "-m", "harness", "bench", "--pairs", pairs, "--tests", "tcp-up",
         "--repeat", "1", "--time", "1", "--out", str(out)],
        cwd=REPO, text=True, capture_output=True, timeout=240, check=False)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    data = json.loads((out / "bench.json").read_text())
    assert data["pair_order"] == ["boringtun-cli->boringtun-cli", "wireguard-go->wireguard-go",
                                  "wgref->boringtun-cli", "wgref->wireguard-go"]
    means = {c["pair"]: c["throughput_mbps"]["mean"] for c in data["cells"]}
    assert all(v > 0 for v in means.values()), means
    refs = data["ratios_vs_reference"]
    assert refs["boringtun-cli"]["wgref->boringtun-cli"]["tcp-up"] == pytest.approx(
        means["wgref->boringtun-cli"] / means["boringtun-cli->boringtun-cli"])
    assert refs["wireguard-go"]["wgref->wireguard-go"]["tcp-up"] == pytest.approx(
        means["wgref->wireguard-go"] / means["wireguard-go->wireguard-go"])
    assert "wgref->wireguard-go" not in refs["boringtun-cli"]  # its counterpart was not run
    assert "boringtun-cli (boringtun 0.7.1)" in (out / "bench.md").read_text()
    assert "## wgref ÷ boringtun-cli (same run)" in (out / "bench.md").read_text()
