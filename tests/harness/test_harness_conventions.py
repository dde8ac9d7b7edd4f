"""What a newcomer reads from the harness: `harness list` descriptions whole, the command as
typed, handshake times as clock times, one symbol per status on the terminal and the page,
results.json with a schema version and paths relative to the run folder, and a missing Docker
SDK as one line (also when the repository's own docker/ folder shadows it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from rich.console import Console

from harness.cli import first_sentence, main
from harness.docker.client import SDK_MISSING, DockerUnavailable, sdk
from harness.html import write_report
from harness.report import LEGEND, print_matrix, write_all
from harness.results import (
    SCHEMA_VERSION,
    SYMBOL,
    CellResult,
    RunResult,
    load_results,
    typed_command,
)
from harness.scenario import load_scenarios
from harness.wgdump import PeerState

REPO = Path(__file__).resolve().parents[2]


def test_list_wraps_descriptions_at_words(capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "70")
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    scenarios = out.split("scenarios:\n", 1)[1]
    assert max(len(line) for line in scenarios.splitlines()) <= 70
    flat = " ".join(scenarios.split())
    for scenario in load_scenarios(REPO / "scenarios"):
        sentence = first_sentence(scenario.description)
        assert sentence in flat, f"{scenario.name}: {sentence!r} not shown whole"


def test_first_sentence() -> None:
    assert first_sentence("One thing.  Then\nmore. And more") == "One thing."
    assert first_sentence("No full stop\nat all") == "No full stop at all"


def test_the_command_is_shown_as_typed(tmp_path: Path) -> None:
    argv = [str(REPO / "harness" / "__main__.py"), "run", "--client", "wgref"]
    assert typed_command(argv) == ["python", "-m", "harness", "run", "--client", "wgref"]
    assert typed_command(["wgref", "genkey"]) == ["wgref", "genkey"]
    run = RunResult(started="2026-01-01T00:00:00+00:00", command=argv)
    run.cells = [CellResult("a", "b", "handshake", "pass")]
    write_all(run, tmp_path)
    page = write_report(tmp_path).read_text()
    assert "python -m harness run --client wgref" in page
    assert "__main__.py" not in page


def test_handshake_times_are_clock_times() -> None:
    state = PeerState("k", None, None, (), 1795630956, 0, 0, 0)
    assert state.handshake_text(now=1795630959) == "18:22:36 UTC (3 s ago)"
    never = PeerState("k", None, None, (), 0, 0, 0, 0)
    assert never.handshake_text() == "never"


def test_terminal_legend_and_page_use_the_same_symbols(tmp_path: Path) -> None:
    run = RunResult(started="2026-01-01T00:00:00+00:00")
    run.cells = [CellResult("a", "b", "handshake", "error", "setup: boom"),
                 CellResult("a", "b", "psk", "pass")]
    console = Console(record=True, width=120, force_terminal=False)
    print_matrix(run, console)
    text = console.export_text()
    assert f"{SYMBOL['error']} error" in LEGEND
    assert LEGEND in " ".join(text.split())
    assert "E error" not in text
    write_all(run, tmp_path)
    page = write_report(tmp_path).read_text()
    assert f'<span class="sym" aria-hidden="true">{SYMBOL["error"]}</span>' in page


def test_results_json_has_a_schema_and_relative_paths(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    out = Path("results") / "run"  # as `--out results/run` gives it: relative to the cwd
    cell_dir = out / "a_b" / "handshake"
    cell_dir.mkdir(parents=True)
    (cell_dir / "client.log").write_text("hello\n")
    run = RunResult(started="2026-01-01T00:00:00+00:00",
                    scenarios=[{"name": "handshake", "path": str(REPO / "scenarios" /
                                                                  "handshake.toml")}])
    run.cells = [CellResult("a", "b", "handshake", "pass", folder=str(cell_dir),
                            artifacts=["client.log"]),
                 CellResult("c", "b", "handshake", "pass",
                            folder=str((cell_dir).resolve()))]
    write_all(run, out)
    data = json.loads((out / "results.json").read_text())
    assert data["schema_version"] == SCHEMA_VERSION
    assert [c["folder"] for c in data["cells"]] == ["a_b/handshake", "a_b/handshake"]
    scenario_path = data["scenarios"][0]["path"]
    assert not Path(scenario_path).is_absolute()
    assert (out / scenario_path).resolve() == REPO / "scenarios" / "handshake.toml"
    # read back (as `probe --merge` does) and written again: the same relative paths
    again = load_results(out / "results.json")
    assert Path(again.cells[0].folder or "").resolve() == cell_dir.resolve()
    write_all(again, out)
    assert json.loads((out / "results.json").read_text())["cells"][0]["folder"] == \
        "a_b/handshake"
    assert 'href="a_b/handshake/client.log"' in write_report(out).read_text()


def test_sdk_missing_in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """The repository's docker/ folder imported as a namespace package is no SDK."""
    import importlib.machinery
    import importlib.util

    spec = importlib.machinery.PathFinder.find_spec("docker", [str(REPO)])
    assert spec is not None and spec.origin in (None, "namespace")
    shadow = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "docker", shadow)
    with pytest.raises(DockerUnavailable, match="pip install 'wgref\\[harness\\]'"):
        sdk()


SHADOWED = textwrap.dedent("""\
    import importlib.machinery, runpy, sys

    REPO = sys.argv[1]

    class RepoDockerOnly:  # what `import docker` finds in the repo root without the SDK
        def find_spec(self, name, path=None, target=None):
            if name == "docker":
                return importlib.machinery.PathFinder.find_spec(name, [REPO])
            return None

    sys.meta_path.insert(0, RepoDockerOnly())
    sys.argv = ["harness", *sys.argv[2:]]
    runpy.run_module("harness", run_name="__main__", alter_sys=True)
    """)


@pytest.mark.parametrize("args", [["list", "--backend", "docker"], ["images", "build"],
                                  ["run", "--backend", "docker", "--client", "wgref"]])
def test_sdk_missing_is_one_line_from_the_repo_root(args: list[str], tmp_path: Path) -> None:
    if args[0] == "run" and os.geteuid() != 0:
        pytest.skip("`harness run` checks for root first")
    result = subprocess.run(
        [sys.executable, "-c", SHADOWED, str(REPO), *args, "--out", str(tmp_path / "o")]
        if args[0] == "run" else [sys.executable, "-c", SHADOWED, str(REPO), *args],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, text=True,
        capture_output=True, timeout=60, check=False)
    said = (result.stdout + result.stderr).strip().splitlines()
    assert result.returncode != 0
    assert said == [f"error: {SDK_MISSING}"], said
    assert not (tmp_path / "o").exists()


WITHOUT_SCAPY = textwrap.dedent("""\
    import runpy, sys

    class NotInstalled:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "scapy":
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, NotInstalled())
    sys.argv = ["harness", "list"]
    runpy.run_module("harness", run_name="__main__", alter_sys=True)
    """)


def test_a_missing_harness_extra_is_one_line() -> None:
    result = subprocess.run([sys.executable, "-c", WITHOUT_SCAPY], cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, text=True,
                            capture_output=True, timeout=60, check=False)
    assert result.returncode == 1
    assert result.stderr == ("error: python -m harness needs scapy: pip install -e "
                             "'.[harness]' in the clone (README, Install)\n")
