"""The matrix at scale with real cells (root; wgref and wireguard-go in namespaces): `--jobs`
gives the serial run's results and progress, and three `--shard K/3` runs merged with
`harness merge` give the serial run's cells in one report - the flow of docs/ci/. Merge
refuses shards of another plan or version, a missing shard and a folder that is no shard."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.harness.support import netns_marks

REPO = Path(__file__).resolve().parents[2]
TOOLS = ("ip", "nft", "wg", "wireguard-go", "dumpcap", "ping")
PLAN = ["--client", "wgref,wireguard-go", "--server", "wgref,wireguard-go",
        "--scenario", "handshake,psk"]

pytestmark = [
    *netns_marks(*TOOLS),
]


def harness(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "harness", *args], cwd=REPO,
                            capture_output=True, text=True, timeout=900, check=False)
    if check:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def run(out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return harness("run", *PLAN, "--plain", "--out", str(out), *extra)


def cells(folder: Path) -> list[dict[str, Any]]:
    return list(json.loads((folder / "results.json").read_text())["cells"])


def outcome(cell: dict[str, Any]) -> tuple[Any, ...]:
    """What must be the same however the cells were scheduled."""
    return (cell["client"], cell["server"], cell["scenario"], cell["status"],
            [(s["label"], s["status"]) for s in cell["steps"]],
            sorted(re.sub(r"^wh[0-9a-f]{4}", "PREFIX", a) for a in cell["artifacts"]))


def without_numbers(text: str) -> list[str]:
    """Progress lines without times, counters of bytes and handshake timestamps."""
    return [re.sub(r"\d+(\.\d+)?", "#", line) for line in text.splitlines()
            if line.startswith(("[", "    ", "  =>"))]


@pytest.fixture(scope="module")
def serial(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("serial")
    return out, run(out, "--jobs", "1").stdout


def test_jobs_give_the_serial_results_and_progress(serial: tuple[Path, str],
                                                   tmp_path: Path) -> None:
    serial_dir, serial_log = serial
    parallel = run(tmp_path, "--jobs", "4").stdout
    assert len(cells(serial_dir)) == 8
    assert [outcome(c) for c in cells(tmp_path)] == [outcome(c) for c in cells(serial_dir)]
    assert without_numbers(parallel) == without_numbers(serial_log)
    assert all(c["status"] == "pass" for c in cells(tmp_path))


def test_three_shards_merged_equal_the_serial_run(serial: tuple[Path, str],
                                                  tmp_path: Path) -> None:
    serial_dir, _ = serial
    shards = [tmp_path / f"shard-{k}" for k in (1, 2, 3)]
    for k, folder in enumerate(shards, 1):
        run(folder, "--shard", f"{k}/3", "--jobs", "2")
    sizes = [len(cells(folder)) for folder in shards]
    assert sum(sizes) == 8 and min(sizes) >= 2  # every cell once, the shards balanced
    merged = tmp_path / "merged"
    result = harness("merge", str(merged), *map(str, reversed(shards)))
    assert "merged 3 shards (8 cells)" in result.stdout
    assert [outcome(c) for c in cells(merged)] == [outcome(c) for c in cells(serial_dir)]
    for name in ("results.json", "junit.xml", "summary.md", "index.html"):
        assert (merged / name).is_file(), name
    data = json.loads((merged / "results.json").read_text())
    assert [s["index"] for s in data["shards"]] == [1, 2, 3]
    assert all(s["host"]["node"] and s["cells"] >= 2 for s in data["shards"])
    for cell in data["cells"]:  # logs and pcaps were copied in with each cell
        folder = Path(cell["folder"])
        assert folder.is_relative_to(merged) or not folder.is_absolute()
        assert (merged / f"{cell['client']}_{cell['server']}" / cell["scenario"]
                / "client.pcapng").is_file()
    assert '<testsuites name="wgref interop" tests="8"' in (merged / "junit.xml").read_text()

    # refusals, each naming the folder and the problem
    missing = harness("merge", str(tmp_path / "m2"), str(shards[0]), str(shards[2]),
                      check=False)
    assert missing.returncode == 2
    assert "shard 2/3 missing (given: 1/3, 3/3)" in missing.stderr
    twice = harness("merge", str(tmp_path / "m3"), str(shards[0]), str(shards[0]),
                    str(shards[1]), check=False)
    assert f"shard 1/3 given twice: {shards[0]} and {shards[0]}" in twice.stderr
    not_shard = harness("merge", str(tmp_path / "m4"), str(serial_dir), check=False)
    assert f"{serial_dir}: not a shard (it was not run with --shard K/N)" in not_shard.stderr
    other = tmp_path / "other-version"
    shutil.copytree(shards[2], other)
    data = json.loads((other / "results.json").read_text())
    data["shard"]["version"] = "0" * 16
    (other / "results.json").write_text(json.dumps(data))
    versions = harness("merge", str(tmp_path / "m5"), str(shards[0]), str(shards[1]),
                       str(other), check=False)
    assert versions.returncode == 2
    assert f"{other} and {shards[0]} ran different code" in versions.stderr
    assert not (tmp_path / "m5" / "results.json").exists()
