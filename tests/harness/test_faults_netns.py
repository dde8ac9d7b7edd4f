"""The harness's mutation test (root, real namespaces, real peers): every scenario action and
every probe is run against a wgref with the matching fault (harness/faults.py) and must fail
at the check meant for it, with the expected reason, after every earlier check passed; the
same cell with plain wgref in place of the fault peer passes. The tables are the ones in
scenarios/README.md (a test below keeps them in step).

Cells are kept short: a shipped scenario is cut after the step meant to fail, and waits for
something that must not come are shortened (``CAPS``) in the fault cell and its control
alike, so both see the same scenario. The selected tests' cells all run first, at once, as
`harness run --jobs` runs a matrix (:func:`harness.parallel.run_jobs`: each cell in
namespaces of its own, timing-sensitive ones alone); each test then checks its own."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness import cleanup
from harness.cli import cell_job
from harness.faults import FAULTS, fault, fault_driver, fault_table
from harness.parallel import Job, default_jobs, run_jobs
from harness.peers.base import PeerDriver
from harness.peers.uapi import wgref, wireguard_go
from harness.probes.cli import probe_job
from harness.probes.registry import select
from harness.results import CellResult
from harness.runner import Cell
from harness.scenario import Scenario, load_scenario, parse_scenario
from harness.shell import run
from tests.harness.support import Quiet, netns_marks

REPO = Path(__file__).resolve().parents[2]
SCENARIOS = REPO / "scenarios"
TOOLS = ("ip", "nft", "wg", "wireguard-go", "dumpcap", "ping", "iperf3")

NEEDS_NETNS = [*netns_marks(*TOOLS), pytest.mark.mutation]


def netns(test: Any) -> Any:
    for mark in NEEDS_NETNS:
        test = mark(test)
    return test


# Scenarios made for one action each (the shipped ones use none of these actions alone).
TEST_SCENARIOS = {
    "listen-port": """
name = "listen-port"
description = "The client moves to a new listen port; the server must see the new port."
timeout = 40
requires = { client = ["reconfigure"], server = ["state"] }
[[steps]]
action = "ping"
label = "handshake"
[[steps]]
action = "wait_handshake"
label = "handshake seen"
peer = "server"
[[steps]]
action = "mark"
[[steps]]
action = "set_listen_port"
label = "client changes its listen port"
peer = "client"
[[steps]]
action = "ping"
label = "ping from the new port"
[[steps]]
action = "wait_endpoint_change"
label = "server sees the new port"
peer = "server"
timeout = 4
""",
    "transfer": """
name = "transfer"
description = "A 2 s iperf3 transfer through the tunnel completes."
timeout = 40
[[steps]]
action = "ping"
label = "handshake"
[[steps]]
action = "transfer_start"
label = "transfer for 2 s"
seconds = 2
[[steps]]
action = "transfer_wait"
label = "transfer completed"
timeout = 15
""",
    "block": """
name = "block"
description = "Blocked at the router, the client cannot reach the server; unblocked, it can."
timeout = 40
[[steps]]
action = "ping"
label = "handshake"
[[steps]]
action = "block"
label = "client blocked"
host = "client"
[[steps]]
action = "ping"
label = "blocked: no reply"
count = 2
timeout = 2
expect = "failure"
[[steps]]
action = "block"
label = "client unblocked"
host = "client"
blocked = false
[[steps]]
action = "ping"
label = "unblocked: replies again"
""",
    "shape": """
name = "shape"
description = "With 100% loss on the client's link nothing gets through."
timeout = 40
[[steps]]
action = "ping"
label = "handshake"
[[steps]]
action = "shape"
label = "client link loses everything"
host = "client"
loss_percent = 100
[[steps]]
action = "ping"
label = "lossy link: no reply"
count = 2
timeout = 2
expect = "failure"
""",
    "flood-stop": """
