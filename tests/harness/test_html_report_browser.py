"""The report in a real browser: Debian's chromium, headless, driven over the DevTools protocol
(harness.html.browser; no network, no extra Python package). The matrix and the bench chart
are visible, a click on a cell opens its drill-down, the page reads on a 390 px screen, and
nothing lands on the console. Screenshots are kept in the test's folder (tmp_path; set
WGREF_SCREENSHOTS=DIR to also copy them there).

The synthetic page needs only chromium; the real run needs root (network namespaces)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_html_report import make_run

from harness.html import write_compare, write_report
from harness.html.browser import Chromium, find_chromium

REPO = Path(__file__).resolve().parents[2]
DESKTOP, NARROW = 1280, 390

pytestmark = pytest.mark.skipif(find_chromium() is None,
                                reason="needs chromium (apt-get install chromium)")


@pytest.fixture(scope="module")
def browser() -> Iterator[Chromium]:
    with Chromium() as chromium:
        yield chromium


def keep(shot: Path) -> Path:
    target = os.environ.get("WGREF_SCREENSHOTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(target) / shot.name)
    print(f"screenshot: {shot}")
    return shot


def visible(browser: Chromium, selector: str) -> bool:
    return bool(browser.evaluate(
        f"(() => {{ const e = document.querySelector({selector!r}); if (!e) return false;"
        " const r = e.getBoundingClientRect(); const s = getComputedStyle(e);"
        " return r.width > 0 && r.height > 0 && s.visibility !== 'hidden'"
        " && s.display !== 'none'; })()"))


def check_page(browser: Chromium, page: Path, out: Path, name: str, *,
               bench: bool = True) -> None:
    """Desktop and narrow: visible matrix (and chart), a drill-down that opens on a click and
    closes again, no horizontal overflow, no console errors, no requests off the machine."""
    browser.problems.console_errors.clear()
    browser.problems.exceptions.clear()
    browser.problems.requests.clear()
    browser.open(page.as_uri(), width=DESKTOP)
    assert visible(browser, "#matrix table.mx a.cell")
    assert visible(browser, "#overview table.ov")
    if bench:
        assert visible(browser, "#bench svg.chart rect")
    keep(browser.screenshot(out / f"{name}-desktop.png"))
    assert browser.evaluate("document.querySelector('dialog[open]')") is None
    browser.click("#matrix a.cell.s-fail, #matrix a.cell")
    opened = browser.evaluate("(() => { const d = document.querySelector('dialog[open]');"
                              " return d && d.id; })()")
    assert opened and opened.startswith("dlg-"), "no drill-down opened on click"
    assert visible(browser, f"#{opened} .drill-body")
    assert browser.evaluate(f"document.querySelector('#{opened} .steps li, "
                            f"#{opened} .reason') !== null")
    keep(browser.screenshot(out / f"{name}-drilldown.png", full_page=False))
    browser.key("Escape", "Escape", 27)
    assert browser.evaluate("document.querySelector('dialog[open]')") is None

    browser.open(page.as_uri(), width=NARROW, height=844, scale=2, mobile=True)
    assert visible(browser, "#matrix table.mx a.cell")
    overflow = browser.evaluate("document.documentElement.scrollWidth - innerWidth")
    assert overflow <= 1, f"the page is {overflow} px wider than a {NARROW} px screen"
    assert browser.evaluate("getComputedStyle(document.querySelector('header.top'))"
                            ".position") == "sticky"
    keep(browser.screenshot(out / f"{name}-narrow.png"))
    browser.click("#matrix a.cell")
    assert browser.evaluate("document.querySelector('dialog[open]') !== null")
    width = browser.evaluate("document.querySelector('dialog[open]')"
                             ".getBoundingClientRect().width")
    assert width <= NARROW
    keep(browser.screenshot(out / f"{name}-narrow-drilldown.png", full_page=False))

    problems = browser.problems
    assert not problems.console_errors, problems.console_errors
    assert not problems.exceptions, problems.exceptions
    assert not problems.network, f"the page fetched {problems.network}"
    assert problems.requests  # the page itself was loaded (the recorder works)


def test_synthetic_report_in_chromium(browser: Chromium, tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "run")
    check_page(browser, write_report(run_dir), tmp_path, "synthetic")
    # the hash of a cell opens its drill-down (links to one cell can be shared)
    browser.open((run_dir / "index.html").as_uri() + "#c-3", width=DESKTOP)
    assert browser.evaluate("document.querySelector('dialog[open]').id") == "dlg-3"


def test_comparison_in_chromium(browser: Chromium, tmp_path: Path) -> None:
    old = make_run(tmp_path / "old")
    new = make_run(tmp_path / "new", flip=True, bench_shift=-150.0)
    page = write_compare(old, new)
    check_page(browser, page, tmp_path, "compare")
    browser.open(page.as_uri(), width=DESKTOP)
    assert browser.evaluate("document.querySelectorAll('#matrix a.cell.changed').length") == 1
    assert visible(browser, "#changes")
    assert browser.evaluate("document.querySelectorAll('#bench tr.moved').length") == 4


def _scenarios(tmp_path: Path) -> Path:
    """handshake (passes) and wrong-key (the client has a wrong key for the server: fails)."""
    scenarios = tmp_path / "scenarios"
    scenarios.mkdir()
    shutil.copy(REPO / "scenarios" / "handshake.toml", scenarios)
    (scenarios / "wrong-key.toml").write_text(
        'name = "wrong-key"\n'
        'description = "The client has a wrong public key for the server: no handshake, so '
        'the cell fails."\n'
        "timeout = 30\n[config]\nwrong_server_key = true\n"
        '[[steps]]\naction = "tcp"\nlabel = "tcp echo client -> server"\ntimeout = 4\n')
    return scenarios


@pytest.mark.netns
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")
@pytest.mark.skipif(any(shutil.which(t) is None for t in ("ip", "nft", "wg", "wireguard-go",
                                                          "dumpcap", "ping", "editcap")),
                    reason="needs ip, nft, wg, wireguard-go, dumpcap, ping, editcap")
def test_real_run_report_in_chromium(browser: Chromium, tmp_path: Path) -> None:
    """A small real matrix: wgref and wireguard-go pass, a wrong server key fails, and
    boringtun-cli is unsupported when it is not installed. `run` writes index.html itself."""
    scenarios = _scenarios(tmp_path)
    out = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "harness", "--scenarios-dir", str(scenarios), "run",
         "--client", "wgref,wireguard-go,boringtun-cli", "--server", "wireguard-go",
         "--scenario", "handshake,wrong-key", "--plain", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 1, result.stdout + result.stderr  # wrong-key cells fail
    statuses = {(c["client"], c["scenario"]): (c["status"], c["reason"]) for c in
                json.loads((out / "results.json").read_text())["cells"]}
    boringtun = "pass" if shutil.which("boringtun-cli") or shutil.which("boringtun") \
        else "unsupported"
    for client, handshake in (("wgref", "pass"), ("wireguard-go", "pass"),
                              ("boringtun-cli", boringtun)):
        assert statuses[(client, "handshake")][0] == handshake, statuses[(client, "handshake")]
        wrong_key = "fail" if handshake == "pass" else "unsupported"
        assert statuses[(client, "wrong-key")][0] == wrong_key, statuses[(client, "wrong-key")]
    assert statuses[("wgref", "wrong-key")][1].startswith(
        "step 1 (tcp echo client -> server): tcp echo to 198.19.77.1:7000:")
    if boringtun == "unsupported":
        assert "boringtun-cli is not installed" in statuses[("boringtun-cli", "handshake")][1]
    page = out / "index.html"
    assert page.is_file(), "run did not write the HTML report"
    html = page.read_text()
    assert "wgref_wireguard-go/handshake/client.pcapng" in html
    assert "wg.keylog_file:wgref_wireguard-go/handshake/wireguard.keys" in html
    check_page(browser, page, tmp_path, "real-run", bench=False)
    # the drill-down of wgref -> wireguard-go: handshake has its steps, logs and captures
    browser.open(page.as_uri(), width=DESKTOP)
    cell = browser.evaluate(
        "document.querySelector('#matrix [data-scenario=\"handshake\"] tbody tr:first-child "
        "a.cell').getAttribute('data-cell')")
    browser.click(f"#matrix a.cell[data-cell='{cell}']")
    texts = browser.evaluate(f"document.getElementById('{cell}').innerText")
    for text in ("Steps", "tcp echo client -> server", "Peer logs", "client · wgref",
                 "client.pcapng", "tshark -r"):
        assert text in texts
    browser.click(f"#{cell} details.peer-log summary")
    assert visible(browser, f"#{cell} details.peer-log[open] pre")
    keep(browser.screenshot(tmp_path / "real-run-drilldown-log.png", full_page=False))
    assert main_report(out) == 0


@pytest.mark.netns
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")
@pytest.mark.skipif(any(shutil.which(t) is None for t in ("ip", "nft", "wg", "wireguard-go",
                                                          "dumpcap", "ping", "editcap")),
                    reason="needs ip, nft, wg, wireguard-go, dumpcap, ping, editcap")
def test_merged_report_in_chromium(browser: Chromium, tmp_path: Path) -> None:
    """Two `--shard K/2` runs merged with `harness merge`: the merged page shows every cell,
    each drill-down opens, and the captures it links (copied from the shards) are there."""
    scenarios = _scenarios(tmp_path)
    shards = [tmp_path / f"shard-{k}" for k in (1, 2)]
    for k, folder in enumerate(shards, 1):
        result = subprocess.run(
            [sys.executable, "-m", "harness", "--scenarios-dir", str(scenarios), "run",
             "--client", "wgref,wireguard-go", "--server", "wireguard-go", "--plain",
             "--shard", f"{k}/2", "--jobs", "2", "--out", str(folder)],
            cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
        assert result.returncode in (0, 1), result.stdout + result.stderr
    out = tmp_path / "merged"
    from harness.cli import main

    assert main(["merge", str(out), *map(str, shards)]) == 1  # wrong-key fails, as it must
    page = out / "index.html"
    check_page(browser, page, tmp_path, "merged", bench=False)
    browser.open(page.as_uri(), width=DESKTOP)
    meta = browser.evaluate("document.querySelector('#run dl.meta').innerText")
    for k in (1, 2):  # each shard's machine and times, from the merged results.json
        assert f"shard {k}/2" in meta and "cells in" in meta and "node " in meta
    browser.open(page.as_uri(), width=DESKTOP)
    cells = browser.evaluate("Array.from(document.querySelectorAll('#matrix a.cell'))"
                             ".map(a => a.getAttribute('data-cell'))")
    assert len(cells) == 4
    for cell in cells:
        browser.click(f"#matrix a.cell[data-cell='{cell}']")
        texts = browser.evaluate(f"document.getElementById('{cell}').innerText")
        assert "Steps" in texts and "client.pcapng" in texts
        links = browser.evaluate(
            f"Array.from(document.querySelectorAll('#{cell} a[href$=\".pcapng\"]'))"
            ".map(a => a.href)")
        assert links and all(Path(link.removeprefix("file://")).is_file() for link in links)
        browser.key("Escape", "Escape", 27)
    keep(browser.screenshot(tmp_path / "merged-matrix.png"))


def main_report(run_dir: Path) -> int:
    from harness.cli import main

    return main(["report", str(run_dir)])
