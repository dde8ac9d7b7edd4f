"""Runs the matrix: for each client x server x scenario, build the topology, start captures
and peers, run the steps with event waits, then tear everything down and record the cell."""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Protocol

from . import keys, naming, registry_files
from .capture import CaptureError, start_capture, stop_capture, write_decrypted
from .context import INNER_V4, INNER_V6, SERVER_PORT, CellContext, StepFailed, StepSkipped
from .peers.base import (
    DriverError,
    InterfaceConfig,
    PeerDriver,
    PeerEntry,
    PeerInstance,
    Unsupported,
)
from .results import ERROR, FAIL, PASS, SKIPPED, UNSUPPORTED, CellResult, StepResult, now_iso
from .scenario import Scenario
from .secrets import discard_runtime_secrets, write_secret
from .shell import Background, CommandError
from .steps import ACTIONS
from .topology import Topology, TopologyError
from .traffic import start_echo_server


class Progress(Protocol):
    def cell_started(self, cell: CellResult) -> None: ...
    def step_done(self, cell: CellResult, step: StepResult) -> None: ...
    def cell_done(self, cell: CellResult) -> None: ...


class Interrupted(BaseException):
    """SIGTERM/SIGHUP: unwind like Ctrl-C so every cell tears down."""


@dataclass(frozen=True, slots=True)
class Cell:
    client: PeerDriver
    server: PeerDriver
    scenario: Scenario


def plan(clients: Sequence[PeerDriver], servers: Sequence[PeerDriver],
         scenarios: Sequence[Scenario]) -> list[Cell]:
    return [Cell(c, s, sc) for sc in scenarios for s in servers for c in clients]


def why_unsupported(cell: Cell) -> str | None:
    reasons = []
    for role, driver in (("client", cell.client), ("server", cell.server)):
        missing = driver.unavailable()
        if missing:
            reasons.append(f"{role} {driver.name}: {missing}")
    return "; ".join(reasons or capability_gaps(cell)) or None


def capability_gaps(cell: Cell) -> list[str]:
    """What the scenario needs that the peers lack (the same on every machine)."""
    reasons = []
    sc = cell.scenario
    needs = {"client": {"initiator", *sc.requires.get("client", ())},
             "server": {"responder", *sc.requires.get("server", ())}}
    if sc.topology.outer == "ipv6":
        needs["client"].add("ipv6-outer")
        needs["server"].add("ipv6-outer")
    if sc.config.psk or sc.config.psk_mismatch:
        needs["client"].add("psk")
        needs["server"].add("psk")
    if sc.config.keepalive:
        needs["client"].add("keepalive")
    for role, driver in (("client", cell.client), ("server", cell.server)):
        reasons += [f"{role} {r}" for r in driver.missing(needs[role])]
    for cap in sc.requires_any:
        if cap not in cell.client.capabilities | cell.server.capabilities:
            reasons.append(f"neither peer has {cap} (the scenario needs it on one of them)")
    return reasons


def _configs(cell: Cell, prefix: str, ctx: CellContext) -> dict[str, InterfaceConfig]:
    sc, cfg = cell.scenario, cell.scenario.config
    pair = {"client": keys.keypair(), "server": keys.keypair()}
    ctx.public_keys = {role: kp.public for role, kp in pair.items()}
    server_psk = client_psk = keys.psk() if (cfg.psk or cfg.psk_mismatch) else None
    if cfg.psk_mismatch:
        client_psk = keys.psk()
    server_key_for_client = keys.keypair().public if cfg.wrong_server_key else pair[
        "server"].public
    inner6 = cfg.inner_ipv6

    def addresses(role: str) -> tuple[str, ...]:
        out = [f"{INNER_V4[role]}/24"] + ([f"{INNER_V6[role]}/64"] if inner6 else [])
        return tuple(out)

    def allowed(role: str) -> tuple[str, ...]:
        return (f"{INNER_V4[role]}/32",) + ((f"{INNER_V6[role]}/128",) if inner6 else ())

    address, port = ctx.server_endpoint()
    endpoint = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
    server = InterfaceConfig(
        naming.ifname(prefix, "wgs"), pair["server"].private, addresses("server"),
        SERVER_PORT, cfg.mtu,
        [PeerEntry(pair["client"].public, allowed("client"), preshared_key=server_psk)],
        cfg.log_level)
    client = InterfaceConfig(
        naming.ifname(prefix, "wgc"), pair["client"].private,
        addresses("client") + tuple(sc.config.client_extra_addresses), None, cfg.mtu,
        [PeerEntry(server_key_for_client, allowed("server"), endpoint=endpoint,
                   preshared_key=client_psk, persistent_keepalive=cfg.keepalive)],
        cfg.log_level)
    # Static keys in Wireshark's key log format: enough to read initiations in the capture.
    write_secret(ctx.folder / "static.keys", "".join(
        f"LOCAL_STATIC_PRIVATE_KEY = {kp.private}\n" for kp in pair.values()), runtime=False)
    return {"client": client, "server": server}


