"""Forget the client's conntrack marks: the conntrack entries of bypass flows carry
:data:`~wgref.client.nft.CT_BYPASS` in their mark, those of tunnelled flows
:data:`~wgref.client.nft.CT_INJECTED`; only the client's tables read them. A ctnetlink flush
filtered by mark (nf_conntrack_netlink.c ``ctnetlink_flush_conntrack`` with
``CTA_MARK``/``CTA_MARK_MASK``) per bit deletes them in every family; the connections
themselves go on (conntrack picks them up again from their next packet)."""

from __future__ import annotations

import os
import select
import socket
import struct

from . import netlink as nl
from .nft import CT_BYPASS, CT_INJECTED, CT_TUNNEL

NFNL_SUBSYS_CTNETLINK = 1
IPCTNL_MSG_CT_DELETE = 2
CTA_MARK = 8
CTA_MARK_MASK = 21
TIMEOUT = 5.0


def flush_message(mark: int, mask: int, seq: int = 1) -> bytes:
    body = (nl.nfgen(socket.AF_UNSPEC, 0) + nl.attr(CTA_MARK, struct.pack(">I", mark))
            + nl.attr(CTA_MARK_MASK, struct.pack(">I", mask)))
    kind = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE
    return nl.message(kind, nl.NLM_F_REQUEST | nl.NLM_F_ACK, seq, body)


def forget_marks() -> None:
    """Delete this network namespace's conntrack entries that carry the client's mark.
    Raises OSError when conntrack refuses (or is not there)."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, nl.NETLINK_NETFILTER) as sock:
        sock.bind((0, 0))
        for seq, bit in enumerate((CT_BYPASS, CT_INJECTED, CT_TUNNEL), 1):
            sock.send(flush_message(bit, bit, seq))
            _answer(sock, seq)


def _answer(sock: socket.socket, seq: int) -> None:
    while True:
        ready, _, _ = select.select([sock], [], [], TIMEOUT)
        if not ready:
            raise TimeoutError("no answer from nf_conntrack_netlink")
        for kind, _flags, got, body in nl.messages(sock.recv(65536)):
            if kind == nl.NLMSG_ERROR and got == seq:
                code = nl.error_code(body)
                if code and code != 2:  # ENOENT: nothing to delete
                    raise OSError(code, f"conntrack: {os.strerror(code)}")
                return
