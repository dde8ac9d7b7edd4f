"""The ``kernel-vm`` peer driver: Debian's kernel WireGuard in a QEMU VM behind a harness host.

The VM is attached to a tap in the host's namespace (see :mod:`.plumbing` for how it stands in
for the namespace: NAT for the outer UDP, routed inner subnets, so the host's own tools - ping,
the echo server, iperf3 - go through the guest's wg0). wg0 is configured over the VM's control
channel with `wg setconf`/`wg set`, and read back with `wg show wg0 dump`.

Registered (name, capabilities) in ``harness.peers.spec.PEERS``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ..peers.base import DriverError, InterfaceConfig, PeerDriver, PeerInstance
from ..topology import Host
from ..wgdump import DeviceState, DumpError, parse_dump
from . import build, guest, plumbing
from .build import Artefacts, BuildError, Progress
from .vm import GuestCommandFailed, KernelVM, VMError, choose_accel, qemu_missing

GUEST_CONF = "/tmp/wg0.conf"
ROAM_POLL = 0.1  # seconds between looks at the host's outer addresses
# wg0's setup normally takes 1-3 s under TCG; a guest that has not answered in a minute hangs.
SETUP_TIMEOUT = 60.0
# A TCG guest on a loaded machine now and then hangs in setup (CI saw `ip link add wg0` not
# answer in 30 s, 1 cell in ~100); a second, fresh VM is cheaper than a red required cell.
SETUP_ATTEMPTS = 2


def tap_name(host: Host) -> str:
    name = f"{host.ifname}kv"
    return name if len(name) <= 15 else f"kv{hashlib.sha1(host.ns.encode()).hexdigest()[:8]}"


def mac_for(ns: str) -> str:
    digest = hashlib.sha1(ns.encode()).digest()
    return "52:54:00:" + ":".join(f"{b:02x}" for b in digest[:3])


class KernelVMInstance(PeerInstance):
    def __init__(self, driver: KernelVMDriver, host: Host, config: InterfaceConfig,
                 folder: Path, vm: KernelVM, sysctls: dict[str, str]) -> None:
        self.driver = driver
        self.host = host
        self.config = config
        self.folder = folder
        self.vm = vm
        self._sysctls = sysctls
        self._ports: set[int] = set()
        self._stopped = False
        self._seen = (host.v4, host.v6)
        self._stop_watch = threading.Event()
        self._watcher = threading.Thread(target=self._watch_roaming, daemon=True,
                                         name=f"kernel-vm-roam-{host.name}")

    # -- what the runner uses ----------------------------------------------------------------

    def state(self) -> DeviceState:
        try:
            out = self.vm.check(f"{guest.WG} show {plumbing.WG_IF} dump", timeout=20)
            return parse_dump(out)
        except (VMError, DumpError) as exc:
            raise DriverError(f"kernel-vm on {self.host.name}: cannot read wg0: {exc}") from exc

    def set_peer(self, public_key: str, **options: str) -> None:
        argv = [guest.WG, "set", plumbing.WG_IF, "peer", public_key]
        files: list[str] = []
        for key, value in options.items():
            if key == "preshared-key":  # wg reads keys from files only
                path = f"/tmp/psk-{len(files)}.key"
                self._write(path, value + "\n")
                files.append(path)
                value = path
            argv += [key, value]
        script = " ".join(_quote(arg) for arg in argv)
        if files:
            script += f"; rc=$?; rm -f {' '.join(files)}; exit $rc"
        self._vm_call(lambda: self.vm.check(script))

    def set_listen_port(self, port: int) -> None:
        self._vm_call(lambda: self.vm.check(f"{guest.WG} set {plumbing.WG_IF} listen-port {port}"))
        self._refresh_nat()

    def logs(self) -> list[Path]:
        own = self.folder / f"{self.host.name}-kernel-vm.log"
        return [p for p in (own, self.vm.console_log, self.vm.qemu_log) if p.exists()]

    def problem(self) -> str | None:
        return self.vm.problem()

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._stop_watch.set()
        if self._watcher.is_alive():
            self._watcher.join(2)
        self.vm.stop()
        try:
            plumbing.remove_nat(self.host.ns)
            plumbing.write_sysctls(self.host.ns, self._sysctls)
        except (plumbing.PlumbingError, OSError):
            pass  # the namespace is gone already

    # -- internals ---------------------------------------------------------------------------

    def _write(self, path: str, data: str) -> None:
        self._vm_call(lambda: self.vm.write_file(path, data))

    def _vm_call(self, call: Callable[[], object]) -> None:
        try:
            call()
        except VMError as exc:
            raise DriverError(f"kernel-vm on {self.host.name}: {exc}") from exc

    def _refresh_nat(self, *, read_state: bool = True) -> None:
        """DNAT the configured listen port and the one the guest actually uses."""
        ports = {self.config.listen_port} if self.config.listen_port else set()
        if read_state:
            with contextlib.suppress(DriverError):
                ports = {self.state().listen_port}
        ports.discard(0)
        if ports != self._ports or not read_state:
            plumbing.apply_nat(self.host.ns, self.vm.tap, ports)
            self._ports = ports

    def _watch_roaming(self) -> None:
        """When the host's outer addresses change (Topology.roam), flush the namespace's NAT
        state so that the guest's next packet leaves from the new address."""
        while not self._stop_watch.wait(ROAM_POLL):
            now = (self.host.v4, self.host.v6)
            if now == self._seen:
                continue
            self._seen = now
            for pause in (0.3, 1.0):  # after the old address is gone, and once more
                if self._stop_watch.wait(pause):
                    return
                plumbing.flush_conntrack(self.host.ns)


