"""The discard devices that tunnelled TCP connections' and UDP flows' packets are routed to
(sink.py) and the packet sockets the client reads them from there (tap.py): the kernel's side
in a namespace of the test's own; the cutting of a packet that stays in the receive buffer."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

from scapy.layers.inet import IP, TCP

from tests.netns import REPO, require_netns
from wgref.client import offload

# Run inside the namespace: the discard devices installed, a packet socket on each, three UDP
# datagrams sent with the discard mark (the last as long as an IPv4 packet can be), one
# without it, and a TCP segment with the mark (through a raw socket, its checksum complete);
# what each device was sent read back, then the devices removed.
_TAP_SCRIPT = """
import json, select, socket, subprocess
from scapy.layers.inet import IP, UDP
from wgref.client import nft, sink
from wgref.client.packet import parse
from wgref.client.tap import PacketTap
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
sink.install(nft.SINK_MARK, (4, 6))
taps = {device: PacketTap(device) for device in sink.DEVICES}
sizes = [1, 3000, 65507]
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
plain = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
for marked in (sock, raw):
    marked.setsockopt(socket.SOL_SOCKET, 36, nft.SINK_MARK)  # SO_MARK
for size in sizes:
    sock.sendto(bytes([size % 251]) * size, ("192.0.2.9", 9))
try:
    plain.sendto(b"x", ("192.0.2.9", 9))  # no route: not the devices'
except OSError:
    pass
raw.sendto(bytes(20), ("192.0.2.9", 0))
got = {device: [] for device in taps}
while select.select(list(taps.values()), [], [], 2)[0]:
    for device, tap in taps.items():
        got[device] += [(bytes(t.data), t.csum_start) for t in tap.receive(64)]

def summed(packet):  # the UDP checksum as scapy works it out again
    again = IP(packet)
    del again[UDP].chksum
    return IP(bytes(again))[UDP].chksum

udp = got[sink.UDP_DEVICE]
found = {"lengths": {d: [len(p) for p, _ in got[d]] for d in got},
         "parsed": [parse(p) is not None for p, _ in udp],
         "whole": [p[28:] == bytes([s % 251]) * s for (p, _), s in zip(udp, sizes)],
         "complete": [c == -1 and IP(p)[UDP].chksum == summed(p) for p, c in udp],
         "lost": sum(tap.dropped() for tap in taps.values()), "present": sink.present()}
for tap in taps.values():
    tap.close()
sink.remove(nft.SINK_MARK)
found["left"] = sink.present()
found["rules"] = subprocess.run(["ip", "rule"], capture_output=True, text=True).stdout
print(json.dumps(found))
"""


def test_the_discard_devices_hand_their_packets_to_the_taps_whole() -> None:
    """UDP to wgref-sink-udp, its checksums completed by the kernel (transmit checksumming
    off); everything else with the mark to wgref-sink."""
    require_netns()
    ns = f"wgt-sink-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", ns], check=True, capture_output=True, timeout=10)
    try:
        result = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", _TAP_SCRIPT],
                                capture_output=True, text=True, cwd=REPO, timeout=60,
                                check=False)
        assert result.returncode == 0, result.stderr
        found = json.loads(result.stdout)
        rules = found.pop("rules")
        assert found == {"lengths": {"wgref-sink": [40], "wgref-sink-udp": [29, 3028, 65535]},
                         "parsed": [True] * 3, "whole": [True] * 3, "complete": [True] * 3,
                         "lost": 0, "present": True, "left": False}
        assert "30567" not in rules and "30568" not in rules, rules
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)


def test_a_copy_is_cut_where_it_lies() -> None:
    """A super-packet cut from a view of the receive buffer (as the copies are) comes out as
    from its own bytes; the view's headers can be rewritten in place."""
    whole = bytes(IP(src="10.0.0.1", dst="10.99.0.9") / TCP(sport=5, dport=6, flags="PA")
                  / (bytes(range(256)) * 40))
    buffer = bytearray(b"\xee" * 100 + whole + b"\xee" * 100)
    view = memoryview(buffer)[100 : 100 + len(whole)]
    assert offload.segment(view, 20, 1368) == offload.segment(whole, 20, 1368)
    view[12:16] = bytes([10, 9, 9, 9])
    assert offload.segment(view, 20, 1368)[0][12:16] == bytes([10, 9, 9, 9])
    assert buffer[:100] == b"\xee" * 100 and buffer[-100:] == b"\xee" * 100
