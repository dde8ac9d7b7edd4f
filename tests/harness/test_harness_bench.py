"""The throughput bench without a network: statistics, iperf3 JSON reading, CPU accounting,
baselines, and every output (table, Markdown, JSON, chart) from synthetic results."""

from __future__ import annotations

import io
import ipaddress
import json
import math
from pathlib import Path
from typing import Any

import pytest

from harness.bench import cpu, external, iperf
from harness.bench.baselines import (
    BASELINES_DIR,
    BaselineError,
    load_baselines,
    parse_baseline,
)
from harness.bench.model import (
    DEFAULT_PAIRS,
    ERROR,
    RAW,
    REFERENCE,
    TESTS,
    UNSUPPORTED,
    BenchRun,
    Cell,
    PairSpec,
    Sample,
    counterpart,
    load_bench,
    parse_pair,
)
from harness.bench.report import (
    client_ratio_rows,
    markdown,
    print_table,
    ratio_rows,
    result_header,
    rows,
    write_all,
)
from harness.bench.stats import summarize

# -- statistics -------------------------------------------------------------------------------


def test_summarize_best_mean_sample_stdev() -> None:
    s = summarize([100.0, 200.0, 300.0])
    assert s is not None
    assert (s.n, s.best, s.worst, s.mean) == (3, 300.0, 100.0, 200.0)
    assert s.stdev == pytest.approx(100.0)  # sample stdev (n - 1)
    assert s.cv == pytest.approx(0.5)


def test_summarize_single_empty_and_nonfinite() -> None:
    one = summarize([42.0])
    assert one is not None and one.stdev == 0.0 and one.best == one.mean == 42.0
    assert summarize([]) is None
    assert summarize([math.nan, math.inf]) is None
    mixed = summarize([1.0, math.nan, 3.0])
    assert mixed is not None and mixed.n == 2 and mixed.mean == 2.0


# -- pairs and tests --------------------------------------------------------------------------


def test_parse_pair_forms() -> None:
    assert parse_pair("veth") == PairSpec(None, None)
    assert parse_pair("raw").raw
    assert parse_pair("wgref:wireguard-go") == PairSpec("wgref", "wireguard-go")
    assert parse_pair(" wgref->wgref ") == PairSpec("wgref", "wgref")
    assert parse_pair("wgref->wireguard-go").name == "wgref->wireguard-go"
    with pytest.raises(ValueError):
        parse_pair("wgref")
    with pytest.raises(ValueError):
        parse_pair(":wgref")
    assert parse_pair("boringtun:boringtun") == PairSpec("boringtun-cli", "boringtun-cli")


def test_default_pairs_cover_the_issue() -> None:
    names = [p.name for p in DEFAULT_PAIRS]
    assert names[0] == RAW
    for wanted in (REFERENCE, "wgref->wireguard-go", "wireguard-go->wgref", "wgref->wgref",
                   "wireguard-go->mitmproxy-wireguard", "boringtun-cli->boringtun-cli",
                   "wgref->boringtun-cli", "boringtun-cli->wgref"):
        assert wanted in names


def test_client_argv() -> None:
    argv = iperf.client_argv(TESTS["tcp-down-p4"], "198.19.77.1", 5)
    assert argv[:3] == ["iperf3", "-c", "198.19.77.1"]
    assert "-J" in argv and "-R" in argv and argv[argv.index("-P") + 1] == "4"
    assert argv[argv.index("-t") + 1] == "5"
    udp = iperf.client_argv(TESTS["udp-up"], "x", 2, udp_rate="500M")
    assert udp[udp.index("-b") + 1] == "500M" and "-u" in udp and "-R" not in udp
    assert "-P" not in iperf.client_argv(TESTS["tcp-up"], "x", 2)
    server = iperf.server_argv(bind="198.19.77.1", json_out=True)
    assert "--one-off" in server and "-J" in server and "198.19.77.1" in server


# -- iperf3 JSON --------------------------------------------------------------------------------


def tcp_json(received_bps: float, sent_bps: float = 0.0, retransmits: int = 3) -> str:
    return "# some log line\n" + json.dumps({"start": {}, "end": {
        "sum_sent": {"bytes": 1000, "seconds": 2.0, "bits_per_second": sent_bps or received_bps,
                     "retransmits": retransmits},
        "sum_received": {"bytes": int(received_bps * 2 / 8), "seconds": 2.0,
                         "bits_per_second": received_bps}}})


