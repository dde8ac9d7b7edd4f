"""--jobs and --shard without namespaces: the scheduler runs cells at once but keeps exclusive
cells alone, hands the display each cell's events in plan order and the results in plan order;
the shard split is deterministic, complete and balanced (no root needed)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from harness.parallel import Job, OrderedProgress, run_jobs
from harness.peers.registry import all_drivers
from harness.results import PASS, CellResult, StepResult
from harness.runner import Progress, plan
from harness.scenario import load_scenarios
from harness.shard import ShardError, expected_seconds, parse_shard, select, split

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
WAIT = 30.0  # a bound for the events below, never reached when the scheduler is right


@dataclass
class Recorder:
    lines: list[str] = field(default_factory=list)

    def cell_started(self, cell: CellResult) -> None:
        self.lines.append(f"start {cell.scenario}")

    def step_done(self, cell: CellResult, step: StepResult) -> None:
        self.lines.append(f"step {cell.scenario} {step.index}")

    def cell_done(self, cell: CellResult) -> None:
        self.lines.append(f"done {cell.scenario}")


@dataclass
class Machine:
    """What the fake cells saw of each other."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    active: set[str] = field(default_factory=set)
    seen_with: dict[str, set[str]] = field(default_factory=dict)
    finished: list[str] = field(default_factory=list)


class FakeCell:
    def __init__(self, name: str, progress: Progress, machine: Machine,
                 before: threading.Event | None = None,
                 after: threading.Event | None = None,
                 barrier: threading.Barrier | None = None) -> None:
        self.name, self.progress, self.machine = name, progress, machine
        self.before, self.after, self.barrier = before, after, barrier
        self.result = CellResult("c", "s", name)

    def run(self) -> CellResult:
        with self.machine.lock:
            self.machine.seen_with[self.name] = set(self.machine.active)
            self.machine.active.add(self.name)
            for other in self.machine.active - {self.name}:
                self.machine.seen_with[other].add(self.name)
        self.progress.cell_started(self.result)
        if self.barrier is not None:
            self.barrier.wait(WAIT)  # proves these cells run at the same time
        if self.before is not None:
            assert self.before.wait(WAIT)
        self.progress.step_done(self.result, StepResult(1, "one", "mark", PASS, "", 0.0))
        self.result.status = PASS
        with self.machine.lock:
            self.machine.active.discard(self.name)
            self.machine.finished.append(self.name)
        if self.after is not None:
            self.after.set()
        self.progress.cell_done(self.result)
        return self.result


def test_cells_run_at_once_exclusive_ones_alone_results_and_progress_in_plan_order() -> None:
    machine = Machine()
    b_done = threading.Event()
    together = threading.Barrier(2)

    def job(name: str, exclusive: bool = False, **kw: object) -> Job:
        return Job(lambda progress: FakeCell(name, progress, machine, **kw),
                   exclusive=exclusive)

    jobs = [
        job("a", before=b_done, barrier=together),  # a waits for b: b finishes first
        job("b", after=b_done, barrier=together),
        job("x", exclusive=True),  # cookie-under-load, say
        job("c"), job("d"),
    ]
    recorder = Recorder()
    results, interrupted = run_jobs(jobs, 2, recorder)
    assert not interrupted
    assert machine.finished.index("b") < machine.finished.index("a")
    assert [r.scenario for r in results] == ["a", "b", "x", "c", "d"]
    assert machine.seen_with["x"] == set(), "the exclusive cell shared the machine"
    assert "x" not in machine.seen_with["c"] | machine.seen_with["d"]
    assert machine.seen_with["a"] == {"b"} or machine.seen_with["b"] == {"a"}
    # the display saw a serial run: each cell's events together, in plan order
    assert recorder.lines == [line for name in "abxcd"
                              for line in (f"start {name}", f"step {name} 1", f"done {name}")]


def test_one_job_runs_the_cells_one_after_the_other() -> None:
    machine = Machine()
    jobs = [Job(lambda p, n=n: FakeCell(n, p, machine)) for n in "abc"]
    recorder = Recorder()
    results, interrupted = run_jobs(jobs, 1, recorder)
    assert [r.scenario for r in results] == ["a", "b", "c"] and not interrupted
    assert all(not others for others in machine.seen_with.values())
    assert recorder.lines[:3] == ["start a", "step a 1", "done a"]


