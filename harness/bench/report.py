"""The bench's outputs: bench.json, a Markdown table, the terminal table (rich) and a PNG chart
(matplotlib, Agg backend) with the published baselines in a separate panel."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

from .model import ERROR, OK, RAW, REFERENCE, TESTS, UNSUPPORTED, WGREF, BenchRun, Cell

HEADER = ["pair", "test", "n", "best", "mean", "± stdev", "UDP loss", "CPU-s client",
          "CPU-s server", "Mbit/CPU-s", "vs wg-go", "of veth"]
SHORT = {"wireguard-go": "wg-go", "boringtun-cli": "boringtun"}
RATE_NOTE = ("Mbit/s (10^6 bit/s) received; n = successful runs; CPU-s = CPU-seconds of the "
             "peer processes during one run (mean); Mbit/CPU-s = megabits delivered per "
             "CPU-second of both peers; vs R = mean over the mean of the same test with R in "
             "wgref's place (R→R for wgref→wgref) in the same run")


def result_header(bench: BenchRun) -> list[str]:
    """HEADER with one "vs R" column per reference pair the run measured."""
    refs = [f"vs {SHORT.get(p, p)}" for p in bench.reference_peers()] or ["vs wg-go"]
    return [*HEADER[:-2], *refs, HEADER[-1]]


def fmt_rate(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:,.0f}" if value >= 1000 else f"{value:.1f}"


def fmt_ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}×"


def _label(pair: str) -> str:
    return "raw veth (no tunnel)" if pair == RAW else pair.replace("->", " → ")


def rows(bench: BenchRun) -> list[list[str]]:
    """One row per measured pair x test (pairs that could not run are listed apart)."""
    out = []
    for pair in bench.pairs:
        for test in bench.tests:
            cell = bench.cell(pair, test)
            if cell is None or cell.status == UNSUPPORTED:
                continue
            out.append(_row(bench, cell))
    return out


def _row(bench: BenchRun, cell: Cell) -> list[str]:
    thr = cell.throughput()
    loss = cell.loss()
    cpu_c, cpu_s, eff = cell.cpu("client"), cell.cpu("server"), cell.efficiency()
    ratios = []
    for peer in bench.reference_peers() or ["wireguard-go"]:
        if cell.pair == f"{peer}->{peer}":
            ratios.append("ref")
        elif WGREF in cell.pair.split("->"):
            ratios.append(fmt_ratio(bench.ratio_vs(cell.pair, cell.test, peer)))
        else:
            ratios.append("")
    ceiling = "" if cell.pair == RAW else _percent(bench.ratio(cell.pair, cell.test, RAW))
    if thr is None:
        reason = (cell.reason or "no successful run")[:60]
        return [_label(cell.pair), cell.test, "0", "error", reason, *[""] * (6 + len(ratios))]
    return [
        _label(cell.pair), cell.test, str(thr.n), fmt_rate(thr.best), fmt_rate(thr.mean),
        fmt_rate(thr.stdev), f"{loss.mean:.1f} %" if loss else "",
        f"{cpu_c.mean:.2f}" if cpu_c else "—", f"{cpu_s.mean:.2f}" if cpu_s else "—",
        fmt_rate(eff.mean) if eff else "—", *ratios, ceiling,
    ]


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f} %"


def ratio_rows(bench: BenchRun, peer: str = "wireguard-go",
               ) -> tuple[list[str], list[list[str]]]:
    """wgref's ratios to one reference peer: a row per wgref pair, a column per test."""
    head = [f"wgref pair ÷ same with {peer} in wgref's place", *bench.tests]
    body = [[_label(pair), *(fmt_ratio(r.get(t)) for t in bench.tests)]
            for pair, r in bench.ratios(peer).items()]
    return head, body


def ratio_tables(bench: BenchRun) -> list[tuple[str, list[str], list[list[str]]]]:
    """(reference peer, header, rows) for each reference pair the run measured."""
    out = []
    for peer in bench.reference_peers():
        head, body = ratio_rows(bench, peer)
        if body:
            out.append((peer, head, body))
    return out


CLIENT_RATIO_NOTE = ("Ratio of the means; in brackets, the lowest and highest ratio of a "
                     "single repetition (the client's run ÷ the interface's run measured beside "
                     "it): how far the ratio moves with the machine's noise")


def fmt_ratio_range(ratios: list[float]) -> str:
    """`` (0.85–0.95)``: the lowest and highest of the paired ratios; nothing for fewer than
    two, since one ratio has no spread."""
    if len(ratios) < 2:
        return ""
    return f" ({min(ratios):.2f}–{max(ratios):.2f})"