def _quote(arg: str) -> str:
    return "'" + arg.replace("'", "'\\''") + "'"


class KernelVMDriver(PeerDriver):
    """Debian's kernel (upstream wireguard.ko) in a throw-away QEMU VM per peer."""

    name = "kernel-vm"  # capabilities: peers.spec.PEERS

    def __init__(self, progress: Progress | None = None) -> None:
        self._artefacts: Artefacts | None = None
        self._progress = progress
        self._building = threading.Lock()  # cells at once (--jobs) build the VM once

    def unavailable(self) -> str | None:
        if os.geteuid() != 0:
            return "needs root (a tap device and NAT in the host's namespace)"
        missing = qemu_missing()
        if missing:
            return missing
        if not os.path.exists("/dev/net/tun"):
            return "/dev/net/tun is missing"
        if shutil.which("nft") is None:
            return "nft is not installed (apt-get install nftables)"
        if build.cached() is None:
            for tool, package in (("apt-get", "apt"), ("dpkg-deb", "dpkg"),
                                  ("ldd", "libc-bin")):
                if shutil.which(tool) is None:
                    return (f"no VM built yet and {tool} is missing ({package}); "
                            "cannot build one")
        return None

    def version(self) -> str:
        art = self._artefacts or build.cached()
        accel = choose_accel().name.upper()
        if art is None:
            return f"Debian {build.META_PACKAGE} (not built yet) in QEMU/{accel}"
        return f"Linux {art.release} (Debian {art.package_version}) in QEMU/{accel}"

    def artefacts(self) -> Artefacts:
        with self._building:
            if self._artefacts is None:
                try:
                    self._artefacts = build.ensure(self._progress or Progress())
                except BuildError as exc:
                    raise DriverError(f"kernel-vm: cannot build the VM: {exc}") from exc
            return self._artefacts

    def start(self, host: Host, config: InterfaceConfig, folder: Path) -> PeerInstance:
        folder.mkdir(parents=True, exist_ok=True)
        art = self.artefacts()
        own_log = folder / f"{host.name}-kernel-vm.log"
        for attempt in range(1, SETUP_ATTEMPTS + 1):
            try:
                return self._start_once(host, config, folder, art, own_log)
            except _VMFlake as flake:
                if attempt == SETUP_ATTEMPTS:
                    raise DriverError(f"kernel-vm on {host.name}: {flake.cause} "
                                      f"(attempt {attempt} of {SETUP_ATTEMPTS})") from flake.cause
                kept = flake.vm.keep_logs(f"attempt{attempt}")
                with own_log.open("a") as log:
                    log.write(f"attempt {attempt} failed, booting a fresh VM: {flake.cause} "
                              f"(its logs: {', '.join(p.name for p in kept)})\n")
        raise AssertionError("unreachable")

    def _start_once(self, host: Host, config: InterfaceConfig, folder: Path, art: Artefacts,
                    own_log: Path) -> PeerInstance:
        vm = KernelVM(art, host.ns, tap_name(host), mac_for(host.ns), folder,
                      tap_mtu=host.mtu)
        sysctls = plumbing.read_sysctls(host.ns)
        instance = KernelVMInstance(self, host, config, folder, vm, sysctls)
        started = time.monotonic()
        try:
            vm.start()
            plumbing.setup_namespace(host.ns, vm.tap)
            # NAT before wg0 exists: a packet that leaves un-NATed pins its flow in conntrack
            instance._refresh_nat(read_state=False)
            vm.check(plumbing.guest_network_script(host.mtu))
            vm.write_file(GUEST_CONF, config.wg_conf())
            vm.check(plumbing.guest_wireguard_script(GUEST_CONF, config.addresses, config.mtu),
                     timeout=SETUP_TIMEOUT)
            plumbing.inner_routes_namespace(host.ns, vm.tap, config.addresses, config.mtu)
            instance._refresh_nat()
        except (GuestCommandFailed, plumbing.PlumbingError, DriverError) as exc:
            instance.stop()  # the configuration's or the host's fault: the same again
            raise DriverError(f"kernel-vm on {host.name}: {exc}") from exc
        except VMError as exc:  # a VM that hung or died under TCG: worth one fresh boot
            instance.stop()
            raise _VMFlake(vm, exc) from exc
        except Exception:  # a reset console, a bug: the VM goes; the runner records the traceback
            instance.stop()
            raise
        instance._watcher.start()
        accel = vm.accel.name if vm.accel else "?"
        with own_log.open("a") as log:
            log.write(f"{art.describe()}: booted in {vm.boot_seconds or 0:.2f} s ({accel}: "
                      f"{vm.accel.reason if vm.accel else ''}), configured after "
                      f"{time.monotonic() - started:.2f} s\n")
        return instance


class _VMFlake(Exception):
    """A VM that booted badly, hung or died during setup; the driver boots another once."""

    def __init__(self, vm: KernelVM, cause: VMError) -> None:
        super().__init__(str(cause))
        self.vm = vm
        self.cause = cause
