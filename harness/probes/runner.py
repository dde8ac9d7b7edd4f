"""One probe against one server: a cell of the matrix (client "probe", scenario
``probe:NAME``). Builds a client/server(/attacker) topology, starts the server with the
probe's key as its only peer, captures both links, runs the probe, and always tears down."""

from __future__ import annotations

import base64
import json
import time
import traceback
from collections.abc import Callable
from functools import partial
from pathlib import Path

from .. import keys, naming
from ..capture import CaptureError, start_capture, stop_capture
from ..context import SERVER_PORT
from ..peers.base import DriverError, InterfaceConfig, PeerDriver, PeerEntry, PeerInstance
from ..peers.spec import HELPER_LOG, LISTENER
from ..results import ERROR, FAIL, PASS, UNSUPPORTED, CellResult, StepResult
from ..runner import Interrupted, Progress, guard, run_cell
from ..secrets import discard_runtime_secrets, write_secret
from ..shell import Background, CommandError
from ..topology import Topology, TopologyError
from ..traffic import harness_python
from . import pcap
from .base import Probe, ProbeContext, ProbeError, ProbeFailed, ProbeUnsupported
from .client import ProbeClient
from .craft import CLIENT_INNER, LISTEN_PORT, SERVER_INNER, Initiator
from .netns import NetnsError
from .oracle import ListenerOracle, LogOracle, Oracle
from .wire import Wire

PROBE_CLIENT = "probe"
LISTENER_START = 10.0


def scenario_name(probe: Probe) -> str:
    return f"probe:{probe.name}"


def why_unsupported(driver: PeerDriver, probe: Probe) -> str | None:
    missing = driver.unavailable()
    if missing:
        return f"server {driver.name}: {missing}"
    reasons = driver.missing({"responder", *probe.needs})
    limits = driver.config_limits
    reasons += [f"{driver.name}: {limits[c]}" for c in probe.config if c in limits]
    if probe.delivery and driver.delivery is None:
        reasons.append(f"{driver.name} has no interface and no log of what it delivers")
    return "; ".join(reasons) or None


