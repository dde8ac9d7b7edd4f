"""The HTML report from synthetic run folders (no root, no browser): what the page shows,
how it reads bench.json and probes, the comparison of two runs, and the `report` command."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from harness.cli import main
from harness.html import ReportError, load_run_dir, write_compare, write_report
from harness.html.model import parse_bench
from harness.html.page import render

PEERS = [
    {"name": "wgref", "version": "wgref v0.1.0", "available": True, "reason": None,
     "capabilities": ["initiator", "responder", "psk", "keylog"]},
    {"name": "wireguard-go", "version": "wireguard-go v0.0.20220316", "available": True,
     "reason": None, "capabilities": ["initiator", "responder", "psk"]},
    {"name": "boringtun-cli", "version": "unavailable", "available": False,
     "reason": "boringtun-cli is not installed (not on PATH)", "capabilities": []},
]
STEPS = [
    {"index": 1, "label": "tcp echo client -> server", "action": "tcp", "status": "pass",
     "detail": "65536 bytes echoed intact", "seconds": 0.12},
    {"index": 2, "label": "handshake seen", "action": "wait_handshake", "status": "pass",
     "detail": "client handshake at 1795630956", "seconds": 0.01},
    {"index": 3, "label": "ping6 client -> server", "action": "ping", "status": "skipped",
     "detail": "skipped: client lacks ipv6-inner", "seconds": 0.0},
]
FAIL_STEPS = [
    {"index": 1, "label": "tcp echo client -> server", "action": "tcp", "status": "fail",
     "detail": "timed out <script>alert(1)</script>", "seconds": 8.0},
]


def _cell(client: str, server: str, scenario: str, status: str, reason: str = "",
          folder: str | None = None, steps: list[dict[str, Any]] | None = None,
          artifacts: list[str] | None = None) -> dict[str, Any]:
    return {"client": client, "server": server, "scenario": scenario, "status": status,
            "reason": reason, "started": "2026-01-01T00:00:05+00:00",
            "ended": "2026-01-01T00:00:08+00:00", "seconds": 3.0, "prefix": "wh0001",
            "folder": folder, "steps": steps or [], "measurements": {"x.seconds": 1.5},
            "artifacts": artifacts or []}


def make_run(folder: Path, *, flip: bool = False, bench_shift: float = 0.0,
             extra_keys: bool = True) -> Path:
    """A run folder as `run` and `bench` leave it: results.json, cell folders, bench.json."""
    folder.mkdir(parents=True, exist_ok=True)
    cell_dir = folder / "wgref_wireguard-go" / "handshake"
    cell_dir.mkdir(parents=True, exist_ok=True)
    (cell_dir / "client-wgref.log").write_text(
        "".join(f"DEBUG: (wh0001wgc) line {i} <b>not bold</b>\n" for i in range(40)))
    (cell_dir / "server-wireguard-go.log").write_text("DEBUG: Device started\n")
    (cell_dir / "client-echo.log").write_text("echo\n")
    for name in ("client.pcapng", "client-decrypted.pcapng", "server.pcapng"):
        (cell_dir / name).write_bytes(b"\x0a\x0d\x0d\x0a")
    (cell_dir / "wireguard.keys").write_text("LOCAL_STATIC_PRIVATE_KEY=x\n")
    (cell_dir / "static.keys").write_text("LOCAL_STATIC_PRIVATE_KEY = x\n")
    artifacts = sorted(p.name for p in cell_dir.iterdir())
    first = "fail" if flip else "pass"
    cells = [
        _cell("wgref", "wireguard-go", "handshake", first,
              "step 1 (tcp): timed out" if flip else "skipped steps: ping6 client -> server",
              str(cell_dir), STEPS, artifacts),
        _cell("wireguard-go", "wireguard-go", "handshake", "pass", steps=STEPS),
        _cell("boringtun-cli", "wireguard-go", "handshake", "unsupported",
              "client boringtun-cli: boringtun-cli is not installed (not on PATH)"),
        _cell("wgref", "wireguard-go", "psk", "fail",
              "step 1 (tcp echo client -> server): timed out <script>alert(1)</script>",
              steps=FAIL_STEPS),
        _cell("wireguard-go", "wireguard-go", "psk", "error", "setup: dumpcap did not start"),
        _cell("boringtun-cli", "wireguard-go", "psk", "unsupported", "client boringtun-cli"),
        _cell("wgref", "wireguard-go", "probe-replay", "pass", steps=STEPS[:1]),
        _cell("wireguard-go", "wireguard-go", "probe-replay", "fail", "accepted a replay"),
    ]
    results: dict[str, Any] = {
        "started": "2026-01-01T00:00:00+00:00", "ended": "2026-01-01T00:01:00+00:00",
        "seconds": 60.0, "command": ["harness", "run"],
        "host": {"kernel": "6.1.0-test", "python": "3.11.7", "machine": "x86_64"},
        "peers": PEERS,
        "scenarios": [
            {"name": "handshake", "description": "A handshake completes & traffic flows.",
             "slow": False, "path": None},
            {"name": "psk", "description": "Both peers use the same preshared key.",
             "slow": False, "path": None},
            {"name": "probe-replay", "kind": "probe", "description": "Replays a data packet.",
             "rule": "A replayed transport data message is dropped (RFC 6479 window)."},
        ],
        "cells": cells, "interrupted": False,
        "summary": {"pass": 3, "fail": 2, "unsupported": 2, "error": 1},
    }
    if extra_keys:
        results["backend"] = "uapi (userspace)"
        results["a_future_key"] = {"anything": 1}
        results["cells"][0]["future_cell_key"] = 7
    (folder / "results.json").write_text(json.dumps(results, indent=1))
    (folder / "bench.json").write_text(json.dumps(bench_data(bench_shift)))
    return folder


def bench_data(shift: float = 0.0) -> dict[str, Any]:
    def row(client: str, server: str, samples: list[float]) -> dict[str, Any]:
        return {"client": client, "server": server, "metric": "tcp throughput",
                "unit": "Mbit/s", "samples": [s + shift for s in samples]}
    return {
        "started": "2026-01-01T00:02:00+00:00", "backend": "uapi", "repetitions": 3,
        "pairs": [
            row("wgref", "wgref", [410.0, 420.0, 430.0]),
            row("wireguard-go", "wireguard-go", [950.0, 1000.0, 1050.0]),
            row("wgref", "wireguard-go", [600.0, 610.0, 620.0]),
            row("wireguard-go", "wgref", [500.0, 505.0, 510.0]),
            {"client": "wgref", "server": "wgref", "metric": "handshakes", "unit": "1/s",
             "mean": 850.0, "stdev": 12.0},
            {"client": "wireguard-go", "server": "wireguard-go", "metric": "handshakes",
             "unit": "1/s", "mean": 2100.0, "stdev": 40.0},
        ],
        "baselines": [
            {"name": "wireguard-go (published)", "mbps": 7000, "unit": "Mbit/s",
             "hardware": "2× Xeon, 40 GbE", "source": "https://example.org/benchmarks"},
            {"name": "kernel (published)", "value": 9500, "unit": "Mbit/s",
             "hardware": "i7-8700k, 10 GbE"},
        ],
    }


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return make_run(tmp_path / "run")


def test_page_has_matrix_drilldowns_bench_and_metadata(run_dir: Path) -> None:
    page = write_report(run_dir).read_text()
    assert page.startswith("<!DOCTYPE html>")
    # one grid per scenario, every status with its symbol, the reason on hover
    for scenario in ("handshake", "psk", "probe-replay"):
        assert f'data-scenario="{scenario}"' in page
    for cls in ("s-pass", "s-fail", "s-error", "s-unsupported"):
        assert f"cell {cls}" in page
    assert 'title="boringtun-cli → wireguard-go · handshake: unsupported — client ' in page
    # every cell has a drill-down; the real folder's files are linked relative to the run
    assert len(re.findall(r'<dialog class="drill" id="dlg-\d+"', page)) == 8
    assert 'href="wgref_wireguard-go/handshake/client.pcapng"' in page
    assert "tshark -r wgref_wireguard-go/handshake/client.pcapng -o " \
        "wg.keylog_file:wgref_wireguard-go/handshake/wireguard.keys" in page
    assert "wgref decrypt wgref_wireguard-go/handshake/client.pcapng --keylog " \
        "wgref_wireguard-go/handshake/wireguard.keys" in page
    assert "Carry secrets (mode 0600; keys made for this run): wireguard.keys" in page
    assert "client · wgref" in page and "server · wireguard-go" in page
    assert "line 39 &lt;b&gt;not bold&lt;/b&gt;" in page  # logs inlined, escaped
    assert "tcp echo client -&gt; server" in page and "120 ms" in page  # steps and timings
    # nothing from the results can inject markup
    assert "<script>alert(1)</script>" not in page
    # bench: SVG charts, ratio, published baselines in their own panel
    assert page.count('<svg class="chart"') == 3
    assert "wgref / wireguard-go" in page and "0.42×" in page
    assert 'id="baselines"' in page and "foreign hardware" in page
    assert "2× Xeon, 40 GbE" in page
    # probes with their rule
    assert "RFC 6479 window" in page and 'id="probes"' in page
    # metadata
    for text in ("6.1.0-test", "wireguard-go v0.0.20220316", "uapi (userspace)",
                 "boringtun-cli is not installed"):
        assert text in page


def test_page_fetches_nothing(run_dir: Path) -> None:
    page = write_report(run_dir).read_text()
    assert not re.search(r'\bsrc="(?!data:)[a-z]+:', page)
    assert not re.search(r'<link[^>]+href="https?:', page)
    assert "@import" not in page and "url(http" not in page
    assert "default-src 'none'" in page


def test_bench_only_folder_and_empty_folder(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "bench.json").write_text(json.dumps(bench_data()))
    page = write_report(tmp_path).read_text()
    assert "wgref bench report" in page and 'id="matrix"' not in page
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ReportError):
        write_report(empty)
    assert main(["report", str(empty)]) == 2
    assert str(empty) in capsys.readouterr().err


def test_bench_shapes_are_read_tolerantly(tmp_path: Path) -> None:
    samples_only = parse_bench({"results": {"wgref -> wgref": {"values": [1, 2, 3]}}}, tmp_path)
    assert samples_only.rows[0].mean == 2.0 and samples_only.rows[0].stdev == 1.0
    assert samples_only.rows[0].label == "wgref -> wgref"
    listed = parse_bench([{"name": "x", "mean": "5.5", "std": 0.5, "unit": "Gbit/s"},
                          {"name": "no value"}], tmp_path)
    assert [(r.label, r.mean, r.stdev, r.unit) for r in listed.rows] == [
        ("x", 5.5, 0.5, "Gbit/s")]
    (tmp_path / "bench.png").write_bytes(b"\x89PNG")
    assert parse_bench({}, tmp_path).chart == "bench.png"


def test_unknown_keys_and_moved_folders(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "a")
    moved = tmp_path / "b"
    run_dir.rename(moved)  # cell folders in results.json are now stale absolute paths
    data = load_run_dir(moved)
    assert data.run is not None and len(data.run.cells) == 8
    page = render(data)
    assert 'href="wgref_wireguard-go/handshake/client.pcapng"' in page


def test_compare_marks_changed_cells_and_moved_throughput(tmp_path: Path) -> None:
    old = make_run(tmp_path / "old")
    new = make_run(tmp_path / "new", flip=True, bench_shift=0.0)
    bench = json.loads((new / "bench.json").read_text())
    bench["pairs"][0]["samples"] = [300.0, 305.0, 310.0]  # wgref -> wgref drops: moved
    bench["pairs"][1]["samples"] = [960.0, 1000.0, 1040.0]  # within the noise
    (new / "bench.json").write_text(json.dumps(bench))
    page = write_compare(old, new).read_text()
    assert (new / "compare.html").is_file()
    assert 'id="changes"' in page and "Compared with old" in page
    assert page.count("cell s-fail changed") == 3  # matrix, overview and the list of changes
    assert "was: pass" in page
    assert "1 bench row(s) moved beyond the noise" in page
    assert "beyond noise" in page and "within noise" in page
    assert main(["report", "--compare", str(old), str(new)]) == 0
    with pytest.raises(ReportError):
        write_compare(old, new, tmp_path / "elsewhere.html")


def test_report_command(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(run_dir)]) == 0
    assert (run_dir / "index.html").is_file()
    assert "index.html" in capsys.readouterr().out
    assert main(["report", str(run_dir / "missing")]) == 2
    assert f"{run_dir / 'missing'} is not a folder" in capsys.readouterr().err


def test_reads_the_bench_as_it_writes_bench_json(tmp_path: Path) -> None:
    """Contract with harness.bench: its bench.json (flat "results" and "baselines")."""
    from harness.bench.model import BenchRun, Cell, Sample
    from harness.bench.report import write_json

    bench = BenchRun(started="2026-01-01T00:00:00+00:00", pairs=[
        "veth", "wireguard-go->wireguard-go", "wgref->wireguard-go"], tests=["tcp-up"],
        host={"kernel": "6.1.0-test"}, peers={"wgref": "wgref v0.1.0"})
    for pair, values in (("veth", [9000.0, 9100.0]), ("wireguard-go->wireguard-go",
                         [1000.0, 1100.0]), ("wgref->wireguard-go", [500.0, 520.0])):
        bench.cells.append(Cell(pair, "tcp-up", samples=[
            Sample(i, mbps=v, received_bytes=int(v * 1e6 / 8)) for i, v in enumerate(values)]))
    bench.baselines = [{"label": "foreign hardware", "unit": "Mbit/s", "hardware": "i3",
                        "results": [{"name": "x", "implementation": "y", "upload": 879,
                                     "download": 892}]}]
    write_json(bench, tmp_path / "bench.json")
    data = load_run_dir(tmp_path)
    assert data.bench is not None
    rows = {r.label: r for r in data.bench.rows}
    assert set(rows) == {"raw veth (no tunnel)", "wireguard-go → wireguard-go",
                         "wgref → wireguard-go"}
    assert rows["wgref → wireguard-go"].mean == 510.0
    assert rows["wgref → wireguard-go"].group == "tcp-up"
    assert [(b.group, b.value) for b in data.bench.baselines] == [
        ("upload", 879.0), ("download", 892.0)]
    assert data.bench.meta["kernel"] == "6.1.0-test"
    page = render(data)
    assert "0.49×" in page  # 510 / 1050
    assert "foreign hardware" in page
