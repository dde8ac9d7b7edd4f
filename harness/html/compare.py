"""Two runs side by side: which cells changed status, and which throughput moved by more than
the noise (the two runs' standard deviations added)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..results import CellResult
from .model import BenchRow, RunData

CellKey = tuple[str, str, str]


def cell_key(cell: CellResult) -> CellKey:
    return (cell.client, cell.server, cell.scenario)


def bench_key(row: BenchRow) -> tuple[str, str]:
    return (row.group, row.label)


@dataclass(slots=True)
class BenchChange:
    old: BenchRow
    new: BenchRow

    @property
    def delta(self) -> float:
        return self.new.mean - self.old.mean

    @property
    def noise(self) -> float:
        return self.old.stdev + self.new.stdev

    @property
    def moved(self) -> bool:
        """Beyond the noise: the change is larger than both runs' stdev together."""
        return abs(self.delta) > self.noise

    @property
    def percent(self) -> float | None:
        return 100.0 * self.delta / self.old.mean if self.old.mean else None


@dataclass(slots=True)
class Comparison:
    old: RunData
    old_cells: dict[CellKey, CellResult] = field(default_factory=dict)
    changed: dict[CellKey, str] = field(default_factory=dict)  # key -> old status ("" = new)
    removed: list[CellResult] = field(default_factory=list)
    bench: dict[tuple[str, str], BenchChange] = field(default_factory=dict)

    @property
    def moved(self) -> list[BenchChange]:
        return [c for c in self.bench.values() if c.moved]


def compare(old: RunData, new: RunData) -> Comparison:
    out = Comparison(old)
    old_cells = {cell_key(c): c for c in (old.run.cells if old.run else [])}
    new_cells = {cell_key(c): c for c in (new.run.cells if new.run else [])}
    out.old_cells = old_cells
    for key, cell in new_cells.items():
        before = old_cells.get(key)
        if before is None:
            out.changed[key] = ""
        elif before.status != cell.status:
            out.changed[key] = before.status
    out.removed = [c for k, c in old_cells.items() if k not in new_cells]
    old_rows = {bench_key(r): r for r in (old.bench.rows if old.bench else [])}
    for row in new.bench.rows if new.bench else []:
        old_row = old_rows.get(bench_key(row))
        if old_row is not None and old_row.unit == row.unit:
            out.bench[bench_key(row)] = BenchChange(old_row, row)
    return out
