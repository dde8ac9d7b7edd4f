"""The client's configuration: a wg-quick style file with the seed's extensions.

Extensions (AllowedApps, DisallowedApps, DisallowedIPs, and wgref's KillSwitch, Forward) are
accepted bare or in a comment, ``#@ws:Key = value`` (WireSock's form) or ``#@wgref:Key =
value``, so the file stays valid for wg-quick. Keys are case-insensitive. Every problem is a
:class:`ClientConfigError` naming the file, the line and the key; nothing starts then.

Several ``[Peer]`` sections are allowed, as in wg-quick: a flow goes to the peer whose
AllowedIPs match its destination most specifically (cryptokey routing). AllowedApps,
DisallowedApps and DisallowedIPs in a ``[Peer]`` apply to that peer; in ``[Interface]`` to
every peer (a peer's own AllowedApps/DisallowedApps replace the interface's, DisallowedIPs add
up).

Refused: a second ``[Interface]``, two peers with one PublicKey, a single-valued key given
twice in a section, an all-zero PublicKey, and a wg-quick key inside a ``#@ws:``/``#@wgref:``
comment (wg-quick would not see it, so the file would mean two things). A UTF-8 byte order
mark at the start of the file (Windows editors write one) is skipped.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import socket
from dataclasses import dataclass, field

from ..errors import ConfigError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Interface = ipaddress.IPv4Interface | ipaddress.IPv6Interface

INTERFACE_KEYS = {
    "privatekey", "address", "dns", "mtu", "listenport",
    "killswitch", "forward",
    # wg-quick keys the transparent client has no use for: accepted, ignored with a warning
    "table", "preup", "postup", "predown", "postdown", "saveconfig", "fwmark",
}
PEER_KEYS = {
    "publickey", "presharedkey", "endpoint", "allowedips", "persistentkeepalive",
}
EXTENSION_KEYS = {"allowedapps", "disallowedapps", "disallowedips"}
IGNORED_KEYS = {"table", "preup", "postup", "predown", "postdown", "saveconfig", "fwmark"}
COMMENT_PREFIXES = ("#@ws:", "#@wgref:")
DEFAULT_MTU = 1420


class ClientConfigError(ConfigError):
    def __init__(self, path: str, line: int, key: str, problem: str) -> None:
        self.path, self.line, self.key = path, line, key
        where = f"{path}:{line}" if line else path
        super().__init__(f"{where}: {key}: {problem}" if key else f"{where}: {problem}")


# Keys that take one value per section (a second one is refused); the others add up.
SINGLE_KEYS = {"privatekey", "mtu", "listenport", "killswitch", "forward", "publickey",
               "presharedkey", "endpoint", "persistentkeepalive"}
CORE_KEYS = (INTERFACE_KEYS | PEER_KEYS) - {"killswitch", "forward"}  # wg-quick's keys
ZERO_KEY = bytes(32)


@dataclass
class PeerConfig:
    """One ``[Peer]`` section."""

    line: int = 0  # where the section starts
    public_key: bytes = b""
    preshared_key: bytes | None = None
    endpoint: tuple[str, int] | None = None
    endpoint_text: str = ""
    allowed_ips: list[Network] = field(default_factory=list)
    disallowed_ips: list[Network] = field(default_factory=list)
    allowed_apps: list[str] = field(default_factory=list)
    disallowed_apps: list[str] = field(default_factory=list)
    persistent_keepalive: int = 0


@dataclass
class ClientConfig:
    path: str
    private_key: bytes = b""
    addresses: list[Interface] = field(default_factory=list)
    dns: list[str] = field(default_factory=list)
    mtu: int = DEFAULT_MTU
    listen_port: int = 0
    kill_switch: bool = False
    forward: bool = False
    # extension keys in [Interface]: every peer's
    disallowed_ips: list[Network] = field(default_factory=list)
    allowed_apps: list[str] = field(default_factory=list)
    disallowed_apps: list[str] = field(default_factory=list)
    peers: list[PeerConfig] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def peer_allowed_apps(self, peer: PeerConfig) -> list[str]:
        return peer.allowed_apps or self.allowed_apps

    def peer_disallowed_apps(self, peer: PeerConfig) -> list[str]:
        return peer.disallowed_apps or self.disallowed_apps

    def peer_disallowed_ips(self, peer: PeerConfig) -> list[Network]:
        return self.disallowed_ips + peer.disallowed_ips

    def tunnel_address(self, version: int) -> Interface | None:
        for address in self.addresses:
            if address.version == version:
                return address
        return None


def _key(value: str) -> bytes:
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32 or len(value.strip()) != 44:
        raise ValueError("not a base64 key of 32 bytes")
    return raw


def _list(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def _networks(value: str) -> list[Network]:
    out: list[Network] = []
    for item in _list(value):
        if "/" not in item:
            address = ipaddress.ip_address(item)
            item = f"{item}/{address.max_prefixlen}"
        try:
            out.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"bad prefix {item!r}") from None
    return out


def _bool(value: str) -> bool:
    text = value.strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{value!r} is not true or false")


def _int(value: str, low: int, high: int) -> int:
    text = value.strip()
    if text.lower() == "off":
        return 0
    number = int(text)
    if not low <= number <= high:
        raise ValueError(f"{number} is not in {low}..{high}")
    return number


def resolve_endpoint(text: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` resolved to an address (the first answer)."""
    host, sep, port_text = text.strip().rpartition(":")
    if not sep or not host:
        raise ValueError("expected HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    port = _int(port_text, 1, 65535)
    try:
        answers = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except (OSError, UnicodeError) as exc:
        raise ValueError(f"cannot resolve {host!r}: {exc}") from None
    if not answers:
        raise ValueError(f"cannot resolve {host!r}")
    answers.sort(key=lambda a: a[0] != socket.AF_INET)  # IPv4 first, like wg
    address = answers[0][4][0]
    return str(address).split("%")[0], port


def _apply(config: ClientConfig, peer: PeerConfig | None, key: str, value: str) -> None:
    """Set ``key`` in [Interface] (``peer`` None) or in ``peer``."""
    if peer is None:
        if key == "privatekey":
            config.private_key = _key(value)
        elif key == "address":
            for item in _list(value):
                try:
                    config.addresses.append(ipaddress.ip_interface(item))
                except ValueError:
                    raise ValueError(f"bad address {item!r}") from None
        elif key == "dns":
            config.dns += _list(value)
        elif key == "mtu":
            config.mtu = _int(value, 1280, 65456)
        elif key == "listenport":
            config.listen_port = _int(value, 0, 65535)
        elif key == "killswitch":
            config.kill_switch = _bool(value)
        elif key == "forward":
            config.forward = _bool(value)
        elif key == "disallowedips":
            config.disallowed_ips += _networks(value)
        elif key == "allowedapps":
            config.allowed_apps += _list(value)
        elif key == "disallowedapps":
            config.disallowed_apps += _list(value)
        else:  # pragma: no cover - guarded by the key sets
            raise ValueError("unknown key")
        return
    if key == "publickey":
        peer.public_key = _key(value)
        if peer.public_key == ZERO_KEY:
            raise ValueError("the all-zero key is no peer's public key")
    elif key == "presharedkey":
        peer.preshared_key = _key(value)
    elif key == "endpoint":
        peer.endpoint_text = value.strip()
        peer.endpoint = resolve_endpoint(value)
    elif key == "allowedips":
        peer.allowed_ips += _networks(value)
    elif key == "disallowedips":
        peer.disallowed_ips += _networks(value)
    elif key == "persistentkeepalive":
        peer.persistent_keepalive = _int(value, 0, 65535)
    elif key == "allowedapps":
        peer.allowed_apps += _list(value)
    elif key == "disallowedapps":
        peer.disallowed_apps += _list(value)
    else:  # pragma: no cover - guarded by the key sets
        raise ValueError("unknown key")


def parse(text: str, path: str = "<config>") -> ClientConfig:
    config = ClientConfig(path)
    text = text.removeprefix("\ufeff")  # a UTF-8 byte order mark
    section = ""
    interface_line = 0
    peer: PeerConfig | None = None
    seen: dict[str, int] = {}  # key -> first line, in the current section
    everywhere: set[str] = set()
    keys_of_peers: dict[bytes, int] = {}
    for number, raw_line in enumerate(text.splitlines(), 1):
        line = raw_line.strip()
        lowered = line.lower()
        extension = next((p for p in COMMENT_PREFIXES if lowered.startswith(p)), None)
        line = line[len(extension) :] if extension else line.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip().lower()
            seen = {}
            if section == "interface":
                if interface_line:
                    raise ClientConfigError(path, number, line, "a second [Interface] (the "
                                            f"first is at line {interface_line})")
                interface_line = number
                peer = None
            elif section == "peer":
                peer = PeerConfig(number)
                config.peers.append(peer)
            else:
                raise ClientConfigError(path, number, line, "unknown section")
            continue
        name, sep, value = line.partition("=")
        name = name.strip()
        key = name.lower()
        if not sep:
            raise ClientConfigError(path, number, name, "expected KEY = VALUE")
        if not section:
            raise ClientConfigError(path, number, name, "key outside [Interface] or [Peer]")
        allowed = (INTERFACE_KEYS if section == "interface" else PEER_KEYS) | EXTENSION_KEYS
        if key not in allowed:
            raise ClientConfigError(path, number, name, f"unknown key in [{section.title()}]")
        if extension and key in CORE_KEYS:
            raise ClientConfigError(
                path, number, name, f"a wg-quick key inside a {extension} comment: wg-quick "
                "would not see it; write it without the comment prefix")
        if key in SINGLE_KEYS and key in seen:
            raise ClientConfigError(path, number, name,
                                    f"given twice in this section (first at line {seen[key]})")
        if key in IGNORED_KEYS:
            config.warnings.append(
                f"{path}:{number}: {name}: ignored by the transparent client (a wg-quick key)"
            )
            continue
        try:
            _apply(config, peer, key, value.strip())
        except ValueError as exc:
            raise ClientConfigError(path, number, name, str(exc)) from None
        if key == "publickey" and peer is not None:
            first = keys_of_peers.setdefault(peer.public_key, peer.line)
            if first != peer.line:
                raise ClientConfigError(path, number, name,
                                        f"the same peer as the [Peer] at line {first}")
        seen.setdefault(key, number)
        everywhere.add(key)
    for key, label, in_section in (
        ("privatekey", "PrivateKey", "[Interface]"),
        ("address", "Address", "[Interface]"),
    ):
        if key not in everywhere:
            raise ClientConfigError(path, 0, label, f"missing in {in_section}")
    if not config.peers:
        raise ClientConfigError(path, 0, "[Peer]", "missing: the client needs a peer")
    for each in config.peers:
        for attr, label in (("public_key", "PublicKey"), ("endpoint", "Endpoint"),
                            ("allowed_ips", "AllowedIPs")):
            if not getattr(each, attr):
                raise ClientConfigError(path, each.line, label,
                                        f"missing in the [Peer] at line {each.line}")
    for apps, denied in [(config.allowed_apps, config.disallowed_apps),
                         *((p.allowed_apps, p.disallowed_apps) for p in config.peers)]:
        if apps and denied:
            config.warnings.append(
                f"{path}: AllowedApps and DisallowedApps are both set: AllowedApps decides"
            )
    return config


def load(path: str) -> ClientConfig:
    try:
        with open(path, encoding="utf-8-sig") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ClientConfigError(path, 0, "", f"cannot read: {exc}") from None
    return parse(text, path)