def test_fill_sample_tcp() -> None:
    sample = iperf.fill_sample(Sample(1), iperf.load_json(tcp_json(500e6, 510e6)), "tcp")
    assert sample.ok and sample.mbps == pytest.approx(500.0)
    assert sample.sent_mbps == pytest.approx(510.0) and sample.retransmits == 3
    assert sample.received_bytes == 125_000_000 and sample.lost_percent is None


def test_fill_sample_udp_loss() -> None:
    data = {"end": {"sum_sent": {"bits_per_second": 1e9},
                    "sum_received": {"bytes": 50_000_000, "seconds": 1.0,
                                     "bits_per_second": 4e8, "lost_percent": 60.0,
                                     "jitter_ms": 0.2}}}
    sample = iperf.fill_sample(Sample(2), data, "udp")
    assert sample.ok and sample.mbps == pytest.approx(400.0)
    assert sample.lost_percent == 60.0 and sample.jitter_ms == 0.2


def test_fill_sample_errors() -> None:
    failed = iperf.fill_sample(Sample(1), {"error": "unable to connect to server"}, "tcp")
    assert not failed.ok and failed.error == "unable to connect to server"
    empty = iperf.fill_sample(Sample(1), {"end": {}}, "tcp")
    assert not empty.ok and empty.error
    with pytest.raises(ValueError):
        iperf.load_json("iperf3: error - no JSON here")


def test_describe_server_side() -> None:
    data = {"start": {"test_start": {"protocol": "TCP", "num_streams": 4, "duration": 10,
                                     "reverse": 1},
                      "connected": [{"remote_host": "198.19.77.2"}]},
            "end": {"sum_sent": {"bits_per_second": 3e8},
                    "sum_received": {"bits_per_second": 1e6}}}
    info = iperf.describe_server(data)
    assert info["protocol"] == "tcp" and info["streams"] == 4
    assert info["direction"].startswith("download")
    assert info["mbps_at_server"] == pytest.approx(300.0)
    assert info["remote"] == "198.19.77.2" and info["error"] is None


# -- CPU accounting -----------------------------------------------------------------------------


def stat_line(pid: int, comm: str, session: int, utime: int, stime: int) -> str:
    # pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime
    return f"{pid} ({comm}) S 1 {session} {session} 0 -1 0 0 0 0 0 {utime} {stime} 0 0 20 0\n"


def test_parse_stat_with_awkward_names() -> None:
    assert cpu.parse_stat(stat_line(7, "a) b (c", 42, 100, 50)) == (42, 100, 50)


def test_session_cpu_seconds(tmp_path: Path) -> None:
    for pid, session, utime, stime in ((10, 10, 100, 50), (11, 10, 30, 20), (12, 99, 500, 0)):
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "stat").write_text(stat_line(pid, "peer", session, utime, stime))
    (tmp_path / "self").mkdir()
    ticks = cpu.clock_ticks()
    assert cpu.session_cpu_seconds(10, tmp_path) == pytest.approx(200 / ticks)
    assert cpu.session_cpu_seconds(1234, tmp_path) == 0.0
    assert cpu.process_cpu_seconds(12, tmp_path) == pytest.approx(500 / ticks)
    assert cpu.process_cpu_seconds(13, tmp_path) is None


def test_host_cpu_ticks_and_steal(tmp_path: Path) -> None:
    # user nice system idle iowait irq softirq steal guest guest_nice
    (tmp_path / "stat").write_text("cpu  100 0 50 800 0 0 10 40 7 0\ncpu0 1 2 3 4 5 6 7 8 9 0\n")
    assert cpu.host_cpu_ticks(tmp_path) == (1000, 40)  # guest time is not counted twice
    assert cpu.steal_percent((1000, 40), (2000, 190)) == 15.0
    assert cpu.steal_percent((1000, 40), (1000, 40)) is None  # no time passed
    assert cpu.steal_percent(None, (2000, 190)) is None
    (tmp_path / "stat").write_text("intr 1 2 3\n")
    assert cpu.host_cpu_ticks(tmp_path) is None
    assert cpu.host_cpu_ticks(tmp_path / "missing") is None
    ticks = cpu.host_cpu_ticks()  # this machine's
    assert ticks is not None and 0 <= ticks[1] <= ticks[0]


