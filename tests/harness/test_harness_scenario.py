"""Scenario parsing, `wg show dump` parsing and interface configs (no root needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import naming
from harness.peers.base import InterfaceConfig, PeerEntry
from harness.scenario import ScenarioError, load_scenarios, parse_scenario
from harness.wgdump import DumpError, parse_dump

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"

MINIMAL = """
name = "mini"
[[steps]]
action = "tcp"
"""


def test_all_shipped_scenarios_parse() -> None:
    scenarios = {s.name: s for s in load_scenarios(SCENARIOS)}
    for name in ("handshake", "psk", "psk-mismatch", "keepalive", "rekey", "roaming",
                 "roaming-ipv6", "crypto-rp", "ipv6-outer", "mtu", "cookie-under-load"):
        assert name in scenarios, name
    assert scenarios["rekey"].slow
    assert not scenarios["handshake"].slow
    assert scenarios["psk-mismatch"].config.psk_mismatch
    assert scenarios["keepalive"].topology.client_nat
    assert scenarios["keepalive"].topology.conntrack_udp_timeout == 2
    assert scenarios["roaming-ipv6"].topology.outer == "ipv6"
    assert "attacker" in scenarios["cookie-under-load"].hosts


def test_defaults_and_step_fields() -> None:
    sc = parse_scenario(MINIMAL + 'expect = "failure"\ntimeout = 3\nbytes = 10\n')
    assert sc.name == "mini"
    assert sc.timeout == 120
    (step,) = sc.steps
    assert (step.action, step.expect, step.timeout, step.params) == (
        "tcp", "failure", 3.0, {"bytes": 10})
    assert [c.host for c in sc.captures] == ["client", "server"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[steps]]\naction = "teleport"\n', "unknown action 'teleport'"),
        (MINIMAL + "colour = 1\n", "unknown parameters ['colour']"),
        (MINIMAL + 'to = "moon"\n', "is not a host"),
        (MINIMAL + 'expect = "maybe"\n', "expect must be success or failure"),
        (MINIMAL + "[topology]\nouter = 'ipx'\n", "topology.outer"),
        (MINIMAL + "[config]\npks = true\n", "unknown keys ['pks']"),
        (MINIMAL + "[requires]\nclient = ['teleport']\n", "unknown capabilities"),
        ("name = 'x'\n", "no [[steps]]"),
        ("name = \n", "not valid TOML"),
        (MINIMAL + "timeout = true\n", "expected a number"),
    ],
)
def test_invalid_scenarios_are_rejected_with_a_reason(text: str, message: str) -> None:
    with pytest.raises(ScenarioError, match=None) as info:
        parse_scenario(text, Path("bad.toml"))
    assert message in str(info.value)
    assert "bad.toml" in str(info.value)


DUMP = (
    "cHJpdmF0ZQ==\tcHVibGlj\t51820\toff\n"
    "cGVlcg==\t(none)\t198.18.1.2:40000\t198.19.77.2/32,fd77::2/128\t1700000000\t1234\t"
    "5678\toff\n"
    "cGVlcjI=\tcHNr\t(none)\t(none)\t0\t0\t0\t25\n"
)


def test_parse_dump() -> None:
    state = parse_dump(DUMP)
    assert state.listen_port == 51820
    peer = state.peers["cGVlcg=="]
    assert peer.endpoint == "198.18.1.2:40000"
    assert peer.allowed_ips == ("198.19.77.2/32", "fd77::2/128")
    assert (peer.latest_handshake, peer.rx_bytes, peer.tx_bytes) == (1700000000, 1234, 5678)
    assert peer.preshared_key is None and peer.persistent_keepalive == 0
    other = state.peers["cGVlcjI="]
    assert other.endpoint is None and other.allowed_ips == () and other.persistent_keepalive == 25


@pytest.mark.parametrize("text", ["", "a\tb\n", "a\tb\t1\toff\nshort\tline\n"])
def test_parse_dump_rejects_garbage(text: str) -> None:
    with pytest.raises(DumpError):
        parse_dump(text)


def test_interface_config_files() -> None:
    config = InterfaceConfig(
        "wh0000wgc", "PRIV", ("198.19.77.2/24", "fd77::2/64"), None, 1400,
        [PeerEntry("PUB", ("198.19.77.1/32",), "198.18.2.2:51820", "PSK", 1)])
    wg = config.wg_conf()
    assert "PrivateKey = PRIV" in wg and "PresharedKey = PSK" in wg
    assert "PersistentKeepalive = 1" in wg and "Address" not in wg and "ListenPort" not in wg
    quick = config.quick_conf()
    assert "Address = 198.19.77.2/24, fd77::2/64" in quick and "MTU = 1400" in quick
    assert "DNS" not in quick


def test_names_fit_linux_limits() -> None:
    prefix = naming.new_prefix()
    assert naming.PREFIX_RE.match(prefix)
    assert len(naming.ifname(prefix, "wgc")) <= naming.IFNAMSIZ
    with pytest.raises(ValueError):
        naming.ifname(prefix, "x" * 20)
    assert naming.is_harness_name(f"{prefix}-client")
    assert not naming.is_harness_name("wgt-1234-ns0")


def test_each_action_is_declared_once_with_its_parameters_timeout_and_function() -> None:
    from harness.steps import ACTIONS, action, do_ping

    assert ACTIONS["ping"].run is do_ping
    assert ACTIONS["ping"].timeout == 15.0
    assert {"from", "to", "count", "df"} <= ACTIONS["ping"].params
    assert all(name == a.name and callable(a.run) for name, a in ACTIONS.items())
    with pytest.raises(ValueError, match="action ping is declared twice"):
        action("ping", 1.0)(do_ping)
    # a shipped scenario only names declared actions, with their declared parameters
    for sc in load_scenarios(SCENARIOS):
        for step in sc.steps:
            assert set(step.params) <= ACTIONS[step.action].params


def test_an_unknown_action_fails_at_load_time_with_file_and_step(tmp_path: Path) -> None:
    from harness.cli import main

    (tmp_path / "ok.toml").write_text(MINIMAL)
    (tmp_path / "bad.toml").write_text(MINIMAL + '[[steps]]\naction = "tcp"\n'
                                       '[[steps]]\naction = "teleport"\n')
    with pytest.raises(SystemExit) as info:
        main(["--scenarios-dir", str(tmp_path), "list"])
    assert f"{tmp_path / 'bad.toml'} step 3: unknown action 'teleport'" in str(info.value)
