"""The kernel-vm peer: Debian's kernel WireGuard in a QEMU VM, against wireguard-go and wgref.

The unit tests (cpio, ELF, module order, NAT rules) run anywhere. The others need root, QEMU
and the cached VM artefacts (built on first use: ``python3 -m harness.kernelvm build``); each
boots one VM in a namespace of its own and is bounded in time. Measurements (boot time, time to
the first packet through a fresh tunnel, tunnel throughput) are printed (``-s``) and recorded
as junit properties. Under TCG the throughput is an interop check, not a baseline.
"""

from __future__ import annotations

import io
import json
import lzma
import os
import shutil
import stat
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harness import keys, naming, registry_files
from harness.kernelvm import build, cpio, elf, guest, plumbing
from harness.kernelvm.build import Artefacts, BuildError, Progress
from harness.kernelvm.driver import KernelVMDriver, KernelVMInstance
from harness.kernelvm.vm import KernelVM, VMError, choose_accel, kill_pidfile, qemu_missing
from harness.peers.base import DriverError, InterfaceConfig, PeerDriver, PeerEntry, PeerInstance
from harness.peers.uapi import wgref, wireguard_go
from harness.topology import Host, Topology
from harness.traffic import ping, start_iperf_server, start_transfer, transfer_result
from tests.ci import skip_or_fail
from tests.netns import wait_for

PORT = 51820
Record = Callable[[str, object], None]  # pytest's record_property
SERVER_V4, CLIENT_V4 = "10.77.0.1", "10.77.0.2"
SERVER_V6, CLIENT_V6 = "fd77::1", "fd77::2"


# -- unit tests (no root) ---------------------------------------------------------------------


def _read_newc(data: bytes) -> dict[str, tuple[int, bytes]]:
    out: dict[str, tuple[int, bytes]] = {}
    pos = 0
    while True:
        assert data[pos:pos + 6] == b"070701"
        fields = [int(data[pos + 6 + 8 * i:pos + 14 + 8 * i], 16) for i in range(13)]
        mode, size, namesize = fields[1], fields[6], fields[11]
        name_start = pos + 110
        name = data[name_start:name_start + namesize - 1].decode()
        body = name_start + namesize + (-(110 + namesize) % 4)
        content = data[body:body + size]
        pos = body + size + (-size % 4)
        if name == cpio.TRAILER:
            return out
        out[name] = (mode, content)


def test_cpio_newc_round_trip() -> None:
    buf = io.BytesIO()
    cpio.write(buf, [cpio.directory("bin"), cpio.file("bin/x", b"hello", 0o755),
                     cpio.symlink("bin/sh", "busybox"), cpio.char_device("console", 5, 1)])
    entries = _read_newc(buf.getvalue())
    assert entries["bin/x"] == (stat.S_IFREG | 0o755, b"hello")
    assert entries["bin/sh"] == (stat.S_IFLNK | 0o777, b"busybox")
    assert stat.S_ISDIR(entries["bin"][0]) and stat.S_ISCHR(entries["console"][0])
    if shutil.which("cpio"):
        listing = subprocess.run(["cpio", "-t", "--quiet"], input=buf.getvalue(),
                                 capture_output=True, timeout=10, check=True)
        assert listing.stdout.decode().split() == ["bin", "bin/x", "bin/sh", "console"]


def _elf(sections: dict[str, bytes], notes: bytes = b"", interp: bool = False) -> bytes:
    """A tiny ELF64 with the given sections and (optionally) a PT_NOTE / PT_INTERP."""
    names = b"\0" + b"".join(n.encode() + b"\0" for n in [*sections, ".shstrtab"])
    blobs = [*sections.values(), names]
    phdrs = [(4, notes)] if notes else []
    phdrs += [(3, b"/lib64/ld.so\0")] if interp else []
    offset = 64 + 56 * len(phdrs)
    body = b""
    ph_table = b""
    for p_type, blob in phdrs:
        ph_table += struct.pack("<IIQQQQQQ", p_type, 4, offset + len(body), 0, 0, len(blob),
                                len(blob), 4)
        body += blob
    sh_table = struct.pack("<IIQQQQIIQQ", *([0] * 10))
    name_off = 1
    for blob, name in zip(blobs, [*sections, ".shstrtab"], strict=True):
        sh_table += struct.pack("<IIQQQQIIQQ", name_off, 1, 0, 0, offset + len(body),
                                len(blob), 0, 0, 1, 0)
        name_off += len(name) + 1
        body += blob
    shoff = offset + len(body)
    header = b"\x7fELF\x02\x01\x01" + b"\0" * 9 + struct.pack(
        "<HHIQQQIHHHHHH", 2, 62, 1, 0, 64 if phdrs else 0, shoff, 0, 64, 56, len(phdrs), 64,
        len(blobs) + 1, len(blobs))
    return header + ph_table + body + sh_table


