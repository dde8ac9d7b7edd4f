"""The probe documents in scenarios/probes/ are rendered from each probe's own description
(so they cannot drift from the code) plus the notes below.

    python -m harness.probes.docs          rewrite scenarios/probes/*.md
"""

from __future__ import annotations

import sys
from pathlib import Path

from .base import Probe
from .registry import PROBES

FOLDER = Path(__file__).resolve().parent.parent.parent / "scenarios" / "probes"

CONTROL = ("Every check is followed by a control: a valid message that must still be "
           "answered or delivered, so a silent server cannot pass by being dead.")

NOTES: dict[str, str] = {
    "initiation-replay": "A replayed initiation that is answered lets an attacker reset a "
    "session's handshake state at will. Judged on the wire: a response whose receiver "
    "index is the replay's sender index.",
    "initiation-old-timestamp": "The fresh initiations use new ephemeral keys, so only the "
    "timestamp tells them from a new session. The probe's timestamps are not whitened "
    "(nanoseconds kept), so they increase between two calls.",
    "initiation-rate-limit": "The whitepaper requires replay protection; the kernel adds a "
    "per-peer limit of one consumed initiation per 1/INITIATIONS_PER_SECOND (20 ms). The "
    "probe passes when at least one of the burst is not answered and records how many "
    "were (`burst_answered`).",
    "bad-mac1": "mac1 lets a responder drop junk before any Diffie-Hellman.",
    "reserved-initiation": "mac1 is recomputed over the mutated header, so only the "
    "reserved bytes are wrong.",
    "wrong-size": "Initiations keep a valid mac1 at offset 116. Responses, cookie replies "
    "and transport messages of the wrong size cannot be answered by a correct server, so "
    "any reply within a second counts as a failure.",
    "low-order-ephemeral": "The initiation is encrypted exactly as a responder that skips "
    "the all-zero check would expect (es = 0), so only that check can stop it.",
    "transport-replay": "Deliveries are counted by a UDP listener on the server's tunnel "
    "address (or mitmproxy-wireguard's helper log); each probe packet carries a unique "
    "inner source port.",
    "counter-behind-window": "Any window (the kernel's holds 8128 counters) is far smaller "
    "than the 99 998 counters the packet lags behind.",
    "counter-reject-after": "A server that accepted the huge counter would also move its "
    "window there and reject the control packet: the session-survives check catches that.",
    "ciphertext-bitflip": "A server that updates its replay window before authenticating "
    "lets anyone burn counters; the probe catches it because the authentic packet with "
    "the forged packets' counter must still be delivered.",
    "reserved-transport": "Transport reserved bytes are not covered by the AEAD, so only the "
    "header check drops them.",
    "unknown-receiver-index": "",
    "crypto-rp": "The listener binds to every address, so it would see the packet if the "
    "server delivered it.",
    "roaming-spoof": "Needs `wg show` (the server's endpoint for the probe's peer); the "
    "attacker is a third host. Following an intercepted fresh packet is allowed by WP 6.5 "
    "and recorded as `followed_intercepted_packet`; what matters is that the endpoint "
    "returns with the real peer's next packet (`endpoint_moves_to_attacker` counts "
    "moves that should not have happened).",
    "cookie-under-load": "The flood is harness.flood (adaptive rate, from one source "
    "address on the attacker host). The cookie is bound to the probe's source address "
    "and to the mac1 of the initiation it answers. Measurements: seconds_to_cookie, "
    "mac2_attempts, flood_sent.",
    "passive-keepalive": "The data packet is an unsolicited ICMP echo reply, which neither "
    "a kernel nor a userspace stack answers, so the server has nothing to send.",
    "rekey-after-time": "Slow (about two minutes; run with --slow or --probe "
    "rekey-after-time). The probe answers the server's handshake with a wgref Device "
    "whose datagrams it relays, and echoes the server's traffic so that neither side "
    "starts a handshake for lack of replies. Needs a server that can initiate.",
}