class ProbeCell:
    def __init__(self, driver: PeerDriver, probe: Probe, out: Path,
                 progress: Progress) -> None:
        self.driver = driver
        self.probe = probe
        self.progress = progress
        self.prefix = naming.new_prefix()
        self.folder = out / f"{PROBE_CLIENT}_{driver.name}" / probe.name
        self.result = CellResult(PROBE_CLIENT, driver.name, scenario_name(probe),
                                 prefix=self.prefix)

    def run(self) -> CellResult:
        return run_cell(self.result, self.progress, self.folder, self.prefix,
                        why_unsupported(self.driver, self.probe), self._run_in_topology)

    def _topology(self) -> Topology:
        topo = Topology(self.prefix, ipv4=True, ipv6=False)
        topo.add_host("client")
        topo.add_host("server")
        if self.probe.attacker:
            topo.add_host("attacker")
        return topo

    def _on_step(self, step: StepResult) -> None:
        self.result.steps.append(step)
        self.progress.step_done(self.result, step)

    def _run_in_topology(self) -> None:
        result, probe = self.result, self.probe
        topo = self._topology()
        captures: list[tuple[Background, Path]] = []
        wires: list[Wire] = []
        instance: PeerInstance | None = None
        ctx: ProbeContext | None = None
        try:
            try:
                topo.up()
                captures = self._captures(topo)
                client_host, server_host = topo.host("client"), topo.host("server")
                wire = Wire.open("probe", client_host.ns, client_host.address(4))
                wires.append(wire)
                initiator, config = self._config(topo, wire)
                instance = self.driver.start(server_host, config, self.folder)
                oracle, listener = self._oracle(topo, instance)
                attacker = None
                if probe.attacker:
                    host = topo.host("attacker")
                    attacker = Wire.open("attacker", host.ns, host.address(4))
                    wires.append(attacker)
                server = (server_host.address(4), SERVER_PORT)
                ctx = ProbeContext(probe, topo, instance, ProbeClient(wire, initiator, server),
                                   self.folder, oracle, attacker,
                                   deadline=time.monotonic() + probe.timeout,
                                   on_step=self._on_step)
                if listener is not None:
                    ctx.background["listener"] = listener
            except (TopologyError, CaptureError, DriverError, CommandError, NetnsError,
                    OSError) as exc:
                result.status, result.reason = ERROR, f"setup: {exc}"
                return
            self._run_probe(ctx)
        except (KeyboardInterrupt, Interrupted):
            result.status, result.reason = ERROR, "interrupted"
            raise
        finally:
            self._finish(topo, ctx, instance, captures, wires)

    def _run_probe(self, ctx: ProbeContext) -> None:
        result = self.result
        try:
            result.reason = self.probe.run(ctx)
            result.status = PASS
        except ProbeFailed as exc:
            result.status, result.reason = FAIL, str(exc)
        except ProbeUnsupported as exc:
            result.status, result.reason = UNSUPPORTED, str(exc)
        except ProbeError as exc:
            result.status, result.reason = ERROR, f"baseline: {exc}"
        except (DriverError, CommandError, OSError) as exc:
            result.status, result.reason = ERROR, f"{type(exc).__name__}: {exc}"
        except Exception as exc:  # a bug in a probe must not stop the matrix
            (self.folder / "probe-error.txt").write_text(traceback.format_exc())
            result.status = ERROR
            result.reason = f"the probe crashed: {type(exc).__name__}: {exc} " \
                            "(traceback in probe-error.txt)"
        problem = ctx.server.problem()
        if problem:
            result.status = FAIL
            result.reason = f"the server died during the probe: {problem}; {result.reason}"

    def _captures(self, topo: Topology) -> list[tuple[Background, Path]]:
        out = []
        attacker = topo.hosts.get("attacker")
        for name, host in topo.hosts.items():
            bpf = f"not host {attacker.v4}" if attacker and name == "server" else None
            limit = 2000 if name == "attacker" else 50_000
            path = self.folder / f"{name}.pcapng"
            out.append((start_capture(host, path, bpf=bpf, max_packets=limit), path))
        return out

    def _config(self, topo: Topology, wire: Wire) -> tuple[Initiator, InterfaceConfig]:
        server_keys = keys.keypair()
        probe_keys = keys.keypair()
        initiator = Initiator(base64.b64decode(probe_keys.private),
                              base64.b64decode(server_keys.public))
        host, port = wire.address
        endpoint = f"{host}:{port}" if self.probe.server_knows_endpoint else None
        peer = PeerEntry(probe_keys.public, (f"{CLIENT_INNER}/32",), endpoint=endpoint)
        config = InterfaceConfig(naming.ifname(self.prefix, "wgs"), server_keys.private,
                                 (f"{SERVER_INNER}/24",), SERVER_PORT, 1420, [peer],
                                 self.probe.log_level)
        write_secret(self.folder / "static.keys", "".join(
            f"LOCAL_STATIC_PRIVATE_KEY = {k.private}\n" for k in (server_keys, probe_keys)),
            runtime=False)
        return initiator, config

    def _oracle(self, topo: Topology, instance: PeerInstance
                ) -> tuple[Oracle | None, Background | None]:
        kind = self.driver.delivery
        if kind == HELPER_LOG and instance.logs():
            return LogOracle(instance.logs()[0], LISTEN_PORT), None
        if kind != LISTENER:
            return None, None
        path = self.folder / "delivered.jsonl"
        path.touch()
        argv = harness_python("harness.probes.listener", "listen", "--port", str(LISTEN_PORT),
                              "--out", str(path), "--seconds", str(self.probe.timeout + 30))
        proc = topo.host("server").spawn("listener", argv, self.folder / "listener.log")
        deadline = time.monotonic() + LISTENER_START
        while "listening" not in proc.log_tail(200):
            if not proc.alive() or time.monotonic() > deadline:
                proc.stop()
                raise DriverError(f"the delivery listener did not start: {proc.log_tail()}")
            time.sleep(0.05)
        return ListenerOracle(path, LISTEN_PORT), proc

    def _finish(self, topo: Topology, ctx: ProbeContext | None,
                instance: PeerInstance | None, captures: list[tuple[Background, Path]],
                wires: list[Wire]) -> None:
        """Tear down each part on its own: a part that raises makes the cell an error and the
        rest is still torn down."""
        result = self.result

        def part(what: str, action: Callable[[], object]) -> None:
            guard(result, self.folder, what, action)

        if ctx is not None:
            result.measurements.update(ctx.measurements)
            for name, proc in ctx.background.items():
                part(f"stopping {name}", partial(proc.stop, grace=3.0))
        part("writing events.jsonl", partial(self._write_events, wires))
        for wire in wires:
            part(f"closing the {wire.name} socket", wire.close)
        if instance is not None:
            part(f"stopping {self.driver.name}", partial(self._stop, instance))
        for proc, _ in captures:
            part("stopping a capture", partial(stop_capture, proc))
        server = topo.hosts["server"].v4 if "server" in topo.hosts else None
        part("tearing the topology down", partial(self._down, topo))
        for _, path in captures:
            if server and path.exists() and path.stem in ("client", "server"):
                part(f"reading {path.name}", partial(self._summarize, path, server))
        if self.folder.exists():
            discard_runtime_secrets(self.folder)  # the server's configuration went with it
            result.artifacts = sorted(str(p.relative_to(self.folder))
                                      for p in self.folder.rglob("*") if p.is_file())

    def _stop(self, instance: PeerInstance) -> None:
        try:
            instance.stop()
        except (DriverError, CommandError) as exc:
            self.result.reason += f" (stopping {self.driver.name}: {exc})"

    def _down(self, topo: Topology) -> None:
        problems = topo.down()
        if problems:
            self.result.reason += f" (teardown: {'; '.join(problems)})"

    def _summarize(self, path: Path, server: str) -> None:
        for key, count in pcap.summarize(path, server).items():
            self.result.measurements[f"pcap.{path.stem}.{key}"] = float(count)

    def _write_events(self, wires: list[Wire]) -> None:
        if not wires or not self.folder.exists():
            return
        records = sorted(((w.name, d) for w in wires for d in w.log), key=lambda r: r[1].at)
        if not records:
            return
        start = records[0][1].at
        with (self.folder / "events.jsonl").open("w") as out:
            for name, record in records:
                out.write(json.dumps({"t": round(record.at - start, 4), "socket": name,
                                      "sent": record.sent, "peer": list(record.peer),
                                      "size": len(record.data),
                                      "hex": record.data[:64].hex()}) + "\n")
