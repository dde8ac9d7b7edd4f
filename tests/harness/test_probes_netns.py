"""A few fast probes against real servers in namespaces (root only): wireguard-go and wgref
pass them, a wgref with its replay defences switched off fails them with the observed
behaviour, and nothing is left behind."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from harness import cleanup
from harness.peers.base import PeerDriver
from harness.peers.uapi import FULL_CAPABILITIES, UapiDriver, wgref, wireguard_go
from harness.probes.registry import select
from harness.probes.runner import ProbeCell
from harness.probes.sloppy import sloppy_driver
from harness.results import CellResult
from harness.shell import run
from tests.ci import skip_or_fail
from tests.harness.support import Quiet, netns_marks

TOOLS = ("ip", "wg", "wireguard-go", "dumpcap")
FAST = ["initiation-replay", "transport-replay", "ciphertext-bitflip"]

pytestmark = [
    *netns_marks(*TOOLS),
]


def _run(driver: PeerDriver, names: list[str], out: Path) -> dict[str, CellResult]:
    results = {}
    for probe in select(names, slow=False):
        result = ProbeCell(driver, probe, out, Quiet()).run()
        assert result.prefix not in run(["ip", "netns", "list"]).stdout
        assert cleanup.find(result.prefix, force=True).empty()
        results[probe.name] = result
    return results


@pytest.mark.parametrize("factory", [wireguard_go, wgref], ids=["wireguard-go", "wgref"])
def test_correct_servers_pass(factory: object, tmp_path: Path) -> None:
    driver: PeerDriver = factory()  # type: ignore[operator]
    if driver.unavailable():
        skip_or_fail(str(driver.unavailable()))
    for name, result in _run(driver, FAST, tmp_path).items():
        assert result.status == "pass", f"{name}: {result.reason}"
        folder = Path(result.folder or "")
        assert (folder / "client.pcapng").stat().st_size > 0
        assert (folder / "events.jsonl").exists()
        assert result.measurements.get("pcap.client.to_server.initiation", 0) >= 1


def test_sloppy_server_fails_with_what_it_did(tmp_path: Path) -> None:
    driver = sloppy_driver(("replay", "timestamp"))
    results = _run(driver, [*FAST, "crypto-rp"], tmp_path)
    assert results["initiation-replay"].status == "fail"
    assert "answered the replayed initiation" in results["initiation-replay"].reason
    assert results["transport-replay"].status == "fail"
    assert "delivered 3 times" in results["transport-replay"].reason
    # its authentication and cryptokey routing are intact
    assert results["ciphertext-bitflip"].status == "pass", results["ciphertext-bitflip"].reason
    assert results["crypto-rp"].status == "pass", results["crypto-rp"].reason


def test_unsupported_without_a_view_of_deliveries(tmp_path: Path) -> None:
    """A server that is available but has no interface (no "icmp") and no delivery log:
    probes that judge deliveries are unsupported for that reason, not for another."""
    blind = UapiDriver("wgref-blind", lambda: [sys.executable, "-m", "wgref.cli"],
                       capabilities=FULL_CAPABILITIES - {"icmp"})
    assert blind.unavailable() is None
    (probe,) = select(["crypto-rp"], slow=False)
    result = ProbeCell(blind, probe, tmp_path, Quiet()).run()
    assert result.status == "unsupported"
    assert result.reason == "wgref-blind has no interface and no log of what it delivers"
    assert result.steps == []