def _topology(cell: Cell, prefix: str) -> Topology:
    spec = cell.scenario.topology
    topo = Topology(prefix, ipv4=spec.outer in ("ipv4", "dual"),
                    ipv6=spec.outer in ("ipv6", "dual"))
    topo.add_host("client", nat=spec.client_nat, mtu=spec.client_link_mtu)
    topo.add_host("server", mtu=spec.server_link_mtu)
    for extra in spec.extra_hosts:
        topo.add_host(extra)
    return topo


TopologyFactory = Callable[[Cell, str], Topology]


class CellRunner:
    def __init__(self, cell: Cell, out: Path, progress: Progress,
                 topology: TopologyFactory | None = None) -> None:
        self.cell = cell
        self.progress = progress
        self.make_topology = topology or _topology  # the backend (netns unless told)
        self.prefix = naming.new_prefix()
        sc = cell.scenario
        self.folder = out / f"{cell.client.name}_{cell.server.name}" / sc.name
        self.result = CellResult(cell.client.name, cell.server.name, sc.name, prefix=self.prefix)

    def run(self) -> CellResult:
        return run_cell(self.result, self.progress, self.folder, self.prefix,
                        lambda: why_unsupported(self.cell), self._run_in_topology)

    def _run_in_topology(self) -> None:
        result = self.result
        topo = self.make_topology(self.cell, self.prefix)
        ctx = CellContext(self.cell.scenario, topo, self.folder)
        captures: list[tuple[Background, Path]] = []
        try:
            try:
                topo.up()
                if self.cell.scenario.topology.conntrack_udp_timeout:
                    topo.set_conntrack_udp_timeout(self.cell.scenario.topology
                                                   .conntrack_udp_timeout)
                captures = self._start_captures(ctx)
                self._start_peers(ctx)
            except (TopologyError, CaptureError, DriverError, CommandError) as exc:
                result.status, result.reason = ERROR, f"setup: {exc}"
                return
            except Unsupported as exc:
                result.status, result.reason = UNSUPPORTED, str(exc)
                return
            self._run_steps(ctx)
        except (KeyboardInterrupt, Interrupted):
            result.status, result.reason = ERROR, "interrupted"
            raise
        finally:
            self._finish(ctx, captures)

    def _start_captures(self, ctx: CellContext) -> list[tuple[Background, Path]]:
        out = []
        hosts = ctx.topology.hosts.values()
        addresses = {h.name: h.v4 or h.v6 or "" for h in hosts}
        for spec in self.cell.scenario.captures:
            path = self.folder / f"{spec.host}.pcapng"
            bpf = spec.filter.format(**addresses) if spec.filter else None
            out.append((start_capture(ctx.host(spec.host), path, bpf=bpf,
                                      max_packets=spec.max_packets), path))
        return out

    def _start_peers(self, ctx: CellContext) -> None:
        configs = _configs(self.cell, self.prefix, ctx)
        for role, driver in (("server", self.cell.server), ("client", self.cell.client)):
            instance = driver.start(ctx.host(role), configs[role], self.folder)
            ctx.instances[role] = instance
            if instance.netdev:
                ctx.background[f"echo-{role}"] = start_echo_server(
                    ctx.host(role), self.folder / f"{role}-echo.log")

    def _run_steps(self, ctx: CellContext) -> None:
        result = self.result
        sc = self.cell.scenario
        ctx.deadline = time.monotonic() + sc.timeout
        time.sleep(0.3)  # echo servers bind
        for index, step in enumerate(sc.steps, 1):
            started = time.monotonic()
            status, detail = PASS, ""
            crash: Exception | None = None
            missing = [r for role, caps in step.requires.items()
                       for r in ctx.peer(role).driver.missing(set(caps))]
            try:
                if missing:
                    raise StepSkipped("; ".join(missing))
                if ctx.remaining() <= 0:
                    raise StepFailed(f"the scenario's {sc.timeout:.0f} s ran out")
                detail = ACTIONS[step.action].run(ctx, step)
                problem = self._peer_problem(ctx)
                if problem:
                    raise StepFailed(problem)
            except StepSkipped as exc:
                status, detail = SKIPPED, f"skipped: {exc}"
            except StepFailed as exc:
                status, detail = FAIL, str(exc)
            except (DriverError, CommandError, TopologyError, Unsupported) as exc:
                status, detail = FAIL, f"{type(exc).__name__}: {exc}"
            except Exception as exc:  # a bug or a broken peer connection: the cell's error
                status, detail, crash = ERROR, f"{type(exc).__name__}: {exc}", exc
            step_result = StepResult(index, step.label, step.action, status, detail,
                                     round(time.monotonic() - started, 2))
            result.steps.append(step_result)
            self.progress.step_done(result, step_result)
            if crash is not None:
                record_crash(result, self.folder, f"step {index} ({step.label})", crash)
                return
            if status == FAIL:
                problem = self._peer_problem(ctx)
                result.status = FAIL
                result.reason = f"step {index} ({step.label}): {detail}" + (
                    f"; {problem}" if problem and problem not in detail else "")
                return
        result.status, result.reason = end_of_cell(result.steps)

    @staticmethod
    def _peer_problem(ctx: CellContext) -> str | None:
        for role, instance in ctx.instances.items():
            problem = instance.problem()
            if problem:
                return f"{role}: {problem}"
        return None

    def _finish(self, ctx: CellContext, captures: list[tuple[Background, Path]]) -> None:
        """Tear down everything that was started, each part on its own: a part that raises
        makes the cell an error, and the rest is still torn down."""
        result = self.result
        result.measurements.update(ctx.measurements)
        for role in ctx.instances:
            self._guard(f"reading the {role}'s state", partial(self._final_state, ctx, role))
        for name, proc in ctx.background.items():
            self._guard(f"stopping {name}", partial(proc.stop, grace=2.0))
        for instance in ctx.instances.values():
            self._guard(f"stopping {instance.driver.name}",
                        partial(self._stop_instance, instance))
        for proc, _ in captures:
            self._guard("stopping a capture", partial(stop_capture, proc))
        self._guard("tearing the topology down", lambda: self._topology_down(ctx))
        self._guard("collecting artifacts",
                    lambda: self._collect_artifacts(ctx, [path for _, path in captures]))

    def _guard(self, what: str, action: Callable[[], object]) -> None:
        guard(self.result, self.folder, what, action)

    def _final_state(self, ctx: CellContext, role: str) -> None:
        if "state" not in ctx.instances[role].driver.capabilities:
            return
        try:
            state = ctx.peer_state(role)
        except (DriverError, CommandError, KeyError):
            return
        if state is not None:
            self.result.measurements[f"{role}.rx_bytes"] = float(state.rx_bytes)
            self.result.measurements[f"{role}.tx_bytes"] = float(state.tx_bytes)

    def _stop_instance(self, instance: PeerInstance) -> None:
        try:
            instance.stop()
        except (DriverError, CommandError) as exc:
            self.result.reason += f" (stopping {instance.driver.name}: {exc})"

    def _topology_down(self, ctx: CellContext) -> None:
        problems = ctx.topology.down()
        if problems:
            self.result.reason += f" (teardown: {'; '.join(problems)})"

    def _collect_artifacts(self, ctx: CellContext, pcaps: list[Path]) -> None:
        """Keep only the secrets that must stay (harness/secrets.py): the merged key log and
        the captures that embed it; the peers' configurations go with the peers."""
        discard_runtime_secrets(self.folder)
        keylogs = [k for k in (i.keylog() for i in ctx.instances.values()) if k is not None]
        if keylogs:
            merged = write_secret(self.folder / "wireguard.keys",
                                  "".join(k.read_text() for k in keylogs), runtime=False)
            for keylog in keylogs:  # merged into wireguard.keys, which also holds the statics
                keylog.unlink(missing_ok=True)
            (self.folder / "static.keys").unlink(missing_ok=True)
            for pcap in pcaps:
                if pcap.exists():
                    try:
                        write_decrypted(pcap, merged)
                    except CaptureError as exc:
                        self.result.reason += f" ({exc})"
        self.result.artifacts = sorted(
            str(p.relative_to(self.folder)) for p in self.folder.rglob("*") if p.is_file())


