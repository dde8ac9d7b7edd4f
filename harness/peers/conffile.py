"""Clients configured by a wg-quick style file and started/stopped by user-given commands.

A TOML file declares one or more such clients::

    [[client]]
    name = "wg-quick"
    up = ["wg-quick", "up", "{conf}"]
    down = ["wg-quick", "down", "{conf}"]
    env = { WG_QUICK_USERSPACE_IMPLEMENTATION = "wireguard-go" }
    needs = ["wg-quick", "wireguard-go"]       # programs that must be on PATH
    capabilities = ["initiator", "psk", "icmp", "state"]
    state = "wg"                                 # read state with `wg show IF dump`

``{conf}`` is the written file (``IFNAME.conf``, as wg-quick wants), ``{ifname}`` the
interface name, ``{folder}`` the test folder. Commands run inside the host's namespace.

As with quic-interop-runner's endpoints, an ``up`` command that exits 127 says "this client
does not support this": the cell is *unsupported*, with the last line the command printed
(stderr, else stdout) as the reason.
"""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path
from typing import Any

from ..secrets import write_secret
from ..shell import run
from ..topology import Host
from ..wgdump import DeviceState
from .base import (
    CAPABILITIES,
    DriverError,
    InterfaceConfig,
    PeerDriver,
    PeerInstance,
    Unsupported,
)
from .uapi import wg_set_peer, wg_state

UNSUPPORTED_EXIT = 127  # quic-interop-runner's "unsupported" exit code


class ConfFileError(ValueError):
    """A client declaration file is invalid."""


class ConfFileInstance(PeerInstance):
    def __init__(self, driver: ConfFileDriver, host: Host, config: InterfaceConfig,
                 folder: Path, conf: Path, log: Path) -> None:
        self.driver, self.host, self.config, self.folder = driver, host, config, folder
        self.client = driver
        self.conf, self.log = conf, log
        self._stopped = False

    def state(self) -> DeviceState | None:
        if not self.client.wg_state:
            return None
        return wg_state(self.host, self.config.ifname)

    def set_peer(self, public_key: str, **options: str) -> None:
        if not self.client.wg_state:
            super().set_peer(public_key, **options)
        wg_set_peer(self.host, self.config.ifname, self.folder, public_key, options)

    def set_listen_port(self, port: int) -> None:
        if not self.client.wg_state:
            super().set_listen_port(port)
        self.host.run(["wg", "set", self.config.ifname, "listen-port", str(port)])

    def logs(self) -> list[Path]:
        return [self.log]

    def problem(self) -> str | None:
        return None

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self.client.run_command(self.client.down, self.host, self.config, self.conf, self.log,
                                check=False)


class ConfFileDriver(PeerDriver):
    def __init__(self, spec: dict[str, Any], source: Path) -> None:
        try:
            self.name = str(spec["name"])
            self.up = [str(x) for x in spec["up"]]
            self.down = [str(x) for x in spec.get("down", [])]
        except (KeyError, TypeError) as exc:
            raise ConfFileError(f"{source}: a [[client]] needs name and up ({exc})") from exc
        self.env = {str(k): str(v) for k, v in spec.get("env", {}).items()}
        self.needs = [str(x) for x in spec.get("needs", [])]
        caps = {str(x) for x in spec.get("capabilities", [])}
        unknown = caps - set(CAPABILITIES)
        if unknown:
            raise ConfFileError(f"{source}: unknown capabilities {sorted(unknown)} "
                                f"(known: {', '.join(CAPABILITIES)})")
        self.wg_state = spec.get("state") == "wg"
        if self.wg_state:
            caps |= {"state", "reconfigure"}
        self.capabilities = frozenset(caps)
        self.limitations = {"responder": "a config-file client only initiates"}
        self.version_command = [str(x) for x in spec.get("version", [])]
        self.source = source

    def unavailable(self) -> str | None:
        missing = [prog for prog in self.needs if shutil.which(prog) is None]
        return f"not on PATH: {', '.join(missing)}" if missing else None

    def version(self) -> str:
        if not self.version_command:
            return f"declared in {self.source.name}"
        result = run(self.version_command, check=False, timeout=15)
        lines = (result.stdout or result.stderr).strip().splitlines()
        return lines[0] if lines else "unknown"

    def run_command(self, template: list[str], host: Host, config: InterfaceConfig,
                    conf: Path, log: Path, *, check: bool = True) -> None:
        if not template:
            return
        values = {"conf": str(conf), "ifname": config.ifname, "folder": str(conf.parent)}
        argv = [part.format(**values) for part in template]
        env = [f"{k}={v}" for k, v in self.env.items()]
        result = host.run(["env", *env, *argv] if env else argv, timeout=30, check=False)
        with log.open("a") as out:
            out.write(f"# {' '.join(argv)} -> {result.returncode}\n{result.stdout}"
                      f"{result.stderr}\n")
        if check and result.returncode == UNSUPPORTED_EXIT:
            said = (result.stderr.strip() or result.stdout.strip()).splitlines()
            reason = said[-1].strip() if said else "no reason given"
            raise Unsupported(f"{self.name}: {reason} (`{argv[0]}` exited "
                              f"{UNSUPPORTED_EXIT}: unsupported)")
        if check and not result.ok:
            raise DriverError(f"{self.name}: {result.describe()}")

    def start(self, host: Host, config: InterfaceConfig, folder: Path) -> PeerInstance:
        folder.mkdir(parents=True, exist_ok=True)
        conf = write_secret(folder / f"{config.ifname}.conf", config.quick_conf(), runtime=True)
        log = folder / f"{host.name}-{self.name}.log"
        self.run_command(self.up, host, config, conf, log)
        return ConfFileInstance(self, host, config, folder, conf, log)


def load_conffile_drivers(path: Path) -> list[ConfFileDriver]:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfFileError(f"cannot read {path}: {exc}") from exc
    clients = data.get("client", [])
    if not isinstance(clients, list):
        raise ConfFileError(f"{path}: [[client]] must be an array of tables")
    return [ConfFileDriver(spec, path) for spec in clients]
