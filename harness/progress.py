"""Live progress: a rich display when the terminal is interactive (and rich is installed),
plain lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import Any

from .results import CellResult, StepResult

STYLE = {"pass": "green", "fail": "red", "error": "red", "unsupported": "yellow",
         "skipped": "dim"}


class PlainProgress:
    def __init__(self, total: int, stream: Any = None) -> None:
        self.total = total
        self.done = 0
        self.stream = stream or sys.stdout

    def _print(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def cell_started(self, cell: CellResult) -> None:
        self._print(f"[{self.done + 1}/{self.total}] {cell.key} ...")

    def step_done(self, cell: CellResult, step: StepResult) -> None:
        self._print(f"    {step.index}. {step.label}: {step.status} ({step.seconds:.1f} s) "
                    f"{step.detail}")

    def cell_done(self, cell: CellResult) -> None:
        self.done += 1
        reason = f": {cell.reason}" if cell.reason else ""
        self._print(f"  => {cell.status.upper()} in {cell.seconds:.1f} s{reason}")

    def close(self) -> None:
        return None


class RichProgress:
    """A progress bar over the cells, the current cell and its last steps."""

    def __init__(self, total: int) -> None:
        from rich.console import Console
        from rich.live import Live
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.console = Console()
        self.bar = Progress(TextColumn("[bold]interop"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), TextColumn("{task.description}"),
                            console=self.console)
        self.task = self.bar.add_task("", total=total)
        self.current = ""
        self.lines: list[str] = []
        self.started = time.monotonic()
        self.live = Live(self._render(), console=self.console, refresh_per_second=4,
                         transient=False)
        self.live.start()

    def _render(self) -> Any:
        from rich.console import Group
        from rich.text import Text

        body = [Text.from_markup(line) for line in self.lines[-6:]]
        return Group(self.bar, Text(self.current, style="bold"), *body)

    def _update(self) -> None:
        self.live.update(self._render())

    def cell_started(self, cell: CellResult) -> None:
        self.current = cell.key
        self.lines = []
        self.bar.update(self.task, description=cell.key)
        self._update()

    def step_done(self, cell: CellResult, step: StepResult) -> None:
        from rich.markup import escape

        style = STYLE.get(step.status, "")
        self.lines.append(f"  {step.index}. {escape(step.label)}: [{style}]{step.status}[/] "
                          f"({step.seconds:.1f} s) [dim]{escape(step.detail[:120])}[/]")
        self._update()

    def cell_done(self, cell: CellResult) -> None:
        from rich.markup import escape

        style = STYLE.get(cell.status, "")
        reason = f" [dim]{escape(cell.reason[:140])}[/]" if cell.reason else ""
        self.live.console.print(f"[{style}]{cell.status.upper():>11}[/] {escape(cell.key)} "
                                f"({cell.seconds:.1f} s){reason}")
        self.bar.advance(self.task)
        self._update()

    def close(self) -> None:
        self.current, self.lines = "", []
        self._update()
        self.live.stop()


def make_progress(total: int, plain: bool = False) -> PlainProgress | RichProgress:
    if not plain:
        try:
            import rich  # noqa: F401
        except ImportError:
            plain = True
    return PlainProgress(total) if plain else RichProgress(total)