name = "flood-stop"
description = "A flood of initiations; when it stops, the server must have sent cookies."
timeout = 60
exclusive = true
topology = { extra_hosts = ["attacker"] }
config = { log_level = "error" }
[[steps]]
action = "flood_start"
label = "flood of initiations"
from = "attacker"
to = "server"
seconds = 8
[[steps]]
action = "sleep"
label = "flood runs"
seconds = 8
reason = "the flood ramps up until the server is under load"
[[steps]]
action = "flood_stop"
label = "cookie replies counted"
min_cookie_replies = 1
""",
}

# (scenario, step label) -> shorter timeout, for waits on something that must not come.
CAPS = {
    ("handshake", "tcp echo client -> server"): 6.0,
    ("handshake", "udp echo client -> server"): 4.0,
    ("handshake", "ping client -> server"): 4.0,
    ("handshake", "handshake seen"): 3.0,
    ("psk-mismatch", "tcp echo must fail"): 3.0,
    ("psk-mismatch", "ping must fail"): 2.0,
    ("roaming", "server follows the client"): 5.0,
    ("keepalive", "ping client -> server"): 4.0,
    ("cookie-under-load", "server under load answers with cookies"): 12.0,
    ("mtu", "1420-byte packets client -> server"): 4.0,
}


@dataclasses.dataclass(frozen=True)
class Row:
    """One line of the action x fault table."""

    actions: tuple[str, ...]  # the actions whose check this row shows failing
    fault: str  # a fault of harness/faults.py, or "-ACTION" (the scenario without it)
    scenario: str  # shipped (scenarios/NAME.toml) or TEST_SCENARIOS
    step: str  # the label of the step that must fail
    reason: str  # a regular expression the failure reason must contain


ACTION_ROWS = [
    Row(("tcp",), "deliver-nothing", "handshake", "tcp echo client -> server",
        r"tcp echo to 198\.19\.77\.1:7000: .* \(expected success\)"),
    Row(("udp",), "drop-udp", "handshake", "udp echo client -> server",
        r"udp echo to 198\.19\.77\.1:7000: 0/3 datagrams echoed \(expected success\)"),
    Row(("ping",), "drop-icmp", "handshake", "ping client -> server",
        r"ping 198\.19\.77\.1 \(size 56\): 0/\d+ replies \(expected success\)"),
    Row(("wait_handshake",), "hide-handshake", "handshake", "handshake seen",
        r"a completed handshake on client/server: not seen within 3 s"),
    Row(("no_handshake",), "claim-handshake", "psk-mismatch", "latest-handshake stays 0",
        r"server \(wgref-fault:claim-handshake\) completed a handshake"),
    Row(("roam", "mark", "wait_endpoint_change"), "no-roam", "roaming",
        "server follows the client", r"server's endpoint for its peer to change: not seen"),
    Row(("wait_rx",), "no-passive-keepalive", "keepalive",
        "passive keepalive from the client", r"server rx counter to grow by 1: not seen"),
    Row(("set_keepalive", "sleep"), "ignore-persistent-keepalive", "keepalive",
        "server reaches the client through the NAT",
        r"ping 198\.19\.77\.2 \(size 56\): 0/\d+ replies \(expected success\)"),
    Row(("set_listen_port",), "no-rebind", "listen-port", "server sees the new port",
        r"server's endpoint for its peer to change: not seen"),
    Row(("transfer_start", "transfer_wait"), "drop-above-1200", "transfer",
        "transfer completed", r"transfer (failed|did not end)"),
    Row(("ping",), "drop-above-1200", "mtu", "1420-byte packets client -> server",
        r"\(size 1392, DF\): 0/\d+ replies \(expected success\)"),
    Row(("ping",), "route-everything", "crypto-rp",
        "inner source outside allowed-ips is dropped", r"\(expected failure, but it worked\)"),
    Row(("ping",), "wrong-source-port", "keepalive", "ping client -> server",
        r"ping 198\.19\.77\.1 \(size 56\): 0/\d+ replies \(expected success\)"),
    Row(("flood_start", "wait_cookie_replies"), "no-cookie-reply", "cookie-under-load",
        "server under load answers with cookies", r"1 cookie replies to the flood: not seen"),
    Row(("flood_stop",), "no-cookie-reply", "flood-stop", "cookie replies counted",
        r", 0 cookie replies \(expected at least 1\)$"),
    Row(("block",), "-block", "block", "blocked: no reply",
        r"\(expected failure, but it worked\)"),
    Row(("shape",), "-shape", "shape", "lossy link: no reply",
        r"\(expected failure, but it worked\)"),
]


def load(name: str) -> Scenario:
    text = TEST_SCENARIOS.get(name)
    return parse_scenario(text) if text else load_scenario(SCENARIOS / f"{name}.toml")


def scenario(name: str, until: str) -> Scenario:
    """The scenario cut after the step labelled ``until``, with CAPS applied."""
    sc = load(name)
    labels = [s.label for s in sc.steps]
    steps = [dataclasses.replace(s, timeout=CAPS.get((name, s.label), s.timeout))
             for s in sc.steps[:labels.index(until) + 1]]
    return dataclasses.replace(sc, steps=tuple(steps))


def without(sc: Scenario, action: str) -> Scenario:
    return dataclasses.replace(sc, steps=tuple(s for s in sc.steps if s.action != action))


def cleaned_up(result: CellResult) -> CellResult:
    """The cell's result, once its namespaces and everything under its prefix are gone."""
    assert result.prefix not in run(["ip", "netns", "list"]).stdout
    assert cleanup.find(result.prefix, force=True).empty()
    return result


