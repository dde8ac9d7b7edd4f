"""The results of a run: cells (client x server x scenario) with their steps, and the run's
metadata. Plain dataclasses that serialize to results.json and back."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

PASS, FAIL, UNSUPPORTED, ERROR, SKIPPED = "pass", "fail", "unsupported", "error", "skipped"
FAILING = (FAIL, ERROR)


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


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

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["summary"] = self.counts()
        return data


def load_results(path: Path) -> RunResult:
    data = json.loads(path.read_text())
    data.pop("summary", None)
    cells = []
    for raw in data.pop("cells", []):
        steps = [StepResult(**s) for s in raw.pop("steps", [])]
        cells.append(CellResult(**raw, steps=steps))
    peers = [PeerInfo(**p) for p in data.pop("peers", [])]
    return RunResult(**data, peers=peers, cells=cells)
