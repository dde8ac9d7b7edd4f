"""Drivers for userspace implementations that behave like `wireguard-go IFNAME`: they create a
TUN device, serve the cross-platform UAPI on /var/run/wireguard/IFNAME.sock and are configured
with `wg`. wireguard-go, wgref and boringtun-cli are all driven this way."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

from .. import naming, tools
from ..secrets import write_secret
from ..shell import Background, CommandError, run
from ..tools import Tool
from ..topology import Host
from ..wgdump import DeviceState, DumpError, parse_dump
from .base import DriverError, InterfaceConfig, PeerDriver, PeerInstance, Unsupported

FULL_CAPABILITIES = frozenset({
    "initiator", "responder", "psk", "ipv6-outer", "ipv6-inner", "keepalive", "roaming",
    "icmp", "state", "reconfigure", "mtu", "cookie", "wire-counters",
    "passive-keepalive", "peer-update",
})
START_TIMEOUT = 15.0


def socket_path(ifname: str) -> Path:
    return Path(naming.WG_SOCKET_DIR) / f"{ifname}.sock"


def configure_netdev(host: Host, config: InterfaceConfig) -> None:
    """Addresses, MTU and link up for an interface that already exists in the namespace."""
    for address in config.addresses:
        host.run(["ip", "addr", "add", address, "dev", config.ifname, "nodad"]
                 if ":" in address else ["ip", "addr", "add", address, "dev", config.ifname])
    host.run(["ip", "link", "set", config.ifname, "mtu", str(config.mtu), "up"])


def wg_setconf(host: Host, config: InterfaceConfig, folder: Path) -> None:
    conf = write_secret(folder / f"{config.ifname}.wg.conf", config.wg_conf(), runtime=True)
    host.run(["wg", "setconf", config.ifname, str(conf)])


def wg_state(host: Host, ifname: str) -> DeviceState:
    result = host.run(["wg", "show", ifname, "dump"], timeout=10, check=False)
    if not result.ok:
        raise DriverError(f"cannot read the state of {ifname}: {result.describe()}")
    try:
        return parse_dump(result.stdout)
    except DumpError as exc:
        raise DriverError(f"unreadable `wg show {ifname} dump`: {exc}") from exc


def wg_set_peer(host: Host, ifname: str, folder: Path, public_key: str,
                options: dict[str, str]) -> None:
    argv = ["wg", "set", ifname, "peer", public_key]
    for key, value in options.items():
        if key == "preshared-key":  # wg reads keys from files only
            path = write_secret(folder / f"psk-{abs(hash(value)):x}.key", value + "\n",
                                runtime=True)
            value = str(path)
        argv += [key, value]
    host.run(argv)


class UapiInstance(PeerInstance):
    def __init__(self, driver: UapiDriver, host: Host, config: InterfaceConfig, folder: Path,
                 proc: Background, keylog: Path | None) -> None:
        self.driver = driver
        self.host = host
        self.config = config
        self.folder = folder
        self.proc = proc
        self._keylog = keylog
        self._stopped = False

    def state(self) -> DeviceState:
        return wg_state(self.host, self.config.ifname)

    def set_peer(self, public_key: str, **options: str) -> None:
        missing = self.driver.missing({"peer-update"})
        if missing:  # never send what takes the peer down
            raise Unsupported(missing[0])
        wg_set_peer(self.host, self.config.ifname, self.folder, public_key, options)

    def set_listen_port(self, port: int) -> None:
        self.host.run(["wg", "set", self.config.ifname, "listen-port", str(port)])

    def keylog(self) -> Path | None:
        if self._keylog is not None and self._keylog.exists():
            return self._keylog
        return None

    def logs(self) -> list[Path]:
        return [self.proc.log]

    def problem(self) -> str | None:
        if self.proc.alive():
            return None
        return (f"{self.driver.name} exited with status {self.proc.proc.returncode}; "
                f"log tail: {self.proc.log_tail(300)}")

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self.proc.stop(grace=3.0)
        sock = socket_path(self.config.ifname)
        if sock.exists():
            sock.unlink(missing_ok=True)


class UapiDriver(PeerDriver):
    """`PROGRAM -f IFNAME` inside the host namespace, configured with `wg setconf`."""

    def __init__(self, name: str, command: Callable[[], list[str] | None], *,
                 env: dict[str, str] | None = None,
                 capabilities: frozenset[str] = FULL_CAPABILITIES,
                 keylog: bool = False, missing_reason: str | Callable[[], str] = "",
                 log_env: Callable[[str], dict[str, str]] | None = None,
                 limitations: dict[str, str] | None = None,
                 version_suffix: str = "") -> None:
        self.name = name
        self._command = command
        self._env = env or {}
        self._log_env = log_env or (lambda level: {"LOG_LEVEL": level})
        self._version_suffix = version_suffix
        self.capabilities = capabilities | ({"keylog"} if keylog else frozenset())
        self.limitations = {"keylog": "no key log support"} if not keylog else {}
        self.limitations.update(limitations or {})
        self._keylog = keylog
        self._missing = missing_reason or f"{name} is not installed (not on PATH)"
        self._version: str | None = None

    @property
    def _missing_reason(self) -> str:
        return self._missing if isinstance(self._missing, str) else self._missing()

    def unavailable(self) -> str | None:
        return None if self._command() is not None else self._missing_reason

    def version(self) -> str:
        if self._version is None:
            cmd = self._command()
            if cmd is None:
                return "unavailable"
            result = run([*cmd, "--version"], check=False, timeout=15)
            text = (result.stdout or result.stderr).strip().splitlines()
            self._version = (text[0] if text else "unknown") + self._version_suffix
        return self._version

    def start(self, host: Host, config: InterfaceConfig, folder: Path) -> PeerInstance:
        cmd = self._command()
        if cmd is None:
            raise DriverError(self._missing_reason)
        folder.mkdir(parents=True, exist_ok=True)
        env = {**self._log_env(config.log_level), **self._env}
        keylog = None
        if self._keylog:
            keylog = folder / f"{host.name}-{self.name}.keys"
            env["WG_KEYLOG_FILE"] = str(keylog)
        log = folder / f"{host.name}-{self.name}.log"
        proc = host.spawn(self.name, [*cmd, "-f", config.ifname], log, env=env)
        instance = UapiInstance(self, host, config, folder, proc, keylog)
        try:
            self._wait_ready(proc, config.ifname)
            wg_setconf(host, config, folder)
            configure_netdev(host, config)
        except (CommandError, DriverError) as exc:
            instance.stop()
            raise DriverError(f"{self.name} on {host.name}: {exc}") from exc
        return instance

    def _wait_ready(self, proc: Background, ifname: str) -> None:
        sock = socket_path(ifname)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if not proc.alive():
                raise DriverError(f"exited at start ({proc.proc.returncode}): {proc.log_tail()}")
            if sock.exists():
                return
            time.sleep(0.05)
        raise DriverError(f"no UAPI socket {sock} after {START_TIMEOUT:g} s: {proc.log_tail()}")


def _pinned(tool: Tool, *args: str, fallback: str | None = None,
            ) -> Callable[[], list[str] | None]:
    """The tool's cached build, else (when ``fallback`` is given) that program on PATH."""
    def command() -> list[str] | None:
        path = tool.installed()
        found = str(path) if path else (shutil.which(fallback) if fallback else None)
        return [found, *args] if found else None
    return command


