"""noxfile.py as README describes it: plain `nox` is the main job (interop), `nox -l`
describes every session in a line of its own, and `nox -s interop -- ARGS` writes the fixed
results/interop/ that CI jobs look for (keeping the run before it)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import nox

REPO = Path(__file__).resolve().parents[2]


def _noxfile() -> ModuleType:
    spec = importlib.util.spec_from_file_location("noxfile_under_test", REPO / "noxfile.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


NOXFILE = _noxfile()
SESSIONS = ("interop", "bench", "tests", "lint", "decrypt")


def test_plain_nox_runs_the_main_job() -> None:
    assert nox.options.sessions == ["interop"]
    readme = (REPO / "README.md").read_text()
    assert "Plain `nox` runs the `interop` session, the main job" in readme


def test_every_session_has_a_one_line_description() -> None:
    for name in SESSIONS:
        doc = getattr(NOXFILE, name).__doc__ or ""
        first = doc.strip().splitlines()[0]
        assert first.endswith((".", ")")), f"{name}: {first!r} is cut (nox -l shows line 1)"
        assert "later" not in first and len(first) <= 96, first


def test_interop_writes_the_fixed_folder(tmp_path: Path) -> None:
    args = ["--client", "wgref", "--server", "wireguard-go"]
    assert NOXFILE.interop_args(args, tmp_path) == [*args, "--out", "results/interop"]
    run = tmp_path / "results" / "interop"
    run.mkdir(parents=True)
    (run / "results.json").write_text("{}\n")
    assert NOXFILE.interop_args([], tmp_path) == ["--out", "results/interop"]
    assert (tmp_path / "results" / "interop-previous" / "results.json").exists()
    assert not run.exists()  # harness run makes it again
    mine = ["--out", "elsewhere"]
    assert NOXFILE.interop_args(mine, tmp_path) == mine
    assert NOXFILE.interop_args(["--out=x"], tmp_path) == ["--out=x"]
