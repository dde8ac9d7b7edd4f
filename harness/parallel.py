"""Runs the matrix's cells N at a time (``--jobs N``), each in a thread of its own: every cell
already has its own namespaces or containers under a run prefix, and most of a cell's time is
waiting (VM boots, handshake timers, keepalives).

* Cells start in plan order; a cell marked *exclusive* (it measures something timing-sensitive,
  such as cookie replies under load) waits until it is alone and runs alone.
* The progress display sees exactly what a serial run shows: each cell's events are held back
  until every earlier cell is done, then replayed in order (the cell at the head streams live).
* The results come back in plan order.
* Ctrl-C/SIGTERM: no new cell starts and the running ones are interrupted (each unwinds through
  its teardown and is recorded as interrupted).
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from .results import ERROR, CellResult, StepResult
from .runner import Interrupted, Progress


class CellRun(Protocol):
    """A cell ready to run (a ``CellRunner`` or a ``ProbeCell``)."""

    result: CellResult

    def run(self) -> CellResult: ...


@dataclass(frozen=True, slots=True)
class Job:
    make: Callable[[Progress], CellRun]  # the cell, reporting to the given progress
    exclusive: bool = False  # keeps the machine to itself
    slots: int = 1  # of the N of --jobs N (a cell with a VM takes more); never fewer than 1


def default_jobs() -> int:
    """Four slots per core, at most 8: a cell mostly waits (timers, keepalives, handshakes);
    what keeps a core busy (a VM booting) takes more slots, a flood the whole machine."""
    return max(1, min(8, 4 * (os.cpu_count() or 1)))


@dataclass(slots=True)
class _Channel:
    """One cell's progress events, held until the cell reaches the head of the plan."""

    events: list[Callable[[Progress], None]] = field(default_factory=list)
    live: bool = False
    done: bool = False


class OrderedProgress:
    """Progress for concurrent cells that the real display sees in plan order."""

    def __init__(self, target: Progress, count: int) -> None:
        self.target = target
        self.lock = threading.Lock()
        self.channels = [_Channel() for _ in range(count)]
        self.head = 0
        if count:
            self.channels[0].live = True

    def for_cell(self, index: int) -> Progress:
        return _CellProgress(self, index)

    def emit(self, index: int, event: Callable[[Progress], None], last: bool = False) -> None:
        with self.lock:
            channel = self.channels[index]
            if channel.live:
                event(self.target)
            else:
                channel.events.append(event)
            if last:
                channel.done = True
                self._advance()

    def _advance(self) -> None:
        while self.head < len(self.channels) and self.channels[self.head].done:
            self.head += 1
            if self.head == len(self.channels):
                return
            channel = self.channels[self.head]
            for event in channel.events:
                event(self.target)
            channel.events.clear()
            channel.live = True


class _CellProgress:
    def __init__(self, ordered: OrderedProgress, index: int) -> None:
        self.ordered = ordered
        self.index = index

    def cell_started(self, cell: CellResult) -> None:
        self.ordered.emit(self.index, lambda p: p.cell_started(cell))

    def step_done(self, cell: CellResult, step: StepResult) -> None:
        self.ordered.emit(self.index, lambda p: p.step_done(cell, step))

    def cell_done(self, cell: CellResult) -> None:
        self.ordered.emit(self.index, lambda p: p.cell_done(cell), last=True)


def _raise_in(thread: threading.Thread) -> None:
    """Interrupt a worker thread (it unwinds through its cell's teardown)."""
    if thread.ident is not None and thread.is_alive():
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident),
                                                   ctypes.py_object(Interrupted))


class Scheduler:
    def __init__(self, jobs: Sequence[Job], workers: int, progress: Progress) -> None:
        self.jobs = list(jobs)
        self.workers = max(1, workers)
        self.ordered = OrderedProgress(progress, len(self.jobs))
        self.cond = threading.Condition()
        self.running = 0  # cells
        self.busy = 0  # their slots
        self.exclusive_running = False
        self.results: list[CellResult | None] = [None] * len(self.jobs)
        self.cells: list[CellRun | None] = [None] * len(self.jobs)
        self.threads: list[threading.Thread] = []
        self.interrupted = False

    def run(self) -> tuple[list[CellResult], bool]:
        """The results in plan order (the cells that started), and whether it was
        interrupted."""
        if self.workers == 1:
            return self._one_by_one()
        try:
            for index, job in enumerate(self.jobs):
                self._wait_for_room(job)
                cell = job.make(self.ordered.for_cell(index))
                self.cells[index] = cell
                thread = threading.Thread(target=self._work, args=(index, job, cell),
                                          name=f"cell-{index}", daemon=True)
                self.threads.append(thread)
                thread.start()
            self._wait_all()
        except (KeyboardInterrupt, Interrupted):
            self.interrupted = True
            self._interrupt()
        return self._collect(), self.interrupted

    def _one_by_one(self) -> tuple[list[CellResult], bool]:
        """--jobs 1: each cell in this thread, after the previous one."""
        out = []
        for job in self.jobs:
            cell = job.make(self.ordered.target)
            try:
                out.append(cell.run())
            except (KeyboardInterrupt, Interrupted):
                out.append(cell.result)
                return out, True
        return out, False

    def _wait_for_room(self, job: Job) -> None:
        """Until the job fits: alone when exclusive; else its slots are free (a job larger than
        the machine runs when nothing else does)."""
        slots = max(1, job.slots)
        with self.cond:
            if job.exclusive:
                self.cond.wait_for(lambda: self.running == 0)
                self.exclusive_running = True
            else:
                self.cond.wait_for(lambda: not self.exclusive_running and (
                    self.running == 0 or self.busy + slots <= self.workers))
            self.running += 1
            self.busy += slots

    def _work(self, index: int, job: Job, cell: CellRun) -> None:
        try:
            self.results[index] = cell.run()
        except (KeyboardInterrupt, Interrupted):
            self.results[index] = cell.result
        finally:
            with self.cond:
                self.running -= 1
                self.busy -= max(1, job.slots)
                if job.exclusive:
                    self.exclusive_running = False
                self.cond.notify_all()

    def _wait_all(self) -> None:
        """Until every cell's thread has ended. Not Thread.join(): a join that a signal
        interrupts can leave is_alive() false for a thread that still runs (CPython
        gh-90882), and the run would exit before that cell's teardown."""
        while any(thread.is_alive() for thread in self.threads):
            with self.cond:
                self.cond.wait(timeout=0.2)

    def _interrupt(self) -> None:
        for thread in self.threads:
            _raise_in(thread)
        while True:
            try:
                self._wait_all()
                return
            except (KeyboardInterrupt, Interrupted):
                continue  # a second Ctrl-C: the cells are already tearing down

    def _collect(self) -> list[CellResult]:
        out = []
        for result, cell in zip(self.results, self.cells, strict=True):
            if result is not None:
                out.append(result)
            elif cell is not None:  # interrupted before run() returned
                if cell.result.status != ERROR:
                    cell.result.status, cell.result.reason = ERROR, "interrupted"
                out.append(cell.result)
        return out


def run_jobs(jobs: Sequence[Job], workers: int, progress: Progress
             ) -> tuple[list[CellResult], bool]:
    """Run the cells ``workers`` at a time; (results in plan order, interrupted)."""
    return Scheduler(jobs, workers, progress).run()
