"""The captures a harness run hands to users (root only): TCP bulk through wgref, which sends
UDP GSO batches, to wireguard-go. Every transport frame of every ``*-decrypted.pcapng`` decodes
to an inner IP packet in stock tshark, `wgref decrypt` reads every raw capture with the run's
key log and exits 0, and the cell folder keeps only the secrets it must, mode 0600."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest

from harness.peers.uapi import wgref, wireguard_go
from harness.runner import Cell, CellRunner
from harness.scenario import load_scenario
from tests.harness.support import Quiet, netns_marks
from wgref.capture import read_capture
from wgref.decrypt import decode_capture
from wgref.keylog import load_keylog

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
TOOLS = ("ip", "nft", "wg", "wireguard-go", "dumpcap", "tshark")

pytestmark = [
    *netns_marks(*TOOLS),
]


def tshark_transport_frames(path: Path) -> tuple[int, int, int]:
    """(transport frames, those decoding to an inner IP packet, keepalives) in tshark."""
    rows = subprocess.run(
        ["tshark", "-r", str(path), "-Y", "wg.type == 4", "-T", "fields",
         "-e", "frame.protocols", "-e", "wg.keepalive"],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout.splitlines()
    fields = [row.split("\t") for row in rows]
    inner = sum(":wg:ip" in f[0] for f in fields)  # ip, and ipv6 as wg:ip:ipv6
    keepalives = sum(len(f) > 1 and f[1] != "" for f in fields)
    return len(fields), inner, keepalives


@pytest.fixture(scope="module")
def cell_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    driver = wgref()
    if driver.unavailable():
        pytest.skip(f"wgref cannot run here: {driver.unavailable()}")
    cell = Cell(driver, wireguard_go(), load_scenario(SCENARIOS / "mtu.toml"))
    result = CellRunner(cell, tmp_path_factory.mktemp("captures"), Quiet()).run()
    assert result.status == "pass", result.reason
    return Path(result.folder or "")


def test_raw_captures_hold_gso_batches_that_wgref_decrypt_reads(cell_folder: Path) -> None:
    keylog = cell_folder / "wireguard.keys"
    raw = sorted(p for p in cell_folder.glob("*.pcapng") if "-decrypted" not in p.name)
    assert [p.name for p in raw] == ["client.pcapng", "server.pcapng"]
    decoded = decode_capture(read_capture(raw[0]), load_keylog(keylog))
    assert decoded.splits, "no GSO super-frame in the client's capture: nothing was tested"
    for path in raw:
        result = subprocess.run(
            [sys.executable, "-m", "wgref.cli", "decrypt", str(path), "--keylog", str(keylog)],
            capture_output=True, text=True, timeout=300, check=False,
        )
        assert result.returncode == 0, f"{path.name}: {result.stderr}"


def test_every_transport_frame_decrypts_in_tshark(cell_folder: Path) -> None:
    decrypted = sorted(cell_folder.glob("*-decrypted.pcapng"))
    assert [p.name for p in decrypted] == ["client-decrypted.pcapng", "server-decrypted.pcapng"]
    for path in decrypted:
        transport, inner, keepalives = tshark_transport_frames(path)
        assert transport > 700, f"{path.name}: only {transport} transport frames"
        assert inner + keepalives == transport, (
            f"{path.name}: {transport - inner - keepalives} of {transport} transport frames "
            "stay encrypted")
        copy = read_capture(path)
        decoded = decode_capture(copy, load_keylog(cell_folder / "wireguard.keys"))
        assert decoded.splits == {}  # one WireGuard message per frame
        assert sum(f["type"] == 4 for f in decoded.frames) == transport


def test_only_the_needed_secrets_stay_and_are_private(cell_folder: Path) -> None:
    names = {p.name for p in cell_folder.iterdir()}
    assert not {n for n in names if n.endswith((".conf", ".key", ".json"))}, names
    assert not {n for n in names if n.endswith(".keys")} - {"wireguard.keys"}, names
    assert ".runtime-secrets" not in names
    for name in ["wireguard.keys", "client-decrypted.pcapng", "server-decrypted.pcapng"]:
        assert stat.S_IMODE((cell_folder / name).stat().st_mode) == 0o600, name
    assert "LOCAL_EPHEMERAL_PRIVATE_KEY=" in (cell_folder / "wireguard.keys").read_text()
