"""One cell never ends the run (root, real namespaces and wireguard-go): a driver that raises
mid-start, or an action that raises, makes that cell an *error* with the traceback in its
folder; the next cells run, results.json holds all of them and the exit code says failed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from harness import cleanup
from harness.cli import main
from harness.peers import spec
from harness.peers.base import InterfaceConfig, PeerDriver, PeerInstance
from harness.peers.spec import FULL, PeerSpec
from harness.peers.uapi import UapiDriver
from harness.scenario import Step
from harness.steps import ACTIONS, Action
from harness.topology import Host
from tests.harness.support import netns_marks
from tests.netns import wait_for

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
TOOLS = ("ip", "nft", "wg", "wireguard-go", "dumpcap")

pytestmark = [
    *netns_marks(*TOOLS),
]


class ResetMidStart(UapiDriver):
    """wireguard-go that is up and configured, then loses its control connection (as a
    kernel-vm console reset did) before start() returns."""

    def start(self, host: Host, config: InterfaceConfig, folder: Path) -> PeerInstance:
        super().start(host, config, folder)
        raise ConnectionResetError(104, "Connection reset by peer (console)")


def _broken(entry: PeerSpec) -> PeerDriver:
    return ResetMidStart(entry.name, spec.on_path("wireguard-go"))


def _explode(ctx: object, step: Step) -> str:
    raise RuntimeError("the action's own bug")


EXPLODE = """
name = "explode"
timeout = 30
[[steps]]
action = "tcp"
[[steps]]
action = "explode"
label = "an action with a bug"
"""


def test_a_driver_or_step_that_raises_is_that_cells_error_and_the_run_goes_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spec, "PEERS", (*spec.PEERS, PeerSpec("reset-mid-start", _broken,
                                                              FULL)))
    monkeypatch.setitem(ACTIONS, "explode", Action("explode", 5.0, frozenset(), _explode))
    scenarios = tmp_path / "scenarios"
    scenarios.mkdir()
    shutil.copy(SCENARIOS / "handshake.toml", scenarios)
    (scenarios / "explode.toml").write_text(EXPLODE)
    out = tmp_path / "out"
    code = main(["--scenarios-dir", str(scenarios), "run", "--plain", "--out", str(out),
                 "--client", "reset-mid-start,wireguard-go", "--server", "wireguard-go"])
    assert code == 1
    cells = {(c["client"], c["scenario"]): c
             for c in json.loads((out / "results.json").read_text())["cells"]}
    assert len(cells) == 4  # every planned cell ran and is recorded
    assert cells[("wireguard-go", "handshake")]["status"] == "pass"
    for scenario in ("handshake", "explode"):
        broken = cells[("reset-mid-start", scenario)]
        assert broken["status"] == "error"
        assert "ConnectionResetError" in broken["reason"]
        assert "traceback in traceback.txt" in broken["reason"]
        assert "traceback.txt" in broken["artifacts"]
        text = (out / broken["folder"] / "traceback.txt").read_text()
        assert "in start\n" in text and "Connection reset by peer (console)" in text
    crashed = cells[("wireguard-go", "explode")]
    assert crashed["status"] == "error"
    assert [s["status"] for s in crashed["steps"]] == ["pass", "error"]
    assert crashed["reason"].startswith("step 2 (an action with a bug): RuntimeError")
    assert "the action's own bug" in (out / crashed["folder"] / "traceback.txt").read_text()
    # the half-started peer went with its namespace: nothing is left behind
    for cell in cells.values():
        assert cleanup.find(cell["prefix"], force=True).empty()


IDLE = """
name = "idle"
timeout = 120
[[steps]]
action = "tcp"
[[steps]]
action = "sleep"
seconds = 90
reason = "the run is stopped meanwhile"
"""


def test_sigterm_stops_cells_running_at_once_and_each_tears_down(tmp_path: Path) -> None:
    """--jobs 4, four cells idling at once: SIGTERM ends the run (exit 130), every cell is
    recorded as interrupted, and nothing of any of them is left behind."""
    import signal
    import subprocess
    import sys

    from harness import registry_files

    scenarios = tmp_path / "scenarios"
    scenarios.mkdir()
    (scenarios / "idle.toml").write_text(IDLE)
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness", "--scenarios-dir", str(scenarios), "run", "--plain",
         "--jobs", "4", "--client", "wgref,wireguard-go", "--server", "wgref,wireguard-go",
         "--out", str(out)],
        cwd=Path(__file__).resolve().parents[2], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        # the head cell's progress streams live: its sleep step starts after the tcp step
        for line in proc.stdout:
            if "1. tcp" in line:
                break
        def owned() -> list[str]:
            return [p for p in registry_files.owned_prefixes()
                    if (registry_files.OWNER_DIR / p).read_text().strip() == str(proc.pid)]

        wait_for(lambda: len(owned()) >= 4, 60, "all four cells to be live", step=0.1)
        assert len(owned()) == 4
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    data = json.loads((out / "results.json").read_text())
    assert data["interrupted"] is True
    assert len(data["cells"]) == 4
    assert all(c["status"] == "error" and "interrupted" in c["reason"] for c in data["cells"])
    for cell in data["cells"]:
        assert cleanup.find(cell["prefix"], force=True).empty(), cell["prefix"]