def peers(row: Row, *, faulty: bool) -> tuple[PeerDriver, PeerDriver]:
    """(client, server): the fault peer (or, for the control, plain wgref) on the fault's
    side, wireguard-go on the other; a fault of role "both" on both sides."""
    if row.fault.startswith("-"):
        return wgref(), wireguard_go()
    mine = fault_driver(row.fault) if faulty else wgref()
    role = fault(row.fault).role
    if role == "both":
        return mine, mine
    return (mine, wireguard_go()) if role == "client" else (wireguard_go(), mine)


def _id(row: Row) -> str:
    return f"{'+'.join(row.actions)}-{row.fault}-{row.scenario}"


def control_key(row: Row) -> str:
    client, server = peers(row, faulty=False)
    return f"control {row.scenario} {client.name} {server.name}"


def control_scenario(row: Row) -> Scenario:
    """The row's control: the cell with plain wgref for the fault peer, one for every row of
    the same scenario and peers, cut after the last step any of them checks."""
    key = control_key(row)
    same = [r for r in ACTION_ROWS if r.scenario == row.scenario and control_key(r) == key]
    labels = [s.label for s in load(row.scenario).steps]
    return scenario(row.scenario, max((r.step for r in same), key=labels.index))


def broken_scenario(row: Row) -> Scenario:
    sc = scenario(row.scenario, row.step)
    return without(sc, row.fault[1:]) if row.fault.startswith("-") else sc


# ----------------------------------------------------------------------- probes

# fault -> a probe it must not fail (its checks are about something else)
PROBE_CONTROL = {name: "ciphertext-bitflip" for name in FAULTS}
PROBE_CONTROL.update({"replay-before-auth": "transport-replay",
                      "deliver-nothing": "initiation-replay"})
SLOW_PROBES = {"rekey-after-time"}  # 2.5 minutes: `harness probe --slow`, not the suite


def probe_rows() -> list[tuple[str, str]]:
    return [(name, check.removeprefix("probe:")) for name, f in FAULTS.items()
            for check in f.caught_by
            if check.startswith("probe:") and check.removeprefix("probe:") not in SLOW_PROBES]


PROBE_FAULTS = sorted({name for name, _ in probe_rows()})


def probe_cell_job(driver: PeerDriver, name: str, out: Path) -> Job:
    (probe,) = select([name], slow=True)
    return probe_job(driver, probe, out)


PROBE_REASONS = {
    "transport-replay": "delivered 3 times",
    "counter-behind-window": "delivered 1 times (expected 0)",
    "initiation-replay": "answered the replayed initiation",
    "initiation-old-timestamp": "answered",
    "initiation-rate-limit": "answered",
    "roaming-spoof": "endpoint",
    "bad-mac1": "answered",
    "low-order-ephemeral": "answered",
    "reserved-initiation": "answered",
    "reserved-transport": "delivered 1 times (expected 0)",
    "wrong-size": "answered",
    "counter-reject-after": "delivered 1 times (expected 0)",
    "unknown-receiver-index": "delivered 1 times (expected 0)",
    "ciphertext-bitflip": "delivered 0 times",
    "crypto-rp": "delivered 1 times (expected 0)",
    "passive-keepalive": "nothing from the server within",
    "cookie-under-load": "cookie",
}


# ----------------------------------------------------------------------- the cells


def _selected(request: pytest.FixtureRequest, test: str, param: str) -> list[Any]:
    return [item.callspec.params[param] for item in request.session.items
            if isinstance(item, pytest.Function) and item.module is request.module
            and item.originalname == test and hasattr(item, "callspec")]


