"""The discard device: where the host's packets of a tunnelled TCP connection are routed, for
the client to read them there (:mod:`.tap`).

An ifb device frees each packet that no tc action redirected to it as soon as it is sent
(ifb.c ``ifb_xmit``; it takes GSO packets whole and needs no ARP), as the TUN device frees
the packets the TUN interface reads (``tun_net_xmit`` orphans them): the send has succeeded,
and the sending socket's TCP Small Queues allowance comes back at once, in the sender's own
context. A queued packet holds it until its verdict (verdicts.py); dropping the packet in
netfilter instead would fail the send (nfqueue.py). The packets get there by policy routing:
nftables sets :data:`~.nft.SINK_MARK` in a ``type route`` chain, which routes the packet
again, and a rule sends that mark to a table whose only route is the device.
"""

from __future__ import annotations

import contextlib
import subprocess

DEVICE = "wgref-sink"
TABLE = 30567  # the routing table (the default queue number: free on hosts we know of)
RULE_PRIORITY = 30567
IP_TIMEOUT = 10.0


class SinkError(RuntimeError):
    pass


def _ip(*args: str, check: bool = True) -> bool:
    try:
        result = subprocess.run(["ip", *args], capture_output=True, text=True,
                                timeout=IP_TIMEOUT)
    except (OSError, subprocess.SubprocessError) as exc:
        raise SinkError(f"ip {' '.join(args)}: {exc}") from exc
    if check and result.returncode != 0:
        raise SinkError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result.returncode == 0


def _tc(*args: str) -> None:
    """A queueing discipline: without one the packet goes straight to the device (a default
    one would only queue and dequeue it first)."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run(["tc", *args], capture_output=True, timeout=IP_TIMEOUT, check=False)


def install(mark: int, families: tuple[int, ...] = (4, 6)) -> None:
    """The device, its table and the rule for ``mark``, replacing any left by an earlier
    run."""
    remove(mark)
    _ip("link", "add", DEVICE, "mtu", "65535", "type", "ifb")
    _ip("link", "set", DEVICE, "addrgenmode", "none", check=False)
    _ip("link", "set", DEVICE, "up")
    _tc("qdisc", "replace", "dev", DEVICE, "root", "noqueue")
    for family in families:
        flag = f"-{family}"
        _ip(flag, "route", "replace", "default", "dev", DEVICE, "table", str(TABLE))
        _ip(flag, "rule", "add", "fwmark", f"{mark:#x}", "lookup", str(TABLE),
            "priority", str(RULE_PRIORITY))


def remove(mark: int) -> None:
    """Undo :func:`install` (what of it is there)."""
    for family in (4, 6):
        while _ip(f"-{family}", "rule", "del", "fwmark", f"{mark:#x}", "lookup", str(TABLE),
                  "priority", str(RULE_PRIORITY), check=False):
            pass
    _ip("link", "del", DEVICE, check=False)  # its routes go with it


def present() -> bool:
    return _ip("link", "show", DEVICE, check=False)
