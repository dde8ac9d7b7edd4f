"""Secret files in cell folders: 0600 from creation, run-time ones removed with their manifest."""

from __future__ import annotations

import stat
from pathlib import Path

from harness.secrets import MANIFEST, discard_runtime_secrets, write_secret


def test_secrets_are_private_from_creation(tmp_path: Path) -> None:
    existing = tmp_path / "wireguard.keys"
    existing.write_text("old")
    existing.chmod(0o644)
    for path in (existing, tmp_path / "new.keys"):
        write_secret(path, "LOCAL_STATIC_PRIVATE_KEY=x\n", runtime=False)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert path.read_text() == "LOCAL_STATIC_PRIVATE_KEY=x\n"
    assert not (tmp_path / MANIFEST).exists()


def test_runtime_secrets_go_and_kept_ones_stay(tmp_path: Path) -> None:
    kept = write_secret(tmp_path / "wireguard.keys", "k\n", runtime=False)
    conf = write_secret(tmp_path / "wgc0.conf", "[Interface]\n", runtime=True)
    psk = write_secret(tmp_path / "psk-1.key", "p\n", runtime=True)
    write_secret(conf, "[Interface]\n", runtime=True)  # rewritten: listed once
    psk.unlink()  # already gone: not an error
    assert discard_runtime_secrets(tmp_path) == ["wgc0.conf", "psk-1.key"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [kept.name]
    assert discard_runtime_secrets(tmp_path) == []
