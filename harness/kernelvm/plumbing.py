"""How a VM stands in for the namespace it is attached to.

The namespace (a harness host) keeps its outer addresses; the VM sits behind it on a tap link
(169.254.77.0/30 and fdf7:6b76:6d00::/64, which never leave the namespace):

* outer UDP: WireGuard's listen port on the namespace's own addresses is DNATed to the guest,
  and what the guest sends out is masqueraded to the namespace's address (ports are kept), so
  peers see the namespace's address and port as the endpoint, as for any other driver;
* inner traffic: the interface's addresses live in the namespace (on the tap) and the tunnel's
  subnets are routed via the guest, which forwards them through its wg0 (wg0 itself has no
  address, only routes), so ping, the echo server and iperf3 in the namespace go through the
  guest's kernel WireGuard;
* roaming: when the namespace's outer address changes, stale NAT state is flushed
  (:func:`flush_conntrack`) so the guest's next packet leaves from the new address.
"""

from __future__ import annotations

import ipaddress
import shlex
import subprocess
import sys

from .guest import IP, WG

LINK4_HOST = "169.254.77.1"
LINK4_GUEST = "169.254.77.2"
LINK4_PREFIX = 30
LINK6_HOST = "fdf7:6b76:6d00::1"
LINK6_GUEST = "fdf7:6b76:6d00::2"
LINK6_PREFIX = 64
TABLE = "wgref_kernel_vm"
GUEST_IF = "eth0"
WG_IF = "wg0"
SYSCTLS = ("net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding")


class PlumbingError(RuntimeError):
    """The namespace side of the VM could not be set up."""


def _ns_run(ns: str, argv: list[str], *, check: bool = True, input_text: str | None = None,
            timeout: float = 15.0) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True,
                          input=input_text, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise PlumbingError(f"`{shlex.join(argv)}` in {ns} exited {proc.returncode}: "
                            f"{(proc.stderr or proc.stdout).strip()[-300:]}")
    return proc


def read_sysctls(ns: str) -> dict[str, str]:
    out = {}
    for key in SYSCTLS:
        proc = _ns_run(ns, ["sysctl", "-n", key], check=False)
        if proc.returncode == 0:
            out[key] = proc.stdout.strip()
    return out


def write_sysctls(ns: str, values: dict[str, str]) -> None:
    for key, value in values.items():
        _ns_run(ns, ["sysctl", "-q", "-w", f"{key}={value}"], check=False)


def setup_namespace(ns: str, tap: str) -> None:
    """Link addresses on the tap and forwarding on (the tap exists and is up)."""
    _ns_run(ns, ["ip", "addr", "add", f"{LINK4_HOST}/{LINK4_PREFIX}", "dev", tap])
    _ns_run(ns, ["ip", "addr", "add", f"{LINK6_HOST}/{LINK6_PREFIX}", "dev", tap, "nodad"])
    write_sysctls(ns, {key: "1" for key in SYSCTLS})


def nat_ruleset(tap: str, ports: set[int]) -> str:
    """The namespace's nftables table: DNAT of the listen ports, masquerade of the guest."""
    rules = []
    if ports:
        plist = ", ".join(str(port) for port in sorted(ports))
        match = f'iifname != "{tap}" fib daddr type local udp dport {{ {plist} }}'
        rules += [f"{match} meta nfproto ipv4 dnat ip to {LINK4_GUEST}",
                  f"{match} meta nfproto ipv6 dnat ip6 to {LINK6_GUEST}"]
    pre = "\n".join(f"    {rule}" for rule in rules)
    return f"""table inet {TABLE} {{}}
delete table inet {TABLE}
table inet {TABLE} {{
  chain prerouting {{
    type nat hook prerouting priority dstnat; policy accept;
{pre}
  }}
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    oifname != "{tap}" ip saddr {LINK4_GUEST} masquerade
    oifname != "{tap}" ip6 saddr {LINK6_GUEST} masquerade
  }}
}}
"""


def apply_nat(ns: str, tap: str, ports: set[int]) -> None:
    _ns_run(ns, ["nft", "-f", "-"], input_text=nat_ruleset(tap, ports))


def remove_nat(ns: str) -> None:
    _ns_run(ns, ["nft", "delete", "table", "inet", TABLE], check=False)


def inner_routes_namespace(ns: str, tap: str, addresses: tuple[str, ...], mtu: int) -> None:
    """The interface's inner addresses in the namespace, their subnets routed via the guest."""
    for address in addresses:
        iface = ipaddress.ip_interface(address)
        family, host_len = ("-6", 128) if iface.version == 6 else ("-4", 32)
        argv = ["ip", family, "addr", "add", f"{iface.ip}/{host_len}", "dev", tap]
        _ns_run(ns, argv + (["nodad"] if iface.version == 6 else []))
        if iface.network.prefixlen < host_len:
            via = LINK6_GUEST if iface.version == 6 else LINK4_GUEST
            _ns_run(ns, ["ip", family, "route", "add", str(iface.network), "via", via,
                         "dev", tap, "src", str(iface.ip), "mtu", str(mtu)])


def guest_network_script(mtu: int) -> str:
    """The guest's side of the tap link (its MTU follows the namespace's outer link)."""
    return f"""set -e
{IP} link set {GUEST_IF} mtu {mtu} up
{IP} addr add {LINK4_GUEST}/{LINK4_PREFIX} dev {GUEST_IF}
{IP} addr add {LINK6_GUEST}/{LINK6_PREFIX} dev {GUEST_IF} nodad
{IP} route add default via {LINK4_HOST}
{IP} -6 route add default via {LINK6_HOST}
echo 1 > /proc/sys/net/ipv4/ip_forward
echo 1 > /proc/sys/net/ipv6/conf/all/forwarding
"""


def guest_wireguard_script(conf_path: str, addresses: tuple[str, ...], mtu: int) -> str:
    """wg0 in the guest: configured from a file already written there, routes for the
    tunnel's subnets, and the interface's own addresses routed back to the namespace."""
    lines = ["set -e", f"{IP} link add {WG_IF} type wireguard",
             f"{WG} setconf {WG_IF} {conf_path}", f"rm -f {conf_path}",
             f"{IP} link set {WG_IF} mtu {mtu} up"]
    for address in addresses:
        iface = ipaddress.ip_interface(address)
        family, host_len = ("-6", 128) if iface.version == 6 else ("-4", 32)
        via = LINK6_HOST if iface.version == 6 else LINK4_HOST
        if iface.network.prefixlen < host_len:
            lines.append(f"{IP} {family} route add {iface.network} dev {WG_IF}")
        lines.append(f"{IP} {family} route add {iface.ip}/{host_len} via {via} dev {GUEST_IF}")
    return "\n".join(lines) + "\n"


_FLUSH = """
import socket, struct
s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 12)  # NETLINK_NETFILTER
msg = struct.pack("=LHHLL", 20, (1 << 8) | 2, 0x5, 1, 0) + struct.pack("=BBH", 0, 0, 0)
s.send(msg)  # IPCTNL_MSG_CT_DELETE with no tuple: flush the namespace's conntrack table
s.settimeout(2)
reply = s.recv(4096)
err = struct.unpack_from("=i", reply, 16)[0]
raise SystemExit(0 if err in (0, -2) else -err)
"""


def flush_conntrack(ns: str) -> None:
    """Forget the namespace's NAT state (ctnetlink flush; no conntrack tool needed)."""
    _ns_run(ns, [sys.executable, "-c", _FLUSH], check=False)
