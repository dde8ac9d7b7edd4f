"""The Docker backend without Docker: names, labels, subnets, argv, Dockerfiles, build
contexts, the engine's undo of host changes, and the CLI switch."""

from __future__ import annotations

import io
import ipaddress
import re
import sys
import tarfile
from pathlib import Path

import pytest

from harness import cleanup as cleanup_mod
from harness import tools
from harness.cli import _parser
from harness.docker import engine, images, labels
from harness.docker.commands import container_argv
from harness.docker.files import candidate_paths, under
from tests.harness.conftest import needs_tools

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = sorted((ROOT / "docker").glob("*.Dockerfile"))
TOOLS = ("iproute2", "iputils-ping", "iperf3", "ncat", "tcpdump", "python3")


# -- names and labels --------------------------------------------------------------------------

def test_names_carry_the_run_prefix() -> None:
    assert labels.container_name("wh1a2b", "client") == "wh1a2b-client"
    assert labels.network_name("wh1a2b", 2) == "wh1a2b-link2"
    assert labels.run_labels("wh1a2b", "router") == {labels.RUN_LABEL: "wh1a2b",
                                                     labels.ROLE_LABEL: "router"}
    assert labels.image_tag("wgref") == "wgref-harness/wgref:bookworm"
    with pytest.raises(ValueError):
        labels.container_name("wh1a2b", "bad name")


def test_prefix_of_prefers_the_label_and_ignores_strangers() -> None:
    assert labels.prefix_of({labels.RUN_LABEL: "wh00ff"}, "whatever") == "wh00ff"
    assert labels.prefix_of({}, "wh12ab-server") == "wh12ab"
    assert labels.prefix_of({labels.RUN_LABEL: "nope"}, "mycontainer") is None
    assert labels.prefix_of(None, "bridge") is None


# -- subnets -----------------------------------------------------------------------------------

def test_subnets_prefer_the_netns_addresses() -> None:
    pairs = labels.choose_subnets(3, [])
    assert [str(v4) for v4, _ in pairs] == ["198.18.1.0/24", "198.18.2.0/24", "198.18.3.0/24"]
    assert [str(v6) for _, v6 in pairs] == ["2001:db8:1::/64", "2001:db8:2::/64",
                                            "2001:db8:3::/64"]


def test_subnets_avoid_the_hosts_networks_and_the_tunnel() -> None:
    taken = labels.parse_networks([
        "198.18.0.0/23 dev eth1 proto kernel scope link src 198.18.1.7",  # `ip route`
        "2: eth0    inet 198.18.3.9/24 brd 198.18.3.255 scope global eth0",  # `ip -o addr`
        "3: eth0    inet6 2001:db8:2::5/64 scope global",
        "default via 192.0.2.1 dev eth0",
    ])
    pairs = labels.choose_subnets(4, taken)
    chosen = [n for pair in pairs for n in pair]
    for net in chosen:
        assert not labels.overlaps(net, taken), net
        assert not net.overlaps(labels.INNER_V4) if net.version == 4 else True
    assert len({str(n) for n in chosen}) == len(chosen)  # no two links share a subnet
    assert all(v4.subnet_of(labels.V4_POOL) for v4, _ in pairs)
    assert all(v6.subnet_of(labels.V6_POOL) for _, v6 in pairs)


def test_subnets_never_take_the_inner_tunnel_subnet() -> None:
    everything_but = [n for n in labels.V4_POOL.subnets(new_prefix=24)
                      if str(n) not in ("198.19.77.0/24", "198.19.200.0/24")]
    (v4, _), = labels.choose_subnets(1, everything_but)
    assert str(v4) == "198.19.200.0/24"
    with pytest.raises(ValueError):
        labels.choose_subnets(2, everything_but)


def test_router_and_host_addresses() -> None:
    net = ipaddress.ip_network("198.18.5.0/24")
    assert labels.host_address(net, labels.ROUTER_HOST_PART) == "198.18.5.254"
    assert labels.host_address(ipaddress.ip_network("2001:db8:5::/64"), 2) == "2001:db8:5::2"


# -- commands inside containers ----------------------------------------------------------------

