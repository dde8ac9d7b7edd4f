"""What the page shows, read tolerantly from a run folder: results.json (the matrix, its
cells, probes among them), bench.json (local pairs and published baselines) and the files
that each cell left in its folder.

The readers accept older and newer shapes of these files: unknown keys are kept as metadata
or ignored, never an error, so that a report can always be written."""

from __future__ import annotations

import contextlib
import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..results import CellResult, PeerInfo, RunResult, StepResult

RESULTS = "results.json"
BENCH = "bench.json"
PROBES = "probes.json"


class ReportError(RuntimeError):
    """The folder holds nothing that a report can show."""


@dataclass(slots=True)
class BenchRow:
    """One measured local pair: mean and stdev over its repetitions."""

    label: str
    group: str  # what was measured (metric, direction, payload size ...): rows compare within
    unit: str
    mean: float
    stdev: float
    samples: list[float] = field(default_factory=list)
    client: str = ""
    server: str = ""
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Baseline:
    """A published figure: measured elsewhere, on other hardware."""

    label: str
    value: float
    unit: str
    source: str = ""
    hardware: str = ""
    note: str = ""
    group: str = ""


@dataclass(slots=True)
class BenchData:
    rows: list[BenchRow]
    baselines: list[Baseline]
    meta: dict[str, str]
    chart: str | None  # a chart image the bench wrote, relative to the run folder
    path: Path | None = None


@dataclass(slots=True)
class Probe:
    """A probe: the rule it checks and, per peer, whether the peer keeps it."""

    name: str
    rule: str
    cells: list[CellResult]
    sends: str = ""
    section: str = ""


@dataclass(slots=True)
class RunData:
    folder: Path
    run: RunResult | None
    raw: dict[str, Any]
    bench: BenchData | None
    probes: list[Probe]

    @property
    def title_date(self) -> str:
        if self.run and self.run.started:
            return self.run.started
        return self.bench.meta.get("started", "") if self.bench else ""


# ---------------------------------------------------------------------------------------------
# results.json

def _fields(cls: type, raw: dict[str, Any]) -> dict[str, Any]:
    names = set(getattr(cls, "__dataclass_fields__", {}))
    return {k: v for k, v in raw.items() if k in names}


def _step(raw: Any, index: int) -> StepResult:
    raw = raw if isinstance(raw, dict) else {}
    return StepResult(
        index=int(raw.get("index", index)), label=str(raw.get("label", raw.get("action", ""))),
        action=str(raw.get("action", "")), status=str(raw.get("status", "")),
        detail=str(raw.get("detail", "")), seconds=_num(raw.get("seconds")) or 0.0)


def _cell(raw: dict[str, Any]) -> CellResult:
    data = _fields(CellResult, raw)
    data["steps"] = [_step(s, i) for i, s in enumerate(raw.get("steps") or [], 1)]
    data["measurements"] = {str(k): float(v) for k, v in (raw.get("measurements") or {}).items()
                            if _num(v) is not None}
    data["artifacts"] = [str(a) for a in raw.get("artifacts") or []]
    for key in ("client", "server", "scenario", "status", "reason"):
        data[key] = str(data.get(key) or "")
    return CellResult(**data)


def parse_results(raw: dict[str, Any]) -> RunResult:
    """A RunResult from results.json data, keeping what is known and ignoring the rest."""
    data = _fields(RunResult, raw)
    data["started"] = str(raw.get("started", ""))
    data["cells"] = [_cell(c) for c in raw.get("cells") or [] if isinstance(c, dict)]
    peers = []
    for p in raw.get("peers") or []:
        if isinstance(p, dict) and "name" in p:
            peers.append(PeerInfo(str(p["name"]), str(p.get("version", "")),
                                  bool(p.get("available", True)), p.get("reason"),
                                  [str(c) for c in p.get("capabilities") or []]))
    data["peers"] = peers
    data["scenarios"] = [s for s in raw.get("scenarios") or [] if isinstance(s, dict)]
    data["host"] = {str(k): str(v) for k, v in (raw.get("host") or {}).items()}
    return RunResult(**data)


# ---------------------------------------------------------------------------------------------
# bench.json

