"""Files that carry secrets in a cell folder (a folder people attach to bug reports).

What stays after a cell: ``wireguard.keys`` (the key log the peers wrote: it decrypts the
captures) and the ``*-decrypted.pcapng`` captures that embed it; ``static.keys`` (both test
peers' static private keys: it reads the initiations) only where no peer wrote a key log.
Those are mode 0600. What the peers need only while they run (interface configurations with
private keys and preshared keys, helper specs, key files for `wg set`) is written with
:func:`write_secret` (``runtime=True``) and removed by :func:`discard_runtime_secrets` once the
peers have stopped. The keys are generated for each run (harness/keys.py).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Final

__all__ = ["KEPT_SECRETS", "MANIFEST", "discard_runtime_secrets", "write_secret"]

MANIFEST: Final = ".runtime-secrets"  # names of this folder's run-time-only secret files
KEPT_SECRETS: Final = ("wireguard.keys", "static.keys", "*-decrypted.pcapng")


def write_secret(path: Path, text: str, *, runtime: bool) -> Path:
    """Write ``text`` to a file that is mode 0600 from the moment it exists. ``runtime``: the
    file is needed only while the peers run, and is removed with the cell's other ones."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_TRUNC
    with os.fdopen(fd, "w") as out:
        out.write(text)
    if runtime:
        with (path.parent / MANIFEST).open("a") as manifest:
            manifest.write(path.name + "\n")
    return path


def discard_runtime_secrets(folder: Path) -> list[str]:
    """Remove the run-time-only secret files written into ``folder``; returns their names."""
    manifest = folder / MANIFEST
    try:
        names = list(dict.fromkeys(manifest.read_text().splitlines()))
    except FileNotFoundError:
        return []
    for name in names:
        with contextlib.suppress(FileNotFoundError):
            (folder / name).unlink()
    manifest.unlink()
    return names
