"""Conformance probes: a packet-level WireGuard client that tells a correct server from a
sloppy one (issue 7).

    python -m harness probe --server X [--probe NAME] [--slow] [--out DIR]

The probe client holds a static key configured as the server's only peer. It makes valid
messages with wgref's protocol core, crafts and mutates them (scapy's WireGuard layers for
header fields, inner IP/UDP packets), sends them from UDP sockets opened inside the client
(or attacker) namespace, and judges the server by what comes back on the wire, by what the
server delivers to its tunnel (a listener on the server's tunnel address, or the
mitmproxy-wireguard helper's log) and by the server's own state (`wg show`).

Module map: ``netns`` (sockets inside a namespace: setns) · ``craft`` (initiations,
sessions, transport sealing, mutations, inner packets; pure, no root) · ``wire`` (a UDP
socket in a namespace that records what it sent and saw) · ``client`` (handshakes and
tagged data over the wire) · ``oracle`` and ``listener`` (did the server deliver it?) ·
``base`` (Probe, ProbeContext, outcomes) · probe sets ``handshake``, ``transport``,
``roaming``, ``load``, ``timers`` · ``registry`` (all probes, in matrix order) · ``pcap``
(scapy summary of each probe's capture) · ``runner`` (one probe x server cell: topology,
server, captures, teardown) · ``report`` (the probe x server table).
Every probe is documented in scenarios/probes/NAME.md.
"""
