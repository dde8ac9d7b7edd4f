"""The Docker backend for real: the handshake scenario, wgref -> wireguard-go, in containers.

Needs root, the Docker SDK and an engine: one that answers, or docker.io installed, in which
case the test starts containerd + dockerd itself and stops them afterwards (restoring the
host's settings). Missing images are built (debootstrap base when nothing can be pulled);
with cached images the test takes well under a minute.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.docker import client as docker_client
from harness.docker import labels
from harness.results import PASS
from harness.runner import Cell, CellRunner
from harness.scenario import load_scenarios
from tests.harness.docker_support import engine_for_tests, ensure_images
from tests.harness.support import Quiet

pytestmark = pytest.mark.docker
ROOT = Path(__file__).resolve().parents[2]
NEEDED_IMAGES = ["router", "wgref", "wireguard-go"]


@pytest.fixture(scope="module")
def docker_engine() -> Iterator[Any]:
    with engine_for_tests():
        client = docker_client.connect()
        ensure_images(client, NEEDED_IMAGES)
        yield client


def test_handshake_wgref_to_wireguard_go_in_containers(docker_engine: Any,
                                                       tmp_path: Path) -> None:
    from harness.docker.backend import topology_factory
    from harness.docker.drivers import docker_drivers

    drivers = {d.name: d for d in docker_drivers()}
    client_drv, server_drv = drivers["wgref"], drivers["wireguard-go"]
    assert client_drv.unavailable() is None and server_drv.unavailable() is None
    assert "wireguard-go" in server_drv.version()
    scenario = next(s for s in load_scenarios(ROOT / "scenarios") if s.name == "handshake")
    runner = CellRunner(Cell(client_drv, server_drv, scenario), tmp_path, Quiet(),
                        topology_factory(tmp_path))
    result = runner.run()
    assert result.status == PASS, (result.reason, [s.detail for s in result.steps])
    artifacts = set(result.artifacts)
    for name in ("client.pcapng", "server.pcapng", "client-wgref.log",
                 "server-wireguard-go.log", "wireguard.keys"):
        assert name in artifacts, (name, sorted(artifacts))
    run_filter = {"label": f"{labels.RUN_LABEL}={runner.prefix}"}
    assert docker_engine.api.containers(all=True, filters=run_filter) == []
    assert docker_engine.api.networks(filters=run_filter) == []


def test_kernel_wireguard_is_probed_in_a_container(docker_engine: Any) -> None:
    from harness.docker.drivers import docker_drivers

    kernel = next(d for d in docker_drivers() if d.name == "kernel")
    reason = kernel.unavailable()
    assert reason is None or "wireguard" in reason.lower() or "missing" in reason
