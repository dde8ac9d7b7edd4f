"""The probe x server table (rows: probes, columns: servers) for the terminal and
Markdown; results.json, JUnit and the interop matrix come from ``harness.report``."""

from __future__ import annotations

from ..results import PASS, SYMBOL, RunResult
from .base import Probe
from .runner import scenario_name


def table(run: RunResult, probes: list[Probe]) -> tuple[list[str], list[list[str]]]:
    servers: list[str] = []
    for cell in run.cells:
        if cell.server not in servers:
            servers.append(cell.server)
    index = {(c.server, c.scenario): c for c in run.cells}
    rows = []
    for probe in probes:
        row = [probe.name + (" (slow)" if probe.slow else "")]
        for server in servers:
            found = index.get((server, scenario_name(probe)))
            row.append(f"{SYMBOL.get(found.status, '')} {found.status} {found.seconds:.0f}s"
                       if found else "")
        rows.append(row)
    return ["probe", *servers], rows


def text(run: RunResult, probes: list[Probe]) -> str:
    header, rows = table(run, probes)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True))
             for row in [header, *rows]]
    notable = [c for c in run.cells if c.status != PASS]
    if notable:
        lines.append("")
    for cell in notable:
        lines.append(f"{cell.status:>11}  {cell.server}: {cell.scenario}: {cell.reason}")
    return "\n".join(lines)


def markdown(run: RunResult, probes: list[Probe]) -> str:
    header, rows = table(run, probes)
    lines = ["# Conformance probes", "",
             f"Run {run.started} – {run.ended} ({run.seconds:.0f} s).", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines += ["", "## Details", ""]
    for cell in run.cells:
        lines.append(f"* **{cell.server} / {cell.scenario}** — {cell.status} "
                     f"({cell.seconds:.1f} s): {cell.reason}".replace("|", "\\|"))
        shown = {k: v for k, v in cell.measurements.items() if not k.startswith("pcap.")}
        if shown:
            lines.append("  measurements: " + ", ".join(f"{k} = {v:g}"
                                                        for k, v in sorted(shown.items())))
    return "\n".join(lines) + "\n"
