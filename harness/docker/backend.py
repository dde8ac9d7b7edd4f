"""`python -m harness run --backend docker`: the cells' topologies as containers."""

from __future__ import annotations

from pathlib import Path

from ..runner import Cell, TopologyFactory
from ..topology import Topology
from . import labels
from .drivers import image_for
from .topology import DockerTopology

EXTRA_HOST_IMAGE = "wgref"  # extra hosts (the attacker) run the harness's Python helpers


def topology_factory(out: Path) -> TopologyFactory:
    """Makes each cell's DockerTopology (the client's and server's images from their drivers;
    files under ``out`` move between here and the containers)."""

    def make(cell: Cell, prefix: str) -> Topology:
        spec = cell.scenario.topology
        images = {"client": image_for(cell.client), "server": image_for(cell.server)}
        for extra in spec.extra_hosts:
            images[extra] = labels.image_tag(EXTRA_HOST_IMAGE)
        topo = DockerTopology(prefix, images=images, router_image=labels.image_tag("router"),
                              shared=[out], ipv4=spec.outer in ("ipv4", "dual"),
                              ipv6=spec.outer in ("ipv6", "dual"),
                              conntrack_udp_timeout=spec.conntrack_udp_timeout)
        topo.add_host("client", nat=spec.client_nat, mtu=spec.client_link_mtu)
        topo.add_host("server", mtu=spec.server_link_mtu)
        for extra in spec.extra_hosts:
            topo.add_host(extra)
        return topo

    return make
