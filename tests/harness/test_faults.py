"""The fault peers themselves (no root): names, the drop-above-N family, errors that name
what is known, and that every fault installs beside all the others in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness.faults import FAULTS, PREFIX, checks_for, fault, fault_driver, fault_table
from harness.peers import registry, spec
from harness.peers.registry import all_drivers
from wgref.checks import ALL_CHECKS, Checks

REPO = Path(__file__).resolve().parents[2]


def python(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=60, check=False)


def test_names_and_the_drop_above_family() -> None:
    assert fault("drop-above-900").does == "drops datagrams above 900 bytes, both ways"
    assert fault("no-roam") is FAULTS["no-roam"]
    with pytest.raises(ValueError, match=r"unknown fault 'roam-badly' \(known: deliver-nothing"):
        fault("roam-badly")
    driver = fault_driver("no-roam+drop-udp")
    assert driver.name == PREFIX + "no-roam+drop-udp"
    assert driver.unavailable() is None
    assert "keylog" not in driver.capabilities
    # declared through the peer specification: wgref's capabilities and delivery view
    assert driver.capabilities == spec.peer("wgref").capabilities - {"keylog"}
    assert driver.delivery == spec.LISTENER


def test_fault_peers_join_a_run_only_by_name() -> None:
    drivers = all_drivers()
    assert not any(d.name.startswith(PREFIX) for d in drivers)
    (picked,) = registry.select(drivers, ["wgref-fault:no-roam"], "server")
    assert picked.name == "wgref-fault:no-roam"
    with pytest.raises(ValueError, match=r"^unknown server wgref-fault:nope: unknown fault "):
        registry.select(drivers, ["wgref-fault:nope"], "server")
    with pytest.raises(ValueError, match=r"^unknown client nosuch \(known: wgref, "):
        registry.select(drivers, ["nosuch"], "client")


def test_every_fault_installs_with_all_the_others() -> None:
    script = ("from harness.faults import FAULTS, checks_for\n"
              "for fault in FAULTS.values():\n"
              "    if fault.install is not None:\n        fault.install()\n"
              "print('installed', len(FAULTS), 'off:', "
              "repr(checks_for(list(FAULTS.values()))).count('False'))")
    together = python("-c", script)
    switched = sum(len(f.checks_off) for f in FAULTS.values())
    assert together.returncode == 0, together.stderr
    assert together.stdout == f"installed {len(FAULTS)} off: {switched}\n"


def test_defences_go_through_the_devices_switch() -> None:
    assert checks_for([FAULTS["no-crypto-rp"]]) == Checks(crypto_routing=False)
    assert checks_for([FAULTS["drop-udp"]]) is ALL_CHECKS
    assert checks_for([FAULTS["no-mac1"], FAULTS["no-replay-window"]]) == Checks(
        mac1=False, replay=False)


def test_the_fault_command_names_an_unknown_fault() -> None:
    result = python("-m", "harness.faults", "--fault", "no-roam,roam-badly", "-f", "wgx0")
    assert result.returncode == 2
    assert result.stderr.startswith("harness.faults: unknown fault 'roam-badly' (known: ")


def test_table_has_a_line_per_fault() -> None:
    lines = fault_table().splitlines()
    assert len(lines) == 2 + len(FAULTS)
    assert "| `no-roam` | keeps the first endpoint it learned (does not roam, WP 6.5) | " \
           "roaming/server follows the client |" in lines
