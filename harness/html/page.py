"""The page: one self-contained HTML file per run (styles, script and charts inline; links to
the run's own files are relative, so the folder can be moved, zipped or served as it is)."""

from __future__ import annotations

import math
import shlex
from collections.abc import Iterable
from html import escape
from pathlib import Path
from urllib.parse import quote

from ..results import (
    ERROR,
    FAIL,
    PASS,
    SKIPPED,
    SYMBOL,
    UNSUPPORTED,
    CellResult,
    StepResult,
    typed_command,
)
from . import svg
from .assets import CSS, JS
from .compare import Comparison, bench_key, cell_key
from .model import Baseline, BenchRow, RunData, cell_files, read_tail

WORD = {PASS: "pass", FAIL: "fail", ERROR: "error", UNSUPPORTED: "unsupported",
        SKIPPED: "skipped"}
LOG_LIMIT = 32_000  # bytes of each peer log's tail inlined into the page
LOG_BUDGET = 12_000_000  # inlined log bytes in one page; past it, logs are links only
WGREF, REFERENCE = "wgref", "wireguard-go"
COLOURS = {"wgref": "#0072B2", "reference": "#E69F00", "mixed": "#56B4E9", "other": "#7f7f7f"}


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _href(path: str) -> str:
    return _e(quote(path, safe="/._-~"))


def _status_class(status: str) -> str:
    return f"s-{status}" if status in WORD else "s-none"


def badge(status: str, text: str | None = None) -> str:
    sym = SYMBOL.get(status, "?")
    return (f'<span class="badge {_status_class(status)}">{_e(sym)} '
            f"{_e(text if text is not None else WORD.get(status, status or '?'))}</span>")


def _secs(value: float) -> str:
    if value >= 100:
        return f"{value:.0f} s"
    return f"{value:.1f} s" if value >= 1 else f"{value * 1000:.0f} ms"


def _when(iso: str) -> str:
    """2026-01-02T03:04:05+00:00 as 2026-01-02 03:04:05 UTC."""
    text = iso.replace("T", " ", 1)
    return text[:-6] + " UTC" if text.endswith("+00:00") else text