def client_ratio_rows(bench: BenchRun) -> tuple[list[str], list[list[str]]]:
    """wgref-client->PEER ÷ wgref->PEER (the transparent client beside wgref's TUN
    interface, same server, same run), with the range of the per-repetition ratios."""
    header = ["wgref-client ÷ wgref (same server)", *bench.tests]
    runs = bench.client_ratio_runs()
    body = []
    for pair, ratios in bench.client_ratios().items():
        body.append([_label(pair), *(fmt_ratio(ratios.get(test))
                                     + fmt_ratio_range(runs[pair].get(test, []))
                                     for test in bench.tests)])
    return header, body


def not_measured(bench: BenchRun) -> list[tuple[str, str, str]]:
    """(pair, status, reason) for pairs that could not run at all."""
    out = []
    for pair in bench.pairs:
        cells = [c for c in bench.cells if c.pair == pair]
        if cells and all(c.status != OK and not c.samples for c in cells):
            out.append((pair, cells[0].status, cells[0].reason))
    return out


def write_json(bench: BenchRun, path: Path) -> None:
    path.write_text(json.dumps(bench.to_json(), indent=2, ensure_ascii=False) + "\n")


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _congestion(bench: BenchRun) -> str:
    control = bench.host.get("tcp_congestion_control")
    return f", TCP congestion control {control}" if control else ""