def render(probe: Probe) -> str:
    needs = ["responder", *probe.needs, *(f"configurable {c}" for c in probe.config)]
    if probe.delivery:
        needs.append("a view of what it delivers (an interface, or mitmproxy-wireguard's "
                     "helper log)")
    lines = [
        f"# Probe `{probe.name}`" + (" (slow)" if probe.slow else ""), "",
        f"**Whitepaper / reference:** {probe.section}", "",
        f"**Sends:** {probe.sends}.", "",
        f"**Must happen:** {probe.requirement}.", "",
        f"**Server needs:** {', '.join(needs)}" + (
            "; an attacker host is added to the topology" if probe.attacker else "") + ".",
        "",
        f"**Time limit:** {probe.timeout:g} s.", "",
    ]
    note = NOTES.get(probe.name, "")
    if note:
        lines += [note, ""]
    if probe.name not in ("passive-keepalive", "rekey-after-time", "cookie-under-load",
                          "initiation-replay"):
        lines += [CONTROL, ""]
    lines += [f"Run it: `python -m harness probe --server wgref --probe {probe.name}`.", ""]
    return "\n".join(lines)


INTRO = """# Conformance probes

Packet-level probes that tell a correct WireGuard server from a sloppy one (issue 7). The
probe client holds a static key configured as the server's only peer (allowed-ips
198.19.77.2/32). It makes valid messages with wgref's core (`wgref.handshake`,
`wgref.cookie`, `wgref.noise`), mutates header fields with scapy's WireGuard layers, builds
inner packets with scapy, sends them from UDP sockets opened inside the client (or attacker)
namespace, and judges the server by:

* what comes back on the wire (responses, cookie replies, keepalives, decrypted with the
  probe's session keys);
* what the server delivers to its tunnel: a UDP listener on the server's tunnel address
  (`harness.probes.listener`; every probe packet has its own inner source port as a tag),
  or, for mitmproxy-wireguard, its helper's log of handed-over datagrams;
* the server's own state (`wg show dump`: the endpoint of the probe's peer).

    python -m harness probe --server wgref [--probe NAME] [--slow] [--out DIR] [--merge]
    python -m harness probe --probe list

Each probe is one cell of the interop matrix: client `probe`, server X, scenario
`probe:NAME` (results.json, junit.xml and summary.md as for `harness run`, plus probes.md
with the probe x server table; `--merge` adds the cells to an earlier run's results in
OUT). Each probe folder holds `client.pcapng` and `server.pcapng` (dumpcap on both links,
plus `attacker.pcapng` where there is an attacker), `events.jsonl` (every datagram the
probe's sockets sent and received), `delivered.jsonl` (what the server delivered), the
server's log and `static.keys` (Wireshark key log of both static keys). A *fail* names the
check and what was observed; *unsupported* says what the server lacks; *error* means a
baseline step (a valid handshake) never worked.

`python -m harness probe --server wgref-sloppy` runs the negative control: wgref with its
replay, timestamp, mac1, small-order and reserved-byte checks switched off
(`harness/probes/sloppy.py`), which must fail the probes that test them.

Topology: client 198.18.1.2, server 198.18.2.2:51820, attacker 198.18.3.2 (IPv4 outer);
tunnel: server 198.19.77.1/24, probe 198.19.77.2.

These files are rendered by `python -m harness.probes.docs` from the probes' own
descriptions; a test checks they are current.

| probe | reference | must happen |
|---|---|---|
"""


def index() -> str:
    rows = [f"| [{p.name}]({p.name}.md){' (slow)' if p.slow else ''} | {p.section} | "
            f"{p.requirement} |" for p in PROBES]
    return INTRO + "\n".join(rows) + "\n"


def write(folder: Path = FOLDER) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "README.md").write_text(index())
    out = [folder / "README.md"]
    for probe in PROBES:
        path = folder / f"{probe.name}.md"
        path.write_text(render(probe))
        out.append(path)
    return out


if __name__ == "__main__":
    for written in write():
        print(written)
    sys.exit(0)
