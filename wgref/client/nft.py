"""The client's nftables tables: Linux's counterpart of the seed's filter driver.

Two tables of their own, ``ip wgref_client`` and ``ip6 wgref_client`` (nothing else on the host
is touched). Written with ``nft -f -`` except the one queue rule: this kernel family may lack
nft's native ``queue`` expression (``CONFIG_NFT_QUEUE``), so the rule is the xtables
``NFQUEUE`` target through ``nft_compat``, added over netlink (as iptables-nft does). It works
wherever either exists in Debian kernels too.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from . import netlink as nl

TABLE = "wgref_client"
FAMILIES = ("ip", "ip6")
OWN_MARK = 0x77670001  # SO_MARK of the client's own sockets: never queued
BYPASS_MARK = 0x77670002  # verdict mark of a bypass flow's first packet
EXEC_MARK = 0x77670004  # packets of sockets in the client's cgroup (`wgref client exec`)
TUNNEL_MARK = 0x77670008  # verdict mark of a tunnelled TCP connection's first packet
SINK_MARK = 0x77670010  # a packet routed to the discard device (read there by the client)
CT_BYPASS = 0x20000000  # conntrack mark bit: the flow stays in the kernel
CT_INJECTED = 0x40000000  # conntrack mark bit: the connection's first packet was injected
CT_TUNNEL = 0x10000000  # conntrack mark bit: the host's packets go to the discard device
# the protocols (IP protocol numbers) whose tunnelled flows go there
SUNK = {6: "tcp", 17: "udp"}
_SUNK_SET = "{ " + ", ".join(SUNK.values()) + " }"
PRIORITY = -90  # after conntrack (-200), mangle (-150) and dstnat (-100)
NFT_TIMEOUT = 15.0

NFNL_SUBSYS_NFTABLES = 10
NFT_MSG_NEWRULE = 6
NFTA_RULE_TABLE = 1
NFTA_RULE_CHAIN = 2
NFTA_RULE_EXPRESSIONS = 4
NFTA_LIST_ELEM = 1
NFTA_EXPR_NAME = 1
NFTA_EXPR_DATA = 2
NFTA_TARGET_NAME = 1
NFTA_TARGET_REV = 2
NFTA_TARGET_INFO = 3
NFQ_FLAG_BYPASS = 0x01
NFT_REG_1 = 1
NFPROTO = {"ip": 2, "ip6": 10}

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class NftError(RuntimeError):
    pass


@dataclass(frozen=True)
class Rules:
    """``queue`` takes TCP (bound with NFQA_CFG_F_GSO: super-packets come up whole),
    ``queue + 1`` everything else (UDP GSO packets must be segmented by the kernel: their
    segment size is not in the queued message)."""

    queue: int
    allowed4: Sequence[ipaddress.IPv4Network]
    allowed6: Sequence[ipaddress.IPv6Network]
    forward: bool = False
    kill_switch: bool = False
    exec_cgroup: int | None = None  # the cgroup id (level 1) whose sockets get EXEC_MARK
    dns4: bool = False  # queue every IPv4 DNS query (to redirect tunnelled applications')
    dns6: bool = False
    # tunnelled TCP connections' packets routed to the discard device (sink.py), not queued
    sink: bool = False


def _nft(script: str) -> None:
    try:
        result = subprocess.run(
            ["nft", "-f", "-"], input=script, capture_output=True, text=True, timeout=NFT_TIMEOUT
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise NftError(f"nft: {exc}") from exc
    if result.returncode != 0:
        raise NftError(f"nft failed: {result.stderr.strip()}")


def delete_script() -> str:
    """Delete both tables whether they exist or not (the create-then-delete idiom)."""
    return "".join(f"table {f} {TABLE} {{}}\ndelete table {f} {TABLE}\n" for f in FAMILIES)


def table_script(family: str, networks: Sequence[Network], rules: Rules) -> str:
    addr = "ipv4_addr" if family == "ip" else "ipv6_addr"
    # neighbour discovery never leaves the link (RFC 4861)
    nd = ("" if family == "ip" else "        icmpv6 type { nd-router-solicit, nd-router-advert,"
          " nd-neighbor-solicit, nd-neighbor-advert, nd-redirect } accept\n")
    local = (
        "{ 224.0.0.0/4, 255.255.255.255 }" if family == "ip" else "{ fe80::/10, ff00::/8 }"
    )
    elements = ", ".join(str(n) for n in networks)
    # TCP to the GSO queue; UDP, ICMP (echo and errors) and every other protocol to the other
    queue_rules = (
        f"        meta l4proto tcp {family} daddr @allowed jump to_queue_tcp\n"
        f"{nd}"
        f"        {family} daddr @allowed jump to_queue\n"
    )
    # Answers of connections started from outside (not through the tunnel) go back directly.
    replies = f"        ct direction reply ct mark and {CT_INJECTED:#x} == 0 accept\n"
    dns = rules.dns4 if family == "ip" else rules.dns6
    # (an ICMP error shares its connection's conntrack entry, and mark: queued, not let out)
    sunk = (f"        ct mark and {CT_TUNNEL:#x} == {CT_TUNNEL:#x}"
            f" meta l4proto {_SUNK_SET} accept\n" if rules.sink else "")
    dns_rules = (
        "        udp dport 53 jump to_queue\n"
        "        tcp dport 53 jump to_queue_tcp\n"
    ) if dns else ""
    text = (
        f"table {family} {TABLE} {{\n"
        f"    set allowed {{ type {addr}; flags interval; elements = {{ {elements} }} }}\n"
        "    chain to_queue {\n    }\n"
        "    chain to_queue_tcp {\n    }\n"
        "    chain output {\n"
        f"        type filter hook output priority {PRIORITY}; policy accept;\n"
        # the client's own sockets; what it injects marks its connection (a tunnelled flow's
        # conntrack entry starts with the first answer injected, so the host's packets are
        # in its reply direction)
        f"        meta mark {OWN_MARK:#x} ct mark set ct mark or {CT_INJECTED:#x} accept\n"
        f"        ct mark and {CT_BYPASS:#x} == {CT_BYPASS:#x} accept\n"
        f"{sunk}"
        f"{replies}"
        '        oifname "lo" accept\n'
        f"        {family} daddr {local} accept\n" + dns_rules + queue_rules + "    }\n"
        "    chain exec {\n"
        f"        type filter hook output priority {PRIORITY - 1}; policy accept;\n"
        "    }\n"
        # Packets injected through lo (loopback.py: they skip the output hooks) mark their
        # connection too: after a conntrack flush (`conntrack -F`) the next one starts the
        # entry, and without the mark the host's packets, in its reply direction, would be
        # taken for answers to a connection from outside and leave outside the tunnel.
        "    chain injected {\n"
        f"        type filter hook prerouting priority {PRIORITY}; policy accept;\n"
        f'        iifname "lo" meta mark {OWN_MARK:#x} ct mark set ct mark or {CT_INJECTED:#x}\n'
        "    }\n"
        "    chain output_bypass {\n"
        f"        type filter hook output priority {PRIORITY + 10}; policy accept;\n"
        f"        meta mark {BYPASS_MARK:#x} ct mark set ct mark or {CT_BYPASS:#x}"
        " meta mark set 0x0\n"
        "    }\n"
    )
    if rules.sink:
        # (a route chain: a new mark routes the packet again, to the discard device)
        text += (
            "    chain sink {\n"
            f"        type route hook output priority {PRIORITY + 5}; policy accept;\n"
            f"        meta mark {TUNNEL_MARK:#x} ct mark set ct mark or {CT_TUNNEL:#x}\n"
            f"        ct mark and {CT_TUNNEL:#x} == {CT_TUNNEL:#x} meta l4proto {_SUNK_SET}"
            f" meta mark set {SINK_MARK:#x}\n"
            "    }\n"
        )
    if rules.forward:
        text += (
            "    chain forward {\n"
            f"        type filter hook forward priority {PRIORITY}; policy accept;\n"
            f"        ct mark and {CT_BYPASS:#x} == {CT_BYPASS:#x} accept\n"
            f"{replies}"
            f"        {family} daddr {local} accept\n" + queue_rules + "    }\n"
            "    chain forward_bypass {\n"
            f"        type filter hook forward priority {PRIORITY + 10}; policy accept;\n"
            f"        meta mark {BYPASS_MARK:#x} ct mark set ct mark or {CT_BYPASS:#x}"
            " meta mark set 0x0\n"
            "    }\n"
        )
    return text + "}\n"


def _queue_rule_message(family: str, rules: Rules, seq: int, chain: str, queue: int) -> bytes:
    flags = 0 if rules.kill_switch else NFQ_FLAG_BYPASS
    info = struct.pack("=HHHxx", queue, 1, flags)  # xt_NFQ_info_v3, XT_ALIGNed
    expression = nl.nested(
        NFTA_LIST_ELEM,
        nl.attr(NFTA_EXPR_NAME, nl.cstring("target")),
        nl.nested(
            NFTA_EXPR_DATA,
            nl.attr(NFTA_TARGET_NAME, nl.cstring("NFQUEUE")),
            nl.attr(NFTA_TARGET_REV, struct.pack(">I", 3)),
            nl.attr(NFTA_TARGET_INFO, info),
        ),
    )
    body = (
        nl.nfgen(NFPROTO[family], 0)
        + nl.attr(NFTA_RULE_TABLE, nl.cstring(TABLE))
        + nl.attr(NFTA_RULE_CHAIN, nl.cstring(chain))
        + nl.nested(NFTA_RULE_EXPRESSIONS, expression)
    )
    kind = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWRULE
    flags_nl = nl.NLM_F_REQUEST | nl.NLM_F_CREATE | nl.NLM_F_APPEND | nl.NLM_F_ACK
    return nl.message(kind, flags_nl, seq, body)


def _be32(value: int) -> bytes:
    return struct.pack(">I", value)


def _expression(name: str, *attrs: bytes) -> bytes:
    return nl.nested(NFTA_LIST_ELEM, nl.attr(NFTA_EXPR_NAME, nl.cstring(name)),
                     nl.nested(NFTA_EXPR_DATA, *attrs))


def _exec_rule_message(family: str, cgroup_id: int, seq: int) -> bytes:
    """``socket cgroupv2 level 1 == ID meta mark set EXEC_MARK`` in chain ``exec``, as nft
    would encode it (nft itself can only name the cgroup by a path under /sys/fs/cgroup)."""
    expressions = (
        # linux/netfilter/nf_tables.h: NFTA_SOCKET_KEY, _DREG, _LEVEL; NFT_SOCKET_CGROUPV2
        _expression("socket", nl.attr(1, _be32(3)), nl.attr(2, _be32(NFT_REG_1)),
                    nl.attr(3, _be32(1))),
        # NFTA_CMP_SREG, _OP (NFT_CMP_EQ), _DATA { NFTA_DATA_VALUE: the id, host order }
        _expression("cmp", nl.attr(1, _be32(NFT_REG_1)), nl.attr(2, _be32(0)),
                    nl.nested(3, nl.attr(1, struct.pack("=Q", cgroup_id)))),
        # NFTA_IMMEDIATE_DREG, _DATA { NFTA_DATA_VALUE: the mark, host order }
        _expression("immediate", nl.attr(1, _be32(NFT_REG_1)),
                    nl.nested(2, nl.attr(1, struct.pack("=I", EXEC_MARK)))),
        # NFTA_META_KEY (NFT_META_MARK), NFTA_META_SREG
        _expression("meta", nl.attr(2, _be32(3)), nl.attr(3, _be32(NFT_REG_1))),
    )
    body = (
        nl.nfgen(NFPROTO[family], 0)
        + nl.attr(NFTA_RULE_TABLE, nl.cstring(TABLE))
        + nl.attr(NFTA_RULE_CHAIN, nl.cstring("exec"))
        + nl.nested(NFTA_RULE_EXPRESSIONS, *expressions)
    )
    kind = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWRULE
    flags_nl = nl.NLM_F_REQUEST | nl.NLM_F_CREATE | nl.NLM_F_APPEND | nl.NLM_F_ACK
    return nl.message(kind, flags_nl, seq, body)


def _add_queue_rule(family: str, rules: Rules) -> None:
    batch_id = nl.nfgen(socket.AF_UNSPEC, NFNL_SUBSYS_NFTABLES)
    messages = [_queue_rule_message(family, rules, 2, "to_queue_tcp", rules.queue),
                _queue_rule_message(family, rules, 3, "to_queue", rules.queue + 1)]
    if rules.exec_cgroup is not None:
        messages.append(_exec_rule_message(family, rules.exec_cgroup, 4))
    last = 1 + len(messages)
    data = (
        nl.message(nl.NFNL_MSG_BATCH_BEGIN, nl.NLM_F_REQUEST, 1, batch_id)
        + b"".join(messages)
        + nl.message(nl.NFNL_MSG_BATCH_END, nl.NLM_F_REQUEST, last + 1, batch_id)
    )
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, nl.NETLINK_NETFILTER) as sock:
        sock.settimeout(NFT_TIMEOUT)
        sock.bind((0, 0))
        sock.send(data)
        while True:
            try:
                answer = sock.recv(65536)
            except TimeoutError as exc:
                raise NftError("no answer from nf_tables") from exc
            for kind, _flags, seq, body in nl.messages(answer):
                if kind == nl.NLMSG_ERROR:
                    code = nl.error_code(body)
                    if code:
                        raise NftError(
                            f"adding the NFQUEUE and exec rules to {family} {TABLE} failed: "
                            f"errno {code} ({os.strerror(code)})"
                        )
                    if seq == last:
                        return


def install(rules: Rules) -> None:
    """Replace any stale tables with fresh ones (one nft transaction, then the queue rules)."""
    script = delete_script()
    families: list[tuple[str, Sequence[Network]]] = [
        ("ip", rules.allowed4),
        ("ip6", rules.allowed6),
    ]
    for family, networks in families:
        if networks:
            script += table_script(family, networks, rules)
    _nft(script)
    try:
        for family, networks in families:
            if networks:
                _add_queue_rule(family, rules)
    except BaseException:
        remove()
        raise


def remove() -> None:
    _nft(delete_script())


def present() -> list[str]:
    """The client's tables present in this network namespace."""
    try:
        out = subprocess.run(
            ["nft", "list", "tables"], capture_output=True, text=True, timeout=NFT_TIMEOUT
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip().endswith(f" {TABLE}")]