def _pvh_note() -> bytes:
    return struct.pack("<III", 4, 4, elf.XEN_ELFNOTE_PHYS32_ENTRY) + b"Xen\0" + b"\0" * 4


def test_elf_modinfo_interp_and_pvh(tmp_path: Path) -> None:
    ko = tmp_path / "wireguard.ko"
    ko.write_bytes(_elf({".modinfo": b"license=GPL\0depends=udp_tunnel,libchacha\0"}))
    assert elf.module_depends(ko) == ["udp_tunnel", "libchacha"]
    assert not elf.has_interpreter(ko.read_bytes())
    assert elf.has_interpreter(_elf({}, interp=True))
    image = _elf({}, notes=_pvh_note())
    assert elf.has_pvh_entry(image) and not elf.has_pvh_entry(_elf({}))
    bz = b"MZ setup code" + lzma.compress(image, format=lzma.FORMAT_XZ) + b"trailer"
    found = build.extract_vmlinux(bz)
    assert found is not None and found[0] == image and found[1] == len(b"MZ setup code")
    assert build.extract_vmlinux(b"no payload here") is None


def test_module_order_and_errors(tmp_path: Path) -> None:
    tree = {"wireguard": "udp_tunnel,libchacha20poly1305", "udp_tunnel": "",
            "libchacha20poly1305": "libchacha", "libchacha": "", "virtio-net": "virtio"}
    for name, deps in tree.items():
        (tmp_path / f"{name}.ko").write_bytes(_elf({".modinfo": f"depends={deps}\0".encode()}))
    index = build.module_index(tmp_path)
    order = build.resolve_modules(index, ("wireguard",), set())
    assert order.index("libchacha") < order.index("libchacha20poly1305") < order.index(
        "wireguard") and order.index("udp_tunnel") < order.index("wireguard")
    assert build.resolve_modules(index, ("virtio_net",), {"virtio"}) == ["virtio_net"]
    with pytest.raises(BuildError, match="virtio"):
        build.resolve_modules(index, ("virtio_net",), set())


def test_nat_rules_and_guest_scripts() -> None:
    rules = plumbing.nat_ruleset("tap0", {51820})
    assert "udp dport { 51820 } meta nfproto ipv4 dnat ip to 169.254.77.2" in rules
    assert 'oifname != "tap0" ip6 saddr fdf7:6b76:6d00::2 masquerade' in rules
    script = plumbing.guest_wireguard_script("/tmp/c", ("10.0.0.1/24", "fd00::1/64"), 1420)
    assert "/usr/local/bin/ip -4 route add 10.0.0.0/24 dev wg0" in script
    assert "/usr/local/bin/ip -4 route add 10.0.0.1/32 via 169.254.77.1 dev eth0" in script
    assert "/usr/local/bin/ip -6 route add fd00::1/128 via fdf7:6b76:6d00::1 dev eth0" in script
    assert "/usr/local/bin/wg setconf wg0 /tmp/c" in script
    assert "PrivateKey" not in guest.INIT and "wg0" not in guest.INIT
    # busybox-static's shell runs its own applets before PATH: the host's ip and wg are named
    # by absolute path in every guest script
    for text in (script, plumbing.guest_network_script(1500), guest.INIT):
        for line in text.splitlines():
            words = line.strip().split()
            assert not words or words[0] not in ("ip", "wg"), line


def test_accel_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WGREF_KERNEL_VM_ACCEL", "tcg")
    assert choose_accel().name == "tcg"
    monkeypatch.delenv("WGREF_KERNEL_VM_ACCEL")
    assert choose_accel().name in ("kvm", "tcg")


