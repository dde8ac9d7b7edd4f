"""Cryptokey routing table: longest-prefix match over allowed IPs (WP 3).

One hash table per present prefix length, keyed by the masked address as an int; lookup probes
the present lengths longest first. Peers are compared by identity.
"""

from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Generic, TypeAlias, TypeVar

__all__ = ["AllowedIPs", "Network"]

T = TypeVar("T")
Network: TypeAlias = IPv4Network | IPv6Network
_Key: TypeAlias = tuple[int, int, int]  # (version, prefixlen, masked address)


class _Family(Generic[T]):
    """All prefixes of one address family (IPv4 or IPv6)."""

    __slots__ = ("bits", "levels", "tables")

    def __init__(self, bits: int) -> None:
        self.bits = bits
        self.tables: dict[int, dict[int, T]] = {}
        # (mask, table.get) for each present prefix length, longest first: the lookup path.
        self.levels: list[tuple[int, Callable[[int], T | None]]] = []  # updated in place

    def mask(self, prefixlen: int) -> int:
        return ((1 << prefixlen) - 1) << (self.bits - prefixlen)

    def rebuild(self) -> None:
        self.levels[:] = [
            (self.mask(plen), self.tables[plen].get) for plen in sorted(self.tables, reverse=True)
        ]

    def table_for(self, prefixlen: int) -> dict[int, T]:
        table = self.tables.get(prefixlen)
        if table is None:
            table = self.tables[prefixlen] = {}
            self.rebuild()
        return table

    def discard(self, prefixlen: int, addr: int) -> None:
        table = self.tables[prefixlen]
        del table[addr]
        if not table:
            del self.tables[prefixlen]
            self.rebuild()


class AllowedIPs(Generic[T]):
    """Map IPv4/IPv6 prefixes to peers; ``lookup`` returns the longest match (WP 3)."""

    __slots__ = ("_by_peer", "_count", "_levels_by_size", "_v4", "_v6")

    def __init__(self) -> None:
        self._v4: _Family[T] = _Family(32)
        self._v6: _Family[T] = _Family(128)
        self._levels_by_size = {4: self._v4.levels, 16: self._v6.levels}
        # id(peer) -> (peer, insertion-ordered prefixes); holding the peer keeps its id unique.
        self._by_peer: dict[int, tuple[T, dict[_Key, Network]]] = {}
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def clear(self) -> None:
        for family in (self._v4, self._v6):
            family.tables.clear()
            family.rebuild()
        self._by_peer.clear()
        self._count = 0

    def _locate(self, network: Network) -> tuple[_Family[T], _Key, Network]:
        if isinstance(network, IPv4Network):
            family = self._v4
        elif isinstance(network, IPv6Network):
            family = self._v6
        else:
            raise TypeError(f"expected IPv4Network or IPv6Network, got {type(network).__name__}")
        plen = network.prefixlen
        raw = int(network.network_address)
        addr = raw & family.mask(plen)
        if addr != raw:  # host bits set: normalise (ipaddress with strict=False already does)
            network = type(network)((addr, plen))
        return family, (network.version, plen, addr), network

    def insert(self, network: Network, peer: T) -> None:
        """Assign ``network`` to ``peer``, re-assigning it if another peer held it."""
        family, key, network = self._locate(network)
        _, plen, addr = key
        table = family.table_for(plen)
        old = table.get(addr)
        if old is not None:
            if old is peer:
                return
            self._forget(old, key)
        else:
            self._count += 1
        table[addr] = peer
        record = self._by_peer.get(id(peer))
        if record is None:
            record = self._by_peer[id(peer)] = (peer, {})
        record[1][key] = network

    def _forget(self, peer: T, key: _Key) -> None:
        entries = self._by_peer[id(peer)][1]
        del entries[key]
        if not entries:
            del self._by_peer[id(peer)]

    def remove(self, network: Network, peer: T) -> bool:
        """Remove ``network`` if it belongs to ``peer``; return whether it was removed."""
        family, key, _ = self._locate(network)
        _, plen, addr = key
        table = family.tables.get(plen)
        if table is None or table.get(addr) is not peer:
            return False
        family.discard(plen, addr)
        self._forget(peer, key)
        self._count -= 1
        return True

    def remove_peer(self, peer: T) -> None:
        """Remove every prefix of ``peer``."""
        record = self._by_peer.pop(id(peer), None)
        if record is None:
            return
        entries = record[1]
        v4, v6 = self._v4, self._v6
        for version, plen, addr in entries:
            (v4 if version == 4 else v6).tables[plen].pop(addr)
        for family in (v4, v6):
            empty = [plen for plen, table in family.tables.items() if not table]
            for plen in empty:
                del family.tables[plen]
            if empty:
                family.rebuild()
        self._count -= len(entries)

    def entries_for(self, peer: T) -> list[Network]:
        """The prefixes of ``peer`` in insertion order."""
        record = self._by_peer.get(id(peer))
        return [] if record is None else list(record[1].values())

    def lookup(
        self, address: bytes | bytearray | memoryview | IPv4Address | IPv6Address
    ) -> T | None:
        """Longest-prefix match for a raw 4/16-byte address (as in an IP header) or an address."""
        if type(address) is bytes:  # the hot path: raw bytes from an IP header
            levels = self._levels_by_size.get(len(address))
            value = int.from_bytes(address)
        elif isinstance(address, IPv4Address | IPv6Address):
            levels = self._levels_by_size[4 if address.version == 4 else 16]
            value = int(address)
        else:
            levels = self._levels_by_size.get(len(address))
            value = int.from_bytes(address)
        if levels is None:
            raise ValueError("address must be 4 or 16 bytes")
        for mask, get in levels:
            peer = get(value & mask)
            if peer is not None:
                return peer
        return None