def _num(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    if isinstance(value, str):
        try:
            out = float(value)
        except ValueError:
            return None
        return out if math.isfinite(out) else None
    return None


def _first(raw: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        if raw.get(key) not in (None, "", [], {}):
            return raw[key]
    return None


VALUE_KEYS = ("mean", "value", "mbps", "mbit_s", "gbps", "throughput", "bits_per_second",
              "mean_mbps", "throughput_mbps", "avg", "average")
STDEV_KEYS = ("stdev", "std", "stddev", "sd", "stdev_mbps", "std_mbps")
SAMPLE_KEYS = ("samples", "values", "repetitions", "runs", "results", "mbps_samples")


def _samples(raw: Any) -> list[float]:
    out = []
    for item in raw if isinstance(raw, list) else []:
        value = _num(item)
        if value is None and isinstance(item, dict):
            value = _num(_first(item, *VALUE_KEYS))
        if value is not None:
            out.append(value)
    return out


def _as_list(raw: Any) -> list[dict[str, Any]]:
    """A list of dicts, also from a {name: {...}} mapping (the name becomes "label")."""
    if isinstance(raw, list):
        return [r for r in raw if isinstance(r, dict)]
    if isinstance(raw, dict):
        out = []
        for name, value in raw.items():
            if isinstance(value, dict):
                out.append({"label": str(name), **value})
            elif _num(value) is not None:
                out.append({"label": str(name), "value": value})
        return out
    return []


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    return str(value)


def _bench_row(raw: dict[str, Any]) -> BenchRow | None:
    samples = _samples(_first(raw, *SAMPLE_KEYS))
    mean = _num(_first(raw, *VALUE_KEYS))
    if mean is None and samples:
        mean = statistics.fmean(samples)
    if mean is None:
        return None
    stdev = _num(_first(raw, *STDEV_KEYS))
    if stdev is None:
        stdev = statistics.stdev(samples) if len(samples) > 1 else 0.0
    client, server = _text(raw.get("client")), _text(raw.get("server"))
    pair = f"{client} → {server}" if client and server else ""
    label = _text(_first(raw, "label", "name", "pair", "id")) or pair or "?"
    if pair and label.replace("->", " → ") in (pair, f"{client} → {server}"):
        label = pair
    elif pair and pair not in label and label != "?":
        label = f"{pair} · {label}"
    group = _text(_first(raw, "group", "metric", "test", "mode", "direction", "protocol",
                         "scenario")) or "throughput"
    unit = _text(_first(raw, "unit", "units")) or "Mbit/s"
    known = {"label", "name", "pair", "id", "client", "server", "group", "metric", "test",
             "mode", "direction", "protocol", "scenario", "unit", "units", *VALUE_KEYS,
             *STDEV_KEYS, *SAMPLE_KEYS}
    extra = {k: _text(v) for k, v in raw.items()
             if k not in known and not isinstance(v, list | dict) and v is not None}
    return BenchRow(label, group, unit, mean, stdev, samples, client, server, extra)


def _baseline(raw: dict[str, Any]) -> Baseline | None:
    value = _num(_first(raw, *VALUE_KEYS))
    if value is None:
        return None
    label = _text(_first(raw, "label", "name", "implementation", "peer", "pair")) or "?"
    return Baseline(label, value, _text(_first(raw, "unit", "units")) or "Mbit/s",
                    source=_text(_first(raw, "source", "url", "reference", "citation")),
                    hardware=_text(_first(raw, "hardware", "machine", "host", "cpu")),
                    note=_text(_first(raw, "note", "notes", "comment", "setup")),
                    group=_text(_first(raw, "group", "metric", "test")))


def parse_bench(raw: Any, folder: Path) -> BenchData:
    top: dict[str, Any] = raw if isinstance(raw, dict) else {"results": raw}
    rows_raw = _first(top, "pairs", "local", "results", "measurements", "rows", "runs", "cells")
    rows = [r for r in (_bench_row(x) for x in _as_list(rows_raw)) if r is not None]
    base_raw = _first(top, "baselines", "published", "reference", "references", "foreign")
    baselines = [b for b in (_baseline(x) for x in _as_list(base_raw)) if b is not None]
    meta: dict[str, str] = {}
    for key, value in top.items():
        if isinstance(value, list) or value in (None, "", {}):
            continue
        if not isinstance(value, dict):
            meta[str(key)] = _text(value)
        elif all(not isinstance(v, dict | list) for v in value.values()):
            # flat mappings: host, settings, peer versions, unsupported pairs
            prefix = "" if key in ("host", "meta", "metadata", "environment") else f"{key} "
            meta.update({f"{prefix}{k}": _text(v) for k, v in value.items()})
    chart = None
    named = _first(top, "chart", "png", "plot", "image")
    candidates = [str(named)] if isinstance(named, str) else []
    candidates += ["bench.png", "chart.png"]
    for name in candidates:
        if (folder / name).is_file():
            chart = name
            break
    meta.pop("chart", None)
    return BenchData(rows, baselines, meta, chart)


# ---------------------------------------------------------------------------------------------
# probes

PROBE_CLIENTS = ("probe", "prober", "probe-client")


def is_probe(scenario: dict[str, Any]) -> bool:
    return (any(scenario.get(k) for k in ("rule", "requirement"))
            or scenario.get("kind") == "probe"
            or str(scenario.get("name", "")).startswith("probe"))


def _probes(run: RunResult | None, extra: Any) -> list[Probe]:
    out: list[Probe] = []
    if run is not None:
        by_client = {c.scenario for c in run.cells if c.client in PROBE_CLIENTS}
        listed = {str(sc.get("name", "")) for sc in run.scenarios}
        scenarios = [*run.scenarios, *({"name": n} for n in sorted(by_client - listed))]
        for sc in scenarios:
            name = str(sc.get("name", ""))
            if is_probe(sc) or name in by_client:
                rule = _text(_first(sc, "rule", "requirement", "description"))
                out.append(Probe(name, rule, [c for c in run.cells if c.scenario == name],
                                 sends=_text(sc.get("sends")),
                                 section=_text(_first(sc, "section", "reference"))))
    known = {p.name for p in out}
    for raw in _as_list(extra.get("probes") if isinstance(extra, dict) else extra):
        name = _text(_first(raw, "name", "label", "probe", "id")) or "?"
        if name in known:
            continue
        cells = []
        for result in _as_list(raw.get("results") or raw.get("cells") or [raw]):
            cells.append(CellResult(
                client=_text(_first(result, "client", "prober")) or "probe",
                server=_text(_first(result, "server", "peer", "target")) or "?",
                scenario=name, status=_text(result.get("status")) or "?",
                reason=_text(_first(result, "reason", "detail", "message"))))
        out.append(Probe(name, _text(_first(raw, "rule", "requirement", "checks",
                                            "description")), cells,
                         sends=_text(raw.get("sends")),
                         section=_text(_first(raw, "section", "reference"))))
    return out


# ---------------------------------------------------------------------------------------------

def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ReportError(f"{path}: {exc}") from exc


def load_run_dir(folder: Path) -> RunData:
    """Everything that the page shows, from a run folder (results.json and/or bench.json)."""
    folder = folder.resolve()
    if not folder.is_dir():
        raise ReportError(f"{folder} is not a folder")
    raw: dict[str, Any] = {}
    run = None
    if (folder / RESULTS).is_file():
        loaded = _load_json(folder / RESULTS)
        if isinstance(loaded, dict):
            raw = loaded
            run = parse_results(raw)
    bench = None
    if (folder / BENCH).is_file():
        try:
            bench = parse_bench(_load_json(folder / BENCH), folder)
            bench.path = folder / BENCH
        except ReportError:
            bench = None
    probes_raw: Any = raw.get("probes")
    if probes_raw is None and (folder / PROBES).is_file():
        try:
            probes_raw = _load_json(folder / PROBES)
        except ReportError:
            probes_raw = None
    probes = _probes(run, probes_raw or [])
    if run is None and bench is None and not probes:
        raise ReportError(f"{folder} has no {RESULTS} or {BENCH}")
    return RunData(folder, run, raw, bench, probes)


# ---------------------------------------------------------------------------------------------
# a cell's folder

@dataclass(slots=True)
class CellFiles:
    folder: str | None  # relative to the run folder (for links), None when there is none
    peer_logs: list[tuple[str, str]]  # (role and peer, relative path)
    captures: list[str]
    decrypted: list[str]
    keylog: str | None
    static_keys: str | None
    other: list[str]


def cell_files(cell: CellResult, run_folder: Path) -> CellFiles:
    """The cell's files, with paths relative to the run folder (the page lives there)."""
    rel = _cell_folder(cell, run_folder)
    names = list(cell.artifacts)
    if rel is not None and not names:
        base = run_folder / rel
        names = sorted(str(p.relative_to(base)) for p in base.rglob("*") if p.is_file())

    def path(name: str) -> str:
        return f"{rel}/{name}" if rel else name

    peer_logs: list[tuple[str, str]] = []
    captures: list[str] = []
    decrypted: list[str] = []
    other: list[str] = []
    keylog = static = None
    for name in names:
        lower = name.lower()
        if lower.endswith((".pcapng", ".pcap")):
            (decrypted if "-decrypted" in lower else captures).append(path(name))
        elif name == "wireguard.keys":
            keylog = path(name)
        elif name == "static.keys":
            static = path(name)
        elif (lower.startswith(("client-", "server-")) and lower.endswith(".log")
              and "-echo" not in lower):
            role, _, rest = name[:-4].partition("-")
            peer_logs.append((f"{role} · {rest}", path(name)))
        else:
            other.append(path(name))
    if keylog is None:
        keys = [n for n in names if n.endswith(".keys") and n != "static.keys"]
        keylog = path(keys[0]) if keys else None
    return CellFiles(rel, peer_logs, captures, decrypted, keylog, static, other)


def _cell_folder(cell: CellResult, run_folder: Path) -> str | None:
    candidates = []
    if cell.folder:
        folder = Path(cell.folder)
        if folder.is_absolute():
            with contextlib.suppress(ValueError):
                candidates.append(str(folder.resolve().relative_to(run_folder)))
        else:
            candidates.append(str(folder))
    candidates.append(f"{cell.client}_{cell.server}/{cell.scenario}")
    for candidate in candidates:
        if (run_folder / candidate).is_dir():
            return candidate
    return None


def read_tail(path: Path, limit: int = 48_000) -> tuple[str, bool]:
    """The end of a text file (at most LIMIT bytes) and whether it was cut."""
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            if size > limit:
                fh.seek(size - limit)
            data = fh.read(limit)
    except OSError as exc:
        return f"(cannot read {path.name}: {exc})", False
    text = data.decode("utf-8", "replace")
    if size > limit:
        text = text.split("\n", 1)[-1]
    return text, size > limit
