"""What the bench measures and what it records: tests, pairs, samples (one iperf3 run each),
cells (a pair x a test) and the whole run, as plain dataclasses that round-trip through JSON."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .stats import Summary, summarize

OK, ERROR, UNSUPPORTED = "ok", "error", "unsupported"
RAW = "veth"  # the pair name of the raw path (no tunnel)
REFERENCE = "wireguard-go->wireguard-go"  # what wgref's ratios are measured against
# The peers wgref is measured against: each wgref pair over the same test with the reference
# peer in wgref's place (wgref->wgref over R->R, wgref->R over R->R), in the same run.
REFERENCE_PEERS = ("wireguard-go", "boringtun-cli")
WGREF = "wgref"
CLIENT = "wgref-client"  # the transparent client: measured against wgref's TUN interface


@dataclass(frozen=True, slots=True)
class TestSpec:
    """One iperf3 test: TCP or UDP, upload (client sends) or download (-R), streams (-P)."""

    name: str
    protocol: str  # tcp | udp
    reverse: bool
    streams: int
    label: str

    @property
    def direction(self) -> str:
        return "download" if self.reverse else "upload"


TESTS: dict[str, TestSpec] = {t.name: t for t in (
    TestSpec("tcp-up", "tcp", False, 1, "TCP upload, 1 stream"),
    TestSpec("tcp-down", "tcp", True, 1, "TCP download (-R), 1 stream"),
    TestSpec("tcp-up-p4", "tcp", False, 4, "TCP upload, 4 streams (-P 4)"),
    TestSpec("tcp-down-p4", "tcp", True, 4, "TCP download (-R), 4 streams (-P 4)"),
    TestSpec("udp-up", "udp", False, 1, "UDP upload at the target rate (-u -b)"),
    TestSpec("udp-down", "udp", True, 1, "UDP download at the target rate (-u -b -R)"),
)}
DEFAULT_TESTS = ("tcp-up", "tcp-down", "tcp-up-p4", "tcp-down-p4", "udp-up")


@dataclass(frozen=True, slots=True)
class PairSpec:
    """A client (runs `iperf3 -c`, initiates the handshake) and a server (`iperf3 -s`, answers
    it); both None for the raw veth path."""

    client: str | None
    server: str | None

    @property
    def raw(self) -> bool:
        return self.client is None

    @property
    def name(self) -> str:
        return RAW if self.client is None else f"{self.client}->{self.server}"

    @property
    def label(self) -> str:
        return "raw veth (no tunnel)" if self.client is None else f"{self.client} → {self.server}"

    def involves(self, peer: str) -> bool:
        return peer in (self.client, self.server)


DEFAULT_PAIRS = (
    PairSpec(None, None),
    PairSpec("wireguard-go", "wireguard-go"),
    PairSpec("boringtun-cli", "boringtun-cli"),
    PairSpec("wgref", "wireguard-go"),
    PairSpec("wireguard-go", "wgref"),
    PairSpec("wgref", "boringtun-cli"),
    PairSpec("boringtun-cli", "wgref"),
    PairSpec("wgref", "wgref"),
    PairSpec("wireguard-go", "mitmproxy-wireguard"),
    PairSpec(CLIENT, "wireguard-go"),
)
ALIASES = {"boringtun": "boringtun-cli"}  # short names accepted in --pairs


def interface_pair(pair: str) -> str | None:
    """``wgref->PEER`` for a ``wgref-client->PEER`` pair (the same server, wgref's own TUN
    interface as the client): what the transparent client's cost is measured against."""
    client, sep, server = pair.partition("->")
    return f"wgref->{server}" if sep and client == CLIENT else None


def parse_pair(text: str) -> PairSpec:
    """``veth`` (or ``raw``), ``CLIENT:SERVER`` or ``CLIENT->SERVER``."""
    text = text.strip()
    if text in (RAW, "raw", "raw-veth"):
        return PairSpec(None, None)
    for sep in ("->", ":"):
        if sep in text:
            client, _, server = (part.strip() for part in text.partition(sep))
            if client and server:
                return PairSpec(ALIASES.get(client, client), ALIASES.get(server, server))
    raise ValueError(f"bad pair {text!r}: use veth, CLIENT:SERVER or CLIENT->SERVER")