def test_disturbed_runs_are_measured_again(monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: Path) -> None:
    from harness.bench import runner

    steals = iter([12.0, 30.0, 1.0, 40.0, 50.0, 60.0])
    suffixes: list[str] = []

    def fake_measure(lab: Any, test: Any, repetition: int, options: Any, raw_dir: Path,
                     suffix: str = "") -> Sample:
        suffixes.append(suffix)
        return Sample(repetition, mbps=100.0, received_bytes=1, steal_percent=next(steals))

    class Lab:
        pair = PairSpec("wgref", "wireguard-go")

    monkeypatch.setattr(runner, "measure", fake_measure)
    options = runner.BenchOptions(pairs=[], tests=[], out=tmp_path, max_steal=5.0, remeasure=2)
    lines: list[str] = []
    cell = Cell("wgref->wireguard-go", "tcp-up")
    test = TESTS["tcp-up"]
    runner.measure_counted(Lab(), cell, test, 1, options, tmp_path, lines.append)  # type: ignore[arg-type]
    # 12 % and 30 % are set aside, 1 % counts
    assert [s.steal_percent for s in cell.good] == [1.0]
    assert [s.set_aside for s in cell.set_aside] == [
        "host CPU steal 12.0 % > 5 %", "host CPU steal 30.0 % > 5 %"]
    assert suffixes == ["", "-again1", "-again2"]
    assert "measured again" in lines[0] and "measured again" not in lines[2]
    runner.measure_counted(Lab(), cell, test, 2, options, tmp_path, lines.append)  # type: ignore[arg-type]
    # never quiet: the last attempt counts anyway, with its steal on record
    assert [s.steal_percent for s in cell.good] == [1.0, 60.0]
    assert len(cell.set_aside) == 4 and not cell.failed_runs
    data = cell.to_json()
    assert data["set_aside_runs"] == 4 and data["failed_runs"] == 0
    assert data["throughput_mbps"]["n"] == 2
    # off: every run counts
    assert runner.disturbed(Sample(1, mbps=1.0, steal_percent=99.0), None) is None
    assert runner.disturbed(Sample(1, error="x", steal_percent=99.0), 5.0) is None
    assert runner.disturbed(Sample(1, mbps=1.0, steal_percent=5.0), 5.0) is None


# -- baselines -----------------------------------------------------------------------------------


def test_shipped_baseline() -> None:
    loaded = load_baselines()
    assert [b.name for b in loaded] == ["windows-i3-3217u"]
    base = loaded[0]
    assert not base.comparable and "context only" in base.label
    assert "i3-3217U" in base.label and base.source and base.description
    figures = {r.name.split(" (")[0]: (r.upload, r.download) for r in base.results}
    assert figures["WireSock VPN client 1.0.46"] == (879, 892)
    assert figures["WireGuard for Windows"] in ((892, 719), (288, 325))
    assert {(r.upload, r.download) for r in base.results} == {
        (879, 892), (892, 719), (288, 325), (435, 284)}
    assert (BASELINES_DIR / "windows-i3-3217u.toml").is_file()


GOOD: dict[str, Any] = {
    "name": "x", "label": "foreign", "source": "s", "description": "d", "hardware": "h",
    "method": "m", "unit": "Mbit/s", "result": [{"name": "a", "upload": 1, "download": 2}]}


def test_parse_baseline_errors() -> None:
    assert parse_baseline(GOOD).results[0].download == 2.0
    with pytest.raises(BaselineError, match="source"):
        parse_baseline({**GOOD, "source": ""})
    with pytest.raises(BaselineError, match="result"):
        parse_baseline({**GOOD, "result": []})
    with pytest.raises(BaselineError, match="result 1"):
        parse_baseline({**GOOD, "result": [{"name": "a", "upload": "fast"}]})
    with pytest.raises(BaselineError, match="negative"):
        parse_baseline({**GOOD, "result": [{"name": "a", "upload": -1, "download": 1}]})
    with pytest.raises(BaselineError, match="comparable"):
        parse_baseline({**GOOD, "comparable": "no"})


# -- results and outputs -------------------------------------------------------------------------


