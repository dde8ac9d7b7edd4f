"""Tests for the Wireshark WireGuard key log reader and writer."""

import base64
import json
import os
import re
import stat
from pathlib import Path

import pytest

from wgref.keylog import (
    EphemeralSecret,
    KeyLog,
    KeyLogError,
    KeyLogWriter,
    format_handshake_lines,
    load_keylog,
    parse_keylog,
)

DATA = Path(__file__).parents[1] / "data" / "captures"
KEYS: dict[str, str] = json.loads((DATA / "wireshark-keys.json").read_text())


def k(name: str) -> bytes:
    return base64.b64decode(KEYS[name])


def test_wireshark_key_set_is_complete() -> None:
    assert len(KEYS) == 16
    assert all(len(k(name)) == 32 for name in KEYS)


def test_ping_tcp_initiator_keys() -> None:
    log = load_keylog(DATA / "wireguard-ping-tcp.initiator.keys")
    assert log.static_private_keys == [k("Spriv_i")]
    assert log.remote_static_public_keys == [k("Spub_r")]
    assert log.ephemerals == [EphemeralSecret(k("Epriv_i0")), EphemeralSecret(k("Epriv_i1"))]


def test_ping_tcp_responder_keys() -> None:
    log = load_keylog(DATA / "wireguard-ping-tcp.responder.keys")
    assert log.static_private_keys == [k("Spriv_r")]
    assert log.remote_static_public_keys == [k("Spub_i")]
    assert [e.private_key for e in log.ephemerals] == [k("Epriv_r0"), k("Epriv_r1")]
    assert all(e.preshared_key is None for e in log.ephemerals)


@pytest.mark.parametrize(
    ("name", "static", "remote", "ephemerals"),
    [
        ("peerA", "Spriv_i", "Spub_r", ["Epriv_i2", "Epriv_r3"]),
        ("peerB", "Spriv_r", "Spub_i", ["Epriv_r2", "Epriv_i3"]),
    ],
)
def test_psk_keys_bind_to_preceding_ephemeral(
    name: str, static: str, remote: str, ephemerals: list[str]
) -> None:
    log = load_keylog(DATA / f"wireguard-psk.{name}.keys")
    assert log.static_private_keys == [k(static)]
    assert log.remote_static_public_keys == [k(remote)]
    assert log.ephemerals == [
        EphemeralSecret(k(ephemerals[0]), k("psk2")),
        EphemeralSecret(k(ephemerals[1]), k("psk3")),
    ]


def test_comments_blank_lines_and_spaces() -> None:
    text = (
        "# a comment\n"
        "\n"
        f"   LOCAL_STATIC_PRIVATE_KEY = {KEYS['Spriv_i']}  \r\n"
        f"REMOTE_STATIC_PUBLIC_KEY=   {KEYS['Spub_r']}\n"
        "   # indented comment\n"
        f"  LOCAL_EPHEMERAL_PRIVATE_KEY  =  {KEYS['Epriv_i2']}\n"
        f"PRESHARED_KEY ={KEYS['psk2']}\n"
    )
    log = parse_keylog(text)
    assert log.static_private_keys == [k("Spriv_i")]
    assert log.remote_static_public_keys == [k("Spub_r")]
    assert log.ephemerals == [EphemeralSecret(k("Epriv_i2"), k("psk2"))]


def test_empty_text() -> None:
    assert parse_keylog("") == KeyLog()


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        (f"LOCAL_PRIVATE_KEY={KEYS['Spriv_i']}", "unknown key type 'LOCAL_PRIVATE_KEY'"),
        ("LOCAL_STATIC_PRIVATE_KEY", "no '='"),
        ("LOCAL_STATIC_PRIVATE_KEY=not*base64", "bad base64"),
        (f"LOCAL_STATIC_PRIVATE_KEY={KEYS['Spriv_i'][:-1]}", "bad base64"),
        (f"LOCAL_STATIC_PRIVATE_KEY={base64.b64encode(bytes(31)).decode()}", "31 bytes, not 32"),
        (f"PRESHARED_KEY={KEYS['psk2']}", "PRESHARED_KEY without a LOCAL_EPHEMERAL_PRIVATE_KEY"),
    ],
)
def test_bad_lines(line: str, problem: str) -> None:
    text = f"# header\nREMOTE_STATIC_PUBLIC_KEY={KEYS['Spub_r']}\n{line}\n"
    with pytest.raises(KeyLogError) as info:
        parse_keylog(text, source="test.keys")
    assert info.value.source == "test.keys"
    assert info.value.line == 3
    assert str(info.value).startswith("test.keys:3: ")
    assert problem in str(info.value)
    assert isinstance(info.value, ValueError)


