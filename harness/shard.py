"""``--shard K/N``: a deterministic split of the planned cells across N machines, balanced by
expected duration so the shards finish together, and what identifies the plan (so that
``harness merge`` refuses shards of different plans or versions).

The split uses only what every machine sees the same way: the plan (peer and scenario names
in order), the scenarios' steps, the peers' declared capabilities and expected start times -
never what happens to be installed, so each shard machine computes the same split.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .peers.spec import start_seconds
from .runner import Cell, capability_gaps
from .scenario import Scenario

ROOT = Path(__file__).resolve().parent.parent
SETUP_SECONDS = 3.0  # topology, captures, echo servers and teardown of one cell
STEP_SECONDS = 3.0  # an event wait that succeeds (most end well before their timeout)
UNSUPPORTED_SECONDS = 0.05


class ShardError(ValueError):
    """A bad --shard value."""


@dataclass(frozen=True, slots=True)
class Shard:
    index: int  # K, 1-based
    count: int  # N

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> Shard:
    """``K/N`` with 1 <= K <= N."""
    index, sep, count = text.partition("/")
    try:
        shard = Shard(int(index), int(count))
    except ValueError:
        raise ShardError(f"--shard {text!r}: expected K/N, such as 2/3") from None
    if not sep or shard.count < 1 or not 1 <= shard.index <= shard.count:
        raise ShardError(f"--shard {text!r}: K must be between 1 and N (such as 2/3)")
    return shard


def scenario_seconds(scenario: Scenario) -> float:
    """A scenario's expected duration: its sleeps and timed steps at their length, every other
    step a short event wait."""
    total = SETUP_SECONDS
    for step in scenario.steps:
        seconds = step.params.get("seconds")
        if isinstance(seconds, int | float) and not isinstance(seconds, bool):
            total += float(seconds)
        else:
            total += min(step.timeout, STEP_SECONDS)
    return total


def expected_seconds(cell: Cell) -> float:
    if capability_gaps(cell):
        return UNSUPPORTED_SECONDS
    return (scenario_seconds(cell.scenario) + start_seconds(cell.client.name)
            + start_seconds(cell.server.name))


def split(costs: Sequence[float], count: int) -> list[list[int]]:
    """Indices per shard (each in plan order): longest first onto the least loaded shard,
    ties broken by plan order and shard number, so the result is the same everywhere."""
    loads = [0.0] * count
    shards: list[list[int]] = [[] for _ in range(count)]
    for index in sorted(range(len(costs)), key=lambda i: (-round(costs[i], 3), i)):
        target = min(range(count), key=lambda k: (round(loads[k], 3), k))
        shards[target].append(index)
        loads[target] += costs[index]
    return [sorted(indices) for indices in shards]


def select(cells: Sequence[Cell], shard: Shard) -> list[int]:
    """The plan indices of the cells that shard K of N runs."""
    return split([expected_seconds(c) for c in cells], shard.count)[shard.index - 1]


def code_version() -> str:
    """A digest of the harness, the implementation and the scenarios: shards of one merge must
    have run the same code (git need not be there)."""
    digest = hashlib.sha256()
    for folder, pattern in (("harness", "*.py"), ("wgref", "*.py"), ("scenarios", "*.toml")):
        for path in sorted((ROOT / folder).rglob(pattern)):
            digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def plan_id(keys: Sequence[str]) -> str:
    """A digest of the planned cells, in order."""
    return hashlib.sha256("\n".join(keys).encode()).hexdigest()[:16]
