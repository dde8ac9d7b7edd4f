"""The Docker backend against an engine reached like a remote one: DOCKER_HOST=tcp://... (the
engine's loopback TCP listener, `python -m harness.docker.engine start --tcp`, or a relay to
its socket when someone else's engine is running). Nothing may rely on this machine's view of
the containers: no bind mounts, no nsenter into their processes.

Checks a small matrix (wgref x wireguard-go, handshake and psk) passes through the CLI with
logs, key logs and pcapng captures in each cell folder, and what a container host does on its
own: files copied in with their mode and back (not what came from here), commands bounded in
time, programs stopped by their session.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.cli import main
from harness.docker import client as docker_client
from harness.docker import labels
from harness.docker.topology import DockerTopology
from tests.harness.docker_support import (
    TCP_ADDRESS,
    engine_for_tests,
    ensure_images,
    tcp_to_engine,
)
from tests.netns import wait_for

pytestmark = pytest.mark.docker
NEEDED_IMAGES = ["router", "wgref", "wireguard-go"]
PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"


@pytest.fixture(scope="module")
def remote_engine() -> Iterator[Any]:
    """A docker client over TCP, with DOCKER_HOST set to that TCP address."""
    with engine_for_tests(tcp=TCP_ADDRESS), tcp_to_engine() as url:
        saved = os.environ.get("DOCKER_HOST")
        os.environ["DOCKER_HOST"] = url
        docker_client.reset()
        try:
            client = docker_client.connect()
            ensure_images(client, NEEDED_IMAGES)
            yield client
        finally:
            docker_client.reset()
            if saved is None:
                os.environ.pop("DOCKER_HOST", None)
            else:
                os.environ["DOCKER_HOST"] = saved


def test_a_matrix_passes_with_its_logs_and_captures_in_the_cell_folders(
        remote_engine: Any, tmp_path: Path) -> None:
    assert os.environ["DOCKER_HOST"].startswith("tcp://127.0.0.1:")
    out = tmp_path / "run"
    code = main(["run", "--backend", "docker", "--client", "wgref", "--server",
                 "wireguard-go", "--scenario", "handshake,psk", "--out", str(out)])
    cells = json.loads((out / "results.json").read_text())["cells"]
    assert [(c["scenario"], c["status"]) for c in cells] == [
        ("handshake", "pass"), ("psk", "pass")], [c.get("reason") for c in cells]
    assert code == 0
    for scenario in ("handshake", "psk"):
        folder = out / "wgref_wireguard-go" / scenario
        for name in ("client-wgref.log", "server-wireguard-go.log", "client-echo.log"):
            assert "# env -i" in (folder / name).read_text(), name  # streamed from the engine
        assert "Starting wgref" in (folder / "client-wgref.log").read_text()
        keys = (folder / "wireguard.keys").read_text()  # wgref's key log, copied back
        assert "LOCAL_EPHEMERAL_PRIVATE_KEY" in keys
        assert (folder / "wireguard.keys").stat().st_mode & 0o777 == 0o600
        for host in ("client", "server"):
            pcap = folder / f"{host}.pcapng"
            assert pcap.read_bytes()[:4] == PCAPNG_MAGIC, pcap
            assert (folder / f"{host}-decrypted.pcapng").stat().st_size > pcap.stat().st_size
            # tcpdump ended on its signal and said what it saw (drops depend on the load)
            assert " packets captured" in (folder / f"{host}.tcpdump.log").read_text()
        leftovers = sorted(p.name for p in folder.iterdir()
                           if p.name.endswith((".conf", ".part.pcap", ".keys"))
                           and p.name != "wireguard.keys")
        assert leftovers == []  # configurations and raw captures do not stay
    run_filter = {"label": labels.RUN_LABEL}
    prefixes = {c["prefix"] for c in cells}
    assert not [c for c in remote_engine.api.containers(all=True, filters=run_filter)
                if c["Labels"].get(labels.RUN_LABEL) in prefixes]


@pytest.fixture
def topology(remote_engine: Any, tmp_path: Path) -> Iterator[DockerTopology]:
    from harness import naming

    topo = DockerTopology(naming.new_prefix(), images={"client": labels.image_tag("wgref")},
                          router_image=labels.image_tag("router"), shared=[tmp_path],
                          ipv6=False, conntrack_udp_timeout=5)
    topo.add_host("client")
    topo.up()
    try:
        yield topo
    finally:
        assert topo.down() == []


def test_containers_have_no_bind_mounts_and_files_move_through_the_api(
        remote_engine: Any, topology: DockerTopology, tmp_path: Path) -> None:
    host = topology.host("client")
    for name in (host.container, f"{topology.prefix}-{topology.ROUTER}"):
        attrs = remote_engine.api.inspect_container(name)
        assert attrs["Mounts"] == [] and not attrs["HostConfig"]["Binds"], name
    secret = tmp_path / "cell" / "secret.conf"
    secret.parent.mkdir()
    secret.write_text("first\n")
    secret.chmod(0o600)
    assert host.run(["stat", "-c", "%a %n", str(secret)]).stdout.strip() == f"600 {secret}"
    secret.write_text("second\n")  # changed here: copied again before the next command
    assert host.run(["cat", str(secret)]).stdout == "second\n"
    written = tmp_path / "cell" / "out" / "made-there.txt"
    host.run(["sh", "-c", f'mkdir -p "$(dirname {written})" && echo there > {written}'])
    assert not written.exists()
    host.fetch(written)
    assert written.read_text() == "there\n"
    written.unlink()
    late = tmp_path / "cell" / "late.txt"  # only the teardown copies this one back
    host.run(["sh", "-c", f"echo late > {late}"])
    assert topology.down() == []
    assert late.read_text() == "late\n" and written.read_text() == "there\n"
    assert secret.read_text() == "second\n"  # what came from here is not copied back


def test_commands_are_bounded_and_programs_stop_by_their_session(
        topology: DockerTopology, tmp_path: Path) -> None:
    host = topology.host("client")
    result = host.run(["sleep", "30"], timeout=0.5, check=False)
    assert result.returncode == -9 and result.stderr == "timed out after 0.5 s"
    assert host.run(["sh", "-c", "echo out; echo err >&2; exit 3"], check=False).returncode == 3
    log = tmp_path / "sleeper.log"
    # a program with a child: stopping it ends the whole session, as the netns backend does
    proc = host.spawn("sleeper", ["sh", "-c", "sleep 300 & echo started; wait"], log)
    wait_for(lambda: "started" in log.read_text() or not proc.alive(), 10, "the sleeper")
    assert "started" in log.read_text() and proc.alive()
    assert proc.stop(grace=3.0) is not None and not proc.alive()
    assert host.run(["sh", "-c", "pgrep -f 'sleep 30[0]' || true"]).stdout.strip() == ""
    assert topology.router is not None
    assert topology.router.run(["sysctl", "-n", "net.netfilter.nf_conntrack_udp_timeout"]
                               ).stdout.strip() == "5"
    topology.set_conntrack_udp_timeout(5)