def test_second_psk_for_one_ephemeral_is_rejected() -> None:
    text = (
        f"LOCAL_EPHEMERAL_PRIVATE_KEY={KEYS['Epriv_i2']}\n"
        f"PRESHARED_KEY={KEYS['psk2']}\n"
        f"PRESHARED_KEY={KEYS['psk3']}\n"
    )
    with pytest.raises(KeyLogError, match=r"^<keylog>:3: second PRESHARED_KEY"):
        parse_keylog(text)


def test_load_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.keys"
    path.write_text(f"\n\nFOO={KEYS['Spub_r']}\n")
    with pytest.raises(KeyLogError, match=rf"^{re.escape(str(path))}:3: unknown key type 'FOO'"):
        load_keylog(path)
    path.write_bytes(b"# ok\n\xff\n")
    with pytest.raises(KeyLogError, match=rf"^{re.escape(str(path))}:2: not UTF-8"):
        load_keylog(path)


def test_format_handshake_lines() -> None:
    lines = format_handshake_lines(k("Spriv_i"), k("Spub_r"), k("Epriv_i2"), k("psk2"))
    assert lines.splitlines() == [
        f"REMOTE_STATIC_PUBLIC_KEY={KEYS['Spub_r']}",
        f"LOCAL_STATIC_PRIVATE_KEY={KEYS['Spriv_i']}",
        f"LOCAL_EPHEMERAL_PRIVATE_KEY={KEYS['Epriv_i2']}",
        f"PRESHARED_KEY={KEYS['psk2']}",
    ]
    assert lines.endswith("\n")
    no_psk = format_handshake_lines(k("Spriv_i"), k("Spub_r"), k("Epriv_i0"), None)
    assert len(no_psk.splitlines()) == 3
    with pytest.raises(ValueError, match="32 bytes"):
        format_handshake_lines(k("Spriv_i"), b"short", k("Epriv_i0"), None)


def test_format_matches_psk_key_file() -> None:
    text = format_handshake_lines(k("Spriv_i"), k("Spub_r"), k("Epriv_i2"), k("psk2"))
    text += format_handshake_lines(k("Spriv_i"), k("Spub_r"), k("Epriv_r3"), k("psk3"))
    assert parse_keylog(text).merge(KeyLog()) == load_keylog(DATA / "wireguard-psk.peerA.keys")


def test_writer_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "wg.keys"
    with KeyLogWriter(path) as writer:
        writer.write_handshake(k("Spriv_i"), k("Spub_r"), k("Epriv_i0"), None)
        # Flushed per handshake: readable before close.
        assert load_keylog(path).ephemerals == [EphemeralSecret(k("Epriv_i0"))]
        writer.write_handshake(k("Spriv_i"), k("Spub_r"), k("Epriv_i2"), k("psk2"))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    with KeyLogWriter(path) as writer:  # appends
        writer.write_handshake(k("Spriv_r"), k("Spub_i"), k("Epriv_r3"), k("psk3"))
    log = load_keylog(path)
    assert log.ephemerals == [
        EphemeralSecret(k("Epriv_i0")),
        EphemeralSecret(k("Epriv_i2"), k("psk2")),
        EphemeralSecret(k("Epriv_r3"), k("psk3")),
    ]
    assert log.static_private_keys == [k("Spriv_i"), k("Spriv_i"), k("Spriv_r")]


def test_merge_keeps_order_and_drops_duplicates() -> None:
    a = load_keylog(DATA / "wireguard-ping-tcp.initiator.keys")
    b = load_keylog(DATA / "wireguard-ping-tcp.responder.keys")
    merged = a.merge(b).merge(a)
    assert merged.static_private_keys == [k("Spriv_i"), k("Spriv_r")]
    assert merged.remote_static_public_keys == [k("Spub_r"), k("Spub_i")]
    assert [e.private_key for e in merged.ephemerals] == [
        k("Epriv_i0"),
        k("Epriv_i1"),
        k("Epriv_r0"),
        k("Epriv_r1"),
    ]
    assert a.ephemerals == [EphemeralSecret(k("Epriv_i0")), EphemeralSecret(k("Epriv_i1"))]
