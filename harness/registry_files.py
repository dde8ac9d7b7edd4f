"""Owner files of running cells (/run/wgref-harness/PREFIX holds the owner's pid), so that
`python -m harness cleanup` never removes what a live run is using."""

from __future__ import annotations

import os
from pathlib import Path

OWNER_DIR = Path("/run/wgref-harness")


def claim(prefix: str) -> None:
    OWNER_DIR.mkdir(parents=True, exist_ok=True)
    (OWNER_DIR / prefix).write_text(f"{os.getpid()}\n")


def release(prefix: str) -> None:
    (OWNER_DIR / prefix).unlink(missing_ok=True)


def owner_alive(prefix: str) -> bool:
    try:
        pid = int((OWNER_DIR / prefix).read_text().strip())
    except (OSError, ValueError):
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def owned_prefixes() -> list[str]:
    if not OWNER_DIR.is_dir():
        return []
    return sorted(p.name for p in OWNER_DIR.iterdir())
