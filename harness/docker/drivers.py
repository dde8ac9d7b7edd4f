"""Peer drivers on the Docker backend: the netns backend's drivers, run inside containers of
the peer's image (``wgref-harness/NAME:bookworm``), so a peer's version is the image's.

A :class:`DockerPeer` wraps a driver (same name, capabilities and limitations) and answers
``unavailable()``/``version()`` from the image instead of the machine; ``start()`` hands the
driver a :class:`~harness.docker.topology.DockerHost`, whose ``run``/``spawn`` go inside the
container, so the drivers themselves are unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .. import naming
from ..peers import spec as peer_spec
from ..peers.base import DriverError, InterfaceConfig, PeerDriver, PeerInstance
from ..peers.conffile import load_conffile_drivers
from ..peers.spec import DockerImage
from ..topology import Host
from . import labels
from .client import DockerUnavailable, connect, sdk
from .topology import DockerHost

VERSION_TIMEOUT = 60


def _throwaway(image: str, argv: list[str], *, net_admin: bool = False) -> tuple[int, str]:
    """Run argv in a short-lived container of ``image``; (exit status, output)."""
    client = connect()
    prefix = naming.new_prefix()
    container = client.containers.create(
        image, argv, name=labels.container_name(prefix, "probe"), network_mode="none",
        labels=labels.run_labels(prefix, "probe"), cap_add=["NET_ADMIN"] if net_admin else None)
    try:
        container.start()
        status = container.wait(timeout=VERSION_TIMEOUT)
        output = container.logs(stdout=True, stderr=True).decode(errors="replace")
        return int(status.get("StatusCode", 1)), output.strip()
    finally:
        container.remove(force=True)


def probe_kernel_wireguard(image: str) -> str | None:
    """None when `ip link add type wireguard` works in a container (NET_ADMIN) of ``image``,
    else the kernel's answer."""
    try:
        status, output = _throwaway(image, ["ip", "link", "add", "wgprobe", "type",
                                            "wireguard"], net_admin=True)
    except Exception as exc:  # the SDK's errors
        return f"cannot probe in a container: {str(exc)[:200]}"
    if status == 0:
        return None
    return f"no WireGuard in the host's kernel: in a container, `ip link add type wireguard` " \
           f"said {output.splitlines()[-1] if output else status!r}"


class DockerPeer(PeerDriver):
    """A peer driver whose program comes from a Docker image."""

    def __init__(self, base: PeerDriver, image: str, version_argv: Sequence[str] | None = None,
                 probe: Callable[[str], str | None] | None = None) -> None:
        self.base = base
        self.name = base.name
        self.image = labels.image_tag(image)
        self.image_name = image
        self.capabilities = base.capabilities
        self.limitations = dict(getattr(base, "limitations", {}))
        self.delivery = base.delivery
        self.config_limits = dict(base.config_limits)
        self._version_argv = list(version_argv) if version_argv else None
        self._probe = probe
        self._reason: str | None = None
        self._checked = False
        self._version: str | None = None

    def _image(self) -> Any:
        docker = sdk()

        try:
            return connect().images.get(self.image)
        except docker.errors.ImageNotFound:
            return None

    def unavailable(self) -> str | None:
        if not self._checked:
            self._checked = True
            try:
                if self._image() is None:
                    self._reason = (f"image {self.image} is missing (python -m harness images "
                                    f"build --only {self.image_name})")
                elif self._probe is not None:
                    self._reason = self._probe(self.image)
            except DockerUnavailable as exc:
                self._reason = str(exc)
        return self._reason

    def version(self) -> str:
        if self._version is None:
            if self.unavailable() is not None and self._image_or_none() is None:
                return "unavailable"
            image = self._image_or_none()
            short = image.short_id.split(":")[-1] if image is not None else "?"
            text = ""
            if self._version_argv:
                try:
                    _, out = _throwaway(self.image, self._version_argv)
                    text = out.splitlines()[0] if out else ""
                except Exception as exc:  # the SDK's errors
                    text = f"unknown ({str(exc)[:80]})"
            else:
                text = self.base.version()
            self._version = f"{text or 'unknown'} [{self.image} {short}]"
        return self._version

    def _image_or_none(self) -> Any:
        try:
            return self._image()
        except DockerUnavailable:
            return None

    def start(self, host: Host, config: InterfaceConfig, folder: Path) -> PeerInstance:
        if not isinstance(host, DockerHost):
            raise DriverError(f"{self.name} (docker) needs a container host, got {host.name}")
        if host.image != self.image:
            raise DriverError(f"{host.container} runs {host.image}, not {self.image}")
        return self.base.start(host, config, folder)


def docker_drivers(conffiles: list[Path] | None = None) -> list[PeerDriver]:
    """All peers the Docker backend offers (the ``peers.spec.PEERS`` with an image), in matrix
    order, then the config-file clients (in Debian's wireguard-go image, which has wg-quick)."""
    drivers: list[PeerDriver] = [
        DockerPeer(spec.container_driver(), spec.image.name, spec.version or None,
                   probe=spec.docker_probe)
        for spec in peer_spec.PEERS if spec.image is not None]
    for path in conffiles or []:
        drivers += [DockerPeer(d, CONFFILE_IMAGE.name, d.version_command or None)
                    for d in load_conffile_drivers(path)]
    return drivers


CONFFILE_IMAGE = DockerImage("wireguard-go-debian")  # Debian's, with wg-quick


def image_for(driver: PeerDriver) -> str:
    if isinstance(driver, DockerPeer):
        return driver.image
    raise DriverError(f"{driver.name} cannot run on the docker backend")
