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
from .spec import FULL as FULL_CAPABILITIES
from .spec import peer

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
                 version_suffix: str = "") -> None:
        self.name = name
        self._command = command
        self._env = env or {}
        self._log_env = log_env or (lambda level: {"LOG_LEVEL": level})
        self._version_suffix = version_suffix
        self.capabilities = capabilities | ({"keylog"} if keylog else frozenset())
        self.limitations = {"keylog": "no key log support"} if not keylog else {}
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
            self._wait_ready(host, proc, config.ifname)
            wg_setconf(host, config, folder)
            configure_netdev(host, config)
        except (CommandError, DriverError) as exc:
            instance.stop()
            raise DriverError(f"{self.name} on {host.name}: {exc}") from exc
        return instance

    def _wait_ready(self, host: Host, proc: Background, ifname: str) -> None:
        sock = socket_path(ifname)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if not proc.alive():
                raise DriverError(f"exited at start ({proc.proc.returncode}): {proc.log_tail()}")
            if host.serving(sock):
                return
            time.sleep(0.05)
        raise DriverError(f"no UAPI socket {sock} after {START_TIMEOUT:g} s: {proc.log_tail()}")


def pinned(tool: Tool, *args: str, fallback: str | None = None,
            ) -> Callable[[], list[str] | None]:
    """The tool's cached build, else (when ``fallback`` is given) that program on PATH."""
    def command() -> list[str] | None:
        path = tool.installed()
        found = str(path) if path else (shutil.which(fallback) if fallback else None)
        return [found, *args] if found else None
    return command


def distribution_wireguard_go() -> list[str] | None:
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


def wireguard_go() -> PeerDriver:
    """Current wireguard-go, built from its Go module at the pinned version (harness.tools)."""
    return peer("wireguard-go").driver()


def wireguard_go_debian() -> PeerDriver:
    """The distribution's wireguard-go (Debian 12: 0.0.20220316, before the offloads)."""
    return peer("wireguard-go-debian").driver()


def wgref() -> PeerDriver:
    return peer("wgref").driver()


# boringtun-cli's --verbosity (WG_LOG_LEVEL) for the harness's LOG_LEVEL words
BORINGTUN_LEVELS = {"verbose": "debug", "debug": "debug", "error": "error", "silent": "error"}


def boringtun_log_env(level: str) -> dict[str, str]:
    return {"WG_LOG_LEVEL": BORINGTUN_LEVELS.get(level, "error"), "NO_COLOR": "1"}


def boringtun_cli() -> PeerDriver:
    """`boringtun-cli -f IFNAME` (the pinned crates build, see peers.spec)."""
    return peer("boringtun-cli").driver()