def markdown(bench: BenchRun) -> str:
    s = bench.settings
    lines = [
        "# Throughput bench", "",
        f"Run {bench.started} – {bench.ended} ({bench.seconds:.0f} s) on "
        f"{bench.host.get('machine', '?')}, kernel {bench.host.get('kernel', '?')}, "
        f"{bench.host.get('cpus', '?')} CPUs{_congestion(bench)}. iperf3 -t {s.get('seconds')}, "
        f"{s.get('repeat')} repetitions ({s.get('order', '')}), UDP target rate "
        f"{s.get('udp_rate')}.", "",
        f"Topology: {bench.topology}.", "",
        "Peers: " + ", ".join(f"{k} ({v})" for k, v in bench.peers.items()) + ".", "",
    ]
    if bench.interrupted:
        lines += ["**Interrupted: incomplete.**", ""]
    head = result_header(bench)
    lines += ["## Results", "", f"_{RATE_NOTE}._", "",
              "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_md(v) for v in row) + " |" for row in rows(bench)]
    steal = bench.steal_note()
    if steal:
        lines += ["", f"_{steal.capitalize()}._"]
    for peer, ratio_head, body in ratio_tables(bench):
        lines += ["", f"## wgref ÷ {peer} (same run)", "",
                  "| " + " | ".join(ratio_head) + " |", "|" + "---|" * len(ratio_head)]
        lines += ["| " + " | ".join(row) + " |" for row in body]
    header, body = client_ratio_rows(bench)
    if body:
        lines += ["", "## wgref-client ÷ wgref's TUN interface (same server, same run)", "",
                  f"_{CLIENT_RATIO_NOTE}._", "",
                  "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in body]
    missing = not_measured(bench)
    if missing:
        lines += ["", "## Not measured", ""]
        lines += [f"* **{_md(_label(p))}** — {status}: {_md(reason)}"
                  for p, status, reason in missing]
    errors = [c for c in bench.cells if c.failed_runs]
    if errors:
        lines += ["", "## Failed runs", ""]
        for cell in errors:
            for sample in cell.failed_runs:
                lines.append(f"* {_md(_label(cell.pair))} {cell.test} run "
                             f"{sample.repetition}: {_md(sample.error or 'no data')[:300]}")
    again = [c for c in bench.cells if c.set_aside]
    if again:
        lines += ["", "## Runs measured again", "",
                  "_Set aside, not counted: the host (hypervisor) stole too much CPU during "
                  "them._", ""]
        for cell in again:
            for sample in cell.set_aside:
                lines.append(f"* {_md(_label(cell.pair))} {cell.test} run "
                             f"{sample.repetition}: {fmt_rate(sample.mbps)} Mbit/s, "
                             f"{_md(sample.set_aside or '')}")
    for baseline in bench.baselines:
        lines += ["", f"## Published baseline: {baseline['label']}", "",
                  f"{_md(baseline['description'])} Method: {baseline['method']}. "
                  f"Source: {_md(baseline['source'])} **Not comparable** with the results "
                  "above (other hardware and OS, a real 1 GbE link).", "",
                  f"| client | implementation | upload ({baseline['unit']}) | "
                  f"download ({baseline['unit']}) |", "|---|---|---|---|"]
        lines += [f"| {r['name']} | {r['implementation']} | {r['upload']:g} | "
                  f"{r['download']:g} |" for r in baseline["results"]]
    return "\n".join(lines) + "\n"


def write_markdown(bench: BenchRun, path: Path) -> None:
    path.write_text(markdown(bench))


def print_table(bench: BenchRun, console: Any = None) -> None:
    from rich.console import Console
    from rich.table import Table

    if console is None:
        console = Console()
        if not console.is_terminal and console.width < 160:
            console = Console(width=160)
    s = bench.settings
    table = Table(title=f"throughput (Mbit/s), iperf3 -t {s.get('seconds')}, "
                  f"{s.get('repeat')} runs each", caption=RATE_NOTE, caption_justify="left")
    for name in result_header(bench):
        table.add_column(name, justify="left" if name in ("pair", "test") else "right",
                         no_wrap=name in ("pair", "test"))
    last = ""
    for row in rows(bench):
        if row[0] != last and last:
            table.add_section()
        last = row[0]
        table.add_row(*row)
    console.print(table)
    steal = bench.steal_note()
    if steal:
        console.print(steal, markup=False, highlight=False)
    for peer, ratio_head, body in ratio_tables(bench):
        ratios = Table(title=f"wgref ÷ {peer} in its place (mean, same run)")
        for name in ratio_head:
            ratios.add_column(name, justify="left" if name == ratio_head[0] else "right")
        for row in body:
            ratios.add_row(*row)
        console.print(ratios)
    header, body = client_ratio_rows(bench)
    if body:
        client = Table(title="wgref-client ÷ wgref (mean, same run; per-repetition min–max)",
                       caption=CLIENT_RATIO_NOTE, caption_justify="left")
        for name in header:
            client.add_column(name, justify="left" if name == header[0] else "right")
        for row in body:
            client.add_row(*row)
        console.print(client)
    for pair, status, reason in not_measured(bench):
        style = "bold red" if status == ERROR else "yellow"
        console.print(f"{status:>11}  {_label(pair)}: {reason}", style=style, markup=False,
                      highlight=False)
    if bench.interrupted:
        console.print("interrupted: the bench is incomplete", style="bold red")


# -- chart ----------------------------------------------------------------------------------

def write_chart(bench: BenchRun, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    baselines = bench.baselines
    widths = [3.2, 1.4] if baselines else [1.0]
    fig, axes = plt.subplots(1, len(widths), figsize=(16 if baselines else 12, 7),
                             gridspec_kw={"width_ratios": widths}, squeeze=False)
    _local_panel(axes[0][0], bench)
    if baselines:
        _baseline_panel(axes[0][1], baselines[0])
    s = bench.settings
    runs = s.get("repeat")
    fig.suptitle(f"wgref throughput bench — {bench.started[:10]}, iperf3 -t {s.get('seconds')},"
                 f" mean ± stdev of {runs} run{'' if runs == 1 else 's'} per bar", fontsize=13)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _local_panel(ax: Any, bench: BenchRun) -> None:
    pairs = [p for p in bench.pairs
             if any((c := bench.cell(p, t)) and c.throughput() for t in bench.tests)]
    tests = bench.tests
    if not pairs:
        ax.text(0.5, 0.5, "no successful run", ha="center", va="center",
                transform=ax.transAxes)
        ax.set_axis_off()
        return
    means = {(p, t): thr for p in pairs for t in tests
             if (c := bench.cell(p, t)) is not None and (thr := c.throughput()) is not None}
    tunnel = [s.mean + s.stdev for (p, _), s in means.items() if p != RAW]
    # The raw veth path is often 10-30x the tunnels: a linear axis sized for the tunnels, with
    # the raw bars clipped at the top (hatched) and labelled with their real value.
    top = max(tunnel or [s.mean + s.stdev for s in means.values()]) * 1.3
    width = 0.8 / len(pairs)
    colors = _colors(pairs)
    clipped_any = False
    for i, pair in enumerate(pairs):
        xs, heights, errs, labels = [], [], [], []
        for j, test in enumerate(tests):
            thr = means.get((pair, test))
            if thr is None:
                continue
            clipped = thr.mean > top
            clipped_any |= clipped
            xs.append(j - 0.4 + width * (i + 0.5))
            heights.append(top if clipped else thr.mean)
            errs.append(0.0 if clipped else thr.stdev)
            cell = bench.cell(pair, test)
            loss = cell.loss() if cell else None
            text = fmt_rate(thr.mean) + (f" ({loss.mean:.0f}% lost)" if loss else "")
            labels.append(f"{text} ↑" if clipped else text)
        bars = ax.bar(xs, heights, width * 0.92, yerr=errs, capsize=3, label=_label(pair),
                      color=colors[pair], edgecolor="black", linewidth=0.4,
                      error_kw={"elinewidth": 1, "ecolor": "#333333"})
        shown = []
        for bar, label in zip(bars, labels, strict=True):
            if label.endswith("↑"):  # the value goes inside the clipped bar
                bar.set_hatch("xx")
                ax.text(bar.get_x() + bar.get_width() / 2, top * 0.97,
                        f"{label[:-2]}, off scale", rotation=90, ha="center", va="top",
                        fontsize=7, bbox={"facecolor": "white", "edgecolor": "none",
                                          "pad": 1.5})
                label = ""
            shown.append(label)
        ax.bar_label(bars, labels=shown, rotation=90, fontsize=7, padding=3)
    ax.set_ylim(0, top * 1.15)
    ax.set_ylabel("Mbit/s received (mean ± stdev)")
    ax.set_xticks(range(len(tests)))
    ax.set_xticklabels([_test_label(t, bench) for t in tests], fontsize=9)
    title = "this machine: network namespaces over veth (client – router – server)"
    if clipped_any:
        title += "\nhatched bars are clipped: the raw veth ceiling is off this scale"
    ax.set_title(title, fontsize=10.5)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncols=3,
              frameon=False)
    missing = [f"{_label(p)} ({status})" for p, status, _ in not_measured(bench)]
    if missing:
        ax.text(0.5, -0.27, "not measured: " + "; ".join(missing) + " — see bench.md",
                transform=ax.transAxes, ha="center", va="top", fontsize=8, style="italic")


def _test_label(test: str, bench: BenchRun) -> str:
    spec = TESTS.get(test)
    if spec is None:
        return test
    what = f"{spec.protocol.upper()} {spec.direction}"
    if spec.streams > 1:
        what += f"\n-P {spec.streams}"
    if spec.protocol == "udp":
        what += f"\n-b {bench.settings.get('udp_rate')}"
    return what


def _colors(pairs: list[str]) -> dict[str, str]:
    fixed = {RAW: "#9e9e9e", REFERENCE: "#1f77b4", "wgref->wireguard-go": "#ff7f0e",
             "wireguard-go->wgref": "#ffbb78", "wgref->wgref": "#d62728",
             "boringtun-cli->boringtun-cli": "#2ca02c", "wgref->boringtun-cli": "#98df8a",
             "boringtun-cli->wgref": "#9467bd"}
    spare = iter(["#8c564b", "#e377c2", "#17becf", "#bcbd22", "#c5b0d5", "#c49c94"])
    return {p: fixed.get(p) or next(spare, "#7f7f7f") for p in pairs}


def _baseline_panel(ax: Any, baseline: dict[str, Any]) -> None:
    results = baseline["results"]
    names = ["\n".join(textwrap.wrap(r["name"], 16)) for r in results]
    xs = range(len(results))
    up = ax.bar([x - 0.2 for x in xs], [r["upload"] for r in results], 0.38, label="upload",
                color="#bdbdbd", edgecolor="black", linewidth=0.4, hatch="//")
    down = ax.bar([x + 0.2 for x in xs], [r["download"] for r in results], 0.38,
                  label="download", color="#e0e0e0", edgecolor="black", linewidth=0.4)
    for bars in (up, down):
        ax.bar_label(bars, fontsize=7, padding=2)
    ax.set_xticks(list(xs))
    ax.set_xticklabels(names, fontsize=7.5)
    ax.set_ylim(0, max(max(r["upload"], r["download"]) for r in results) * 1.2)
    ax.set_ylabel(f"{baseline['unit']} (published, best of 10)")
    ax.set_title("\n".join(textwrap.wrap(baseline["label"], 44)), fontsize=10, color="#b71c1c")
    ax.text(0.5, -0.2, "\n".join(textwrap.wrap(
        f"{baseline['method']}. Not measured here; not comparable with the left panel.", 52)),
        transform=ax.transAxes, ha="center", va="top", fontsize=7.5, style="italic")
    ax.set_facecolor("#fafafa")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")


def write_all(bench: BenchRun, out: Path, *, chart: bool = True) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "bench.json", "markdown": out / "bench.md"}
    write_json(bench, paths["json"])
    write_markdown(bench, paths["markdown"])
    if chart:
        paths["chart"] = out / "bench.png"
        write_chart(bench, paths["chart"])
    return paths