def counterpart(pair: str, peer: str) -> str:
    """``pair`` with ``peer`` in wgref's place (wgref->wgref, "boringtun-cli" ->
    boringtun-cli->boringtun-cli)."""
    client, _, server = pair.partition("->")
    return "->".join(peer if name == WGREF else name for name in (client, server))


@dataclass(slots=True)
class Sample:
    """One iperf3 run. ``mbps`` is what the receiver got (Mbit/s, 10^6 bit/s)."""

    repetition: int
    mbps: float = 0.0
    sent_mbps: float = 0.0
    seconds: float = 0.0
    received_bytes: int = 0
    lost_percent: float | None = None  # UDP only
    jitter_ms: float | None = None  # UDP only
    retransmits: int | None = None  # TCP only (sender side)
    client_cpu: float | None = None  # CPU-seconds of the client peer's processes in the run
    server_cpu: float | None = None
    tunnel_bytes: int | None = None  # encrypted bytes the server peer counted (wg show)
    steal_percent: float | None = None  # the host's CPU steal during the run (/proc/stat)
    set_aside: str | None = None  # why the run was measured again and is not counted
    error: str | None = None
    raw: str | None = None  # the iperf3 JSON file, relative to the run folder

    @property
    def ok(self) -> bool:
        return self.error is None and self.mbps > 0 and self.set_aside is None

    @property
    def peer_cpu(self) -> float | None:
        if self.client_cpu is None or self.server_cpu is None:
            return None
        return self.client_cpu + self.server_cpu

    @property
    def mbit_per_cpu_second(self) -> float | None:
        """Megabits delivered per CPU-second the two peers used."""
        cpu = self.peer_cpu
        if cpu is None or cpu <= 0 or not self.ok:
            return None
        return self.received_bytes * 8 / 1e6 / cpu


@dataclass(slots=True)
class Cell:
    pair: str
    test: str
    status: str = OK  # ok | error | unsupported
    reason: str = ""
    samples: list[Sample] = field(default_factory=list)

    @property
    def good(self) -> list[Sample]:
        return [s for s in self.samples if s.ok]

    @property
    def failed_runs(self) -> list[Sample]:
        """Runs that failed (not those set aside to be measured again)."""
        return [s for s in self.samples if not s.ok and s.set_aside is None]

    @property
    def set_aside(self) -> list[Sample]:
        return [s for s in self.samples if s.set_aside is not None]

    def throughput(self) -> Summary | None:
        return summarize([s.mbps for s in self.good])

    def loss(self) -> Summary | None:
        return summarize([s.lost_percent for s in self.good if s.lost_percent is not None])

    def cpu(self, role: str) -> Summary | None:
        values = [getattr(s, f"{role}_cpu") for s in self.good]
        return summarize([v for v in values if v is not None])

    def efficiency(self) -> Summary | None:
        return summarize([v for v in (s.mbit_per_cpu_second for s in self.good)
                          if v is not None])

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for name, summary in (("throughput_mbps", self.throughput()),
                              ("udp_lost_percent", self.loss()),
                              ("client_cpu_seconds", self.cpu("client")),
                              ("server_cpu_seconds", self.cpu("server")),
                              ("mbit_per_cpu_second", self.efficiency())):
            data[name] = summary.to_json() if summary else None
        data["failed_runs"] = len(self.failed_runs)
        data["set_aside_runs"] = len(self.set_aside)
        return data


