"""The throughput bench: iperf3 through a tunnel between two network namespaces.

    python -m harness bench [--pairs veth,wgref:wireguard-go,...] [--tests tcp-up,...]
                            [--time 5] [--repeat 3] [--udp-rate 1G] [--out DIR]
    python -m harness bench --external [--server-peer wgref] [--wait 300]

Module map: ``model`` (tests, pairs, samples, cells, the run; JSON) · ``stats`` (best, mean,
stdev) · ``iperf`` (command lines, -J parsing) · ``cpu`` (peer CPU time from /proc) · ``lab``
(one pair on the harness topology) · ``runner`` (interleaved repetitions) · ``report``
(bench.json, Markdown, rich table, PNG chart) · ``baselines`` (published figures in
``harness/baselines/*.toml``, context only) · ``external`` (server side for a client from
outside) · ``cli``. See ``harness/bench/README.md``.
"""
