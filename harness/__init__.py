"""The interop and throughput harness (topologies, peer drivers, scenarios, reports).

    python -m harness run [--client X] [--server Y] [--scenario Z] [--slow] [--out DIR]
    python -m harness list
    python -m harness cleanup [--prefix whXXXX] [--dry-run] [--force]
    python -m harness images build | list          (the Docker backend's images)
    python -m harness tools install | list | path  (pinned boringtun-cli, current wireguard-go)

Module map: ``naming`` (run prefixes) · ``shell`` (bounded commands, background processes) ·
``topology`` (namespaces, veth, router with nftables NAT/drop, roaming, shaping) ·
``tools`` (boringtun-cli and current wireguard-go built from crates / the Go proxy at pinned
versions into ~/.cache/wgref/tools) ·
``peers`` (drivers: ``uapi`` for wgref/wireguard-go/wireguard-go-debian/boringtun-cli,
``kernel``, ``wheels`` for
mitmproxy-wireguard/wireguard-requests, ``conffile`` for wg-quick-style clients,
``tclient`` for wgref's transparent client) ·
``wgdump`` · ``keys`` · ``traffic``/``echo`` (ping, TCP/UDP echo, iperf3) · ``flood``
(initiation flood) · ``capture`` (dumpcap, key log injection) · ``scenario`` (TOML files) ·
``context``/``steps``/``runner`` (running cells) · ``results``/``report``/``progress``
(results.json, JUnit, Markdown, terminal) · ``cleanup`` · ``registry_files`` (owner files) ·
``docker`` (the Docker backend, ``run --backend docker``: containers as hosts, peer images,
``images build``, the engine script ``python -m harness.docker.engine start|stop``).
"""
