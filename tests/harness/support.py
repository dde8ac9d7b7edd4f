"""What the harness's netns tests share: their pytest marks and a silent progress sink."""

from __future__ import annotations

import os
import shutil

import pytest

from harness.results import CellResult, StepResult
from tests.ci import in_ci


def netns_marks(*tools: str) -> list[pytest.MarkDecorator]:
    """The marks of a test module that drives real peers in network namespaces: skipped, with
    the reason, where it cannot run (not root, a tool missing); under CI it runs regardless,
    so a broken environment fails instead of hiding (tests/ci.py)."""
    missing = [t for t in tools if shutil.which(t) is None]
    reason = ("needs root for network namespaces" if os.geteuid() != 0
              else f"needs {', '.join(missing)}" if missing else None)
    return [pytest.mark.netns,
            pytest.mark.skipif(reason is not None and not in_ci(), reason=reason or "")]


class Quiet:
    """A progress display that shows nothing (the runner's Progress protocol)."""

    def cell_started(self, cell: CellResult) -> None: ...
    def step_done(self, cell: CellResult, step: StepResult) -> None: ...
    def cell_done(self, cell: CellResult) -> None: ...
