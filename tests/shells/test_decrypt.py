"""Capture replay against the reference decodes (tests/data/captures, see PROVENANCE.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from wgref.capture import read_capture
from wgref.decrypt import decode_capture
from wgref.keylog import KeyLog, load_keylog, parse_keylog

DATA = Path(__file__).parents[1] / "data" / "captures"
KEYS: dict[str, str] = json.loads((DATA / "wireshark-keys.json").read_text())
PING = "wireguard-ping-tcp.pcap"
PSK = "wireguard-psk.pcap"


def expected(name: str) -> list[dict[str, Any]]:
    frames: list[dict[str, Any]] = json.loads((DATA / name).read_text())["frames"]
    return frames


def decode(capture_name: str, keylog: KeyLog) -> list[dict[str, Any]]:
    return decode_capture(read_capture(DATA / capture_name), keylog).frames


def assert_frames_match(got: list[dict[str, Any]], want: list[dict[str, Any]]) -> None:
    assert [f["frame"] for f in got] == [f["frame"] for f in want]
    for mine, theirs in zip(got, want, strict=True):
        mine, theirs = dict(mine), dict(theirs)
        assert mine.pop("time") == pytest.approx(theirs.pop("time"), abs=1e-6)
        assert mine == theirs, f"frame {theirs['frame']}"


@pytest.mark.parametrize(
    "keyfile",
    ["wireguard-ping-tcp.initiator.keys", "wireguard-ping-tcp.responder.keys"],
)
def test_ping_tcp_from_each_side(keyfile: str) -> None:
    got = decode(PING, load_keylog(DATA / keyfile))
    assert_frames_match(got, expected("wireguard-ping-tcp.expected.json"))


def test_ping_tcp_dsb_needs_no_key_file() -> None:
    capture = read_capture(DATA / "wireguard-ping-tcp-dsb.pcapng")
    result = decode_capture(capture, parse_keylog(capture.embedded_keylog))
    assert_frames_match(result.frames, expected("wireguard-ping-tcp.expected.json"))
    assert result.failed_handshakes == [] and result.undecrypted == []


@pytest.mark.parametrize("keyfile", ["wireguard-psk.peerA.keys", "wireguard-psk.peerB.keys"])
def test_psk_from_each_side(keyfile: str) -> None:
    got = decode(PSK, load_keylog(DATA / keyfile))
    assert_frames_match(got, expected("wireguard-psk.expected.json"))


@pytest.mark.parametrize("keyfile", ["wireguard-psk.peerA.keys", "wireguard-psk.peerB.keys"])
def test_swapped_psk_lines_fail_both_handshakes(keyfile: str) -> None:
    lines = (DATA / keyfile).read_text().splitlines()
    psk_lines = [i for i, line in enumerate(lines) if line.startswith("PRESHARED_KEY")]
    assert len(psk_lines) == 2
    first, second = psk_lines
    lines[first], lines[second] = lines[second], lines[first]
    result = decode_capture(read_capture(DATA / PSK), parse_keylog("\n".join(lines)))
    responses = [f for f in result.frames if f["type"] == 2]
    assert [f["handshake_ok"] for f in responses] == [False, False]
    assert result.failed_handshakes == [2, 4]
    assert all("preshared_key" not in f for f in responses)


def test_alt_keys_differing_in_clamped_bits_give_the_same_result() -> None:
    text = "\n".join(
        [
            f"LOCAL_STATIC_PRIVATE_KEY={KEYS['Spriv_i_alt']}",
            f"REMOTE_STATIC_PUBLIC_KEY={KEYS['Spub_r']}",
            f"LOCAL_EPHEMERAL_PRIVATE_KEY={KEYS['Epriv_i0_alt']}",
            f"LOCAL_EPHEMERAL_PRIVATE_KEY={KEYS['Epriv_i1']}",
        ]
    )
    assert KEYS["Spriv_i_alt"] != KEYS["Spriv_i"]
    got = decode(PING, parse_keylog(text))
    assert_frames_match(got, expected("wireguard-ping-tcp.expected.json"))


def test_responder_static_key_alone_recovers_initiator_static_and_timestamps() -> None:
    got = decode(PING, parse_keylog(f"LOCAL_STATIC_PRIVATE_KEY={KEYS['Spriv_r']}"))
    initiations = {f["frame"]: f for f in got if f["type"] == 1}
    assert set(initiations) == {1, 13}
    assert initiations[1]["initiator_static_pub"] == KEYS["Spub_i"]
    assert initiations[1]["tai64n_nanoseconds"] == 356537872
    assert initiations[13]["tai64n_nanoseconds"] == 490514356
    transports = [f for f in got if f["type"] == 4]
    assert transports and all("inner" not in f for f in transports)


def test_mac1_identifies_the_receiver_with_public_keys_only() -> None:
    text = f"REMOTE_STATIC_PUBLIC_KEY={KEYS['Spub_r']}\nREMOTE_STATIC_PUBLIC_KEY={KEYS['Spub_i']}"
    got = {f["frame"]: f for f in decode(PING, parse_keylog(text))}
    assert got[1]["mac1_valid_for_responder_static_pub"] == KEYS["Spub_r"]
    assert got[13]["mac1_valid_for_responder_static_pub"] == KEYS["Spub_r"]
    assert got[2]["mac1_valid_for_initiator_static_pub"] == KEYS["Spub_i"]


def test_wrong_keys_complete_no_handshake() -> None:
    text = "\n".join(
        [
            f"LOCAL_STATIC_PRIVATE_KEY={KEYS['Spriv_i']}",
            f"REMOTE_STATIC_PUBLIC_KEY={KEYS['Spub_r']}",
            f"LOCAL_EPHEMERAL_PRIVATE_KEY={KEYS['Epriv_r2']}",  # belongs to another capture
        ]
    )
    result = decode_capture(read_capture(DATA / PING), parse_keylog(text))
    assert all("handshake_ok" not in f for f in result.frames if f["type"] == 2)
    assert len(result.undecrypted) == 18


def test_keyless_zeek_capture_is_framed() -> None:
    result = decode_capture(
        read_capture(DATA / "parse-only" / "zeek-spicy-wireguard" / "wireguard.pcap"), KeyLog()
    )
    kinds = [f["type"] for f in result.frames]
    assert kinds.count(1) == 1 and kinds.count(2) == 1 and kinds.count(4) == 170
    first = result.frames[0]
    assert int(first["sender_index"], 16) == 3294832738 and first["mac2_all_zero"]
    assert int(result.frames[1]["sender_index"], 16) == 182872200
    assert result.undecrypted == []  # no keys, so nothing is reported missing