def end_of_cell(steps: Sequence[StepResult]) -> tuple[str, str]:
    """The status and reason of a cell whose steps all ran without a failure: *pass*, or
    *unsupported* when every step was skipped (nothing was checked; the reasons say why)."""
    skipped = [s for s in steps if s.status == SKIPPED]
    if len(skipped) == len(steps):
        reasons = sorted({s.detail.removeprefix("skipped: ") for s in skipped})
        return UNSUPPORTED, "every step was skipped: " + "; ".join(reasons or ["no steps"])
    labels = ", ".join(s.label for s in skipped)
    return PASS, f"skipped steps: {labels}" if skipped else ""


TRACEBACK_FILE = "traceback.txt"


def guard(result: CellResult, folder: Path, what: str, action: Callable[[], object]) -> None:
    """One part of a teardown: if it raises, the cell is an error and the rest goes on."""
    try:
        action()
    except Exception as exc:
        record_crash(result, folder, what, exc)


def _run_body(result: CellResult, folder: Path, prefix: str, body: Callable[[], None]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    result.folder = str(folder)
    registry_files.claim(prefix)
    try:
        body()
    except Exception as exc:
        record_crash(result, folder, "the cell crashed", exc)
    finally:
        registry_files.release(prefix)


def record_crash(result: CellResult, folder: Path, where: str, exc: BaseException) -> None:
    """An unexpected exception (a bug, a reset connection...) makes the cell an *error*: the
    traceback goes to the cell's folder, the run goes on."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / TRACEBACK_FILE).open("a") as out:
        out.write(f"# {where}\n{''.join(traceback.format_exception(exc))}\n")
    result.status = ERROR
    reason = f"{where}: {type(exc).__name__}: {exc} (traceback in {TRACEBACK_FILE})"
    result.reason = f"{reason}; {result.reason}" if result.reason else reason


def run_cell(result: CellResult, progress: Progress, folder: Path, prefix: str,
             unsupported: str | Callable[[], str | None] | None,
             body: Callable[[], None]) -> CellResult:
    """The frame of every matrix cell (scenarios and probes): timestamps and progress, then
    either *unsupported* with the reason, or ``body`` in a test folder while the run prefix is
    claimed (so `harness cleanup` leaves a live cell alone). Whatever ``body`` raises (but an
    interruption) makes the cell an error; it never ends the run."""
    result.started = now_iso()
    started = time.monotonic()
    progress.cell_started(result)
    try:
        reason = unsupported() if callable(unsupported) else unsupported
    except Exception as exc:
        record_crash(result, folder, "checking the peers", exc)
    else:
        if reason:
            result.status, result.reason = UNSUPPORTED, reason
        else:
            _run_body(result, folder, prefix, body)
    if result.status == ERROR and folder.exists():  # the traceback is an artifact
        result.folder = str(folder)
        result.artifacts = sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                                  if p.is_file())
    result.ended = now_iso()
    result.seconds = round(time.monotonic() - started, 2)
    progress.cell_done(result)
    return result