def test_container_argv_swaps_the_hosts_python_and_cleans_the_environment() -> None:
    argv = container_argv(["env", "PYTHONPATH=/repo", sys.executable, "-m", "harness.echo"],
                          {"LOG_LEVEL": "debug"}, pythons={sys.executable})
    assert argv[:2] == ["env", "-i"]
    assert "LOG_LEVEL=debug" in argv
    assert sys.executable not in argv and "python3" in argv
    assert argv[-2:] == ["-m", "harness.echo"]


def test_the_files_a_command_names_under_the_output_folder() -> None:
    """Words naming a file under the output folder (alone, after `=`, relative to the
    working folder) are what goes into the container before the command."""
    out, cwd = Path("/runs/out"), Path("/runs")
    words = ["wg", "setconf", "wg0", "/runs/out/c/wg0.conf", "WG_KEYLOG_FILE=/runs/out/c/k",
             "out/c/rel.conf", "198.18.1.2/24", "/etc/passwd", "--x=out/../elsewhere"]
    named = [p for p in candidate_paths(words, cwd) if under(p, [out])]
    assert named == [Path("/runs/out/c/wg0.conf"), Path("/runs/out/c/k"),
                     Path("/runs/out/c/rel.conf")]


# -- Dockerfiles -------------------------------------------------------------------------------

def _tools_block(text: str) -> str:
    """From FROM up to the end of the first RUN (the layer every image shares)."""
    lines = [ln for ln in text.splitlines() if not ln.startswith("#")]
    start = next(i for i, ln in enumerate(lines) if ln.startswith("FROM "))
    block, in_run = [], False
    for line in lines[start:]:
        block.append(line)
        if line.startswith("RUN "):
            in_run = True
        if in_run and not line.endswith("\\"):
            break
    return "\n".join(block)


def test_every_image_has_a_dockerfile_and_back() -> None:
    assert {p.name.removesuffix(".Dockerfile") for p in DOCKERFILES} == set(images.IMAGES)
    for name in ("wgref", "wireguard-go", "wireguard-go-debian", "boringtun-cli", "kernel",
                 "wheels", "router"):
        assert name in images.IMAGES


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_lint(path: Path) -> None:
    text = path.read_text()
    code = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    assert code[0] == "FROM debian:bookworm-slim"
    assert sum(ln.startswith("FROM ") for ln in code) == 1
    for tool in TOOLS:
        assert re.search(rf"\b{re.escape(tool)}\b", _tools_block(text)), tool
    runs = re.findall(r"^RUN (?:.*\\\n)*.*$", text, flags=re.M)
    for run in runs:
        if "apt-get install" in run:
            assert "apt-get update" in run and "--no-install-recommends" in run
            assert "-y" in run and "rm -rf /var/lib/apt/lists/*" in run
        if "pip install" in run:
            assert "--no-cache-dir" in run
    assert 'CMD ["sleep", "infinity"]' in code
    for line in code:  # no ADD of URLs, no tabs, lines within 100 characters
        assert not line.startswith("ADD "), line
        assert "\t" not in line and len(line) <= 100, line


def test_the_tools_layer_is_identical_everywhere() -> None:
    blocks = {_tools_block(p.read_text()) for p in DOCKERFILES}
    assert len(blocks) == 1, "the first RUN must be byte-identical so Docker shares the layer"


def test_peer_images_carry_their_program() -> None:
    def text(name: str) -> str:
        return (ROOT / "docker" / f"{name}.Dockerfile").read_text()

    assert "wireguard-go wireguard-tools" in text("wireguard-go-debian")
    for pinned in ("wireguard-go", "boringtun-cli"):  # the host's build, copied in
        assert f"COPY tools/{pinned} /usr/local/bin/{pinned}" in text(pinned)
        assert images.IMAGES[pinned].tools == (pinned,)
    assert "wireguard-tools" in text("kernel") and "wireguard-go" not in text("kernel")
    assert "pip install" in text("wgref") and "COPY wgref" in text("wgref")
    assert "mitmproxy-wireguard" in text("wheels") and "wireguard-requests" in text("wheels")