def synthetic() -> BenchRun:
    pairs = [RAW, REFERENCE, "wgref->wireguard-go", "wgref->wgref",
             "wireguard-go->mitmproxy-wireguard"]
    tests = ["tcp-up", "udp-up"]
    run = BenchRun(started="2026-01-01T00:00:00+00:00", ended="2026-01-01T00:01:00+00:00",
                   seconds=60.0, pairs=pairs, tests=tests,
                   settings={"seconds": 2, "repeat": 3, "udp_rate": "1G"},
                   peers={"wgref": "0.1", "wireguard-go": "v0.0.2022"},
                   baselines=[b.to_json() for b in load_baselines()])
    rates = {RAW: 10000.0, REFERENCE: 600.0, "wgref->wireguard-go": 300.0,
             "wgref->wgref": 150.0}
    for pair, base in rates.items():
        for test in tests:
            cell = Cell(pair, test)
            for rep, factor in enumerate((0.9, 1.0, 1.1), 1):
                mbps = base * factor
                s = Sample(rep, mbps=mbps, received_bytes=int(mbps * 1e6 * 2 / 8), seconds=2.0,
                           lost_percent=10.0 if test == "udp-up" else None)
                if pair != RAW:
                    s.client_cpu, s.server_cpu = 1.0, 0.5
                cell.samples.append(s)
            run.cells.append(cell)
    broken = run.cell("wgref->wgref", "udp-up")
    assert broken is not None
    broken.samples.append(Sample(4, error="iperf3 said no"))
    for test in tests:
        run.cells.append(Cell("wireguard-go->mitmproxy-wireguard", test, UNSUPPORTED,
                              "no interface: iperf3 cannot run behind it"))
    return run


def test_cell_summaries_and_efficiency() -> None:
    run = synthetic()
    cell = run.cell("wgref->wireguard-go", "tcp-up")
    assert cell is not None
    thr = cell.throughput()
    assert thr is not None and thr.mean == pytest.approx(300.0) and thr.best == 330.0
    eff = cell.efficiency()
    # 300 Mbit/s for 2 s = 600 Mbit over 1.5 CPU-s
    assert eff is not None and eff.mean == pytest.approx(400.0)
    broken = run.cell("wgref->wgref", "udp-up")
    assert broken is not None and len(broken.good) == 3 and len(broken.samples) == 4
    raw = run.cell(RAW, "tcp-up")
    assert raw is not None and raw.efficiency() is None and raw.cpu("client") is None


def test_ratios_against_wireguard_go_in_the_same_run() -> None:
    run = synthetic()
    ratios = run.ratios()
    assert set(ratios) == {"wgref->wireguard-go", "wgref->wgref"}
    assert ratios["wgref->wireguard-go"]["tcp-up"] == pytest.approx(0.5)
    assert ratios["wgref->wgref"]["udp-up"] == pytest.approx(0.25)
    assert run.ratio("wireguard-go->mitmproxy-wireguard", "tcp-up") is None
    assert run.ratio(REFERENCE, "tcp-up", RAW) == pytest.approx(0.06)


def test_ratios_against_each_reference_peer() -> None:
    """With boringtun-cli's own pair in the run, every wgref pair whose counterpart (the
    reference peer in wgref's place) was measured gets a ratio to it; the table gains a
    column per reference."""
    run = synthetic()
    bt = "boringtun-cli->boringtun-cli"
    run.pairs += [bt, "wgref->boringtun-cli"]
    for pair, mbps in ((bt, 400.0), ("wgref->boringtun-cli", 200.0)):
        for test in run.tests:
            run.cells.append(Cell(pair, test, samples=[Sample(1, mbps=mbps,
                                                              received_bytes=1000)]))
    assert counterpart("wgref->wgref", "boringtun-cli") == bt
    assert counterpart("wgref->boringtun-cli", "boringtun-cli") == bt
    assert run.reference_peers() == ["wireguard-go", "boringtun-cli"]
    refs = run.reference_ratios()
    assert set(refs["boringtun-cli"]) == {"wgref->boringtun-cli", "wgref->wgref"}
    assert refs["boringtun-cli"]["wgref->boringtun-cli"]["tcp-up"] == pytest.approx(0.5)
    assert refs["boringtun-cli"]["wgref->wgref"]["tcp-up"] == pytest.approx(150.0 / 400.0)
    assert "wgref->boringtun-cli" not in refs["wireguard-go"]  # no wireguard-go->boringtun-cli
    head = result_header(run)
    assert head[-3:] == ["vs wg-go", "vs boringtun", "of veth"]
    by_key = {(r[0], r[1]): r for r in rows(run)}
    assert by_key[("boringtun-cli → boringtun-cli", "tcp-up")][10:12] == ["", "ref"]
    assert by_key[("wgref → wgref", "tcp-up")][10:12] == ["0.25×", "0.38×"]
    assert "## wgref ÷ boringtun-cli (same run)" in markdown(run)
    assert run.to_json()["ratios_vs_reference"]["boringtun-cli"] == refs["boringtun-cli"]


