"""The results of a run: cells (client x server x scenario) with their steps, and the run's
metadata. Plain dataclasses that serialize to results.json and back.

results.json carries ``schema_version`` (SCHEMA_VERSION). Every path in it is relative to the
folder results.json is in: a cell's ``folder``, a scenario's ``path``; a cell's ``artifacts``
are relative to the cell's folder.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

PASS, FAIL, UNSUPPORTED, ERROR, SKIPPED = "pass", "fail", "unsupported", "error", "skipped"
FAILING = (FAIL, ERROR)
# One symbol per status, on the terminal, in summary.md and on the page.
SYMBOL = {PASS: "✓", FAIL: "✗", ERROR: "!", UNSUPPORTED: "–", SKIPPED: "↷"}
# 2: schema_version itself; folder and scenario paths relative to the run folder.
# 3: shard (a --shard K/N run) and shards (a `harness merge`d run); cells may be "error" with
#    traceback.txt among their artifacts.
SCHEMA_VERSION = 3


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def typed_command(argv: Sequence[str] | None = None) -> list[str]:
    """The command as typed: ``python -m harness run …``, not the path of harness/__main__.py
    that ``sys.argv[0]`` holds under ``-m`` (so the report's command can be run again)."""
    args = list(sys.argv if argv is None else argv)
    if args:
        first = Path(args[0])
        if first.name == "__main__.py" and first.parent.name == "harness":
            return ["python", "-m", "harness", *args[1:]]
    return args


def _relative(path: str | None, folder: Path) -> str | None:
    """``path`` (absolute, or relative to the working directory) relative to ``folder``."""
    if not path:
        return path
    return os.path.relpath(Path(path).resolve(), folder.resolve())


def _under(path: str | None, folder: Path) -> str | None:
    """The inverse of _relative: a path of results.json as a path from here."""
    if not path or Path(path).is_absolute():
        return path
    return str(folder / path)


@dataclass(slots=True)
class StepResult:
    index: int
    label: str
    action: str
    status: str  # pass | fail | skipped
    detail: str
    seconds: float


@dataclass(slots=True)
class CellResult:
    client: str
    server: str
    scenario: str
    status: str = UNSUPPORTED  # pass | fail | unsupported | error
    reason: str = ""
    started: str = ""
    ended: str = ""
    seconds: float = 0.0
    prefix: str = ""
    folder: str | None = None
    steps: list[StepResult] = field(default_factory=list)
    measurements: dict[str, float] = field(default_factory=dict)
    artifacts: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.client} -> {self.server}: {self.scenario}"


@dataclass(slots=True)
class PeerInfo:
    name: str
    version: str
    available: bool
    reason: str | None
    capabilities: list[str]


@dataclass(slots=True)
class RunResult:
    started: str
    ended: str = ""
    seconds: float = 0.0
    command: list[str] = field(default_factory=list)
    host: dict[str, str] = field(default_factory=dict)
    peers: list[PeerInfo] = field(default_factory=list)
    scenarios: list[dict[str, Any]] = field(default_factory=list)
    cells: list[CellResult] = field(default_factory=list)
    interrupted: bool = False
    # --shard K/N: {"index", "count", "plan" (digest), "version" (code digest), "order" (the
    # whole plan's cell keys)}; a merged run lists its shards' runs (host, times, command)
    shard: dict[str, Any] | None = None
    shards: list[dict[str, Any]] = field(default_factory=list)

    @property
    def failed(self) -> list[CellResult]:
        return [cell for cell in self.cells if cell.status in FAILING]

    def counts(self) -> dict[str, int]:
        out = {PASS: 0, FAIL: 0, UNSUPPORTED: 0, ERROR: 0}
        for cell in self.cells:
            out[cell.status] = out.get(cell.status, 0) + 1
        return out

    def to_json(self, folder: Path | None = None) -> dict[str, Any]:
        """The results.json document; with ``folder`` (where it is written), paths relative
        to it."""
        data = {"schema_version": SCHEMA_VERSION, **asdict(self)}
        data["summary"] = self.counts()
        if folder is not None:
            for cell in data["cells"]:
                cell["folder"] = _relative(cell["folder"], folder)
            for scenario in data["scenarios"]:
                if isinstance(scenario.get("path"), str):
                    scenario["path"] = _relative(scenario["path"], folder)
        return data


def load_results(path: Path) -> RunResult:
    """A RunResult from results.json, its paths made usable from here again."""
    data = json.loads(path.read_text())
    data.pop("summary", None)
    data.pop("schema_version", None)
    folder = path.parent
    cells = []
    for raw in data.pop("cells", []):
        steps = [StepResult(**s) for s in raw.pop("steps", [])]
        raw["folder"] = _under(raw.get("folder"), folder)
        cells.append(CellResult(**raw, steps=steps))
    for scenario in data.get("scenarios", []):
        if isinstance(scenario.get("path"), str):
            scenario["path"] = _under(scenario["path"], folder)
    peers = [PeerInfo(**p) for p in data.pop("peers", [])]
    return RunResult(**data, peers=peers, cells=cells)
