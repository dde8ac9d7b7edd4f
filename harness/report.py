"""Reports of a run: results.json, JUnit XML, a Markdown summary and the terminal matrix."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .results import ERROR, FAIL, PASS, SKIPPED, SYMBOL, UNSUPPORTED, CellResult, RunResult

LEGEND = ", ".join(f"{SYMBOL[s]} {s}" for s in (PASS, FAIL, ERROR, UNSUPPORTED))


def write_json(run: RunResult, path: Path) -> None:
    path.write_text(json.dumps(run.to_json(path.parent), indent=2) + "\n")


def write_junit(run: RunResult, path: Path) -> None:
    suites = ET.Element("testsuites", name="wgref interop", tests=str(len(run.cells)),
                        failures=str(sum(c.status == FAIL for c in run.cells)),
                        errors=str(sum(c.status == ERROR for c in run.cells)),
                        skipped=str(sum(c.status == UNSUPPORTED for c in run.cells)),
                        time=f"{run.seconds:.2f}")
    for scenario in _ordered({c.scenario for c in run.cells}, run):
        cells = [c for c in run.cells if c.scenario == scenario]
        suite = ET.SubElement(
            suites, "testsuite", name=scenario, tests=str(len(cells)),
            failures=str(sum(c.status == FAIL for c in cells)),
            errors=str(sum(c.status == ERROR for c in cells)),
            skipped=str(sum(c.status == UNSUPPORTED for c in cells)),
            time=f"{sum(c.seconds for c in cells):.2f}", timestamp=run.started)
        for cell in cells:
            case = ET.SubElement(suite, "testcase", classname=f"interop.{scenario}",
                                 name=f"{cell.client} -> {cell.server}",
                                 time=f"{cell.seconds:.2f}")
            if cell.status == FAIL:
                ET.SubElement(case, "failure", message=cell.reason).text = _steps_text(cell)
            elif cell.status == ERROR:
                ET.SubElement(case, "error", message=cell.reason).text = _steps_text(cell)
            elif cell.status == UNSUPPORTED:
                ET.SubElement(case, "skipped", message=cell.reason)
            out = _steps_text(cell) + (f"\nfolder: {cell.folder}" if cell.folder else "")
            ET.SubElement(case, "system-out").text = out
    ET.indent(suites)
    ET.ElementTree(suites).write(path, encoding="utf-8", xml_declaration=True)


def _steps_text(cell: CellResult) -> str:
    return "\n".join(f"{s.index}. {s.label}: {s.status} ({s.seconds:.1f} s) {s.detail}"
                     for s in cell.steps)


def _ordered(names: Iterable[str], run: RunResult) -> list[str]:
    order = [s["name"] for s in run.scenarios]
    return sorted(names, key=lambda n: order.index(n) if n in order else len(order))


def _pairs(run: RunResult) -> list[tuple[str, str]]:
    seen: list[tuple[str, str]] = []
    for cell in run.cells:
        if (cell.client, cell.server) not in seen:
            seen.append((cell.client, cell.server))
    return seen


def matrix(run: RunResult) -> tuple[list[str], list[list[str]]]:
    """Header and rows: one row per client -> server pair, one column per scenario."""
    scenarios = _ordered({c.scenario for c in run.cells}, run)
    index = {(c.client, c.server, c.scenario): c for c in run.cells}
    rows = []
    for client, server in _pairs(run):
        row = [f"{client} -> {server}"]
        for scenario in scenarios:
            cell = index.get((client, server, scenario))
            row.append(cell.status if cell else "")
        rows.append(row)
    return ["client -> server", *scenarios], rows


def markdown(run: RunResult) -> str:
    counts = run.counts()
    lines = [
        "# Interop results", "",
        f"Run {run.started} – {run.ended} ({run.seconds:.0f} s): "
        + ", ".join(f"{n} {k}" for k, n in counts.items()) + ".", "",
        "## Peers", "", "| peer | version | available | capabilities |", "|---|---|---|---|",
    ]
    for peer in run.peers:
        avail = "yes" if peer.available else f"no: {peer.reason}"
        lines.append(f"| {peer.name} | {peer.version} | {_md(avail)} | "
                     f"{', '.join(peer.capabilities)} |")
    header, rows = matrix(run)
    lines += ["", "## Matrix", "", "| " + " | ".join(header) + " |",
              "|" + "---|" * len(header)]
    for row in rows:
        lines.append("| " + " | ".join([row[0], *(f"{SYMBOL[v]} {v}" if v in SYMBOL else v
                                                  for v in row[1:])]) + " |")
    lines += ["", "## Cells that did not pass", ""]
    notable = [c for c in run.cells if c.status != PASS]
    if not notable:
        lines.append("None.")
    for cell in notable:
        lines.append(f"* **{_md(cell.key)}** — {cell.status}: {_md(cell.reason)}")
    passed_with_skips = [c for c in run.cells if c.status == PASS and
                         any(s.status == SKIPPED for s in c.steps)]
    if passed_with_skips:
        lines += ["", "## Passed with skipped steps", ""]
        lines += [f"* {_md(c.key)}: {_md(c.reason)}" for c in passed_with_skips]
    measured = [c for c in run.cells if c.measurements and c.status == PASS]
    if measured:
        lines += ["", "## Measurements", ""]
        for cell in measured:
            interesting = {k: v for k, v in cell.measurements.items()
                           if not k.endswith(("rx_bytes", "tx_bytes"))}
            if interesting:
                text = ", ".join(f"{k} = {v:g}" for k, v in sorted(interesting.items()))
                lines.append(f"* {_md(cell.key)}: {text}")
    return "\n".join(lines) + "\n"


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def write_markdown(run: RunResult, path: Path) -> None:
    path.write_text(markdown(run))


def write_all(run: RunResult, out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "junit": out / "junit.xml",
             "markdown": out / "summary.md"}
    write_json(run, paths["json"])
    write_junit(run, paths["junit"])
    write_markdown(run, paths["markdown"])
    return paths


def print_matrix(run: RunResult, console: Any = None) -> None:
    """The final matrix on the terminal (rich table when rich is installed)."""
    header, rows = matrix(run)
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        for row in [header, *rows]:
            print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))
        for cell in run.cells:
            if cell.status != PASS:
                print(f"{cell.status:>11}  {cell.key}: {cell.reason}")
        return
    style = {PASS: "green", FAIL: "bold red", ERROR: "bold red", UNSUPPORTED: "yellow"}
    needed = sum(max(len(r[i]) for r in [header, *rows]) + 3 for i in range(len(header))) + 4
    if console is None:
        console = Console()
        if console.width < needed and not console.is_terminal:
            console = Console(width=needed)
    table = Table(title=f"interop matrix ({LEGEND})")
    for name in header:
        table.add_column(name, no_wrap=True, justify="left" if name == header[0] else "center")
    for row in rows:
        table.add_row(row[0], *(f"[{style.get(v, '')}]{SYMBOL.get(v, v)}[/]" if v else ""
                                for v in row[1:]))
    console.print(table)
    for cell in run.cells:
        if cell.status in (FAIL, ERROR):
            console.print(f"{cell.status:>11}  {cell.key}: {cell.reason}", highlight=False,
                          markup=False, style=style.get(cell.status))
    unsupported = [c for c in run.cells if c.status == UNSUPPORTED]
    if unsupported:
        reasons: dict[str, int] = {}
        for cell in unsupported:
            reasons[cell.reason] = reasons.get(cell.reason, 0) + 1
        console.print(f"{len(unsupported)} unsupported cells:", style="yellow")
        for reason, n in sorted(reasons.items(), key=lambda kv: -kv[1])[:15]:
            console.print(f"  {n:>3} x {reason}", highlight=False, markup=False)
    counts = run.counts()
    console.print(", ".join(f"{n} {k}" for k, n in counts.items()))


def summary_dict(run: RunResult) -> dict[str, Any]:
    return {"counts": run.counts(), "failed": [c.key for c in run.failed]}