def test_json_round_trip(tmp_path: Path) -> None:
    run = synthetic()
    paths = write_all(run, tmp_path, chart=False)
    data = json.loads(paths["json"].read_text())
    assert data["pair_order"] == run.pairs and data["test_order"] == run.tests
    assert data["ratios_vs_wireguard_go"]["wgref->wireguard-go"]["tcp-up"] == pytest.approx(0.5)
    flat = {(r["label"], r["test"]): r for r in data["results"]}
    row = flat[("wgref->wireguard-go", "tcp-up")]
    assert row["client"] == "wgref" and row["server"] == "wireguard-go"
    assert row["mean"] == pytest.approx(300.0) and len(row["samples"]) == 3
    assert flat[("raw veth (no tunnel)", "tcp-up")]["client"] == ""
    assert all(b["comparable"] is False and "context only" in b["note"]
               for b in data["baselines"])
    assert len(data["baselines"]) == 8  # 4 clients x upload/download
    back = load_bench(paths["json"])
    assert back.pairs == run.pairs and len(back.cells) == len(run.cells)
    assert back.ratios() == run.ratios()
    assert back.baselines == json.loads(json.dumps(run.baselines))
    assert back.baselines[0]["path"] == "harness/baselines/windows-i3-3217u.toml"


def test_rows_and_markdown() -> None:
    run = synthetic()
    table = rows(run)
    assert len(table) == 8  # 4 measured pairs x 2 tests; the unsupported pair is listed apart
    by_key = {(r[0], r[1]): r for r in table}
    assert by_key[("wgref → wireguard-go", "tcp-up")][10] == "0.50×"
    assert by_key[("wireguard-go → wireguard-go", "tcp-up")][10] == "ref"
    assert by_key[("raw veth (no tunnel)", "tcp-up")][3] == "11,000"
    header, body = ratio_rows(run)
    assert header[1:] == run.tests and len(body) == 2
    text = markdown(run)
    assert "| wgref → wireguard-go | tcp-up | 3 |" in text
    assert "unsupported" in text and "iperf3 cannot run behind it" in text
    assert "iperf3 said no" in text  # the failed run is listed
    assert "context only" in text and "Not comparable" in text
    assert "| WireSock VPN client 1.0.46 | BoringTun (user space) | 879 | 892 |" in text


def test_congestion_control_in_the_header(monkeypatch: pytest.MonkeyPatch) -> None:
    run = synthetic()
    run.host = {"machine": "x86_64", "kernel": "6.1", "cpus": "2",
                "tcp_congestion_control": "bbr"}
    assert "2 CPUs, TCP congestion control bbr. iperf3" in markdown(run)
    del run.host["tcp_congestion_control"]  # a bench.json from before it was recorded
    assert "2 CPUs. iperf3" in markdown(run)
    from harness.bench import runner

    wanted = Path("/proc/sys/net/ipv4/tcp_congestion_control")
    if wanted.exists():
        assert runner._congestion_control() == wanted.read_text().strip()
    monkeypatch.setattr(runner, "Path", lambda _p: Path("/nonexistent/tcp_congestion_control"))
    assert runner._congestion_control() == "?"


