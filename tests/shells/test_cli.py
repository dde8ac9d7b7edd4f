"""The `wgref` command line: key tools and `wgref decrypt`, run as a user would."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

DATA = Path(__file__).parents[1] / "data" / "captures"


def wgref(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wgref.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_genkey_pubkey_genpsk() -> None:
    private = wgref("genkey")
    assert private.returncode == 0
    raw = base64.b64decode(private.stdout.strip())
    assert len(raw) == 32 and raw[0] & 7 == 0 and raw[31] & 0xC0 == 0x40  # clamped
    public = wgref("pubkey", stdin=private.stdout)
    assert public.returncode == 0 and len(base64.b64decode(public.stdout.strip())) == 32
    assert len(base64.b64decode(wgref("genpsk").stdout.strip())) == 32


def test_pubkey_matches_wireshark_key_table() -> None:
    keys = json.loads((DATA / "wireshark-keys.json").read_text())
    assert wgref("pubkey", stdin=keys["Spriv_r"] + "\n").stdout.strip() == keys["Spub_r"]


def test_pubkey_rejects_garbage_without_traceback() -> None:
    result = wgref("pubkey", stdin="not a key\n")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "correct length or format" in result.stderr


def test_decrypt_json_prints_one_object_per_frame() -> None:
    result = wgref(
        "decrypt",
        str(DATA / "wireguard-ping-tcp.pcap"),
        "--keylog",
        str(DATA / "wireguard-ping-tcp.responder.keys"),
        "--json",
    )
    assert result.returncode == 0, result.stderr
    frames = [json.loads(line) for line in result.stdout.splitlines()]
    assert [f["frame"] for f in frames] == list(range(1, 23))
    assert frames[16]["inner"]["dport"] == 443


def test_decrypt_table_from_dsb() -> None:
    result = wgref("decrypt", str(DATA / "wireguard-ping-tcp-dsb.pcapng"))
    assert result.returncode == 0, result.stderr
    assert "handshake ok" in result.stdout
    assert "icmp type 8" in result.stdout and "keepalive" in result.stdout


def test_decrypt_wrong_psk_is_a_clear_error(tmp_path: Path) -> None:
    lines = (DATA / "wireguard-psk.peerA.keys").read_text().replace(
        "PRESHARED_KEY=//////////////////////////////////////////8=",
        "PRESHARED_KEY=" + base64.b64encode(bytes(range(32))).decode(),
    )
    keys = tmp_path / "wrong.keys"
    keys.write_text(lines)
    result = wgref("decrypt", str(DATA / "wireguard-psk.pcap"), "--keylog", str(keys))
    assert result.returncode == 1
    assert "wrong preshared key" in result.stderr and "Traceback" not in result.stderr


def test_decrypt_bad_inputs_are_clear_errors(tmp_path: Path) -> None:
    bad_keys = tmp_path / "bad.keys"
    bad_keys.write_text("LOCAL_STATIC_PRIVATE_KEY=AAAA\n")
    result = wgref("decrypt", str(DATA / "wireguard-psk.pcap"), "--keylog", str(bad_keys))
    assert result.returncode == 1 and f"{bad_keys}:1" in result.stderr
    missing = wgref("decrypt", str(tmp_path / "nope.pcap"))
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    assert f"{tmp_path / 'nope.pcap'}: cannot open capture" in missing.stderr
    not_capture = tmp_path / "x.pcap"
    not_capture.write_text("hello")
    result = wgref("decrypt", str(not_capture))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"{not_capture}: not a pcap or pcapng capture" in result.stderr


def test_usage_and_version() -> None:
    bare = wgref()
    assert bare.returncode == 2 and "usage: wgref" in bare.stdout + bare.stderr
    assert "usage" in wgref("--help").stdout
    assert wgref("--version").stdout.startswith("wgref v")
    extra = wgref("genkey", "extra")
    assert extra.returncode == 1 and "Usage: wgref genkey" in extra.stdout + extra.stderr


def test_interface_errors_name_the_interface() -> None:
    long_name = "averyveryverylongname0"  # IFNAMSIZ is 16 with the NUL
    result = wgref("-f", long_name)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"wgref: {long_name}: invalid interface name '{long_name}'" in result.stderr
    slash = wgref("-f", "a/b")
    assert slash.returncode == 1
    assert "wgref: a/b: invalid interface name 'a/b'" in slash.stderr


def test_client_errors_name_file_line_key_and_option(tmp_path: Path) -> None:
    conf = tmp_path / "bad.conf"
    conf.write_text("[Interface]\nPrivateKey = nope\n")
    result = wgref("client", str(conf))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"wgref client: {conf}:2: PrivateKey: not a base64 key" in result.stderr
    bogus = wgref("client", "--bogus")
    assert bogus.returncode == 2
    assert "unrecognized arguments: --bogus" in bogus.stderr
