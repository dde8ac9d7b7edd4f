"""What each scenario action does. Every function takes the cell context and the step, and
returns a detail string (or raises StepFailed / StepSkipped)."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .context import CellContext, StepFailed, StepSkipped
from .scenario import Step
from .traffic import (
    ECHO_PORT,
    TrafficResult,
    harness_python,
    ping,
    start_iperf_server,
    start_transfer,
    transfer_result,
)

ActionFn = Callable[[CellContext, Step], str]


@dataclass(frozen=True, slots=True)
class Action:
    """A scenario action: its name in ``[[steps]]``, the parameters it takes, its default
    timeout and the function that runs it, declared together with ``@action``."""

    name: str
    timeout: float
    params: frozenset[str]
    run: ActionFn


ACTIONS: dict[str, Action] = {}


def action(name: str, timeout: float, *params: str) -> Callable[[ActionFn], ActionFn]:
    def register(fn: ActionFn) -> ActionFn:
        if name in ACTIONS:
            raise ValueError(f"action {name} is declared twice")
        ACTIONS[name] = Action(name, timeout, frozenset(params), fn)
        return fn

    return register


def _param(step: Step, key: str, default: Any = None) -> Any:
    return step.params.get(key, default)


def _expectation(step: Step, result: TrafficResult, ctx: CellContext) -> str:
    for key, value in result.measurements.items():
        ctx.measurements[f"{step.label}.{key}"] = value
    wanted = step.expect == "success"
    if result.ok == wanted:
        return result.detail + ("" if wanted else " (failure expected)")
    raise StepFailed(result.detail + (" (expected success)" if wanted else
                                      " (expected failure, but it worked)"))


def _needs_netdev(ctx: CellContext, host: str, what: str) -> None:
    if host in ctx.instances and not ctx.peer(host).netdev:
        raise StepSkipped(f"{ctx.peer(host).driver.name} has no interface for {what}")


def _needs_inbound(ctx: CellContext, host: str, what: str) -> None:
    if host in ctx.instances and not ctx.peer(host).inbound:
        raise StepSkipped(f"{ctx.peer(host).driver.name} accepts no {what} started by its "
                          "peer (it only carries flows its own host starts)")


@action("ping", 15.0, "from", "to", "family", "count", "size", "df", "source", "min_replies",
        "interval", "dst", "min_errors")
def do_ping(ctx: CellContext, step: Step) -> str:
    src, dst = _param(step, "from", "client"), _param(step, "to", "server")
    _needs_netdev(ctx, src, "ping")
    family = int(_param(step, "family", 4))
    address = _param(step, "dst")
    if address is None:
        _needs_netdev(ctx, dst, "ping")
        _needs_inbound(ctx, dst, "ping")
        address = ctx.inner(dst, family)
    count = int(_param(step, "count", 3))
    result = ping(ctx.host(src), address, count=count,
                  size=int(_param(step, "size", 56)), dont_fragment=bool(_param(step, "df")),
                  source=_param(step, "source"), timeout=min(step.timeout, ctx.remaining()),
                  min_replies=int(_param(step, "min_replies", 1)),
                  interval=float(_param(step, "interval", 0.2)),
                  min_errors=None if _param(step, "min_errors") is None
                  else int(_param(step, "min_errors")))
    return _expectation(step, result, ctx)


def _echo(ctx: CellContext, step: Step, proto: str) -> str:
    src, dst = _param(step, "from", "client"), _param(step, "to", "server")
    family = int(_param(step, "family", 4))
    if src in ctx.instances and not ctx.peer(src).netdev and family == 6:
        raise StepSkipped(f"{ctx.peer(src).driver.name} has no IPv6 inside the tunnel")
    if dst in ctx.instances and not ctx.peer(dst).netdev and family == 6:
        raise StepSkipped(f"{ctx.peer(dst).driver.name} has no IPv6 inside the tunnel")
    if src in ctx.instances and not ctx.peer(src).netdev and ctx.peer(src).builtin_echo:
        raise StepSkipped(f"{ctx.peer(src).driver.name} cannot originate traffic")
    if dst in ctx.instances and not ctx.peer(dst).netdev and not ctx.peer(dst).builtin_echo:
        raise StepSkipped(f"{ctx.peer(dst).driver.name} cannot serve an echo")
    _needs_inbound(ctx, dst, f"{proto} echo")
    size = int(_param(step, "bytes" if proto == "tcp" else "size",
                      65536 if proto == "tcp" else 512))
    result = ctx.peer(src).echo_check(proto, ctx.inner(dst, family), port=ECHO_PORT,
                                      size=size, count=int(_param(step, "count", 3)),
                                      timeout=min(step.timeout, ctx.remaining()))
    return _expectation(step, result, ctx)


@action("tcp", 20.0, "from", "to", "family", "bytes")
def do_tcp(ctx: CellContext, step: Step) -> str:
    return _echo(ctx, step, "tcp")


@action("udp", 15.0, "from", "to", "family", "count", "size")
def do_udp(ctx: CellContext, step: Step) -> str:
    return _echo(ctx, step, "udp")


def _roles_or_skip(ctx: CellContext, step: Step) -> list[str]:
    which = _param(step, "peer", "either")
    roles = ctx.stateful(which)
    if not roles:
        names = {ctx.peer(r).driver.name for r in ("client", "server")}
        raise StepSkipped(f"no state to read ({', '.join(sorted(names))} cannot report it)")
    return roles


def _expect_event(ctx: CellContext, step: Step, what: str,
                  probe: Callable[[], str | None]) -> str:
    """Wait for an event; with expect = "failure" the event must NOT happen in the timeout."""
    if step.expect == "success":
        return ctx.wait_for(what, step.timeout, probe)
    try:
        detail = ctx.wait_for(what, step.timeout, probe)
    except StepFailed:
        return f"{what}: not seen in {step.timeout:.0f} s, as expected"
    raise StepFailed(f"{what} happened but must not have: {detail}")


@action("wait_handshake", 15.0, "peer", "since_mark")
def do_wait_handshake(ctx: CellContext, step: Step) -> str:
    roles = _roles_or_skip(ctx, step)
    since_mark = bool(_param(step, "since_mark", False))
    need_all = _param(step, "peer", "either") == "both"

    def seen(role: str) -> str | None:
        state = ctx.peer_state(role)
        if state is None or state.latest_handshake == 0:
            return None
        base = ctx.marks.get(role)
        if since_mark and base is not None and state.latest_handshake <= base.latest_handshake:
            return None
        return f"{role} ({ctx.peer(role).driver.name}) handshake at {state.handshake_text()}"

    def probe() -> str | None:
        found = [seen(r) for r in roles]
        hits = [f for f in found if f]
        if need_all and len(hits) < len(roles):
            return None
        return "; ".join(hits) if hits else None

    what = "a new handshake" if since_mark else "a completed handshake"
    return _expect_event(ctx, step, f"{what} on {'/'.join(roles)}", probe)


@action("no_handshake", 5.0, "peer")
def do_no_handshake(ctx: CellContext, step: Step) -> str:
    """Over the whole timeout, no stateful peer may show a handshake (latest-handshake 0)."""
    roles = _roles_or_skip(ctx, step)
    end = time.monotonic() + min(step.timeout, ctx.remaining())
    while True:
        for role in roles:
            state = ctx.peer_state(role)
            if state is not None and state.latest_handshake != 0:
                raise StepFailed(f"{role} ({ctx.peer(role).driver.name}) completed a "
                                 f"handshake at {state.handshake_text()}")
        if time.monotonic() >= end:
            return f"latest-handshake stayed 0 on {'/'.join(roles)} for {step.timeout:.0f} s"
        time.sleep(0.2)


@action("mark", 5.0)
def do_mark(ctx: CellContext, step: Step) -> str:
    for role in ("client", "server"):
        ctx.marks[role] = ctx.peer_state(role) if role in ctx.stateful(role) else None
    return "state recorded: " + ", ".join(
        f"{r} endpoint {s.endpoint} handshake {s.latest_handshake}"
        for r, s in ctx.marks.items() if s is not None) or "no stateful peer"


@action("wait_endpoint_change", 15.0, "peer")
def do_wait_endpoint_change(ctx: CellContext, step: Step) -> str:
    role = _param(step, "peer", "server")
    if role not in ctx.stateful(role):
        raise StepSkipped(f"{ctx.peer(role).driver.name} cannot report endpoints")
    base = ctx.marks.get(role)
    before = base.endpoint if base else None
    other_host = ctx.host(ctx.other(role))
    nat = ctx.scenario.topology.client_nat

    def probe() -> str | None:
        state = ctx.peer_state(role)
        if state is None or state.endpoint is None or state.endpoint == before:
            return None
        if not nat:
            current = {other_host.v4, other_host.v6} - {None}
            host_part = state.endpoint.rsplit(":", 1)[0].strip("[]")
            if host_part not in current:
                return None
        return f"{role} endpoint moved {before} -> {state.endpoint}"

    return _expect_event(ctx, step, f"{role}'s endpoint for its peer to change", probe)


@action("wait_rx", 15.0, "peer", "min_bytes", "window", "measure")
def do_wait_rx(ctx: CellContext, step: Step) -> str:
    role = _param(step, "peer", "server")
    if role not in ctx.stateful(role):
        raise StepSkipped(f"{ctx.peer(role).driver.name} cannot report counters")
    start_state = ctx.peer_state(role)
    start_rx = start_state.rx_bytes if start_state else 0
    started = time.monotonic()
    min_bytes = int(_param(step, "min_bytes", 1))

    def probe() -> str | None:
        state = ctx.peer_state(role)
        if state is None or state.rx_bytes - start_rx < min_bytes:
            return None
        return f"{role} received {state.rx_bytes - start_rx} bytes after " \
               f"{time.monotonic() - started:.1f} s"

    detail = _expect_event(ctx, step, f"{role} rx counter to grow by {min_bytes}", probe)
    if step.expect == "success":
        elapsed = time.monotonic() - started
        name = _param(step, "measure", f"{step.label}.seconds")
        ctx.measurements[name] = round(elapsed, 2)
        window = _param(step, "window")
        if window and not (window[0] <= elapsed <= window[1]):
            raise StepFailed(f"{detail}, outside the expected window {window[0]}-{window[1]} s")
    return detail


@action("sleep", 60.0, "seconds", "reason")
def do_sleep(ctx: CellContext, step: Step) -> str:
    seconds = min(float(_param(step, "seconds", 1.0)), ctx.remaining())
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(left, 0.2))  # in slices: an interrupted run (--jobs) stops here soon
    return f"idle {seconds:g} s: {_param(step, 'reason', 'as the scenario asks')}"


@action("set_keepalive", 10.0, "peer", "seconds")
def do_set_keepalive(ctx: CellContext, step: Step) -> str:
    role = _param(step, "peer", "client")
    seconds = int(_param(step, "seconds", 0))
    ctx.peer(role).set_peer(ctx.public_keys[ctx.other(role)],
                            **{"persistent-keepalive": str(seconds) if seconds else "off"})
    return f"{role} persistent keepalive {seconds or 'off'}"


@action("set_listen_port", 10.0, "peer", "port")
def do_set_listen_port(ctx: CellContext, step: Step) -> str:
    role = _param(step, "peer", "client")
    port = int(_param(step, "port", 0)) or random.randint(20000, 60000)
    ctx.peer(role).set_listen_port(port)
    return f"{role} now listens on {port}"


@action("roam", 10.0, "host", "port")
def do_roam(ctx: CellContext, step: Step) -> str:
    name = _param(step, "host", "client")
    before = (ctx.host(name).v4, ctx.host(name).v6)
    host = ctx.topology.roam(name)
    detail = f"{name} moved {before} -> {(host.v4, host.v6)}"
    if _param(step, "port", False) and name in ctx.instances:
        port = random.randint(20000, 60000)
        ctx.peer(name).set_listen_port(port)
        detail += f", listen port {port}"
    return detail


@action("transfer_start", 10.0, "from", "to", "family", "seconds", "bitrate")
def do_transfer_start(ctx: CellContext, step: Step) -> str:
    src, dst = _param(step, "from", "client"), _param(step, "to", "server")
    _needs_netdev(ctx, src, "iperf3")
    _needs_netdev(ctx, dst, "iperf3")
    _needs_inbound(ctx, dst, "iperf3 transfer")
    if "iperf-server" not in ctx.background:
        ctx.background["iperf-server"] = start_iperf_server(
            ctx.host(dst), ctx.folder / "iperf3-server.log")
        time.sleep(0.3)
    seconds = float(_param(step, "seconds", 5))
    ctx.background["transfer"] = start_transfer(
        ctx.host(src), ctx.inner(dst, int(_param(step, "family", 4))), seconds,
        ctx.folder / "iperf3-client.json", bitrate=str(_param(step, "bitrate", "20M")))
    return f"iperf3 {src} -> {dst} for {seconds:g} s started"


@action("transfer_wait", 60.0)
def do_transfer_wait(ctx: CellContext, step: Step) -> str:
    proc = ctx.background.get("transfer")
    if proc is None:
        raise StepFailed("no transfer was started")
    if proc.wait(min(step.timeout, ctx.remaining())) is None:
        proc.stop()
        raise StepFailed(f"the transfer did not end within {step.timeout:.0f} s")
    return _expectation(step, transfer_result(proc), ctx)


def _flood_stats(ctx: CellContext) -> dict[str, Any]:
    path = ctx.folder / "flood-stats.json"
    flood = ctx.background.get("flood")
    for host in ctx.topology.hosts.values():
        if flood is not None and flood in host.background:
            host.fetch(path)  # written where the flood runs (a container: copied here)
    try:
        data: dict[str, Any] = json.loads((ctx.folder / "flood-stats.json").read_text())
        return data
    except (OSError, ValueError):
        return {}


@action("flood_start", 10.0, "from", "to", "seconds", "pps")
def do_flood_start(ctx: CellContext, step: Step) -> str:
    src, dst = _param(step, "from", "attacker"), _param(step, "to", "server")
    address, port = ctx.server_endpoint() if dst == "server" else (
        ctx.host(dst).address(ctx.outer_family()), 0)
    seconds = float(_param(step, "seconds", 30))
    argv = harness_python("harness.flood", address, str(port), ctx.public_keys[dst],
                          "--seconds", str(seconds), "--pps", str(int(_param(step, "pps", 0))),
                          "--stats", str(ctx.folder / "flood-stats.json"))
    ctx.background["flood"] = ctx.host(src).spawn("flood", argv, ctx.folder / "flood.log")
    return f"flooding {address}:{port} from {src} with initiations for up to {seconds:g} s"


@action("wait_cookie_replies", 15.0, "min")
def do_wait_cookie_replies(ctx: CellContext, step: Step) -> str:
    wanted = int(_param(step, "min", 1))

    def probe() -> str | None:
        stats = _flood_stats(ctx)
        if stats.get("cookie_replies", 0) >= wanted:
            return f"{stats['cookie_replies']} cookie replies after {stats['sent']} initiations"
        return None

    try:
        return _expect_event(ctx, step, f"{wanted} cookie replies to the flood", probe)
    except StepFailed as exc:
        stats = _flood_stats(ctx)
        raise StepFailed(f"{exc} ({stats.get('sent', 0)} initiations sent: the responder "
                         "never went under load)") from None


@action("flood_stop", 10.0, "min_cookie_replies")
def do_flood_stop(ctx: CellContext, step: Step) -> str:
    proc = ctx.background.pop("flood", None)
    if proc is None:
        raise StepFailed("no flood was started")
    proc.stop(grace=5.0)
    stats = _flood_stats(ctx)
    for key in ("sent", "cookie_replies", "seconds", "pps"):
        ctx.measurements[f"flood.{key}"] = float(stats.get(key, 0))
    wanted = int(_param(step, "min_cookie_replies", 0))
    detail = (f"flood: {stats.get('sent', 0)} initiations in {stats.get('seconds', 0)} s "
              f"(held at {stats.get('pps', 0)}/s), {stats.get('cookie_replies', 0)} cookie "
              "replies")
    if stats.get("cookie_replies", 0) < wanted:
        raise StepFailed(detail + f" (expected at least {wanted})")
    return detail


@action("block", 5.0, "host", "blocked")
def do_block(ctx: CellContext, step: Step) -> str:
    host = _param(step, "host", "client")
    blocked = bool(_param(step, "blocked", True))
    ctx.topology.block(host, blocked)
    return f"{host} {'blocked' if blocked else 'unblocked'} at the router"


@action("shape", 5.0, "host", "rate", "loss_percent")
def do_shape(ctx: CellContext, step: Step) -> str:
    host = _param(step, "host", "client")
    rate, loss = _param(step, "rate"), int(_param(step, "loss_percent", 0))
    ctx.topology.shape(host, rate=rate, loss_percent=loss)
    return f"{host} link: rate {rate or 'unlimited'}, loss {loss}%"