def test_steal_in_the_outputs() -> None:
    run = synthetic()
    run.settings["max_steal_percent"] = 5.0
    for cell in run.cells:
        for sample in cell.samples:
            sample.steal_percent = 2.0
    cell = run.cell("wgref->wireguard-go", "tcp-up")
    assert cell is not None
    cell.samples.append(Sample(1, mbps=50.0, received_bytes=1, steal_percent=25.0,
                               set_aside="host CPU steal 25.0 % > 5 %"))
    assert cell.throughput() is not None and cell.throughput().n == 3  # type: ignore[union-attr]
    note = run.steal_note()
    assert note == ("host CPU steal during the counted runs: mean 2.0 %, at most 2.0 %; "
                    "1 run measured again (steal over 5 %)")
    text = markdown(run)
    assert "## Runs measured again" in text
    assert "* wgref → wireguard-go tcp-up run 1: 50.0 Mbit/s, host CPU steal 25.0 % > 5 %" in text
    failed = text.split("## Failed runs")[1].split("##")[0]
    assert "iperf3 said no" in failed and "25.0" not in failed
    from rich.console import Console

    buffer = io.StringIO()
    print_table(run, Console(file=buffer, width=200, color_system=None))
    assert "1 run measured again" in buffer.getvalue()


def test_terminal_table() -> None:
    from rich.console import Console

    buffer = io.StringIO()
    print_table(synthetic(), Console(file=buffer, width=200, color_system=None))
    out = buffer.getvalue()
    assert "wgref → wireguard-go" in out and "0.50×" in out
    assert "unsupported" in out and "mitmproxy-wireguard" in out


def test_error_cell_row() -> None:
    run = synthetic()
    cell = run.cell("wgref->wgref", "tcp-up")
    assert cell is not None
    cell.samples = [Sample(1, error="boom")]
    cell.status, cell.reason = ERROR, "boom"
    row = next(r for r in rows(run) if r[0] == "wgref → wgref" and r[1] == "tcp-up")
    assert row[3] == "error" and "boom" in row[4]


CLIENT_PAIR, INTERFACE_PAIR = "wgref-client->wireguard-go", "wgref->wireguard-go"


def client_beside_interface() -> BenchRun:
    """The transparent client and wgref's TUN interface to the same server, with repetitions
    that cannot be paired: the client's run 2 failed, run 4 ran on the interface only, and the
    interface's first try at run 2 was set aside (steal) and measured again."""
    run = BenchRun(started="2026-01-01T00:00:00+00:00", pairs=[INTERFACE_PAIR, CLIENT_PAIR],
                   tests=["tcp-up", "tcp-down"], settings={"seconds": 2, "repeat": 4})
    interface_up = [Sample(1, mbps=500.0), Sample(2, mbps=100.0, set_aside="steal 30 %"),
                    Sample(2, mbps=400.0), Sample(3, mbps=600.0), Sample(4, mbps=500.0)]
    client_up = [Sample(1, mbps=450.0), Sample(2, error="iperf3 said no"),
                 Sample(3, mbps=560.0)]
    run.cells += [Cell(INTERFACE_PAIR, "tcp-up", samples=interface_up),
                  Cell(CLIENT_PAIR, "tcp-up", samples=client_up),
                  Cell(INTERFACE_PAIR, "tcp-down", samples=[Sample(1, mbps=800.0)]),
                  Cell(CLIENT_PAIR, "tcp-down", samples=[Sample(1, mbps=400.0)])]
    return run


def test_client_ratios_paired_by_repetition() -> None:
    run = client_beside_interface()
    runs = run.client_ratio_runs()
    assert set(runs) == {CLIENT_PAIR}
    # runs 1 and 3 only: 450/500 and 560/600 (not 560/100: the set-aside try is not counted)
    assert runs[CLIENT_PAIR]["tcp-up"] == pytest.approx([0.9, 560 / 600])
    assert runs[CLIENT_PAIR]["tcp-down"] == pytest.approx([0.5])
    # the headline is still the ratio of the means, over every counted run of each side
    assert run.client_ratios()[CLIENT_PAIR]["tcp-up"] == pytest.approx(505 / 500)


def test_client_ratio_runs_without_the_interface_pair() -> None:
    run = client_beside_interface()
    run.pairs.remove(INTERFACE_PAIR)
    assert run.client_ratio_runs() == {}