def _distribution_wireguard_go() -> list[str] | None:
    """`wireguard-go` on PATH that is not our pinned build (Debian's /usr/bin/wireguard-go)."""
    cache = str(tools.cache_root())
    for folder in os.environ.get("PATH", os.defpath).split(os.pathsep):
        path = Path(folder or ".") / "wireguard-go"
        if not folder.startswith(cache) and path.is_file() and os.access(path, os.X_OK):
            return [str(path)]
    return None


def wgref_command() -> list[str] | None:
    if importlib.util.find_spec("wgref") is None:
        return None
    if importlib.util.find_spec("wgref.interface") is None:
        return None
    path = shutil.which("wgref")
    if path and os.access(path, os.X_OK):
        return [path]
    return [sys.executable, "-m", "wgref.cli"]


def wireguard_go() -> UapiDriver:
    """Current wireguard-go, built from its Go module at the pinned version (harness.tools)."""
    tool = tools.TOOLS["wireguard-go"]
    return UapiDriver("wireguard-go", _pinned(tool), missing_reason=tool.missing_reason,
                      version_suffix=f" ({tool.package}@{tool.version})")


def wireguard_go_debian() -> UapiDriver:
    """The distribution's wireguard-go (Debian 12: 0.0.20220316, before the offloads)."""
    return UapiDriver("wireguard-go-debian", _distribution_wireguard_go,
                      missing_reason="the distribution's wireguard-go is not installed "
                      "(apt-get install wireguard-go)")


def wgref() -> UapiDriver:
    return UapiDriver(
        "wgref", wgref_command, keylog=True, capabilities=FULL_CAPABILITIES | {"icmp-errors"},
        missing_reason="wgref's userspace interface (wgref.interface) is not importable "
        "in this Python: `wgref IFNAME` is not built yet or wgref is not installed",
    )


# boringtun-cli's --verbosity (WG_LOG_LEVEL) for the harness's LOG_LEVEL words
BORINGTUN_LEVELS = {"verbose": "debug", "debug": "debug", "error": "error", "silent": "error"}


BORINGTUN_LIMITATIONS = {
    "peer-update": "`wg set` on an existing peer panics its device thread (boringtun 0.7.1 "
                   "device/mod.rs: 'Modifying existing peers is not yet supported. Remove and "
                   "add again instead.'), after which the interface hangs",
    "wire-counters": "its UAPI rx_bytes/tx_bytes count the inner IP packets only (boringtun "
                     "0.7.1 noise/mod.rs adds the decrypted packet's length), so a keepalive "
                     "moves neither counter",
    "passive-keepalive": "its timers are rounded to a second (boringtun 0.7.1 noise/timers.rs: "
                         "'for efficiency our timers are rounded to a second'): data received "
                         "within the same second as its last send is not newer than the send, "
                         "so no keepalive follows 10 s later",
}
BORINGTUN_CAPABILITIES = FULL_CAPABILITIES - set(BORINGTUN_LIMITATIONS)


def boringtun_log_env(level: str) -> dict[str, str]:
    return {"WG_LOG_LEVEL": BORINGTUN_LEVELS.get(level, "error"), "NO_COLOR": "1"}


def boringtun_cli() -> UapiDriver:
    """`boringtun-cli -f IFNAME`: the pinned crates build (harness.tools), else one on PATH.
    It drops root after start unless told not to, and then cannot serve the UAPI socket; in
    the foreground it logs to stdout at WG_LOG_LEVEL."""
    tool = tools.TOOLS["boringtun-cli"]
    return UapiDriver("boringtun-cli",
                      _pinned(tool, "--disable-drop-privileges", fallback="boringtun-cli"),
                      capabilities=BORINGTUN_CAPABILITIES, limitations=BORINGTUN_LIMITATIONS,
                      missing_reason=tool.missing_reason, log_env=boringtun_log_env)