# -- with a VM ----------------------------------------------------------------------------------


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces, tap devices)"
    missing = qemu_missing()
    if missing:
        return missing
    for tool in ("ip", "wg", "nft", "ping"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if not os.path.exists("/dev/net/tun"):
        return "/dev/net/tun is missing"
    return None


MEASURED: dict[str, float] = {}


def _measure(record: Record, key: str, value: float) -> None:
    MEASURED[key] = round(value, 3)
    record(key, round(value, 3))
    print(f"kernel-vm measurement: {key} = {value:.3f}")


@pytest.fixture(scope="module")
def artefacts() -> Artefacts:
    reason = _skip_reason()
    if reason:
        skip_or_fail(reason)  # CI installs QEMU and runs kernel-vm: there it must work
    started = time.monotonic()
    art = build.ensure(Progress())
    print(f"kernel-vm artefacts: {art.describe()} ({time.monotonic() - started:.1f} s)")
    return art


@pytest.fixture
def prefix() -> Iterator[str]:
    """A run prefix claimed like a live harness run's, so `harness cleanup` leaves it alone."""
    value = naming.new_prefix()
    registry_files.claim(value)
    yield value
    registry_files.release(value)


@pytest.fixture
def topo(prefix: str) -> Iterator[Topology]:
    topology = Topology(prefix)
    topology.add_host("vm")
    topology.add_host("peer")
    with topology:
        yield topology


@pytest.fixture
def instances() -> Iterator[list[PeerInstance]]:
    started: list[PeerInstance] = []
    yield started
    for instance in reversed(started):
        instance.stop()


def _configs(topo: Topology, vm_is_server: bool, *, psk_server: str | None = None,
             psk_client: str | None = None) -> tuple[InterfaceConfig, InterfaceConfig]:
    server_keys, client_keys = keys.keypair(), keys.keypair()
    server = topo.host("vm" if vm_is_server else "peer")
    server_conf = InterfaceConfig(
        naming.ifname(topo.prefix, "ws"), server_keys.private,
        (f"{SERVER_V4}/24", f"{SERVER_V6}/64"), listen_port=PORT,
        peers=[PeerEntry(client_keys.public, (f"{CLIENT_V4}/32", f"{CLIENT_V6}/128"),
                         preshared_key=psk_server)])
    client_conf = InterfaceConfig(
        naming.ifname(topo.prefix, "wc"), client_keys.private,
        (f"{CLIENT_V4}/24", f"{CLIENT_V6}/64"),
        peers=[PeerEntry(server_keys.public, ("10.77.0.0/24", "fd77::/64"),
                         endpoint=f"{server.address(4)}:{PORT}", preshared_key=psk_client)])
    return server_conf, client_conf


def _start_pair(topo: Topology, instances: list[PeerInstance], tmp_path: Path,
                other: PeerDriver, vm_is_server: bool, **psks: str | None
                ) -> tuple[KernelVMInstance, PeerInstance]:
    if other.unavailable():
        pytest.skip(f"{other.name}: {other.unavailable()}")
    server_conf, client_conf = _configs(topo, vm_is_server, **psks)
    vm_conf, peer_conf = (server_conf, client_conf) if vm_is_server else (client_conf,
                                                                         server_conf)
    driver = KernelVMDriver(Progress(quiet=True))
    # the responder first, so the initiator's first packet finds it
    if vm_is_server:
        vm = driver.start(topo.host("vm"), vm_conf, tmp_path)
        instances.append(vm)
        peer = other.start(topo.host("peer"), peer_conf, tmp_path)
        instances.append(peer)
    else:
        peer = other.start(topo.host("peer"), peer_conf, tmp_path)
        instances.append(peer)
        vm = driver.start(topo.host("vm"), vm_conf, tmp_path)
        instances.append(vm)
    assert isinstance(vm, KernelVMInstance)
    return vm, peer


def _client(topo: Topology, vm_is_server: bool) -> Host:
    return topo.host("peer" if vm_is_server else "vm")


def _wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    wait_for(condition, timeout, what, step=0.2)


netns = pytest.mark.netns


@netns
def test_build_is_cached(artefacts: Artefacts) -> None:
    before = {p: p.stat().st_mtime_ns for p in artefacts.folder.rglob("*") if p.is_file()}
    notes = io.StringIO()
    again = build.ensure(Progress(notes))
    assert again.folder == artefacts.folder and again.kernel == artefacts.kernel
    assert "building" not in notes.getvalue(), notes.getvalue()  # no download, no rebuild
    after = {p: p.stat().st_mtime_ns for p in artefacts.folder.rglob("*") if p.is_file()}
    assert after == before, "a second build rewrote the cached artefacts"
    manifest = json.loads((artefacts.folder / "manifest.json").read_text())
    assert "wireguard" in manifest["modules"] and "virtio_net" in manifest["modules"]


@netns
def test_boot_and_wg_show(artefacts: Artefacts, tmp_path: Path, prefix: str,
                          record_property: Record) -> None:
    ns = naming.namespace(prefix, "boot")
    subprocess.run(["ip", "netns", "add", ns], check=True, timeout=10)
    vm = KernelVM(artefacts, ns, "kvtest0", "52:54:00:6b:76:99", tmp_path, boot_timeout=60)
    try:
        vm.start()
        assert vm.boot_seconds is not None
        _measure(record_property, "boot_seconds", vm.boot_seconds)
        print(f"kernel-vm accel: {vm.accel}")
        assert vm.check("uname -r").strip() == artefacts.release
        out = vm.check(f"{guest.IP} link add wg0 type wireguard && {guest.WG} show wg0 && "
                       "cat /sys/module/wireguard/version 2>/dev/null; true")
        assert "interface: wg0" in out
        # the host's iproute2, whichever busybox (busybox or busybox-static) the host has
        assert "iproute2" in vm.check(f"{guest.IP} -V")
        print(f"kernel-vm guest busybox: {vm.check('busybox | head -1').strip()}")
        rc, text = vm.run("exit 3")
        assert rc == 3 and text == ""
        vm.write_file("/tmp/k", "secret\n'quoted'\n")
        assert vm.check("cat /tmp/k") == "secret\n'quoted'\n"
        assert "PrivateKey" not in vm.check("cat /proc/cmdline")
        with pytest.raises(VMError, match="timed out"):
            vm.run("sleep 5", timeout=1)
        assert vm.check("echo still-in-sync", timeout=15).strip() == "still-in-sync"
    finally:
        vm.stop()
        assert not kill_pidfile(vm.pidfile), "QEMU survived stop()"
        subprocess.run(["ip", "netns", "del", ns], timeout=20, check=False)


@netns
@pytest.mark.parametrize("vm_is_server", [True, False], ids=["vm-server", "vm-client"])
def test_wireguard_go(artefacts: Artefacts, topo: Topology, instances: list[PeerInstance],
                      tmp_path: Path, record_property: Record,
                      vm_is_server: bool) -> None:
    vm, _ = _start_pair(topo, instances, tmp_path, wireguard_go(), vm_is_server)
    client = _client(topo, vm_is_server)
    started = time.monotonic()
    first = ping(client, SERVER_V4, count=1, timeout=10)
    assert first.ok, first.detail
    if vm_is_server:
        _measure(record_property, "first_ping_through_fresh_tunnel_seconds",
                 time.monotonic() - started)
    for dst, src_host in ((SERVER_V6, client), (CLIENT_V4, topo.host(
            "vm" if vm_is_server else "peer"))):
        result = ping(src_host, dst, count=2, timeout=10)
        assert result.ok, result.detail
    peer = vm.state().only_peer()
    assert peer is not None and peer.latest_handshake > 0 and peer.endpoint
    if not vm_is_server:
        return
    server = topo.host("vm")
    iperf = start_iperf_server(server, tmp_path / "iperf3-server.log")
    try:
        wait_for(lambda: ":5201 " in server.run(["ss", "-Hltn"]).stdout, 10,
                 "iperf3 to listen")
        transfer = start_transfer(client, SERVER_V4, 3, tmp_path / "iperf3.json", bitrate="0")
        assert transfer.wait(20) is not None, "iperf3 did not finish"
        result = transfer_result(transfer)
        assert result.ok, result.detail
        _measure(record_property, "tunnel_tcp_mbit_per_s_tcg_not_a_baseline"
                 if (vm.vm.accel and vm.vm.accel.name == "tcg") else "tunnel_tcp_mbit_per_s",
                 result.measurements["transfer_mbps"])
    finally:
        iperf.stop()


@netns
def test_setup_that_hangs_gets_one_fresh_vm(artefacts: Artefacts, topo: Topology,
                                            instances: list[PeerInstance], tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A guest that stops answering during wg0's setup (seen once in CI under TCG) costs one
    more boot, not the cell; a setup script that fails is the configuration's fault and is
    not retried."""
    from harness.kernelvm import driver as driver_module
    real_script = plumbing.guest_wireguard_script
    calls: list[int] = []

    def first_hangs(conf_path: str, addresses: tuple[str, ...], mtu: int) -> str:
        calls.append(1)
        script = real_script(conf_path, addresses, mtu)
        return f"sleep 3600\n{script}" if len(calls) == 1 else script

    # short enough for a test, long enough for the second VM's real setup on a busy machine
    # (1-3 s idle; a 5 s limit failed once in CI)
    monkeypatch.setattr(driver_module, "SETUP_TIMEOUT", 20.0)
    monkeypatch.setattr(plumbing, "guest_wireguard_script", first_hangs)
    vm, _ = _start_pair(topo, instances, tmp_path, wireguard_go(), vm_is_server=True)
    assert len(calls) == 2
    own_log = (tmp_path / "vm-kernel-vm.log").read_text()
    assert "attempt 1 failed, booting a fresh VM: guest command timed out after 20 s" in own_log
    assert (tmp_path / f"{vm.vm.tap}-console.attempt1.log").exists()
    result = ping(topo.host("peer"), SERVER_V4, count=1, timeout=10)
    assert result.ok, result.detail  # the second VM is the peer in use

    calls.clear()
    monkeypatch.setattr(plumbing, "guest_wireguard_script",
                        lambda conf_path, addresses, mtu: "exit 7\n")
    other = topo.host("peer")
    with pytest.raises(DriverError, match="guest command exited 7"):
        KernelVMDriver(Progress(quiet=True)).start(other, _configs(topo, True)[1],
                                                   tmp_path / "fails")
    assert not (tmp_path / "fails" / "peer-kernel-vm.log").exists(), "a failing script was retried"


@netns
def test_wgref_psk_and_roaming(artefacts: Artefacts, topo: Topology,
                               instances: list[PeerInstance], tmp_path: Path) -> None:
    psk = keys.psk()
    vm, peer = _start_pair(topo, instances, tmp_path, wgref(), True, psk_server=psk,
                           psk_client=psk)
    client = topo.host("peer")
    result = ping(client, SERVER_V4, count=2, timeout=15)
    assert result.ok, result.detail
    state = vm.state().only_peer()
    assert state is not None and state.preshared_key == psk
    before = state.endpoint
    assert before is not None and before.startswith(f"{client.address(4)}:")
    topo.roam("peer")
    peer.set_listen_port(41234)
    expected = f"{client.address(4)}:41234"
    assert expected != before
    result = ping(client, SERVER_V4, count=2, timeout=10)
    assert result.ok, result.detail

    def followed() -> bool:
        now = vm.state().only_peer()
        return now is not None and now.endpoint == expected

    _wait(followed, 10, f"the VM's wg show to show the endpoint {expected}")


@netns
def test_psk_mismatch_never_handshakes(artefacts: Artefacts, topo: Topology,
                                       instances: list[PeerInstance], tmp_path: Path) -> None:
    vm, _ = _start_pair(topo, instances, tmp_path, wgref(), False, psk_server=keys.psk(),
                        psk_client=keys.psk())
    result = ping(topo.host("vm"), SERVER_V4, count=3, timeout=4)
    assert not result.ok, result.detail
    state = vm.state().only_peer()
    assert state is not None and state.latest_handshake == 0


@netns
def test_driver_reconfigures_at_run_time(artefacts: Artefacts, topo: Topology,
                                         instances: list[PeerInstance],
                                         tmp_path: Path) -> None:
    vm, _ = _start_pair(topo, instances, tmp_path, wireguard_go(), True)
    assert ping(topo.host("peer"), SERVER_V4, count=1, timeout=10).ok
    client_key = next(iter(vm.state().peers))
    psk = keys.psk()
    vm.set_peer(client_key, **{"persistent-keepalive": "7", "preshared-key": psk})
    after = vm.state().peers[client_key]
    assert after.persistent_keepalive == 7 and after.preshared_key == psk
    vm.set_listen_port(40000)
    assert vm.state().listen_port == 40000
    assert "40000" in subprocess.run(
        ["ip", "netns", "exec", topo.host("vm").ns, "nft", "list", "table", "inet",
         plumbing.TABLE], capture_output=True, text=True, timeout=10).stdout
    assert vm.problem() is None
    vm.stop()
    assert vm.problem() is not None
    vm.stop()  # twice is fine
