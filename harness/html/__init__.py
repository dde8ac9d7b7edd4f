"""The run's page: one self-contained index.html per run folder (matrix, drill-downs with
steps, logs and captures, probes, bench charts, metadata), and a comparison of two runs.

    python -m harness report RUN_DIR [--open]
    python -m harness report --compare OLD NEW [--out FILE]

Modules: ``model`` (reading results.json, bench.json, probes and cell folders tolerantly) ·
``svg`` (inline bar charts) · ``compare`` (changed cells, throughput beyond the noise) ·
``page`` (the HTML) · ``assets`` (inline CSS and JS) · ``browser`` (headless Chromium over the
DevTools protocol, for the tests and screenshots).
"""

from __future__ import annotations

import sys
from pathlib import Path

from .compare import Comparison, compare
from .model import ReportError, RunData, load_run_dir
from .page import render

INDEX = "index.html"

__all__ = ["INDEX", "Comparison", "ReportError", "RunData", "compare", "load_run_dir",
           "render", "write_compare", "write_report", "write_report_quietly"]


def _write(path: Path, text: str) -> Path:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


def write_report(run_dir: Path) -> Path:
    """RUN_DIR/index.html from the run's results.json and/or bench.json."""
    data = load_run_dir(run_dir)
    return _write(data.folder / INDEX, render(data))


def write_compare(old_dir: Path, new_dir: Path, out: Path | None = None) -> Path:
    """NEW/compare.html (or OUT): the new run with what changed since the old one marked."""
    old, new = load_run_dir(old_dir), load_run_dir(new_dir)
    target = out if out is not None else new.folder / "compare.html"
    if target.resolve().parent != new.folder:
        # the page's links are relative to the new run's folder
        raise ReportError(f"{target}: the comparison page must be written into {new.folder}")
    return _write(target, render(new, compare(old, new)))


def write_report_quietly(run_dir: Path) -> Path | None:
    """write_report for the end of `run`, `bench` and `probe`: a problem with the page is
    printed, never raised (the run's own results are already written)."""
    try:
        return write_report(run_dir)
    except (ReportError, OSError, ValueError, KeyError, TypeError) as exc:
        print(f"warning: no HTML report: {exc}", file=sys.stderr)
        return None
