"""Harness tests: topologies, peer drivers, scenarios, probes, bench and reports. The netns
ones drive real peers in network namespaces (root, CI); the rest run anywhere."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def scenarios_dir() -> Path:
    return REPO / "scenarios"
