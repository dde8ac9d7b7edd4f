"""Shell tests: the I/O around the core (TUN, UDP, UAPI, the transparent client, capture
replay, the CLI). Tests that need root and network namespaces use tests.netns.Lab and skip
with a reason where they cannot run (CI runs them as root)."""

from __future__ import annotations

from pathlib import Path

import pytest

CAPTURES = Path(__file__).resolve().parents[1] / "data" / "captures"


@pytest.fixture
def captures() -> Path:
    """The reference captures with their keys (see tests/data/captures/PROVENANCE.md)."""
    return CAPTURES
