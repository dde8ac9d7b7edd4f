"""One peer specification (harness.peers.spec) read by the netns registry, the Docker backend's
drivers and image table, and the probe runner: a peer added there appears in all of them."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.docker import images
from harness.docker.drivers import DockerPeer, docker_drivers
from harness.peers import spec
from harness.peers.registry import all_drivers
from harness.peers.spec import PEERS, DockerImage, PeerSpec, peer, uapi, uapi_fixed
from harness.probes.registry import select
from harness.probes.runner import why_unsupported

DOCKER_DIR = Path(__file__).resolve().parents[2] / "docker"


def test_every_peer_is_in_the_netns_registry_with_its_specified_capabilities() -> None:
    drivers = {d.name: d for d in all_drivers()}
    for entry in PEERS:
        driver = drivers[entry.name]
        assert driver.capabilities == entry.capabilities
        assert driver.limitations == dict(entry.limitations)
        assert driver.delivery == entry.delivery


def test_docker_peers_and_images_come_from_the_specification() -> None:
    with_image = [entry for entry in PEERS if entry.image is not None]
    assert [d.name for d in docker_drivers()] == [entry.name for entry in with_image]
    assert set(images.IMAGES) == {i.name for i in spec.images()}
    for image in spec.images():
        assert (DOCKER_DIR / f"{image.name}.Dockerfile").is_file(), image.name
    wgref = next(d for d in docker_drivers() if d.name == "wgref")
    assert isinstance(wgref, DockerPeer)
    assert wgref.image == "wgref-harness/wgref:bookworm"
    assert "keylog" in wgref.capabilities


def test_a_peer_added_once_appears_in_every_backend_and_the_probes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    new = PeerSpec("wg-next", uapi("wg-next-not-installed"),
                   frozenset({"responder", "icmp"}), {"psk": "no PSK in this build"},
                   image=DockerImage("wireguard-go"), in_container=uapi_fixed("wg-next"),
                   version=("wg-next", "--version"), delivery=None,
                   config_limits={"allowed-ips": "no allowed-ips in this build"})
    monkeypatch.setattr(spec, "PEERS", (*PEERS, new))
    netns = next(d for d in all_drivers() if d.name == "wg-next")
    assert netns.unavailable() == "wg-next-not-installed is not installed (not on PATH)"
    assert netns.missing({"psk"}) == ["wg-next lacks psk (no PSK in this build)"]
    docker = next(d for d in docker_drivers() if d.name == "wg-next")
    assert isinstance(docker, DockerPeer)
    assert docker.image == "wgref-harness/wireguard-go:bookworm"
    assert docker.capabilities == new.capabilities
    assert spec.images() == [spec.ROUTER_IMAGE, *(
        i for i in dict.fromkeys(e.image for e in PEERS) if i is not None)]
    # the probes read delivery and the configuration limits from the same place
    monkeypatch.setattr(type(netns), "unavailable", lambda self: None)
    (probe,) = select(["crypto-rp"], slow=False)
    reason = why_unsupported(netns, probe) or ""
    assert "no allowed-ips in this build" in reason
    assert "wg-next has no interface and no log of what it delivers" in reason


def test_an_unknown_peer_name_says_which_are_known() -> None:
    with pytest.raises(KeyError, match=r"unknown peer nope \(known: wgref, wireguard-go"):
        peer("nope")
