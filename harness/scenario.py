"""Scenario files (scenarios/*.toml): topology, configuration, required capabilities and
ordered steps with per-step timeouts and expectations. Parsing validates everything up front
so a typo fails before any namespace is made."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .peers.base import CAPABILITIES

ROLES = ("client", "server")

class ScenarioError(ValueError):
    """A scenario file is invalid; the message names the file and the problem."""


@dataclass(frozen=True, slots=True)
class TopologySpec:
    outer: str = "ipv4"  # ipv4 | ipv6 | dual: the address family of the endpoints
    client_nat: bool = False
    conntrack_udp_timeout: int | None = None
    client_link_mtu: int = 1500
    server_link_mtu: int = 1500
    extra_hosts: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ConfigSpec:
    psk: bool = False
    psk_mismatch: bool = False  # client and server get different preshared keys
    wrong_server_key: bool = False  # the client is given a wrong public key for the server
    keepalive: int = 0  # the client's persistent keepalive
    mtu: int = 1420
    inner_ipv6: bool = True
    client_extra_addresses: tuple[str, ...] = ()
    log_level: str = "debug"  # the peers' LOG_LEVEL (floods make debug logs huge)


@dataclass(frozen=True, slots=True)
class CaptureSpec:
    host: str
    filter: str | None = None
    max_packets: int | None = None


@dataclass(frozen=True, slots=True)
class Step:
    action: str
    timeout: float
    expect: str  # "success" | "failure"
    params: dict[str, Any]
    requires: dict[str, tuple[str, ...]]  # role -> capabilities; the step is skipped without
    label: str


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    description: str
    path: Path | None
    slow: bool
    timeout: float
    requires: dict[str, tuple[str, ...]]
    requires_any: tuple[str, ...]  # at least one of the two peers must have these
    topology: TopologySpec
    config: ConfigSpec
    steps: tuple[Step, ...]
    captures: tuple[CaptureSpec, ...] = field(default=())
    # it measures something timing-sensitive: with --jobs it runs alone on the machine
    exclusive: bool = False

    @property
    def hosts(self) -> tuple[str, ...]:
        return (*ROLES, *self.topology.extra_hosts)


def _type(value: Any, kind: type | tuple[type, ...], where: str) -> Any:
    if isinstance(value, bool) and kind in (int, float, (int, float)):
        raise ScenarioError(f"{where}: expected a number, got {value!r}")
    if not isinstance(value, kind):
        raise ScenarioError(f"{where}: expected {kind}, got {value!r}")
    return value


def _caps(value: Any, where: str) -> dict[str, tuple[str, ...]]:
    if value is None:
        return {}
    _type(value, dict, where)
    out: dict[str, tuple[str, ...]] = {}
    for role, caps in value.items():
        if role not in ROLES:
            raise ScenarioError(f"{where}: unknown role {role!r} (client or server)")
        _type(caps, list, f"{where}.{role}")
        unknown = [c for c in caps if c not in CAPABILITIES]
        if unknown:
            raise ScenarioError(f"{where}.{role}: unknown capabilities {unknown}")
        out[role] = tuple(caps)
    return out


def _dataclass_from(cls: type[Any], table: Any, where: str) -> Any:
    if table is None:
        return cls()
    _type(table, dict, where)
    known = set(cls.__dataclass_fields__)
    unknown = set(table) - known
    if unknown:
        raise ScenarioError(f"{where}: unknown keys {sorted(unknown)} (known: {sorted(known)})")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in table.items()}
    return cls(**values)


def _step(index: int, raw: Any, hosts: tuple[str, ...], where: str) -> Step:
    where = f"{where} step {index}"
    _type(raw, dict, where)
    raw = dict(raw)
    from .steps import ACTIONS  # the action registry (its functions need this module's Step)

    action = raw.pop("action", None)
    if action not in ACTIONS:
        raise ScenarioError(f"{where}: unknown action {action!r} (one of {', '.join(ACTIONS)})")
    allowed = ACTIONS[action].params
    timeout = float(_type(raw.pop("timeout", ACTIONS[action].timeout), (int, float),
                          f"{where}.timeout"))
    expect = raw.pop("expect", "success")
    if expect not in ("success", "failure"):
        raise ScenarioError(f"{where}: expect must be success or failure, not {expect!r}")
    requires = _caps(raw.pop("requires", None), f"{where}.requires")
    label = str(raw.pop("label", action))
    unknown = set(raw) - allowed
    if unknown:
        raise ScenarioError(f"{where} ({action}): unknown parameters {sorted(unknown)} "
                            f"(allowed: {sorted(allowed)})")
    for key in ("from", "to", "host"):
        if key in raw and raw[key] not in hosts:
            raise ScenarioError(f"{where}: {key} = {raw[key]!r} is not a host ({hosts})")
    if "peer" in raw and raw["peer"] not in (*ROLES, "either", "both"):
        raise ScenarioError(f"{where}: peer must be client, server, either or both")
    return Step(action, timeout, expect, raw, requires, label)


def parse_scenario(text: str, path: Path | None = None, name: str | None = None) -> Scenario:
    where = str(path) if path else "<scenario>"
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{where}: not valid TOML: {exc}") from exc
    known = {"name", "description", "slow", "exclusive", "timeout", "requires", "requires_any",
             "topology", "config", "steps", "captures"}
    unknown = set(data) - known
    if unknown:
        raise ScenarioError(f"{where}: unknown keys {sorted(unknown)}")
    topology = _dataclass_from(TopologySpec, data.get("topology"), f"{where} [topology]")
    if topology.outer not in ("ipv4", "ipv6", "dual"):
        raise ScenarioError(f"{where}: topology.outer must be ipv4, ipv6 or dual")
    config = _dataclass_from(ConfigSpec, data.get("config"), f"{where} [config]")
    hosts = (*ROLES, *topology.extra_hosts)
    raw_steps = data.get("steps", [])
    _type(raw_steps, list, f"{where} steps")
    if not raw_steps:
        raise ScenarioError(f"{where}: no [[steps]]")
    steps = tuple(_step(i + 1, raw, hosts, where) for i, raw in enumerate(raw_steps))
    captures = tuple(_dataclass_from(CaptureSpec, c, f"{where} [[captures]]")
                     for c in data.get("captures", [{"host": "client"}, {"host": "server"}]))
    for cap in captures:
        if cap.host not in hosts:
            raise ScenarioError(f"{where}: capture host {cap.host!r} is not a host")
    requires_any = tuple(data.get("requires_any", ()))
    for cap_name in requires_any:
        if cap_name not in CAPABILITIES:
            raise ScenarioError(f"{where}: unknown capability {cap_name!r} in requires_any")
    return Scenario(
        name=str(data.get("name") or name or (path.stem if path else "scenario")),
        description=str(data.get("description", "")),
        path=path,
        slow=bool(data.get("slow", False)),
        timeout=float(_type(data.get("timeout", 120), (int, float), f"{where} timeout")),
        requires=_caps(data.get("requires"), f"{where} requires"),
        requires_any=requires_any,
        topology=topology,
        config=config,
        steps=steps,
        captures=captures,
        exclusive=bool(_type(data.get("exclusive", False), bool, f"{where} exclusive")),
    )


def load_scenario(path: Path) -> Scenario:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ScenarioError(f"cannot read {path}: {exc}") from exc
    return parse_scenario(text, path)


def load_scenarios(folder: Path) -> list[Scenario]:
    return [load_scenario(p) for p in sorted(folder.glob("*.toml"))]
