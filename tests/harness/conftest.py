"""Harness tests: topologies, peer drivers, scenarios, probes, bench and reports. The netns
ones drive real peers in network namespaces (root, CI); the rest run anywhere."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def scenarios_dir() -> Path:
    return REPO / "scenarios"


def pinned_tool_problem(name: str) -> str | None:
    """None when the pinned tool ``name`` (harness.tools) is built or can be built here (its
    builder is installed: the session fixture below builds it), else why not."""
    from harness.tools import TOOLS, builder_path

    tool = TOOLS[name]
    if tool.installed() is not None or builder_path(tool.builder) is not None:
        return None
    return f"{name} is not built and `{tool.builder}` is not installed to build it"


def needs_tools(*names: str) -> pytest.MarkDecorator:
    """Skip (with the reason) only where a pinned peer can neither be found nor built."""
    problems = [p for p in map(pinned_tool_problem, names) if p]
    return pytest.mark.skipif(bool(problems), reason="; ".join(problems))


@pytest.fixture(scope="session", autouse=True)
def pinned_tools() -> None:
    """Build the pinned peers that are missing (a no-op when cached, as after `nox -s tests`
    or `python -m harness tools install`); a failed build fails the tests that use it."""
    if os.geteuid() != 0:
        return
    from harness.tools import TOOLS, ToolError, builder_path, install

    for tool in TOOLS.values():
        if tool.installed() is None and builder_path(tool.builder) is not None:
            with contextlib.suppress(ToolError):
                install(tool)
