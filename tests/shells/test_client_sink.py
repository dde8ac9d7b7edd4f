"""The discard device that tunnelled TCP connections' packets are routed to (sink.py) and the
packet socket the client reads them from there (tap.py): the kernel's side in a namespace of
the test's own; the cutting of a packet that stays in the receive buffer."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

from scapy.layers.inet import IP, TCP

from tests.netns import REPO, require_netns
from wgref.client import offload

# Run inside the namespace: the discard device installed, a packet socket on it, three UDP
# datagrams sent with the discard mark (the last as long as an IPv4 packet can be), one
# without it; what the device was sent read back, then the device removed.
_TAP_SCRIPT = """
import json, select, socket, subprocess
from wgref.client import nft, sink
from wgref.client.packet import parse
from wgref.client.tap import PacketTap
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
sink.install(nft.SINK_MARK, (4, 6))
tap = PacketTap(sink.DEVICE)
sizes = [1, 3000, 65507]
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
plain = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.setsockopt(socket.SOL_SOCKET, 36, nft.SINK_MARK)  # SO_MARK
for size in sizes:
    sock.sendto(bytes([size % 251]) * size, ("192.0.2.9", 9))
try:
    plain.sendto(b"x", ("192.0.2.9", 9))  # no route: not the device's
except OSError:
    pass
got = []
while select.select([tap], [], [], 2)[0]:
    got += [bytes(view) for view in tap.receive(64)]
found = {"lengths": [len(p) for p in got], "parsed": [parse(p) is not None for p in got],
         "whole": [p[28:] == bytes([s % 251]) * s for p, s in zip(got, sizes)],
         "lost": tap.dropped(), "present": sink.present()}
tap.close()
sink.remove(nft.SINK_MARK)
found["left"] = sink.present()
found["rules"] = subprocess.run(["ip", "rule"], capture_output=True, text=True).stdout
print(json.dumps(found))
"""


def test_the_discard_device_hands_its_packets_to_the_tap_whole() -> None:
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
        assert found == {"lengths": [29, 3028, 65535], "parsed": [True] * 3,
                         "whole": [True] * 3, "lost": 0, "present": True, "left": False}
        assert "30567" not in rules, rules
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
