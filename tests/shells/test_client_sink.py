"""The copies of tunnelled TCP connections' packets (wgref/client/nflog.py) and the discard
device they are routed to (sink.py): the kernel's side in a namespace of the test's own, the
cutting of a copy that stays in the receive buffer."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

from scapy.layers.inet import IP, TCP

from tests.netns import REPO, require_netns
from wgref.client import offload

# Run inside the namespace: a log group bound, a rule copying UDP to port 9 into it, four
# datagrams sent over lo (the last as long as an IPv4 packet can be), the copies read back.
_COPY_SCRIPT = """
import json, select, socket, subprocess
from wgref.client.nflog import NfLog
copies = NfLog(77)
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
subprocess.run(["nft", "-f", "-"], check=True, text=True, input='''table ip copytest {
    chain out {
        type filter hook output priority 0; policy accept;
        udp dport 9 log group 77 snaplen 65535 queue-threshold 1
    }
}
''')
sizes = [1, 3000, 65000, 65507]
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for size in sizes:
    sock.sendto(bytes([size % 251]) * size, ("127.0.0.1", 9))
got = []
while len(got) < len(sizes) and select.select([copies], [], [], 5)[0]:
    got += [bytes(view) for view in copies.receive(64)]
from wgref.client.packet import parse
print(json.dumps({"lengths": [len(p) for p in got], "parsed": [parse(p) is not None for p in got],
                  "whole": [p[28:] == bytes([s % 251]) * s for p, s in zip(got, sizes)],
                  "lost": copies.lost}))
"""


def test_nflog_copies_each_packet_whole() -> None:
    require_netns()
    ns = f"wgt-copy-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", ns], check=True, capture_output=True, timeout=10)
    try:
        result = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", _COPY_SCRIPT],
                                capture_output=True, text=True, cwd=REPO, timeout=60,
                                check=False)
        assert result.returncode == 0, result.stderr
        found = json.loads(result.stdout)
        # nfnetlink_log.c: NFULNL_COPY_RANGE_MAX, 0xFFFF less an attribute header; TCP's
        # super-packets are shorter (65,536 less TCP's header room), a longer packet's copy
        # is cut short and its IP length says so
        assert found == {"lengths": [29, 3028, 65028, 65531], "parsed": [True] * 3 + [False],
                         "whole": [True] * 3 + [False], "lost": 0}
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
