"""Report writing and the unsupported-cell logic (no root needed)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

from harness.peers.base import InterfaceConfig, PeerDriver, PeerInstance
from harness.report import markdown, matrix, write_all
from harness.results import CellResult, PeerInfo, RunResult, StepResult, load_results
from harness.runner import Cell, why_unsupported
from harness.scenario import parse_scenario
from harness.topology import Host


def _run() -> RunResult:
    run = RunResult(started="2026-01-01T00:00:00+00:00", ended="2026-01-01T00:01:00+00:00",
                    seconds=60.0)
    run.peers = [PeerInfo("a", "1", True, None, ["initiator"]),
                 PeerInfo("b", "unavailable", False, "not installed", [])]
    run.scenarios = [{"name": "handshake"}, {"name": "psk"}]
    ok = CellResult("a", "a", "handshake", "pass", "", seconds=2.0,
                    steps=[StepResult(1, "tcp", "tcp", "pass", "65536 bytes", 0.1)],
                    measurements={"x.seconds": 1.5})
    bad = CellResult("a", "a", "psk", "fail", "step 1 (tcp): timed out (expected success)",
                     steps=[StepResult(1, "tcp", "tcp", "fail", "timed out", 8.0)])
    unsup = CellResult("b", "a", "handshake", "unsupported", "client b: not installed")
    run.cells = [ok, bad, unsup]
    return run


def test_reports_are_written(tmp_path: Path) -> None:
    run = _run()
    paths = write_all(run, tmp_path)
    data = json.loads(paths["json"].read_text())
    assert data["summary"] == {"pass": 1, "fail": 1, "unsupported": 1, "error": 0}
    assert data["cells"][1]["reason"].startswith("step 1 (tcp)")
    root = ET.parse(paths["junit"]).getroot()
    assert root.get("tests") == "3" and root.get("failures") == "1" and root.get("skipped") == "1"
    failure = root.find(".//testcase[@name='a -> a']/failure")
    assert failure is not None and "expected success" in (failure.get("message") or "")
    text = paths["markdown"].read_text()
    assert "| a -> a | ✓ pass | ✗ fail |" in text
    assert "client b: not installed" in text
    again = load_results(paths["json"])
    assert [c.status for c in again.cells] == ["pass", "fail", "unsupported"]
    assert again.cells[0].steps[0].detail == "65536 bytes"


def test_matrix_rows_and_columns() -> None:
    header, rows = matrix(_run())
    assert header == ["client -> server", "handshake", "psk"]
    assert rows == [["a -> a", "pass", "fail"], ["b -> a", "unsupported", ""]]
    assert "Cells that did not pass" in markdown(_run())
    assert not _run().counts()["error"]
    assert [c.key for c in _run().failed] == ["a -> a: psk"]


class FakeDriver(PeerDriver):
    def __init__(self, name: str, caps: set[str], reason: str | None = None) -> None:
        self.name = name
        self.capabilities = frozenset(caps)
        self.limitations = {"psk": "no PSK API"}
        self.reason = reason

    def unavailable(self) -> str | None:
        return self.reason

    def version(self) -> str:
        return "0"

    def start(self, host: Host, config: InterfaceConfig, folder: Path) -> PeerInstance:
        raise NotImplementedError


def test_unsupported_reasons() -> None:
    psk = parse_scenario('[config]\npsk = true\n[[steps]]\naction = "tcp"\n')
    full = FakeDriver("full", {"initiator", "responder", "psk"})
    no_psk = FakeDriver("nopsk", {"initiator", "responder"})
    gone = FakeDriver("gone", set(), reason="not installed")
    assert why_unsupported(Cell(full, full, psk)) is None
    assert why_unsupported(Cell(no_psk, full, psk)) == "client nopsk lacks psk (no PSK API)"
    assert why_unsupported(Cell(full, gone, psk)) == "server gone: not installed"
    responder_only = FakeDriver("resp", {"responder", "psk"})
    assert "client resp lacks initiator" in (why_unsupported(Cell(responder_only, full, psk))
                                             or "")
