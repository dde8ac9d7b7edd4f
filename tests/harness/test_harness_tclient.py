"""The harness's driver for wgref's transparent client (`wgref-client`): status mapping and
configuration (no root needed), then real cells against wireguard-go in namespaces (root)."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from harness import cleanup
from harness.keys import keypair
from harness.peers.base import InterfaceConfig, PeerEntry
from harness.peers.registry import all_drivers
from harness.peers.tclient import (
    STATUS_DIR,
    TransparentClientDriver,
    _endpoint,
    state_from_status,
    wgref_client,
)
from harness.peers.uapi import wireguard_go
from harness.results import CellResult
from harness.runner import Cell, CellRunner, why_unsupported
from harness.scenario import load_scenario
from harness.shell import run
from tests.harness.support import Quiet

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
TOOLS = ("ip", "nft", "wg", "wireguard-go", "ping")


def _config(psk: str | None = None, keepalive: int = 0) -> InterfaceConfig:
    server = keypair()
    return InterfaceConfig(
        "wh0000wgc", keypair().private, ("198.19.77.2/24", "fd77::2/64"), None, 1420,
        [PeerEntry(server.public, ("198.19.77.1/32", "fd77::1/128"),
                   endpoint="198.18.2.2:51820", preshared_key=psk,
                   persistent_keepalive=keepalive)])


def test_registered_as_client_only() -> None:
    driver = next(d for d in all_drivers() if d.name == "wgref-client")
    assert "initiator" in driver.capabilities and "responder" not in driver.capabilities
    for cap in ("responder", "roaming", "reconfigure", "mtu", "keylog", "cookie"):
        assert cap not in driver.capabilities
        assert driver.limitations[cap]  # every missing capability says why


def test_state_from_status() -> None:
    config = _config(psk="x" * 44, keepalive=25)
    doc = {"peer": config.peers[0].public_key, "endpoint": "2001:db8:2::2:51820",
           "allowed_ips": ["198.19.77.1/32", "fd77::1/128"], "handshake_age": 3.4,
           "rx_bytes": 1000, "tx_bytes": 2000, "listen_port": 40000}
    before = time.time()
    state = state_from_status(doc, config, "PUB")
    after = time.time()
    peer = state.peers[config.peers[0].public_key]
    assert state.listen_port == 40000 and state.public_key == "PUB"
    assert peer.endpoint == "[2001:db8:2::2]:51820"
    # the age turned into a time: "now" (read between before and after) minus 3.4 s
    assert int(before - 3.4) <= peer.latest_handshake <= after - 3.4 + 1
    assert (peer.rx_bytes, peer.tx_bytes) == (1000, 2000)
    assert peer.preshared_key == "x" * 44 and peer.persistent_keepalive == 25
    never = state_from_status({**doc, "handshake_age": None, "endpoint": None}, config, "PUB")
    only = never.only_peer()
    assert only is not None and only.latest_handshake == 0 and only.endpoint is None


def test_endpoint_format() -> None:
    assert _endpoint("198.18.2.2:51820") == "198.18.2.2:51820"
    assert _endpoint("fd00::1:7") == "[fd00::1]:7"
    assert _endpoint("[fd00::1]:7") == "[fd00::1]:7"
    assert _endpoint(None) is None


def test_conf_has_no_app_list_unless_asked() -> None:
    config = _config()
    text = wgref_client().conf_text(config)
    assert "Address = 198.19.77.2/24, fd77::2/64" in text and "MTU = 1420" in text
    assert "AllowedApps" not in text  # every application is tunnelled
    apps = TransparentClientDriver(allowed_apps=("iperf3",)).conf_text(config)
    assert apps.rstrip().endswith("#@ws:AllowedApps = iperf3")


def test_unsupported_scenarios_say_why() -> None:
    client, server = wgref_client(), wireguard_go()
    if client.unavailable() or server.unavailable():
        pytest.skip(client.unavailable() or server.unavailable() or "")
    for name in ("keepalive", "roaming", "mtu"):
        reason = why_unsupported(Cell(client, server, load_scenario(SCENARIOS / f"{name}.toml")))
        assert reason and "wgref-client lacks" in reason, name
    for name in ("handshake", "psk", "psk-mismatch", "ipv6-outer"):
        assert why_unsupported(
            Cell(client, server, load_scenario(SCENARIOS / f"{name}.toml"))) is None


# ----------------------------------------------------------------- real cells (root)


def _netns_skip() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces, nftables, NFQUEUE)"
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        return f"not installed: {', '.join(missing)}"
    return wgref_client().unavailable()


def _run(scenario: str, out: Path) -> CellResult:
    reason = _netns_skip()
    if reason:
        pytest.skip(reason)
    cell = Cell(wgref_client(), wireguard_go(), load_scenario(SCENARIOS / f"{scenario}.toml"))
    result = CellRunner(cell, out, Quiet()).run()
    assert result.prefix not in run(["ip", "netns", "list"]).stdout
    assert cleanup.find(result.prefix, force=True).empty()
    assert not list(STATUS_DIR.glob(f"harness-{result.prefix}*"))
    return result


@pytest.mark.netns
def test_handshake_against_wireguard_go(tmp_path: Path) -> None:
    result = _run("handshake", tmp_path)
    assert result.status == "pass", result.reason
    steps = {s.label: s for s in result.steps}
    for label in ("tcp echo client -> server", "handshake seen", "udp echo client -> server",
                  "ping client -> server", "ping6 client -> server"):
        assert steps[label].status == "pass", steps[label].detail
    # flows the server starts cannot reach a transparent client: skipped with the reason
    assert steps["tcp echo server -> client"].status == "skipped"
    assert "accepts no tcp echo" in steps["tcp echo server -> client"].detail
    assert result.measurements["client.rx_bytes"] > 0
    log = (Path(result.folder or "") / "client-wgref-client.log").read_text()
    assert "handshake with peer" in log and ": tunnel (all applications)" in log


@pytest.mark.netns
def test_psk_mismatch_against_wireguard_go(tmp_path: Path) -> None:
    result = _run("psk-mismatch", tmp_path)
    assert result.status == "pass", result.reason
    assert [s.status for s in result.steps] == ["pass"] * 3
    assert "stayed 0 on client/server" in result.steps[-1].detail
    log = (Path(result.folder or "") / "client-wgref-client.log").read_text()
    assert "does not authenticate" in log


# ----------------------------------------------------------------- the bench pair


def test_bench_reports_the_client_beside_the_interface(tmp_path: Path) -> None:
    from harness.bench.model import DEFAULT_PAIRS, BenchRun, Cell, Sample, interface_pair
    from harness.bench.report import client_ratio_rows, markdown, write_json

    assert "wgref-client->wireguard-go" in [p.name for p in DEFAULT_PAIRS]
    assert interface_pair("wgref-client->wgref") == "wgref->wgref"
    assert interface_pair("wgref->wireguard-go") is None
    run = BenchRun(started="now", pairs=["wgref->wireguard-go", "wgref-client->wireguard-go",
                                         "wgref-client->wgref"],
                   tests=["tcp-up", "tcp-down"])
    figures = {("wgref->wireguard-go", "tcp-up"): [500.0, 520.0],
               ("wgref->wireguard-go", "tcp-down"): [800.0, 800.0],
               ("wgref-client->wireguard-go", "tcp-up"): [450.0, 486.0],
               ("wgref-client->wireguard-go", "tcp-down"): [400.0, 400.0],
               ("wgref-client->wgref", "tcp-up"): [100.0]}
    for (pair, test), values in figures.items():
        run.cells.append(Cell(pair, test, samples=[Sample(i + 1, mbps=v, received_bytes=1)
                                                   for i, v in enumerate(values)]))
    ratios = run.client_ratios()
    # wgref->wgref did not run: no reference for that client pair
    assert set(ratios) == {"wgref-client->wireguard-go"}
    assert ratios["wgref-client->wireguard-go"]["tcp-up"] == pytest.approx(468 / 510)
    assert ratios["wgref-client->wireguard-go"]["tcp-down"] == pytest.approx(0.5)
    header, body = client_ratio_rows(run)
    assert header[1:] == ["tcp-up", "tcp-down"]
    assert body == [["wgref-client → wireguard-go", "0.92× (0.90–0.93)", "0.50× (0.50–0.50)"]]
    assert "wgref-client ÷ wgref's TUN interface" in markdown(run)
    write_json(run, tmp_path / "bench.json")
    data = (tmp_path / "bench.json").read_text()
    assert '"ratios_client_vs_interface"' in data