def test_client_ratio_cells_show_the_paired_range() -> None:
    run = client_beside_interface()
    header, body = client_ratio_rows(run)
    assert header == ["wgref-client ÷ wgref (same server)", "tcp-up", "tcp-down"]
    # one paired repetition in tcp-down: no range to show
    assert body == [["wgref-client → wireguard-go", "1.01× (0.90–0.93)", "0.50×"]]
    section = markdown(run).split("## wgref-client ÷ wgref's TUN interface")[1].split("##")[0]
    assert "| wgref-client → wireguard-go | 1.01× (0.90–0.93) | 0.50× |" in section
    assert "lowest and highest ratio of a single repetition" in section and "±" not in section
    from rich.console import Console

    buffer = io.StringIO()
    print_table(run, Console(file=buffer, width=200, color_system=None))
    out = buffer.getvalue()
    assert "(mean, same run; per-repetition min–max)" in out and "1.01× (0.90–0.93)" in out


def test_client_ratio_runs_in_the_json(tmp_path: Path) -> None:
    run = client_beside_interface()
    paths = write_all(run, tmp_path, chart=False)
    data = json.loads(paths["json"].read_text())
    assert data["client_ratio_runs"] == {CLIENT_PAIR: {"tcp-up": [0.9, 0.933],
                                                      "tcp-down": [0.5]}}
    assert data["ratios_client_vs_interface"][CLIENT_PAIR]["tcp-up"] == pytest.approx(1.01)
    # a bench.json from before the paired ratios: they are recomputed from its samples
    del data["client_ratio_runs"]
    paths["json"].write_text(json.dumps(data))
    back = load_bench(paths["json"])
    assert back.client_ratio_runs() == run.client_ratio_runs()
    assert "1.01× (0.90–0.93)" in markdown(back)


def test_chart_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    paths = write_all(synthetic(), tmp_path)
    png = paths["chart"].read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 20_000


def test_chart_without_results_or_baselines(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    run = BenchRun(started="2026-01-01T00:00:00+00:00", pairs=[RAW], tests=["tcp-up"],
                   settings={"seconds": 1, "repeat": 1})
    run.cells.append(Cell(RAW, "tcp-up", ERROR, "down"))
    paths = write_all(run, tmp_path)
    assert paths["chart"].read_bytes().startswith(b"\x89PNG")


# -- external client mode ------------------------------------------------------------------------


def test_pick_subnet_avoids_used_networks() -> None:
    used = [ipaddress.IPv4Network("0.0.0.0/0"), ipaddress.IPv4Network("198.18.248.0/23")]
    net = external.pick_subnet("wh0000", used)
    assert net.prefixlen == 30 and net.subnet_of(external.SUBNETS)
    assert not net.overlaps(used[1])
    everything = [external.SUBNETS]
    with pytest.raises(external.ExternalError):
        external.pick_subnet("wh0000", everything)


def test_client_conf_is_wg_quick() -> None:
    conf = external.client_conf("PRIV", "PUB", "198.18.249.2:51820")
    lines = [line for line in conf.splitlines() if line and not line.startswith("#")]
    assert lines[0] == "[Interface]" and "PrivateKey = PRIV" in lines
    assert "Address = 198.19.77.2/32" in lines and "[Peer]" in lines
    assert "Endpoint = 198.18.249.2:51820" in lines and "AllowedIPs = 198.19.77.1/32" in lines
    assert "DNS" not in conf


# -- command line ---------------------------------------------------------------------------------


def test_cli_has_bench_subcommand() -> None:
    from harness.cli import _parser

    args = _parser().parse_args(["bench", "--pairs", "veth,wgref:wgref", "--time", "2",
                                 "--repeat", "1", "--tests", "tcp-up"])
    assert args.command == "bench" and args.time == 2 and args.repeat == 1
    assert args.pairs == ["veth,wgref:wgref"] and not args.external and args.wait == 300.0


def test_from_json_rerenders_without_root(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    from harness.bench.cli import main

    write_all(synthetic(), tmp_path, chart=False)
    assert main(["--from-json", str(tmp_path / "bench.json")]) == 0
    assert (tmp_path / "bench.png").read_bytes().startswith(b"\x89PNG")
    assert "wgref → wireguard-go" in (tmp_path / "bench.md").read_text()
    assert "0.50×" in capsys.readouterr().out
    capsys.readouterr()
    assert main(["--from-json", str(tmp_path / "missing.json")]) == 2
    assert f"cannot read {tmp_path / 'missing.json'}" in capsys.readouterr().err