@dataclass(slots=True)
class BenchRun:
    started: str
    ended: str = ""
    seconds: float = 0.0
    command: list[str] = field(default_factory=list)
    host: dict[str, str] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    topology: str = ""
    pairs: list[str] = field(default_factory=list)
    tests: list[str] = field(default_factory=list)
    peers: dict[str, str] = field(default_factory=dict)  # name -> version
    unsupported: dict[str, str] = field(default_factory=dict)  # pair -> reason
    prefixes: dict[str, str] = field(default_factory=dict)  # pair -> run prefix of its netns
    cells: list[Cell] = field(default_factory=list)
    baselines: list[dict[str, Any]] = field(default_factory=list)
    interrupted: bool = False

    def cell(self, pair: str, test: str) -> Cell | None:
        for cell in self.cells:
            if cell.pair == pair and cell.test == test:
                return cell
        return None

    def mean(self, pair: str, test: str) -> float | None:
        cell = self.cell(pair, test)
        summary = cell.throughput() if cell else None
        return summary.mean if summary else None

    def ratio(self, pair: str, test: str, reference: str = REFERENCE) -> float | None:
        """Mean throughput of ``pair`` over that of ``reference`` for one test (same run)."""
        mine, theirs = self.mean(pair, test), self.mean(reference, test)
        if mine is None or not theirs:
            return None
        return mine / theirs

    def ratio_vs(self, pair: str, test: str, peer: str) -> float | None:
        """``pair`` (with wgref in it) over the same test with ``peer`` in wgref's place."""
        if WGREF not in pair.split("->"):
            return None
        return self.ratio(pair, test, counterpart(pair, peer))

    def reference_peers(self) -> list[str]:
        """The reference peers whose own pair (R->R) this run measured."""
        return [p for p in REFERENCE_PEERS if f"{p}->{p}" in self.pairs]

    def ratios(self, peer: str = "wireguard-go") -> dict[str, dict[str, float | None]]:
        """pair -> test -> mean(pair) / mean(the pair with ``peer`` in wgref's place), for
        every pair with wgref in it whose counterpart was measured (same run, interleaved)."""
        out: dict[str, dict[str, float | None]] = {}
        for pair in self.pairs:
            if WGREF not in pair.split("->") or counterpart(pair, peer) not in self.pairs:
                continue
            out[pair] = {test: self.ratio_vs(pair, test, peer) for test in self.tests}
        return out

    def reference_ratios(self) -> dict[str, dict[str, dict[str, float | None]]]:
        """reference peer -> :meth:`ratios` against it, for each reference pair measured."""
        return {peer: self.ratios(peer) for peer in self.reference_peers()}

    def client_pairs(self) -> dict[str, str]:
        """``wgref-client->PEER`` -> ``wgref->PEER`` for every client pair whose interface
        pair ran too (same run, interleaved)."""
        return {pair: reference for pair in self.pairs
                if (reference := interface_pair(pair)) is not None and reference in self.pairs}

    def client_ratios(self) -> dict[str, dict[str, float | None]]:
        """``wgref-client->PEER`` ÷ ``wgref->PEER`` per test (ratio of the means), for every
        client pair whose interface pair ran too: the transparent client's cost."""
        return {pair: {test: self.ratio(pair, test, reference) for test in self.tests}
                for pair, reference in self.client_pairs().items()}

    def client_ratio_runs(self) -> dict[str, dict[str, list[float]]]:
        """pair -> test -> client ÷ interface of each repetition, in repetition order.

        The bench interleaves repetition -> test -> pair, so a repetition's client run and
        interface run were measured side by side under the same load: the spread of these
        ratios is the machine's noise on the ratio itself, which the stdev of either side in
        Mbit/s does not show. A repetition counts only if it succeeded on both sides."""
        out: dict[str, dict[str, list[float]]] = {}
        for pair, reference in self.client_pairs().items():
            out[pair] = {}
            for test in self.tests:
                mine = _by_repetition(self.cell(pair, test))
                theirs = _by_repetition(self.cell(reference, test))
                out[pair][test] = [mine[rep] / theirs[rep] for rep in sorted(mine)
                                   if theirs.get(rep)]
        return out

    def steal_note(self) -> str:
        """The host's CPU steal during the counted runs, and the runs measured again."""
        counted = [s.steal_percent for c in self.cells for s in c.good
                   if s.steal_percent is not None]
        if not counted:
            return ""
        again = sum(len(c.set_aside) for c in self.cells)
        limit = self.settings.get("max_steal_percent")
        text = (f"host CPU steal during the counted runs: mean {sum(counted) / len(counted):.1f} %,"
                f" at most {max(counted):.1f} %")
        if limit is not None:
            text += f"; {again} run{'' if again == 1 else 's'} measured again (steal over " \
                    f"{limit:g} %)"
        return text

    @property
    def failed(self) -> list[Cell]:
        return [c for c in self.cells if c.status == ERROR]

    def rows(self) -> list[dict[str, Any]]:
        """Flat rows (one per measured pair x test) for other readers of bench.json."""
        out = []
        for cell in self.cells:
            thr = cell.throughput()
            if thr is None:
                continue
            client, _, server = cell.pair.partition("->")
            loss = cell.loss()
            eff = cell.efficiency()
            out.append({
                "label": "raw veth (no tunnel)" if cell.pair == RAW else cell.pair,
                "client": client if server else "", "server": server, "test": cell.test,
                "unit": "Mbit/s", "mean": thr.mean, "stdev": thr.stdev, "best": thr.best,
                "n": thr.n, "samples": [s.mbps for s in cell.good],
                "udp_lost_percent": loss.mean if loss else None,
                "mbit_per_cpu_second": eff.mean if eff else None,
                "ratio_vs_wireguard_go": self.ratio_vs(cell.pair, cell.test, "wireguard-go"),
                "ratios_vs": {peer: self.ratio_vs(cell.pair, cell.test, peer)
                              for peer in REFERENCE_PEERS},
            })
        return out

    def published(self) -> list[dict[str, Any]]:
        """Flat published figures (upload and download of each baseline result)."""
        out = []
        for base in self.baselines:
            for result in base.get("results", []):
                for direction in ("upload", "download"):
                    out.append({
                        "label": f"{result['name']} ({result['implementation']}) {direction}",
                        "value": result[direction], "unit": base.get("unit", "Mbit/s"),
                        "group": direction, "source": base.get("source", ""),
                        "hardware": base.get("hardware", ""), "note": base.get("label", ""),
                        "comparable": base.get("comparable", False),
                    })
        return out

    def to_json(self) -> dict[str, Any]:
        """bench.json: ``results`` (flat rows), ``cells`` (every run), ``baselines`` (flat
        published figures) and ``baseline_sets`` (the baseline files as loaded)."""
        data = asdict(self)
        for ours, key in JSON_RENAMES.items():
            data[key] = data.pop(ours)
        data["chart"] = "bench.png"
        data["results"] = self.rows()
        data["cells"] = [c.to_json() for c in self.cells]
        data["baselines"] = self.published()
        data["ratios_vs_wireguard_go"] = self.ratios()
        data["ratios_vs_reference"] = self.reference_ratios()
        data["ratios_client_vs_interface"] = self.client_ratios()
        data["client_ratio_runs"] = {
            pair: {test: [round(r, 3) for r in ratios] for test, ratios in by_test.items()}
            for pair, by_test in self.client_ratio_runs().items()}
        data["fraction_of_veth"] = {
            pair: {test: self.ratio(pair, test, RAW) for test in self.tests}
            for pair in self.pairs if pair != RAW}
        return data


def _by_repetition(cell: Cell | None) -> dict[int, float]:
    """Repetition -> Mbit/s of the counted runs (each > 0) of a cell."""
    return {} if cell is None else {s.repetition: s.mbps for s in cell.good}


# field name -> bench.json key (so that tolerant readers find "results" and "baselines")
JSON_RENAMES = {"pairs": "pair_order", "tests": "test_order", "baselines": "baseline_sets"}


def _sample(raw: dict[str, Any]) -> Sample:
    names = set(Sample.__slots__)
    return Sample(**{k: v for k, v in raw.items() if k in names})


def load_bench(path: Path) -> BenchRun:
    """Read a bench.json back (derived summaries are recomputed, not trusted)."""
    data: dict[str, Any] = json.loads(path.read_text())
    for ours, key in JSON_RENAMES.items():
        data[ours] = data.pop(key, [])
    cells = [Cell(pair=c["pair"], test=c["test"], status=c.get("status", OK),
                  reason=c.get("reason", ""), samples=[_sample(s) for s in c.get("samples", [])])
             for c in data.pop("cells", [])]
    names = set(BenchRun.__slots__)
    return BenchRun(**{k: v for k, v in data.items() if k in names and k != "cells"},
                    cells=cells)