# -- build contexts and the base image -------------------------------------------------------

def _names(data: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return tar.getnames()


def test_build_context_of_wgref(tmp_path: Path) -> None:
    ca = tmp_path / "proxy.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    data = images.build_context(images.IMAGES["wgref"], cas=[ca])
    names = _names(data)
    assert "Dockerfile" in names and "ca/proxy.crt" in names and "pyproject.toml" in names
    assert "wgref/__init__.py" in names and "README.md" in names
    assert not any("__pycache__" in n or n.startswith(("harness", "results", ".git"))
                   for n in names)
    assert data == images.build_context(images.IMAGES["wgref"], cas=[ca])  # reproducible


def test_build_context_of_a_plain_image() -> None:
    data = images.build_context(images.IMAGES["wireguard-go-debian"], cas=[])
    names = _names(data)
    assert names == ["Dockerfile", "ca"]


@needs_tools("boringtun-cli", "wireguard-go")
@pytest.mark.parametrize("name", ["boringtun-cli", "wireguard-go"])
def test_build_context_carries_the_pinned_build(name: str) -> None:
    tools.install(tools.TOOLS[name])
    with tarfile.open(fileobj=io.BytesIO(images.build_context(images.IMAGES[name], cas=[]))) as tar:
        assert tar.getnames() == ["Dockerfile", "ca", "tools", f"tools/{name}"]
        member = tar.getmember(f"tools/{name}")
        assert member.mode == 0o755
        assert member.size == tools.TOOLS[name].path.stat().st_size


def test_build_context_without_the_pinned_build_says_how(monkeypatch: pytest.MonkeyPatch,
                                                         tmp_path: Path) -> None:
    monkeypatch.setenv("WGREF_TOOLS_CACHE", str(tmp_path))
    with pytest.raises(images.ImageError, match=r"boringtun-cli: boringtun-cli 0.7.1 is not "
                       r"built \(python -m harness tools install --only boringtun-cli"):
        images.build_context(images.IMAGES["boringtun-cli"], cas=[])


def test_apt_mirror_reads_deb822_and_one_line_sources(tmp_path: Path) -> None:
    deb822 = tmp_path / "debian.sources"
    deb822.write_text("Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm "
                      "bookworm-updates\nComponents: main\n\nTypes: deb\nURIs: "
                      "http://mirror.example/debian-security\nSuites: bookworm-security\n"
                      "Components: main\n")
    assert images.apt_mirror([deb822]) == ("http://mirror.example/debian",
                                           "http://mirror.example/debian-security")
    one_line = tmp_path / "sources.list"
    one_line.write_text("# comment\ndeb [arch=amd64] http://m.example/debian/ bookworm main\n")
    assert images.apt_mirror([one_line]) == ("http://m.example/debian", None)
    assert images.apt_mirror([tmp_path / "missing"])[0] == images.DEFAULT_MIRROR
    text = images.sources_list("http://m/debian", "http://m/debian-security")
    assert "bookworm-security" in text and "bookworm-updates" in text


# -- the engine's undo of dockerd's host changes ----------------------------------------------

BEFORE = {"iptables/filter": ["-P INPUT ACCEPT", "-P FORWARD ACCEPT", "-P OUTPUT ACCEPT",
                              "-A INPUT -s 192.0.2.9/32 -j DROP"],
          "iptables/nat": ["-P PREROUTING ACCEPT", "-P POSTROUTING ACCEPT"]}
AFTER = {"iptables/filter": [
    "-P INPUT ACCEPT", "-P FORWARD DROP", "-P OUTPUT ACCEPT", "-N DOCKER", "-N DOCKER-USER",
    "-A INPUT -s 192.0.2.9/32 -j DROP", "-A FORWARD -j DOCKER-USER",
    '-A DOCKER-USER -m comment --comment "a b" -j RETURN'],
    "iptables/nat": ["-P PREROUTING ACCEPT", "-P POSTROUTING ACCEPT", "-N DOCKER",
                     "-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE"]}


def test_undo_commands_remove_what_dockerd_added() -> None:
    cmds = [" ".join(c[5:]) for c in engine.undo_commands(BEFORE, AFTER)]
    assert "-D DOCKER-USER -m comment --comment a b -j RETURN" in cmds
    assert "-D FORWARD -j DOCKER-USER" in cmds
    assert "-D POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE" in cmds
    assert "-X DOCKER" in cmds and "-X DOCKER-USER" in cmds and "-F DOCKER" in cmds
    assert "-P FORWARD ACCEPT" in cmds
    assert not any("192.0.2.9" in c for c in cmds)  # what was there stays
    for table in ("filter", "nat"):  # in each table, rules go before their chains
        mine = [" ".join(c[5:]) for c in engine.undo_commands(BEFORE, AFTER) if c[4] == table]
        deletes = [i for i, c in enumerate(mine) if c.startswith("-D ")]
        chains = [i for i, c in enumerate(mine) if c.startswith("-X ")]
        assert max(deletes) < min(chains)
    assert engine.undo_commands(BEFORE, BEFORE) == []


def test_links_and_tables_to_remove() -> None:
    assert engine.new_links(["lo", "eth0"], ["lo", "eth0", "docker0", "br-1a2b", "vethx",
                                             "wg0"]) == ["docker0", "br-1a2b", "vethx"]
    rules = {"iptables/nat": ["-P PREROUTING ACCEPT", "-P POSTROUTING ACCEPT"],
             "iptables/filter": ["-P FORWARD DROP"], "ip6tables/nat": ["-P INPUT ACCEPT"]}
    assert engine.empty_new_tables(["ip6 nat"], rules) == ["ip nat"]


def test_host_state_round_trip() -> None:
    state = engine.HostState({"net/ipv4/ip_forward": "0"}, BEFORE, ["lo"], ["ip filter"],
                             {"dockerd": 12})
    assert engine.HostState.from_json(state.to_json()) == state


def test_api_answers_is_false_without_a_socket(tmp_path: Path) -> None:
    assert engine.api_answers(str(tmp_path / "none.sock")) is False


# -- CLI and cleanup ---------------------------------------------------------------------------

def test_cli_backend_switch(capsys: pytest.CaptureFixture[str]) -> None:
    args = _parser().parse_args(["run", "--backend", "docker", "--client", "wgref"])
    assert args.backend == "docker"
    assert _parser().parse_args(["run"]).backend == "netns"
    args = _parser().parse_args(["images", "build", "--only", "wgref"])
    assert args.images_command == "build" and args.only == ["wgref"]
    with pytest.raises(SystemExit):
        _parser().parse_args(["run", "--backend", "vagrant"])
    assert "argument --backend: invalid choice: 'vagrant'" in capsys.readouterr().err


def test_leftovers_list_docker_resources() -> None:
    left = cleanup_mod.Leftovers(docker=[("container", "wh1a2b-client", "wh1a2b")])
    assert not left.empty()
    assert left.lines() == ["docker container wh1a2b-client"]


def test_the_engine_listens_on_tcp_only_on_loopback() -> None:
    assert engine.tcp_listener("127.0.0.1:23750") == "tcp://127.0.0.1:23750"
    assert engine.tcp_listener("[::1]:23750") == "tcp://[::1]:23750"
    for bad in ("0.0.0.0:2375", "192.0.2.1:2375", "127.0.0.1", "localhost:2375",
                "127.0.0.1:99999"):
        with pytest.raises(engine.EngineError, match=f"--tcp {re.escape(bad)}: want a loopback"):
            engine.tcp_listener(bad)


def test_docker_host_names_the_engine_and_an_unreachable_one_says_where(
        monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("docker")
    from harness.docker import client

    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:9")  # the discard port: nothing answers
    monkeypatch.delenv("DOCKER_TLS_VERIFY", raising=False)
    client.reset()
    try:
        with pytest.raises(client.DockerUnavailable,
                           match=r"no Docker engine answers at tcp://127\.0\.0\.1:9"):
            client.connect()
    finally:
        client.reset()
    monkeypatch.delenv("DOCKER_HOST")
    assert client.engine_url() == "unix:///var/run/docker.sock"
