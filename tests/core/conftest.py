"""Protocol tests: the sans-I/O core only, two devices in memory under a fake clock
(tests/pairs.py: make_pair, established_pair, transfer, roundtrip). No sockets, no root."""

from __future__ import annotations

import pytest

from tests.pairs import Pair, established_pair


@pytest.fixture
def pair() -> Pair:
    """Two devices with a confirmed session (A initiated), clock at the handshake."""
    return established_pair()