def _human_size(n: float) -> str:
    for unit in ("B", "KB", "MB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


class Page:
    """Builds the HTML of one run (optionally compared with an older one)."""

    def __init__(self, data: RunData, comparison: Comparison | None = None) -> None:
        self.data = data
        self.run = data.run
        self.cmp = comparison
        self.cells: list[CellResult] = list(self.run.cells) if self.run else []
        self.ids = {id(c): i for i, c in enumerate(self.cells)}
        self.budget = LOG_BUDGET
        descriptions = self.run.scenarios if self.run else []
        self.scenario_info = {str(s.get("name")): s for s in descriptions}
        self.probe_names = {p.name for p in data.probes}

    # -- helpers ---------------------------------------------------------------------------

    def scenario_order(self) -> list[str]:
        names: list[str] = [str(s.get("name")) for s in (self.run.scenarios if self.run else [])]
        for cell in self.cells:
            if cell.scenario not in names:
                names.append(cell.scenario)
        present = {c.scenario for c in self.cells}
        return [n for n in names if n in present]

    @staticmethod
    def _ordered(values: Iterable[str]) -> list[str]:
        out: list[str] = []
        for value in values:
            if value not in out:
                out.append(value)
        return out

    def cell_link(self, cell: CellResult, *, word: bool = True) -> str:
        i = self.ids[id(cell)]
        status = cell.status
        title = f"{cell.client} → {cell.server} · {cell.scenario}: {WORD.get(status, status)}"
        if cell.reason:
            title += f" — {cell.reason}"
        classes = ["cell", _status_class(status)]
        delta = ""
        if self.cmp is not None and cell_key(cell) in self.cmp.changed:
            before = self.cmp.changed[cell_key(cell)]
            classes.append("changed")
            was = WORD.get(before, before) if before else "not in the old run"
            title += f" (changed; was: {was})"
            delta = '<span class="delta" aria-hidden="true">Δ</span>'
        text = f'<span class="word">{_e(WORD.get(status, status))}</span>' if word else ""
        return (f'<a class="{" ".join(classes)}" href="#c-{i}" data-cell="dlg-{i}" '
                f'title="{_e(title)}" aria-label="{_e(title)}">'
                f'<span class="sym" aria-hidden="true">{_e(SYMBOL.get(status, "?"))}</span>'
                f"{text}{delta}</a>")

    # -- sections --------------------------------------------------------------------------

    def header(self) -> str:
        counts = self.run.counts() if self.run else {}
        chips = "".join(badge(k, f"{n} {WORD.get(k, k)}") for k, n in counts.items()
                        if n or k in (PASS, FAIL))
        links = [("matrix", "Matrix"), ("overview", "All cells")]
        if self.cmp is not None:
            links.insert(0, ("changes", "Changes"))
        if self.data.probes:
            links.append(("probes", "Probes"))
        if self.data.bench is not None:
            links.append(("bench", "Bench"))
        links.append(("run", "Run"))
        if not self.cells:
            links = [x for x in links if x[0] not in ("matrix", "overview")]
        nav = "".join(f'<a href="#{k}">{_e(v)}</a>' for k, v in links)
        kind = "interop" if self.cells else "bench"
        when = _when(self.data.title_date)
        return (f'<header class="top"><div class="top-inner"><h1>wgref {kind} report</h1>'
                f'<span class="when">{_e(when)}</span><div class="counts">{chips}</div>'
                f'<nav class="sections" aria-label="sections">{nav}</nav></div></header>')

    def legend(self) -> str:
        items = "".join(badge(s) for s in (PASS, FAIL, ERROR, UNSUPPORTED))
        extra = ('<span><span class="badge" style="box-shadow:0 0 0 3px var(--changed)">Δ'
                 "</span> changed since the old run</span>") if self.cmp else ""
        return (f'<div class="legend">{items}{extra}<span>Hover a cell for the reason, '
                "click it for steps, logs and captures.</span></div>")

    def matrix(self) -> str:
        if not self.cells:
            return ""
        cards = []
        for scenario in self.scenario_order():
            cells = [c for c in self.cells if c.scenario == scenario]
            clients = self._ordered(c.client for c in cells)
            servers = self._ordered(c.server for c in cells)
            index = {(c.client, c.server): c for c in cells}
            head = "".join(f'<th scope="col">{_e(s)}</th>' for s in servers)
            rows = []
            for client in clients:
                tds = []
                for server in servers:
                    cell = index.get((client, server))
                    tds.append(f"<td>{self.cell_link(cell)}</td>" if cell else
                               '<td class="empty" title="not in this run">·</td>')
                rows.append(f'<tr><th scope="row" class="row">{_e(client)}</th>'
                            f"{''.join(tds)}</tr>")
            info = self.scenario_info.get(scenario, {})
            desc = str(info.get("description") or "")
            probe = " probe" if scenario in self.probe_names else ""
            counts = {s: sum(c.status == s for c in cells) for s in (PASS, FAIL, ERROR)}
            summary = " ".join(f"{SYMBOL[s]}{n}" for s, n in counts.items() if n)
            cards.append(
                f'<div class="card{probe}" data-scenario="{_e(scenario)}">'
                f'<h3>{_e(scenario)} <span class="sub-count notice">{_e(summary)}</span></h3>'
                f'<p class="desc" title="{_e(desc)}">{_e(desc)}</p>'
                f'<div class="scroll"><table class="mx"><thead><tr>'
                f'<th class="corner" scope="col">client ↓ server →</th>{head}</tr></thead>'
                f"<tbody>{''.join(rows)}</tbody></table></div></div>")
        return (f'<section class="block" id="matrix"><h2>Matrix</h2>'
                f'<p class="sub">One grid per scenario: clients down, servers across.</p>'
                f'{self.legend()}<div class="cards">{"".join(cards)}</div></section>')

    def overview(self) -> str:
        if not self.cells:
            return ""
        scenarios = self.scenario_order()
        pairs = self._ordered(f"{c.client}\0{c.server}" for c in self.cells)
        index = {(c.client, c.server, c.scenario): c for c in self.cells}
        head = "".join(f'<th scope="col">{_e(s)}</th>' for s in scenarios)
        rows = []
        for pair in pairs:
            client, server = pair.split("\0")
            tds, all_pass = [], True
            for scenario in scenarios:
                cell = index.get((client, server, scenario))
                if cell is None:
                    tds.append('<td class="empty">·</td>')
                    continue
                all_pass = all_pass and cell.status == PASS
                tds.append(f"<td>{self.cell_link(cell, word=False)}</td>")
            cls = ' class="all-pass"' if all_pass else ""
            rows.append(f'<tr{cls}><th scope="row" class="row">{_e(client)} → {_e(server)}'
                        f"</th>{''.join(tds)}</tr>")
        toggle = ('<label class="toggle"><input type="checkbox" id="only-bad"> '
                  "only rows with cells that did not pass</label>")
        return (f'<section class="block" id="overview"><h2>All cells</h2>'
                f'<p class="sub">Client → server pairs down, scenarios across.</p>'
                f'<div class="legend">{toggle}</div>'
                f'<div class="scroll overview"><table class="ov"><thead><tr>'
                f'<th class="row" scope="col">client → server</th>{head}</tr></thead>'
                f"<tbody>{''.join(rows)}</tbody></table></div></section>")

    def changes(self) -> str:
        if self.cmp is None:
            return ""
        old = self.cmp.old
        items = []
        for cell in self.cells:
            key = cell_key(cell)
            if key in self.cmp.changed:
                before = self.cmp.changed[key]
                was = badge(before) if before else '<span class="notice">new</span>'
                items.append(f"<li>{self.cell_link(cell, word=False)} {_e(cell.client)} → "
                             f"{_e(cell.server)} · <b>{_e(cell.scenario)}</b>: {was} → "
                             f"{badge(cell.status)} <span class='notice'>{_e(cell.reason)}"
                             "</span></li>")
        for cell in self.cmp.removed:
            items.append(f"<li>{_e(cell.client)} → {_e(cell.server)} · "
                         f"<b>{_e(cell.scenario)}</b>: {badge(cell.status)} → "
                         "<span class='notice'>not in the new run</span></li>")
        moved = self.cmp.moved
        for change in moved:
            pct = change.percent
            sign = "up" if change.delta > 0 else "down"
            items.append(
                f"<li>bench <b>{_e(change.new.label)}</b> ({_e(change.new.group)}): "
                f"{svg.fmt(change.old.mean)} → {svg.fmt(change.new.mean)} {_e(change.new.unit)}"
                f' <span class="{sign}">{"+" if change.delta > 0 else ""}'
                f"{svg.fmt(change.delta)}" + (f" ({pct:+.1f} %)" if pct is not None else "")
                + f"</span>, noise ± {svg.fmt(change.noise)}</li>")
        when = _when(old.title_date)
        body = f"<ul>{''.join(items)}</ul>" if items else "<p>Nothing changed.</p>"
        n_cells = sum(1 for k in self.cmp.changed)
        return (f'<section class="banner" id="changes"><b>Compared with {_e(old.folder.name)}'
                f"</b> ({_e(when)}): {n_cells} cell(s) changed status or are new, "
                f"{len(self.cmp.removed)} gone, {len(moved)} bench row(s) moved beyond the noise "
                "(|Δ mean| > stdev old + stdev new)."
                f"{body}</section>")

    # -- drill-down ------------------------------------------------------------------------

    def dialogs(self) -> str:
        return "".join(self.dialog(cell) for cell in self.cells)

    def dialog(self, cell: CellResult) -> str:
        i = self.ids[id(cell)]
        files = cell_files(cell, self.data.folder)
        parts = [f'<dialog class="drill" id="dlg-{i}" aria-labelledby="dlg-{i}-t">',
                 '<div class="drill-head">',
                 f'<h2 id="dlg-{i}-t">{_e(cell.client)} → {_e(cell.server)} · '
                 f"{_e(cell.scenario)} {badge(cell.status)}</h2>",
                 '<button class="close" data-close type="button" aria-label="close">✕'
                 "</button></div>", '<div class="drill-body">']
        if cell.reason:
            parts.append(f'<p class="reason {_status_class(cell.status)}">{_e(cell.reason)}</p>')
        if self.cmp is not None:
            before = self.cmp.old_cells.get(cell_key(cell))
            if before is not None:
                parts.append(f'<p>In the old run: {badge(before.status)} '
                             f'<span class="notice">{_e(before.reason)}</span></p>')
        desc = str(self.scenario_info.get(cell.scenario, {}).get("description") or "")
        if desc:
            parts.append(f'<p class="notice">{_e(desc)}</p>')
        meta = [("time", f"{_when(cell.started)} · {_secs(cell.seconds)}" if cell.started else
                 _secs(cell.seconds)), ("prefix", cell.prefix)]
        parts.append('<dl class="meta">' + "".join(
            f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in meta if v))
        if files.folder:
            parts.append(f'<dt>folder</dt><dd><a href="{_href(files.folder)}/">'
                         f"{_e(files.folder)}/</a></dd>")
        parts.append("</dl>")
        if cell.steps:
            parts.append("<h3>Steps</h3>" + self.steps(cell.steps))
        elif cell.status == UNSUPPORTED:
            parts.append('<p class="notice">Not run: the peers cannot do what this scenario '
                         "needs (the reason above).</p>")
        measurements = {k: v for k, v in cell.measurements.items()}
        if measurements:
            rows = "".join(f'<tr><td>{_e(k)}</td><td class="num">{v:g}</td></tr>'
                           for k, v in sorted(measurements.items()))
            parts.append('<details class="log"><summary>Measurements '
                         f"({len(measurements)})</summary><div class='scroll'>"
                         f'<table class="data">{rows}</table></div></details>')
        if files.peer_logs:
            parts.append("<h3>Peer logs</h3>")
            for label, path in files.peer_logs:
                parts.append(self.log(label, path))
        if files.captures or files.decrypted:
            parts.append("<h3>Captures</h3>" + self.captures(files.captures, files.decrypted,
                                                             files.keylog, files.static_keys))
        if files.other:
            links = "".join(f'<li><a href="{_href(p)}">{_e(Path(p).name)}</a></li>'
                            for p in files.other)
            parts.append(f"<h3>Other files</h3><ul class='files'>{links}</ul>")
        parts.append("</div></dialog>")
        return "".join(parts)

    @staticmethod
    def steps(steps: list[StepResult]) -> str:
        total = sum(max(s.seconds, 0.0) for s in steps) or 1.0
        out, start = [], 0.0
        for step in steps:
            left = 100 * start / total
            width = 100 * max(step.seconds, 0.0) / total
            start += max(step.seconds, 0.0)
            action = (f'<span class="action">{_e(step.action)}</span>'
                      if step.action and step.action != step.label else "")
            out.append(
                f'<li class="st-{_e(step.status)}"><span class="n">{step.index}</span>'
                f'<span><span class="label">{_e(step.label)}</span>{action} '
                f"{badge(step.status)}</span>"
                f'<span class="secs">{_e(_secs(step.seconds))}</span>'
                f'<span class="track" title="starts at {start - step.seconds:.2f} s">'
                f'<span style="left:{left:.2f}%;width:{width:.2f}%"></span></span>'
                f'<span class="detail">{_e(step.detail)}</span></li>')
        return f'<ol class="steps">{"".join(out)}</ol>'

    def log(self, label: str, rel: str) -> str:
        path = self.data.folder / rel
        try:
            size = path.stat().st_size
        except OSError:
            return f'<p class="notice">{_e(label)}: {_e(rel)} is missing</p>'
        head = (f"<summary><b>{_e(label)}</b> · {_human_size(size)} · "
                f'<a href="{_href(rel)}">open file</a></summary>')
        if self.budget <= 0:
            return (f'<details class="log">{head}<p class="notice" style="padding:0 .6rem">'
                    "Too many logs to inline in one page: open the file.</p></details>")
        text, cut = read_tail(path, LOG_LIMIT)
        self.budget -= len(text)
        note = f"… (the last {_human_size(LOG_LIMIT)} of the file)\n" if cut else ""
        return f'<details class="log peer-log">{head}<pre>{_e(note + text)}</pre></details>'

    @staticmethod
    def captures(pcaps: list[str], decrypted: list[str], keylog: str | None,
                 static_keys: str | None) -> str:
        items = "".join(f'<li><a href="{_href(p)}">{_e(Path(p).name)}</a></li>'
                        for p in [*pcaps, *decrypted])
        keys = []
        if keylog:
            keys.append(f'<li>key log: <a href="{_href(keylog)}">{_e(Path(keylog).name)}</a>'
                        "</li>")
        if static_keys:
            keys.append(f'<li>static keys: <a href="{_href(static_keys)}">'
                        f"{_e(Path(static_keys).name)}</a> (reads the initiations only)</li>")
        out = [f"<ul class='files'>{items}{''.join(keys)}</ul>"]
        key = keylog or static_keys
        if decrypted:
            out.append("<p>The <code>-decrypted</code> captures have one WireGuard message per "
                       "frame and carry the key log inside: open them as they are.</p>"
                       + _cmd(f"tshark -r {shlex.quote(decrypted[0])}"))
        if pcaps and key:
            cmd = (f"tshark -r {shlex.quote(pcaps[0])} "
                   f"-o {shlex.quote('wg.keylog_file:' + key)}")
            out.append("<p>The raw captures, with Wireshark's key log (run in the run's folder; "
                       "of a UDP GSO super-frame it decrypts only the first message):</p>"
                       + _cmd(cmd))
        if pcaps and keylog:
            out.append("<p>Every message of the raw captures:</p>" + _cmd(
                f"wgref decrypt {shlex.quote(pcaps[0])} --keylog {shlex.quote(keylog)}"))
        secrets = [Path(p).name for p in [*([keylog] if keylog else []),
                                          *([static_keys] if static_keys else []), *decrypted]]
        if secrets:
            out.append('<p class="notice">Carry secrets (mode 0600; keys made for this run): '
                       f"{_e(', '.join(secrets))}.</p>")
        return "".join(out)

    # -- probes ----------------------------------------------------------------------------

    def probes(self) -> str:
        if not self.data.probes:
            return ""
        out = []
        for probe in self.data.probes:
            rows = []
            for cell in probe.cells:
                link = self.cell_link(cell, word=False) if id(cell) in self.ids else ""
                rows.append(f"<tr><td>{link}</td><td>{_e(cell.server)}</td>"
                            f"<td>{_e(cell.client)}</td><td>{badge(cell.status)}</td>"
                            f"<td>{_e(cell.reason)}</td></tr>")
            rule = _e(probe.rule) or '<span class="notice">(not given)</span>'
            sends = f"<p><b>Sends:</b> {_e(probe.sends)}</p>" if probe.sends else ""
            section = (f' <span class="notice">({_e(probe.section)})</span>'
                       if probe.section else "")
            out.append(
                f'<div class="panel"><h3>{_e(probe.name)}</h3>{sends}'
                f"<p><b>Rule:</b> {rule}{section}</p>"
                f'<div class="scroll"><table class="data"><thead><tr><th></th>'
                f"<th>peer</th><th>prober</th><th>result</th><th>why</th></tr></thead>"
                f"<tbody>{''.join(rows)}</tbody></table></div></div>")
        return (f'<section class="block" id="probes"><h2>Probes</h2>'
                f'<p class="sub">Each probe sends crafted traffic and checks one rule of the '
                f"protocol.</p><div class='panel-grid'>{''.join(out)}</div></section>")

    # -- bench -----------------------------------------------------------------------------

    @staticmethod
    def _kind(row: BenchRow) -> str:
        names = [row.client, row.server] if row.client or row.server else [row.label]
        text = " ".join(names)
        has_ours = WGREF in [n for n in names] or (not row.client and WGREF in text.split())
        has_ref = REFERENCE in text
        if row.client and row.server:
            both = {row.client, row.server}
            if both == {WGREF}:
                return "wgref"
            if both == {REFERENCE}:
                return "reference"
            return "mixed" if WGREF in both else "other"
        if has_ours and has_ref:
            return "mixed"
        return "wgref" if has_ours else "reference" if has_ref else "other"

    def bench(self) -> str:
        bench = self.data.bench
        if bench is None:
            return ""
        parts = ['<section class="block" id="bench"><h2>Bench</h2>']
        parts.append('<p class="sub">Local pairs, measured by this run on this host: mean ± '
                     "standard deviation over the repetitions.</p>")
        panels = []
        groups: dict[tuple[str, str], list[BenchRow]] = {}
        for row in bench.rows:
            groups.setdefault((row.group, row.unit), []).append(row)
        for n, ((group, unit), rows) in enumerate(groups.items()):
            panels.append(self.bench_panel(group, unit, rows, n))
        if not panels:
            panels.append('<p class="notice">bench.json has no local measurements.</p>')
        legend = "".join(
            f'<span><span class="swatch" style="background:{c}"></span>{_e(t)}</span>'
            for t, c in (("wgref ↔ wgref", COLOURS["wgref"]),
                         ("wireguard-go ↔ wireguard-go", COLOURS["reference"]),
                         ("wgref ↔ wireguard-go", COLOURS["mixed"]),
                         ("other", COLOURS["other"])))
        if self.cmp is not None:
            legend += ('<span><span class="swatch" style="background:var(--changed)"></span>'
                       "old run's mean</span>")
        parts.append(f'<div class="legend">{legend}</div>')
        parts.append("".join(panels))
        ratios = self.ratios(bench.rows)
        if ratios:
            parts.append(ratios)
        if bench.baselines:
            parts.append(self.baselines(bench.baselines))
        if bench.chart:
            parts.append(f'<details class="log"><summary>The chart the bench wrote '
                         f'(<a href="{_href(bench.chart)}">{_e(bench.chart)}</a>)</summary>'
                         f'<img src="{_href(bench.chart)}" alt="bench chart" '
                         'style="max-width:100%;display:block;background:#fff"></details>')
        if bench.meta:
            meta = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in bench.meta.items())
            parts.append(f'<h3 style="margin-top:1rem">Bench metadata</h3>'
                         f'<dl class="meta">{meta}</dl>')
        parts.append("</section>")
        return "".join(parts)

    def bench_panel(self, group: str, unit: str, rows: list[BenchRow], n: int) -> str:
        bars = []
        for row in rows:
            marker, note = None, ""
            change = self.cmp.bench.get(bench_key(row)) if self.cmp else None
            if change is not None:
                marker = change.old.mean
                if change.moved:
                    note = "▲ moved" if change.delta > 0 else "▼ moved"
            bars.append(svg.Bar(row.label, row.mean, row.stdev, COLOURS[self._kind(row)],
                                note, marker))
        chart = svg.bar_chart(bars, unit, f"{group} ({unit})", chart_id=f"chart-{n}")
        extras = [(k, t) for k, t in BENCH_EXTRAS if any(r.extra.get(k) for r in rows)]
        head = ('<tr><th>pair</th><th class="num">mean</th><th class="num">stdev</th>'
                '<th class="num">n</th>'
                + "".join(f'<th class="num">{_e(t)}</th>' for _, t in extras))
        if self.cmp is not None:
            head += '<th class="num">old mean</th><th class="num">Δ</th>'
        head += "</tr>"
        body = []
        for row in rows:
            n_samples = str(len(row.samples)) if row.samples else row.extra.get("n", "")
            cells = (f"<td class='pair'>{_e(row.label)}</td>"
                     f"<td class='num'>{svg.fmt(row.mean)}</td>"
                     f"<td class='num'>{svg.fmt(row.stdev)}</td><td class='num'>{_e(n_samples)}"
                     "</td>" + "".join(f"<td class='num'>{_e(_num_text(row.extra.get(k)))}</td>"
                                       for k, _ in extras))
            cls = ""
            if self.cmp is not None:
                change = self.cmp.bench.get(bench_key(row))
                if change is None:
                    cells += "<td class='num'>–</td><td class='num'>new</td>"
                else:
                    pct = change.percent
                    arrow = ("up" if change.delta > 0 else "down") if change.moved else ""
                    txt = f"{'+' if change.delta > 0 else ''}{svg.fmt(change.delta)}"
                    txt += f" ({pct:+.1f} %)" if pct is not None else ""
                    txt += " beyond noise" if change.moved else " within noise"
                    cells += (f"<td class='num'>{svg.fmt(change.old.mean)} ± "
                              f"{svg.fmt(change.old.stdev)}</td>"
                              f"<td class='num {arrow}'>{_e(txt)}</td>")
                    cls = ' class="moved"' if change.moved else ""
            body.append(f"<tr{cls}>{cells}</tr>")
        return (f'<h3>{_e(group)} <span class="notice">({_e(unit)})</span></h3>'
                f'<div class="bench-group">{chart}<div class="scroll"><table class="data">'
                f"<thead>{head}</thead><tbody>{''.join(body)}</tbody></table></div></div>")

    @staticmethod
    def ratios(rows: list[BenchRow]) -> str:
        """wgref / wireguard-go: each pair with wgref against the same measurement with
        wireguard-go in wgref's place (so wireguard-go → wireguard-go for every pair)."""
        by_pair = {(r.group, r.unit, r.client, r.server): r for r in rows}

        def swap(name: str) -> str:
            return REFERENCE if name == WGREF else name
        out = []
        for row in rows:
            if WGREF not in (row.client, row.server):
                continue
            other = by_pair.get((row.group, row.unit, swap(row.client), swap(row.server)))
            if other is None or other.mean <= 0 or row.mean <= 0:
                continue
            ratio = row.mean / other.mean
            err = ratio * math.sqrt((row.stdev / row.mean) ** 2 + (other.stdev / other.mean) ** 2)
            out.append(f"<tr><td>{_e(row.group)}</td>"
                       f"<td class='pair' title='÷ {_e(other.label)}'>{_e(row.label)}</td>"
                       f"<td class='num'><b>{ratio:.2f}×</b> ± {err:.2f}</td></tr>")
        if not out:
            return ""
        return ('<h3 style="margin-top:1rem">wgref / wireguard-go</h3>'
                '<p class="sub" style="margin-top:0">Each pair with wgref over the same test '
                "with wireguard-go in wgref's place (wireguard-go → wireguard-go), same run: "
                "1× is parity; ± from both stdevs.</p>"
                "<div class='scroll'><table class='data'><thead><tr><th>test</th>"
                "<th>pair</th><th class='num'>ratio</th></tr></thead>"
                f"<tbody>{''.join(out)}</tbody></table></div>")

    @staticmethod
    def baselines(baselines: list[Baseline]) -> str:
        groups: dict[tuple[str, str], list[Baseline]] = {}
        for b in baselines:
            groups.setdefault((b.group, b.unit), []).append(b)
        charts = "".join(
            f'<div class="panel"><h3>{_e(group or "published")} '
            f'<span class="notice">({_e(unit)})</span></h3>'
            + svg.bar_chart([svg.Bar(b.label, b.value, 0.0, "#8c8c8c") for b in items], unit,
                            f"published baselines, {group} ({unit}), foreign hardware",
                            chart_id=f"baseline-{n}") + "</div>"
            for n, ((group, unit), items) in enumerate(groups.items()))
        charts = f'<div class="panel-grid">{charts}</div>'
        sets: list[tuple[str, str, str]] = []
        for b in baselines:
            if (b.hardware, b.source, b.note) not in sets:
                sets.append((b.hardware, b.source, b.note))
        about = []
        for hardware, source, note in sets:
            src = (f'<a href="{_e(source)}" rel="noreferrer">{_e(source)}</a>'
                   if source.startswith(("http://", "https://")) else _e(source))
            bits = [f"<dt>{k}</dt><dd>{v}</dd>" for k, v in (
                ("what", _e(note)), ("hardware", _e(hardware)), ("source", src)) if v]
            about.append(f'<dl class="meta" style="margin:.6rem 0">{"".join(bits)}</dl>')
        rows = "".join(f"<tr><td>{_e(b.label)}</td><td>{_e(b.group)}</td>"
                       f"<td class='num'>{svg.fmt(b.value)} {_e(b.unit)}</td></tr>"
                       for b in baselines)
        table = ("<details class='log'><summary>The published figures as a table</summary>"
                 "<div class='scroll'><table class='data'><thead><tr><th>what</th>"
                 "<th></th><th class='num'>value</th></tr></thead>"
                 f"<tbody>{rows}</tbody></table></div></details>")
        return ('<div class="panel foreign" id="baselines" style="margin-top:1rem">'
                '<h3>Published baselines <span class="foreign-tag">foreign hardware</span></h3>'
                '<p class="sub" style="margin-top:0">Figures others published for their own '
                "machines and setups: not measured by this run and not comparable number for "
                "number with the local pairs above.</p>"
                f"{''.join(about)}{charts}{table}</div>")

    # -- run metadata ----------------------------------------------------------------------

    def metadata(self) -> str:
        run = self.run
        items: list[tuple[str, str]] = []
        if run is not None:
            items += [("started", _when(run.started)), ("ended", _when(run.ended)),
                      ("duration", _secs(run.seconds) if run.seconds else ""),
                      ("command", shlex.join(typed_command(run.command)))]
            if run.interrupted:
                items.append(("interrupted", "yes: the matrix is incomplete"))
            items += [(f"host {k}", v) for k, v in run.host.items()]
            if run.shard:
                items.append(("shard", f"{run.shard.get('index')}/{run.shard.get('count')}"))
            for shard in run.shards:  # a merged run: each shard's machine and times
                host = ", ".join(f"{k} {v}" for k, v in (shard.get("host") or {}).items())
                items.append((f"shard {shard.get('index')}/{len(run.shards)}",
                              f"{shard.get('cells')} cells in {_secs(shard.get('seconds') or 0)}"
                              f" on {host or '?'} ({shard.get('folder')})"))
            for key, value in self.data.raw.items():
                if key in ("backend", "backends", "label", "commit", "version", "kind"):
                    items.append((key, str(value)))
        bench = self.data.bench
        if bench is not None and "backend" in bench.meta and not any(
                k == "backend" for k, _ in items):
            items.append(("backend", bench.meta["backend"]))
        items.append(("report folder", str(self.data.folder)))
        meta = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in items if v)
        peers = ""
        if run is not None and run.peers:
            cards = []
            for peer in run.peers:
                avail = badge(PASS, "available") if peer.available else badge(
                    UNSUPPORTED, "unavailable")
                why = (f'<p class="notice" style="margin:.2rem 0">{_e(peer.reason)}</p>'
                       if peer.reason else "")
                caps = "".join(f'<span class="chip">{_e(c)}</span>' for c in peer.capabilities)
                cards.append(f'<div class="panel peer"><h3>{_e(peer.name)} {avail}</h3>'
                             f'<div class="notice">{_e(peer.version)}</div>{why}'
                             f'<div class="chips" style="margin-top:.4rem">{caps}</div></div>')
            peers = ("<h3 style='margin-top:1rem'>Peers</h3>"
                     f"<div class='peers'>{''.join(cards)}</div>")
        files = [n for n in ("results.json", "junit.xml", "summary.md", "bench.json",
                             "probes.json") if (self.data.folder / n).is_file()]
        links = " · ".join(f'<a href="{_href(n)}">{_e(n)}</a>' for n in files)
        return (f'<section class="block" id="run"><h2>Run</h2><dl class="meta">{meta}</dl>'
                f"{peers}<p class='sub' style='margin-top:1rem'>Files: {links}</p></section>")

    # -- the page --------------------------------------------------------------------------

    def render(self) -> str:
        title = "wgref report " + self.data.title_date
        body = "".join([self.header(), "<main>", self.changes(), self.matrix(), self.overview(),
                        self.probes(), self.bench(), self.metadata(), self.dialogs(),
                        "</main>", "<footer>Written by <code>python -m harness report</code>. "
                        "Self-contained: no scripts, styles or fonts are fetched.</footer>"])
        return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                '<meta name="viewport" content="width=device-width, initial-scale=1">'
                "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
                "img-src 'self' file: data:; style-src 'unsafe-inline'; "
                "script-src 'unsafe-inline'\">"
                f'<link rel="icon" href="data:,"><title>{_e(title)}</title>'
                f"<style>{CSS}</style></head><body>{body}<script>{JS}</script></body></html>\n")


BENCH_EXTRAS = (("best", "best"), ("udp_lost_percent", "UDP loss %"),
                ("mbit_per_cpu_second", "Mbit/CPU-s"))


def _num_text(value: str | None) -> str:
    if not value:
        return ""
    try:
        return svg.fmt(float(value))
    except ValueError:
        return value


def _cmd(command: str) -> str:
    return (f'<div class="cmd"><code>{_e(command)}</code><button class="copy" type="button" '
            f'data-copy="{_e(command)}">copy</button></div>')


def render(data: RunData, comparison: Comparison | None = None) -> str:
    return Page(data, comparison).render()

