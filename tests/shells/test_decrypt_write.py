"""`wgref decrypt` as a user runs it: --write (decrypted inner packets), --write-dsb (one message
per frame, key log embedded), --json with names, and the error lines (missing files, a capture
cut short, a closed pipe)."""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from scapy.layers.inet import IP
from scapy.utils import RawPcapNgReader

from tests.shells.test_gso import KEYS, PING, super_frame_capture
from wgref.capture import read_capture
from wgref.decrypt import decode_capture
from wgref.keylog import load_keylog, parse_keylog


def wgref(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wgref.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def gso_capture(tmp_path: Path, captures: Path) -> Path:
    """Handshake, a super-frame of three messages (last a keepalive), then two single ones."""
    return super_frame_capture(tmp_path, captures, [[5, 7, 9], [10], [12]])


def read_pcapng(path: Path) -> list[tuple[bytes, int, list[bytes]]]:
    """(frame bytes, timestamp in ns, comments) of each frame."""
    frames = []
    for data, meta in RawPcapNgReader(str(path)):
        time_ns = ((meta.tshigh << 32) | meta.tslow) * 1_000_000_000 // meta.tsresol
        frames.append((data, time_ns, list(meta.comments or [])))
    return frames


def test_write_inner_packets(tmp_path: Path, captures: Path, gso_capture: Path) -> None:
    out = tmp_path / "inner.pcapng"
    result = wgref("decrypt", gso_capture, "--keylog", captures / KEYS, "--write", out)
    assert result.returncode == 0, result.stderr
    assert "wrote 4 decrypted inner packets" in result.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    frames = read_pcapng(out)
    outer = {d.frame: d for d in read_capture(gso_capture).datagrams}
    # The keepalive (counter 3) has no inner packet: 5, 7 (super-frame 3), 10, 12.
    expected = [(3, 1, "ab7df406"), (3, 2, "ab7df406"), (4, 3, "30d037d8"), (5, 4, "ab7df406")]
    assert len(frames) == len(expected)
    for (data, time_ns, comments), (frame, counter, receiver) in zip(
        frames, expected, strict=True
    ):
        packet = IP(data)
        assert packet.version == 4 and packet.len == len(data)  # padding removed
        assert time_ns == outer[frame].time_ns
        assert len(comments) == 1
        comment = comments[0].decode()
        assert f"outer frame {frame}" in comment
        assert f"counter {counter}" in comment and f"receiver {receiver}" in comment
    assert b"segment 1 of 3" in frames[0][2][0]


def test_write_dsb_one_message_per_frame(
    tmp_path: Path, captures: Path, gso_capture: Path
) -> None:
    out = tmp_path / "keyed.pcapng"
    result = wgref("decrypt", gso_capture, "--keylog", captures / KEYS, "--write-dsb", out)
    assert result.returncode == 0, result.stderr
    assert "wrote 7 frames (1 super-frames cut)" in result.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    copy = read_capture(out)
    assert [len(d.payload) for d in copy.datagrams] == [148, 92, 128, 128, 32, 96, 112]
    assert len({d.time_ns for d in copy.datagrams[2:5]}) == 1  # the super-frame's timestamp
    decoded = decode_capture(copy, parse_keylog(copy.embedded_keylog))
    assert decoded.splits == {} and decoded.undecrypted == []
    assert [f["counter"] for f in decoded.frames if f["type"] == 4] == [1, 2, 3, 3, 4]
    comments = [c for _, _, c in read_pcapng(out)]
    assert comments[2] == [
        b"wgref: segment 1 of 3 of frame 3, a UDP GSO super-frame (segment size 128)"
    ]


@pytest.mark.skipif(shutil.which("tshark") is None, reason="needs tshark (Wireshark)")
def test_write_dsb_decrypts_in_tshark(tmp_path: Path, captures: Path, gso_capture: Path) -> None:
    out = tmp_path / "keyed.pcapng"
    assert wgref("decrypt", gso_capture, "--keylog", captures / KEYS, "--write-dsb", out)
    fields = subprocess.run(
        ["tshark", "-r", str(out), "-Y", "wg.type == 4", "-T", "fields",
         "-e", "wg.counter", "-e", "frame.protocols", "-e", "wg.keepalive"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout.splitlines()
    rows = [line.split("\t") for line in fields]
    assert [r[0] for r in rows] == ["1", "2", "3", "3", "4"]
    assert [":wg:ip" in r[1] or r[2] != "" for r in rows] == [True] * 5


def test_json_names_types_and_protocols(captures: Path) -> None:
    result = wgref("decrypt", captures / PING, "--keylog", captures / KEYS, "--json")
    assert result.returncode == 0, result.stderr
    frames = [json.loads(line) for line in result.stdout.splitlines()]
    assert [f["type"] for f in frames[:3]] == ["initiation", "response", "transport"]
    assert frames[2]["inner"]["ip_proto"] == "icmp"
    tcp = frames[16]["inner"]
    assert tcp["ip_proto"] == "tcp" and tcp["dport"] == 443
    assert "SYN" in tcp["tcp_flags"]


def test_json_of_a_super_frame_names_its_segments(captures: Path, gso_capture: Path) -> None:
    result = wgref("decrypt", gso_capture, "--keylog", captures / KEYS, "--json")
    frames = [json.loads(line) for line in result.stdout.splitlines()]
    segments = [f for f in frames if f["frame"] == 3]
    assert [(f["segment"], f["segments"], f["segment_size"]) for f in segments] == [
        (1, 3, 128), (2, 3, 128), (3, 3, 128)]
    assert segments[2]["inner"]["kind"] == "keepalive"


def test_table_numbers_segments(captures: Path, gso_capture: Path) -> None:
    result = wgref("decrypt", gso_capture, "--keylog", captures / KEYS)
    rows = {line.split()[0]: line for line in result.stdout.splitlines()[1:]}
    assert {"3.1", "3.2", "3.3", "4", "5"} <= set(rows)
    assert "counter=3 keepalive" in rows["3.3"]


@pytest.mark.parametrize("missing", ["capture", "keylog"])
def test_a_missing_file_is_one_clear_line(tmp_path: Path, captures: Path, missing: str) -> None:
    capture = tmp_path / "nope.pcap" if missing == "capture" else captures / PING
    keylog = tmp_path / "nope.keys" if missing == "keylog" else captures / KEYS
    result = wgref("decrypt", capture, "--keylog", keylog)
    assert result.returncode == 1
    name = capture if missing == "capture" else keylog
    assert result.stderr.splitlines() == [
        f"wgref decrypt: {name}: cannot "
        f"{'open capture' if missing == 'capture' else 'read key log'} "
        "(No such file or directory)"
    ]


@pytest.mark.parametrize("cut", [7, 30])  # inside a record header, inside a frame's bytes
def test_a_capture_cut_short_is_reported(tmp_path: Path, captures: Path, cut: int) -> None:
    data = (captures / PING).read_bytes()
    # pcap: 24-byte file header, then 16-byte record headers; find the start of frame 13.
    offset = 24
    for _ in range(12):
        offset += 16 + int.from_bytes(data[offset + 8 : offset + 12], "little")
    path = tmp_path / "cut.pcap"
    path.write_bytes(data[: offset + cut])
    assert read_capture(path).cut_short_after == 12
    result = wgref("decrypt", path, "--keylog", captures / KEYS, "--json")
    assert result.returncode == 1
    assert f"wgref decrypt: {path}: capture cut short after frame 12" in result.stderr
    assert len(result.stdout.splitlines()) == 12  # what was there is still decoded


def test_a_complete_capture_is_not_cut_short(captures: Path) -> None:
    for name in (PING, "wireguard-ping-tcp-dsb.pcapng", "wireguard-psk.pcap"):
        assert read_capture(captures / name).cut_short_after is None


def test_a_pcapng_cut_short_is_reported(tmp_path: Path, captures: Path) -> None:
    data = (captures / "wireguard-ping-tcp-dsb.pcapng").read_bytes()
    path = tmp_path / "cut.pcapng"
    path.write_bytes(data[:-10])
    capture = read_capture(path)
    assert capture.cut_short_after == 21 and capture.frame_count == 21


def test_a_closed_pipe_ends_quietly(tmp_path: Path, captures: Path) -> None:
    # Enough output (about 800 lines, 120 kB) that `head` closes the pipe while wgref still writes.
    path = super_frame_capture(tmp_path, captures, [[3], [4], [5], [6]] * 200)
    command = f"{sys.executable} -m wgref.cli decrypt {path} --keylog {captures / KEYS} | head -n 1"
    result = subprocess.run(
        ["bash", "-o", "pipefail", "-c", command],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.stdout.startswith("   frame")
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr


def test_keylog_round_trips_through_the_dsb_format(captures: Path) -> None:
    from wgref.keylog import format_keylog

    log = load_keylog(captures / "wireguard-psk.peerA.keys")
    assert parse_keylog(format_keylog(log)) == log


def test_an_unwritable_output_is_one_clear_line(tmp_path: Path, captures: Path) -> None:
    out = tmp_path / "missing-folder" / "inner.pcapng"
    result = wgref("decrypt", captures / PING, "--keylog", captures / KEYS, "--write", out)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"wgref decrypt: cannot write {out}: No such file or directory"]
