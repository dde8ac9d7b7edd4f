"""The Docker backend for real: the handshake scenario, wgref -> wireguard-go, in containers.

Needs root, the Docker SDK and an engine: one that answers, or docker.io installed, in which
case the test starts containerd + dockerd itself and stops them afterwards (restoring the
host's settings). Missing images are built (debootstrap base when nothing can be pulled);
with cached images the test takes well under a minute.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.docker import client as docker_client
from harness.docker import engine, labels
from harness.results import PASS, CellResult, StepResult
from harness.runner import Cell, CellRunner
from harness.scenario import load_scenarios
from tests.ci import skip_or_fail

pytestmark = pytest.mark.docker
ROOT = Path(__file__).resolve().parents[2]
NEEDED_IMAGES = ["router", "wgref", "wireguard-go"]


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "needs root (containers, nsenter)"
    try:
        import docker  # noqa: F401
    except ImportError:
        return "the Docker SDK is not installed (pip install docker)"
    if shutil.which("nsenter") is None:
        return "nsenter (util-linux) is missing"
    if engine.api_answers():
        return None
    if shutil.which("dockerd") is None or shutil.which("containerd") is None:
        return "no Docker engine answers and docker.io is not installed to start one"
    return None


class _Quiet:
    def cell_started(self, cell: CellResult) -> None: ...
    def step_done(self, cell: CellResult, step: StepResult) -> None: ...
    def cell_done(self, cell: CellResult) -> None: ...


@pytest.fixture(scope="module")
def docker_engine() -> Iterator[Any]:
    reason = _why_not()
    if reason:
        skip_or_fail(reason)
    before = engine.read_sysctls()
    started = None
    if not engine.api_answers():
        try:
            started = engine.start(say=False)
        except engine.EngineError as exc:
            skip_or_fail(f"cannot start the Docker engine here: {exc}")
    docker_client.reset()
    try:
        client = docker_client.connect()
        _ensure_images(client)
        yield client
    finally:
        docker_client.reset()
        if started is not None:
            problems = engine.stop(say=False)
            assert problems == []
            assert engine.read_sysctls() == before


def _ensure_images(client: Any) -> None:
    import docker
    from harness.docker.images import ImageError, build_all

    missing = []
    for name in NEEDED_IMAGES:
        try:
            client.images.get(labels.image_tag(name))
        except docker.errors.ImageNotFound:
            missing.append(name)
    if missing:
        try:
            build_all(client, missing, say=lambda line: None)
        except ImageError as exc:
            skip_or_fail(f"cannot build the images {missing}: {exc}")


def test_handshake_wgref_to_wireguard_go_in_containers(docker_engine: Any,
                                                       tmp_path: Path) -> None:
    from harness.docker.backend import topology_factory
    from harness.docker.drivers import docker_drivers

    drivers = {d.name: d for d in docker_drivers()}
    client_drv, server_drv = drivers["wgref"], drivers["wireguard-go"]
    assert client_drv.unavailable() is None and server_drv.unavailable() is None
    assert "wireguard-go" in server_drv.version()
    scenario = next(s for s in load_scenarios(ROOT / "scenarios") if s.name == "handshake")
    runner = CellRunner(Cell(client_drv, server_drv, scenario), tmp_path, _Quiet(),
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