@pytest.fixture(scope="module")
def cells(request: pytest.FixtureRequest,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, CellResult]]:
    """Every cell the selected tests check, run at once, by key: the action rows' fault
    cells and their controls, each probe fault's probes and its control probe."""
    out = tmp_path_factory.mktemp("faults")
    jobs: dict[str, Job] = {}
    for row in _selected(request, "test_action_catches_its_fault", "row"):
        key = control_key(row)
        if key not in jobs:
            jobs[key] = cell_job(Cell(*peers(row, faulty=False), control_scenario(row)),
                                 out / f"control-{len(jobs)}")
        jobs[_id(row)] = cell_job(Cell(*peers(row, faulty=True), broken_scenario(row)),
                                  out / f"broken-{len(jobs)}")
    for name in _selected(request, "test_probes_catch_their_fault", "name"):
        for probe in (p for f, p in probe_rows() if f == name):
            jobs[f"{name} {probe}"] = probe_cell_job(fault_driver(name), probe,
                                                     out / f"probe-{len(jobs)}")
        jobs[f"{name} control"] = probe_cell_job(fault_driver(name), PROBE_CONTROL[name],
                                                 out / f"probe-{len(jobs)}")
    results, interrupted = run_jobs(list(jobs.values()), default_jobs(), Quiet())
    assert not interrupted
    yield dict(zip(jobs, results, strict=True))


@netns
@pytest.mark.parametrize("row", ACTION_ROWS, ids=_id)
def test_action_catches_its_fault(row: Row, cells: dict[str, CellResult]) -> None:
    good = cleaned_up(cells[control_key(row)])
    assert good.status == "pass", f"control {good.client} -> {good.server}: {good.reason}"
    assert row.step in [s.label for s in good.steps]
    broken = broken_scenario(row)
    result = cleaned_up(cells[_id(row)])
    index = [s.label for s in broken.steps].index(row.step) + 1
    assert result.status == "fail", f"{result.status}: {result.reason}"
    assert result.reason.startswith(f"step {index} ({row.step}): "), result.reason
    assert re.search(row.reason, result.reason), result.reason
    assert [s.status for s in result.steps] == ["pass"] * (index - 1) + ["fail"]


@netns
@pytest.mark.parametrize("name", PROBE_FAULTS)
def test_probes_catch_their_fault(name: str, cells: dict[str, CellResult]) -> None:
    """Each probe meant for the fault fails it, with what it saw; a probe about something
    else passes it."""
    for probe in (p for f, p in probe_rows() if f == name):
        result = cleaned_up(cells[f"{name} {probe}"])
        assert result.status == "fail", f"{probe}: {result.status}: {result.reason}"
        assert PROBE_REASONS[probe] in result.reason, f"{probe}: {result.reason}"
    other = cleaned_up(cells[f"{name} control"])
    assert other.status == "pass", f"{PROBE_CONTROL[name]}: {other.reason}"


# ----------------------------------------------------------------------- the tables


def test_every_action_has_a_row() -> None:
    from harness.steps import ACTIONS

    assert {a for row in ACTION_ROWS for a in row.actions} == set(ACTIONS)
    rows = {(r.fault, f"{r.scenario}/{r.step}") for r in ACTION_ROWS}
    declared = {(name, check) for name, f in FAULTS.items() for check in f.caught_by
                if not check.startswith(("probe:", "rekey/"))}
    assert rows - {r for r in rows if r[0].startswith("-")} == declared


def test_every_probe_has_a_fault() -> None:
    from harness.probes.registry import PROBES

    assert {p for _, p in probe_rows()} | SLOW_PROBES == {p.name for p in PROBES}
    assert set(PROBE_REASONS) == {p for _, p in probe_rows()}


def action_table() -> str:
    lines = ["| action | fault (peer) | scenario | the step that fails |",
             "|---|---|---|---|"]
    for row in ACTION_ROWS:
        if row.fault.startswith("-"):
            what = f"none: the scenario without `{row.fault[1:]}`"
        else:
            what = f"`{row.fault}` ({fault(row.fault).role})"
        where = row.scenario if row.scenario in TEST_SCENARIOS else f"{row.scenario}.toml"
        lines.append(f"| {', '.join(f'`{a}`' for a in row.actions)} | {what} | {where} | "
                     f"{row.step} |")
    return "\n".join(lines)


def test_readme_lists_the_tables() -> None:
    text = (SCENARIOS / "README.md").read_text()
    for table in (action_table(), fault_table()):
        assert table in text, f"scenarios/README.md lacks (or has another version of):\n{table}"