def test_ordered_progress_holds_later_cells_until_the_earlier_are_done() -> None:
    recorder = Recorder()
    ordered = OrderedProgress(recorder, 3)
    cells = [CellResult("c", "s", n) for n in "abc"]
    third, first, second = ordered.for_cell(2), ordered.for_cell(0), ordered.for_cell(1)
    third.cell_started(cells[2])
    third.cell_done(cells[2])
    second.cell_started(cells[1])
    first.cell_started(cells[0])
    assert recorder.lines == ["start a"]  # only the head streams live
    first.cell_done(cells[0])
    assert recorder.lines == ["start a", "done a", "start b"]  # b is now live
    second.cell_done(cells[1])
    assert recorder.lines[-3:] == ["done b", "start c", "done c"]


@pytest.mark.parametrize(("text", "message"), [
    ("2", "expected K/N"), ("a/3", "expected K/N"), ("0/3", "between 1 and N"),
    ("4/3", "between 1 and N"), ("1/0", "between 1 and N")])
def test_bad_shard_values_say_what_is_expected(text: str, message: str) -> None:
    with pytest.raises(ShardError, match=message) as info:
        parse_shard(text)
    assert repr(text) in str(info.value)


def test_split_is_complete_disjoint_deterministic_and_balanced() -> None:
    costs = [30.0, 1.0, 1.0, 12.0, 12.0, 5.0, 5.0, 5.0, 0.05, 0.05, 20.0]
    shards = split(costs, 3)
    assert sorted(i for s in shards for i in s) == list(range(len(costs)))
    assert all(s == sorted(s) for s in shards)  # each shard runs its cells in plan order
    assert split(costs, 3) == shards
    loads = [sum(costs[i] for i in s) for s in shards]
    assert max(loads) - min(loads) <= max(costs)


def test_the_real_plan_splits_the_same_way_whatever_is_installed() -> None:
    drivers = all_drivers()
    scenarios = [s for s in load_scenarios(SCENARIOS) if not s.slow]
    cells = plan([d for d in drivers if "initiator" in d.capabilities],
                 [d for d in drivers if "responder" in d.capabilities], scenarios)
    parts = [select(cells, parse_shard(f"{k}/3")) for k in (1, 2, 3)]
    assert sorted(i for p in parts for i in p) == list(range(len(cells)))
    loads = [sum(expected_seconds(cells[i]) for i in p) for p in parts]
    assert max(loads) - min(loads) <= max(expected_seconds(c) for c in cells)
    # unsupported by capability (the same everywhere) costs next to nothing
    mitm = next(c for c in cells if c.server.name == "mitmproxy-wireguard"
                and c.scenario.name == "psk")
    assert expected_seconds(mitm) < 1
    kernel_vm = next(c for c in cells if c.server.name == "kernel-vm"
                     and c.client.name == "kernel-vm" and c.scenario.name == "handshake")
    wgref = next(c for c in cells if c.server.name == "wgref" and c.client.name == "wgref"
                 and c.scenario.name == "handshake")
    assert expected_seconds(kernel_vm) > expected_seconds(wgref)


def test_a_heavy_cell_takes_more_slots() -> None:
    """With 4 slots: two 2-slot cells run together; a 4-slot cell (a VM pair, say) runs with
    nothing else; a 6-slot cell, larger than the machine, still runs (alone)."""
    machine = Machine()
    together = threading.Barrier(2)

    def job(name: str, slots: int, **kw: object) -> Job:
        return Job(lambda progress: FakeCell(name, progress, machine, **kw), slots=slots)

    jobs = [job("a", 2, barrier=together), job("b", 2, barrier=together), job("vm", 4),
            job("c", 1), job("huge", 6), job("d", 1)]
    results, _ = run_jobs(jobs, 4, Recorder())
    assert [r.scenario for r in results] == ["a", "b", "vm", "c", "huge", "d"]
    assert "b" in machine.seen_with["a"]  # (the barrier already proved it)
    assert machine.seen_with["vm"] == set() and "vm" not in machine.seen_with["c"]
    assert machine.seen_with["huge"] == set() and "huge" not in machine.seen_with["d"]


def test_peer_slots_come_from_the_specification() -> None:
    from harness.peers.spec import slots

    assert slots("kernel-vm") > slots("wgref") == slots("wireguard-go") == 1
    assert slots("wg-quick") == 1  # a config-file client is not declared there
